//! Per-connection guards between TLS and HTTP: a bound on buffered request-head bytes, and a timeout
//! for writes that make no progress at all.
//!
//! actix-http buffers up to 128 KiB of an unfinished request head per connection, and nothing bounds
//! how long a response may sit with a full socket: an unauthenticated client could hold many
//! connections with large unfinished heads, and a reader that stops reading pins buffers (and, for
//! `?format=tar`, a blocking thread) forever. Both limits live on the decrypted byte stream, where the
//! HTTP framing is visible and nothing else needs to know about them.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The answer to a request head over the limit, written before the connection is closed.
const TOO_LARGE: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 39\r\n\r\nthe request head is too large to serve\n";

/// Tracks where request heads end in the bytes read: counts the bytes since the last `\r\n\r\n`.
/// Only line ends are looked at (memchr), so a kilobyte of token costs a few comparisons.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HeadMeter {
    /// Bytes of the head being received (since the end of the previous one).
    pending: usize,
    /// The last three bytes seen, oldest first (fewer at the very start).
    tail: [u8; 3],
    tail_len: usize,
    /// Whether any head has been completed on this connection.
    pub completed_one: bool,
}

impl HeadMeter {
    /// Accounts for `data` just read. `Err` if any head in it grew past `limit` bytes (a head that ends
    /// within the same read counts as well). Bytes after a finished head (the next pipelined request)
    /// count towards the next one. A request body would count too: this server takes none.
    pub fn feed(&mut self, data: &[u8], limit: usize) -> Result<(), HeadTooLarge> {
        let mut from = 0;
        for lf in memchr::memchr_iter(b'\n', data) {
            self.pending += lf + 1 - from;
            if self.pending > limit {
                return Err(HeadTooLarge);
            }
            if self.preceded_by_crlfcr(data, lf) {
                self.pending = 0;
                self.completed_one = true;
            }
            from = lf + 1;
        }
        self.pending += data.len() - from;
        self.remember_tail(data);
        if self.pending > limit {
            return Err(HeadTooLarge);
        }
        Ok(())
    }

    /// Whether the three bytes before `data[lf]` (reaching back into earlier reads) are `\r\n\r`.
    fn preceded_by_crlfcr(&self, data: &[u8], lf: usize) -> bool {
        let byte = |back: usize| -> Option<u8> {
            // `back` = 1 is the byte right before the LF.
            if back <= lf {
                Some(data[lf - back])
            } else {
                let i = self.tail_len.checked_sub(back - lf)?;
                Some(self.tail[i])
            }
        };
        byte(1) == Some(b'\r') && byte(2) == Some(b'\n') && byte(3) == Some(b'\r')
    }

    fn remember_tail(&mut self, data: &[u8]) {
        for &b in data.iter().rev().take(3).rev() {
            if self.tail_len == 3 {
                self.tail.copy_within(1.., 0);
                self.tail[2] = b;
            } else {
                self.tail[self.tail_len] = b;
                self.tail_len += 1;
            }
        }
    }

    /// Bytes of the head being received.
    pub fn pending(&self) -> usize {
        self.pending
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadTooLarge;

/// Shared between a connection's I/O and the requests on it: how the current response may stall.
#[derive(Debug, Default)]
pub struct ConnState {
    /// Set while a response may legitimately sit unread for long (a directory listing, which d8 keeps
    /// open and unread while it downloads the subtree: reference/d8-contract.md §7.2).
    stall_exempt: AtomicBool,
}

impl ConnState {
    pub fn set_stall_exempt(&self, exempt: bool) {
        self.stall_exempt.store(exempt, Ordering::Relaxed);
    }

    fn stall_exempt(&self) -> bool {
        self.stall_exempt.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_head_bytes: usize,
    /// `None`: writes may wait forever.
    pub write_stall: Option<Duration>,
}

/// How much the connection's socket still has to deliver, to tell a slow client (the queue shrinks)
/// from a stalled one (it does not). A socket may free space in large steps only (a kernel send buffer
/// of megabytes becomes writable when half of it is free), so a blocked write alone says little.
pub trait SendQueue {
    fn send_queue(&self) -> Option<usize>;
}

impl SendQueue for actix_tls::accept::openssl::TlsStream<actix_rt::net::TcpStream> {
    fn send_queue(&self) -> Option<usize> {
        use std::os::fd::AsFd;
        crate::sys::send_queue_bytes(self.get_ref().as_fd()).ok()
    }
}

struct Stall {
    timer: Pin<Box<Sleep>>,
    /// The send queue when the timer started.
    queued: Option<usize>,
}

pub struct Guarded<T> {
    inner: T,
    limits: Limits,
    state: Arc<ConnState>,
    head: HeadMeter,
    /// Bytes of the 431 answer already written, once the head limit was exceeded.
    rejecting: Option<usize>,
    /// Running while a write waits for the socket; reset by every write that makes progress.
    stall: Option<Stall>,
}

impl<T> Guarded<T> {
    pub fn new(inner: T, limits: Limits) -> Guarded<T> {
        Guarded {
            inner,
            limits,
            state: Arc::new(ConnState::default()),
            head: HeadMeter::default(),
            rejecting: None,
            stall: None,
        }
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    pub fn state(&self) -> Arc<ConnState> {
        self.state.clone()
    }
}

impl<T: AsyncRead + AsyncWrite + SendQueue + Unpin> Guarded<T> {
    /// Writes the 431 answer; `Ready(Ok)` once it is out.
    fn poll_reject(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut sent = self.rejecting.unwrap_or(0);
        while sent < TOO_LARGE.len() {
            match Pin::new(&mut self.inner).poll_write(cx, &TOO_LARGE[sent..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => sent += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    self.rejecting = Some(sent);
                    return Poll::Pending;
                }
            }
            self.rejecting = Some(sent);
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    /// Called when a write could not proceed: starts or checks the stall timer. When it fires, a send
    /// queue that shrank meanwhile is progress: the timer starts over.
    fn poll_stall(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let Some(limit) = self.limits.write_stall else {
            return Ok(());
        };
        if self.state.stall_exempt() {
            self.stall = None;
            return Ok(());
        }
        let inner = &self.inner;
        let stall = self.stall.get_or_insert_with(|| Stall {
            timer: Box::pin(tokio::time::sleep_until(Instant::now() + limit)),
            queued: inner.send_queue(),
        });
        loop {
            if stall.timer.as_mut().poll(cx).is_pending() {
                return Ok(());
            }
            let now = inner.send_queue();
            match (stall.queued, now) {
                (Some(before), Some(now)) if now < before => {
                    stall.queued = Some(now);
                    stall.timer.as_mut().reset(Instant::now() + limit);
                }
                _ => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "the client accepted no data for {}s; connection closed",
                            limit.as_secs()
                        ),
                    ));
                }
            }
        }
    }
}

impl<T: AsyncRead + AsyncWrite + SendQueue + Unpin> AsyncRead for Guarded<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.rejecting.is_some() {
            // The answer goes out, then the connection reads as closed.
            return match this.poll_reject(cx) {
                Poll::Ready(_) => Poll::Ready(Ok(())),
                Poll::Pending => Poll::Pending,
            };
        }
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &poll {
            let fed = this
                .head
                .feed(&buf.filled()[before..], this.limits.max_head_bytes);
            if fed.is_err() {
                // Hide what was read: the HTTP layer never buffers the oversized head.
                buf.set_filled(before);
                if this.head.completed_one {
                    // A response to an earlier request may be on its way: no answer can be
                    // interleaved safely, so the connection just ends.
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "request head too large",
                    )));
                }
                this.rejecting = Some(0);
                return match this.poll_reject(cx) {
                    Poll::Ready(_) => Poll::Ready(Ok(())),
                    Poll::Pending => Poll::Pending,
                };
            }
        }
        poll
    }
}

impl<T: AsyncRead + AsyncWrite + SendQueue + Unpin> AsyncWrite for Guarded<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_write(cx, data) {
            Poll::Pending => match this.poll_stall(cx) {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            },
            ready => {
                if matches!(ready, Poll::Ready(Ok(n)) if n > 0) {
                    this.stall = None;
                }
                ready
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Pending => match this.poll_stall(cx) {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            },
            ready => ready,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// In-memory pipes have no kernel queue: only writes that go through count as progress.
    impl SendQueue for tokio::io::DuplexStream {
        fn send_queue(&self) -> Option<usize> {
            None
        }
    }

    #[test]
    fn head_meter_finds_head_ends_across_reads() {
        let mut m = HeadMeter::default();
        assert_eq!(m.feed(b"GET / HTTP/1.1\r\nHost: x\r", 100), Ok(()));
        assert_eq!(m.pending(), 24);
        assert!(!m.completed_one);
        // The terminator split over reads.
        assert_eq!(m.feed(b"\n\r", 100), Ok(()));
        assert_eq!(m.pending(), 26);
        assert_eq!(m.feed(b"\n", 100), Ok(()));
        assert_eq!(m.pending(), 0);
        assert!(m.completed_one);
        // Pipelined: the next head counts on from where the last ended.
        assert_eq!(m.feed(b"GET /a HTTP/1.1\r\n\r\nGET /b", 100), Ok(()));
        assert_eq!(m.pending(), 6);
        // A lone CR or LF does not end anything; CR CR LF CR LF does.
        let mut m = HeadMeter::default();
        assert_eq!(m.feed(b"a\r\r\n\r\n", 100), Ok(()));
        assert_eq!(m.pending(), 0);
        assert_eq!(m.feed(b"\n\n\r\n\n", 100), Ok(()));
        assert_eq!(m.pending(), 5);
        // Too large even when the head ends in the same read.
        let mut m = HeadMeter::default();
        let mut big = vec![b'x'; 200];
        big.extend_from_slice(b"\r\n\r\n");
        assert_eq!(m.feed(&big, 100), Err(HeadTooLarge));
        let mut m = HeadMeter::default();
        assert_eq!(m.feed(&big, 204), Ok(()));
    }

    /// The byte-at-a-time definition the meter must agree with, over every way of cutting random
    /// streams of the characters that matter into reads.
    #[test]
    fn head_meter_matches_a_byte_by_byte_reference() {
        fn reference(stream: &[u8], limit: usize) -> (Result<(), HeadTooLarge>, usize, bool) {
            let (mut pending, mut done) = (0usize, false);
            for (i, &b) in stream.iter().enumerate() {
                pending += 1;
                if pending > limit {
                    return (Err(HeadTooLarge), pending, done);
                }
                if b == b'\n' && i >= 3 && &stream[i - 3..i] == b"\r\n\r" {
                    pending = 0;
                    done = true;
                }
            }
            (Ok(()), pending, done)
        }
        let mut x: u64 = 0x1234_5678;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..20_000 {
            let len = (next() % 40) as usize;
            let stream: Vec<u8> = (0..len)
                .map(|_| [b'\r', b'\n', b'a'][(next() % 3) as usize])
                .collect();
            let limit = (next() % 20) as usize + 1;
            let (want, want_pending, want_done) = reference(&stream, limit);
            let mut m = HeadMeter::default();
            let mut got = Ok(());
            let mut at = 0;
            while at < stream.len() && got.is_ok() {
                let n = ((next() % 5) as usize + 1).min(stream.len() - at);
                got = m.feed(&stream[at..at + n], limit);
                at += n;
            }
            assert_eq!(got, want, "{stream:?} limit {limit}");
            if want.is_ok() {
                assert_eq!(
                    (m.pending(), m.completed_one),
                    (want_pending, want_done),
                    "{stream:?}"
                );
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn oversized_head_gets_431_and_nothing_reaches_http() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (client, server) = tokio::io::duplex(1 << 20);
        let limits = Limits {
            max_head_bytes: 1024,
            write_stall: None,
        };
        let mut guarded = Guarded::new(server, limits);
        let (mut cr, mut cw) = tokio::io::split(client);
        cw.write_all(&vec![b'x'; 4096]).await.ok();
        // The HTTP layer sees at most the limit, then the end of the stream.
        let mut got = Vec::new();
        let read = guarded.read_to_end(&mut got).await;
        assert!(read.is_ok(), "{read:?}");
        assert!(
            got.len() <= 1024,
            "{} bytes of the head got through",
            got.len()
        );
        let mut answer = vec![0u8; TOO_LARGE.len()];
        cr.read_exact(&mut answer).await.ok();
        assert!(answer.starts_with(b"HTTP/1.1 431 "));
    }

    #[tokio::test(start_paused = true)]
    async fn stalled_writes_time_out_unless_exempt() {
        use tokio::io::AsyncWriteExt;
        let limits = Limits {
            max_head_bytes: 1024,
            write_stall: Some(Duration::from_secs(5)),
        };
        for exempt in [false, true] {
            // A 64 KiB pipe nobody reads: writes stop after that.
            let (_client, server) = tokio::io::duplex(64 * 1024);
            let mut guarded = Guarded::new(server, limits);
            guarded.state().set_stall_exempt(exempt);
            let chunk = vec![0u8; 16 * 1024];
            let outcome = tokio::time::timeout(Duration::from_secs(60), async {
                loop {
                    guarded.write_all(&chunk).await?;
                }
                #[allow(unreachable_code)]
                Ok::<(), io::Error>(())
            })
            .await;
            match (exempt, outcome) {
                (false, Ok(Err(e))) => assert_eq!(e.kind(), io::ErrorKind::TimedOut),
                (true, Err(_elapsed)) => {}
                (exempt, other) => panic!("exempt={exempt}: {other:?}"),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_that_keeps_reading_is_never_cut() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let limits = Limits {
            max_head_bytes: 1024,
            write_stall: Some(Duration::from_secs(5)),
        };
        let (mut client, server) = tokio::io::duplex(16 * 1024);
        let mut guarded = Guarded::new(server, limits);
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut total = 0usize;
            // 4 KiB every 3 s: slower than the writer, but never 5 s without progress.
            while total < 256 * 1024 {
                tokio::time::sleep(Duration::from_secs(3)).await;
                total += client.read(&mut buf).await.unwrap_or(0);
            }
            total
        });
        let data = vec![7u8; 256 * 1024];
        assert!(guarded.write_all(&data).await.is_ok());
        assert!(reader.await.unwrap_or(0) >= 256 * 1024);
    }
}
