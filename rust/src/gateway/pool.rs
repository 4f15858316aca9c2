//! Keep-alive HTTP/1.1 connections to tenant nodes, one pool per server thread.
//!
//! A connection is taken from the pool for one request and goes back when the node's answer has been
//! read to its end (a body dropped half-read, e.g. by a client that went away, closes it instead). Idle
//! connections older than the idle time, closed by the node, or beyond the per-node cap are dropped.
//! A request that a pooled connection could not send (closed just then) goes out on another one.
//!
//! Thread-safety: the idle lists sit behind a mutex (uncontended: each server thread has its own pool).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::body::{BodyError, IdleTimer, ProxyBody};
use super::idle::IdleConnections;

/// Why a request did not get an answer.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be made (nothing reached the node).
    Connect(io::Error),
    /// Connecting took longer than the connect timeout (nothing reached the node).
    ConnectTimeout,
    /// The exchange failed after the connection was made (the request may have reached the node).
    Exchange(hyper::Error),
    /// The same, from the raw client ([`super::h1`]).
    Io(io::Error),
}

pub struct NodePool {
    idle: IdleConnections<SendRequest<ProxyBody>>,
    connect_timeout: Duration,
    /// The longest a node may go silent while sending an answer's body.
    read_timeout: Duration,
}

impl NodePool {
    pub fn new(connect_timeout: Duration, idle_timeout: Duration, max_idle_per_node: usize, read_timeout: Duration) -> Self {
        NodePool { idle: IdleConnections::new(idle_timeout, max_idle_per_node), connect_timeout, read_timeout }
    }

    /// Send `request` (origin-form URI, Host set) to the node at `address` (`http://host:port`), whose
    /// `host:port` is `authority`.
    pub async fn send(
        self: &Arc<Self>,
        address: &Arc<str>,
        authority: &str,
        mut request: Request<ProxyBody>,
    ) -> Result<Response<Returning>, SendError> {
        while let Some(mut sender) = self.checkout(address) {
            if sender.ready().await.is_err() {
                continue; // closed meanwhile
            }
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(self.returning(address, sender, response)),
                Err(mut err) => match err.take_message() {
                    Some(unsent) => request = unsent, // never left: another connection
                    None => return Err(SendError::Exchange(err.into_error())),
                },
            }
        }
        let stream = match tokio::time::timeout(self.connect_timeout, TcpStream::connect(authority)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(err)) => return Err(SendError::Connect(err)),
            Err(_) => return Err(SendError::ConnectTimeout),
        };
        let _ = stream.set_nodelay(true);
        let (mut sender, connection) = http1::Builder::new()
            .handshake::<_, ProxyBody>(TokioIo::new(stream))
            .await
            .map_err(SendError::Exchange)?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        match sender.send_request(request).await {
            Ok(response) => Ok(self.returning(address, sender, response)),
            Err(err) => Err(SendError::Exchange(err)),
        }
    }

    /// The most recently used live idle connection to `address`.
    fn checkout(&self, address: &str) -> Option<SendRequest<ProxyBody>> {
        self.idle.checkout(address, |sender| !sender.is_closed())
    }

    fn checkin(&self, address: &Arc<str>, sender: SendRequest<ProxyBody>) {
        if !sender.is_closed() {
            self.idle.checkin(address, sender);
        }
    }

    /// Close idle connections past the idle time or closed by their node, and forget nodes without any.
    pub fn sweep(&self) {
        self.idle.sweep(|sender| !sender.is_closed());
    }

    /// The answer, its body giving the connection back to the pool once read to the end.
    fn returning(
        self: &Arc<Self>,
        address: &Arc<str>,
        sender: SendRequest<ProxyBody>,
        response: Response<Incoming>,
    ) -> Response<Returning> {
        let (parts, incoming) = response.into_parts();
        let idle = Some(IdleTimer::new(self.read_timeout));
        if incoming.is_end_stream() {
            self.checkin(address, sender);
            return Response::from_parts(parts, Returning { inner: incoming, slot: None, idle });
        }
        let slot = Some((self.clone(), address.clone(), sender));
        Response::from_parts(parts, Returning { inner: incoming, slot, idle })
    }
}

/// A node's response body: returns its connection to the pool at its end, and fails when the node
/// goes silent for the read timeout (unless [`Returning::without_timeout`]).
pub struct Returning {
    inner: Incoming,
    slot: Option<(Arc<NodePool>, Arc<str>, SendRequest<ProxyBody>)>,
    idle: Option<IdleTimer>,
}

impl Returning {
    /// No read timeout (an event stream may stay quiet as long as it likes).
    pub fn without_timeout(mut self) -> Self {
        self.idle = None;
        self
    }

    pub fn into_proxy_body(self) -> ProxyBody {
        http_body_util::BodyExt::boxed_unsync(self)
    }
}

impl Body for Returning {
    type Data = Bytes;
    type Error = super::body::BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        let done = match &polled {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(_))) => {
                if let Some(idle) = this.idle.as_mut() {
                    idle.progress();
                }
                this.inner.is_end_stream()
            }
            Poll::Ready(Some(Err(_))) => {
                this.slot = None; // a broken exchange: the connection is not reused
                false
            }
            Poll::Pending => {
                if let Some(Poll::Ready(())) = this.idle.as_mut().map(|idle| idle.poll_expired(cx)) {
                    this.slot = None;
                    return Poll::Ready(Some(Err(Box::new(BodyError::UpstreamIdle))));
                }
                false
            }
        };
        if done {
            if let Some((pool, address, sender)) = this.slot.take() {
                pool.checkin(&address, sender);
            }
        }
        polled.map(|frame| frame.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
