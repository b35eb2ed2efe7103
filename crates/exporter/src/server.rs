//! The HTTP layer: routing, auth, and turning volume objects into responses.

use std::fs::File;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actix_http::body::{BodyStream, BoxBody as HttpBody, MessageBody, SizedStream};
use actix_http::header::{self, HeaderName, HeaderValue};
use actix_http::{
    Extensions, HttpMessage, HttpService, KeepAlive, Request, Response, ResponseBuilder,
};
use actix_http::{Method, StatusCode};
use actix_rt::net::TcpStream;
use actix_service::{ServiceFactoryExt, fn_service};
use actix_tls::accept::TlsError;
use actix_tls::accept::openssl::{Acceptor, TlsStream};
use anyhow::Context as _;
use bytes::Bytes;
use bytes::BytesMut;
use futures::stream;
use sha2::Digest;

use crate::activity::{Activity, renew_lease};
use crate::auth::{Auth, AuthError, PeerCert, REALM_CHALLENGE, ReviewLimits};
use crate::block::BlockVolume;
use crate::body::{
    AccessLog, BoxBody, Content, Metered, Reauth, Verdict, content_range, memory_range, multipart,
};
use crate::conditional::{Conditions, Decision, Validators, evaluate};
use crate::config::{Config, Mode};
use crate::conn::{ConnState, Guarded, Limits};
use crate::headers::{
    content_type_for, write_content_disposition, write_http_date, write_permissions, write_rfc3339,
};
use crate::listing::{self, encode_item};
use crate::logsafe::escape;
use crate::metrics::{MethodLabel, Metrics};
use crate::offload::{IoMode, Offload, WouldBlock};
use crate::paths::{PathError, VolumePath, parse_volume_path};
use crate::range::{RangePlan, multipart_layout, plan};
use crate::routes::{AdminRoute, FileQuery, Route, admin_route, parse_query, route};
use crate::tarball::{ChannelWriter, write_tree};
use crate::tls::{TlsFiles, TlsReloader, peer_cert};
use crate::volume::{DirReader, FsVolume, Meta, Resolved, VolumeError};

/// Header read timeout: slow-header clients are cut off, bodies are never timed.
pub const REQUEST_HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle time allowed between requests on a kept-alive connection.
pub const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// Bounds one listing batch so a huge directory streams out steadily.
const LISTING_BATCH_BYTES: usize = 64 * 1024;
/// Files up to this size are read whole in the step that opens them and sent with their headers in
/// one write: one TLS record and one TCP segment for the typical small file, no thread-pool hop.
pub const SMALL_FILE_BYTES: u64 = 64 * 1024;

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
    pub offload: Offload,
    /// Whole-file hashes running at once.
    pub hash_slots: Arc<tokio::sync::Semaphore>,
    /// Tar streams running at once.
    pub tar_slots: Arc<tokio::sync::Semaphore>,
    /// How often a streaming response re-checks its requester's access (zero: never).
    pub reauthorize: Duration,
}

const LISTEN_BACKLOG: i32 = 2048;

/// Concurrent `?attribute=hash.*` computations; more wait their turn.
pub const HASH_SLOTS: usize = 2;
/// Concurrent `?format=tar` streams; more wait their turn.
pub const TAR_SLOTS: usize = 8;

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
            VolumeError::WouldBlock => ApiError::internal("file-system step", "retried inline"),
            VolumeError::Io(err) => {
                log::error!("I/O error on {}: {err}", escape(&p));
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
            AuthError::Busy(m) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, m)
                .with_header(header::RETRY_AFTER, "1"),
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
    /// File content already in memory (a small file read whole): written with the headers in one go,
    /// with none of the streaming machinery, and accounted for when the response is handed over.
    Bytes(Bytes),
    /// Known length: sent with Content-Length.
    Sized(u64, BoxBody),
    /// Unknown length: chunked.
    Chunked(BoxBody),
}

struct Reply {
    builder: ResponseBuilder,
    status: StatusCode,
    body: Body,
    /// Header values are written here and split off, so all values of one response share one buffer.
    scratch: BytesMut,
}

impl Reply {
    fn new(status: StatusCode) -> Reply {
        Reply {
            builder: Response::build(status),
            status,
            body: Body::Empty,
            scratch: BytesMut::with_capacity(384),
        }
    }

    fn header_static(&mut self, name: HeaderName, value: &'static str) -> &mut Reply {
        self.builder
            .insert_header((name, HeaderValue::from_static(value)));
        self
    }

    /// A value written by `f`, returned too; not sent if it is not a valid header value (as before,
    /// when values were parsed from strings).
    fn header_with(&mut self, name: HeaderName, f: impl FnOnce(&mut BytesMut)) -> Bytes {
        f(&mut self.scratch);
        let value = self.scratch.split().freeze();
        if let Ok(v) = HeaderValue::from_maybe_shared(value.clone()) {
            self.builder.insert_header((name, v));
        }
        value
    }

    fn header(&mut self, name: HeaderName, value: &str) {
        self.header_with(name, |b| b.extend_from_slice(value.as_bytes()));
    }

    fn status(&mut self, status: StatusCode) -> &mut Reply {
        self.builder.status(status);
        self.status = status;
        self
    }

    fn text(status: StatusCode, content_type: &'static str, text: String) -> Reply {
        let mut r = Reply::new(status);
        r.header_static(header::CONTENT_TYPE, content_type);
        r.body = Body::Text(text);
        r
    }

    fn from_error(e: ApiError) -> Reply {
        let mut r = Reply::text(
            e.status,
            "text/plain; charset=utf-8",
            format!("{}\n", e.message),
        );
        r.header_static(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
        for (k, v) in e.headers {
            r.header(k, &v);
        }
        r
    }
}

/// Shared by every worker's service.
pub type SharedState = Arc<State>;

pub async fn handle(req: Request, state: SharedState) -> Response<HttpBody> {
    if let Some(conn) = req.conn_data::<Arc<ConnState>>() {
        conn.set_stall_exempt(false);
    }
    let mut log = AccessLog {
        method: req.method().clone(),
        uri: req.uri().clone(),
        status: 0,
        user: None,
        started: Instant::now(),
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
    req: &Request,
    state: &SharedState,
    reply: Reply,
    mut log: AccessLog,
    authenticated: bool,
) -> Response<HttpBody> {
    let Reply {
        mut builder,
        status,
        body,
        ..
    } = reply;
    log.status = status.as_u16();
    state
        .metrics
        .request(MethodLabel::of(req.method().as_str()), log.status);
    let success = authenticated && status.as_u16() < 400;
    if success {
        state.activity.touch();
    }
    let head = req.method() == Method::HEAD;
    let empty = || stream::empty::<Result<Bytes, io::Error>>();
    match body {
        Body::Text(text) => {
            log.bytes = if head { 0 } else { text.len() as u64 };
            log.completed = true;
            log.write();
            boxed(builder.body(text))
        }
        Body::Empty => {
            log.completed = true;
            log.write();
            boxed(builder.finish())
        }
        Body::Bytes(bytes) => {
            let len = bytes.len() as u64;
            log.completed = true;
            if head {
                log.write();
                return boxed(builder.body(SizedStream::new(len, empty())));
            }
            log.bytes = len;
            state.metrics.sent_bytes.inc_by(len);
            log.write();
            boxed(builder.body(bytes))
        }
        Body::Sized(len, stream) => {
            if head {
                log.completed = true;
                log.write();
                return boxed(builder.body(SizedStream::new(len, empty())));
            }
            let activity = success.then(|| state.activity.clone());
            let reauth = success.then(|| reauthorization(req, state)).flatten();
            let metered = Metered::new(stream, state.metrics.clone(), activity, log, reauth);
            boxed(builder.body(SizedStream::new(len, metered)))
        }
        Body::Chunked(stream) => {
            if head {
                log.completed = true;
                log.write();
                return boxed(builder.body(BodyStream::new(empty())));
            }
            let activity = success.then(|| state.activity.clone());
            let reauth = success.then(|| reauthorization(req, state)).flatten();
            let metered = Metered::new(stream, state.metrics.clone(), activity, log, reauth);
            boxed(builder.body(BodyStream::new(metered)))
        }
    }
}

/// The repeated access check of a streamed response: the request's own credentials (its
/// Authorization header, or the connection's client certificate) checked again every
/// `--reauthorize-interval`. The raw header is held only as long as the response it authorized.
///
/// Docs: the FAQ's security section (docs/FAQ.md, docs/FAQ.ru.md) should say that a long download is
/// re-authorized every few minutes (2 by default) and that revoking `get dataexports/download` (or the
/// token) ends running transfers at the next check.
fn reauthorization(req: &Request, state: &SharedState) -> Option<Reauth> {
    if state.reauthorize.is_zero() || !state.auth.enabled() {
        return None;
    }
    let authorization = req.headers().get(header::AUTHORIZATION).cloned();
    let peer = req.conn_data::<PeerCert>().cloned();
    let state = state.clone();
    Some(Reauth::new(
        state.reauthorize,
        Box::new(move || {
            let (state, authorization, peer) = (state.clone(), authorization.clone(), peer.clone());
            Box::pin(async move {
                let verdict = state
                    .auth
                    .check(
                        authorization.as_ref().map(HeaderValue::as_bytes),
                        peer.as_ref(),
                    )
                    .await;
                match verdict {
                    Ok(_) => Verdict::Allowed,
                    Err(AuthError::Unauthenticated(why) | AuthError::Forbidden(why)) => {
                        Verdict::Revoked(why)
                    }
                    Err(AuthError::Unavailable(_) | AuthError::Busy(_)) => Verdict::Unknown,
                }
            })
        }),
    ))
}

fn boxed<B: MessageBody + 'static>(r: Response<B>) -> Response<HttpBody> {
    r.map_into_boxed_body()
}

async fn dispatch(
    req: &Request,
    state: &SharedState,
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
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    let peer = req.conn_data::<PeerCert>();
    let principal = state
        .auth
        .check(authorization, peer)
        .await
        .map_err(ApiError::from_auth)?;
    log.user = Some(principal);
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

/// A short file-system step: on the worker while the kernel can answer from its caches, else on the
/// pool (see [`crate::offload`]).
async fn fs_step<T: Send + 'static>(
    state: &State,
    step: impl Fn(IoMode) -> Result<T, WouldBlock> + Send + 'static,
) -> Result<T, ApiError> {
    state
        .offload
        .run(step)
        .await
        .map_err(|e| ApiError::internal("blocking task failed", e))
}

const X_TYPE: HeaderName = HeaderName::from_static("x-type");
const X_MODTIME: HeaderName = HeaderName::from_static("x-attribute-modtime");
const X_UID: HeaderName = HeaderName::from_static("x-attribute-uid");
const X_GID: HeaderName = HeaderName::from_static("x-attribute-gid");
const X_PERMISSIONS: HeaderName = HeaderName::from_static("x-attribute-permissions");
const X_HASH_MD5: HeaderName = HeaderName::from_static("x-attribute-hash-md5");
const X_HASH_SHA256: HeaderName = HeaderName::from_static("x-attribute-hash-sha256");

fn attribute_headers(r: &mut Reply, meta: &Meta, kind: &'static str) {
    r.header_static(X_TYPE, kind);
    r.header_with(X_MODTIME, |b| write_rfc3339(b, meta.mtime));
    r.header_with(X_UID, |b| {
        b.extend_from_slice(itoa::Buffer::new().format(meta.uid).as_bytes())
    });
    r.header_with(X_GID, |b| {
        b.extend_from_slice(itoa::Buffer::new().format(meta.gid).as_bytes())
    });
    r.header_with(X_PERMISSIONS, |b| write_permissions(b, meta.mode));
}

/// Opens a path and, for a small file a GET will send, reads it whole in the same step.
fn open_path(
    fs: &FsVolume,
    vp: &VolumePath,
    read_small: bool,
    mode: IoMode,
) -> Result<(Resolved, Option<Bytes>), VolumeError> {
    let resolved = fs.resolve(vp, mode)?;
    let small = match &resolved {
        Resolved::File(file, meta) if read_small && meta.size <= SMALL_FILE_BYTES => {
            let len = usize::try_from(meta.size).map_err(io::Error::other)?;
            let read = match mode {
                IoMode::Cached => crate::sys::pread_exact_cached(file.as_fd(), 0, len),
                IoMode::Blocking => crate::sys::pread_exact(file.as_fd(), 0, len),
            };
            match read {
                Ok(bytes) => Some(bytes),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Err(VolumeError::WouldBlock);
                }
                // Shorter than its stat said: it is being rewritten. A retry gets a consistent copy.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Err(VolumeError::Changed);
                }
                Err(e) => return Err(VolumeError::Io(e)),
            }
        }
        _ => None,
    };
    Ok((resolved, small))
}

async fn serve_files(
    req: &Request,
    state: &SharedState,
    fs: Arc<FsVolume>,
    rest: &str,
) -> Result<Reply, ApiError> {
    let vp = parse_volume_path(rest).map_err(ApiError::from_path)?;
    let query = parse_query(req.uri().query().unwrap_or("")).map_err(ApiError::bad_request)?;
    let read_small = req.method() == Method::GET && !query.tar && !query.md5 && !query.sha256;
    let opened = {
        let (fs, vp) = (fs.clone(), vp.clone());
        fs_step(state, move |mode| {
            match open_path(&fs, &vp, read_small, mode) {
                Err(VolumeError::WouldBlock) => Err(WouldBlock),
                other => Ok(other),
            }
        })
        .await?
    };
    let (resolved, small) = opened.map_err(|e| ApiError::from_volume(e, &vp))?;
    match resolved {
        Resolved::File(file, meta) => {
            if vp.trailing_slash {
                return Err(ApiError::bad_request(format!(
                    "{} is a file, not a directory: request it without the trailing '/'",
                    vp.display()
                )));
            }
            if query.tar {
                return Err(ApiError::bad_request(
                    "format=tar applies to directories (paths ending in '/'), not to files",
                ));
            }
            let content = match small {
                Some(bytes) => Content::Memory(bytes),
                None => Content::File(Arc::new(file)),
            };
            serve_file(req, state, content, meta, &vp, &query).await
        }
        Resolved::Dir(fd, meta) => {
            if !vp.trailing_slash {
                return Err(ApiError::bad_request(format!(
                    "{} is a directory: add a trailing '/' to list it (or '/?format=tar' to download it as one tar)",
                    vp.display()
                )));
            }
            if query.md5 || query.sha256 {
                return Err(ApiError::bad_request(
                    "hash attributes are computed for single files only; request them per file",
                ));
            }
            if query.tar {
                serve_tar(req, state, fd, meta, &vp).await
            } else {
                serve_listing(req, fs, fd, meta, &vp)
            }
        }
        Resolved::Other(meta) => Err(ApiError::bad_request(format!(
            "{} is a {}; special files are listed but never served",
            vp.display(),
            meta.kind_name()
        ))),
    }
}

/// Set when the request it belongs to is dropped: its client went away (see `h1_allow_half_closed`),
/// so work done for it on a blocking thread can stop.
struct Cancelled(Arc<AtomicBool>);

impl Cancelled {
    fn new() -> (Cancelled, Arc<AtomicBool>) {
        let flag = Arc::new(AtomicBool::new(false));
        (Cancelled(flag.clone()), flag)
    }
}

impl Drop for Cancelled {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn hash_file(
    file: &File,
    size: u64,
    md5: bool,
    sha256: bool,
    cancelled: &AtomicBool,
) -> io::Result<(Option<String>, Option<String>)> {
    let mut m = md5.then(md5::Md5::new);
    let mut s = sha256.then(sha2::Sha256::new);
    let mut buf = vec![0u8; 1024 * 1024];
    let mut off = 0u64;
    while off < size {
        if cancelled.load(Ordering::Relaxed) {
            return Err(io::Error::new(
                io::ErrorKind::Interrupted,
                "the client went away",
            ));
        }
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
    req: &Request,
    state: &State,
    content: Content,
    meta: Meta,
    vp: &VolumePath,
    query: &FileQuery,
) -> Result<Reply, ApiError> {
    let name = vp.file_name().unwrap_or(b"file");
    let mut r = Reply::new(StatusCode::OK);
    attribute_headers(&mut r, &meta, "file");
    if let (true, Content::File(file)) = (query.md5 || query.sha256, &content) {
        let f = file.clone();
        let (want_md5, want_sha) = (query.md5, query.sha256);
        // A hash reads the whole file on a blocking thread: a few at a time, so requests for them
        // (abandoned ones included) cannot take the pool from everything else. Waiting for a slot is
        // an await, which a departing client cancels; a running hash stops at its next megabyte.
        let slot = state
            .hash_slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| ApiError::internal("hash slots", e))?;
        let (_cancel_on_drop, cancelled) = Cancelled::new();
        let (md5, sha) = blocking(move || {
            let _slot = slot;
            hash_file(&f, meta.size, want_md5, want_sha, &cancelled)
        })
        .await?
        .map_err(|e| ApiError::internal("hashing failed", e))?;
        if let Some(h) = md5 {
            r.header(X_HASH_MD5, &h);
        }
        if let Some(h) = sha {
            r.header(X_HASH_SHA256, &h);
        }
    }
    let info = ContentInfo {
        size: meta.size,
        etag: Validator::File(meta),
        last_modified: Some(meta.mtime),
        content_type: content_type_for(name),
        file_name: name,
    };
    content_reply(req, r, info, content)
}

/// The strong validator of a response, formatted only into the response's own header buffer.
enum Validator<'a> {
    /// Any change of identity, size or mtime (to the nanosecond) changes it.
    File(Meta),
    Text(&'a str),
}

impl Validator<'_> {
    fn write(&self, out: &mut BytesMut) {
        use std::fmt::Write as _;
        match self {
            Validator::File(m) => {
                let _ = write!(
                    out,
                    "\"{:x}-{:x}-{:x}-{:x}.{:x}\"",
                    m.dev, m.ino, m.size, m.mtime, m.mtime_nsec
                );
            }
            Validator::Text(t) => out.extend_from_slice(t.as_bytes()),
        }
    }
}

struct ContentInfo<'a> {
    size: u64,
    etag: Validator<'a>,
    last_modified: Option<i64>,
    content_type: &'static str,
    file_name: &'a [u8],
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

/// `length` bytes of `content` from `start` as a response body.
fn body_of(content: &Content, start: u64, length: u64) -> Body {
    match content {
        Content::Memory(bytes) => Body::Bytes(memory_range(bytes, start, length)),
        Content::File(_) => Body::Sized(length, content_range(content, start, length)),
    }
}

/// Conditional requests and ranges over a positional-read source, as Go's `http.ServeContent`.
fn content_reply(
    req: &Request,
    mut r: Reply,
    info: ContentInfo<'_>,
    content: Content,
) -> Result<Reply, ApiError> {
    let h = |name: HeaderName| req.headers().get(name).and_then(|v| v.to_str().ok());
    let conditions = Conditions {
        if_match: h(header::IF_MATCH),
        if_unmodified_since: h(header::IF_UNMODIFIED_SINCE),
        if_none_match: h(header::IF_NONE_MATCH),
        if_modified_since: h(header::IF_MODIFIED_SINCE),
        if_range: h(header::IF_RANGE),
    };
    let etag = r.header_with(header::ETAG, |b| info.etag.write(b));
    let validators = Validators {
        etag: std::str::from_utf8(&etag).ok(),
        last_modified: info.last_modified,
    };
    r.header_static(header::ACCEPT_RANGES, "bytes");
    let decision = evaluate(&conditions, &validators);
    if decision == Decision::NotModified {
        // As Go: a 304 keeps the validator but drops Last-Modified when an ETag exists.
        r.status(StatusCode::NOT_MODIFIED);
        return Ok(r);
    }
    if let Some(lm) = info.last_modified {
        let mut date = [0u8; 29];
        let mut out = &mut date[..];
        if write_http_date(&mut out, lm) {
            r.header_with(header::LAST_MODIFIED, |b| b.extend_from_slice(&date));
        }
    }
    let Decision::Proceed { use_range } = decision else {
        return Err(ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "precondition failed",
        ));
    };
    r.header_with(header::CONTENT_DISPOSITION, |b| {
        write_content_disposition(b, info.file_name)
    });
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
            r.header_static(header::CONTENT_TYPE, info.content_type);
            r.body = body_of(&content, 0, size);
            Ok(r)
        }
        RangePlan::Single(range) => {
            r.status(StatusCode::PARTIAL_CONTENT);
            r.header_static(header::CONTENT_TYPE, info.content_type);
            r.header(header::CONTENT_RANGE, &range.content_range(size));
            r.body = body_of(&content, range.start, range.length);
            Ok(r)
        }
        RangePlan::Multi(ranges) => {
            let layout = multipart_layout(&ranges, size, info.content_type, &boundary());
            r.status(StatusCode::PARTIAL_CONTENT);
            r.header(header::CONTENT_TYPE, &layout.content_type);
            let total = layout.total_length;
            r.body = Body::Sized(total, multipart(content, layout));
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
    req: &Request,
    fs: Arc<FsVolume>,
    fd: std::os::fd::OwnedFd,
    meta: Meta,
    vp: &VolumePath,
) -> Result<Reply, ApiError> {
    let mut r = Reply::new(StatusCode::OK);
    attribute_headers(&mut r, &meta, "dir");
    r.header_static(header::CONTENT_TYPE, "application/json");
    if req.method() == Method::HEAD {
        r.body = Body::Chunked(Box::pin(stream::empty()));
        return Ok(r);
    }
    let reader = DirReader::new(fd, vp).map_err(|e| ApiError::from_volume(e, vp))?;
    // d8 keeps a listing open and unread while it downloads the subtree it names
    // (reference/d8-contract.md §7.2): a listing may sit with a full socket for as long as that takes.
    if let Some(conn) = req.conn_data::<Arc<ConnState>>() {
        conn.set_stall_exempt(true);
    }
    let prefix: Arc<str> = vp.uri_prefix().into();
    let shown: Arc<str> = vp.display().into();
    // State: (reader, the next item is the first one). `None` ends the stream. The document head goes
    // out with the first batch, so a small directory is one chunk.
    let start = Some((reader, true));
    let body = stream::unfold(start, move |cursor| {
        let fs = fs.clone();
        let prefix = prefix.clone();
        let shown = shown.clone();
        async move {
            let (mut reader, mut first) = cursor?;
            let batch = tokio::task::spawn_blocking(move || {
                let mut buf = Vec::with_capacity(LISTING_BATCH_BYTES + 1024);
                if first {
                    buf.extend_from_slice(listing::HEAD);
                }
                let mut done = false;
                while buf.len() < LISTING_BATCH_BYTES {
                    match reader.next_with(&fs, |e| encode_item(&mut buf, &prefix, e, first)) {
                        None => {
                            done = true;
                            break;
                        }
                        Some(Ok(())) => first = false,
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
                Ok(Ok((reader, buf, first, done))) => {
                    Some((Ok(Bytes::from(buf)), (!done).then_some((reader, first))))
                }
                Ok(Err(e)) => Some((Err(e), None)),
                Err(e) => Some((Err(io::Error::other(e)), None)),
            }
        }
    });
    r.body = Body::Chunked(Box::pin(body));
    Ok(r)
}

async fn serve_tar(
    req: &Request,
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
    let mut r = Reply::new(StatusCode::OK);
    attribute_headers(&mut r, &meta, "dir");
    r.header_static(header::CONTENT_TYPE, "application/x-tar");
    r.header_with(header::CONTENT_DISPOSITION, |b| {
        write_content_disposition(b, &name)
    });
    if req.method() == Method::HEAD {
        r.body = Body::Chunked(Box::pin(stream::empty()));
        return Ok(r);
    }
    // Each tar holds a blocking thread for as long as its client reads: a bounded number at a time.
    // A stalled reader is cut by the write-stall timeout and a departed one drops the body, which
    // closes the channel and stops the walk at its next write.
    let slot = state
        .tar_slots
        .clone()
        .acquire_owned()
        .await
        .map_err(|e| ApiError::internal("tar slots", e))?;
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(4);
    let shown = vp.display();
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let writer = ChannelWriter::new(tx.clone());
        if let Err(e) = write_tree(fd, writer)
            && e.kind() != io::ErrorKind::BrokenPipe
        {
            log::warn!(
                "tar of {} failed: {}",
                escape(&shown),
                escape(&e.to_string())
            );
            let _ = tx.blocking_send(Err(e));
        }
    });
    let body = stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    r.body = Body::Chunked(Box::pin(body));
    Ok(r)
}

async fn serve_block(req: &Request, blk: Arc<BlockVolume>, rest: &str) -> Result<Reply, ApiError> {
    if !rest.is_empty() && rest != "/" {
        return Err(ApiError::bad_request(
            "the block endpoint has no sub-paths; use /api/v1/block",
        ));
    }
    // An ioctl (or a seek) that never waits for the device: no thread-pool hop.
    let size = blk
        .size()
        .map_err(|e| ApiError::internal("cannot read the device size", e))?;
    let etag = blk.etag(size);
    let info = ContentInfo {
        size,
        etag: Validator::Text(&etag),
        last_modified: None,
        content_type: "application/octet-stream",
        file_name: b"data.img",
    };
    content_reply(
        req,
        Reply::new(StatusCode::OK),
        info,
        Content::File(blk.file()),
    )
}

/// The admin port: health and metrics for the kubelet and Prometheus, plain HTTP, no credentials. It
/// is served on its own port (see `--admin-port`) that neither the Service nor the Ingress publishes,
/// so nothing here is reachable through the export's URLs.
async fn handle_admin(req: Request, state: SharedState) -> Response<HttpBody> {
    let text = |status: StatusCode, content_type: &'static str, body: String| {
        let mut r = Response::build(status);
        r.insert_header((header::CONTENT_TYPE, HeaderValue::from_static(content_type)));
        boxed(r.body(body))
    };
    const PLAIN: &str = "text/plain; charset=utf-8";
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            PLAIN,
            "only GET and HEAD are supported\n".into(),
        );
    }
    match admin_route(req.uri().path()) {
        AdminRoute::Healthz => text(StatusCode::OK, PLAIN, "ok\n".into()),
        AdminRoute::Readyz => {
            let ready = match &state.source {
                Source::Filesystem(fs) => fs.is_healthy(),
                Source::Block(b) => b.size().is_ok(),
            };
            if ready {
                text(StatusCode::OK, PLAIN, "ready\n".into())
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    PLAIN,
                    "volume unavailable\n".into(),
                )
            }
        }
        AdminRoute::Metrics => text(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            state.metrics.render(),
        ),
        AdminRoute::NotFound => text(
            StatusCode::NOT_FOUND,
            PLAIN,
            "not found: this port serves /healthz, /readyz and /metrics\n".into(),
        ),
    }
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
    let offload = match &source {
        Source::Filesystem(fs) => Offload::for_volume(fs.root_fd(), cfg.inline_fs_steps),
        Source::Block(_) => Offload::pool_only(),
    };
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
        ReviewLimits {
            in_flight: cfg.max_reviews_in_flight,
            burst: cfg.unverified_review_burst,
            per_second: cfg.unverified_reviews_per_second,
        },
        metrics.clone(),
    );
    match (&client, &cfg.lease_namespace, &cfg.lease_name) {
        (Some(c), Some(ns), Some(name)) => {
            let holder = std::env::var("POD_NAME")
                .unwrap_or_else(|_| format!("svdm-exporter-{}", cfg.export_name));
            actix_rt::spawn(renew_lease(
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
    actix_rt::spawn(tls.clone().watch(Duration::from_secs(2)));
    let acceptor = tls.acceptor().context("cannot build TLS acceptor")?;

    let state: SharedState = Arc::new(State {
        source,
        prefix: format!("/{}/{}", cfg.export_namespace, cfg.export_name),
        export_name: cfg.export_name.clone(),
        auth,
        metrics,
        activity,
        offload,
        hash_slots: Arc::new(tokio::sync::Semaphore::new(HASH_SLOTS)),
        tar_slots: Arc::new(tokio::sync::Semaphore::new(TAR_SLOTS)),
        reauthorize: cfg.reauthorize_interval,
    });

    let listener = TcpListener::bind(SocketAddr::new(cfg.address, cfg.port))
        .with_context(|| format!("cannot listen on {}:{}", cfg.address, cfg.port))?;
    // Connections beyond --max-connections wait in the kernel's accept queue, which holds none of the
    // exporter's memory; a deep queue lets a burst wait there instead of being dropped.
    nix::sys::socket::listen(&listener, nix::sys::socket::Backlog::new(LISTEN_BACKLOG)?)
        .context("cannot set the listen backlog")?;
    let local = listener.local_addr()?;
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 4);
    let limits = Limits {
        max_head_bytes: cfg.max_header_bytes,
        write_stall: (!cfg.write_stall_timeout.is_zero()).then_some(cfg.write_stall_timeout),
    };
    let data_state = state.clone();
    let server = actix_server::Server::build()
        .workers(workers)
        // actix counts per worker; the total is what the flag promises.
        .max_concurrent_connections(cfg.max_connections.div_ceil(workers).max(1))
        .listen("svdm-exporter", listener, move || {
            let state = data_state.clone();
            let service = fn_service(move |req: Request| {
                let state = state.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(req, state).await) }
            });
            let http = HttpService::build()
                .keep_alive(KeepAlive::Timeout(KEEP_ALIVE))
                .client_request_timeout(REQUEST_HEAD_TIMEOUT)
                .client_disconnect_timeout(Duration::from_secs(5))
                // A client that closes its side has gone away: drop its request, which stops the work
                // done for it (a hash, a queued tar) instead of finishing it for nobody.
                .h1_allow_half_closed(false)
                .on_connect_ext(|io: &Guarded<TlsStream<TcpStream>>, ext: &mut Extensions| {
                    let tls = io.get_ref();
                    // Without NODELAY a response whose head and body go out in separate writes
                    // waits for the client's delayed ACK: ~10 ms per small range request.
                    let _ = tls.get_ref().set_nodelay(true);
                    if let Some(p) = peer_cert(tls.ssl()) {
                        ext.insert(p);
                    }
                    ext.insert(io.state());
                })
                .h1(service);
            // The TLS stream is wrapped before HTTP sees it: see conn.rs for the limits.
            Acceptor::new(acceptor.clone())
                .map_err(TlsError::into_service_error)
                .map(move |io: TlsStream<TcpStream>| {
                    let peer = io.get_ref().peer_addr().ok();
                    (Guarded::new(io, limits), peer)
                })
                .and_then(http.map_err(TlsError::Service))
        })?
        .run();
    log::info!(
        "listening on {local} (mode {:?}, export {}/{})",
        cfg.mode,
        cfg.export_namespace,
        cfg.export_name
    );

    let admin_listener = TcpListener::bind(SocketAddr::new(cfg.address, cfg.admin_port))
        .with_context(|| format!("cannot listen on {}:{}", cfg.address, cfg.admin_port))?;
    let admin_local = admin_listener.local_addr()?;
    // Its own server, so a data port full of clients never starves the kubelet's probes.
    let admin = actix_server::Server::build()
        .workers(1)
        .max_concurrent_connections(64)
        .listen("svdm-exporter-admin", admin_listener, move || {
            let state = state.clone();
            HttpService::build()
                .keep_alive(KeepAlive::Timeout(KEEP_ALIVE))
                .client_request_timeout(REQUEST_HEAD_TIMEOUT)
                .h1(fn_service(move |req: Request| {
                    let state = state.clone();
                    async move { Ok::<_, std::convert::Infallible>(handle_admin(req, state).await) }
                }))
                .tcp()
        })?
        .run();
    log::info!("admin endpoints (/healthz, /readyz, /metrics) on http://{admin_local}");
    tokio::try_join!(server, admin)?;
    Ok(())
}
