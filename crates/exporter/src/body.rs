//! Response bodies: positional reads of files and devices with one chunk of read-ahead, and the meter that
//! counts bytes, marks activity and writes the access log line when the body is done.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::LocalBoxFuture;
use futures::stream::{self, Stream, StreamExt};

use actix_http::{Method, Uri};

use crate::activity::Activity;
use crate::auth::Principal;
use crate::metrics::Metrics;
use crate::range::MultipartLayout;

/// Large chunks amortise the thread-pool hop and the syscall; over TLS anything ≥256 KiB is near optimal.
pub const CHUNK: u64 = 512 * 1024;

pub type BoxBody = Pin<Box<dyn Stream<Item = Result<Bytes, io::Error>>>>;

fn read_chunk(file: &File, offset: u64, len: usize) -> io::Result<Bytes> {
    crate::sys::pread_exact(file.as_fd(), offset, len)
}

/// What a file response is read from: a small file already read whole (in the step that opened it), or
/// the open file, read in chunks on the blocking pool.
#[derive(Clone)]
pub enum Content {
    Memory(Bytes),
    File(Arc<File>),
}

/// `length` bytes from `start` of a file read whole. Callers pass ranges inside the file's size, which
/// is what was read; anything beyond is cut off rather than panicking.
pub fn memory_range(bytes: &Bytes, start: u64, length: u64) -> Bytes {
    let from = usize::try_from(start)
        .unwrap_or(usize::MAX)
        .min(bytes.len());
    let to = usize::try_from(start.saturating_add(length))
        .unwrap_or(usize::MAX)
        .min(bytes.len());
    bytes.slice(from..to)
}

/// `length` bytes of `content` from `start`.
pub fn content_range(content: &Content, start: u64, length: u64) -> BoxBody {
    match content {
        Content::Memory(bytes) => {
            let part = memory_range(bytes, start, length);
            Box::pin(stream::once(std::future::ready(Ok(part))))
        }
        Content::File(file) => file_range(file.clone(), start, length),
    }
}

/// `length` bytes from `start`, read on the blocking pool with the next chunk already in flight.
pub fn file_range(file: Arc<File>, start: u64, length: u64) -> BoxBody {
    let chunks = (0..length.div_ceil(CHUNK)).map(move |i| {
        let off = start + i * CHUNK;
        let len = CHUNK.min(start + length - off);
        (off, len)
    });
    Box::pin(
        stream::iter(chunks)
            .map(move |(off, len)| {
                let file = file.clone();
                async move {
                    let len = usize::try_from(len).map_err(io::Error::other)?;
                    tokio::task::spawn_blocking(move || read_chunk(&file, off, len))
                        .await
                        .map_err(io::Error::other)?
                }
            })
            .buffered(2),
    )
}

pub fn multipart(content: Content, layout: MultipartLayout) -> BoxBody {
    let MultipartLayout { parts, trailer, .. } = layout;
    let mut pieces: Vec<BoxBody> = Vec::with_capacity(parts.len() * 2 + 1);
    for (head, range) in parts {
        pieces.push(Box::pin(stream::once(async move { Ok(Bytes::from(head)) })));
        pieces.push(content_range(&content, range.start, range.length));
    }
    pieces.push(Box::pin(stream::once(
        async move { Ok(Bytes::from(trailer)) },
    )));
    Box::pin(stream::iter(pieces).flatten())
}

/// One access-log line per request, written when the response (including a streamed body) is finished.
/// It holds only cheap handles (the parsed method and URI, the caller's principal), so a request that is
/// not logged costs no formatting.
pub struct AccessLog {
    pub method: Method,
    /// The request target as received: still percent-encoded, so it cannot carry a line break into the
    /// log (the HTTP parser admits only visible ASCII there).
    pub uri: Uri,
    pub status: u16,
    pub user: Option<Arc<Principal>>,
    pub started: Instant,
    pub bytes: u64,
    pub completed: bool,
}

impl AccessLog {
    pub fn write(&self) {
        if !log::log_enabled!(log::Level::Info) {
            return;
        }
        let outcome = if self.completed { "" } else { " (incomplete)" };
        let user = self.user.as_ref().map_or("-", |p| p.username());
        log::info!(
            "{} {} {} {}B {}ms user={:?}{}",
            self.method,
            self.uri.path(),
            self.status,
            self.bytes,
            self.started.elapsed().as_millis(),
            user,
            outcome
        );
    }
}

/// Wraps a body: counts bytes for metrics and the log, and marks activity while bytes flow so a
/// download longer than the export's idle TTL keeps the export alive.
pub struct Metered {
    inner: BoxBody,
    metrics: Arc<Metrics>,
    activity: Option<Arc<Activity>>,
    log: AccessLog,
    reauth: Option<Reauth>,
}

impl Metered {
    pub fn new(
        inner: BoxBody,
        metrics: Arc<Metrics>,
        activity: Option<Arc<Activity>>,
        log: AccessLog,
        reauth: Option<Reauth>,
    ) -> Metered {
        metrics.active_transfers.inc();
        Metered {
            inner,
            metrics,
            activity,
            log,
            reauth,
        }
    }
}

/// What a repeated access check found.
pub enum Verdict {
    Allowed,
    /// The credential or the permission is gone: the transfer ends.
    Revoked(String),
    /// The API server could not say; the transfer goes on and the check is repeated sooner.
    Unknown,
}

/// Re-checks, while a response streams, that its requester may still download: a permission
/// revoked (or a token expired) after the request started ends the transfer at the next check
/// instead of letting it run for hours. The first check is `every` after the start.
pub struct Reauth {
    every: Duration,
    next: Instant,
    check: Box<dyn FnMut() -> LocalBoxFuture<'static, Verdict>>,
    running: Option<LocalBoxFuture<'static, Verdict>>,
}

/// How soon a check is repeated when the API server could not answer.
const RECHECK_AFTER_UNKNOWN: Duration = Duration::from_secs(30);

impl Reauth {
    pub fn new(
        every: Duration,
        check: Box<dyn FnMut() -> LocalBoxFuture<'static, Verdict>>,
    ) -> Reauth {
        Reauth {
            every,
            next: Instant::now() + every,
            check,
            running: None,
        }
    }

    /// `Ready(Some(why))` when the transfer must end; `Pending` while a check runs.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<String>> {
        if self.running.is_none() {
            if Instant::now() < self.next {
                return Poll::Ready(None);
            }
            self.running = Some((self.check)());
        }
        let Some(running) = self.running.as_mut() else {
            return Poll::Ready(None);
        };
        let verdict = ready!(running.as_mut().poll(cx));
        self.running = None;
        match verdict {
            Verdict::Allowed => self.next = Instant::now() + self.every,
            Verdict::Unknown => self.next = Instant::now() + self.every.min(RECHECK_AFTER_UNKNOWN),
            Verdict::Revoked(why) => return Poll::Ready(Some(why)),
        }
        Poll::Ready(None)
    }
}

impl Stream for Metered {
    type Item = Result<Bytes, io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(reauth) = this.reauth.as_mut()
            && let Some(why) = ready!(reauth.poll(cx))
        {
            this.reauth = None;
            log::info!(
                "{} {}: transfer ended after {}B: {}",
                this.log.method,
                this.log.uri.path(),
                this.log.bytes,
                crate::logsafe::escape(&why)
            );
            return Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                why,
            ))));
        }
        match this.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                let n = chunk.len() as u64;
                this.log.bytes += n;
                this.metrics.sent_bytes.inc_by(n);
                if let Some(a) = &this.activity {
                    a.touch();
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => {
                log::warn!(
                    "{} {}: body aborted: {}",
                    this.log.method,
                    this.log.uri.path(),
                    crate::logsafe::escape(&e.to_string())
                );
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                this.log.completed = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        self.metrics.active_transfers.dec();
        self.log.write();
    }
}
