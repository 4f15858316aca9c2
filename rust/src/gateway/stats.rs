//! Counters of the native data path, read by the gateway's `/metrics` (Python renders them).
//!
//! Thread-safety: relaxed atomics; a reader may see one counter a request ahead of another.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Failures talking to nodes, by kind (the names of `pbfast_gateway_upstream_errors_total{kind}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upstream {
    Connect = 0,
    ConnectTimeout,
    Timeout,
    Reset,
    BreakerOpen,
    /// The hand-over to the gateway's Python side failed (answered 502).
    HandOver,
}

impl Upstream {
    pub const ALL: [Upstream; 6] = [
        Upstream::Connect,
        Upstream::ConnectTimeout,
        Upstream::Timeout,
        Upstream::Reset,
        Upstream::BreakerOpen,
        Upstream::HandOver,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Upstream::Connect => "connect",
            Upstream::ConnectTimeout => "connect_timeout",
            Upstream::Timeout => "timeout",
            Upstream::Reset => "reset",
            Upstream::BreakerOpen => "breaker_open",
            Upstream::HandOver => "hand_over",
        }
    }
}

/// Why a request was sent a second time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    Unreachable = 0,
    Moved,
    /// A hand-over to the Python side that could not have reached it (see `fallback`).
    HandOver,
}

pub struct Stats {
    /// Answers by status class 1xx..5xx.
    requests: [AtomicU64; 5],
    /// Latency histogram: upper bounds in seconds, counts per bucket (the last is +Inf).
    bounds: Vec<f64>,
    buckets: Vec<AtomicU64>,
    latency_nanos: AtomicU64,
    upstream: [AtomicU64; 6],
    retries: [AtomicU64; 3],
    /// Requests handed to the Python side (counted there as answered requests).
    handed_over: AtomicU64,
}

impl Stats {
    pub fn new(mut bounds: Vec<f64>) -> Self {
        bounds.retain(|b| b.is_finite() && *b > 0.0);
        bounds.sort_by(f64::total_cmp);
        bounds.dedup();
        let buckets = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Stats {
            requests: Default::default(),
            bounds,
            buckets,
            latency_nanos: AtomicU64::new(0),
            upstream: Default::default(),
            retries: Default::default(),
            handed_over: AtomicU64::new(0),
        }
    }

    /// One request answered with `status` after `elapsed` (until its answer's head was sent on).
    pub fn observe(&self, status: u16, elapsed: Duration) {
        let class = (status / 100) as usize;
        if (1..=5).contains(&class) {
            self.requests[class - 1].fetch_add(1, Relaxed);
        }
        let seconds = elapsed.as_secs_f64();
        let index = self.bounds.partition_point(|b| *b < seconds);
        self.buckets[index].fetch_add(1, Relaxed);
        self.latency_nanos.fetch_add(elapsed.as_nanos().min(u64::MAX as u128) as u64, Relaxed);
    }

    pub fn upstream_error(&self, kind: Upstream) {
        self.upstream[kind as usize].fetch_add(1, Relaxed);
    }

    pub fn retry(&self, reason: Retry) {
        self.retries[reason as usize].fetch_add(1, Relaxed);
    }

    pub fn handed_over(&self) {
        self.handed_over.fetch_add(1, Relaxed);
    }

    pub fn requests(&self) -> [u64; 5] {
        std::array::from_fn(|i| self.requests[i].load(Relaxed))
    }

    pub fn bounds(&self) -> &[f64] {
        &self.bounds
    }

    pub fn buckets(&self) -> Vec<u64> {
        self.buckets.iter().map(|b| b.load(Relaxed)).collect()
    }

    pub fn latency_seconds(&self) -> f64 {
        self.latency_nanos.load(Relaxed) as f64 / 1e9
    }

    pub fn upstream_errors(&self) -> Vec<(&'static str, u64)> {
        Upstream::ALL.iter().map(|k| (k.name(), self.upstream[*k as usize].load(Relaxed))).collect()
    }

    pub fn retries(&self) -> [(&'static str, u64); 3] {
        [
            ("unreachable", self.retries[Retry::Unreachable as usize].load(Relaxed)),
            ("moved", self.retries[Retry::Moved as usize].load(Relaxed)),
            ("hand_over", self.retries[Retry::HandOver as usize].load(Relaxed)),
        ]
    }

    pub fn handed_over_count(&self) -> u64 {
        self.handed_over.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_match_prometheus_le() {
        let stats = Stats::new(vec![0.001, 0.01, 0.1]);
        stats.observe(200, Duration::from_micros(500));
        stats.observe(200, Duration::from_millis(1)); // le="0.001" includes 0.001
        stats.observe(404, Duration::from_millis(50));
        stats.observe(503, Duration::from_secs(3));
        stats.observe(99, Duration::ZERO); // no class, still timed
        assert_eq!(stats.buckets(), vec![3, 0, 1, 1]);
        assert_eq!(stats.requests(), [0, 2, 0, 1, 1]);
        assert!((stats.latency_seconds() - 3.0515).abs() < 1e-9);
    }
}
