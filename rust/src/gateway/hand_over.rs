//! The hand-over: what the native data path does not forward to a node goes to the gateway's Python side,
//! over its Unix socket or, in the all-in-one, through the in-process queue to the event loop
//! (see [`super::in_process`] and [`super::fallback`]).

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::uri::Scheme;
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::body;
use super::fallback::{Failure, HandOverBody};
use super::forward::{client_body_error, error, Answer, DataPath, RequestBody};
use super::headers::{self, Peer};
use super::held;
use super::in_process::{self, Refused};
use super::stats::{Retry, Upstream};
use super::wire;

impl DataPath {
    /// After a failed attempt: the Python side takes over with the body read whole.
    pub(super) async fn hand_over_again(&self, client: &Peer, parts: Parts, body: &mut RequestBody) -> Answer {
        let again = match std::mem::replace(body, RequestBody::Whole(Bytes::new())) {
            RequestBody::Whole(data) => HandOverBody::Whole(data),
            RequestBody::Streamed(stream) => HandOverBody::Streamed(stream.unwrap_or_else(body::empty)),
        };
        self.hand_over(client, parts, again).await
    }

    /// Read the body as the fast path does (small ones whole, so that a failed hand-over can be sent again),
    /// then hand the request over.
    pub(super) async fn read_and_hand_over(&self, client: &Peer, parts: Parts, incoming: Incoming) -> Answer {
        match self.read_body(&parts.headers, incoming).await {
            Ok(RequestBody::Whole(data)) => self.hand_over(client, parts, HandOverBody::Whole(data)).await,
            Ok(RequestBody::Streamed(stream)) => {
                self.hand_over(client, parts, HandOverBody::Streamed(stream.unwrap_or_else(body::empty))).await
            }
            Err(answer) => Answer::Native(answer),
        }
    }

    /// Queue the request for the event loop in this process and pass its answer on (see [`in_process`]).
    async fn hand_over_in_process(&self, mut head: http::request::Parts, data: Bytes, id: &str) -> Answer {
        let Some(queue) = self.in_process.as_ref() else {
            return Answer::Native(error(StatusCode::BAD_GATEWAY, "The gateway's Python side is unreachable.", Some(1)));
        };
        if !data.is_empty() {
            // As the Unix socket's hand-over had it (hyper frames a whole body with its length).
            head.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(data.len()));
        }
        let waiting = match queue.submit(head.method, head.uri, head.headers, data) {
            Ok(waiting) => waiting,
            Err(Refused::Busy) => {
                self.stats.upstream_error(Upstream::HandOver);
                self.warnings.record("in-process hand-over queue full, answered 503".to_owned(), id);
                return Answer::Native(error(StatusCode::SERVICE_UNAVAILABLE, "The node is busy; retry shortly.", Some(1)));
            }
            Err(Refused::Closed) => {
                return Answer::Native(error(StatusCode::SERVICE_UNAVAILABLE, "The server is shutting down; retry shortly.", Some(1)));
            }
        };
        let Ok(answer) = waiting.await else {
            self.stats.upstream_error(Upstream::HandOver);
            self.warnings.record("the in-process hand-over was dropped unanswered, answered 502".to_owned(), id);
            return Answer::Native(error(StatusCode::BAD_GATEWAY, "The gateway's Python side closed the connection.", Some(1)));
        };
        let body = if answer.body.is_empty() { body::empty() } else { body::full(answer.body) };
        let mut response = Response::new(body);
        *response.status_mut() = answer.status;
        *response.headers_mut() = answer.headers;
        headers::strip_response(response.headers_mut());
        Answer::HandedOver(response)
    }

    /// Send the request to the gateway's Python side and pass its answer on. The Python side listens before
    /// this path does, so a failure here is never "not ready": what could not have reached it is sent again
    /// (see [`Fallback`]), the rest is a 502, logged with the request's id.
    pub(super) async fn hand_over(&self, client: &Peer, parts: Parts, body: HandOverBody) -> Answer {
        self.stats.handed_over();
        let uri = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority("gateway.internal")
            .path_and_query(parts.uri.path_and_query().map_or("/", |pq| pq.as_str()))
            .build();
        let Ok(uri) = uri else {
            return Answer::Native(error(StatusCode::BAD_REQUEST, "Invalid request path.", None));
        };
        let request_id = parts.headers.get(headers::REQUEST_ID).cloned();
        let id = || request_id.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("-");
        let mut head = Request::new(()).into_parts().0;
        head.method = parts.method;
        head.uri = uri;
        head.version = Version::HTTP_11;
        head.headers = headers::to_fallback(&parts.headers, client);
        if head.uri.path().contains('%') {
            if let Ok(raw) = HeaderValue::from_str(head.uri.path()) {
                head.headers.insert(wire::RAW_PATH, raw);
            }
        }
        if held::may_be_held(&head.method, head.uri.path()) {
            head.headers.insert(wire::STREAM_HOLDER, self.token.clone());
        }
        if !head.headers.contains_key(header::HOST) {
            // HTTP/2 carries the host as `:authority`, which hyper puts in the URI (both hand-overs route
            // a host-form tenant by it).
            if let Some(host) = parts.uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()) {
                head.headers.insert(header::HOST, host);
            }
        }
        let body = match body {
            HandOverBody::Whole(data)
                if self.in_process.is_some() && in_process::takes(&head.method, head.uri.path(), &parts.headers) =>
            {
                return self.hand_over_in_process(head, data, id()).await;
            }
            body => body,
        };
        let outcome = self.fallback.send(head, body).await;
        for retried in &outcome.retried {
            self.stats.retry(Retry::HandOver);
            self.warnings.record(format!("hand-over to the Python side failed, sent again: {}", retried.error), id());
        }
        let (message, detail) = match outcome.result {
            Ok(response) => {
                let (mut parts, incoming) = response.into_parts();
                // Only a node of this process answers the Python side's hand-over with a held stream.
                let at = held::take(&mut parts.headers);
                headers::strip_response(&mut parts.headers);
                let answer = Response::from_parts(parts, incoming.map_err(Into::into).boxed_unsync());
                return Answer::HandedOver(match at {
                    // The tenant is not known here (no route was looked up): "" for its connection's key.
                    Some(at) => self.held_stream("127.0.0.1", "", &at, answer).await,
                    None => answer,
                });
            }
            Err(Failure::Client(kind)) => return Answer::Native(client_body_error(kind, self.limits.max_body_bytes)),
            Err(Failure::Unreachable(detail)) => ("The gateway's Python side is unreachable.", detail),
            Err(Failure::Broken(detail)) => ("The gateway's Python side closed the connection.", detail),
        };
        self.stats.upstream_error(Upstream::HandOver);
        self.warnings.record(format!("hand-over to the Python side failed, answered 502: {detail}"), id());
        Answer::Native(error(StatusCode::BAD_GATEWAY, message, Some(1)))
    }
}
