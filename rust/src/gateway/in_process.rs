//! The all-in-one's hand-over without a second HTTP exchange: the native data path puts a tenant request
//! for the node in this process on a bounded queue and wakes the Python event loop through an eventfd; the
//! loop takes the queued requests, runs the gateway's one RSGI handler on each with a protocol object of its
//! own (`pbfast/gateway/in_process.py`), and its answer comes back over a oneshot channel.
//!
//! Bounded: at most `capacity` requests are queued or being answered at once; one more is refused
//! ([`Refused::Busy`], a 503 for its client). A request whose client went away is dropped by the loop before
//! it runs (its receiver is gone: [`Handed::cancelled`]). After [`InProcess::close`] nothing is taken and the
//! queued requests are dropped (their clients get a 502).
//!
//! Thread-safety: `submit` from the gateway's threads, `take`/`close` from the event loop's; the queue is a
//! short mutex section, the count of places atomic.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode, Uri};
use parking_lot::Mutex;
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use tokio::sync::oneshot;

use super::answer_batch::AnswerBatch;
use super::answer_mailbox::{self, Mailbox};
use super::handed_request::{decode_path, HandedRequest};
use super::wake_fd::WakeFd;

/// The Python side's answer to a handed request (a whole body).
#[derive(Debug)]
pub struct HandedAnswer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Whether a request handed to the Python side takes the in-process queue (its body read whole is the
/// caller's condition): not a realtime stream (`GET .../api/realtime`, held or streamed: buffered here, it would
/// never be answered and keep its place), not an `Upgrade`,
/// not a file download or the admin UI's files (`GET`/`HEAD` of `/api/files/` or `/_/`: granian streams
/// those from disk; the path as the Python side reads it, percent-decoded: `/%61pi/files/` is a download too,
/// which this path would read whole into memory). Everything else is a plain request and answer.
pub fn takes(method: &Method, path: &str, headers: &HeaderMap) -> bool {
    if headers.contains_key(http::header::UPGRADE) {
        return false;
    }
    if *method != Method::GET && *method != Method::HEAD {
        return true;
    }
    let decoded = if path.contains('%') { std::borrow::Cow::Owned(decode_path(path)) } else { path.into() };
    !(super::held::may_be_held(method, &decoded)
        || decoded.contains("/api/files/")
        || decoded.contains("/_/")
        || decoded.ends_with("/_"))
}

/// Why a request was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// `capacity` requests are already queued or being answered.
    Busy,
    /// The queue was closed (shutting down).
    Closed,
}

/// One of the `capacity` places, given back when its request is answered or dropped.
#[derive(Debug)]
struct Place(Arc<AtomicUsize>);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Where the answer of one handed request goes.
#[derive(Debug)]
pub struct Reply {
    sender: oneshot::Sender<HandedAnswer>,
    _place: Place,
    /// The submitting gateway thread's mailbox (see [`answer_mailbox`]), when it has one.
    mailbox: Option<Arc<Mailbox>>,
}

impl Reply {
    /// Whether the request's client went away (nobody waits for the answer).
    pub fn cancelled(&self) -> bool {
        self.sender.is_closed()
    }

    /// Send the answer (false: nobody waits for it any more).
    pub fn send(self, answer: HandedAnswer) -> bool {
        self.sender.send(answer).is_ok()
    }

    /// The oneshot and the mailbox to deliver through (None: send directly); the place is given back.
    pub fn into_parts(self) -> (oneshot::Sender<HandedAnswer>, Option<Arc<Mailbox>>) {
        (self.sender, self.mailbox)
    }
}

/// A request as handed over: origin-form target, the headers as for the Python side, the body read whole.
#[derive(Debug)]
pub struct Handed {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub reply: Reply,
}

pub struct InProcess {
    queue: Mutex<VecDeque<Handed>>,
    capacity: usize,
    outstanding: Arc<AtomicUsize>,
    closed: AtomicBool,
    wake: WakeFd,
    answers: Arc<AnswerBatch>,
}

impl InProcess {
    pub fn new(capacity: usize) -> std::io::Result<Self> {
        Ok(InProcess {
            queue: Mutex::new(VecDeque::new()),
            capacity,
            outstanding: Arc::new(AtomicUsize::new(0)),
            closed: AtomicBool::new(false),
            wake: WakeFd::new()?,
            answers: Arc::new(AnswerBatch::default()),
        })
    }

    /// Queue a request for the event loop; the receiver gets its answer (or an error when it was dropped).
    pub fn submit(&self, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Result<oneshot::Receiver<HandedAnswer>, Refused> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Refused::Closed);
        }
        let capacity = self.capacity;
        if self.outstanding.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < capacity).then_some(n + 1)).is_err() {
            return Err(Refused::Busy);
        }
        let place = Place(self.outstanding.clone());
        let (sender, receiver) = oneshot::channel();
        let handed = Handed { method, uri, headers, body, reply: Reply { sender, _place: place, mailbox: answer_mailbox::current() } };
        let mut queue = self.queue.lock();
        let was_empty = queue.is_empty();
        queue.push_back(handed);
        drop(queue);
        // The loop clears the eventfd before it takes the queue whole: a request pushed onto an empty queue
        // after that take wakes it again, one pushed before is in the take.
        if was_empty {
            self.wake.notify();
        }
        Ok(receiver)
    }

    /// The oldest `limit` queued requests (clears the wake-up first, see `submit`; sets it again when more are
    /// left, so that the loop comes back for them after what it has ready: a burst does not fill its ready queue
    /// at once, ahead of its other work).
    pub fn take(&self, limit: usize) -> Vec<Handed> {
        self.wake.clear();
        if self.closed.load(Ordering::Acquire) {
            return Vec::new();
        }
        let mut queue = self.queue.lock();
        let count = queue.len().min(limit);
        let taken: Vec<Handed> = queue.drain(..count).collect();
        let more = !queue.is_empty();
        drop(queue);
        if more {
            self.wake.notify();
        }
        taken
    }

    /// Refuse new requests and drop the queued ones; returns how many were dropped.
    pub fn close(&self) -> usize {
        self.closed.store(true, Ordering::Release);
        let dropped: Vec<Handed> = self.queue.lock().drain(..).collect();
        dropped.len()
    }

    /// Requests queued or being answered.
    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Acquire)
    }

    /// Queued requests (not taken yet) whose client went away: the loop drops each when it takes it.
    pub fn abandoned(&self) -> usize {
        self.queue.lock().iter().filter(|handed| handed.reply.cancelled()).count()
    }

    pub fn fd(&self) -> i32 {
        self.wake.raw()
    }

    /// Where the loop's answers wait for its next flush (see [`AnswerBatch`]).
    pub fn answers(&self) -> &Arc<AnswerBatch> {
        &self.answers
    }
}

/// The queue as Python sees it (see `pbfast/_native.pyi`).
#[pyclass(module = "pbfast._native", name = "InProcessQueue", frozen)]
pub struct InProcessQueue {
    pub core: Arc<InProcess>,
}

#[pymethods]
impl InProcessQueue {
    #[new]
    #[pyo3(signature = (capacity = 4096))]
    fn py_new(capacity: usize) -> PyResult<Self> {
        if capacity == 0 {
            return Err(PyValueError::new_err("capacity must be at least 1"));
        }
        let core = InProcess::new(capacity).map_err(|e| PyOSError::new_err(format!("eventfd: {e}")))?;
        Ok(InProcessQueue { core: Arc::new(core) })
    }

    /// The eventfd to watch for readability.
    #[getter]
    fn fd(&self) -> i32 {
        self.core.fd()
    }

    #[getter]
    fn outstanding(&self) -> usize {
        self.core.outstanding()
    }

    /// Queued requests whose client went away (not taken yet).
    #[getter]
    fn abandoned(&self) -> usize {
        self.core.abandoned()
    }

    /// The oldest ``limit`` queued requests.
    #[pyo3(signature = (limit = 64))]
    fn take(&self, py: Python<'_>, limit: usize) -> PyResult<Vec<HandedRequest>> {
        let answers = self.core.answers();
        self.core.take(limit).into_iter().map(|handed| HandedRequest::new(py, handed, answers.clone())).collect()
    }

    /// Send the answers queued by `HandedRequest.respond_later` (one wake-up of the gateway's threads for the
    /// batch); returns how many reached a waiting client. The GIL is kept: let go, the loop waited to take it
    /// back from the database threads, which cost it more than a preemption in the sends (benchmarks/RESULTS.md,
    /// "The loop's answers sent once per iteration").
    fn flush_answers(&self) -> usize {
        self.core.answers().flush()
    }

    /// Answers queued by `HandedRequest.respond_later` and not flushed yet.
    #[getter]
    fn pending_answers(&self) -> usize {
        self.core.answers().len()
    }

    fn close(&self) -> usize {
        self.core.close()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn submit(queue: &InProcess) -> Result<oneshot::Receiver<HandedAnswer>, Refused> {
        queue.submit(Method::GET, Uri::from_static("/t/a/api/health"), HeaderMap::new(), Bytes::new())
    }

    fn answer() -> HandedAnswer {
        HandedAnswer { status: StatusCode::OK, headers: HeaderMap::new(), body: Bytes::from_static(b"ok") }
    }

    #[test]
    fn plain_requests_take_the_queue_streams_and_files_do_not() {
        let plain = HeaderMap::new();
        assert!(takes(&Method::GET, "/t/a/api/collections/posts/records/x", &plain));
        assert!(takes(&Method::POST, "/t/a/api/realtime", &plain), "setting subscriptions is a plain request");
        assert!(takes(&Method::POST, "/t/a/api/files/token", &plain));
        assert!(!takes(&Method::GET, "/t/a/api/realtime", &plain));
        assert!(!takes(&Method::GET, "/t/a/api/files/posts/x/a.png", &plain));
        assert!(!takes(&Method::HEAD, "/api/files/posts/x/a.png", &plain));
        assert!(!takes(&Method::GET, "/t/a/_/", &plain));
        assert!(!takes(&Method::GET, "/t/a/_", &plain));
        assert!(!takes(&Method::GET, "/t/a/%61pi/files/posts/x/a.png", &plain), "the Python side reads it decoded");
        assert!(!takes(&Method::HEAD, "/t/a/api%2Ffiles/posts/x/a.png", &plain));
        assert!(!takes(&Method::GET, "/t/a/%5F/", &plain));
        assert!(!takes(&Method::GET, "/t/a/api/real%74ime", &plain));
        assert!(takes(&Method::GET, "/t/a/api/collections/p%C3%A9/records", &plain));
        let mut upgrade = HeaderMap::new();
        upgrade.insert(http::header::UPGRADE, http::HeaderValue::from_static("websocket"));
        assert!(!takes(&Method::GET, "/t/a/api/health", &upgrade));
    }

    #[test]
    fn a_full_queue_refuses_until_a_place_is_given_back() {
        let queue = InProcess::new(2).unwrap();
        let _first = submit(&queue).unwrap();
        let _second = submit(&queue).unwrap();
        assert_eq!(submit(&queue).unwrap_err(), Refused::Busy);
        let mut taken = queue.take(8);
        assert_eq!(taken.len(), 2);
        assert_eq!(queue.outstanding(), 2, "taken but not answered: still counted");
        let handed = taken.pop().unwrap();
        assert!(handed.reply.send(answer()));
        assert_eq!(queue.outstanding(), 1);
        assert!(submit(&queue).is_ok());
    }

    #[test]
    fn answers_reach_their_receiver_and_a_gone_client_is_seen() {
        let queue = InProcess::new(4).unwrap();
        let mut kept = submit(&queue).unwrap();
        let gone = submit(&queue).unwrap();
        assert_eq!(queue.abandoned(), 0);
        drop(gone);
        assert_eq!(queue.abandoned(), 1, "the second one's client left");
        let mut taken = queue.take(8).into_iter();
        let (first, second) = (taken.next().unwrap(), taken.next().unwrap());
        assert!(!first.reply.cancelled());
        assert!(second.reply.cancelled());
        assert!(first.reply.send(answer()));
        assert_eq!(kept.try_recv().unwrap().body, "ok");
        drop(second);
        assert_eq!(queue.outstanding(), 0);
    }

    #[test]
    fn a_take_leaves_the_rest_for_the_next_wake_up() {
        let queue = InProcess::new(8).unwrap();
        let _waiting: Vec<_> = (0..3).map(|_| submit(&queue).unwrap()).collect();
        assert_eq!(queue.take(2).len(), 2);
        let mut poll = libc::pollfd { fd: queue.fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one pollfd on the stack, no wait.
        assert_eq!(unsafe { libc::poll(&mut poll, 1, 0) }, 1, "readable again: one is left");
        assert_eq!(queue.take(2).len(), 1);
        // SAFETY: as above.
        assert_eq!(unsafe { libc::poll(&mut poll, 1, 0) }, 0);
    }

    #[test]
    fn close_drops_the_queued_and_refuses_new_ones() {
        let queue = InProcess::new(4).unwrap();
        let mut waiting = submit(&queue).unwrap();
        assert_eq!(queue.close(), 1);
        assert!(waiting.try_recv().is_err());
        assert_eq!(submit(&queue).unwrap_err(), Refused::Closed);
        assert!(queue.take(8).is_empty());
        assert_eq!(queue.outstanding(), 0);
    }
}
