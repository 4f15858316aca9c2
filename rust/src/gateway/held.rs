//! Event streams a node holds outside its HTTP server (`crate::stream_holder`).
//!
//! A `GET .../api/realtime` goes to the node with [`wire::STREAM_HOLDER`] (the cluster token: only a gateway
//! may ask). A node with a holder admits the stream and answers at once: the stream's head (status, content
//! type, CORS...), an empty body, and [`wire::STREAM_HELD`] `<port> <ticket>`. The gateway then attaches the
//! ticket through its one multiplexed connection to the holder on the node's host at that port
//! ([`super::held_mux`]), and the stream's frames read from there are the answer's body ([`HeldBody`]); the
//! node's connection went back to the pool with the empty answer. The holder's end record is the stream's
//! clean end (the client gets the last chunk), a broken record a broken stream. Answers handed over by the
//! Python side come from a node in this process (the Python side never forwards the request header to
//! another node): their holder is on loopback.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, CONTENT_LENGTH};
use http::Method;
use http_body::{Body, Frame};

use super::body::BoxError;
use crate::stream_holder::streams::{LocalReader, Read};
use super::wire;

/// Whether a request may be answered by a node's stream holder (the node decides).
pub fn may_be_held(method: &Method, path: &str) -> bool {
    method == Method::GET && path.ends_with("/api/realtime")
}

/// Where a node holds the stream it answered.
#[derive(Debug, PartialEq, Eq)]
pub struct Held {
    pub port: u16,
    pub ticket: String,
}

/// The answer's [`wire::STREAM_HELD`], taken out of `headers` with the empty body's length; None when the
/// answer is not a held stream (or the header is malformed: the answer then goes out as it is).
pub fn take(headers: &mut HeaderMap) -> Option<Held> {
    let value = headers.get(wire::STREAM_HELD)?.to_str().ok()?;
    let (port, ticket) = value.split_once(' ')?;
    let held = Held { port: port.parse().ok()?, ticket: ticket.to_owned() };
    if held.ticket.is_empty() || !held.ticket.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    headers.remove(wire::STREAM_HELD);
    headers.remove(CONTENT_LENGTH);
    Some(held)
}

/// The host part of `host:port` (an IPv6 address keeps its brackets).
pub fn host_of(authority: &str) -> &str {
    authority.rsplit_once(':').map_or(authority, |(host, _)| host)
}

/// Read the stream from its holder: a holder of this process (an all-in-one's node) from its buffers
/// directly, any other through this gateway's multiplexed connection to it ([`super::held_mux`]).
pub async fn attach(host: &str, held: &Held, token: &HeaderValue, connect_timeout: Duration) -> io::Result<HeldBody> {
    let ticket = u64::from_str_radix(&held.ticket, 16).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad ticket"))?;
    if let Some(local) = crate::stream_holder::attach_local(held.port, token.as_bytes(), ticket) {
        return Ok(HeldBody(local));
    }
    Ok(HeldBody(super::held_mux::attach(host, held.port, token.as_bytes(), ticket, connect_timeout).await?))
}

/// The stream's bytes as the holder queues them; ends at its clean end. No buffer of its own while idle.
pub struct HeldBody(LocalReader);

impl Body for HeldBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Poll::Ready(match ready!(self.get_mut().0.poll_read(cx)) {
            Read::Frames(frames) => Some(Ok(Frame::data(frames))),
            Read::Ended => None,
            Read::Broken(reason) => Some(Err(format!("held stream ended: {reason:?}").into())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_answer_names_its_port_and_ticket_and_loses_its_length() {
        let mut headers = HeaderMap::new();
        headers.insert(wire::STREAM_HELD, HeaderValue::from_static("41234 9f0a"));
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        headers.insert("content-type", HeaderValue::from_static("text/event-stream"));
        assert_eq!(take(&mut headers), Some(Held { port: 41234, ticket: "9f0a".into() }));
        assert!(headers.get(wire::STREAM_HELD).is_none() && headers.get(CONTENT_LENGTH).is_none());
        assert_eq!(headers.len(), 1);
        for bad in ["41234", "x 9f", "41234 ", "41234 zz", "70000 9f"] {
            let mut headers = HeaderMap::new();
            headers.insert(wire::STREAM_HELD, HeaderValue::from_static(bad));
            assert_eq!(take(&mut headers), None, "{bad}");
        }
    }

    #[test]
    fn hosts_and_requests() {
        assert_eq!(host_of("10.0.0.5:8090"), "10.0.0.5");
        assert_eq!(host_of("[::1]:8090"), "[::1]");
        assert!(may_be_held(&Method::GET, "/t/acme/api/realtime"));
        assert!(!may_be_held(&Method::POST, "/t/acme/api/realtime"));
        assert!(!may_be_held(&Method::GET, "/t/acme/api/realtime/x"));
    }
}
