//! Per-worker counters in the node's shared memory: each worker adds to its own row (no two processes
//! write one cache line on a request), the main process sums the rows for `/metrics`. A row outlives
//! its worker process: a restarted worker goes on counting in it, so totals never go back.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use super::region::{NodeSharedMemory, Region, COUNTER_SLOTS};

pub struct CounterCore {
    region: Arc<Region>,
}

impl CounterCore {
    pub fn new(region: Arc<Region>) -> CounterCore {
        CounterCore { region }
    }

    pub fn add(&self, worker: usize, slot: usize, delta: i64) -> u64 {
        let counter = self.region.counter(worker, slot);
        counter
            .fetch_add(delta as u64, Ordering::Relaxed)
            .wrapping_add(delta as u64)
    }

    pub fn set(&self, worker: usize, slot: usize, value: u64) {
        self.region.counter(worker, slot).store(value, Ordering::Relaxed)
    }

    pub fn row(&self, worker: usize) -> Vec<u64> {
        (0..COUNTER_SLOTS)
            .map(|slot| self.region.counter(worker, slot).load(Ordering::Relaxed))
            .collect()
    }

    pub fn totals(&self) -> Vec<u64> {
        let mut totals = vec![0u64; COUNTER_SLOTS];
        for worker in 0..self.region.workers() {
            for (total, value) in totals.iter_mut().zip(self.row(worker)) {
                *total = total.wrapping_add(value);
            }
        }
        totals
    }
}

/// Per-worker counters the main process sums (see ``pbfast/_native.pyi``).
#[pyclass(module = "pbfast._native", name = "WorkerCounters", frozen)]
pub struct WorkerCounters {
    core: CounterCore,
}

impl WorkerCounters {
    fn place(&self, worker: i64, slot: i64) -> PyResult<(usize, usize)> {
        let worker = usize::try_from(worker).ok().filter(|&w| w < self.core.region.workers());
        let slot = usize::try_from(slot).ok().filter(|&s| s < COUNTER_SLOTS);
        match (worker, slot) {
            (Some(worker), Some(slot)) => Ok((worker, slot)),
            _ => Err(PyValueError::new_err(format!(
                "no counter {slot:?} of worker {worker:?}"
            ))),
        }
    }
}

#[pymethods]
impl WorkerCounters {
    #[new]
    fn py_new(memory: &NodeSharedMemory) -> Self {
        WorkerCounters {
            core: CounterCore::new(memory.region.clone()),
        }
    }

    /// Construction happens in ``__new__``; this no-op ``__init__`` only exists so that
    /// ``inspect.signature``/stubtest see the constructor's parameters on ``__init__`` (as in the stub).
    #[pyo3(signature = (*_args, **_kwargs))]
    fn __init__(&self, _args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) {}

    #[getter]
    fn slots(&self) -> usize {
        COUNTER_SLOTS
    }

    #[getter]
    fn workers(&self) -> usize {
        self.core.region.workers()
    }

    #[pyo3(signature = (worker, slot, delta = 1))]
    fn add(&self, worker: i64, slot: i64, delta: i64) -> PyResult<u64> {
        let (worker, slot) = self.place(worker, slot)?;
        Ok(self.core.add(worker, slot, delta))
    }

    fn set(&self, worker: i64, slot: i64, value: u64) -> PyResult<()> {
        let (worker, slot) = self.place(worker, slot)?;
        self.core.set(worker, slot, value);
        Ok(())
    }

    fn row(&self, worker: i64) -> PyResult<Vec<u64>> {
        let (worker, _) = self.place(worker, 0)?;
        Ok(self.core.row(worker))
    }

    fn totals(&self) -> Vec<u64> {
        self.core.totals()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_and_totals() {
        let owner = Arc::new(Region::create(64, 3, 86400).unwrap());
        let main = CounterCore::new(owner.clone());
        let worker = CounterCore::new(Arc::new(Region::attach(owner.fd()).unwrap()));
        assert_eq!(worker.add(0, 1, 1), 1);
        assert_eq!(worker.add(2, 1, 5), 5);
        assert_eq!(worker.add(2, 1, -2), 3);
        worker.set(1, 31, 9);
        let totals = main.totals();
        assert_eq!((totals[1], totals[31], totals[0]), (4, 9, 0));
        assert_eq!(main.row(2)[1], 3);
    }

    #[test]
    fn concurrent_adds_are_all_counted() {
        let owner = Arc::new(Region::create(64, 4, 86400).unwrap());
        let handles: Vec<_> = (0..4)
            .map(|w| {
                let counters = CounterCore::new(Arc::new(Region::attach(owner.fd()).unwrap()));
                std::thread::spawn(move || {
                    for _ in 0..100_000 {
                        counters.add(w, 0, 1);
                        counters.add(0, 5, 1); // everyone on one counter too
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.join().unwrap();
        }
        let totals = CounterCore::new(owner).totals();
        assert_eq!((totals[0], totals[5]), (400_000, 400_000));
    }
}
