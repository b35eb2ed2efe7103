//! The data plane of `d8 data export list|download` (docs/development/D8-CLIENT.md §5, §7): base
//! URL choice, Go's `url.JoinPath` semantics, the recursive download that starts children while the
//! listing is still streaming (ten at a time, the rest inline), and block downloads. Unlike d8,
//! every failure is returned: d8 logs "Not all files have been downloaded" and exits 0, which is
//! the very failure a test must see.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use futures::future::BoxFuture;
use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;

use crate::export::Ready;
use crate::kubecfg::{Access, Credentials};
use crate::listing::{Decoder, Item};
use crate::{Error, Result};

/// What Go's URL path escaping leaves alone: unreserved characters, `/` and the sub-delimiters
/// `!$&'()*+,;=:@`; everything else is percent-encoded on the wire.
const PATH: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// `url.JoinPath(base, elems…)`: the elements are taken as already-escaped text (a `%41` in a
/// name becomes `A`), joined, cleaned of `.`/`..` and duplicate slashes, with the last element's
/// trailing `/` kept; the result is escaped again for the wire.
pub fn join(base: &str, elems: &[&str]) -> String {
    let (origin, base_path) = match base.find("://") {
        Some(i) => match base[i + 3..].find('/') {
            Some(j) => base.split_at(i + 3 + j),
            None => (base, "/"),
        },
        None => ("", base),
    };
    let mut raw = base_path.to_owned();
    for e in elems {
        raw.push('/');
        raw.push_str(e);
    }
    let trailing = raw.ends_with('/');
    let decoded = percent_decode_str(&raw).decode_utf8_lossy().into_owned();
    let mut parts: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    let mut path = format!("/{}", parts.join("/"));
    if trailing && path != "/" {
        path.push('/');
    }
    format!("{origin}{}", utf8_percent_encode(&path, PATH))
}

/// Content-Length as d8 prints it: Go's binary-SI quantity (`32Mi`, `10Gi`, or bytes).
pub fn binary_si(n: u64) -> String {
    const SUFFIXES: [&str; 6] = ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
    let mut best = None;
    for (i, s) in SUFFIXES.iter().enumerate() {
        let unit = 1u64 << (10 * (i + 1));
        if n >= unit && n.is_multiple_of(unit) {
            best = Some((n / unit, *s));
        }
    }
    match best {
        Some((v, s)) => format!("{v}{s}"),
        None => n.to_string(),
    }
}

/// Where the data requests go: `publicURL` (with `https://` prefixed when it has no scheme,
/// status.ca not trusted) when publishing, else `status.url` with status.ca.
pub struct Endpoint {
    pub base: String,
    pub client: reqwest::Client,
    pub access: Access,
    pub mode: String,
}

/// Test aids, not in d8: ways to reach the same exporter that the local cluster needs or that a
/// comparison wants.
#[derive(Clone, Debug, Default)]
pub struct Aids {
    /// Send the data requests under the public prefix (`/<namespace>/<name>/`, what the Ingress
    /// forwards) to status.url, since the local cluster has no ingress controller.
    pub public_prefix_on_url: Option<String>,
    /// Dial this address for the URL's host (as `curl --connect-to`), TLS name unchanged: the
    /// exporter pod itself, to compare with the path through its Service.
    pub connect_to: Option<std::net::SocketAddr>,
}

impl Endpoint {
    pub fn new(access: &Access, ready: &Ready, publish: bool, aids: &Aids) -> Result<Self> {
        let public_prefix_on_url = aids.public_prefix_on_url.as_deref();
        let (base, ca) = if publish {
            let p = &ready.public_url;
            let base = if p.starts_with("http") {
                p.clone()
            } else {
                format!("https://{p}")
            };
            (base, None)
        } else {
            (ready.url.clone(), Some(ready.ca.as_slice()))
        };
        // The local cluster has no ingress controller: a test can still send requests under the
        // public prefix (`/<namespace>/<name>/`, what the Ingress forwards) to status.url.
        let base = match public_prefix_on_url {
            Some(prefix) => join(&ready.url, &[prefix, ""]),
            None => base,
        };
        let ca = if public_prefix_on_url.is_some() {
            Some(ready.ca.as_slice())
        } else {
            ca
        };
        if matches!(access.credentials, Credentials::None) {
            return Err(Error::step("data plane", "No auth"));
        }
        let host = base
            .split_once("://")
            .map(|(_, rest)| rest.split(['/', ':']).next().unwrap_or_default().to_owned())
            .unwrap_or_default();
        let connect_to = aids.connect_to.map(|addr| (host.as_str(), addr));
        Ok(Endpoint {
            base,
            client: access.data_client(ca, connect_to)?,
            access: access.clone(),
            mode: ready.volume_mode.clone(),
        })
    }

    fn files_url(&self, path: &str) -> String {
        join(&self.base, &["api/v1/files", path])
    }

    fn block_url(&self) -> String {
        join(&self.base, &["api/v1/block"])
    }

    async fn failure(step: String, resp: reqwest::Response, limit: usize) -> Error {
        let code = resp.status();
        let has_length = resp.content_length().is_some_and(|n| n > 0);
        let body = resp.text().await.unwrap_or_default();
        let body: String = body.chars().take(limit).collect();
        let msg = if has_length || limit > 1000 {
            format!("Backend response \"{code}\" Msg: {body}")
        } else {
            format!("Backend response \"{code}\"")
        };
        Error::step(step, msg)
    }

    /// `list`: a Filesystem path must end in `/`; its listing body is returned raw. Block: HEAD
    /// the device and return `Disk size: …`.
    pub async fn list(&self, path: &str) -> Result<String> {
        if self.mode == "Block" {
            let url = self.block_url();
            let resp = self
                .access
                .authorize(self.client.head(&url))
                .send()
                .await
                .map_err(|e| Error::step(format!("HEAD {url}"), e.to_string()))?;
            if !resp.status().is_success() {
                return Err(Self::failure(format!("HEAD {url}"), resp, 4096).await);
            }
            return Ok(resp
                .headers()
                .get(reqwest::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .map(|n| format!("Disk size: {}\n", binary_si(n)))
                .unwrap_or_default());
        }
        if !path.ends_with('/') {
            return Err(Error::step("list", "invalid source path"));
        }
        let url = self.files_url(path);
        let resp = self
            .access
            .authorize(self.client.get(&url))
            .send()
            .await
            .map_err(|e| Error::step(format!("GET {url}"), e.to_string()))?;
        if resp.status() != reqwest::StatusCode::OK {
            return Err(Self::failure(format!("GET {url}"), resp, 4096).await);
        }
        resp.text()
            .await
            .map_err(|e| Error::step(format!("GET {url}"), e.to_string()))
    }

    /// Streams one file to `out` (created, truncating); a short body is an error.
    async fn file(&self, path: &str, out: &Path) -> Result<u64> {
        let url = self.files_url(path);
        self.save(&url, out).await
    }

    async fn save(&self, url: &str, out: &Path) -> Result<u64> {
        let step = format!("GET {url}");
        let mut resp = self
            .access
            .authorize(self.client.get(url))
            .send()
            .await
            .map_err(|e| Error::step(step.clone(), e.to_string()))?;
        if resp.status() != reqwest::StatusCode::OK {
            return Err(Self::failure(step, resp, 1000).await);
        }
        let want = resp.content_length();
        let mut f = tokio::fs::File::create(out)
            .await
            .map_err(|e| Error::step(format!("create {}", out.display()), e.to_string()))?;
        let mut got = 0u64;
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| Error::step(step.clone(), format!("body: {e}")))?
        {
            got += chunk.len() as u64;
            f.write_all(&chunk)
                .await
                .map_err(|e| Error::step(format!("write {}", out.display()), e.to_string()))?;
        }
        f.flush()
            .await
            .map_err(|e| Error::step(format!("write {}", out.display()), e.to_string()))?;
        if let Some(n) = want
            && n != got
        {
            return Err(Error::step(step, format!("short body: {got} of {n} bytes")));
        }
        Ok(got)
    }

    /// `download`: Block → the whole device into `out`; a Filesystem path without a trailing
    /// `/` → one file into `out`; with one → the tree into the directory `out`, which must exist.
    pub async fn download(self: &Arc<Self>, path: &str, out: &Path) -> Result<Summary> {
        let started = Instant::now();
        let mut sum = Summary::default();
        if self.mode == "Block" {
            sum.bytes = self.save(&self.block_url(), out).await?;
            sum.files = 1;
        } else if path.ends_with('/') {
            if !out.is_dir() {
                return Err(Error::step(
                    "download",
                    format!("the output directory {} does not exist", out.display()),
                ));
            }
            let errors = Arc::new(std::sync::Mutex::new(Vec::<Error>::new()));
            let totals = Arc::new(std::sync::Mutex::new(Summary::default()));
            let slots = Arc::new(Semaphore::new(10));
            let mut tasks = Vec::new();
            tree(
                self.clone(),
                path.to_owned(),
                out.to_path_buf(),
                slots,
                errors.clone(),
                totals.clone(),
                &mut tasks,
            )
            .await;
            futures::future::join_all(tasks).await;
            sum = totals.lock().map(|t| t.clone()).unwrap_or_default();
            let errors = errors.lock().map(|e| e.clone()).unwrap_or_default();
            if let Some(first) = errors.into_iter().next() {
                return Err(first);
            }
        } else {
            sum.bytes = self.file(path, out).await?;
            sum.files = 1;
        }
        sum.seconds = started.elapsed().as_secs_f64();
        Ok(sum)
    }
}

/// What a download moved.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
    pub skipped: u64,
    pub seconds: f64,
}

type Errors = Arc<std::sync::Mutex<Vec<Error>>>;
type Totals = Arc<std::sync::Mutex<Summary>>;

fn record(errors: &Errors, e: Error) {
    if let Ok(mut v) = errors.lock() {
        v.push(e);
    }
}

fn add(totals: &Totals, f: impl FnOnce(&mut Summary)) {
    if let Ok(mut t) = totals.lock() {
        f(&mut t);
    }
}

/// One directory: its listing is read as it streams, each child starts at once in a free slot or
/// runs inline (so the listing stays unread meanwhile), as d8 does.
fn tree<'a>(
    ep: Arc<Endpoint>,
    path: String,
    dir: PathBuf,
    slots: Arc<Semaphore>,
    errors: Errors,
    totals: Totals,
    tasks: &'a mut Vec<tokio::task::JoinHandle<()>>,
) -> BoxFuture<'a, ()> {
    Box::pin(async move {
        let url = ep.files_url(&path);
        let step = format!("GET {url}");
        let resp = match ep.access.authorize(ep.client.get(&url)).send().await {
            Ok(r) => r,
            Err(e) => return record(&errors, Error::step(step, e.to_string())),
        };
        if resp.status() != reqwest::StatusCode::OK {
            return record(&errors, Endpoint::failure(step, resp, 1000).await);
        }
        let mut resp = resp;
        let mut decoder = Decoder::new();
        loop {
            let (items, done) = match resp.chunk().await {
                Ok(Some(chunk)) => (decoder.push(&chunk), false),
                Ok(None) => (std::mem::take(&mut decoder).finish(), true),
                Err(e) => return record(&errors, Error::step(step, format!("listing: {e}"))),
            };
            let items = match items {
                Ok(items) => items,
                Err(e) => return record(&errors, Error::step(step, e.to_string())),
            };
            for item in items {
                child(&ep, &path, &dir, item, &slots, &errors, &totals, tasks).await;
            }
            if done {
                break;
            }
        }
        add(&totals, |t| t.dirs += 1);
    })
}

#[allow(clippy::too_many_arguments)]
async fn child(
    ep: &Arc<Endpoint>,
    path: &str,
    dir: &Path,
    item: Item,
    slots: &Arc<Semaphore>,
    errors: &Errors,
    totals: &Totals,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) {
    match item.kind.as_str() {
        "dir" => {
            let sub = dir.join(&item.name);
            if let Err(e) = tokio::fs::create_dir_all(&sub).await {
                return record(
                    errors,
                    Error::step(format!("mkdir {}", sub.display()), e.to_string()),
                );
            }
            let sub_path = format!("{path}{}/", item.name);
            match slots.clone().try_acquire_owned() {
                Ok(permit) => {
                    let (ep, slots, errors, totals) =
                        (ep.clone(), slots.clone(), errors.clone(), totals.clone());
                    tasks.push(tokio::spawn(async move {
                        let mut inner = Vec::new();
                        tree(ep, sub_path, sub, slots, errors, totals, &mut inner).await;
                        drop(permit);
                        futures::future::join_all(inner).await;
                    }));
                }
                Err(_) => {
                    tree(
                        ep.clone(),
                        sub_path,
                        sub,
                        slots.clone(),
                        errors.clone(),
                        totals.clone(),
                        tasks,
                    )
                    .await
                }
            }
        }
        "file" | "link" => {
            let file_path = format!("{path}{}", item.name);
            let out = dir.join(&item.name);
            let run = {
                let (ep, errors, totals) = (ep.clone(), errors.clone(), totals.clone());
                async move {
                    match ep.file(&file_path, &out).await {
                        Ok(n) => add(&totals, |t| {
                            t.files += 1;
                            t.bytes += n;
                        }),
                        Err(e) => record(&errors, e),
                    }
                }
            };
            match slots.clone().try_acquire_owned() {
                Ok(permit) => tasks.push(tokio::spawn(async move {
                    run.await;
                    drop(permit);
                })),
                Err(_) => run.await,
            }
        }
        other => {
            eprintln!("d8: skipping {path}{} of type {other:?}", item.name);
            add(totals, |t| t.skipped += 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_follows_go() {
        let b = "https://e.ns.svc/";
        let cases = [
            (vec!["api/v1/files", "/"], "https://e.ns.svc/api/v1/files/"),
            (
                vec!["api/v1/files", "/docs/"],
                "https://e.ns.svc/api/v1/files/docs/",
            ),
            (
                vec!["api/v1/files", "/a b/c?d#e"],
                "https://e.ns.svc/api/v1/files/a%20b/c%3Fd%23e",
            ),
            (
                vec!["api/v1/files", "/x/../y"],
                "https://e.ns.svc/api/v1/files/y",
            ),
            // A name with %XX is taken as escaped: `a%41` is requested as `aA`.
            (
                vec!["api/v1/files", "/a%41"],
                "https://e.ns.svc/api/v1/files/aA",
            ),
            (
                vec!["api/v1/files", "/été"],
                "https://e.ns.svc/api/v1/files/%C3%A9t%C3%A9",
            ),
            (vec!["api/v1/block"], "https://e.ns.svc/api/v1/block"),
        ];
        for (elems, want) in cases {
            assert_eq!(join(b, &elems), want, "{elems:?}");
        }
        assert_eq!(
            join("https://h/ns/name/", &["api/v1/finished"]),
            "https://h/ns/name/api/v1/finished"
        );
        assert_eq!(
            join("https://h:8443", &["api/v1/block"]),
            "https://h:8443/api/v1/block"
        );
    }

    #[test]
    fn sizes_print_as_go_quantities() {
        assert_eq!(binary_si(33554432), "32Mi");
        assert_eq!(binary_si(10 << 30), "10Gi");
        assert_eq!(binary_si(1536 * 1024), "1536Ki");
        assert_eq!(binary_si(1234), "1234");
        assert_eq!(binary_si(0), "0");
    }
}
