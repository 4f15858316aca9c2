//! A tenant node's event streams held outside the Python server: `StreamHolder` (spec in the stub).
//!
//! An idle realtime stream inside granian cost the node ~25 KB (its HTTP/1 connection's buffers, the
//! request head, the request's coroutines). Here it is a table entry and one small task: Python admits a
//! stream and answers the gateway at once with the holder's port and a ticket (`x-pbfast-stream-held`); the
//! gateway connects here with the cluster token and the ticket, and reads the stream's frames as Python
//! queues them ([`streams`]: bounded per stream; [`listener`]: the sockets).
//!
//! Thread-safety: the holder is shared by the event loop and the database threads (which queue an event's
//! frames for all its recipients in one call, without the GIL).

pub mod lanes;
pub mod listener;
pub mod mux;
pub mod mux_wire;
pub mod ready;
pub mod streams;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use tokio::sync::watch;

use streams::{LocalReader, Streams};

/// The holders of this process, by port: a gateway in the same process (an all-in-one) reads their streams
/// from their buffers instead of through a socket (two system calls, a loopback segment and a wake-up of
/// the holder's thread less per recipient of an event).
type LocalHolder = (u16, Weak<Streams>, Arc<[u8]>); // port, streams, token
static LOCAL_HOLDERS: std::sync::Mutex<Vec<LocalHolder>> = std::sync::Mutex::new(Vec::new());

/// The stream of `ticket` in a holder of this process listening on `port`, when `token` is its token. A
/// ticket is random (64 bits) and taken once, so a remote holder's ticket does not name a local stream.
pub fn attach_local(port: u16, token: &[u8], ticket: u64) -> Option<LocalReader> {
    let holders = LOCAL_HOLDERS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    holders
        .iter()
        .filter(|(at, _, key)| *at == port && listener::same_secret(token, key))
        .filter_map(|(_, streams, _)| streams.upgrade())
        .find_map(|streams| streams.attach_local(ticket))
}

/// How long the holder's stop waits for ended streams to be written out.
const STOP_GRACE: Duration = Duration::from_secs(1);

fn random_ticket() -> u64 {
    let mut bytes = [0u8; 8];
    // SAFETY: getrandom into a local buffer of the length given.
    let read = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if read != bytes.len() as isize {
        // Tickets need not be secret (attaching takes the cluster token); unique is enough.
        return Instant::now().elapsed().as_nanos() as u64 ^ std::process::id() as u64;
    }
    u64::from_ne_bytes(bytes)
}

#[pyclass(frozen, module = "pbfast._native")]
pub struct StreamHolder {
    streams: Arc<Streams>,
    token: Arc<[u8]>,
    port: u16,
    mux: bool,
    wake: Arc<OwnedFd>,
    running: Mutex<Option<(watch::Sender<bool>, JoinHandle<()>)>>,
}

#[pymethods]
impl StreamHolder {
    #[new]
    #[pyo3(signature = (host, port, token, limit_bytes = 4 << 20, attach_seconds = 10.0, *, mux = true, gateway_timeout_seconds = 30.0))]
    fn new(host: &str, port: u16, token: &str, limit_bytes: usize, attach_seconds: f64, mux: bool, gateway_timeout_seconds: f64) -> PyResult<Self> {
        if token.is_empty() || token.contains(char::is_whitespace) {
            return Err(PyValueError::new_err("the token must be non-empty, without spaces"));
        }
        if !(attach_seconds.is_finite() && attach_seconds > 0.0) {
            return Err(PyValueError::new_err("attach_seconds must be positive"));
        }
        let peer_timeout = Duration::try_from_secs_f64(gateway_timeout_seconds)
            .ok()
            .filter(|timeout| !timeout.is_zero())
            .ok_or_else(|| PyValueError::new_err("gateway_timeout_seconds must be positive"))?;
        let options = listener::Options { mux, peer_timeout };
        let listener = crate::listen::tcp_on_host(host, port, crate::listen::Sharing::Alone).map_err(|e| PyOSError::new_err(format!("{host}:{port}: {e}")))?;
        let port = listener.local_addr().map_err(|e| PyOSError::new_err(e.to_string()))?.port();
        // SAFETY: eventfd returns a new descriptor (or -1, checked).
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(PyOSError::new_err("eventfd failed"));
        }
        // SAFETY: fd is a fresh descriptor owned by nobody else.
        let wake = Arc::new(unsafe { OwnedFd::from_raw_fd(fd) });
        let notified = wake.clone();
        let notify = Box::new(move || {
            let one = 1u64.to_ne_bytes();
            // SAFETY: writes 8 bytes from a local buffer to the eventfd.
            unsafe { libc::write(notified.as_raw_fd(), one.as_ptr().cast(), one.len()) };
        });
        let streams = Arc::new(Streams::new(limit_bytes, Duration::from_secs_f64(attach_seconds), notify));
        let token: Arc<[u8]> = Arc::from(token.as_bytes());
        let (stop, stopped) = watch::channel(false);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| PyOSError::new_err(e.to_string()))?;
        let (served, key) = (streams.clone(), token.clone());
        let thread = std::thread::Builder::new()
            .name("pbfast-streams".into())
            .spawn(move || {
                runtime.block_on(async move {
                    listener::serve(listener, served.clone(), key, options, stopped).await;
                    let deadline = tokio::time::Instant::now() + STOP_GRACE;
                    while !served.is_empty() && tokio::time::Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                });
            })
            .map_err(|e| PyOSError::new_err(e.to_string()))?;
        let mut holders = LOCAL_HOLDERS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        holders.retain(|(_, streams, _)| streams.strong_count() > 0);
        holders.push((port, Arc::downgrade(&streams), token.clone()));
        drop(holders);
        Ok(StreamHolder { streams, token, port, mux, wake, running: Mutex::new(Some((stop, thread))) })
    }

    #[getter]
    fn port(&self) -> u16 {
        self.port
    }

    /// Whether gateways may read its streams over a multiplexed connection (the node says so on a held answer).
    #[getter]
    fn mux(&self) -> bool {
        self.mux
    }

    #[getter]
    fn wake_fd(&self) -> i32 {
        self.wake.as_raw_fd()
    }

    fn token_matches(&self, value: &str) -> bool {
        listener::same_secret(value.as_bytes(), &self.token)
    }

    fn admit(&self, first: &[u8]) -> (u64, String) {
        let ticket = random_ticket();
        let handle = self.streams.admit(first, ticket, Instant::now());
        (handle, format!("{ticket:x}"))
    }

    fn send(&self, handle: u64, data: &[u8]) -> bool {
        self.streams.send([(handle, data)]) == 1
    }

    fn send_many(&self, py: Python<'_>, items: Vec<(u64, PyBackedBytes)>) -> usize {
        py.detach(|| self.streams.send(items.iter().map(|(handle, data)| (*handle, &data[..]))))
    }

    /// Queue record events given as parts: `(handle, id line, event line, data)`, each queued as
    /// `id line + event line + data + "\n\n"` (the parts are made once per client and per subscription, so
    /// Python builds no frame per recipient).
    fn send_frames(&self, py: Python<'_>, items: Vec<(u64, PyBackedBytes, PyBackedBytes, PyBackedBytes)>) -> usize {
        py.detach(|| {
            self.streams.send_parts(items.iter().map(|(handle, id, event, data)| (*handle, [&id[..], &event[..], &data[..], &b"\n\n"[..]])))
        })
    }

    fn end(&self, handle: u64) {
        self.streams.end(handle);
    }

    fn take_ended(&self) -> Vec<(u64, u8)> {
        let mut count = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a local buffer (EAGAIN when nothing is there).
        unsafe { libc::read(self.wake.as_raw_fd(), count.as_mut_ptr().cast(), count.len()) };
        self.streams.take_ended().into_iter().map(|(handle, reason)| (handle, reason as u8)).collect()
    }

    fn __len__(&self) -> usize {
        self.streams.len()
    }

    fn close(&self, py: Python<'_>) {
        let running = self.running.lock().take();
        LOCAL_HOLDERS
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .retain(|(_, streams, _)| !std::ptr::eq(streams.as_ptr(), Arc::as_ptr(&self.streams)));
        if let Some((stop, thread)) = running {
            let _ = stop.send(true);
            py.detach(move || drop(thread.join()));
        }
    }
}
