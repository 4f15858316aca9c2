//! Warnings of the data path (a failed hand-over to the Python side, say): a bounded buffer that Python
//! drains and writes through its logger at WARN, each with its request's id, so they land where every
//! other log line does (text or JSON).
//!
//! Thread-safety: one mutex around the buffer, taken only when something goes wrong. When the buffer is
//! full (Python fell behind) warnings are dropped and counted, never blocking a request.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use parking_lot::Mutex;

/// Warnings kept until Python drains them.
pub const CAPACITY: usize = 1024;

/// One warning: what happened, and the id of the request it happened to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub message: String,
    pub request_id: String,
}

#[derive(Default)]
pub struct Warnings {
    entries: Mutex<VecDeque<Warning>>,
    dropped: AtomicU64,
}

impl Warnings {
    pub fn record(&self, message: String, request_id: &str) {
        let mut entries = self.entries.lock();
        if entries.len() >= CAPACITY {
            drop(entries);
            self.dropped.fetch_add(1, Relaxed);
            return;
        }
        entries.push_back(Warning { message, request_id: request_id.to_owned() });
    }

    /// Everything recorded since the last drain, oldest first.
    pub fn drain(&self) -> Vec<Warning> {
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
        let warnings = Warnings::default();
        for i in 0..CAPACITY + 3 {
            warnings.record(format!("w{i}"), "id");
        }
        assert_eq!(warnings.dropped(), 3);
        let drained = warnings.drain();
        assert_eq!(drained.len(), CAPACITY);
        assert_eq!(drained[0], Warning { message: "w0".into(), request_id: "id".into() });
        assert!(warnings.drain().is_empty());
    }
}
