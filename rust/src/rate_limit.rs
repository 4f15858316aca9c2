//! PocketBase's rate limiter (`apis/middlewares_rate_limit.go`): per key (a tenant, one of its rules and a
//! client address, joined by the caller), a fixed window of `duration` whole seconds allowing
//! `max_requests`: the first request after a window ended starts a new one at that second.
//!
//! Keys are hashed (random per process) to 64 bits and kept in mutex-guarded shards, so a check is a hash,
//! a short lock and no allocation for a known key. The table is bounded: a full shard first drops its
//! windows that ended, and when none did the request is allowed uncounted (`overflowed` counts those):
//! the limiter must never turn away clients because an attacker filled it with addresses.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use pyo3::prelude::*;

const SHARDS: usize = 64;

#[derive(Clone, Copy)]
struct Window {
    start: i64,
    available: u32,
    duration: i64,
}

pub struct FixedWindows {
    shards: Vec<Mutex<HashMap<u64, Window>>>,
    per_shard: usize,
    hasher: foldhash::fast::RandomState,
    overflowed: AtomicU64,
}

impl FixedWindows {
    pub fn new(max_entries: usize) -> FixedWindows {
        FixedWindows {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: (max_entries / SHARDS).max(1),
            hasher: foldhash::fast::RandomState::default(),
            overflowed: AtomicU64::new(0),
        }
    }

    /// Count one request of `key` at `now` (Unix seconds): true when its window allows it.
    pub fn allow(&self, key: &str, max_requests: u32, duration: i64, now: i64) -> bool {
        let hash = self.hasher.hash_one(key);
        let mut shard = self.shards[(hash as usize) % SHARDS].lock();
        if !shard.contains_key(&hash) && shard.len() >= self.per_shard {
            shard.retain(|_, window| now - window.start < window.duration);
            if shard.len() >= self.per_shard {
                self.overflowed.fetch_add(1, Ordering::Relaxed);
                return true;
            }
        }
        let window = shard.entry(hash).or_insert(Window {
            start: i64::MIN / 2,
            available: 0,
            duration,
        });
        if now.saturating_sub(window.start) >= duration.max(1) || window.duration != duration {
            *window = Window {
                start: now,
                available: max_requests,
                duration,
            };
        }
        if window.available > 0 {
            window.available -= 1;
            true
        } else {
            false
        }
    }

    /// Drop the windows that ended at least `idle` seconds before `now`; how many were dropped.
    pub fn clean(&self, now: i64, idle: i64) -> usize {
        let mut dropped = 0;
        for shard in &self.shards {
            let mut shard = shard.lock();
            let before = shard.len();
            shard.retain(|_, window| now - (window.start + window.duration) <= idle);
            dropped += before - shard.len();
        }
        dropped
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|shard| shard.lock().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn overflowed(&self) -> u64 {
        self.overflowed.load(Ordering::Relaxed)
    }
}

/// The Python face: see `pbfast/_native.pyi`.
#[pyclass(module = "pbfast._native", name = "RateLimiter", frozen)]
pub struct RateLimiter {
    core: FixedWindows,
}

#[pymethods]
impl RateLimiter {
    #[new]
    #[pyo3(signature = (max_entries = 1_000_000))]
    fn py_new(max_entries: usize) -> RateLimiter {
        RateLimiter {
            core: FixedWindows::new(max_entries),
        }
    }

    fn allow(&self, key: &str, max_requests: u32, duration: i64, now: i64) -> bool {
        self.core.allow(key, max_requests, duration, now)
    }

    #[pyo3(signature = (now, idle = 1800))]
    fn clean(&self, now: i64, idle: i64) -> usize {
        self.core.clean(now, idle)
    }

    #[getter]
    fn overflowed(&self) -> u64 {
        self.core.overflowed()
    }

    fn __len__(&self) -> usize {
        self.core.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_allows_its_maximum_then_refuses_until_it_ends() {
        let limiter = FixedWindows::new(1000);
        assert!(limiter.allow("k", 2, 3, 100));
        assert!(limiter.allow("k", 2, 3, 101));
        assert!(!limiter.allow("k", 2, 3, 102));
        assert!(limiter.allow("other", 2, 3, 102));
        assert!(limiter.allow("k", 2, 3, 103)); // the window started at 100 ended
        assert!(limiter.allow("k", 2, 3, 103));
        assert!(!limiter.allow("k", 2, 3, 105));
    }

    #[test]
    fn a_changed_rule_starts_a_new_window() {
        let limiter = FixedWindows::new(1000);
        assert!(limiter.allow("k", 1, 60, 10));
        assert!(!limiter.allow("k", 1, 60, 11));
        assert!(limiter.allow("k", 1, 30, 12));
    }

    #[test]
    fn a_full_table_drops_ended_windows_and_then_allows_uncounted() {
        let limiter = FixedWindows::new(SHARDS); // one window per shard
        let mut keys = (0..).map(|i| format!("key{i}"));
        let first = keys.next().unwrap();
        assert!(limiter.allow(&first, 1, 10, 0));
        let same_shard = keys
            .find(|k| {
                limiter.hasher.hash_one(k.as_str()) as usize % SHARDS
                    == limiter.hasher.hash_one(first.as_str()) as usize % SHARDS
            })
            .unwrap();
        assert!(limiter.allow(&same_shard, 1, 10, 1));
        assert!(limiter.allow(&same_shard, 1, 10, 2)); // uncounted: the shard is full
        assert_eq!(limiter.overflowed(), 2);
        assert!(limiter.allow(&same_shard, 1, 10, 20)); // the first window ended: its place is reused
        assert!(!limiter.allow(&same_shard, 1, 10, 21));
    }

    #[test]
    fn clean_drops_windows_idle_long_enough() {
        let limiter = FixedWindows::new(1000);
        limiter.allow("a", 5, 10, 0);
        limiter.allow("b", 5, 10, 100);
        assert_eq!(limiter.clean(200, 95), 1);
        assert_eq!(limiter.len(), 1);
    }
}
