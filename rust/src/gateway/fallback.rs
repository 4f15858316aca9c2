//! The hand-over to the gateway's Python side: a request goes over a pooled keep-alive connection to the
//! Python side's Unix socket, and is sent again when that failed before the Python side could have seen it.
//!
//! What is sent again, and why it is safe:
//! - a failed connect (the socket's backlog full, say): nothing was sent; tried again with a short backoff
//!   for at most the connect timeout, if the body is still there (read whole, or streamed and untouched);
//! - a connection closed or reset before any answer, for a request whose body was read whole
//!   ([`HandOverBody::Whole`], empty included): the Python side (granian, in this process) answers every
//!   request it reads, so it did not read this one. It closes a keep-alive connection between requests (its
//!   idle timeout, or after answering a request without reading all of its body), and that close crossed
//!   this request on a pooled connection. Such a request went out in one write (head and body flattened in
//!   one buffer), so the Python side saw all of it or nothing; it is sent once more, on a new connection.
//!
//! A streamed body's request is not sent again after a close: its head may have been read and answered
//! while the body was still on its way. That, and a connect that kept failing, is a real failure of the
//! Python side: the caller answers 502 and logs it.
//!
//! Thread-safety: one [`Fallback`] per server thread, used from that thread's runtime.

use std::error::Error as _;
use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use parking_lot::Mutex;
use tokio::time::Instant;

use super::body::{self, body_error, BodyError, BoxError, ProxyBody};
use super::unix::UnixConnector;

/// The first pause before connecting again (doubled each time).
const FIRST_BACKOFF: Duration = Duration::from_millis(5);
const MAX_BACKOFF: Duration = Duration::from_millis(100);

/// The body of a request to hand over.
pub enum HandOverBody {
    /// Read whole (possibly empty): can be sent again.
    Whole(Bytes),
    /// Still with the client: can be sent again only while nobody read from it.
    Streamed(ProxyBody),
}

/// Why a hand-over failed.
#[derive(Debug)]
pub enum Failure {
    /// The client's own body broke off, was too large or too slow.
    Client(BodyError),
    /// The Python side's socket took no connection for the connect timeout.
    Unreachable(String),
    /// The exchange broke after the Python side may have read (some of) the request.
    Broken(String),
}

/// One failed attempt that was sent again, for the log.
#[derive(Debug)]
pub struct Retried {
    pub error: String,
}

/// The hand-over's answer: the Python side's response, or why there is none; and the attempts sent again.
pub struct Outcome {
    pub result: Result<Response<Incoming>, Failure>,
    pub retried: Vec<Retried>,
}

pub struct Fallback {
    /// Keep-alive connections (every first attempt).
    pooled: Client<UnixConnector, ProxyBody>,
    /// A new connection for each request (attempts after a failure: no second pooled connection that may
    /// be closing as well).
    fresh: Client<UnixConnector, ProxyBody>,
    connect_wait: Duration,
}

impl Fallback {
    /// For the calling thread's runtime; `idle`/`max_idle`: the pool's limits (keep `idle` below the Python
    /// side's own keep-alive timeout, granian's 30 s, so that it rarely closes first).
    pub fn new(socket: std::path::PathBuf, idle: Duration, max_idle: usize, connect_wait: Duration) -> Self {
        let connector = UnixConnector::new(socket);
        let pooled = Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(idle)
            .pool_max_idle_per_host(max_idle)
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .build(connector.clone());
        let fresh = Client::builder(hyper_util::rt::TokioExecutor::new()).pool_max_idle_per_host(0).build(connector);
        Fallback { pooled, fresh, connect_wait }
    }

    /// Send `head` with `body` to the Python side (see the module docs for what is sent again).
    pub async fn send(&self, head: http::request::Parts, body: HandOverBody) -> Outcome {
        let started = Instant::now();
        let mut retried = Vec::new();
        let mut backoff = FIRST_BACKOFF;
        let mut body = body;
        let mut attempt = 0u32;
        loop {
            let (attempt_body, kept) = Attempt::split(body);
            let mut request = Request::new(attempt_body);
            *request.method_mut() = head.method.clone();
            *request.uri_mut() = head.uri.clone();
            *request.version_mut() = head.version;
            *request.headers_mut() = head.headers.clone();
            let client = if attempt == 0 { &self.pooled } else { &self.fresh };
            attempt += 1;
            let err = match client.request(request).await {
                Ok(response) => return Outcome { result: Ok(response), retried },
                Err(err) => err,
            };
            if let Some(kind) = body_error(&err) {
                return Outcome { result: Err(Failure::Client(kind)), retried };
            }
            let description = describe(&err);
            let again = kept.take_back();
            let verdict = if err.is_connect() {
                Verdict::Connect
            } else if closed_unanswered(&err) {
                Verdict::Closed
            } else {
                Verdict::Broken
            };
            match (verdict, again) {
                (Verdict::Connect, Some(again)) if started.elapsed() + backoff <= self.connect_wait => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    retried.push(Retried { error: description });
                    body = again;
                }
                // Once, on a new connection: a second close is no race.
                (Verdict::Closed, Some(again @ HandOverBody::Whole(_))) if attempt == 1 => {
                    retried.push(Retried { error: description });
                    body = again;
                }
                (Verdict::Connect, _) => return Outcome { result: Err(Failure::Unreachable(description)), retried },
                _ => return Outcome { result: Err(Failure::Broken(description)), retried },
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Verdict {
    Connect,
    Closed,
    Broken,
}

/// The connection was closed (or reset) before any answer.
fn closed_unanswered(err: &hyper_util::client::legacy::Error) -> bool {
    let Some(hyper_err) = err.source().and_then(|s| s.downcast_ref::<hyper::Error>()) else {
        return false;
    };
    let io_kind = hyper_err.source().and_then(|s| s.downcast_ref::<std::io::Error>()).map(std::io::Error::kind);
    hyper_err.is_incomplete_message() || matches!(io_kind, Some(ConnectionReset | BrokenPipe | ConnectionAborted))
}

/// `err` and its causes, for the log: `client error (SendRequest): connection closed before message completed`.
pub fn describe(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = format!("{err}");
    let mut cause = err.source();
    while let Some(e) = cause {
        out.push_str(": ");
        out.push_str(&e.to_string());
        cause = e.source();
    }
    out
}

/// One attempt's body, and what is kept to send again: a whole body's bytes, or a streamed body until it
/// is first read.
enum Kept {
    Whole(Bytes),
    Streamed(Arc<Mutex<Option<ProxyBody>>>),
}

impl Kept {
    fn take_back(self) -> Option<HandOverBody> {
        match self {
            Kept::Whole(data) => Some(HandOverBody::Whole(data)),
            Kept::Streamed(slot) => slot.lock().take().map(HandOverBody::Streamed),
        }
    }
}

/// A streamed body that stays in a shared slot until hyper first reads it.
struct Attempt {
    slot: Arc<Mutex<Option<ProxyBody>>>,
    taken: Option<ProxyBody>,
    hint: SizeHint,
}

impl Attempt {
    fn split(body: HandOverBody) -> (ProxyBody, Kept) {
        match body {
            HandOverBody::Whole(data) if data.is_empty() => (body::empty(), Kept::Whole(data)),
            HandOverBody::Whole(data) => (body::full(data.clone()), Kept::Whole(data)),
            HandOverBody::Streamed(stream) => {
                let hint = stream.size_hint();
                let slot = Arc::new(Mutex::new(Some(stream)));
                (Attempt { slot: slot.clone(), taken: None, hint }.boxed_unsync(), Kept::Streamed(slot))
            }
        }
    }
}

impl Body for Attempt {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.taken.is_none() {
            this.taken = this.slot.lock().take();
        }
        match this.taken.as_mut() {
            Some(stream) => Pin::new(stream).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn size_hint(&self) -> SizeHint {
        self.hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::UnixListener;

    const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

    fn head(method: &str) -> http::request::Parts {
        let request = Request::builder().method(method).uri("http://gateway.internal/x").body(()).unwrap();
        request.into_parts().0
    }

    async fn read_head(stream: &mut tokio::net::UnixStream) -> Option<Vec<u8>> {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            seen.extend_from_slice(&buf[..n]);
        }
        Some(seen)
    }

    /// A server that answers the first request of each connection and closes the connection as the next one
    /// arrives, unanswered: the close crossing a request on a pooled connection, made certain.
    async fn closing_server(listener: UnixListener, requests: Arc<Mutex<Vec<String>>>) {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let requests = requests.clone();
            tokio::spawn(async move {
                let Some(first) = read_head(&mut stream).await else { return };
                requests.lock().push(String::from_utf8_lossy(&first).into_owned());
                stream.write_all(ANSWER).await.unwrap();
                let _ = read_head(&mut stream).await; // the next request: dropped unanswered
            });
        }
    }

    #[tokio::test]
    async fn a_request_crossing_the_close_of_its_pooled_connection_is_sent_again() {
        let dir = std::env::temp_dir().join(format!("pbfast-fallback-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let socket = dir.join("close.sock");
        let _ = std::fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket).unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        tokio::spawn(closing_server(listener, requests.clone()));
        let fallback = Fallback::new(socket.clone(), Duration::from_secs(10), 4, Duration::from_secs(1));
        let mut retries = Vec::new();
        for (method, body) in [("GET", Bytes::new()), ("POST", Bytes::from_static(b"{\"a\":1}")), ("DELETE", Bytes::new())] {
            let outcome = fallback.send(head(method), HandOverBody::Whole(body)).await;
            let response = outcome.result.expect("answered");
            assert_eq!(response.status(), 200);
            assert_eq!(response.into_body().collect().await.unwrap().to_bytes(), "ok");
            retries.push(outcome.retried.len());
        }
        // The first request opened the pooled connection; the second crossed its close and was sent again on
        // a new connection (the third found the pooled one closed, or crossed its close too).
        assert_eq!(retries[..2], [0, 1]);
        assert!(retries[2] <= 1);
        assert_eq!(requests.lock().len(), 3);
        assert!(requests.lock()[1].starts_with("POST /x HTTP/1.1\r\n"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_socket_nobody_listens_on_is_unreachable_after_the_connect_wait() {
        let socket = std::env::temp_dir().join(format!("pbfast-fallback-none-{}.sock", std::process::id()));
        let fallback = Fallback::new(socket, Duration::from_secs(10), 4, Duration::from_millis(60));
        let started = std::time::Instant::now();
        let outcome = fallback.send(head("GET"), HandOverBody::Whole(Bytes::new())).await;
        assert!(matches!(outcome.result, Err(Failure::Unreachable(_))));
        assert!(!outcome.retried.is_empty());
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn a_streamed_body_is_sent_again_only_while_untouched() {
        let (body, kept) = Attempt::split(HandOverBody::Streamed(body::full(Bytes::from_static(b"abc"))));
        drop(body);
        assert!(matches!(kept.take_back(), Some(HandOverBody::Streamed(_))));
        let (body, kept) = Attempt::split(HandOverBody::Streamed(body::full(Bytes::from_static(b"abc"))));
        assert_eq!(body.collect().await.unwrap().to_bytes(), "abc");
        assert!(kept.take_back().is_none());
    }
}
