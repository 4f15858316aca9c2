//! Which worker holds a connection to which tenant's database: one word per worker and entry, the
//! serving generation the worker opened it under (0: none). A worker *holds* before it opens and
//! *releases* once it closed; the main process, having stopped serving a tenant (its generation moved
//! on, [`super::tenant_table`]), waits until no worker holds it before it ships the tenant's final
//! state or lets another node write it.
//!
//! The two sides meet as in Dekker's algorithm: the worker stores its hold, then (after a full fence)
//! reads the tenant's state; the main process stores the new state, then (after a full fence) reads
//! the holds. So either the worker sees that the tenant is no longer served and withdraws its hold, or
//! the main process sees the hold and waits for its release: never both miss each other.

use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use super::keys::{self, Key};
use super::region::{NodeSharedMemory, Region, PRESENT_SERVING};
use super::tenant_table::{read_serving, FLAG_SERVING};

pub struct AckCore {
    region: Arc<Region>,
}

impl AckCore {
    pub fn new(region: Arc<Region>) -> AckCore {
        AckCore { region }
    }

    /// Worker `worker` holds tenant `id` under `generation`: the entry's index if the tenant is still
    /// served under it (the worker may use its connection until it releases), else None (not held).
    pub fn hold(&self, worker: usize, id: &str, generation: u64) -> Option<usize> {
        let key = Key::new(id)?;
        let (index, keyseq) = keys::find(&self.region, &key)?;
        let word = self.region.hold(worker, index);
        word.store(generation, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let still = read_serving(self.region.entry(index), index).is_some_and(|(presence, serving)| {
            presence & PRESENT_SERVING != 0 && serving.flags & FLAG_SERVING != 0 && serving.generation == generation
        }) && keys::same_key(&self.region, index, keyseq);
        if still {
            return Some(index);
        }
        let _ = word.compare_exchange(generation, 0, Ordering::SeqCst, Ordering::SeqCst);
        None
    }

    /// Worker `worker` closed its connection opened under `generation` at entry `index`.
    pub fn release(&self, worker: usize, index: usize, generation: u64) -> bool {
        self.region
            .hold(worker, index)
            .compare_exchange(generation, 0, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// The workers holding entry `index` now.
    pub fn holders_at(&self, index: usize) -> Vec<usize> {
        fence(Ordering::SeqCst);
        (0..self.region.workers())
            .filter(|&worker| self.region.hold(worker, index).load(Ordering::SeqCst) != 0)
            .collect()
    }

    /// The workers holding tenant `id` now (none when it has no entry).
    pub fn holders(&self, id: &str) -> Vec<usize> {
        let Some(key) = Key::new(id) else { return Vec::new() };
        match keys::find(&self.region, &key) {
            Some((index, _)) => self.holders_at(index),
            None => Vec::new(),
        }
    }

    /// Every hold of a worker: `(index, generation)`.
    pub fn held(&self, worker: usize) -> Vec<(usize, u64)> {
        (0..self.region.capacity())
            .filter_map(|index| {
                let generation = self.region.hold(worker, index).load(Ordering::SeqCst);
                (generation != 0).then_some((index, generation))
            })
            .collect()
    }

    /// Drop every hold of a worker that is gone (its connections died with it); how many it had.
    pub fn clear(&self, worker: usize) -> usize {
        let mut cleared = 0;
        for index in 0..self.region.capacity() {
            if self.region.hold(worker, index).swap(0, Ordering::SeqCst) != 0 {
                cleared += 1;
            }
        }
        cleared
    }
}

// ---------------------------------------------------------------------------------------------
// Python wrapper
// ---------------------------------------------------------------------------------------------

/// Which worker holds which tenant's connection, in the node's shared memory (see ``pbfast/_native.pyi``).
#[pyclass(module = "pbfast._native", name = "WorkerAcks", frozen)]
pub struct WorkerAcks {
    core: AckCore,
}

impl WorkerAcks {
    fn worker(&self, worker: i64) -> PyResult<usize> {
        usize::try_from(worker)
            .ok()
            .filter(|&w| w < self.core.region.workers())
            .ok_or_else(|| PyValueError::new_err(format!("no worker {worker}")))
    }
}

#[pymethods]
impl WorkerAcks {
    #[new]
    fn py_new(memory: &NodeSharedMemory) -> Self {
        WorkerAcks {
            core: AckCore::new(memory.region.clone()),
        }
    }

    /// Construction happens in ``__new__``; this no-op ``__init__`` only exists so that
    /// ``inspect.signature``/stubtest see the constructor's parameters on ``__init__`` (as in the stub).
    #[pyo3(signature = (*_args, **_kwargs))]
    fn __init__(&self, _args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) {}

    fn hold(&self, worker: i64, tenant_id: &str, generation: u64) -> PyResult<Option<usize>> {
        if generation == 0 {
            return Err(PyValueError::new_err("generation 0 means no hold"));
        }
        Ok(self.core.hold(self.worker(worker)?, tenant_id, generation))
    }

    fn release(&self, worker: i64, index: usize, generation: u64) -> PyResult<bool> {
        if index >= self.core.region.capacity() {
            return Err(PyValueError::new_err(format!("no entry {index}")));
        }
        Ok(self.core.release(self.worker(worker)?, index, generation))
    }

    fn holders(&self, tenant_id: &str) -> Vec<usize> {
        self.core.holders(tenant_id)
    }

    fn held(&self, worker: i64) -> PyResult<Vec<(usize, u64)>> {
        Ok(self.core.held(self.worker(worker)?))
    }

    fn clear(&self, worker: i64) -> PyResult<usize> {
        Ok(self.core.clear(self.worker(worker)?))
    }
}

// ---------------------------------------------------------------------------------------------
// Tests (pure Rust)
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node_shm::tenant_table::TableCore;
    use std::sync::atomic::{AtomicBool, AtomicU64};

    #[test]
    fn hold_release_holders() {
        let owner = Arc::new(Region::create(64, 3, 86400).unwrap());
        let table = TableCore::new(owner.clone());
        let worker_side = Arc::new(Region::attach(owner.fd()).unwrap());
        let acks = AckCore::new(worker_side);
        let main_acks = AckCore::new(owner.clone());
        assert_eq!(acks.hold(0, "acme", 1), None, "unknown tenant");
        let generation = table.publish("acme", FLAG_SERVING, 1, 0, -1, -1).unwrap();
        assert_eq!(acks.hold(1, "acme", generation + 1), None, "not the serving generation");
        assert!(main_acks.holders("acme").is_empty());
        let index = acks.hold(1, "acme", generation).unwrap();
        let index2 = acks.hold(2, "acme", generation).unwrap();
        assert_eq!(index, index2);
        assert_eq!(main_acks.holders("acme"), vec![1, 2]);
        assert_eq!(acks.held(1), vec![(index, generation)]);
        let closed = table.publish("acme", 0, 1, 0, -1, -1).unwrap();
        assert_eq!(acks.hold(0, "acme", generation), None, "no new hold once it stopped");
        assert_eq!(
            main_acks.holders("acme"),
            vec![1, 2],
            "the old ones stay until released"
        );
        assert!(acks.release(1, index, generation));
        assert!(!acks.release(1, index, generation), "once");
        assert!(!acks.release(2, index, closed), "only the generation held");
        assert_eq!(main_acks.clear(2), 1);
        assert!(main_acks.holders("acme").is_empty());
    }

    /// Under a storm of holds and closes, a close never misses a worker that went on to use the
    /// tenant: every hold that succeeded is either seen by the closer or made under a later generation.
    #[test]
    fn a_close_never_misses_a_successful_hold() {
        let owner = Arc::new(Region::create(64, 2, 86400).unwrap());
        let table = Arc::new(TableCore::new(owner.clone()));
        let main_acks = AckCore::new(owner.clone());
        let generation = Arc::new(AtomicU64::new(table.publish("t", FLAG_SERVING, 1, 0, -1, -1).unwrap()));
        let stop = Arc::new(AtomicBool::new(false));
        let in_use = Arc::new(AtomicU64::new(0)); // the generation the worker uses now (0: none)
        let uses = Arc::new(AtomicU64::new(0)); // successful holds so far
        let worker = {
            let acks = AckCore::new(Arc::new(Region::attach(owner.fd()).unwrap()));
            let table = TableCore::new(Arc::new(Region::attach(owner.fd()).unwrap()));
            let stop = stop.clone();
            let in_use = in_use.clone();
            let uses = uses.clone();
            std::thread::spawn(move || {
                let mut used = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let Some(seen) = table.get("t") else { continue };
                    if seen.flags & FLAG_SERVING == 0 {
                        continue;
                    }
                    if let Some(index) = acks.hold(0, "t", seen.generation) {
                        in_use.store(seen.generation, Ordering::SeqCst);
                        used += 1;
                        uses.fetch_add(1, Ordering::Relaxed);
                        in_use.store(0, Ordering::SeqCst);
                        acks.release(0, index, seen.generation);
                    }
                }
                used
            })
        };
        // At least 20,000 closes, and on until the worker has held the tenant a few times: on a
        // loaded machine the worker thread may not be scheduled before the closes are done.
        let started = std::time::Instant::now();
        let mut closes = 0u64;
        while closes < 20_000
            || (uses.load(Ordering::Relaxed) < 100 && started.elapsed().as_secs() < 30)
        {
            closes += 1;
            let closed = generation.load(Ordering::Relaxed);
            table.publish("t", 0, 1, 0, -1, -1).unwrap();
            // Wait until nobody holds it; from then on nobody may use the closed generation.
            while !main_acks.holders("t").is_empty() {
                std::hint::spin_loop();
            }
            assert_ne!(
                in_use.load(Ordering::SeqCst),
                closed,
                "a worker used a tenant the main closed"
            );
            generation.store(
                table.publish("t", FLAG_SERVING, 1, 0, -1, -1).unwrap(),
                Ordering::Relaxed,
            );
        }
        stop.store(true, Ordering::Relaxed);
        assert!(worker.join().unwrap() > 0);
    }
}
