//! What keeps unauthenticated traffic from being multiplied into API-server load: a budget for
//! reviews of tokens the exporter has not seen succeed, and one review at a time per token.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

/// A token bucket: `burst` reviews at once, refilled at `per_second`. A review that turns out to
/// authenticate gives its token back, so only failing reviews (what a flood of made-up tokens
/// produces) use the budget up; legitimate users are limited only while such a flood runs.
#[derive(Debug, Clone)]
pub struct Budget {
    burst: f64,
    per_second: f64,
    available: f64,
    at: Instant,
}

impl Budget {
    pub fn new(burst: u32, per_second: f64, now: Instant) -> Budget {
        Budget {
            burst: f64::from(burst),
            per_second,
            available: f64::from(burst),
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.available = (self.available + elapsed * self.per_second).min(self.burst);
        self.at = now;
    }

    /// Takes one review from the budget, if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.available >= 1.0 {
            self.available -= 1.0;
            true
        } else {
            false
        }
    }

    /// Gives back a review that succeeded.
    pub fn refund(&mut self, now: Instant) {
        self.refill(now);
        self.available = (self.available + 1.0).min(self.burst);
    }

    /// How long until the next review is available (for Retry-After).
    pub fn wait(&mut self, now: Instant) -> Duration {
        self.refill(now);
        if self.available >= 1.0 || self.per_second <= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64((1.0 - self.available) / self.per_second)
    }
}

/// Concurrent callers with the same key share one run of the work (d8 starts ten downloads with the
/// same new token at once: one TokenReview, not ten). A caller that goes away before the work is done
/// leaves it to the next one waiting.
pub struct Flights<K, V> {
    running: Mutex<HashMap<K, Arc<OnceCell<V>>>>,
}

impl<K, V> Default for Flights<K, V> {
    fn default() -> Self {
        Flights {
            running: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash + Clone, V: Clone> Flights<K, V> {
    pub async fn run<F, Fut>(&self, key: &K, work: F) -> V
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V>,
    {
        let cell = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.clone())
            .or_insert_with(|| Arc::new(OnceCell::new()))
            .clone();
        let out = cell.get_or_init(work).await.clone();
        // Finished: the result lives in the caches from now on, not here.
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if running.get(key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
            running.remove(key);
        }
        out
    }

    pub fn in_progress(&self) -> usize {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn budget_allows_a_burst_then_its_rate_and_refunds_successes() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut b = Budget::new(3, 2.0, t0);
        assert!(b.try_take(t0));
        assert!(b.try_take(t0));
        assert!(b.try_take(t0));
        assert!(!b.try_take(t0), "the burst is spent");
        assert_eq!(b.wait(t0), Duration::from_millis(500));
        assert!(!b.try_take(at(400)));
        assert!(b.try_take(at(500)), "2 per second: one more after 500 ms");
        assert!(!b.try_take(at(600)));
        // A success is given back.
        b.refund(at(600));
        assert!(b.try_take(at(600)));
        // Refills never exceed the burst.
        let mut b = Budget::new(3, 2.0, t0);
        b.refund(at(10_000));
        for _ in 0..3 {
            assert!(b.try_take(at(10_000)));
        }
        assert!(!b.try_take(at(10_000)));
        // A flood of 1000 requests over 1 s costs burst + rate reviews.
        let mut b = Budget::new(5, 2.0, t0);
        let admitted = (0..1000u64).filter(|i| b.try_take(at(*i))).count();
        assert_eq!(admitted, 5 + 1);
    }

    #[tokio::test]
    async fn one_run_per_key_for_concurrent_callers() {
        let flights: Arc<Flights<u32, u32>> = Arc::new(Flights::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let (flights, runs) = (flights.clone(), runs.clone());
            tasks.push(tokio::spawn(async move {
                flights
                    .run(&7, || async {
                        runs.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        42
                    })
                    .await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.ok(), Some(42));
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(flights.in_progress(), 0);
        // Later callers run the work again (results are cached elsewhere).
        assert_eq!(flights.run(&7, || async { 43 }).await, 43);
    }
}
