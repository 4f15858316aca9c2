//! The tenants a node's workers may serve: per tenant its serving state as the main process decides it
//! (flags, fencing epoch, released epoch, time limit, storage cap) and a generation, plus the node's
//! lease. Workers read it on every request, lock-free; only the main process (the region's owner)
//! writes it.
//!
//! The serving part of an entry is written under a seqlock (`seq`, odd while the owner writes), so a
//! reader gets one consistent state or tries again. The `generation` grows by one each time the
//! tenant starts or stops being served ([`FLAG_SERVING`] changes): a worker keeps a connection to the
//! tenant's database only for the generation it opened it under, and closes it once the generation
//! moved on (see [`super::acks`] for how the main process waits for that). Every stop also bumps the
//! header's `close_seq`, which idle workers poll with one load.
//!
//! The lease: [`LEASE_NONE`] (no control plane: serve), [`LEASE_NOT_JOINED`], [`LEASE_UNTIL`] (serve
//! while CLOCK_MONOTONIC is before `serve_until`), [`LEASE_FENCED`]. [`TableCore::lease_state`]
//! answers [`MAY_SERVE`], [`NOT_JOINED`] or [`LEASE_LOST`] for a moment.

use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use super::keys::{self, pause, Key, SPIN_LIMIT};
use super::region::{monotonic_ns, seconds_to_ns, Entry, NodeSharedMemory, Region, PRESENT_SERVING};

/// The flag bit the table itself understands; the others are the caller's.
pub const FLAG_SERVING: u64 = 1;

pub const LEASE_NONE: u64 = 0;
pub const LEASE_NOT_JOINED: u64 = 1;
pub const LEASE_UNTIL: u64 = 2;
pub const LEASE_FENCED: u64 = 3;

pub const MAY_SERVE: u64 = 0;
pub const NOT_JOINED: u64 = 1;
pub const LEASE_LOST: u64 = 2;

/// Indexes into [`Entry::load`].
pub const LOAD_JOBS: usize = 0;
pub const LOAD_REJECTED: usize = 1;
pub const LOAD_WAIT_US: usize = 2;
pub const LOAD_BUSY_US: usize = 3;
pub const LOAD_TIME_LIMITED: usize = 4;

/// One tenant's serving state as read from the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Serving {
    pub index: usize,
    pub generation: u64,
    pub flags: u64,
    pub epoch: u64,
    pub released: u64,
    pub time_limit_ms: i64,
    pub max_bytes: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableError {
    BadId,
    NotOwner,
    Full,
}

impl TableError {
    pub fn to_py(self) -> PyErr {
        match self {
            TableError::BadId => PyValueError::new_err("not a tenant id (1-63 bytes)"),
            TableError::NotOwner => {
                PyRuntimeError::new_err("only the process that created the node's shared memory may change it")
            }
            TableError::Full => PyRuntimeError::new_err("the node's shared tenant table is full"),
        }
    }
}

/// Read an entry's serving part whole: `(presence, Serving)` with `index` filled in by the caller.
pub(crate) fn read_serving(entry: &Entry, index: usize) -> Option<(u64, Serving)> {
    for tries in 0..SPIN_LIMIT {
        let before = entry.seq.load(Ordering::Acquire);
        if before & 1 == 1 {
            pause(tries);
            continue;
        }
        let presence = entry.presence.load(Ordering::Relaxed);
        let serving = Serving {
            index,
            generation: entry.generation.load(Ordering::Relaxed),
            flags: entry.flags.load(Ordering::Relaxed),
            epoch: entry.epoch.load(Ordering::Relaxed),
            released: entry.released.load(Ordering::Relaxed),
            time_limit_ms: entry.time_limit_ms.load(Ordering::Relaxed),
            max_bytes: entry.max_bytes.load(Ordering::Relaxed),
        };
        fence(Ordering::Acquire);
        if entry.seq.load(Ordering::Relaxed) == before {
            return Some((presence, serving));
        }
    }
    None
}

/// The serving state of `id` read whole from an entry that still belongs to it.
pub(crate) fn find_serving(region: &Region, key: &Key) -> Option<(Serving, u64)> {
    for _ in 0..8 {
        let (index, keyseq) = keys::find(region, key)?;
        let (presence, serving) = read_serving(region.entry(index), index)?;
        if !keys::same_key(region, index, keyseq) {
            continue; // freed and reused meanwhile: look again
        }
        return (presence & PRESENT_SERVING != 0).then_some((serving, keyseq));
    }
    None
}

pub struct TableCore {
    pub(crate) region: Arc<Region>,
}

impl TableCore {
    pub fn new(region: Arc<Region>) -> TableCore {
        TableCore { region }
    }

    /// Owner: set a tenant's serving state (adding its entry); returns its generation, which moved on
    /// if [`FLAG_SERVING`] changed.
    pub fn publish(
        &self,
        id: &str,
        flags: u64,
        epoch: u64,
        released: u64,
        time_limit_ms: i64,
        max_bytes: i64,
    ) -> Result<u64, TableError> {
        let key = Key::new(id).ok_or(TableError::BadId)?;
        let region = &*self.region;
        if !region.owner() {
            return Err(TableError::NotOwner);
        }
        let _writer = region.writer.lock();
        let (index, _) = keys::insert(region, &key, Entry::reset_payload).map_err(|_| TableError::Full)?;
        let entry = region.entry(index);
        let presence = entry.presence.load(Ordering::Relaxed);
        let was_serving = presence & PRESENT_SERVING != 0 && entry.flags.load(Ordering::Relaxed) & FLAG_SERVING != 0;
        let serving = flags & FLAG_SERVING != 0;
        let mut generation = entry.generation.load(Ordering::Relaxed);
        let seq = entry.seq.load(Ordering::Relaxed);
        entry.seq.store(seq + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        if was_serving != serving {
            generation += 1;
            entry.generation.store(generation, Ordering::Relaxed);
        }
        entry.flags.store(flags, Ordering::Relaxed);
        entry.epoch.store(epoch, Ordering::Relaxed);
        entry.released.store(released, Ordering::Relaxed);
        entry.time_limit_ms.store(time_limit_ms, Ordering::Relaxed);
        entry.max_bytes.store(max_bytes, Ordering::Relaxed);
        entry.presence.store(presence | PRESENT_SERVING, Ordering::Relaxed);
        entry.seq.store(seq + 2, Ordering::Release);
        let header = region.header();
        if presence & PRESENT_SERVING == 0 {
            header.serving_entries.fetch_add(1, Ordering::Relaxed);
        }
        if was_serving && !serving {
            header.close_seq.fetch_add(1, Ordering::SeqCst);
        }
        // Pairs with the fence in acks::hold: a worker either sees this state or is seen holding.
        fence(Ordering::SeqCst);
        Ok(generation)
    }

    /// Owner: forget a tenant's serving state (a tenant that was served stops, its generation moves
    /// on); its entry is freed unless its quota counters are kept. True when it had one.
    pub fn remove(&self, id: &str) -> Result<bool, TableError> {
        let key = Key::new(id).ok_or(TableError::BadId)?;
        let region = &*self.region;
        if !region.owner() {
            return Err(TableError::NotOwner);
        }
        let _writer = region.writer.lock();
        let Some((index, _)) = keys::find(region, &key) else {
            return Ok(false);
        };
        let entry = region.entry(index);
        let presence = entry.presence.load(Ordering::Relaxed);
        if presence & PRESENT_SERVING == 0 {
            return Ok(false);
        }
        let was_serving = entry.flags.load(Ordering::Relaxed) & FLAG_SERVING != 0;
        let seq = entry.seq.load(Ordering::Relaxed);
        entry.seq.store(seq + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        if was_serving {
            entry.generation.fetch_add(1, Ordering::Relaxed);
        }
        entry.flags.store(0, Ordering::Relaxed);
        entry.presence.store(presence & !PRESENT_SERVING, Ordering::Relaxed);
        entry.seq.store(seq + 2, Ordering::Release);
        let header = region.header();
        header.serving_entries.fetch_sub(1, Ordering::Relaxed);
        if was_serving {
            header.close_seq.fetch_add(1, Ordering::SeqCst);
        }
        if presence & !PRESENT_SERVING == 0 {
            keys::free(region, index);
        }
        fence(Ordering::SeqCst);
        Ok(true)
    }

    pub fn get(&self, id: &str) -> Option<Serving> {
        let key = Key::new(id)?;
        find_serving(&self.region, &key).map(|(serving, _)| serving)
    }

    /// [`TableCore::get`] for a request: also records that the tenant was used (at a 1 s grain, so a
    /// busy tenant's entry is written about once a second, not on every request).
    pub fn lookup(&self, id: &str) -> Option<Serving> {
        let serving = self.get(id)?;
        let entry = self.region.entry(serving.index);
        let now = monotonic_ns() / 1_000_000_000;
        if entry.last_used.load(Ordering::Relaxed) != now {
            entry.last_used.store(now, Ordering::Relaxed);
        }
        Some(serving)
    }

    /// Tenants with a serving state used at or after `since_ns` (CLOCK_MONOTONIC, 1 s grain).
    pub fn used_since(&self, since_ns: u64) -> Vec<String> {
        let since = since_ns / 1_000_000_000;
        keys::all(&self.region)
            .into_iter()
            .filter(|(index, _)| {
                let entry = self.region.entry(*index);
                entry.presence.load(Ordering::Relaxed) & PRESENT_SERVING != 0
                    && entry.last_used.load(Ordering::Relaxed) >= since
                    && entry.last_used.load(Ordering::Relaxed) > 0
            })
            .map(|(_, id)| id)
            .collect()
    }

    /// Add to a tenant's database load counters (any process); false when it has no entry.
    pub fn add_load(&self, id: &str, amounts: [u64; 5]) -> bool {
        let Some(key) = Key::new(id) else { return false };
        let Some((index, keyseq)) = keys::find(&self.region, &key) else {
            return false;
        };
        let entry = self.region.entry(index);
        for (counter, amount) in entry.load.iter().zip(amounts) {
            counter.fetch_add(amount, Ordering::Relaxed);
        }
        if !keys::same_key(&self.region, index, keyseq) {
            // Reused for another tenant meanwhile: take the amounts back out of its counters.
            for (counter, amount) in entry.load.iter().zip(amounts) {
                counter.fetch_sub(amount, Ordering::Relaxed);
            }
            return false;
        }
        true
    }

    /// Every entry's load counters.
    pub fn loads(&self) -> Vec<(String, [u64; 5])> {
        keys::all(&self.region)
            .into_iter()
            .map(|(index, id)| {
                let entry = self.region.entry(index);
                let mut amounts = [0u64; 5];
                for (amount, counter) in amounts.iter_mut().zip(entry.load.iter()) {
                    *amount = counter.load(Ordering::Relaxed);
                }
                (id, amounts)
            })
            .collect()
    }

    /// Tenants with a serving state.
    pub fn ids(&self) -> Vec<String> {
        keys::all(&self.region)
            .into_iter()
            .filter(|(index, _)| self.region.entry(*index).presence.load(Ordering::Relaxed) & PRESENT_SERVING != 0)
            .map(|(_, id)| id)
            .collect()
    }

    pub fn len(&self) -> usize {
        self.region.header().serving_entries.load(Ordering::Relaxed) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn set_lease(&self, state: u64, serve_until_ns: u64) {
        let header = self.region.header();
        header.serve_until_ns.store(serve_until_ns, Ordering::SeqCst); // before the state: see lease_state
        header.lease_state.store(state, Ordering::SeqCst);
    }

    pub fn lease_state(&self, now_ns: u64) -> u64 {
        let header = self.region.header();
        match header.lease_state.load(Ordering::SeqCst) {
            LEASE_NONE => MAY_SERVE,
            LEASE_NOT_JOINED => NOT_JOINED,
            LEASE_UNTIL if now_ns < header.serve_until_ns.load(Ordering::SeqCst) => MAY_SERVE,
            _ => LEASE_LOST,
        }
    }

    pub fn close_sequence(&self) -> u64 {
        self.region.header().close_seq.load(Ordering::Acquire)
    }
}

// ---------------------------------------------------------------------------------------------
// Python wrapper
// ---------------------------------------------------------------------------------------------

type ServingTuple = (usize, u64, u64, u64, u64, i64, i64);

fn as_tuple(s: Serving) -> ServingTuple {
    (
        s.index,
        s.generation,
        s.flags,
        s.epoch,
        s.released,
        s.time_limit_ms,
        s.max_bytes,
    )
}

/// The tenants the node's workers may serve, in its shared memory (see ``pbfast/_native.pyi``).
#[pyclass(module = "pbfast._native", name = "SharedTenantTable", frozen)]
pub struct SharedTenantTable {
    core: TableCore,
}

#[pymethods]
impl SharedTenantTable {
    #[new]
    fn py_new(memory: &NodeSharedMemory) -> Self {
        SharedTenantTable {
            core: TableCore::new(memory.region.clone()),
        }
    }

    /// Construction happens in ``__new__``; this no-op ``__init__`` only exists so that
    /// ``inspect.signature``/stubtest see the constructor's parameters on ``__init__`` (as in the stub).
    #[pyo3(signature = (*_args, **_kwargs))]
    fn __init__(&self, _args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) {}

    fn __len__(&self) -> usize {
        self.core.len()
    }

    fn __contains__(&self, tenant_id: &str) -> bool {
        self.core.get(tenant_id).is_some()
    }

    #[pyo3(
        signature = (tenant_id, flags, epoch, released = 0, time_limit_ms = -1, max_bytes = -1),
        text_signature = "($self, tenant_id, flags, epoch, released=0, time_limit_ms=-1, max_bytes=-1)"
    )]
    fn publish(
        &self,
        tenant_id: &str,
        flags: u64,
        epoch: u64,
        released: u64,
        time_limit_ms: i64,
        max_bytes: i64,
    ) -> PyResult<u64> {
        self.core
            .publish(tenant_id, flags, epoch, released, time_limit_ms, max_bytes)
            .map_err(TableError::to_py)
    }

    fn remove(&self, tenant_id: &str) -> PyResult<bool> {
        self.core.remove(tenant_id).map_err(TableError::to_py)
    }

    fn get(&self, tenant_id: &str) -> Option<ServingTuple> {
        self.core.get(tenant_id).map(as_tuple)
    }

    fn lookup(&self, tenant_id: &str) -> Option<ServingTuple> {
        self.core.lookup(tenant_id).map(as_tuple)
    }

    fn used_since(&self, since: f64) -> Vec<String> {
        self.core.used_since(seconds_to_ns(since))
    }

    fn add_load(
        &self,
        tenant_id: &str,
        jobs: u64,
        rejected: u64,
        wait_seconds: f64,
        busy_seconds: f64,
        time_limited: u64,
    ) -> bool {
        let micros = |s: f64| seconds_to_ns(s) / 1000;
        self.core.add_load(
            tenant_id,
            [jobs, rejected, micros(wait_seconds), micros(busy_seconds), time_limited],
        )
    }

    fn loads<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (id, [jobs, rejected, wait_us, busy_us, time_limited]) in self.core.loads() {
            d.set_item(
                id,
                (jobs, rejected, wait_us as f64 / 1e6, busy_us as f64 / 1e6, time_limited),
            )?;
        }
        Ok(d)
    }

    fn ids(&self) -> Vec<String> {
        self.core.ids()
    }

    #[pyo3(signature = (state, serve_until = 0.0))]
    fn set_lease(&self, state: u64, serve_until: f64) -> PyResult<()> {
        if state > LEASE_FENCED {
            return Err(PyValueError::new_err(format!("unknown lease state {state}")));
        }
        if !self.core.region.owner() {
            return Err(TableError::NotOwner.to_py());
        }
        self.core.set_lease(state, seconds_to_ns(serve_until));
        Ok(())
    }

    #[pyo3(signature = (now = None))]
    fn lease_state(&self, now: Option<f64>) -> u64 {
        self.core
            .lease_state(now.map(seconds_to_ns).unwrap_or_else(monotonic_ns))
    }

    #[getter]
    fn close_sequence(&self) -> u64 {
        self.core.close_sequence()
    }
}

// ---------------------------------------------------------------------------------------------
// Tests (pure Rust)
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    fn pair(capacity: usize) -> (TableCore, TableCore) {
        let owner = Arc::new(Region::create(capacity, 2, 86400).unwrap());
        let worker = Arc::new(Region::attach(owner.fd()).unwrap());
        (TableCore::new(owner), TableCore::new(worker))
    }

    #[test]
    fn publish_get_and_generations() {
        let (main, worker) = pair(64);
        assert_eq!(worker.get("acme"), None);
        let g0 = main.publish("acme", 0, 3, 0, -1, -1).unwrap();
        let seen = worker.get("acme").unwrap();
        assert_eq!((seen.generation, seen.flags, seen.epoch), (g0, 0, 3));
        let g1 = main.publish("acme", FLAG_SERVING | 4, 3, 2, 1500, 1 << 20).unwrap();
        assert_eq!(g1, g0 + 1, "starting to serve moves the generation on");
        let seen = worker.lookup("acme").unwrap();
        assert_eq!(
            seen,
            Serving {
                index: seen.index,
                generation: g1,
                flags: FLAG_SERVING | 4,
                epoch: 3,
                released: 2,
                time_limit_ms: 1500,
                max_bytes: 1 << 20
            }
        );
        assert_eq!(
            main.publish("acme", FLAG_SERVING, 4, 2, -1, -1).unwrap(),
            g1,
            "still serving: same generation"
        );
        let closes = worker.close_sequence();
        let g2 = main.publish("acme", 0, 4, 2, -1, -1).unwrap();
        assert_eq!(g2, g1 + 1);
        assert_eq!(worker.close_sequence(), closes + 1);
        assert_eq!(main.len(), 1);
        assert_eq!(worker.ids(), vec!["acme".to_string()]);
        assert!(main.remove("acme").unwrap());
        assert!(!main.remove("acme").unwrap());
        assert_eq!(worker.get("acme"), None);
        assert!(main.is_empty());
        // A tenant served again in a reused entry continues from a newer generation.
        let g3 = main.publish("other", FLAG_SERVING, 1, 0, -1, -1).unwrap();
        assert!(g3 > g2 || worker.get("other").unwrap().index != seen.index);
    }

    #[test]
    fn only_the_owner_writes() {
        let (_main, worker) = pair(64);
        assert_eq!(worker.publish("acme", 1, 1, 0, -1, -1), Err(TableError::NotOwner));
        assert_eq!(worker.remove("acme"), Err(TableError::NotOwner));
        let (main, _) = pair(64);
        assert_eq!(main.publish("", 1, 1, 0, -1, -1), Err(TableError::BadId));
    }

    #[test]
    fn lease() {
        let (main, worker) = pair(64);
        assert_eq!(worker.lease_state(10), MAY_SERVE);
        main.set_lease(LEASE_NOT_JOINED, 0);
        assert_eq!(worker.lease_state(10), NOT_JOINED);
        main.set_lease(LEASE_UNTIL, 1_000);
        assert_eq!(worker.lease_state(999), MAY_SERVE);
        assert_eq!(worker.lease_state(1_000), LEASE_LOST);
        main.set_lease(LEASE_FENCED, 5_000);
        assert_eq!(worker.lease_state(10), LEASE_LOST);
    }

    #[test]
    fn usage_and_loads() {
        let (main, worker) = pair(64);
        main.publish("a", FLAG_SERVING, 1, 0, -1, -1).unwrap();
        main.publish("b", FLAG_SERVING, 1, 0, -1, -1).unwrap();
        assert!(worker.used_since(0).is_empty(), "never used");
        worker.lookup("a").unwrap();
        assert_eq!(main.used_since(monotonic_ns() - 2_000_000_000), vec!["a".to_string()]);
        assert!(worker.add_load("a", [1, 0, 5, 7, 0]));
        assert!(worker.add_load("a", [1, 1, 5, 3, 1]));
        assert!(!worker.add_load("zzz", [1, 1, 1, 1, 1]));
        let loads = main.loads();
        assert!(loads.contains(&("a".to_string(), [2, 1, 10, 10, 1])));
        assert!(loads.contains(&("b".to_string(), [0; 5])));
    }

    /// A reader never sees a half-written state: every state the owner writes has epoch == released
    /// and time limit == epoch, so a torn read would show up as a mismatch.
    #[test]
    fn readers_never_see_torn_states() {
        let (main, worker) = pair(64);
        main.publish("hot", FLAG_SERVING, 0, 0, 0, 0).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut n = 1u64;
                while !stop.load(Ordering::Relaxed) {
                    main.publish("hot", FLAG_SERVING, n, n, n as i64, n as i64).unwrap();
                    n += 1;
                }
                n
            })
        };
        let mut last = 0;
        for _ in 0..300_000 {
            let s = worker.get("hot").unwrap();
            assert_eq!(s.epoch, s.released);
            assert_eq!(s.time_limit_ms, s.epoch as i64);
            assert_eq!(s.max_bytes, s.epoch as i64);
            assert!(s.epoch >= last, "states go forward");
            last = s.epoch;
        }
        stop.store(true, Ordering::Relaxed);
        assert!(writer.join().unwrap() > 1);
    }
}
