//! Per-tenant API request quotas and stored bytes in the node's shared memory, counted by every
//! worker against one limit: the same contract as [`crate::quota::QuotaCounters`] (one process), so
//! the node uses either.
//!
//! A tenant's window and its count share one word (`window number << 32 | count`), so admitting a
//! request is one compare-and-swap: concurrent workers never admit more than the limit, and a process
//! killed at any instruction leaves no half-done state behind (the one-process version marks a
//! roll-over in progress, which a dead process would leave set forever). A count saturates at
//! 2^32 - 1 per window.
//!
//! Entries are made and removed by the owner (the main process). For a tenant without counters a
//! worker admits the request uncounted (the main process makes every served tenant's counters before
//! serving it); the owner makes unlimited counters, as the one-process version does.

use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use super::keys::{self, Key};
use super::region::{Entry, NodeSharedMemory, Region, PRESENT_QUOTA};
use super::tenant_table::TableError;
use crate::quota::wall_clock;

const COUNT_MASK: u64 = 0xffff_ffff;

fn pack(window: u64, count: u64) -> u64 {
    (window << 32) | count
}

fn unpack(word: u64) -> (u64, u64) {
    (word >> 32, word & COUNT_MASK)
}

pub struct QuotaTable {
    region: Arc<Region>,
}

/// Count one request in window `current` against `entry`'s limit: `(allowed, remaining)`.
fn acquire_in(entry: &Entry, current: u64) -> (bool, i64) {
    loop {
        let word = entry.window.load(Ordering::Acquire);
        let (stored, count) = unpack(word);
        // A newer stored window (a caller whose clock is behind) counts there.
        let (window, count) = if stored < current {
            (current, 0)
        } else {
            (stored, count)
        };
        let limit = entry.api_limit.load(Ordering::Acquire);
        if (limit >= 0 && count as i64 >= limit) || count == COUNT_MASK {
            return (false, 0);
        }
        if entry
            .window
            .compare_exchange_weak(word, pack(window, count + 1), Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            entry.unreported.fetch_add(1, Ordering::AcqRel);
            let remaining = if limit < 0 {
                -1
            } else {
                (limit - (count + 1) as i64).max(0)
            };
            return (true, remaining);
        }
    }
}

/// Take back one request counted in `window` (the entry was reused for another tenant meanwhile).
fn undo_in(entry: &Entry, window: u64) {
    let _ = entry.window.fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
        let (stored, count) = unpack(word);
        (stored == window && count > 0).then(|| pack(stored, count - 1))
    });
    let _ = entry
        .unreported
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
}

impl QuotaTable {
    pub fn new(region: Arc<Region>) -> QuotaTable {
        QuotaTable { region }
    }

    pub fn window_seconds(&self) -> u64 {
        self.region.window_seconds()
    }

    /// The number of the window containing `now` (Unix seconds; NaN and negatives count as 0).
    pub fn window_at(&self, now: f64) -> u64 {
        let secs = if now.is_nan() || now <= 0.0 {
            0
        } else {
            now.min(u64::MAX as f64 / 2.0) as u64
        };
        (secs / self.region.window_seconds()).min(COUNT_MASK)
    }

    pub fn len(&self) -> usize {
        self.region.header().quota_entries.load(Ordering::Relaxed) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The tenant's entry (with counters) and the `keyseq` it was found under.
    fn existing(&self, key: &Key) -> Option<(usize, u64)> {
        let (index, keyseq) = keys::find(&self.region, key)?;
        let entry = self.region.entry(index);
        (entry.presence.load(Ordering::Acquire) & PRESENT_QUOTA != 0).then_some((index, keyseq))
    }

    /// Owner: the tenant's entry with counters, made (unlimited) when absent.
    fn ensure(&self, key: &Key) -> Result<usize, TableError> {
        if !self.region.owner() {
            return Err(TableError::NotOwner);
        }
        let _writer = self.region.writer.lock();
        let (index, _) = keys::insert(&self.region, key, Entry::reset_payload).map_err(|_| TableError::Full)?;
        let entry = self.region.entry(index);
        let presence = entry.presence.load(Ordering::Relaxed);
        if presence & PRESENT_QUOTA == 0 {
            for word in [&entry.window, &entry.unreported, &entry.storage] {
                word.store(0, Ordering::Relaxed);
            }
            entry.api_limit.store(-1, Ordering::Relaxed);
            entry.storage_limit.store(-1, Ordering::Relaxed);
            entry.presence.store(presence | PRESENT_QUOTA, Ordering::Release);
            self.region.header().quota_entries.fetch_add(1, Ordering::Relaxed);
        }
        Ok(index)
    }

    /// Run `f` on the tenant's counters (made by the owner when absent; a worker gets None then).
    /// `f` is run again if the entry was reused for another tenant while it ran, after `undo`.
    fn with<R>(&self, id: &str, f: impl Fn(&Entry) -> R, undo: impl Fn(&Entry, &R)) -> Result<Option<R>, TableError> {
        let key = Key::new(id).ok_or(TableError::BadId)?;
        for _ in 0..8 {
            let (index, keyseq) = match self.existing(&key) {
                Some(found) => found,
                None if self.region.owner() => {
                    self.ensure(&key)?;
                    continue;
                }
                None => return Ok(None),
            };
            let entry = self.region.entry(index);
            let outcome = f(entry);
            fence(Ordering::SeqCst);
            if keys::same_key(&self.region, index, keyseq) {
                return Ok(Some(outcome));
            }
            undo(entry, &outcome);
        }
        Ok(None)
    }

    pub fn set_limits(&self, id: &str, api_requests: i64, storage_bytes: i64) -> Result<(), TableError> {
        let key = Key::new(id).ok_or(TableError::BadId)?;
        let index = self.ensure(&key)?;
        let entry = self.region.entry(index);
        entry.api_limit.store(api_requests, Ordering::Release);
        entry.storage_limit.store(storage_bytes, Ordering::Release);
        Ok(())
    }

    pub fn try_acquire(&self, id: &str, now: f64) -> Result<(bool, i64), TableError> {
        let current = self.window_at(now);
        let counted = self.with(
            id,
            |entry| {
                (
                    acquire_in(entry, current),
                    unpack(entry.window.load(Ordering::Acquire)).0,
                )
            },
            |entry, ((allowed, _), window)| {
                if *allowed {
                    undo_in(entry, *window)
                }
            },
        )?;
        Ok(counted.map(|(outcome, _)| outcome).unwrap_or((true, -1)))
    }

    pub fn add_storage(&self, id: &str, delta: i64) -> Result<u64, TableError> {
        let apply = |cur: u64| (cur as i128 + delta as i128).clamp(0, u64::MAX as i128) as u64;
        let total = self.with(
            id,
            |entry| {
                let prev = entry
                    .storage
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |cur| Some(apply(cur)))
                    .unwrap_or_else(|cur| cur);
                apply(prev)
            },
            |_, _| {},
        )?;
        Ok(total.unwrap_or(0))
    }

    pub fn set_storage(&self, id: &str, total: u64) -> Result<(), TableError> {
        self.with(id, |entry| entry.storage.store(total, Ordering::Release), |_, _| {})?;
        Ok(())
    }

    /// True when `extra` more bytes keep the tenant within its storage limit (no counters: true).
    pub fn storage_allows(&self, id: &str, extra: i64) -> bool {
        let Some(key) = Key::new(id) else { return true };
        let Some((index, _)) = self.existing(&key) else {
            return true;
        };
        let entry = self.region.entry(index);
        let limit = entry.storage_limit.load(Ordering::Acquire);
        limit < 0 || entry.storage.load(Ordering::Acquire) as i128 + extra as i128 <= limit as i128
    }

    /// `(requests in the current window, storage bytes, window start)` at `now`, None when unknown.
    pub fn usage(&self, id: &str, now: f64) -> Option<(u64, u64, u64)> {
        let key = Key::new(id)?;
        let (index, _) = self.existing(&key)?;
        let entry = self.region.entry(index);
        let current = self.window_at(now);
        let (stored, count) = unpack(entry.window.load(Ordering::Acquire));
        let requests = if stored == current { count } else { 0 };
        Some((
            requests,
            entry.storage.load(Ordering::Acquire),
            current * self.window_seconds(),
        ))
    }

    /// Per tenant `(requests since the last call, storage bytes, window start at now)`.
    pub fn snapshot_and_reset(&self, now: f64) -> Vec<(String, (u64, u64, u64))> {
        let start = self.window_at(now) * self.window_seconds();
        keys::all(&self.region)
            .into_iter()
            .filter(|(index, _)| self.region.entry(*index).presence.load(Ordering::Acquire) & PRESENT_QUOTA != 0)
            .map(|(index, id)| {
                let entry = self.region.entry(index);
                (
                    id,
                    (
                        entry.unreported.swap(0, Ordering::AcqRel),
                        entry.storage.load(Ordering::Acquire),
                        start,
                    ),
                )
            })
            .collect()
    }

    /// Owner: drop the tenant's counters (its entry is freed unless it has a serving state).
    pub fn remove(&self, id: &str) -> Result<bool, TableError> {
        let key = Key::new(id).ok_or(TableError::BadId)?;
        if !self.region.owner() {
            return Err(TableError::NotOwner);
        }
        let _writer = self.region.writer.lock();
        let Some((index, _)) = self.existing(&key) else {
            return Ok(false);
        };
        let entry = self.region.entry(index);
        let presence = entry.presence.load(Ordering::Relaxed) & !PRESENT_QUOTA;
        entry.presence.store(presence, Ordering::Release);
        self.region.header().quota_entries.fetch_sub(1, Ordering::Relaxed);
        if presence == 0 {
            keys::free(&self.region, index);
        }
        Ok(true)
    }
}

// ---------------------------------------------------------------------------------------------
// Python wrapper
// ---------------------------------------------------------------------------------------------

/// ``QuotaCounters`` in the node's shared memory, counted by all its processes (see ``pbfast/_native.pyi``).
#[pyclass(module = "pbfast._native", name = "SharedQuotas", frozen)]
pub struct SharedQuotas {
    core: QuotaTable,
}

#[pymethods]
impl SharedQuotas {
    #[new]
    fn py_new(memory: &NodeSharedMemory) -> Self {
        SharedQuotas {
            core: QuotaTable::new(memory.region.clone()),
        }
    }

    /// Construction happens in ``__new__``; this no-op ``__init__`` only exists so that
    /// ``inspect.signature``/stubtest see the constructor's parameters on ``__init__`` (as in the stub).
    #[pyo3(signature = (*_args, **_kwargs))]
    fn __init__(&self, _args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) {}

    #[getter]
    fn window_seconds(&self) -> u64 {
        self.core.window_seconds()
    }

    fn __len__(&self) -> usize {
        self.core.len()
    }

    #[pyo3(
        signature = (tenant_id, api_requests = -1, storage_bytes = -1),
        text_signature = "($self, tenant_id, api_requests=-1, storage_bytes=-1)"
    )]
    fn set_limits(&self, tenant_id: &str, api_requests: i64, storage_bytes: i64) -> PyResult<()> {
        self.core
            .set_limits(tenant_id, api_requests, storage_bytes)
            .map_err(TableError::to_py)
    }

    #[pyo3(signature = (tenant_id, now = None))]
    fn try_acquire(&self, tenant_id: &str, now: Option<f64>) -> PyResult<(bool, i64)> {
        self.core
            .try_acquire(tenant_id, now.unwrap_or_else(wall_clock))
            .map_err(TableError::to_py)
    }

    fn add_storage(&self, tenant_id: &str, delta_bytes: i64) -> PyResult<u64> {
        self.core.add_storage(tenant_id, delta_bytes).map_err(TableError::to_py)
    }

    fn set_storage(&self, tenant_id: &str, total_bytes: i64) -> PyResult<()> {
        self.core
            .set_storage(tenant_id, total_bytes.max(0) as u64)
            .map_err(TableError::to_py)
    }

    fn storage_allows(&self, tenant_id: &str, extra_bytes: i64) -> bool {
        self.core.storage_allows(tenant_id, extra_bytes)
    }

    #[pyo3(signature = (tenant_id, now = None))]
    fn usage(&self, tenant_id: &str, now: Option<f64>) -> Option<(u64, u64, u64)> {
        self.core.usage(tenant_id, now.unwrap_or_else(wall_clock))
    }

    fn snapshot_and_reset<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (id, v) in self.core.snapshot_and_reset(wall_clock()) {
            d.set_item(id, v)?;
        }
        Ok(d)
    }

    fn remove(&self, tenant_id: &str) -> PyResult<bool> {
        self.core.remove(tenant_id).map_err(TableError::to_py)
    }
}

// ---------------------------------------------------------------------------------------------
// Tests (pure Rust)
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node_shm::tenant_table::{TableCore, FLAG_SERVING};
    use std::sync::Barrier;
    use std::thread;

    const DAY: f64 = 86400.0;
    const T0: f64 = 1_700_000_000.5; // inside the window starting at 1_699_920_000

    fn pair(window_seconds: u64) -> (QuotaTable, QuotaTable) {
        let owner = Arc::new(Region::create(1024, 4, window_seconds).unwrap());
        let worker = Arc::new(Region::attach(owner.fd()).unwrap());
        (QuotaTable::new(owner), QuotaTable::new(worker))
    }

    #[test]
    fn limits_and_windows_as_the_one_process_version() {
        let (main, worker) = pair(86400);
        main.set_limits("a", 3, -1).unwrap();
        assert_eq!(worker.try_acquire("a", T0).unwrap(), (true, 2));
        assert_eq!(main.try_acquire("a", T0).unwrap(), (true, 1));
        assert_eq!(worker.try_acquire("a", T0).unwrap(), (true, 0));
        assert_eq!(worker.try_acquire("a", T0).unwrap(), (false, 0));
        assert_eq!(main.usage("a", T0), Some((3, 0, 1_699_920_000)));
        assert_eq!(main.usage("a", T0 + DAY), Some((0, 0, 1_700_006_400)));
        assert_eq!(worker.try_acquire("a", T0 + DAY).unwrap(), (true, 2));
        assert_eq!(
            worker.try_acquire("a", T0).unwrap(),
            (true, 1),
            "counts in the newer stored window"
        );
        assert_eq!(main.usage("a", T0 + DAY), Some((2, 0, 1_700_006_400)));
        main.set_limits("a", 10, -1).unwrap();
        assert_eq!(worker.try_acquire("a", T0 + DAY).unwrap(), (true, 7));
        main.set_limits("z", 0, -1).unwrap();
        assert_eq!(worker.try_acquire("z", T0).unwrap(), (false, 0));
    }

    #[test]
    fn unknown_tenants() {
        let (main, worker) = pair(86400);
        assert_eq!(
            worker.try_acquire("n", T0).unwrap(),
            (true, -1),
            "a worker admits uncounted"
        );
        assert!(worker.is_empty());
        assert_eq!(worker.usage("n", T0), None);
        assert!(worker.storage_allows("n", i64::MAX));
        assert_eq!(
            main.try_acquire("n", T0).unwrap(),
            (true, -1),
            "the owner makes unlimited counters"
        );
        assert_eq!(main.len(), 1);
        assert_eq!(worker.try_acquire("n", T0).unwrap(), (true, -1));
        assert_eq!(main.usage("n", T0), Some((2, 0, 1_699_920_000)));
        assert_eq!(worker.remove("n"), Err(TableError::NotOwner));
        assert!(main.remove("n").unwrap());
        assert!(!main.remove("n").unwrap());
        assert!(main.is_empty());
    }

    #[test]
    fn storage() {
        let (main, worker) = pair(86400);
        assert_eq!(main.add_storage("s", 100).unwrap(), 100);
        assert_eq!(worker.add_storage("s", -30).unwrap(), 70);
        assert_eq!(worker.add_storage("s", -1000).unwrap(), 0);
        worker.set_storage("s", 50).unwrap();
        main.set_limits("s", -1, 60).unwrap();
        assert!(worker.storage_allows("s", 10));
        assert!(!worker.storage_allows("s", 11));
        assert_eq!(main.usage("s", T0), Some((0, 50, 1_699_920_000)));
    }

    #[test]
    fn counters_and_serving_state_share_an_entry() {
        let owner = Arc::new(Region::create(64, 1, 86400).unwrap());
        let quotas = QuotaTable::new(owner.clone());
        let table = TableCore::new(owner.clone());
        quotas.set_limits("t", 5, -1).unwrap();
        table.publish("t", FLAG_SERVING, 1, 0, -1, -1).unwrap();
        quotas.try_acquire("t", T0).unwrap();
        assert!(table.remove("t").unwrap());
        assert_eq!(
            quotas.usage("t", T0),
            Some((1, 0, 1_699_920_000)),
            "counters outlive the serving state"
        );
        table.publish("t", FLAG_SERVING, 2, 0, -1, -1).unwrap();
        assert!(quotas.remove("t").unwrap());
        assert!(table.get("t").is_some(), "and the serving state outlives the counters");
        assert!(table.remove("t").unwrap());
        assert!(keys::all(&owner).is_empty(), "freed once neither uses it");
    }

    #[test]
    fn snapshot_resets_only_unreported() {
        let (main, worker) = pair(86400);
        main.set_limits("a", 5, -1).unwrap();
        worker.try_acquire("a", T0).unwrap();
        worker.try_acquire("a", T0).unwrap();
        let s = main.snapshot_and_reset(T0);
        assert_eq!(s, vec![("a".to_string(), (2, 0, 1_699_920_000))]);
        assert_eq!(main.snapshot_and_reset(T0)[0].1 .0, 0);
        assert_eq!(main.usage("a", T0), Some((2, 0, 1_699_920_000)));
    }

    /// Workers in threads over separate mappings never admit more than the limit across roll-overs.
    #[test]
    fn concurrent_never_exceeds_limit() {
        const THREADS: usize = 4;
        const WINDOWS: usize = 20;
        const LIMIT: i64 = 500;
        const TRIES: usize = 300;
        let owner = Arc::new(Region::create(64, THREADS, 60).unwrap());
        QuotaTable::new(owner.clone()).set_limits("t", LIMIT, -1).unwrap();
        let barrier = Arc::new(Barrier::new(THREADS));
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let worker = QuotaTable::new(Arc::new(Region::attach(owner.fd()).unwrap()));
                let barrier = barrier.clone();
                thread::spawn(move || {
                    let mut allowed = vec![0i64; WINDOWS];
                    for (w, n) in allowed.iter_mut().enumerate() {
                        barrier.wait();
                        let now = 6000.0 + 60.0 * w as f64 + 1.0;
                        for _ in 0..TRIES {
                            *n += worker.try_acquire("t", now).unwrap().0 as i64;
                        }
                    }
                    allowed
                })
            })
            .collect();
        let mut per_window = vec![0i64; WINDOWS];
        for handle in handles {
            for (w, n) in handle.join().unwrap().into_iter().enumerate() {
                per_window[w] += n;
            }
        }
        assert!(per_window.iter().all(|&n| n == LIMIT), "{per_window:?}");
    }

    #[test]
    fn counts_saturate() {
        let (main, _) = pair(86400);
        main.set_limits("s", -1, -1).unwrap();
        let key = Key::new("s").unwrap();
        let (index, _) = keys::find(&main.region, &key).unwrap();
        let window = main.window_at(T0);
        main.region
            .entry(index)
            .window
            .store(pack(window, COUNT_MASK - 1), Ordering::Relaxed);
        assert_eq!(main.try_acquire("s", T0).unwrap(), (true, -1));
        assert_eq!(main.try_acquire("s", T0).unwrap(), (false, 0));
    }
}
