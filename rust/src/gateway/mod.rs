//! The gateway's native data path: an HTTP/1.1 (and h2c) server on its own tokio runtime that forwards tenant
//! requests to tenant nodes (hyper on both sides), reading the native [`RoutingTable`] and
//! [`CircuitBreakers`] without the GIL. Python keeps the control side (route watch, metrics, health,
//! waiting for moves) and answers whatever this path hands over on a Unix socket; see [`forward`].
//!
//! Thread-safety: [`GatewayServer`] is frozen and Send + Sync; `start`/`stop` serialise on a mutex.
//! Requests run on the runtime's worker threads and never take the GIL.

pub mod access_log;
pub mod answer_batch;
pub mod answer_mailbox;
pub mod body;
pub mod event_stream;
pub mod fallback;
pub mod forward;
mod hand_over;
pub mod h1;
pub mod handed_headers;
pub mod handed_request;
pub mod held;
pub mod held_mux;
pub mod idle;
pub mod in_process;
pub mod headers;
pub mod http2;
pub mod pool;
pub mod request_line;
pub mod stats;
pub mod target;
pub mod unix;
pub mod wake_fd;
pub mod warnings;
pub mod wire;

use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use http::HeaderValue;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use parking_lot::Mutex;
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::breaker::CircuitBreakers;
use crate::routing::RoutingTable;
use access_log::AccessLog;
use forward::{DataPath, Limits, Pools, Shared};
use body::StallGuard;
use event_stream::{Http1Connection, SharedSocket};
use headers::Peer;
use stats::Stats;
use target::{Malformed, Protocol, TargetNormaliser};

struct Running {
    /// `Some(grace)`: stop accepting, then give open connections up to `grace` to finish.
    stop: watch::Sender<Option<Duration>>,
    threads: Vec<JoinHandle<()>>,
}

/// The native data path of the gateway (see the module docs and `pbfast/_native.pyi`).
#[pyclass(module = "pbfast._native", name = "GatewayServer", frozen)]
pub struct GatewayServer {
    shared: Arc<Shared>,
    pools: Pools,
    threads: usize,
    running: Mutex<Option<Running>>,
}

fn seconds(name: &str, value: f64) -> PyResult<Duration> {
    if !(value.is_finite() && value > 0.0) {
        return Err(PyValueError::new_err(format!("{name} must be a positive number of seconds, got {value}")));
    }
    Duration::try_from_secs_f64(value).map_err(|_| PyValueError::new_err(format!("{name} is too large: {value}")))
}

#[pymethods]
impl GatewayServer {
    #[new]
    #[pyo3(signature = (
        routes, breakers, cluster_token, fallback_socket, *, latency_buckets,
        max_body_bytes = 33_554_432, max_header_bytes = 32_768, connect_timeout_seconds = 1.0,
        read_timeout_seconds = 30.0, client_idle_seconds = 60.0, pool_idle_seconds = 15.0,
        max_idle_per_node = 256, move_wait_seconds = 5.0, threads = 1, access_log = false,
        held_stream_limit_bytes = 4_194_304, held_streams_budget_bytes = 268_435_456, held_stream_timeout_seconds = 30.0,
        in_process = None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn py_new(
        routes: Py<RoutingTable>,
        breakers: Py<CircuitBreakers>,
        cluster_token: &str,
        fallback_socket: PathBuf,
        latency_buckets: Vec<f64>,
        max_body_bytes: u64,
        max_header_bytes: usize,
        connect_timeout_seconds: f64,
        read_timeout_seconds: f64,
        client_idle_seconds: f64,
        pool_idle_seconds: f64,
        max_idle_per_node: usize,
        move_wait_seconds: f64,
        threads: usize,
        access_log: bool,
        held_stream_limit_bytes: usize,
        held_streams_budget_bytes: usize,
        held_stream_timeout_seconds: f64,
        in_process: Option<Py<in_process::InProcessQueue>>,
    ) -> PyResult<Self> {
        let token = HeaderValue::from_str(cluster_token)
            .map_err(|_| PyValueError::new_err("cluster_token must be a valid header value"))?;
        if threads == 0 || threads > 256 {
            return Err(PyValueError::new_err(format!("threads must be between 1 and 256, got {threads}")));
        }
        if max_idle_per_node == 0 {
            return Err(PyValueError::new_err("max_idle_per_node must be at least 1"));
        }
        if max_header_bytes < 1024 {
            return Err(PyValueError::new_err(format!("max_header_bytes must be at least 1024, got {max_header_bytes}")));
        }
        if held_stream_limit_bytes < 64 << 10 || held_streams_budget_bytes < held_stream_limit_bytes {
            return Err(PyValueError::new_err(format!(
                "held_stream_limit_bytes must be at least 65536 and held_streams_budget_bytes at least that, got {held_stream_limit_bytes} and {held_streams_budget_bytes}"
            )));
        }
        // Process-wide (the held streams' connections are pooled per process): the last gateway made sets them.
        held_mux::configure(held_mux::Settings {
            stream_limit: held_stream_limit_bytes,
            budget: held_streams_budget_bytes,
            peer_timeout: seconds("held_stream_timeout_seconds", held_stream_timeout_seconds)?,
        });
        let limits = Limits {
            max_body_bytes,
            max_header_bytes,
            connect_timeout: seconds("connect_timeout_seconds", connect_timeout_seconds)?,
            read_timeout: seconds("read_timeout_seconds", read_timeout_seconds)?,
            client_idle: seconds("client_idle_seconds", client_idle_seconds)?,
            move_wait: seconds("move_wait_seconds", move_wait_seconds)?,
        };
        let pools = Pools {
            fallback_socket,
            idle: seconds("pool_idle_seconds", pool_idle_seconds)?,
            max_idle_per_node,
        };
        let shared = Shared {
            routes,
            breakers,
            token,
            limits,
            stats: Stats::new(latency_buckets),
            access_log: access_log.then(AccessLog::default),
            warnings: Default::default(),
            in_process: in_process.map(|queue| queue.get().core.clone()),
        };
        Ok(GatewayServer { shared: Arc::new(shared), pools, threads, running: Mutex::new(None) })
    }

    /// Construction happens in ``__new__``; this no-op ``__init__`` only exists so that
    /// ``inspect.signature``/stubtest see the constructor's parameters on ``__init__`` (as in the stub).
    #[pyo3(signature = (*_args, **_kwargs))]
    fn __init__(&self, _args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) {}

    /// Listen on ``host:port`` (0: any free port) and serve on ``threads`` threads; returns the port.
    /// Raises ``OSError`` when the address cannot be bound, ``RuntimeError`` when running.
    ///
    /// Each thread runs its own single-threaded runtime with its own listening socket on the port
    /// (SO_REUSEPORT: the kernel spreads connections over them) and its own node connection pools, so a
    /// request never changes threads.
    fn start(&self, py: Python<'_>, host: &str, port: u16) -> PyResult<u16> {
        let mut running = self.running.lock();
        if running.is_some() {
            return Err(PyRuntimeError::new_err("the gateway server is already running"));
        }
        let count = self.threads;
        let bind_host = host.to_owned();
        let listeners = py
            .detach(move || bind_all(&bind_host, port, count))
            .map_err(|err| PyOSError::new_err(format!("cannot listen on {host}:{port}: {err}")))?;
        let bound = listeners[0].local_addr().map_err(|e| PyOSError::new_err(e.to_string()))?.port();
        let (stop, stopped) = watch::channel(None);
        let mut threads: Vec<JoinHandle<()>> = Vec::with_capacity(count);
        for (index, listener) in listeners.into_iter().enumerate() {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime,
                Err(err) => {
                    let _ = stop.send(Some(Duration::ZERO));
                    py.detach(|| threads.into_iter().for_each(|t| drop(t.join())));
                    return Err(PyOSError::new_err(format!("cannot start the gateway runtime: {err}")));
                }
            };
            let path = DataPath::new(self.shared.clone(), &self.pools);
            let stopped = stopped.clone();
            let spawned = std::thread::Builder::new().name(format!("pbfast-gateway-{index}")).spawn(move || {
                runtime.block_on(async move {
                    match TcpListener::from_std(listener) {
                        Ok(listener) => serve(listener, Arc::new(path), stopped).await,
                        Err(err) => eprintln!("[Gateway] thread {index} cannot listen: {err}"),
                    }
                });
                runtime.shutdown_timeout(Duration::from_millis(500));
            });
            match spawned {
                Ok(handle) => threads.push(handle),
                Err(err) => {
                    let _ = stop.send(Some(Duration::ZERO));
                    py.detach(|| threads.into_iter().for_each(|t| drop(t.join())));
                    return Err(PyRuntimeError::new_err(format!("cannot start a gateway thread: {err}")));
                }
            }
        }
        *running = Some(Running { stop, threads });
        Ok(bound)
    }

    /// Stop accepting, give open connections up to ``grace_seconds`` to finish, then close them all.
    /// Returns when the server has stopped; a no-op when it is not running.
    #[pyo3(signature = (grace_seconds = 3.0))]
    fn stop(&self, py: Python<'_>, grace_seconds: f64) -> PyResult<()> {
        let grace = if grace_seconds > 0.0 { seconds("grace_seconds", grace_seconds)? } else { Duration::ZERO };
        let Some(running) = self.running.lock().take() else {
            return Ok(());
        };
        let _ = running.stop.send(Some(grace));
        let panicked = py.detach(move || running.threads.into_iter().map(|t| t.join()).filter(Result::is_err).count());
        if panicked > 0 {
            return Err(PyRuntimeError::new_err(format!("{panicked} gateway thread(s) panicked")));
        }
        Ok(())
    }

    #[getter]
    fn running(&self) -> bool {
        self.running.lock().as_ref().is_some_and(|r| r.threads.iter().any(|t| !t.is_finished()))
    }

    /// The access log entries since the last call, oldest first: ``(client, method, target, status,
    /// seconds, request id)``, and how many were dropped so far because nobody drained them. Empty when the
    /// log is off.
    fn drain_access_log<'py>(&self, py: Python<'py>) -> PyResult<(Bound<'py, PyList>, u64)> {
        let Some(log) = self.shared.access_log.as_ref() else {
            return Ok((PyList::empty(py), 0));
        };
        let entries = log.drain();
        let out = PyList::empty(py);
        for e in entries {
            out.append((e.client, e.method, e.target, e.status, e.elapsed.as_secs_f64(), e.request_id))?;
        }
        Ok((out, log.dropped()))
    }

    /// The warnings since the last call, oldest first: ``(message, request id)``, and how many were
    /// dropped so far because nobody drained them.
    fn drain_warnings<'py>(&self, py: Python<'py>) -> PyResult<(Bound<'py, PyList>, u64)> {
        let out = PyList::empty(py);
        for warning in self.shared.warnings.drain() {
            out.append((warning.message, warning.request_id))?;
        }
        Ok((out, self.shared.warnings.dropped()))
    }

    /// Counters of the requests this path answered itself (see the stub for the keys).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let stats = &self.shared.stats;
        let out = PyDict::new(py);
        out.set_item("requests", stats.requests().to_vec())?;
        out.set_item("bounds", stats.bounds().to_vec())?;
        out.set_item("buckets", stats.buckets())?;
        out.set_item("latency_sum", stats.latency_seconds())?;
        let upstream = PyDict::new(py);
        for (kind, count) in stats.upstream_errors() {
            upstream.set_item(kind, count)?;
        }
        out.set_item("upstream_errors", upstream)?;
        let retries = PyDict::new(py);
        for (reason, count) in stats.retries() {
            retries.set_item(reason, count)?;
        }
        out.set_item("retries", retries)?;
        out.set_item("handed_over", stats.handed_over_count())?;
        let (streams, connections) = held_mux::open_counts();
        let held = PyDict::new(py);
        held.set_item("streams", streams)?;
        held.set_item("connections", connections)?;
        held.set_item("foreign_records", held_mux::foreign_records())?;
        out.set_item("held", held)?;
        Ok(out)
    }
}

impl Drop for GatewayServer {
    fn drop(&mut self) {
        if let Some(running) = self.running.get_mut().take() {
            let _ = running.stop.send(Some(Duration::ZERO));
            for thread in running.threads {
                let _ = thread.join();
            }
        }
    }
}

/// `count` listening sockets on one port of the first address `host` resolves to that can be bound
/// (SO_REUSEPORT; port 0 picks a free port for the first, which the others then share).
fn bind_all(host: &str, port: u16, count: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    use std::net::ToSocketAddrs;
    let mut last = None;
    for address in (host, port).to_socket_addrs()? {
        match crate::listen::tcp(address, crate::listen::Sharing::PerThread) {
            Ok(first) => {
                let shared_address = first.local_addr()?;
                let mut all = vec![first];
                for _ in 1..count {
                    all.push(crate::listen::tcp(shared_address, crate::listen::Sharing::PerThread)?);
                }
                return Ok(all);
            }
            Err(err) => last = Some(err),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other(format!("{host} resolves to no address"))))
}

/// The HTTP servers of one thread, configured once.
struct Servers {
    http1: hyper::server::conn::http1::Builder,
    http2: hyper::server::conn::http2::Builder<hyper_util::rt::TokioExecutor>,
}

/// Accept connections until told to stop, then drain them for the grace time.
async fn serve(listener: TcpListener, path: Arc<DataPath>, mut stop: watch::Receiver<Option<Duration>>) {
    let limits = path.limits().clone();
    let graceful = GracefulShutdown::new();
    // The event loop's in-process answers for this thread's requests (dropped with the runtime).
    tokio::spawn(answer_mailbox::install().run());
    let sweeper = {
        let path = path.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(path.sweep_every).await;
                path.sweep_idle();
            }
        })
    };
    // Heads up to twice the header limit are read (and answered 431 in PocketBase's JSON by the handler);
    // larger ones get hyper's bare 431.
    let head_limit = (limits.max_header_bytes * 2 + 16 * 1024).max(8192);
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1.timer(TokioTimer::new()).header_read_timeout(limits.client_idle).keep_alive(true).max_buf_size(head_limit);
    let servers = Arc::new(Servers { http1, http2: http2::builder(head_limit, limits.client_idle) });
    let client_idle = limits.client_idle;
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let client = Arc::new(Peer::new(peer.ip().to_canonical()));
                    let path = path.clone();
                    let servers = servers.clone();
                    let watcher = graceful.watcher();
                    let stop = stop.clone();
                    tokio::spawn(async move {
                        let malformed = Arc::new(Malformed::default());
                        let socket = Arc::new(stream);
                        let mut stream = TargetNormaliser::new(SharedSocket(socket.clone()), head_limit, malformed.clone());
                        // A client that says nothing for the client idle time is closed, as hyper closes one
                        // that sends no complete head.
                        let Ok(Ok(protocol)) = tokio::time::timeout(client_idle, stream.sniff()).await else {
                            return;
                        };
                        match protocol {
                            Protocol::Http1 => {
                                let connection = Http1Connection {
                                    normaliser: stream, socket, path, client, malformed, watcher, stop, client_idle, head_limit,
                                };
                                event_stream::serve(&servers.http1, connection).await;
                            }
                            Protocol::Http2 => {
                                drop(socket);
                                let io = StallGuard::new(TokioIo::new(stream), client_idle);
                                let connection = http2::Connection { io, path, client, malformed, watcher, stop, client_idle };
                                http2::serve(&servers.http2, connection).await;
                            }
                        }
                    });
                }
                // Out of descriptors or memory: back off rather than spin; connections already open go on.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            },
        }
    }
    drop(listener);
    let grace = stop.borrow().unwrap_or(Duration::ZERO);
    let _ = tokio::time::timeout(grace, graceful.shutdown()).await;
    sweeper.abort();
}
