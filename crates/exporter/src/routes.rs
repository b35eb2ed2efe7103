//! Request routing on the raw (still percent-encoded) path, so path decoding happens exactly once, in
//! `paths`, and the router cannot be confused by encoded separators.

/// Routes of the data port. Health and metrics are not among them: they answer on the admin port only,
/// which the Service and Ingress do not publish (see [`admin_route`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// The rest after `/api/v1/files`: empty or starting with `/`.
    Files(&'a str),
    /// The rest after `/api/v1/block`.
    Block(&'a str),
    NotFound,
}

/// `prefix` is `/<namespace>/<name>`, the public path prefix the Ingress forwards unchanged.
///
/// The internal form (`/api/v1/files…`, `/api/v1/block…`) is tried first, then the prefixed one. The
/// two never both match a path: a DataExport `v1` in namespace `api` has the prefix `/api/v1`, its
/// public paths start `/api/v1/api/v1/`, which is no internal route, and its internal ones start
/// `/api/v1/files` or `/api/v1/block`, whose rest after the prefix (`/files…`, `/block…`) is no
/// route either. Stripping the prefix first, as before, sent that export's internal URL to 404.
pub fn route<'a>(path: &'a str, prefix: &str) -> Route<'a> {
    if let Some(r) = data_route(path) {
        return r;
    }
    match path.strip_prefix(prefix) {
        Some(rest) if rest.starts_with('/') => data_route(rest).unwrap_or(Route::NotFound),
        _ => Route::NotFound,
    }
}

fn data_route(path: &str) -> Option<Route<'_>> {
    if let Some(rest) = path.strip_prefix("/api/v1/files")
        && (rest.is_empty() || rest.starts_with('/'))
    {
        return Some(Route::Files(rest));
    }
    if let Some(rest) = path.strip_prefix("/api/v1/block")
        && (rest.is_empty() || rest.starts_with('/'))
    {
        return Some(Route::Block(rest));
    }
    None
}

/// Routes of the admin port (plain HTTP, for probes and scrapers, no authentication).
#[derive(Debug, PartialEq, Eq)]
pub enum AdminRoute {
    Healthz,
    Readyz,
    Metrics,
    NotFound,
}

pub fn admin_route(path: &str) -> AdminRoute {
    match path {
        "/healthz" => AdminRoute::Healthz,
        "/readyz" => AdminRoute::Readyz,
        "/metrics" => AdminRoute::Metrics,
        _ => AdminRoute::NotFound,
    }
}

/// Query parameters the file endpoint understands.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FileQuery {
    pub md5: bool,
    pub sha256: bool,
    pub tar: bool,
}

pub fn parse_query(q: &str) -> Result<FileQuery, String> {
    let mut out = FileQuery::default();
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = crate::paths::percent_decode_strict(v.as_bytes()).map_err(|e| e.to_string())?;
        let v = String::from_utf8_lossy(&v);
        match k {
            "attribute" => match v.as_ref() {
                "stat" => {}
                "hash.md5" => out.md5 = true,
                "hash.sha256" => out.sha256 = true,
                other => {
                    return Err(format!(
                        "unknown attribute {other:?}; supported: stat, hash.md5, hash.sha256"
                    ));
                }
            },
            "format" => match v.as_ref() {
                "tar" => out.tar = true,
                "json" | "" => {}
                other => return Err(format!("unknown format {other:?}; supported: tar")),
            },
            // Unknown parameters are ignored, as most HTTP servers do, so cache-busting or tracing
            // parameters added by proxies do not break downloads.
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let p = "/ns/name";
        assert_eq!(route("/api/v1/files", p), Route::Files(""));
        assert_eq!(route("/api/v1/files/", p), Route::Files("/"));
        assert_eq!(route("/api/v1/files/a/b", p), Route::Files("/a/b"));
        assert_eq!(route("/ns/name/api/v1/files/a", p), Route::Files("/a"));
        assert_eq!(route("/ns/name/api/v1/block", p), Route::Block(""));
        assert_eq!(route("/api/v1/block/x", p), Route::Block("/x"));
        assert_eq!(route("/api/v1/filesx", p), Route::NotFound);
        assert_eq!(route("/ns/other/api/v1/files/", p), Route::NotFound);
        assert_eq!(route("/ns/namex/api/v1/files/", p), Route::NotFound);
        assert_eq!(route("/", p), Route::NotFound);
        // A DataExport `v1` in namespace `api`: both forms reach it, and a file whose path repeats
        // the prefix is still that file.
        let p = "/api/v1";
        assert_eq!(route("/api/v1/files/x", p), Route::Files("/x"));
        assert_eq!(route("/api/v1/api/v1/files/x", p), Route::Files("/x"));
        assert_eq!(route("/api/v1/block", p), Route::Block(""));
        assert_eq!(route("/api/v1/api/v1/block", p), Route::Block(""));
        assert_eq!(
            route("/api/v1/files/api/v1/files/x", p),
            Route::Files("/api/v1/files/x")
        );
        assert_eq!(
            route("/api/v1/api/v1/files/api/v1/x", p),
            Route::Files("/api/v1/x")
        );
        assert_eq!(route("/api/v1/", p), Route::NotFound);
        assert_eq!(route("/api/v1/api/v1/", p), Route::NotFound);
        let p = "/ns/name";
        // Health and metrics are not on the data port, under no prefix.
        for admin in ["/healthz", "/readyz", "/metrics", "/ns/name/readyz"] {
            assert_eq!(route(admin, p), Route::NotFound, "{admin}");
        }
        assert_eq!(admin_route("/healthz"), AdminRoute::Healthz);
        assert_eq!(admin_route("/readyz"), AdminRoute::Readyz);
        assert_eq!(admin_route("/metrics"), AdminRoute::Metrics);
        assert_eq!(admin_route("/api/v1/files/"), AdminRoute::NotFound);
    }

    #[test]
    fn queries() {
        assert_eq!(parse_query(""), Ok(FileQuery::default()));
        let q = parse_query("attribute=hash.md5&attribute=hash.sha256&attribute=stat")
            .unwrap_or_default();
        assert!(q.md5 && q.sha256 && !q.tar);
        assert!(parse_query("format=tar").unwrap_or_default().tar);
        assert!(parse_query("attribute=hash.crc").is_err());
        assert!(parse_query("format=zip").is_err());
        assert_eq!(parse_query("x=1"), Ok(FileQuery::default()));
    }
}
