//! The HTTP layer: routing, auth, and turning volume objects into responses.

use std::fs::File;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actix_http::{Extensions, HttpService, KeepAlive};
use actix_service::map_config;
use actix_tls::accept::openssl::TlsStream;
use actix_web::body::{BodyStream, SizedStream};
use actix_web::dev::AppConfig;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::rt::net::TcpStream;
use actix_web::{App, HttpRequest, HttpResponse, HttpResponseBuilder, web};
use anyhow::Context as _;
use bytes::Bytes;
use futures::stream;
use sha2::Digest;

use crate::activity::{Activity, renew_lease};
use crate::auth::{Auth, AuthError, PeerCert, REALM_CHALLENGE};
use crate::block::BlockVolume;
use crate::body::{AccessLog, BoxBody, Metered, file_range, multipart};
use crate::conditional::{Conditions, Decision, Validators, evaluate, format_http_date};
use crate::config::{Config, Mode};
use crate::headers::{content_disposition, content_type_for, file_etag, permissions, rfc3339};
use crate::listing::{self, encode_item};
use crate::metrics::Metrics;
use crate::paths::{PathError, VolumePath, parse_volume_path};
use crate::range::{RangePlan, multipart_layout, plan};
use crate::routes::{FileQuery, Route, parse_query, route};
use crate::tarball::{ChannelWriter, write_tree};
use crate::tls::{TlsFiles, TlsReloader, peer_cert};
use crate::volume::{DirReader, FsVolume, Meta, Resolved, VolumeError};

/// Header read timeout: slow-header clients are cut off, bodies are never timed.
pub const REQUEST_HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle time allowed between requests on a kept-alive connection.
pub const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// Bounds one listing batch so a huge directory streams out steadily.
const LISTING_BATCH_BYTES: usize = 64 * 1024;

pub enum Source {
    Filesystem(Arc<FsVolume>),
    Block(Arc<BlockVolume>),
}

pub struct State {
    pub source: Source,
    pub prefix: String,
    pub export_name: String,
    pub auth: Auth,
    pub metrics: Arc<Metrics>,
    pub activity: Arc<Activity>,
}

/// An error answered as `text/plain`, the shape the d8 client shows to its user verbatim.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    headers: Vec<(HeaderName, String)>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    fn with_header(mut self, name: HeaderName, value: impl Into<String>) -> ApiError {
        self.headers.push((name, value.into()));
        self
    }

    fn from_path(e: PathError) -> ApiError {
        let status = match e {
            PathError::TooLong | PathError::NameTooLong => StatusCode::URI_TOO_LONG,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, e.to_string())
    }

    fn from_volume(e: VolumeError, path: &VolumePath) -> ApiError {
        let p = path.display();
        match e {
            VolumeError::NotFound => ApiError::new(StatusCode::NOT_FOUND, format!("{p} not found")),
            VolumeError::Loop => ApiError::bad_request(format!(
                "{p}: too many levels of symbolic links (is there a symlink loop?)"
            )),
            VolumeError::PermissionDenied => ApiError::new(
                StatusCode::FORBIDDEN,
                format!("{p}: the exporter has no permission to read it"),
            ),
            VolumeError::NameTooLong => {
                ApiError::new(StatusCode::URI_TOO_LONG, format!("{p}: name too long"))
            }
            VolumeError::Changed => ApiError::new(
                StatusCode::CONFLICT,
                format!("{p} changed while being opened; retry"),
            )
            .with_header(header::RETRY_AFTER, "1"),
            VolumeError::Io(err) => {
                log::error!("I/O error on {p}: {err}");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("I/O error reading {p}"),
                )
            }
        }
    }

    fn from_auth(e: AuthError) -> ApiError {
        match e {
            AuthError::Unauthenticated(m) => ApiError::new(StatusCode::UNAUTHORIZED, m)
                .with_header(header::WWW_AUTHENTICATE, REALM_CHALLENGE),
            AuthError::Forbidden(m) => ApiError::new(StatusCode::FORBIDDEN, m),
            AuthError::Unavailable(m) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, m)
                .with_header(header::RETRY_AFTER, "5"),
        }
    }

    fn internal(what: &str, e: impl std::fmt::Display) -> ApiError {
        log::error!("{what}: {e}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("internal error: {what}"),
        )
    }
}

enum Body {
    /// Plain text (errors, health, metrics).
    Text(String),
    Empty,
    /// Known length: sent with Content-Length.
    Sized(u64, BoxBody),
    /// Unknown length: chunked.
    Chunked(BoxBody),
}

struct Reply {
    builder: HttpResponseBuilder,
    status: StatusCode,
    body: Body,
}

impl Reply {
    fn new(status: StatusCode) -> Reply {
        Reply {
            builder: HttpResponse::build(status),
            status,
            body: Body::Empty,
        }
    }

    fn header(mut self, name: HeaderName, value: impl AsRef<str>) -> Reply {
        if let Ok(v) = HeaderValue::from_str(value.as_ref()) {
            self.builder.insert_header((name, v));
        }
        self
    }

    fn status(mut self, status: StatusCode) -> Reply {
        self.builder.status(status);
        self.status = status;
        self
    }

    fn text(status: StatusCode, content_type: &str, text: String) -> Reply {
        let mut r = Reply::new(status).header(header::CONTENT_TYPE, content_type);
        r.body = Body::Text(text);
        r
    }

    fn from_error(e: ApiError) -> Reply {
        let mut r = Reply::text(
            e.status,
            "text/plain; charset=utf-8",
            format!("{}\n", e.message),
        )
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
        for (k, v) in e.headers {
            r = r.header(k, v);
        }
        r
    }
}

pub async fn handle(req: HttpRequest, state: web::Data<State>) -> HttpResponse {
    let started = Instant::now();
    let mut log = AccessLog {
        method: req.method().to_string(),
        path: req.uri().path().to_string(),
        status: 0,
        user: "-".into(),
        started,
        bytes: 0,
        completed: false,
    };
    let mut authenticated = false;
    let reply = match dispatch(&req, &state, &mut log, &mut authenticated).await {
        Ok(r) => r,
        Err(e) => Reply::from_error(e),
    };
    finish(&req, &state, reply, log, authenticated)
}

fn finish(
    req: &HttpRequest,
    state: &State,
    reply: Reply,
    mut log: AccessLog,
    authenticated: bool,
) -> HttpResponse {
    let Reply {
        mut builder,
        status,
        body,
    } = reply;
    log.status = status.as_u16();
    state.metrics.request(req.method().as_str(), log.status);
    let success = authenticated && status.as_u16() < 400;
    if success {
        state.activity.touch();
    }
    let head = req.method() == Method::HEAD;
    match body {
        Body::Text(text) => {
            log.bytes = if head { 0 } else { text.len() as u64 };
            log.completed = true;
            log.write();
            builder.body(text)
        }
        Body::Empty => {
            log.completed = true;
            log.write();
            builder.finish()
        }
        Body::Sized(len, stream) => {
            if head {
                log.completed = true;
                log.write();
                builder.body(SizedStream::new(
                    len,
                    stream::empty::<Result<Bytes, io::Error>>(),
                ))
            } else {
                let activity = success.then(|| state.activity.clone());
                builder.body(SizedStream::new(
                    len,
                    Metered::new(stream, state.metrics.clone(), activity, log),
                ))
            }
        }
        Body::Chunked(stream) => {
            if head {
                log.completed = true;
                log.write();
                builder.body(BodyStream::new(stream::empty::<Result<Bytes, io::Error>>()))
            } else {
                let activity = success.then(|| state.activity.clone());
                builder.body(BodyStream::new(Metered::new(
                    stream,
                    state.metrics.clone(),
                    activity,
                    log,
                )))
            }
        }
    }
}

async fn dispatch(
    req: &HttpRequest,
    state: &State,
    log: &mut AccessLog,
    authenticated: &mut bool,
) -> Result<Reply, ApiError> {
    let path = req.uri().path();
    let r = route(path, &state.prefix);
    if r == Route::NotFound {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not found: the exporter serves /api/v1/files/<path> and /api/v1/block",
        ));
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET and HEAD are supported",
        )
        .with_header(header::ALLOW, "GET, HEAD"));
    }
    match r {
        Route::Healthz => {
            return Ok(Reply::text(
                StatusCode::OK,
                "text/plain; charset=utf-8",
                "ok\n".into(),
            ));
        }
        Route::Readyz => {
            let ready = match &state.source {
                Source::Filesystem(fs) => fs.is_healthy(),
                Source::Block(b) => b.size().is_ok(),
            };
            return Ok(if ready {
                Reply::text(
                    StatusCode::OK,
                    "text/plain; charset=utf-8",
                    "ready\n".into(),
                )
            } else {
                Reply::text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain; charset=utf-8",
                    "volume unavailable\n".into(),
                )
            });
        }
        Route::Metrics => {
            return Ok(Reply::text(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                state.metrics.render(),
            ));
        }
        _ => {}
    }

    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    let peer = req.conn_data::<PeerCert>();
    let identity = state
        .auth
        .check(authorization, peer)
        .await
        .map_err(ApiError::from_auth)?;
    log.user = identity.username;
    *authenticated = true;

    match (r, &state.source) {
        (Route::Files(rest), Source::Filesystem(fs)) => {
            serve_files(req, state, fs.clone(), rest).await
        }
        (Route::Block(rest), Source::Block(b)) => serve_block(req, b.clone(), rest).await,
        (Route::Files(_), Source::Block(_)) => Err(ApiError::bad_request(
            "VolumeMode: Block. Not supported downloading files. Use /api/v1/block",
        )),
        (Route::Block(_), Source::Filesystem(_)) => Err(ApiError::bad_request(
            "VolumeMode: Filesystem. Not supported downloading raw block. Use /api/v1/files/",
        )),
        _ => Err(ApiError::new(StatusCode::NOT_FOUND, "not found")),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal("blocking task failed", e))
}

fn attribute_headers(mut r: Reply, meta: &Meta, kind: &str) -> Reply {
    r = r.header(HeaderName::from_static("x-type"), kind);
    r = r.header(
        HeaderName::from_static("x-attribute-modtime"),
        rfc3339(meta.mtime),
    );
    r = r.header(
        HeaderName::from_static("x-attribute-uid"),
        meta.uid.to_string(),
    );
    r = r.header(
        HeaderName::from_static("x-attribute-gid"),
        meta.gid.to_string(),
    );
    r.header(
        HeaderName::from_static("x-attribute-permissions"),
        permissions(meta.mode),
    )
}

async fn serve_files(
    req: &HttpRequest,
    state: &State,
    fs: Arc<FsVolume>,
    rest: &str,
) -> Result<Reply, ApiError> {
    let vp = parse_volume_path(rest).map_err(ApiError::from_path)?;
    let query = parse_query(req.query_string()).map_err(ApiError::bad_request)?;
    let resolved = {
        let fs = fs.clone();
        let vp = vp.clone();
        blocking(move || fs.resolve(&vp)).await?
    };
    let resolved = resolved.map_err(|e| ApiError::from_volume(e, &vp))?;
    let shown = vp.display();
    match resolved {
        Resolved::File(file, meta) => {
            if vp.trailing_slash {
                return Err(ApiError::bad_request(format!(
                    "{shown} is a file, not a directory: request it without the trailing '/'"
                )));
            }
            if query.tar {
                return Err(ApiError::bad_request(
                    "format=tar applies to directories (paths ending in '/'), not to files",
                ));
            }
            serve_file(req, file, meta, &vp, &query).await
        }
        Resolved::Dir(fd, meta) => {
            if !vp.trailing_slash {
                return Err(ApiError::bad_request(format!(
                    "{shown} is a directory: add a trailing '/' to list it (or '/?format=tar' to download it as one tar)"
                )));
            }
            if query.md5 || query.sha256 {
                return Err(ApiError::bad_request(
                    "hash attributes are computed for single files only; request them per file",
                ));
            }
            if query.tar {
                serve_tar(req, state, fd, meta, &vp)
            } else {
                serve_listing(req, fs, fd, meta, &vp)
            }
        }
        Resolved::Other(meta) => Err(ApiError::bad_request(format!(
            "{shown} is a {}; special files are listed but never served",
            meta.kind_name()
        ))),
    }
}

fn hash_file(
    file: &File,
    size: u64,
    md5: bool,
    sha256: bool,
) -> io::Result<(Option<String>, Option<String>)> {
    let mut m = md5.then(md5::Md5::new);
    let mut s = sha256.then(sha2::Sha256::new);
    let mut buf = vec![0u8; 1024 * 1024];
    let mut off = 0u64;
    while off < size {
        let n = match file.read_at(&mut buf, off) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if let Some(m) = m.as_mut() {
            m.update(&buf[..n]);
        }
        if let Some(s) = s.as_mut() {
            s.update(&buf[..n]);
        }
        off += n as u64;
    }
    Ok((
        m.map(|m| hex::encode(m.finalize())),
        s.map(|s| hex::encode(s.finalize())),
    ))
}

async fn serve_file(
    req: &HttpRequest,
    file: File,
    meta: Meta,
    vp: &VolumePath,
    query: &FileQuery,
) -> Result<Reply, ApiError> {
    let file = Arc::new(file);
    let name = vp.file_name().unwrap_or(b"file").to_vec();
    let mut r = attribute_headers(Reply::new(StatusCode::OK), &meta, "file");
    if query.md5 || query.sha256 {
        let f = file.clone();
        let (want_md5, want_sha) = (query.md5, query.sha256);
        let (md5, sha) = blocking(move || hash_file(&f, meta.size, want_md5, want_sha))
            .await?
            .map_err(|e| ApiError::internal("hashing failed", e))?;
        if let Some(h) = md5 {
            r = r.header(HeaderName::from_static("x-attribute-hash-md5"), h);
        }
        if let Some(h) = sha {
            r = r.header(HeaderName::from_static("x-attribute-hash-sha256"), h);
        }
    }
    let info = ContentInfo {
        size: meta.size,
        etag: file_etag(meta.dev, meta.ino, meta.size, meta.mtime, meta.mtime_nsec),
        last_modified: Some(meta.mtime),
        content_type: content_type_for(&name),
        disposition: content_disposition(&name),
    };
    content(req, r, info, file)
}

struct ContentInfo {
    size: u64,
    etag: String,
    last_modified: Option<i64>,
    content_type: String,
    disposition: String,
}

static BOUNDARY_COUNTER: AtomicU64 = AtomicU64::new(0);

fn boundary() -> String {
    let n = BOUNDARY_COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let digest = sha2::Sha256::digest(format!("{t}-{n}-{}", std::process::id()).as_bytes());
    hex::encode(&digest[..15])
}

/// Conditional requests and ranges over a positional-read source, as Go's `http.ServeContent`.
fn content(
    req: &HttpRequest,
    mut r: Reply,
    info: ContentInfo,
    file: Arc<File>,
) -> Result<Reply, ApiError> {
    let h = |name: HeaderName| req.headers().get(name).and_then(|v| v.to_str().ok());
    let conditions = Conditions {
        if_match: h(header::IF_MATCH),
        if_unmodified_since: h(header::IF_UNMODIFIED_SINCE),
        if_none_match: h(header::IF_NONE_MATCH),
        if_modified_since: h(header::IF_MODIFIED_SINCE),
        if_range: h(header::IF_RANGE),
    };
    let validators = Validators {
        etag: Some(&info.etag),
        last_modified: info.last_modified,
    };
    r = r
        .header(header::ETAG, &info.etag)
        .header(header::ACCEPT_RANGES, "bytes");
    let decision = evaluate(&conditions, &validators);
    if decision == Decision::NotModified {
        // As Go: a 304 keeps the validator but drops Last-Modified when an ETag exists.
        return Ok(r.status(StatusCode::NOT_MODIFIED));
    }
    if let Some(lm) = info.last_modified {
        r = r.header(header::LAST_MODIFIED, format_http_date(lm));
    }
    let Decision::Proceed { use_range } = decision else {
        return Err(ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "precondition failed",
        ));
    };
    r = r.header(header::CONTENT_DISPOSITION, &info.disposition);
    let range_header = if use_range {
        req.headers().get(header::RANGE)
    } else {
        None
    };
    let range_text = match range_header {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::new(StatusCode::RANGE_NOT_SATISFIABLE, "invalid range"))?,
        ),
        None => None,
    };
    let size = info.size;
    match plan(range_text, size) {
        RangePlan::Full => {
            r = r.header(header::CONTENT_TYPE, &info.content_type);
            r.body = Body::Sized(size, file_range(file, 0, size));
            Ok(r)
        }
        RangePlan::Single(range) => {
            r = r
                .status(StatusCode::PARTIAL_CONTENT)
                .header(header::CONTENT_TYPE, &info.content_type)
                .header(header::CONTENT_RANGE, range.content_range(size));
            r.body = Body::Sized(range.length, file_range(file, range.start, range.length));
            Ok(r)
        }
        RangePlan::Multi(ranges) => {
            let layout = multipart_layout(&ranges, size, &info.content_type, &boundary());
            r = r
                .status(StatusCode::PARTIAL_CONTENT)
                .header(header::CONTENT_TYPE, &layout.content_type);
            let total = layout.total_length;
            r.body = Body::Sized(total, multipart(file, layout));
            Ok(r)
        }
        RangePlan::Unsatisfiable => Err(ApiError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "requested range not satisfiable",
        )
        .with_header(header::CONTENT_RANGE, format!("bytes */{size}"))),
        RangePlan::Invalid => Err(ApiError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "invalid range",
        )),
    }
}

fn serve_listing(
    req: &HttpRequest,
    fs: Arc<FsVolume>,
    fd: std::os::fd::OwnedFd,
    meta: Meta,
    vp: &VolumePath,
) -> Result<Reply, ApiError> {
    let mut r = attribute_headers(Reply::new(StatusCode::OK), &meta, "dir")
        .header(header::CONTENT_TYPE, "application/json");
    if req.method() == Method::HEAD {
        r.body = Body::Chunked(Box::pin(stream::empty()));
        return Ok(r);
    }
    let reader = DirReader::new(fd, vp).map_err(|e| ApiError::from_volume(e, vp))?;
    let prefix = vp.uri_prefix();
    let shown = vp.display();
    // State: (reader, next item is the first, head already sent). `None` ends the stream.
    let start = Some((reader, true, false));
    let body = stream::unfold(start, move |state| {
        let fs = fs.clone();
        let prefix = prefix.clone();
        let shown = shown.clone();
        async move {
            let (mut reader, mut first, started) = state?;
            if !started {
                return Some((
                    Ok(Bytes::from_static(listing::HEAD)),
                    Some((reader, first, true)),
                ));
            }
            let batch = tokio::task::spawn_blocking(move || {
                let mut buf = Vec::with_capacity(LISTING_BATCH_BYTES + 1024);
                let mut done = false;
                while buf.len() < LISTING_BATCH_BYTES {
                    match reader.next_entry(&fs) {
                        None => {
                            done = true;
                            break;
                        }
                        Some(Ok(entry)) => {
                            if encode_item(&mut buf, &prefix, &entry, first).is_ok() {
                                first = false;
                            }
                        }
                        Some(Err(e)) => {
                            return Err(io::Error::other(format!(
                                "reading directory {shown}: {e}"
                            )));
                        }
                    }
                }
                if done {
                    buf.extend_from_slice(listing::TAIL);
                }
                Ok((reader, buf, first, done))
            })
            .await;
            match batch {
                Ok(Ok((reader, buf, first, done))) => Some((
                    Ok(Bytes::from(buf)),
                    if done {
                        None
                    } else {
                        Some((reader, first, true))
                    },
                )),
                Ok(Err(e)) => Some((Err(e), None)),
                Err(e) => Some((Err(io::Error::other(e)), None)),
            }
        }
    });
    r.body = Body::Chunked(Box::pin(body));
    Ok(r)
}

fn serve_tar(
    req: &HttpRequest,
    state: &State,
    fd: std::os::fd::OwnedFd,
    meta: Meta,
    vp: &VolumePath,
) -> Result<Reply, ApiError> {
    let base = match vp.file_name() {
        Some(n) => n.to_vec(),
        None => state.export_name.as_bytes().to_vec(),
    };
    let mut name = base;
    name.extend_from_slice(b".tar");
    let mut r = attribute_headers(Reply::new(StatusCode::OK), &meta, "dir")
        .header(header::CONTENT_TYPE, "application/x-tar")
        .header(header::CONTENT_DISPOSITION, content_disposition(&name));
    if req.method() == Method::HEAD {
        r.body = Body::Chunked(Box::pin(stream::empty()));
        return Ok(r);
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(4);
    let shown = vp.display();
    tokio::task::spawn_blocking(move || {
        let writer = ChannelWriter::new(tx.clone());
        if let Err(e) = write_tree(fd, writer)
            && e.kind() != io::ErrorKind::BrokenPipe
        {
            log::warn!("tar of {shown} failed: {e}");
            let _ = tx.blocking_send(Err(e));
        }
    });
    let body = stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    r.body = Body::Chunked(Box::pin(body));
    Ok(r)
}

async fn serve_block(
    req: &HttpRequest,
    blk: Arc<BlockVolume>,
    rest: &str,
) -> Result<Reply, ApiError> {
    if !rest.is_empty() && rest != "/" {
        return Err(ApiError::bad_request(
            "the block endpoint has no sub-paths; use /api/v1/block",
        ));
    }
    let size = {
        let blk = blk.clone();
        blocking(move || blk.size())
            .await?
            .map_err(|e| ApiError::internal("cannot read the device size", e))?
    };
    let r = Reply::new(StatusCode::OK);
    let info = ContentInfo {
        size,
        etag: blk.etag(size),
        last_modified: None,
        content_type: "application/octet-stream".into(),
        disposition: content_disposition(b"data.img"),
    };
    content(req, r, info, blk.file())
}

fn init_source(cfg: &Config) -> anyhow::Result<Source> {
    Ok(match cfg.mode {
        Mode::Filesystem => {
            Source::Filesystem(Arc::new(FsVolume::open(&cfg.source).with_context(
                || format!("cannot open source directory {}", cfg.source.display()),
            )?))
        }
        Mode::Block => Source::Block(Arc::new(
            BlockVolume::open(&cfg.source)
                .with_context(|| format!("cannot open source device {}", cfg.source.display()))?,
        )),
    })
}

/// Runs the exporter until SIGTERM/SIGINT. Must be called inside an actix system.
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let source = init_source(&cfg)?;
    let metrics = Arc::new(Metrics::new());
    let activity = Arc::new(Activity::default());

    let client = match kube::Client::try_default().await {
        Ok(c) => Some(c),
        Err(e) if cfg.no_auth => {
            log::warn!("no Kubernetes client ({e}); activity will not be reported");
            None
        }
        Err(e) => return Err(anyhow::anyhow!("cannot create the Kubernetes client: {e}")),
    };
    if cfg.no_auth {
        log::warn!(
            "!!! --no-auth: EVERY REQUEST IS SERVED WITHOUT AUTHENTICATION. Benchmarks and tests only. !!!"
        );
    }
    let auth = Auth::new(
        if cfg.no_auth { None } else { client.clone() },
        cfg.export_namespace.clone(),
        cfg.export_name.clone(),
        cfg.auth_cache_ttl,
        metrics.clone(),
    );
    match (&client, &cfg.lease_namespace, &cfg.lease_name) {
        (Some(c), Some(ns), Some(name)) => {
            let holder = std::env::var("POD_NAME")
                .unwrap_or_else(|_| format!("svdm-exporter-{}", cfg.export_name));
            actix_web::rt::spawn(renew_lease(
                activity.clone(),
                c.clone(),
                ns.clone(),
                name.clone(),
                holder,
                cfg.activity_interval,
            ));
        }
        _ => log::warn!(
            "no lease configured (--lease-namespace/--lease-name); activity is not reported"
        ),
    }

    let files = TlsFiles {
        cert: cfg.tls_cert.clone(),
        key: cfg.tls_key.clone(),
        client_ca: cfg.client_ca.clone(),
    };
    let tls = TlsReloader::new(files).context("cannot load TLS certificate")?;
    actix_web::rt::spawn(tls.clone().watch(Duration::from_secs(2)));
    let acceptor = tls.acceptor().context("cannot build TLS acceptor")?;

    let state = web::Data::new(State {
        source,
        prefix: format!("/{}/{}", cfg.export_namespace, cfg.export_name),
        export_name: cfg.export_name.clone(),
        auth,
        metrics,
        activity,
    });

    let listener = TcpListener::bind(SocketAddr::new(cfg.address, cfg.port))
        .with_context(|| format!("cannot listen on {}:{}", cfg.address, cfg.port))?;
    let local = listener.local_addr()?;
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 4);
    let server = actix_server::Server::build()
        .workers(workers)
        .listen("svdm-exporter", listener, move || {
            let app = App::new()
                .app_data(state.clone())
                .default_service(web::to(handle));
            HttpService::build()
                .keep_alive(KeepAlive::Timeout(KEEP_ALIVE))
                .client_request_timeout(REQUEST_HEAD_TIMEOUT)
                .client_disconnect_timeout(Duration::from_secs(5))
                .on_connect_ext(|io: &TlsStream<TcpStream>, ext: &mut Extensions| {
                    // Without NODELAY a response whose head and body go out in separate writes waits for
                    // the client's delayed ACK: ~10 ms per small range request.
                    let _ = io.get_ref().set_nodelay(true);
                    if let Some(p) = peer_cert(io.ssl()) {
                        ext.insert(p);
                    }
                })
                .h1(map_config(app, |_| AppConfig::default()))
                .openssl(acceptor.clone())
        })?
        .run();
    log::info!(
        "listening on {local} (mode {:?}, export {}/{})",
        cfg.mode,
        cfg.export_namespace,
        cfg.export_name
    );
    server.await?;
    Ok(())
}
