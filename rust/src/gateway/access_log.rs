//! The gateway's optional access log: a bounded buffer of finished requests that Python drains and
//! writes through its logger (same format and destination as every other log line).
//!
//! Thread-safety: one mutex around the buffer, taken once per request when the log is on. When the
//! buffer is full (Python fell behind) entries are dropped and counted, never blocking a request.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use parking_lot::Mutex;

/// Entries kept until Python drains them.
pub const CAPACITY: usize = 16_384;
/// Longest request target kept (longer ones are cut, marked with "...").
const MAX_TARGET: usize = 1024;

/// One finished request.
#[derive(Debug, Clone)]
pub struct Entry {
    pub client: String,
    pub method: String,
    pub target: String,
    pub status: u16,
    pub elapsed: Duration,
    pub request_id: String,
}

#[derive(Default)]
pub struct AccessLog {
    entries: Mutex<VecDeque<Entry>>,
    dropped: AtomicU64,
}

impl AccessLog {
    pub fn record(&self, client: &str, method: &str, target: &str, status: u16, elapsed: Duration, request_id: &str) {
        let mut entries = self.entries.lock();
        if entries.len() >= CAPACITY {
            drop(entries);
            self.dropped.fetch_add(1, Relaxed);
            return;
        }
        let target = if target.len() > MAX_TARGET {
            let mut cut = MAX_TARGET;
            while !target.is_char_boundary(cut) {
                cut -= 1;
            }
            format!("{}...", &target[..cut])
        } else {
            target.to_owned()
        };
        entries.push_back(Entry {
            client: client.to_owned(),
            method: method.to_owned(),
            target,
            status,
            elapsed,
            request_id: request_id.to_owned(),
        });
    }

    /// Everything recorded since the last drain, oldest first.
    pub fn drain(&self) -> Vec<Entry> {
        std::mem::take(&mut *self.entries.lock()).into()
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_drained_in_order() {
        let log = AccessLog::default();
        for i in 0..CAPACITY + 5 {
            log.record("127.0.0.1", "GET", &format!("/t/a/{i}"), 200, Duration::from_micros(5), "id");
        }
        assert_eq!(log.dropped(), 5);
        let entries = log.drain();
        assert_eq!(entries.len(), CAPACITY);
        assert_eq!(entries[0].target, "/t/a/0");
        assert!(log.drain().is_empty());
        log.record("::1", "POST", &"é".repeat(600), 201, Duration::ZERO, "id");
        let long = &log.drain()[0].target;
        assert!(long.ends_with("...") && long.len() <= MAX_TARGET + 3);
    }
}
