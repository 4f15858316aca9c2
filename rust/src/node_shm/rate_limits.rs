//! The rate limiter's windows in the node's shared memory, counted by every process of the node: the
//! contract of [`crate::rate_limit::FixedWindows`] (one process), so the node uses either; here a changed
//! `max_requests` applies to the running window at once.
//!
//! A window is one 16-byte bucket, `(tag, end << 32 | count)`, changed whole by a 16-byte
//! compare-and-swap: the tag is the key's hash (with the rule's duration; 64 bits seeded per region, which
//! is all that tells keys apart), `end` the second the window ends. Counting a request is one compare-and-swap, so concurrent processes never
//! admit more than `max_requests` in a window, and a process killed at any instruction leaves no
//! half-done state behind.
//!
//! A key lives in one set of [`RATE_WAYS`] buckets (chosen by its tag). A key without a bucket claims a
//! free one, or one whose window ended at least a second ago (so memory is bounded and stale windows
//! are reused), as *pending*; it then looks at the set again and backs off to another claim of the
//! same key, lower in the set or already live, or takes back a pending claim above its own; only then
//! does it make its claim live. So a key never has two live windows, whatever the interleaving. A
//! pending claim of a process that died expires after [`PENDING_SECONDS`]. A set full of live windows
//! lets the request through uncounted (`overflowed` counts those): the limiter must never turn away
//! clients because an attacker filled it with addresses.

use std::hash::BuildHasher;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use portable_atomic::AtomicU128;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use super::keys::pause;
use super::region::{NodeSharedMemory, Region, RATE_WAYS};

/// A bucket's count while a key's claim of it is pending (its `end` is then the claim's deadline).
const PENDING: u64 = u32::MAX as u64;
/// The most a window counts.
const MAX_COUNT: u32 = u32::MAX - 1;
/// A pending claim older than this was left by a process that died (a claim takes nanoseconds).
pub const PENDING_SECONDS: u64 = 2;
/// Tries of one count against concurrent changes of its set before it is let through uncounted.
const RETRIES: u32 = 1 << 12;

const FREE: u128 = 0;

fn word(tag: u64, state: u64) -> u128 {
    (state as u128) << 64 | tag as u128
}

fn tag_of(word: u128) -> u64 {
    word as u64
}

/// `(end, count)` of a bucket.
fn state_of(word: u128) -> (u64, u64) {
    let state = (word >> 64) as u64;
    (state >> 32, state & 0xffff_ffff)
}

fn state(end: u64, count: u64) -> u64 {
    end.min(u32::MAX as u64) << 32 | count
}

/// Whether a bucket may be taken by any key at `now`: free, a window that ended a second ago or more
/// (processes' clocks may differ by a second at a window's edge), or an expired pending claim.
fn reclaimable(word: u128, now: u64) -> bool {
    let (end, _) = state_of(word);
    tag_of(word) == 0 || now > end
}

enum Step {
    Done(bool),
    Retry,
}

enum Claim {
    /// The way claimed, and the pending word it holds.
    Claimed(usize, u128),
    /// Every bucket of the set holds a live window.
    Full,
    /// The set changed while it was looked at.
    Changed,
}

pub struct RateTable {
    region: Arc<Region>,
    hasher: foldhash::quality::FixedState,
    sets: usize,
}

impl RateTable {
    /// The table in `region`, or None where the platform has no 16-byte compare-and-swap (the
    /// fallback would be a lock of this process only).
    pub fn new(region: Arc<Region>) -> Option<RateTable> {
        if !AtomicU128::is_lock_free() {
            return None;
        }
        let seed = region.header().rate_seed.load(Ordering::Relaxed);
        let sets = region.layout().rate_buckets / RATE_WAYS;
        Some(RateTable {
            region,
            hasher: foldhash::quality::FixedState::with_seed(seed),
            sets,
        })
    }

    fn tag(&self, key: &str, duration: u64) -> u64 {
        self.hasher.hash_one((key, duration)).max(1)
    }

    fn bucket(&self, set: usize, way: usize) -> &AtomicU128 {
        self.region.rate_bucket(set * RATE_WAYS + way)
    }

    /// Count one request of `key` at `now` (Unix seconds): true when its window allows it. A changed
    /// `duration` is another window; a changed `max_requests` applies to the current one.
    pub fn allow(&self, key: &str, max_requests: u32, duration: i64, now: i64) -> bool {
        if max_requests == 0 {
            return false;
        }
        let duration = duration.clamp(1, u32::MAX as i64) as u64;
        let now = now.clamp(0, u32::MAX as i64 - 1) as u64;
        let tag = self.tag(key, duration);
        let set = (tag >> 32) as usize % self.sets;
        let max = max_requests.min(MAX_COUNT) as u64;
        for tries in 0..RETRIES {
            match self.try_count(set, tag, max, duration, now) {
                Step::Done(allowed) => return allowed,
                Step::Retry => pause(tries),
            }
        }
        self.region.header().rate_overflowed.fetch_add(1, Ordering::Relaxed);
        true
    }

    fn try_count(&self, set: usize, tag: u64, max: u64, duration: u64, now: u64) -> Step {
        // The key's live window, if it has one.
        let mut claimed_elsewhere = false;
        for way in 0..RATE_WAYS {
            let bucket = self.bucket(set, way);
            let current = bucket.load(Ordering::SeqCst);
            if tag_of(current) != tag {
                continue;
            }
            let (end, count) = state_of(current);
            if count == PENDING {
                claimed_elsewhere |= now <= end;
                continue;
            }
            let next = if now >= end {
                state(now + duration, 1)
            } else if count < max {
                state(end, count + 1)
            } else {
                return Step::Done(false);
            };
            return match bucket.compare_exchange(current, word(tag, next), Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => Step::Done(true),
                Err(_) => Step::Retry,
            };
        }
        if claimed_elsewhere {
            return Step::Retry; // another process is making the key's window: count in it
        }
        // None: claim a bucket, and make the claim the key's window unless another claim of it wins.
        let (mine, pending) = match self.claim(set, tag, now) {
            Claim::Claimed(way, pending) => (way, pending),
            Claim::Full => {
                self.region.header().rate_overflowed.fetch_add(1, Ordering::Relaxed);
                return Step::Done(true);
            }
            Claim::Changed => return Step::Retry,
        };
        if !self.settle(set, tag, mine, pending) {
            return Step::Retry;
        }
        match self.bucket(set, mine).compare_exchange(
            pending,
            word(tag, state(now + duration, 1)),
            Ordering::SeqCst,
            Ordering::SeqCst,
        ) {
            Ok(_) => Step::Done(true),
            Err(_) => Step::Retry, // taken back by a claim lower in the set
        }
    }

    /// Claim the set's first reclaimable bucket for `tag` as pending.
    fn claim(&self, set: usize, tag: u64, now: u64) -> Claim {
        let mut free = None;
        for way in 0..RATE_WAYS {
            let current = self.bucket(set, way).load(Ordering::SeqCst);
            let reclaimable = reclaimable(current, now);
            if tag_of(current) == tag && !reclaimable {
                return Claim::Changed; // claimed since the key was looked for
            }
            if free.is_none() && reclaimable {
                free = Some((way, current));
            }
        }
        let Some((way, current)) = free else {
            return Claim::Full;
        };
        let pending = word(tag, state(now + PENDING_SECONDS, PENDING));
        match self
            .bucket(set, way)
            .compare_exchange(current, pending, Ordering::SeqCst, Ordering::SeqCst)
        {
            Ok(_) => Claim::Claimed(way, pending),
            Err(_) => Claim::Changed,
        }
    }

    /// With `mine` claimed as `pending`: whether it may become the key's window. Another claim of the key
    /// that is live, or pending lower in the set, wins (`mine` is given back); one pending higher is taken
    /// back. Claims are made before this looks, so of two concurrent claims at least one sees the other.
    fn settle(&self, set: usize, tag: u64, mine: usize, pending: u128) -> bool {
        for way in (0..RATE_WAYS).filter(|&way| way != mine) {
            let bucket = self.bucket(set, way);
            loop {
                let other = bucket.load(Ordering::SeqCst);
                if tag_of(other) != tag {
                    break;
                }
                if state_of(other).1 != PENDING || way < mine {
                    let _ = self
                        .bucket(set, mine)
                        .compare_exchange(pending, FREE, Ordering::SeqCst, Ordering::SeqCst);
                    return false;
                }
                if bucket
                    .compare_exchange(other, FREE, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
                {
                    break;
                }
            }
        }
        true
    }

    /// Free the windows that ended more than `idle` seconds before `now` (and expired pending claims);
    /// how many were freed. Not needed for correctness: an ended window is reused when its set is full.
    pub fn clean(&self, now: i64, idle: i64) -> usize {
        let limit = now.saturating_sub(idle.max(0)).max(0) as u64;
        let mut freed = 0;
        for index in 0..self.region.layout().rate_buckets {
            let bucket = self.region.rate_bucket(index);
            let current = bucket.load(Ordering::SeqCst);
            if tag_of(current) != 0
                && limit > state_of(current).0
                && bucket
                    .compare_exchange(current, FREE, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            {
                freed += 1;
            }
        }
        freed
    }

    /// Buckets in use (live windows, ended ones not yet reused, pending claims).
    pub fn len(&self) -> usize {
        (0..self.region.layout().rate_buckets)
            .filter(|&index| tag_of(self.region.rate_bucket(index).load(Ordering::SeqCst)) != 0)
            .count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn buckets(&self) -> usize {
        self.region.layout().rate_buckets
    }

    pub fn overflowed(&self) -> u64 {
        self.region.header().rate_overflowed.load(Ordering::Relaxed)
    }
}

// ---------------------------------------------------------------------------------------------
// Python wrapper
// ---------------------------------------------------------------------------------------------

/// ``RateLimiter`` in the node's shared memory, counted by all its processes (see ``pbfast/_native.pyi``).
#[pyclass(module = "pbfast._native", name = "SharedRateLimiter", frozen)]
pub struct SharedRateLimiter {
    core: RateTable,
}

#[pymethods]
impl SharedRateLimiter {
    #[new]
    fn py_new(memory: &NodeSharedMemory) -> PyResult<Self> {
        let core = RateTable::new(memory.region.clone()).ok_or_else(|| {
            PyRuntimeError::new_err("this CPU has no 16-byte compare-and-swap: rate limits cannot be shared")
        })?;
        Ok(SharedRateLimiter { core })
    }

    /// Construction happens in ``__new__``; this no-op ``__init__`` only exists so that
    /// ``inspect.signature``/stubtest see the constructor's parameters on ``__init__`` (as in the stub).
    #[pyo3(signature = (*_args, **_kwargs))]
    fn __init__(&self, _args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) {}

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

    #[getter]
    fn buckets(&self) -> usize {
        self.core.buckets()
    }

    fn __len__(&self) -> usize {
        self.core.len()
    }
}

// ---------------------------------------------------------------------------------------------
// Tests (pure Rust)
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;
    use std::thread;

    fn pair(capacity: usize) -> (RateTable, RateTable) {
        let owner = Arc::new(Region::create(capacity, 4, 86400).unwrap());
        let worker = Arc::new(Region::attach(owner.fd()).unwrap());
        (RateTable::new(owner).unwrap(), RateTable::new(worker).unwrap())
    }

    #[test]
    fn a_window_allows_its_maximum_then_refuses_until_it_ends() {
        let (main, worker) = pair(64);
        assert!(main.allow("k", 2, 3, 100));
        assert!(worker.allow("k", 2, 3, 101));
        assert!(!main.allow("k", 2, 3, 102));
        assert!(worker.allow("other", 2, 3, 102));
        assert!(worker.allow("k", 2, 3, 103)); // the window started at 100 ended
        assert!(main.allow("k", 2, 3, 103));
        assert!(!worker.allow("k", 2, 3, 105));
        assert!(!main.allow("zero", 0, 3, 105));
        assert_eq!(main.len(), 2);
    }

    #[test]
    fn a_changed_duration_is_another_window_and_a_changed_maximum_applies_at_once() {
        let (main, worker) = pair(64);
        assert!(main.allow("k", 1, 60, 10));
        assert!(!worker.allow("k", 1, 60, 11));
        assert!(worker.allow("k", 1, 30, 12));
        assert!(main.allow("k", 2, 60, 13));
        assert!(!main.allow("k", 2, 60, 14));
    }

    #[test]
    fn a_full_set_reuses_ended_windows_and_then_allows_uncounted() {
        let (main, worker) = pair(1); // one set
        assert_eq!(main.buckets(), RATE_WAYS);
        for n in 0..RATE_WAYS {
            assert!(main.allow(&format!("ip{n}"), 1, 10, 0));
        }
        assert!(worker.allow("late", 1, 10, 5)); // uncounted: every window is live
        assert!(worker.allow("late", 1, 10, 5));
        assert_eq!(main.overflowed(), 2);
        assert!(!main.allow("ip3", 1, 10, 5), "the live windows were kept");
        assert!(worker.allow("late", 1, 10, 11)); // the windows ended at 10: one is reused
        assert!(!worker.allow("late", 1, 10, 12));
        assert_eq!(main.overflowed(), 2);
        assert_eq!(main.len(), RATE_WAYS);
    }

    #[test]
    fn clean_frees_windows_idle_long_enough() {
        let (main, worker) = pair(64);
        main.allow("a", 5, 10, 0); // ends at 10
        // "b" while "a" is still live (the keys' sets are random per region: at 100, "b" could reuse "a"'s
        // ended bucket when they share one, and nothing would be left to clean), ending at 205
        main.allow("b", 5, 200, 5);
        assert_eq!(worker.clean(200, 95), 1);
        assert_eq!(main.len(), 1);
    }

    #[test]
    fn a_pending_claim_of_a_dead_process_expires() {
        let (main, worker) = pair(1);
        let tag = main.tag("k", 10);
        let set = (tag >> 32) as usize % main.sets;
        main.bucket(set, 3)
            .store(word(tag, state(100 + PENDING_SECONDS, PENDING)), Ordering::SeqCst);
        // While it is fresh the key waits for it (and is let through uncounted in the end).
        assert!(worker.allow("k", 1, 10, 100));
        assert_eq!(worker.overflowed(), 1);
        assert!(worker.allow("k", 1, 10, 103)); // expired: the key claims a bucket of its own
        assert!(!main.allow("k", 1, 10, 104));
        assert_eq!(main.len(), 1, "the dead claim was taken back");
    }

    /// The rules between two claims of one key, each interleaving set up by hand.
    #[test]
    fn of_two_claims_of_a_key_one_wins() {
        let (main, _) = pair(1);
        let tag = main.tag("k", 10);
        let set = (tag >> 32) as usize % main.sets;
        let pending_at = |now: u64| word(tag, state(now + PENDING_SECONDS, PENDING));
        let claim = |expected: usize| match main.claim(set, tag, 100) {
            Claim::Claimed(way, pending) => {
                assert_eq!(way, expected);
                pending
            }
            _ => panic!("no claim"),
        };
        // A live window appeared while the key claimed: the claim is given back.
        let mine = claim(0);
        main.bucket(set, 5).store(word(tag, state(110, 1)), Ordering::SeqCst);
        assert!(!main.settle(set, tag, 0, mine));
        assert_eq!(main.bucket(set, 0).load(Ordering::SeqCst), FREE);
        assert!(matches!(main.claim(set, tag, 100), Claim::Changed), "the key has a bucket");
        main.bucket(set, 5).store(FREE, Ordering::SeqCst);
        // A pending claim lower in the set wins; one higher is taken back.
        main.bucket(set, 0).store(pending_at(100), Ordering::SeqCst);
        main.bucket(set, 1).store(word(7, state(200, 1)), Ordering::SeqCst);
        main.bucket(set, 3).store(pending_at(100), Ordering::SeqCst);
        main.bucket(set, 2).store(pending_at(100), Ordering::SeqCst);
        assert!(!main.settle(set, tag, 2, pending_at(100)));
        assert_eq!(main.bucket(set, 2).load(Ordering::SeqCst), FREE);
        assert!(main.settle(set, tag, 0, pending_at(100)));
        assert_eq!(main.bucket(set, 3).load(Ordering::SeqCst), FREE);
        assert_eq!(main.bucket(set, 1).load(Ordering::SeqCst), word(7, state(200, 1)), "other keys untouched");
        assert_eq!(main.bucket(set, 0).load(Ordering::SeqCst), pending_at(100));
    }

    /// Processes (threads over separate mappings) counting the same keys never admit more than the
    /// maximum per window, through window changes and the keys' first claims.
    #[test]
    fn concurrent_counts_are_exact() {
        const THREADS: usize = 4;
        const WINDOWS: usize = 30;
        const KEYS: usize = 6;
        const MAX: u32 = 40;
        const TRIES: usize = 30;
        let owner = Arc::new(Region::create(1, THREADS, 86400).unwrap()); // one set: every claim contends
        let barrier = Arc::new(Barrier::new(THREADS));
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let table = RateTable::new(Arc::new(Region::attach(owner.fd()).unwrap())).unwrap();
                let barrier = barrier.clone();
                thread::spawn(move || {
                    let mut allowed = vec![[0u32; KEYS]; WINDOWS];
                    for (w, counts) in allowed.iter_mut().enumerate() {
                        barrier.wait();
                        let now = 1000 + 10 * w as i64; // the last window's new keys are reclaimable
                        for _ in 0..TRIES {
                            for (k, n) in counts.iter_mut().enumerate() {
                                // Half the keys are new in each window: their first claims race.
                                let key = if k % 2 == 0 { format!("key{k}") } else { format!("key{k}-{w}") };
                                *n += table.allow(&key, MAX, 5, now) as u32;
                            }
                        }
                    }
                    allowed
                })
            })
            .collect();
        let mut per_window = vec![[0u32; KEYS]; WINDOWS];
        for handle in handles {
            for (w, counts) in handle.join().unwrap().into_iter().enumerate() {
                for (k, n) in counts.into_iter().enumerate() {
                    per_window[w][k] += n;
                }
            }
        }
        assert!(per_window.iter().all(|counts| counts.iter().all(|&n| n == MAX)), "{per_window:?}");
        assert_eq!(RateTable::new(owner).unwrap().overflowed(), 0);
    }
}
