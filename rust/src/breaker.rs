//! Per-upstream-node circuit breakers: closed -> open -> half-open -> closed.
//!
//! Core: [`BreakerCore`], a map node -> [`Breaker`] on the monotonic clock ([`Instant`]); every
//! method takes `now` so tests control time. The Python wrapper [`CircuitBreakers`] puts it behind
//! one mutex (frozen, Send + Sync); no Python code runs while it is held.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

// ---------------------------------------------------------------------------------------------
// Core
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open { since: Instant },
    HalfOpen,
}

impl State {
    pub fn name(&self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open { .. } => "open",
            State::HalfOpen => "half-open",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Breaker {
    state: State,
    consecutive_failures: u32,
    probes_in_flight: u32,
}

impl Breaker {
    fn new() -> Self {
        Breaker {
            state: State::Closed,
            consecutive_failures: 0,
            probes_in_flight: 0,
        }
    }
}

/// Breaker settings (validated by [`Config::new`]).
#[derive(Debug, Clone, Copy)]
pub struct Config {
    pub failure_threshold: u32,
    pub cooldown: Duration,
    pub half_open_probes: u32,
}

impl Config {
    pub fn new(
        failure_threshold: i64,
        cooldown_seconds: f64,
        half_open_probes: i64,
    ) -> Result<Self, String> {
        if failure_threshold < 1 {
            return Err(format!(
                "failure_threshold must be >= 1, got {failure_threshold}"
            ));
        }
        if half_open_probes < 1 {
            return Err(format!(
                "half_open_probes must be >= 1, got {half_open_probes}"
            ));
        }
        if cooldown_seconds.is_nan() || cooldown_seconds < 0.0 {
            return Err(format!(
                "cooldown_seconds must be >= 0, got {cooldown_seconds}"
            ));
        }
        let cooldown = Duration::try_from_secs_f64(cooldown_seconds)
            .map_err(|_| format!("cooldown_seconds is too large: {cooldown_seconds}"))?;
        Ok(Config {
            failure_threshold: u32::try_from(failure_threshold).unwrap_or(u32::MAX),
            cooldown,
            half_open_probes: u32::try_from(half_open_probes).unwrap_or(u32::MAX),
        })
    }
}

/// All nodes' breakers (not synchronised; see [`CircuitBreakers`]).
#[derive(Debug)]
pub struct BreakerCore {
    config: Config,
    nodes: HashMap<String, Breaker>,
}

impl BreakerCore {
    pub fn new(config: Config) -> Self {
        BreakerCore {
            config,
            nodes: HashMap::new(),
        }
    }

    /// Move an open breaker whose cool-down has passed to half-open.
    fn refresh(config: &Config, b: &mut Breaker, now: Instant) {
        if let State::Open { since } = b.state {
            if now.saturating_duration_since(since) >= config.cooldown {
                b.state = State::HalfOpen;
                b.probes_in_flight = 0;
            }
        }
    }

    /// May a request go to `node` now? In half-open, true takes a probe slot.
    pub fn allow(&mut self, node: &str, now: Instant) -> bool {
        let Some(b) = self.nodes.get_mut(node) else {
            return true;
        };
        Self::refresh(&self.config, b, now);
        match b.state {
            State::Closed => true,
            State::Open { .. } => false,
            State::HalfOpen => {
                if b.probes_in_flight < self.config.half_open_probes {
                    b.probes_in_flight += 1;
                    true
                } else {
                    false
                }
            }
        }
    }

    pub fn record_success(&mut self, node: &str) {
        let Some(b) = self.nodes.get_mut(node) else {
            return;
        };
        match b.state {
            State::Closed => b.consecutive_failures = 0,
            State::HalfOpen => {
                b.state = State::Closed;
                b.consecutive_failures = 0;
                b.probes_in_flight = 0;
            }
            // A late success of a request sent before the breaker opened.
            State::Open { .. } => {}
        }
    }

    /// Give back a half-open probe slot taken by [`allow`](Self::allow) without a verdict (the request
    /// was abandoned, or its outcome says nothing about the node).
    pub fn release(&mut self, node: &str) {
        if let Some(b) = self.nodes.get_mut(node) {
            if b.state == State::HalfOpen {
                b.probes_in_flight = b.probes_in_flight.saturating_sub(1);
            }
        }
    }

    pub fn record_failure(&mut self, node: &str, now: Instant) {
        let threshold = self.config.failure_threshold;
        let b = self
            .nodes
            .entry(node.to_owned())
            .or_insert_with(Breaker::new);
        match b.state {
            State::Closed => {
                b.consecutive_failures = b.consecutive_failures.saturating_add(1);
                if b.consecutive_failures >= threshold {
                    b.state = State::Open { since: now };
                }
            }
            State::HalfOpen => {
                b.state = State::Open { since: now };
                b.probes_in_flight = 0;
            }
            // Already open: do not extend the cool-down.
            State::Open { .. } => {}
        }
    }

    /// The node's state (unknown: closed); an open breaker past its cool-down becomes half-open.
    pub fn state(&mut self, node: &str, now: Instant) -> State {
        match self.nodes.get_mut(node) {
            Some(b) => {
                Self::refresh(&self.config, b, now);
                b.state
            }
            None => State::Closed,
        }
    }

    /// Time until an open breaker admits a probe (zero when not open).
    pub fn retry_after(&mut self, node: &str, now: Instant) -> Duration {
        match self.state(node, now) {
            State::Open { since } => (since + self.config.cooldown).saturating_duration_since(now),
            _ => Duration::ZERO,
        }
    }

    pub fn states(&mut self, now: Instant) -> Vec<(String, State)> {
        let config = self.config;
        self.nodes
            .iter_mut()
            .map(|(node, b)| {
                Self::refresh(&config, b, now);
                (node.clone(), b.state)
            })
            .collect()
    }

    pub fn reset(&mut self, node: &str) {
        self.nodes.remove(node);
    }
}

// ---------------------------------------------------------------------------------------------
// Python wrapper
// ---------------------------------------------------------------------------------------------

/// Per-upstream-node circuit breakers: closed -> open -> half-open -> closed.
///
/// ``failure_threshold`` consecutive failures open a breaker; after ``cooldown_seconds`` it lets
/// through up to ``half_open_probes`` concurrent probe requests; a probe's success closes it, a probe's
/// failure opens it again for another cool-down. Thread-safe (frozen, Send + Sync; one internal mutex).
#[pyclass(module = "pbfast._native", name = "CircuitBreakers", frozen)]
pub struct CircuitBreakers {
    inner: Mutex<BreakerCore>,
}

#[pymethods]
impl CircuitBreakers {
    #[new]
    #[pyo3(signature = (failure_threshold = 5, cooldown_seconds = 1.0, half_open_probes = 1))]
    fn py_new(
        failure_threshold: i64,
        cooldown_seconds: f64,
        half_open_probes: i64,
    ) -> PyResult<Self> {
        let config = Config::new(failure_threshold, cooldown_seconds, half_open_probes)
            .map_err(PyValueError::new_err)?;
        Ok(CircuitBreakers {
            inner: Mutex::new(BreakerCore::new(config)),
        })
    }

    /// Construction happens in ``__new__``; this no-op ``__init__`` only exists so that
    /// ``inspect.signature``/stubtest see the constructor's parameters on ``__init__`` (as in the stub).
    #[pyo3(signature = (*_args, **_kwargs))]
    fn __init__(&self, _args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) {}

    /// May a request go to ``node`` now? In half-open a True answer takes a probe slot.
    #[pyo3(name = "allow")]
    fn py_allow(&self, node: &str) -> bool {
        self.allow(node)
    }

    #[pyo3(name = "record_success")]
    fn py_record_success(&self, node: &str) {
        self.record_success(node)
    }

    #[pyo3(name = "record_failure")]
    fn py_record_failure(&self, node: &str) {
        self.record_failure(node)
    }

    /// ``"closed"``, ``"open"`` or ``"half-open"`` (unknown nodes are closed).
    fn state(&self, node: &str) -> &'static str {
        self.inner.lock().state(node, Instant::now()).name()
    }

    /// Seconds until an open breaker admits a probe (0.0 when not open).
    fn retry_after(&self, node: &str) -> f64 {
        self.inner
            .lock()
            .retry_after(node, Instant::now())
            .as_secs_f64()
    }

    fn states<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let all = self.inner.lock().states(Instant::now());
        let d = PyDict::new(py);
        for (node, state) in all {
            d.set_item(node, state.name())?;
        }
        Ok(d)
    }

    /// Forget a node's history (closed).
    fn reset(&self, node: &str) {
        self.inner.lock().reset(node)
    }
}

/// The native data path's view (no Python involved; same state as the Python methods).
impl CircuitBreakers {
    pub(crate) fn allow(&self, node: &str) -> bool {
        self.inner.lock().allow(node, Instant::now())
    }

    pub(crate) fn record_success(&self, node: &str) {
        self.inner.lock().record_success(node)
    }

    pub(crate) fn record_failure(&self, node: &str) {
        self.inner.lock().record_failure(node, Instant::now())
    }

    pub(crate) fn release(&self, node: &str) {
        self.inner.lock().release(node)
    }

    pub(crate) fn retry_after_duration(&self, node: &str) -> Duration {
        self.inner.lock().retry_after(node, Instant::now())
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

    fn core(threshold: i64, cooldown: f64, probes: i64) -> BreakerCore {
        BreakerCore::new(Config::new(threshold, cooldown, probes).unwrap())
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn config_validation() {
        assert!(Config::new(0, 1.0, 1).is_err());
        assert!(Config::new(1, -0.1, 1).is_err());
        assert!(Config::new(1, f64::NAN, 1).is_err());
        assert!(Config::new(1, f64::INFINITY, 1).is_err());
        assert!(Config::new(1, 1.0, 0).is_err());
        assert!(Config::new(1, 0.0, 1).is_ok());
        assert!(Config::new(i64::MAX, 1.0, i64::MAX).is_ok());
    }

    #[test]
    fn opens_after_threshold_and_recovers() {
        let t0 = Instant::now();
        let mut c = core(3, 10.0, 1);
        assert!(c.allow("n", t0));
        assert_eq!(c.state("n", t0), State::Closed);
        c.record_failure("n", t0);
        c.record_failure("n", t0);
        c.record_success("n"); // resets the streak
        c.record_failure("n", t0);
        c.record_failure("n", t0);
        assert_eq!(c.state("n", t0).name(), "closed");
        c.record_failure("n", t0);
        assert_eq!(c.state("n", t0).name(), "open");
        assert!(!c.allow("n", t0 + 9 * S));
        assert_eq!(c.retry_after("n", t0 + 4 * S), 6 * S);
        // Failures while open do not extend the cool-down; late successes are ignored.
        c.record_failure("n", t0 + 5 * S);
        c.record_success("n");
        assert_eq!(c.state("n", t0 + 5 * S).name(), "open");
        assert_eq!(c.retry_after("n", t0 + 5 * S), 5 * S);
        // Cool-down passed: half-open, one probe.
        let t1 = t0 + 10 * S;
        assert_eq!(c.retry_after("n", t1), Duration::ZERO);
        assert_eq!(c.state("n", t1).name(), "half-open");
        assert!(c.allow("n", t1));
        assert!(!c.allow("n", t1), "probe budget is 1");
        c.record_success("n");
        assert_eq!(c.state("n", t1), State::Closed);
        assert!(c.allow("n", t1));
        // Closed again with a fresh failure count.
        c.record_failure("n", t1);
        c.record_failure("n", t1);
        assert_eq!(c.state("n", t1), State::Closed);
    }

    #[test]
    fn probe_failure_reopens() {
        let t0 = Instant::now();
        let mut c = core(1, 2.0, 2);
        c.record_failure("n", t0);
        assert!(!c.allow("n", t0 + S));
        let t1 = t0 + 2 * S;
        assert!(c.allow("n", t1));
        assert!(c.allow("n", t1));
        assert!(!c.allow("n", t1));
        c.record_failure("n", t1 + S);
        assert_eq!(c.state("n", t1 + S).name(), "open");
        assert_eq!(
            c.retry_after("n", t1 + S),
            2 * S,
            "a new cool-down from the failure"
        );
        // The other probe's late success is ignored while open.
        c.record_success("n");
        assert!(!c.allow("n", t1 + 2 * S));
        // Next half-open gets a full probe budget again.
        let t2 = t1 + 3 * S;
        assert!(c.allow("n", t2));
        assert!(c.allow("n", t2));
        assert!(!c.allow("n", t2));
    }

    #[test]
    fn unknown_nodes_and_reset() {
        let t0 = Instant::now();
        let mut c = core(1, 60.0, 1);
        c.record_success("ghost");
        assert!(
            c.states(t0).is_empty(),
            "success on an unknown node records nothing"
        );
        assert_eq!(c.state("ghost", t0), State::Closed);
        assert_eq!(c.retry_after("ghost", t0), Duration::ZERO);
        c.record_failure("x", t0);
        c.record_failure("y", t0);
        c.reset("y");
        let st: Vec<_> = c
            .states(t0)
            .into_iter()
            .map(|(n, s)| (n, s.name()))
            .collect();
        assert_eq!(st, vec![("x".to_string(), "open")]);
        assert!(c.allow("y", t0));
    }

    #[test]
    fn released_probe_slot_is_free_again() {
        let mut c = core(1, 0.0, 1);
        let t0 = Instant::now();
        c.record_failure("n", t0);
        assert!(c.allow("n", t0)); // the one probe
        assert!(!c.allow("n", t0));
        c.release("n"); // abandoned: no verdict
        assert_eq!(c.state("n", t0), State::HalfOpen);
        assert!(c.allow("n", t0));
        c.release("unknown"); // harmless
    }

    #[test]
    fn zero_cooldown_goes_straight_to_half_open() {
        let t0 = Instant::now();
        let mut c = core(1, 0.0, 1);
        c.record_failure("n", t0);
        assert_eq!(c.state("n", t0).name(), "half-open");
        assert!(c.allow("n", t0));
        assert!(!c.allow("n", t0));
    }

    #[test]
    fn concurrent_probe_budget() {
        let t0 = Instant::now();
        let c = Arc::new(Mutex::new(core(1, 0.0, 3)));
        c.lock().record_failure("n", t0);
        let hs: Vec<_> = (0..8)
            .map(|_| {
                let c = c.clone();
                thread::spawn(move || (0..100).filter(|_| c.lock().allow("n", t0)).count())
            })
            .collect();
        let total: usize = hs.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(total, 3);
    }
}
