//! HTTP/2 with prior knowledge (h2c) on the native listener: what granian served before the native
//! listener took the public port, so clients that spoke h2c to an all-in-one still can. A connection is
//! told from HTTP/1 by its first bytes ([`super::target::TargetNormaliser::sniff`]); its requests go
//! through the same [`DataPath`] as HTTP/1 ones (to the node or the Python side over HTTP/1.1).
//!
//! Bounds: at most [`MAX_STREAMS`] requests at once per connection, heads up to the HTTP/1 head limit, a
//! ping every client idle time (a dead client is dropped after [`PING_TIMEOUT`]), and a connection with no
//! request in flight for the client idle time (up to twice that) is closed with a GOAWAY, as HTTP/1 closes
//! idle keep-alive connections.
//!
//! Thread-safety: one task per connection on its server thread; [`Activity`] is shared with the
//! connection's request tasks (same thread, atomics only for `Send`).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::graceful::Watcher;
use tokio::sync::watch;

use super::body::{BoxError, ProxyBody};
use super::forward::DataPath;
use super::headers::Peer;
use super::target::Malformed;

/// Requests at once on one connection (granian's default too).
pub const MAX_STREAMS: u32 = 200;
/// How long a ping may go unanswered before the connection is dropped.
pub const PING_TIMEOUT: Duration = Duration::from_secs(20);

/// The server side of h2c connections, configured once per server thread.
pub fn builder(max_header_bytes: usize, client_idle: Duration) -> http2::Builder<TokioExecutor> {
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS)
        .max_header_list_size(u32::try_from(max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(client_idle))
        .keep_alive_timeout(PING_TIMEOUT);
    builder
}

/// Requests in flight on one connection, and how many began or ended (it changes whenever the connection
/// is used).
#[derive(Default)]
pub struct Activity {
    in_flight: AtomicUsize,
    events: AtomicU64,
}

impl Activity {
    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Relaxed);
        self.events.fetch_add(1, Relaxed);
        InFlight(self.clone())
    }

    /// `Some(events)` when nothing is in flight; the caller compares it with the previous look.
    fn quiet(&self) -> Option<u64> {
        (self.in_flight.load(Relaxed) == 0).then(|| self.events.load(Relaxed))
    }
}

/// One request in flight, until its answer's body has been sent (or dropped).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
        self.0.events.fetch_add(1, Relaxed);
    }
}

/// An answer's body that holds its request's [`InFlight`].
struct Tracked {
    body: ProxyBody,
    _in_flight: InFlight,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Everything one h2c connection needs.
pub struct Connection<I> {
    pub io: I,
    pub path: Arc<DataPath>,
    pub client: Arc<Peer>,
    pub malformed: Arc<Malformed>,
    /// Keeps the server's graceful shutdown waiting for this connection.
    pub watcher: Watcher,
    /// The server's stop signal: close with a GOAWAY and let requests in flight finish.
    pub stop: watch::Receiver<Option<Duration>>,
    pub client_idle: Duration,
}

/// Serve one h2c connection until it ends (see the module docs for when it is closed).
pub async fn serve<I>(builder: &http2::Builder<TokioExecutor>, connection: Connection<I>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let Connection { io, path, client, malformed, watcher, mut stop, client_idle } = connection;
    let activity = Arc::new(Activity::default());
    let tracked = activity.clone();
    let service = service_fn(move |request: Request<Incoming>| {
        let in_flight = tracked.begin();
        let answer = path.clone().handle(client.clone(), malformed.clone(), request);
        async move {
            let response = answer.await?;
            Ok::<_, Infallible>(response.map(|body| Tracked { body, _in_flight: in_flight }.boxed_unsync()))
        }
    });
    let connection = builder.serve_connection(io, service);
    let mut connection = std::pin::pin!(connection);
    let mut closing = false;
    let mut last_look = None;
    loop {
        tokio::select! {
            _ = connection.as_mut() => break,
            () = tokio::time::sleep(client_idle), if !closing => {
                let look = activity.quiet();
                if look.is_some() && look == last_look {
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
                last_look = look;
            }
            _ = stop.changed(), if !closing => {
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
    drop(watcher);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activity_is_quiet_only_with_nothing_in_flight_and_changes_with_each_request() {
        let activity = Arc::new(Activity::default());
        let first = activity.quiet();
        assert_eq!(first, Some(0));
        let request = activity.begin();
        assert_eq!(activity.quiet(), None);
        drop(request);
        assert!(activity.quiet().is_some() && activity.quiet() != first);
    }
}
