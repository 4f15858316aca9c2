//! LRU of open tenants with pinning.
//!
//! Core: [`LruCore`], a map tenant -> `{seq, pins, last_used}` plus a `BTreeMap<seq, tenant>` giving
//! least-recently-used order (`seq` grows with every acquire), so each operation is O(log n).
//! Pinned tenants (serving a request) are never evicted; when everything is pinned the cache goes
//! over capacity until pins are released. The Python wrapper [`TenantCache`] puts the core behind
//! one mutex (frozen, Send + Sync); no Python code runs while it is held.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use parking_lot::Mutex;
use pyo3::exceptions::{PyKeyError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

// ---------------------------------------------------------------------------------------------
// Core
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
struct Entry {
    seq: u64,
    pins: u32,
    last_used: Instant,
}

/// Why [`LruCore::release`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseError {
    NotPresent,
    NotPinned,
}

/// LRU with pins (not synchronised; see [`TenantCache`]).
#[derive(Debug)]
pub struct LruCore {
    capacity: usize,
    next_seq: u64,
    map: HashMap<String, Entry>,
    order: BTreeMap<u64, String>,
}

impl LruCore {
    /// Panics when `capacity` is 0 (the wrapper validates first).
    pub fn new(capacity: usize) -> Self {
        assert!(capacity >= 1, "capacity must be >= 1");
        LruCore {
            capacity,
            next_seq: 0,
            map: HashMap::new(),
            order: BTreeMap::new(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn contains(&self, id: &str) -> bool {
        self.map.contains_key(id)
    }

    pub fn pins(&self, id: &str) -> u32 {
        self.map.get(id).map_or(0, |e| e.pins)
    }

    /// Mark `id` most recently used and pin it once (adding it if absent). Returns
    /// `(was_present, evicted)`, evicted least recently used first.
    pub fn acquire(&mut self, id: &str, now: Instant) -> (bool, Vec<String>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let was_present = match self.map.get_mut(id) {
            Some(e) => {
                self.order.remove(&e.seq);
                e.seq = seq;
                e.pins = e.pins.saturating_add(1);
                e.last_used = now;
                true
            }
            None => {
                self.map.insert(
                    id.to_owned(),
                    Entry {
                        seq,
                        pins: 1,
                        last_used: now,
                    },
                );
                false
            }
        };
        self.order.insert(seq, id.to_owned());
        (was_present, self.evict_over_capacity())
    }

    /// Drop one pin; returns ids evicted now that more tenants are evictable.
    pub fn release(&mut self, id: &str) -> Result<Vec<String>, ReleaseError> {
        let e = self.map.get_mut(id).ok_or(ReleaseError::NotPresent)?;
        if e.pins == 0 {
            return Err(ReleaseError::NotPinned);
        }
        e.pins -= 1;
        Ok(self.evict_over_capacity())
    }

    /// Forget `id` even if pinned; true when it was present.
    pub fn remove(&mut self, id: &str) -> bool {
        match self.map.remove(id) {
            Some(e) => {
                self.order.remove(&e.seq);
                true
            }
            None => false,
        }
    }

    /// Remove and return (least recently used first) unpinned tenants whose last acquire was at
    /// least `idle_seconds` before `now`. NaN removes nothing; values <= 0 remove every unpinned one.
    pub fn evict_idle(&mut self, idle_seconds: f64, now: Instant) -> Vec<String> {
        let victims: Vec<(u64, String)> = self
            .order
            .iter()
            .filter(|(_, id)| {
                let e = &self.map[id.as_str()];
                e.pins == 0
                    && now.saturating_duration_since(e.last_used).as_secs_f64() >= idle_seconds
            })
            .map(|(s, id)| (*s, id.clone()))
            .collect();
        self.take(victims)
    }

    /// Tenant ids, least recently used first.
    pub fn ids(&self) -> Vec<String> {
        self.order.values().cloned().collect()
    }

    fn evict_over_capacity(&mut self) -> Vec<String> {
        let excess = self.map.len().saturating_sub(self.capacity);
        if excess == 0 {
            return Vec::new();
        }
        let victims: Vec<(u64, String)> = self
            .order
            .iter()
            .filter(|(_, id)| self.map[id.as_str()].pins == 0)
            .take(excess)
            .map(|(s, id)| (*s, id.clone()))
            .collect();
        self.take(victims)
    }

    fn take(&mut self, victims: Vec<(u64, String)>) -> Vec<String> {
        victims
            .into_iter()
            .map(|(seq, id)| {
                self.order.remove(&seq);
                self.map.remove(&id);
                id
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Python wrapper
// ---------------------------------------------------------------------------------------------

/// LRU of open tenant ids with a capacity; pinned tenants (serving a request) are never evicted.
///
/// When every tenant is pinned the cache may go over capacity; the excess is evicted as soon as
/// pins are released. Thread-safe (frozen, Send + Sync; one internal mutex, O(log n) per call).
#[pyclass(module = "pbfast._native", name = "TenantCache", frozen)]
pub struct TenantCache {
    inner: Mutex<LruCore>,
}

#[pymethods]
impl TenantCache {
    #[new]
    fn py_new(capacity: i64) -> PyResult<Self> {
        if capacity < 1 {
            return Err(PyValueError::new_err(format!(
                "capacity must be >= 1, got {capacity}"
            )));
        }
        let capacity = usize::try_from(capacity).unwrap_or(usize::MAX);
        Ok(TenantCache {
            inner: Mutex::new(LruCore::new(capacity)),
        })
    }

    /// Construction happens in ``__new__``; this no-op ``__init__`` only exists so that
    /// ``inspect.signature``/stubtest see the constructor's parameters on ``__init__`` (as in the stub).
    #[pyo3(signature = (*_args, **_kwargs))]
    fn __init__(&self, _args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) {}

    #[getter]
    fn capacity(&self) -> usize {
        self.inner.lock().capacity()
    }

    fn __len__(&self) -> usize {
        self.inner.lock().len()
    }

    fn __contains__(&self, tenant_id: &str) -> bool {
        self.inner.lock().contains(tenant_id)
    }

    /// Mark the tenant most recently used and pin it once (adding it if absent).
    /// Returns ``(was_open, evicted_ids)``, evicted least recently used first.
    fn acquire(&self, tenant_id: &str) -> (bool, Vec<String>) {
        self.inner.lock().acquire(tenant_id, Instant::now())
    }

    /// Drop one pin; returns ids evicted now. KeyError when absent or not pinned.
    fn release(&self, tenant_id: &str) -> PyResult<Vec<String>> {
        let r = self.inner.lock().release(tenant_id);
        // KeyError(tenant_id), like a dict lookup (and like `pbfast.reference`).
        r.map_err(|_| PyKeyError::new_err(tenant_id.to_owned()))
    }

    /// Current pin count (0 when absent).
    fn pins(&self, tenant_id: &str) -> u32 {
        self.inner.lock().pins(tenant_id)
    }

    /// Forget a tenant even if pinned; True when it was present.
    fn remove(&self, tenant_id: &str) -> bool {
        self.inner.lock().remove(tenant_id)
    }

    /// Remove and return unpinned tenants not acquired for at least ``idle_seconds``.
    fn evict_idle(&self, idle_seconds: f64) -> Vec<String> {
        self.inner.lock().evict_idle(idle_seconds, Instant::now())
    }

    /// Tenant ids from least to most recently used.
    fn ids(&self) -> Vec<String> {
        self.inner.lock().ids()
    }
}

// ---------------------------------------------------------------------------------------------
// Tests (pure Rust)
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::thread;
    use std::time::Duration;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn lru_order_and_eviction() {
        let t = Instant::now();
        let mut c = LruCore::new(2);
        assert_eq!(c.acquire("a", t), (false, vec![]));
        c.release("a").unwrap();
        assert_eq!(c.acquire("b", t), (false, vec![]));
        c.release("b").unwrap();
        assert_eq!(c.ids(), s(&["a", "b"]));
        // Re-acquire a: now b is least recent.
        assert_eq!(c.acquire("a", t), (true, vec![]));
        c.release("a").unwrap();
        assert_eq!(c.ids(), s(&["b", "a"]));
        assert_eq!(c.acquire("c", t), (false, s(&["b"])));
        assert_eq!(c.ids(), s(&["a", "c"]));
        assert!(!c.contains("b"));
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn pinned_never_evicted() {
        let t = Instant::now();
        let mut c = LruCore::new(2);
        c.acquire("a", t);
        c.acquire("b", t);
        assert_eq!(
            c.acquire("c", t),
            (false, vec![]),
            "all pinned: over capacity"
        );
        assert_eq!(c.len(), 3);
        assert_eq!(c.pins("a"), 1);
        c.acquire("a", t);
        assert_eq!(c.pins("a"), 2);
        // c is the only unpinned entry and the cache is over capacity: it goes, although most recent.
        assert_eq!(c.release("c"), Ok(s(&["c"])));
        assert_eq!(c.ids(), s(&["b", "a"]));
    }

    #[test]
    fn release_evicts_excess() {
        let t = Instant::now();
        let mut c = LruCore::new(2);
        c.acquire("a", t);
        c.acquire("b", t);
        c.acquire("c", t);
        assert_eq!(c.release("b"), Ok(s(&["b"])));
        assert_eq!(c.ids(), s(&["a", "c"]));
        assert_eq!(c.release("a"), Ok(vec![]));
        assert_eq!(c.release("a"), Err(ReleaseError::NotPinned));
        assert_eq!(c.release("zz"), Err(ReleaseError::NotPresent));
        assert_eq!(c.pins("zz"), 0);
    }

    #[test]
    fn evicts_lru_first_several() {
        let t = Instant::now();
        let mut c = LruCore::new(3);
        for id in ["a", "b", "c", "d", "e"] {
            c.acquire(id, t);
        }
        // All pinned: 5 entries. Unpin in another order; eviction follows LRU order.
        assert_eq!(c.release("d"), Ok(s(&["d"])));
        c.acquire("f", t); // 5 entries again: a b c e f, all pinned
        assert_eq!(c.release("e"), Ok(s(&["e"])));
        assert_eq!(c.len(), 4);
        c.release("c").unwrap();
        assert_eq!(c.ids(), s(&["a", "b", "f"]));
    }

    #[test]
    fn remove_even_if_pinned() {
        let t = Instant::now();
        let mut c = LruCore::new(1);
        c.acquire("a", t);
        assert!(c.remove("a"));
        assert!(!c.remove("a"));
        assert!(c.is_empty());
        assert!(c.ids().is_empty());
        assert_eq!(c.release("a"), Err(ReleaseError::NotPresent));
    }

    #[test]
    fn idle_eviction() {
        let t0 = Instant::now();
        let mut c = LruCore::new(10);
        c.acquire("a", t0);
        c.acquire("b", t0 + Duration::from_secs(5));
        c.acquire("c", t0 + Duration::from_secs(1));
        c.release("a").unwrap();
        c.release("b").unwrap();
        // c stays pinned.
        let now = t0 + Duration::from_secs(10);
        assert_eq!(c.evict_idle(f64::NAN, now), Vec::<String>::new());
        assert_eq!(c.evict_idle(20.0, now), Vec::<String>::new());
        assert_eq!(c.evict_idle(10.0, now), s(&["a"]), "at least idle_seconds");
        assert_eq!(c.evict_idle(0.0, now), s(&["b"]));
        c.release("c").unwrap();
        assert_eq!(c.evict_idle(-1.0, now), s(&["c"]));
        assert!(c.is_empty());
    }

    #[test]
    fn concurrent_use_through_mutex() {
        let cache = Arc::new(Mutex::new(LruCore::new(8)));
        let hs: Vec<_> = (0..4)
            .map(|w| {
                let cache = cache.clone();
                thread::spawn(move || {
                    for i in 0..2000 {
                        let id = format!("t{}", (i * 7 + w) % 20);
                        cache.lock().acquire(&id, Instant::now());
                        cache.lock().release(&id).unwrap();
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        let c = cache.lock();
        assert!(c.len() <= 8);
        assert!(c.ids().iter().all(|id| c.pins(id) == 0));
    }
}
