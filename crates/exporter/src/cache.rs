//! A small TTL cache for authentication and authorization results.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct TtlCache<K, V> {
    ttl: Duration,
    max_entries: usize,
    map: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    pub fn new(ttl: Duration, max_entries: usize) -> Self {
        TtlCache {
            ttl,
            max_entries,
            map: Mutex::new(HashMap::new()),
        }
    }

    pub fn get(&self, key: &K) -> Option<V> {
        self.get_at(key, Instant::now())
    }

    pub fn get_at(&self, key: &K, now: Instant) -> Option<V> {
        if self.ttl.is_zero() {
            return None;
        }
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(key) {
            Some((expires, v)) if *expires > now => Some(v.clone()),
            _ => None,
        }
    }

    pub fn insert(&self, key: K, value: V) {
        self.insert_at(key, value, Instant::now())
    }

    pub fn insert_at(&self, key: K, value: V, now: Instant) {
        self.insert_for_at(key, value, self.ttl, now)
    }

    /// An entry with its own lifetime (a short one for negative answers).
    pub fn insert_for(&self, key: K, value: V, ttl: Duration) {
        self.insert_for_at(key, value, ttl, Instant::now())
    }

    pub fn insert_for_at(&self, key: K, value: V, ttl: Duration, now: Instant) {
        if self.ttl.is_zero() || ttl.is_zero() {
            return;
        }
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= self.max_entries {
            map.retain(|_, (expires, _)| *expires > now);
            // Still full of live entries: a flood of distinct tokens. Dropping everything bounds memory;
            // the cost is only extra API calls.
            if map.len() >= self.max_entries {
                map.clear();
            }
        }
        map.insert(key, (now + ttl, value));
    }

    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_and_bounds() {
        let c = TtlCache::new(Duration::from_secs(10), 3);
        let t0 = Instant::now();
        c.insert_at(1, "a", t0);
        assert_eq!(c.get_at(&1, t0 + Duration::from_secs(9)), Some("a"));
        assert_eq!(c.get_at(&1, t0 + Duration::from_secs(10)), None);
        c.insert_at(2, "b", t0);
        c.insert_at(3, "c", t0);
        // Full: expired entries go first.
        c.insert_at(4, "d", t0 + Duration::from_secs(11));
        assert_eq!(c.len(), 1);
        let z = TtlCache::new(Duration::ZERO, 3);
        z.insert(1, 1);
        assert_eq!(z.get(&1), None);
        // Entries with their own, shorter lifetime.
        let c = TtlCache::new(Duration::from_secs(10), 3);
        c.insert_for_at(1, "short", Duration::from_secs(2), t0);
        assert_eq!(c.get_at(&1, t0 + Duration::from_secs(1)), Some("short"));
        assert_eq!(c.get_at(&1, t0 + Duration::from_secs(2)), None);
    }
}
