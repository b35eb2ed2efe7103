//! Where short file-system work (open, stat, a small read, one listing batch) runs.
//!
//! Handing each such step to the blocking thread pool costs two thread wake-ups and context switches,
//! which on the bench machine were most of a small request's CPU time (bench/exporter.sh; the hops
//! were more than the TLS, the HTTP parsing and the file system together). So the steps run inline on
//! the connection's worker, as nginx does, while they are fast. Storage is not always fast (a cold
//! network file system can take milliseconds per `open`), and an inline step stalls every connection
//! of its worker: once any inline step takes longer than [`SLOW`], all of them go to the pool for the
//! next [`BACKOFF`], where slow steps overlap instead of queueing behind each other. Large reads always
//! use the pool.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// An inline step slower than this sends the following ones to the pool (`--slow-fs-step`).
pub const SLOW: Duration = Duration::from_millis(2);
/// How long they stay there after a slow step (each slow pooled step extends it).
pub const BACKOFF: Duration = Duration::from_secs(10);

/// Shared by every worker: one slow step anywhere means the storage is slow for all of them.
pub struct Offload {
    epoch: Instant,
    slow: Duration,
    /// Milliseconds since `epoch` until which steps go to the pool.
    pool_until_ms: AtomicU64,
}

impl Default for Offload {
    fn default() -> Self {
        Offload::new(SLOW)
    }
}

/// The decision, without clocks: inline unless `now_ms` is before the end of the last backoff.
pub fn run_inline(pool_until_ms: u64, now_ms: u64) -> bool {
    now_ms >= pool_until_ms
}

/// The backoff a step that took `took` and ended at `now_ms` starts, if it was slower than `slow`.
pub fn backoff_after(took: Duration, slow: Duration, now_ms: u64) -> Option<u64> {
    (took > slow).then(|| now_ms.saturating_add(BACKOFF.as_millis() as u64))
}

impl Offload {
    /// `slow` zero sends every step to the pool.
    pub fn new(slow: Duration) -> Offload {
        Offload {
            epoch: Instant::now(),
            slow,
            pool_until_ms: AtomicU64::new(if slow.is_zero() { u64::MAX } else { 0 }),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub fn inline(&self) -> bool {
        run_inline(self.pool_until_ms.load(Ordering::Relaxed), self.now_ms())
    }

    /// Records how long a step took, wherever it ran.
    pub fn record(&self, took: Duration) {
        if let Some(until) = backoff_after(took, self.slow, self.now_ms()) {
            self.pool_until_ms.fetch_max(until, Ordering::Relaxed);
        }
    }

    /// Runs `f` inline or on the blocking pool, as decided above.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, tokio::task::JoinError> {
        let started = Instant::now();
        let out = if self.inline() {
            Ok(f())
        } else {
            tokio::task::spawn_blocking(f).await
        };
        self.record(started.elapsed());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions() {
        // Fresh: inline.
        assert!(run_inline(0, 0));
        assert!(run_inline(0, 5_000));
        // A fast step changes nothing; a slow one sends the next ones to the pool for BACKOFF.
        assert_eq!(backoff_after(Duration::from_micros(300), SLOW, 1_000), None);
        assert_eq!(backoff_after(SLOW, SLOW, 1_000), None);
        let until = backoff_after(Duration::from_millis(3), SLOW, 1_000);
        assert_eq!(until, Some(11_000));
        assert!(!run_inline(11_000, 1_001));
        assert!(!run_inline(11_000, 10_999));
        assert!(run_inline(11_000, 11_000));
    }

    #[tokio::test]
    async fn slow_step_moves_work_to_the_pool() {
        let o = Offload::default();
        let here = std::thread::current().id();
        let ran_on = o.run(|| std::thread::current().id()).await.ok();
        assert_eq!(
            ran_on,
            Some(here),
            "a fresh exporter runs short steps inline"
        );
        o.run(|| std::thread::sleep(Duration::from_millis(5)))
            .await
            .ok();
        let ran_on = o.run(|| std::thread::current().id()).await.ok();
        assert!(ran_on.is_some());
        assert_ne!(
            ran_on,
            Some(here),
            "after a slow step, steps go to the pool"
        );
        let never_inline = Offload::new(Duration::ZERO);
        assert!(!never_inline.inline());
    }
}
