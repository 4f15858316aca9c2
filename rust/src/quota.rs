//! Per-tenant API request quotas over fixed windows, plus stored bytes.
//!
//! Core: [`QuotaCore`], a `RwLock<HashMap<tenant, Arc<Counters>>>` whose counters are atomics. The
//! hot path ([`QuotaCore::try_acquire`] for a known tenant) takes only the shared lock and never
//! blocks other callers; a CAS loop on the window count guarantees that concurrent callers never
//! admit more than the limit. Windows are aligned to multiples of `window_seconds` since the Unix
//! epoch. The Python wrapper [`QuotaCounters`] is frozen, Send + Sync and shareable across threads.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::RwLock;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

// ---------------------------------------------------------------------------------------------
// Core
// ---------------------------------------------------------------------------------------------

/// `window_start` value while one thread rolls a tenant's window over (resets its count).
const ROLLING: u64 = u64::MAX;
/// Clamp for `now`, so that a window start can never equal [`ROLLING`].
const MAX_SECS: u64 = u64::MAX / 2;

/// Wall clock as Unix seconds.
pub fn wall_clock() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// One tenant's limits and counts. Limits below 0 mean unlimited.
#[derive(Debug)]
pub struct Counters {
    api_limit: AtomicI64,
    storage_limit: AtomicI64,
    window_start: AtomicU64,
    window_count: AtomicU64,
    unreported: AtomicU64,
    storage: AtomicU64,
}

impl Counters {
    fn unlimited() -> Self {
        Counters {
            api_limit: AtomicI64::new(-1),
            storage_limit: AtomicI64::new(-1),
            window_start: AtomicU64::new(0),
            window_count: AtomicU64::new(0),
            unreported: AtomicU64::new(0),
            storage: AtomicU64::new(0),
        }
    }

    /// The stored window start, waiting out a concurrent roll-over.
    fn stored_window(&self) -> u64 {
        loop {
            let ws = self.window_start.load(Ordering::Acquire);
            if ws != ROLLING {
                return ws;
            }
            std::thread::yield_now();
        }
    }

    /// Make `current` the stored window (resetting the count) if the stored one is older; returns
    /// the stored window start, which may be newer than `current` (then the caller counts in it).
    fn roll_to(&self, current: u64) -> u64 {
        loop {
            let ws = self.stored_window();
            if ws >= current {
                return ws;
            }
            // Claim the roll-over: while ROLLING, nobody reads or bumps the count.
            if self
                .window_start
                .compare_exchange(ws, ROLLING, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                self.window_count.store(0, Ordering::Release);
                self.window_start.store(current, Ordering::Release);
                return current;
            }
        }
    }

    fn try_acquire(&self, current: u64) -> (bool, i64) {
        loop {
            let ws = self.roll_to(current);
            let limit = self.api_limit.load(Ordering::Acquire);
            let count = self.window_count.load(Ordering::Acquire);
            if self.window_start.load(Ordering::Acquire) != ws {
                continue; // rolled over between the loads: `count` may belong to another window
            }
            if limit >= 0 && count >= limit as u64 {
                return (false, 0);
            }
            if self
                .window_count
                .compare_exchange_weak(count, count + 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                self.unreported.fetch_add(1, Ordering::AcqRel);
                let remaining = if limit < 0 {
                    -1
                } else {
                    (limit - (count + 1) as i64).max(0)
                };
                return (true, remaining);
            }
        }
    }

    fn requests_in(&self, current: u64) -> u64 {
        loop {
            let ws = self.stored_window();
            let count = self.window_count.load(Ordering::Acquire);
            if self.window_start.load(Ordering::Acquire) == ws {
                return if ws == current { count } else { 0 };
            }
        }
    }
}

/// Per-tenant request windows and storage. Thread-safe; see the module docs.
#[derive(Debug)]
pub struct QuotaCore {
    window_seconds: u64,
    tenants: RwLock<HashMap<String, Arc<Counters>>>,
}

impl QuotaCore {
    /// Panics when `window_seconds` is 0 (the wrapper validates first).
    pub fn new(window_seconds: u64) -> Self {
        assert!(window_seconds >= 1, "window_seconds must be >= 1");
        QuotaCore {
            window_seconds,
            tenants: RwLock::new(HashMap::new()),
        }
    }

    pub fn window_seconds(&self) -> u64 {
        self.window_seconds
    }

    /// Start of the window containing `now` (Unix seconds; NaN and negatives count as 0).
    pub fn window_start_at(&self, now: f64) -> u64 {
        let secs = if now.is_nan() || now <= 0.0 {
            0
        } else if now >= MAX_SECS as f64 {
            MAX_SECS
        } else {
            now as u64
        };
        secs / self.window_seconds * self.window_seconds
    }

    pub fn len(&self) -> usize {
        self.tenants.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Run `f` on a tenant's counters, creating unlimited ones if needed. Only takes the shared lock
    /// when the tenant exists.
    fn with<R>(&self, id: &str, f: impl FnOnce(&Counters) -> R) -> R {
        {
            let map = self.tenants.read();
            if let Some(c) = map.get(id) {
                return f(c);
            }
        }
        let c = self
            .tenants
            .write()
            .entry(id.to_owned())
            .or_insert_with(|| Arc::new(Counters::unlimited()))
            .clone();
        f(&c)
    }

    fn with_existing<R>(&self, id: &str, f: impl FnOnce(&Counters) -> R) -> Option<R> {
        self.tenants.read().get(id).map(|c| f(c))
    }

    /// Set a tenant's limits (creating its counters); counts already made are kept.
    pub fn set_limits(&self, id: &str, api_requests: i64, storage_bytes: i64) {
        self.with(id, |c| {
            c.api_limit.store(api_requests, Ordering::Release);
            c.storage_limit.store(storage_bytes, Ordering::Release);
        })
    }

    /// Count one request at `now` if the window's limit allows it: `(allowed, remaining)`,
    /// remaining `-1` when unlimited, `(false, 0)` when denied (not counted).
    pub fn try_acquire(&self, id: &str, now: f64) -> (bool, i64) {
        let current = self.window_start_at(now);
        self.with(id, |c| c.try_acquire(current))
    }

    /// Add (or subtract) stored bytes, saturating at 0; returns the new total.
    pub fn add_storage(&self, id: &str, delta: i64) -> u64 {
        self.with(id, |c| {
            let apply = |cur: u64| (cur as i128 + delta as i128).clamp(0, u64::MAX as i128) as u64;
            let prev = c
                .storage
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |cur| Some(apply(cur)))
                .unwrap_or_else(|cur| cur);
            apply(prev)
        })
    }

    pub fn set_storage(&self, id: &str, total: u64) {
        self.with(id, |c| c.storage.store(total, Ordering::Release))
    }

    /// True when `extra` more bytes keep the tenant within its storage limit (unknown: true).
    pub fn storage_allows(&self, id: &str, extra: i64) -> bool {
        self.with_existing(id, |c| {
            let limit = c.storage_limit.load(Ordering::Acquire);
            limit < 0 || c.storage.load(Ordering::Acquire) as i128 + extra as i128 <= limit as i128
        })
        .unwrap_or(true)
    }

    /// `(requests_in_current_window, storage_bytes, window_start)` at `now`, None when unknown.
    pub fn usage(&self, id: &str, now: f64) -> Option<(u64, u64, u64)> {
        let current = self.window_start_at(now);
        self.with_existing(id, |c| {
            (
                c.requests_in(current),
                c.storage.load(Ordering::Acquire),
                current,
            )
        })
    }

    /// Per tenant `(requests since the last call, storage_bytes, window start at now)`; resets only
    /// the since-last-call counts.
    pub fn snapshot_and_reset(&self, now: f64) -> Vec<(String, (u64, u64, u64))> {
        let current = self.window_start_at(now);
        self.tenants
            .read()
            .iter()
            .map(|(id, c)| {
                (
                    id.clone(),
                    (
                        c.unreported.swap(0, Ordering::AcqRel),
                        c.storage.load(Ordering::Acquire),
                        current,
                    ),
                )
            })
            .collect()
    }

    pub fn remove(&self, id: &str) -> bool {
        self.tenants.write().remove(id).is_some()
    }
}

// ---------------------------------------------------------------------------------------------
// Python wrapper
// ---------------------------------------------------------------------------------------------

/// Per-tenant API request counters over fixed windows, plus storage bytes.
///
/// Windows are aligned to multiples of ``window_seconds`` since the Unix epoch (UTC days by default).
/// A limit below 0 means unlimited. Thread-safe (frozen, Send + Sync): ``try_acquire`` for an
/// existing tenant takes only a shared lock plus atomic operations.
#[pyclass(module = "pbfast._native", name = "QuotaCounters", frozen)]
pub struct QuotaCounters {
    core: QuotaCore,
}

#[pymethods]
impl QuotaCounters {
    #[new]
    #[pyo3(signature = (window_seconds = 86400))]
    fn py_new(window_seconds: i64) -> PyResult<Self> {
        if window_seconds < 1 {
            return Err(PyValueError::new_err(format!(
                "window_seconds must be >= 1, got {window_seconds}"
            )));
        }
        Ok(QuotaCounters {
            core: QuotaCore::new(window_seconds as u64),
        })
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

    /// Set a tenant's limits (creating its counters); counts already made are kept.
    // pyo3 renders negative defaults as `...` in the generated text signature; spell it out.
    #[pyo3(
        signature = (tenant_id, api_requests = -1, storage_bytes = -1),
        text_signature = "($self, tenant_id, api_requests=-1, storage_bytes=-1)"
    )]
    fn set_limits(&self, tenant_id: &str, api_requests: i64, storage_bytes: i64) {
        self.core.set_limits(tenant_id, api_requests, storage_bytes)
    }

    /// Count one API request if the window's limit allows it: ``(allowed, remaining)``.
    #[pyo3(signature = (tenant_id, now = None))]
    fn try_acquire(&self, tenant_id: &str, now: Option<f64>) -> (bool, i64) {
        self.core
            .try_acquire(tenant_id, now.unwrap_or_else(wall_clock))
    }

    /// Add (or subtract) stored bytes, never going below 0; returns the new total.
    fn add_storage(&self, tenant_id: &str, delta_bytes: i64) -> u64 {
        self.core.add_storage(tenant_id, delta_bytes)
    }

    /// Set stored bytes (negative values count as 0).
    fn set_storage(&self, tenant_id: &str, total_bytes: i64) {
        self.core.set_storage(tenant_id, total_bytes.max(0) as u64)
    }

    /// True when storing ``extra_bytes`` more keeps the tenant within its storage limit.
    fn storage_allows(&self, tenant_id: &str, extra_bytes: i64) -> bool {
        self.core.storage_allows(tenant_id, extra_bytes)
    }

    /// ``(requests_in_current_window, storage_bytes, window_start_unix)`` or None when unknown.
    #[pyo3(signature = (tenant_id, now = None))]
    fn usage(&self, tenant_id: &str, now: Option<f64>) -> Option<(u64, u64, u64)> {
        self.core.usage(tenant_id, now.unwrap_or_else(wall_clock))
    }

    /// Per tenant ``(requests_since_last_snapshot, storage_bytes, window_start_unix)``.
    fn snapshot_and_reset<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let rows = self.core.snapshot_and_reset(wall_clock());
        let d = PyDict::new(py);
        for (id, v) in rows {
            d.set_item(id, v)?;
        }
        Ok(d)
    }

    fn remove(&self, tenant_id: &str) -> bool {
        self.core.remove(tenant_id)
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

    const DAY: f64 = 86400.0;
    const T0: f64 = 1_700_000_000.5; // inside the window starting at 1_699_920_000

    #[test]
    fn window_alignment() {
        let q = QuotaCore::new(86400);
        assert_eq!(q.window_start_at(T0), 1_699_920_000);
        assert_eq!(q.window_start_at(1_699_920_000.0), 1_699_920_000);
        assert_eq!(q.window_start_at(1_699_919_999.9), 1_699_833_600);
        assert_eq!(q.window_start_at(-5.0), 0);
        assert_eq!(q.window_start_at(f64::NAN), 0);
        assert!(q.window_start_at(f64::INFINITY) < ROLLING);
        let q = QuotaCore::new(60);
        assert_eq!(q.window_start_at(125.9), 120);
    }

    #[test]
    fn limits_and_windows() {
        let q = QuotaCore::new(86400);
        q.set_limits("a", 3, -1);
        assert_eq!(q.try_acquire("a", T0), (true, 2));
        assert_eq!(q.try_acquire("a", T0), (true, 1));
        assert_eq!(q.try_acquire("a", T0), (true, 0));
        assert_eq!(q.try_acquire("a", T0), (false, 0));
        assert_eq!(q.usage("a", T0), Some((3, 0, 1_699_920_000)));
        // Next window resets the count.
        assert_eq!(q.usage("a", T0 + DAY), Some((0, 0, 1_700_006_400)));
        assert_eq!(q.try_acquire("a", T0 + DAY), (true, 2));
        // A caller still in the old window counts in the stored (newer) one.
        assert_eq!(q.try_acquire("a", T0), (true, 1));
        assert_eq!(q.usage("a", T0 + DAY), Some((2, 0, 1_700_006_400)));
        assert_eq!(
            q.usage("a", T0),
            Some((0, 0, 1_699_920_000)),
            "not the stored window"
        );
        // Raising the limit keeps counts; lowering below the count denies.
        q.set_limits("a", 10, -1);
        assert_eq!(q.try_acquire("a", T0 + DAY), (true, 7));
        q.set_limits("a", 1, -1);
        assert_eq!(q.try_acquire("a", T0 + DAY), (false, 0));
        // Limit 0 denies all.
        q.set_limits("z", 0, -1);
        assert_eq!(q.try_acquire("z", T0), (false, 0));
        assert_eq!(q.usage("z", T0), Some((0, 0, 1_699_920_000)));
    }

    #[test]
    fn unknown_tenants_are_unlimited() {
        let q = QuotaCore::new(86400);
        assert!(q.is_empty());
        assert_eq!(q.usage("n", T0), None);
        assert!(q.storage_allows("n", i64::MAX));
        assert_eq!(q.len(), 0, "queries do not create tenants");
        assert_eq!(q.try_acquire("n", T0), (true, -1));
        assert_eq!(q.try_acquire("n", T0), (true, -1));
        assert_eq!(q.len(), 1);
        assert_eq!(q.usage("n", T0), Some((2, 0, 1_699_920_000)));
        assert!(q.remove("n"));
        assert!(!q.remove("n"));
        assert!(q.is_empty());
    }

    #[test]
    fn storage() {
        let q = QuotaCore::new(86400);
        assert_eq!(q.add_storage("s", 100), 100);
        assert_eq!(q.add_storage("s", -30), 70);
        assert_eq!(q.add_storage("s", -1000), 0);
        assert_eq!(q.add_storage("s", i64::MAX), i64::MAX as u64);
        assert_eq!(q.add_storage("s", i64::MAX), u64::MAX - 1);
        assert_eq!(q.add_storage("s", i64::MAX), u64::MAX);
        q.set_storage("s", 50);
        assert!(q.storage_allows("s", 1 << 40), "unlimited");
        q.set_limits("s", -1, 60);
        assert!(q.storage_allows("s", 10));
        assert!(!q.storage_allows("s", 11));
        assert!(q.storage_allows("s", -100));
        q.set_limits("s", -1, 0);
        assert!(!q.storage_allows("s", 0));
        assert_eq!(q.usage("s", T0), Some((0, 50, 1_699_920_000)));
    }

    #[test]
    fn snapshot_resets_only_unreported() {
        let q = QuotaCore::new(86400);
        q.set_limits("a", 5, -1);
        q.try_acquire("a", T0);
        q.try_acquire("a", T0);
        q.try_acquire("b", T0);
        q.add_storage("b", 7);
        let mut s = q.snapshot_and_reset(T0);
        s.sort();
        assert_eq!(
            s,
            vec![
                ("a".to_string(), (2, 0, 1_699_920_000)),
                ("b".to_string(), (1, 7, 1_699_920_000))
            ]
        );
        let s = q.snapshot_and_reset(T0);
        assert!(s.iter().all(|(_, (n, _, _))| *n == 0));
        assert_eq!(q.usage("a", T0), Some((2, 0, 1_699_920_000)));
        assert_eq!(q.try_acquire("a", T0), (true, 2));
        // Denied requests are not reported either.
        q.set_limits("a", 0, -1);
        q.try_acquire("a", T0);
        let s = q.snapshot_and_reset(T0 + 3.0 * DAY);
        assert!(s.contains(&("a".to_string(), (1, 0, 1_700_179_200))));
    }

    /// Concurrent callers never admit more than the limit, including across window roll-overs.
    #[test]
    fn concurrent_never_exceeds_limit() {
        const THREADS: usize = 8;
        const WINDOWS: usize = 20;
        const LIMIT: i64 = 500;
        const TRIES: usize = 200; // per thread per window: 1600 tries > LIMIT
        let q = Arc::new(QuotaCore::new(60));
        q.set_limits("t", LIMIT, -1);
        let barrier = Arc::new(Barrier::new(THREADS));
        let hs: Vec<_> = (0..THREADS)
            .map(|_| {
                let q = q.clone();
                let barrier = barrier.clone();
                thread::spawn(move || {
                    let mut allowed = vec![0i64; WINDOWS];
                    for (w, n) in allowed.iter_mut().enumerate() {
                        barrier.wait();
                        let now = 6000.0 + 60.0 * w as f64 + 1.0;
                        for _ in 0..TRIES {
                            let (ok, rem) = q.try_acquire("t", now);
                            assert!((0..LIMIT).contains(&rem) || (!ok && rem == 0));
                            *n += ok as i64;
                        }
                    }
                    allowed
                })
            })
            .collect();
        let mut per_window = vec![0i64; WINDOWS];
        for h in hs {
            for (w, n) in h.join().unwrap().into_iter().enumerate() {
                per_window[w] += n;
            }
        }
        assert!(per_window.iter().all(|&n| n == LIMIT), "{per_window:?}");
        let (_, (reported, _, _)) = q.snapshot_and_reset(0.0).pop().unwrap();
        assert_eq!(reported, LIMIT as u64 * WINDOWS as u64);
    }

    /// New tenants created concurrently end up as one entry with every request counted.
    #[test]
    fn concurrent_creation() {
        let q = Arc::new(QuotaCore::new(86400));
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let q = q.clone();
                thread::spawn(move || {
                    for i in 0..1000 {
                        q.try_acquire(&format!("t{}", i % 10), T0);
                        q.add_storage("s", 1);
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(q.len(), 11);
        assert_eq!(q.usage("t3", T0).unwrap().0, 400);
        assert_eq!(q.usage("s", T0).unwrap().1, 4000);
    }
}
