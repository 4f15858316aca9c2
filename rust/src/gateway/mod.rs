//! The gateway's native data path: an HTTP/1.1 server on its own tokio runtime that forwards tenant
//! requests to tenant nodes (hyper on both sides), reading the native [`RoutingTable`] and
//! [`CircuitBreakers`] without the GIL. Python keeps the control side (route watch, metrics, health,
//! waiting for moves) and answers whatever this path hands over on a Unix socket; see [`forward`].
//!
//! Thread-safety: [`GatewayServer`] is frozen and Send + Sync; `start`/`stop` serialise on a mutex.
//! Requests run on the runtime's worker threads and never take the GIL.

pub mod body;
pub mod forward;
pub mod headers;
pub mod stats;
pub mod unix;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use http::HeaderValue;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use parking_lot::Mutex;
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;

use crate::breaker::CircuitBreakers;
use crate::routing::RoutingTable;
use forward::{DataPath, Limits};
use stats::Stats;

/// Pending connections the listening socket queues.
const BACKLOG: u32 = 2048;

struct Running {
    /// `Some(grace)`: stop accepting, then give open connections up to `grace` to finish.
    stop: watch::Sender<Option<Duration>>,
    thread: JoinHandle<()>,
}

/// The native data path of the gateway (see the module docs and `pbfast/_native.pyi`).
#[pyclass(module = "pbfast._native", name = "GatewayServer", frozen)]
pub struct GatewayServer {
    path: Arc<DataPath>,
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
        max_idle_per_node = 256, move_wait_seconds = 5.0, threads = 1
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
    ) -> PyResult<Self> {
        let token = HeaderValue::from_str(cluster_token)
            .map_err(|_| PyValueError::new_err("cluster_token must be a valid header value"))?;
        if threads == 0 || threads > 256 {
            return Err(PyValueError::new_err(format!("threads must be between 1 and 256, got {threads}")));
        }
        if max_header_bytes < 1024 {
            return Err(PyValueError::new_err(format!("max_header_bytes must be at least 1024, got {max_header_bytes}")));
        }
        let limits = Limits {
            max_body_bytes,
            max_header_bytes,
            connect_timeout: seconds("connect_timeout_seconds", connect_timeout_seconds)?,
            read_timeout: seconds("read_timeout_seconds", read_timeout_seconds)?,
            client_idle: seconds("client_idle_seconds", client_idle_seconds)?,
            move_wait: seconds("move_wait_seconds", move_wait_seconds)?,
        };
        let pool_idle = seconds("pool_idle_seconds", pool_idle_seconds)?;
        let path = DataPath::new(
            routes,
            breakers,
            token,
            limits,
            Stats::new(latency_buckets),
            fallback_socket,
            pool_idle,
            max_idle_per_node,
        );
        Ok(GatewayServer { path: Arc::new(path), threads, running: Mutex::new(None) })
    }

    /// Construction happens in ``__new__``; this no-op ``__init__`` only exists so that
    /// ``inspect.signature``/stubtest see the constructor's parameters on ``__init__`` (as in the stub).
    #[pyo3(signature = (*_args, **_kwargs))]
    fn __init__(&self, _args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) {}

    /// Listen on ``host:port`` (0: any free port) and serve on ``threads`` worker threads; returns the
    /// port. Raises ``OSError`` when the address cannot be bound, ``RuntimeError`` when running.
    fn start(&self, py: Python<'_>, host: &str, port: u16) -> PyResult<u16> {
        let mut running = self.running.lock();
        if running.is_some() {
            return Err(PyRuntimeError::new_err("the gateway server is already running"));
        }
        let threads = self.threads;
        let bind_host = host.to_owned();
        let (runtime, listener) = py.detach(move || -> std::io::Result<_> {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .thread_name("pbfast-gateway")
                .enable_all()
                .build()?;
            let listener = runtime.block_on(bind(&bind_host, port))?;
            Ok((runtime, listener))
        })
        .map_err(|err| PyOSError::new_err(format!("cannot listen on {host}:{port}: {err}")))?;
        let bound = listener.local_addr().map_err(|e| PyOSError::new_err(e.to_string()))?.port();
        let (stop, stopped) = watch::channel(None);
        let path = self.path.clone();
        let thread = std::thread::Builder::new()
            .name("pbfast-gateway-accept".into())
            .spawn(move || {
                runtime.block_on(serve(listener, path, stopped));
                runtime.shutdown_timeout(Duration::from_millis(500));
            })
            .map_err(|e| PyRuntimeError::new_err(format!("cannot start the gateway thread: {e}")))?;
        *running = Some(Running { stop, thread });
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
        py.detach(move || running.thread.join())
            .map_err(|_| PyRuntimeError::new_err("the gateway thread panicked"))
    }

    #[getter]
    fn running(&self) -> bool {
        self.running.lock().as_ref().is_some_and(|r| !r.thread.is_finished())
    }

    /// Counters of the requests this path answered itself (see the stub for the keys).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let stats = &self.path.stats;
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
        Ok(out)
    }
}

impl Drop for GatewayServer {
    fn drop(&mut self) {
        if let Some(running) = self.running.get_mut().take() {
            let _ = running.stop.send(Some(Duration::ZERO));
            let _ = running.thread.join();
        }
    }
}

/// A listening socket on the first address `host` resolves to that can be bound.
async fn bind(host: &str, port: u16) -> std::io::Result<TcpListener> {
    let mut last = None;
    for address in tokio::net::lookup_host((host, port)).await? {
        match listen(address) {
            Ok(listener) => return Ok(listener),
            Err(err) => last = Some(err),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other(format!("{host} resolves to no address"))))
}

fn listen(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?; // TIME_WAIT leftovers of a previous run; never SO_REUSEPORT
    socket.set_nodelay(true)?;
    socket.bind(address)?;
    socket.listen(BACKLOG)
}

/// Accept connections until told to stop, then drain them for the grace time.
async fn serve(listener: TcpListener, path: Arc<DataPath>, mut stop: watch::Receiver<Option<Duration>>) {
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(path.limits.client_idle)
        .keep_alive(true)
        // Heads up to twice the header limit are read (and answered 431 in PocketBase's JSON by the
        // handler); larger ones get hyper's bare 431.
        .max_buf_size((path.limits.max_header_bytes * 2 + 16 * 1024).max(8192));
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let client = peer.ip().to_canonical();
                    let path = path.clone();
                    let service = service_fn(move |request| path.clone().handle(client, request));
                    let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
                    tokio::spawn(async move {
                        let _ = connection.await;
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
}
