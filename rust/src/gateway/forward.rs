//! One request through the native data path.
//!
//! The fast path: the request names a tenant whose route is active on an `http://` node, so it is
//! forwarded there over a pooled keep-alive connection with the cluster token and the route's epoch,
//! and the node's answer streams back. Everything else is handed to the gateway's Python side over its
//! Unix socket, unchanged but for the client's address (`x-pbfast-client`): the gateway's own routes,
//! unknown tenants (and the wait for the first routing table), inactive tenants (a move is waited for
//! there), in-process and `https://` nodes.
//!
//! Failures: a connect failure or timeout counts against the node's circuit breaker; while it is open
//! the answer is 503 with `Retry-After`. When nothing reached the client and the body can be sent again
//! (it was read whole: up to [`SMALL_BODY_BYTES`] with a `Content-Length`), the request gets one second
//! chance: after a connect failure or an open breaker if the tenant's route changed meanwhile, after
//! the node's "tenant has moved" answer once the table has caught up (waited for at most the move wait).
//! If the route became inactive (a move in progress, say) the request goes to the Python side, which
//! waits for the move. A hand-over that could not have reached the Python side is sent again; one that
//! failed otherwise is a 502, logged (see [`super::fallback`]). Every error answer is PocketBase's
//! `{"status","message","data"}`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::uri::{Authority, PathAndQuery};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use pyo3::Py;
use tokio::time::Instant;

use super::access_log::AccessLog;
use super::body::{self, body_error, BodyError, Idle, Limited, ProxyBody};
use super::fallback::Fallback;
use super::headers::{self, Peer};
use super::h1::{FastPool, NodeBody, Outgoing};
use super::held::{self, Held};
use super::in_process::InProcess;
use super::wire;
use super::pool::{NodePool, Returning, SendError};
use super::stats::{Retry, Stats, Upstream};
use super::target::{Malformed, MALFORMED_METHOD};
use super::warnings::Warnings;
use crate::breaker::CircuitBreakers;
use crate::routing::{parse_target, ForwardPath, Route, RoutingTable};

/// Request bodies up to this size with a `Content-Length` are read whole (and can be sent again).
pub const SMALL_BODY_BYTES: u64 = 64 << 10;
/// How often a request waiting for the routing table to change looks at it again.
const ROUTE_POLL: Duration = Duration::from_millis(5);

/// Limits of the data path (see `GatewayServer` in the stub for their meaning).
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_body_bytes: u64,
    pub max_header_bytes: usize,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub client_idle: Duration,
    pub move_wait: Duration,
}

/// What every thread's data path shares. Thread-safe: the routing table and the breakers are
/// lock-free / internally locked, the counters atomic.
pub struct Shared {
    pub routes: Py<RoutingTable>,
    pub breakers: Py<CircuitBreakers>,
    pub token: HeaderValue,
    pub limits: Limits,
    pub stats: Stats,
    /// The access log, when on.
    pub access_log: Option<AccessLog>,
    /// What went wrong that is nobody's answer (Python logs it).
    pub warnings: Warnings,
    /// The all-in-one's queue to the event loop (plain requests skip the Unix socket: [`in_process`]).
    pub in_process: Option<Arc<InProcess>>,
}

/// Where and how a thread's clients connect.
#[derive(Debug, Clone)]
pub struct Pools {
    pub fallback_socket: std::path::PathBuf,
    pub idle: Duration,
    pub max_idle_per_node: usize,
}

/// One server thread's data path: the shared state plus that thread's connection pools (so a request
/// and its node connection stay on one thread).
pub struct DataPath {
    shared: Arc<Shared>,
    /// How often idle node connections are swept.
    pub sweep_every: Duration,
    /// Requests with a body read whole (almost all): the raw HTTP/1.1 client.
    fast: Arc<FastPool>,
    /// Requests with a streamed body: hyper's client.
    nodes: Arc<NodePool>,
    /// Everything else: the gateway's Python side.
    pub(super) fallback: Fallback,
}

impl std::ops::Deref for DataPath {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.shared
    }
}

/// The request body as the data path holds it.
pub(super) enum RequestBody {
    /// Read whole (possibly empty): can be sent any number of times.
    Whole(Bytes),
    /// Still with the client: can be sent once.
    Streamed(Option<ProxyBody>),
}

impl RequestBody {
    fn replayable(&self) -> bool {
        matches!(self, RequestBody::Whole(_))
    }

    /// The body for one attempt (a streamed body only once: later attempts get an empty one).
    fn take(&mut self) -> ProxyBody {
        match self {
            RequestBody::Whole(data) if data.is_empty() => body::empty(),
            RequestBody::Whole(data) => body::full(data.clone()),
            RequestBody::Streamed(stream) => stream.take().unwrap_or_else(body::empty),
        }
    }
}

/// A node's answer body, from either client.
enum NodeAnswer {
    Raw(NodeBody),
    Pooled(Returning),
}

impl NodeAnswer {
    /// The body for the client; `streaming` (an event stream): without a read timeout.
    fn into_body(self, streaming: bool) -> ProxyBody {
        match (self, streaming) {
            (NodeAnswer::Raw(body), false) => body.boxed_unsync(),
            (NodeAnswer::Raw(body), true) => body.without_timeout().boxed_unsync(),
            (NodeAnswer::Pooled(body), false) => body.into_proxy_body(),
            (NodeAnswer::Pooled(body), true) => body.without_timeout().into_proxy_body(),
        }
    }
}

/// The node did not answer within the read timeout.
struct TimedOut;

/// One attempt's verdict on its node's breaker, recorded exactly once: a half-open probe slot taken by
/// `allow` is given back however the attempt ends, even when its future is dropped (the client went
/// away, shutdown).
struct Verdict<'a> {
    breakers: &'a CircuitBreakers,
    node: &'a str,
    open: bool,
}

impl<'a> Verdict<'a> {
    fn new(breakers: &'a CircuitBreakers, node: &'a str) -> Self {
        Verdict { breakers, node, open: true }
    }

    /// The node answered (or was reached): it is healthy.
    fn success(&mut self) {
        if std::mem::take(&mut self.open) {
            self.breakers.record_success(self.node);
        }
    }

    /// The node could not be connected to in time.
    fn failure(&mut self) {
        if std::mem::take(&mut self.open) {
            self.breakers.record_failure(self.node);
        }
    }
}

impl Drop for Verdict<'_> {
    fn drop(&mut self) {
        if self.open {
            self.breakers.release(self.node);
        }
    }
}

/// Methods whose requests carry no body unless they say so.
fn is_bodyless(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS | Method::TRACE)
}

/// What became of a tenant's route since a request looked at it.
enum Change {
    /// The same route (still active).
    Same,
    /// Active on another node or with another epoch: try there.
    Active(Route),
    /// Gone, inactive, or on a node this path cannot reach: the Python side decides.
    Elsewhere,
}

/// How a request was answered: here (counted in [`Stats`]) or by the Python side (counted there).
pub(super) enum Answer {
    Native(Response<ProxyBody>),
    /// A node's answer: its CORS headers are PocketBase's; the node's own refusals (busy, moved) have none.
    Node(Response<ProxyBody>),
    HandedOver(Response<ProxyBody>),
}

impl DataPath {
    /// A data path for the calling thread's runtime (its clients spawn their connections there).
    pub fn new(shared: Arc<Shared>, pools: &Pools) -> Self {
        let limits = &shared.limits;
        let nodes = Arc::new(NodePool::new(limits.connect_timeout, pools.idle, pools.max_idle_per_node, limits.read_timeout));
        let fast = Arc::new(FastPool::new(limits.connect_timeout, pools.idle, pools.max_idle_per_node, limits.read_timeout));
        let fallback = Fallback::new(pools.fallback_socket.clone(), pools.idle, pools.max_idle_per_node, limits.connect_timeout);
        let sweep_every = (pools.idle / 2).max(Duration::from_millis(200));
        DataPath { shared, sweep_every, fast, nodes, fallback }
    }

    pub fn limits(&self) -> &Limits {
        &self.shared.limits
    }

    /// Close pooled node connections that expired or were closed by their node (see `serve`).
    pub fn sweep_idle(&self) {
        self.fast.sweep();
        self.nodes.sweep();
    }

    /// Answer one client request (never fails: errors are PocketBase JSON answers).
    pub async fn handle(
        self: Arc<Self>,
        client: Arc<Peer>,
        malformed: Arc<Malformed>,
        mut req: Request<Incoming>,
    ) -> Result<Response<ProxyBody>, Infallible> {
        let started = Instant::now();
        if req.version() == Version::HTTP_2 {
            headers::join_cookies(req.headers_mut());
        }
        // The request's id goes to the node (or the Python side) with the request and back to the client.
        let request_id = headers::request_id(req.headers().get(headers::REQUEST_ID));
        req.headers_mut().insert(headers::REQUEST_ID, request_id.clone());
        let origin = req.headers().contains_key(header::ORIGIN);
        let logged = self.access_log.as_ref().map(|_| {
            (req.method().clone(), req.uri().path_and_query().map_or_else(|| req.uri().to_string(), |pq| pq.to_string()))
        });
        let answer = if malformed.is_set() && req.method().as_str() == MALFORMED_METHOD {
            // Go answers such a request line 400 and closes the connection; so does this path, in JSON.
            let mut response = error(StatusCode::BAD_REQUEST, "The request line is malformed.", None);
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            Answer::Native(response)
        } else {
            self.serve(&client, req).await
        };
        let mut response = match answer {
            Answer::Native(mut response) => {
                self.stats.observe(response.status().as_u16(), started.elapsed());
                // The gateway's own answers (a node's carry PocketBase's CORS headers, Vary among them).
                if !response.headers().contains_key(header::VARY) {
                    headers::mark_cors(response.headers_mut(), origin);
                }
                response
            }
            Answer::Node(mut response) => {
                self.stats.observe(response.status().as_u16(), started.elapsed());
                // PocketBase answers a redirect to the clean path before its CORS middleware: none is added.
                if !response.headers().contains_key(header::VARY) && !response.status().is_redirection() {
                    headers::mark_cors(response.headers_mut(), origin);
                }
                response
            }
            Answer::HandedOver(response) => response,
        };
        if let (Some(log), Some((method, target))) = (self.access_log.as_ref(), logged) {
            let client = client.value.to_str().unwrap_or("-");
            let id = request_id.to_str().unwrap_or("-");
            log.record(client, method.as_str(), &target, response.status().as_u16(), started.elapsed(), id);
        }
        response.headers_mut().insert(headers::REQUEST_ID, request_id);
        Ok(response)
    }

    fn lookup(&self, tenant: &str) -> Option<Route> {
        self.routes.get().lookup(tenant)
    }

    /// A route this path forwards to itself (else the Python side handles the request).
    fn is_direct(route: &Route) -> bool {
        route.active && route.address.starts_with("http://")
    }

    async fn serve(&self, client: &Peer, req: Request<Incoming>) -> Answer {
        let (parts, incoming) = req.into_parts();
        let host = parts.headers.get(header::HOST).cloned().or_else(|| {
            parts.uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        if parts.method == Method::CONNECT {
            return Answer::Native(error(StatusCode::METHOD_NOT_ALLOWED, "The gateway does not tunnel (CONNECT).", None));
        }
        let path = parts.uri.path();
        let table = self.routes.get();
        let target = match parse_target(path, host.as_ref().and_then(|h| h.to_str().ok()), table.base_domain()) {
            Err(_) => {
                return Answer::Native(error(
                    StatusCode::BAD_REQUEST,
                    "Invalid tenant id: it must be a DNS label (a-z, 0-9, '-', at most 63).",
                    None,
                ))
            }
            Ok(None) => return self.read_and_hand_over(client, parts, incoming).await,
            Ok(Some(target)) => target,
        };
        let tenant: Box<str> = target.tenant.as_ref().into();
        let forward: &str = match target.forward {
            ForwardPath::Unchanged if !path.starts_with('/') => "/", // `OPTIONS *`, authority-form
            ForwardPath::Unchanged => path,
            ForwardPath::Slice(rest) => rest,
        };
        let mut path_and_query = String::with_capacity(3 + tenant.len() + forward.len() + 1 + parts.uri.query().map_or(0, str::len));
        path_and_query.push_str("/t/");
        path_and_query.push_str(&tenant);
        path_and_query.push_str(forward);
        if let Some(query) = parts.uri.query() {
            path_and_query.push('?');
            path_and_query.push_str(query);
        }
        let Ok(path_and_query) = PathAndQuery::try_from(path_and_query) else {
            return Answer::Native(error(StatusCode::BAD_REQUEST, "Invalid request path.", None));
        };
        let route = match self.lookup(&tenant) {
            Some(route) if Self::is_direct(&route) => route,
            _ => return self.read_and_hand_over(client, parts, incoming).await,
        };

        if headers::header_bytes(&parts.headers) > self.limits.max_header_bytes {
            return Answer::Native(error(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "Request header fields too large.", None));
        }
        let mut body = match self.read_body(&parts.headers, incoming).await {
            Ok(body) => body,
            Err(answer) => return Answer::Native(answer),
        };
        self.forward(client, parts, host, &tenant, path_and_query, route, &mut body).await
    }

    /// The request body: small ones with a `Content-Length` read whole, others left streaming.
    pub(super) async fn read_body(&self, headers: &HeaderMap, incoming: Incoming) -> Result<RequestBody, Response<ProxyBody>> {
        let limit = self.limits.max_body_bytes;
        let declared = match headers.get(header::CONTENT_LENGTH) {
            None => None,
            Some(value) => match value.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()) {
                Some(length) => Some(length),
                None => return Err(error(StatusCode::BAD_REQUEST, "Invalid Content-Length header.", None)),
            },
        };
        match declared {
            Some(length) if length > limit => Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("The request body is larger than {limit} bytes."),
                None,
            )),
            Some(0) => Ok(RequestBody::Whole(Bytes::new())),
            Some(length) if length <= SMALL_BODY_BYTES => {
                match tokio::time::timeout(self.limits.client_idle, incoming.collect()).await {
                    Ok(Ok(collected)) => {
                        let data = collected.to_bytes();
                        if data.len() as u64 != length {
                            return Err(error(StatusCode::BAD_REQUEST, "The request body does not match its Content-Length.", None));
                        }
                        Ok(RequestBody::Whole(data))
                    }
                    Ok(Err(_)) => Err(error(StatusCode::BAD_REQUEST, "The request body could not be read.", None)),
                    Err(_) => Err(error(StatusCode::REQUEST_TIMEOUT, "Timed out reading the request body.", None)),
                }
            }
            _ if declared.is_none() && incoming.is_end_stream() => Ok(RequestBody::Whole(Bytes::new())),
            _ => Ok(RequestBody::Streamed(Some(stream_body(incoming, &self.limits)))),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn forward(
        &self,
        client: &Peer,
        parts: Parts,
        host: Option<HeaderValue>,
        tenant: &str,
        path_and_query: PathAndQuery,
        mut route: Route,
        body: &mut RequestBody,
    ) -> Answer {
        let mut rerouted = false;
        loop {
            let address: &str = &route.address;
            let breakers = self.breakers.get();
            if !breakers.allow(address) {
                self.stats.upstream_error(Upstream::BreakerOpen);
                if !rerouted && body.replayable() {
                    match self.changed(tenant, &route) {
                        Change::Active(new) => {
                            rerouted = true;
                            self.stats.retry(Retry::Unreachable);
                            route = new;
                            continue;
                        }
                        Change::Elsewhere => return self.hand_over_again(client, parts, body).await,
                        Change::Same => {}
                    }
                }
                let wait = breakers.retry_after_duration(address).as_secs_f64().ceil().max(1.0) as u64;
                return Answer::Native(error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The tenant's node is unavailable; retry shortly.",
                    Some(wait),
                ));
            }
            let mut verdict = Verdict::new(breakers, address);
            let Some(authority) = node_authority(address) else {
                return Answer::Native(error(StatusCode::BAD_GATEWAY, "The tenant's node address is invalid.", None));
            };
            let sent = match body {
                RequestBody::Whole(data) => {
                    // The hot path: one write of head and body on a raw keep-alive connection.
                    let mut bytes = Vec::with_capacity(384 + path_and_query.as_str().len() + data.len());
                    bytes.extend_from_slice(parts.method.as_str().as_bytes());
                    bytes.push(b' ');
                    bytes.extend_from_slice(path_and_query.as_str().as_bytes());
                    bytes.extend_from_slice(b" HTTP/1.1\r\n");
                    headers::write_to_node(&mut bytes, &parts.headers, client, host.as_ref(), authority, &self.token, route.epoch);
                    if path_and_query.path().contains('%') {
                        bytes.extend_from_slice(wire::RAW_PATH.as_bytes());
                        bytes.extend_from_slice(b": ");
                        bytes.extend_from_slice(path_and_query.path().as_bytes());
                        bytes.extend_from_slice(b"\r\n");
                    }
                    if held::may_be_held(&parts.method, path_and_query.path()) {
                        bytes.extend_from_slice(wire::STREAM_HOLDER.as_bytes());
                        bytes.extend_from_slice(b": ");
                        bytes.extend_from_slice(self.token.as_bytes());
                        bytes.extend_from_slice(b"\r\n");
                    }
                    if !data.is_empty() || !is_bodyless(&parts.method) {
                        bytes.extend_from_slice(format!("content-length: {}\r\n", data.len()).as_bytes());
                    }
                    bytes.extend_from_slice(b"\r\n");
                    bytes.extend_from_slice(data);
                    let outgoing = Outgoing {
                        bytes: &bytes,
                        head_only: parts.method == Method::HEAD,
                        idempotent: parts.method.is_idempotent(),
                    };
                    let send = self.fast.send(&route.address, authority, outgoing);
                    tokio::time::timeout(self.limits.read_timeout, send)
                        .await
                        .map(|r| r.map(|response| response.map(NodeAnswer::Raw)))
                        .map_err(|_| TimedOut)
                }
                RequestBody::Streamed(_) => {
                    // The read timeout starts once the client's body has been sent: a slow upload is the
                    // client's (bounded by the client idle timeout), not the node's.
                    let (upload, uploaded) = body::Ended::wrap(body.take());
                    let mut request = Request::new(upload);
                    *request.method_mut() = parts.method.clone();
                    *request.uri_mut() = Uri::from(path_and_query.clone());
                    *request.version_mut() = Version::HTTP_11;
                    let mut node_headers = headers::to_node(&parts.headers, client, host.as_ref(), &self.token, route.epoch);
                    if held::may_be_held(&parts.method, path_and_query.path()) {
                        node_headers.insert(wire::STREAM_HOLDER, self.token.clone());
                    }
                    if path_and_query.path().contains('%') {
                        if let Ok(raw) = HeaderValue::from_str(path_and_query.path()) {
                            node_headers.insert(wire::RAW_PATH, raw);
                        }
                    }
                    if !node_headers.contains_key(header::HOST) {
                        if let Ok(value) = HeaderValue::from_str(authority) {
                            node_headers.insert(header::HOST, value);
                        }
                    }
                    *request.headers_mut() = node_headers;
                    let send = self.nodes.send(&route.address, authority, request);
                    let read_timeout = self.limits.read_timeout;
                    let expired = async move {
                        let _ = uploaded.await; // sent, or failed (the send fails with it)
                        tokio::time::sleep(read_timeout).await;
                    };
                    tokio::select! {
                        sent = send => Ok(sent.map(|response| response.map(NodeAnswer::Pooled))),
                        () = expired => Err(TimedOut),
                    }
                }
            };
            let failure = match sent {
                Ok(Ok(response)) => {
                    verdict.success();
                    match self.answer(response) {
                        Ok((answer, None)) => return Answer::Node(answer),
                        Ok((answer, Some(at))) => {
                            return Answer::Node(self.held_stream(held::host_of(authority), tenant, &at, answer).await)
                        }
                        Err(()) => None, // the node says the tenant moved
                    }
                }
                Ok(Err(SendError::Connect(_))) => {
                    verdict.failure();
                    self.stats.upstream_error(Upstream::Connect);
                    Some((StatusCode::BAD_GATEWAY, "The tenant's node is unreachable."))
                }
                Ok(Err(SendError::ConnectTimeout)) => {
                    verdict.failure();
                    self.stats.upstream_error(Upstream::ConnectTimeout);
                    Some((StatusCode::GATEWAY_TIMEOUT, "The tenant's node did not accept a connection in time."))
                }
                Ok(Err(SendError::Exchange(err))) => {
                    verdict.success(); // reached, then broke: not a connect failure
                    if let Some(kind) = body_error(&err) {
                        return Answer::Native(client_body_error(kind, self.limits.max_body_bytes));
                    }
                    self.stats.upstream_error(Upstream::Reset);
                    return Answer::Native(error(StatusCode::BAD_GATEWAY, "The tenant's node closed the connection.", Some(1)));
                }
                Ok(Err(SendError::Io(_))) => {
                    verdict.success();
                    self.stats.upstream_error(Upstream::Reset);
                    return Answer::Native(error(StatusCode::BAD_GATEWAY, "The tenant's node closed the connection.", Some(1)));
                }
                Err(TimedOut) => {
                    // Reached but slow: one tenant's slow request says nothing about the node's other
                    // tenants, so only connect failures count against the node's breaker.
                    drop(verdict);
                    self.stats.upstream_error(Upstream::Timeout);
                    return Answer::Native(error(StatusCode::GATEWAY_TIMEOUT, "The tenant's node did not answer in time.", Some(1)));
                }
            };
            drop(verdict);
            // Nothing of this attempt reached the client: a second chance where the route allows one.
            let moved = failure.is_none();
            if !rerouted && body.replayable() {
                let change = if moved { self.wait_for_change(tenant, &route).await } else { self.changed(tenant, &route) };
                match change {
                    Change::Active(new) => {
                        rerouted = true;
                        self.stats.retry(if moved { Retry::Moved } else { Retry::Unreachable });
                        route = new;
                        continue;
                    }
                    Change::Elsewhere => return self.hand_over_again(client, parts, body).await,
                    Change::Same => {}
                }
            }
            let (status, message) = failure.unwrap_or((StatusCode::SERVICE_UNAVAILABLE, "The tenant has moved; retry."));
            return Answer::Native(error(status, message, Some(1)));
        }
    }

    /// The node's answer for the client; `Err(())` when it is the node's "tenant has moved" 503 (marked
    /// with [`headers::MOVED`]).
    /// A held event stream ([`held`]) comes with where to read it.
    fn answer(&self, response: Response<NodeAnswer>) -> Result<(Response<ProxyBody>, Option<Held>), ()> {
        let (mut parts, incoming) = response.into_parts();
        if parts.status == StatusCode::SERVICE_UNAVAILABLE && parts.headers.contains_key(headers::MOVED) {
            return Err(());
        }
        let at = held::take(&mut parts.headers);
        headers::strip_response(&mut parts.headers);
        let streaming = super::event_stream::is_event_stream(&parts.headers);
        Ok((Response::from_parts(parts, incoming.into_body(streaming)), at))
    }

    /// The answer of `tenant`'s stream held at `host` (`at`): its head, and the stream read from the holder as
    /// its body.
    pub(super) async fn held_stream(&self, host: &str, tenant: &str, at: &Held, answer: Response<ProxyBody>) -> Response<ProxyBody> {
        let (parts, empty) = answer.into_parts();
        let _ = empty.collect().await; // read to its end: its node connection goes back to the pool
        match held::attach(host, tenant, at, &self.token, self.limits.connect_timeout).await {
            Ok(stream) => Response::from_parts(parts, stream.boxed_unsync()),
            Err(_) => {
                self.stats.upstream_error(Upstream::Reset);
                error(StatusCode::BAD_GATEWAY, "The tenant's node closed the connection.", Some(1))
            }
        }
    }

    /// The tenant's route now, compared with `before`.
    fn changed(&self, tenant: &str, before: &Route) -> Change {
        match self.lookup(tenant) {
            Some(now) if Self::is_direct(&now) => {
                if now.address == before.address && now.epoch == before.epoch {
                    Change::Same
                } else {
                    Change::Active(now)
                }
            }
            _ => Change::Elsewhere,
        }
    }

    /// Wait (at most the move wait) until the tenant's route differs from `before`.
    async fn wait_for_change(&self, tenant: &str, before: &Route) -> Change {
        let deadline = Instant::now() + self.limits.move_wait;
        loop {
            match self.changed(tenant, before) {
                Change::Same if Instant::now() < deadline => tokio::time::sleep(ROUTE_POLL).await,
                change => return change,
            }
        }
    }

}

/// A client body the data path streams on: bounded in size and in idle time.
fn stream_body(incoming: Incoming, limits: &Limits) -> ProxyBody {
    if incoming.is_end_stream() {
        return body::empty();
    }
    // Any error of the client's own body (hyper's: a malformed chunk size, an early close) is the
    // client's fault: tagged so that the answer is a 400, not the 502 of a failed exchange with the node.
    let incoming = incoming.map_err(|_| BodyError::ClientBroken);
    Limited::new(Idle::new(incoming, limits.client_idle, BodyError::ClientIdle), limits.max_body_bytes).boxed_unsync()
}

pub(super) fn client_body_error(kind: BodyError, limit: u64) -> Response<ProxyBody> {
    match kind {
        BodyError::TooLarge => error(StatusCode::PAYLOAD_TOO_LARGE, &format!("The request body is larger than {limit} bytes."), None),
        BodyError::ClientIdle => error(StatusCode::REQUEST_TIMEOUT, "Timed out reading the request body.", None),
        BodyError::ClientBroken => error(StatusCode::BAD_REQUEST, "The request body could not be read.", None),
        BodyError::UpstreamIdle => error(StatusCode::GATEWAY_TIMEOUT, "The tenant's node did not answer in time.", Some(1)),
    }
}

/// `host:port` of a node address `http://host:port` (None when it is not one).
fn node_authority(address: &str) -> Option<&str> {
    let rest = address.strip_prefix("http://")?.trim_end_matches('/');
    (!rest.is_empty() && Authority::try_from(rest).is_ok() && !rest.contains(['/', '?', '#', '@'])).then_some(rest)
}

/// PocketBase's error answer `{"status","message","data":{}}`, with `Retry-After` when given.
pub fn error(status: StatusCode, message: &str, retry_after: Option<u64>) -> Response<ProxyBody> {
    let mut text = String::with_capacity(message.len() + 48);
    text.push_str("{\"status\":");
    text.push_str(status.as_str());
    text.push_str(",\"message\":\"");
    for c in message.chars() {
        match c {
            '"' => text.push_str("\\\""),
            '\\' => text.push_str("\\\\"),
            c if (c as u32) < 0x20 => text.push_str(&format!("\\u{:04x}", c as u32)),
            c => text.push(c),
        }
    }
    text.push_str("\",\"data\":{}}");
    let mut response = Response::new(body::full(Bytes::from(text)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(seconds) = retry_after {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_answers_are_pocketbase_json() {
        let response = error(StatusCode::SERVICE_UNAVAILABLE, "a \"quoted\"\n word", Some(3));
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()["retry-after"], "3");
        assert_eq!(response.headers()["content-type"], "application/json");
    }

    #[test]
    fn a_broken_client_body_is_the_clients_error() {
        assert_eq!(client_body_error(BodyError::ClientBroken, 10).status(), StatusCode::BAD_REQUEST);
        assert_eq!(client_body_error(BodyError::TooLarge, 10).status(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[test]
    fn node_authorities() {
        assert_eq!(node_authority("http://127.0.0.1:8090"), Some("127.0.0.1:8090"));
        assert_eq!(node_authority("http://node-a:80/"), Some("node-a:80"));
        assert_eq!(node_authority("https://x"), None);
        assert_eq!(node_authority("http://bad host"), None);
        assert_eq!(node_authority("http://user@evil:1"), None);
        assert_eq!(node_authority("http://"), None);
    }
}
