//! Event streams a node holds outside its HTTP server (`crate::stream_holder`).
//!
//! A `GET .../api/realtime` goes to the node with [`wire::STREAM_HOLDER`] (the cluster token: only a gateway
//! may ask). A node with a holder admits the stream and answers at once: the stream's head (status, content
//! type, CORS...), an empty body, and [`wire::STREAM_HELD`] `<port> <ticket>`. The gateway then attaches the
//! ticket through its multiplexed connection for the tenant to the holder on the node's host at that port
//! ([`super::held_mux`]), and the stream's frames read from there are the answer's body ([`HeldBody`]); the
//! node's connection went back to the pool with the empty answer. The holder's end record is the stream's
//! clean end (the client gets the last chunk), a broken record a broken stream. Answers handed over by the
//! Python side come from a node in this process (the Python side never forwards the request header to
//! another node): their holder is on loopback.
//!
//! Mixed versions: a node whose holder speaks the multiplexed connection says so with [`wire::STREAM_MUX`]
//! on the held answer. Without it (a node from before, or one with the mux off) the gateway connects to the
//! holder for this stream alone, says `<cluster token> <ticket>\n`, and reads the stream's bytes until the
//! holder's FIN (its clean end; anything else breaks the stream). Older gateways drop the header with every
//! other `x-pbfast-` one and never ask for the mux.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, CONTENT_LENGTH};
use http::Method;
use http_body::{Body, Frame};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

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
    /// The holder speaks the multiplexed connection ([`wire::STREAM_MUX`] `1`).
    pub mux: bool,
}

/// The multiplexed connection's version this gateway speaks.
const MUX_VERSION: &str = "1";
/// Bytes read from a per-stream connection at most per frame.
const READ_CHUNK: usize = 8 << 10;

/// The answer's [`wire::STREAM_HELD`], taken out of `headers` with the empty body's length; None when the
/// answer is not a held stream (or the header is malformed: the answer then goes out as it is).
pub fn take(headers: &mut HeaderMap) -> Option<Held> {
    let value = headers.get(wire::STREAM_HELD)?.to_str().ok()?;
    let (port, ticket) = value.split_once(' ')?;
    let mux = headers
        .get(wire::STREAM_MUX)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|versions| versions.split(',').any(|version| version.trim() == MUX_VERSION));
    let held = Held { port: port.parse().ok()?, ticket: ticket.to_owned(), mux };
    if held.ticket.is_empty() || !held.ticket.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    headers.remove(wire::STREAM_HELD);
    headers.remove(wire::STREAM_MUX);
    headers.remove(CONTENT_LENGTH);
    Some(held)
}

/// The host part of `host:port` (an IPv6 address keeps its brackets).
pub fn host_of(authority: &str) -> &str {
    authority.rsplit_once(':').map_or(authority, |(host, _)| host)
}

/// Read `tenant`'s stream from its holder: a holder of this process (an all-in-one's node) from its buffers
/// directly, any other through this gateway's multiplexed connection for the tenant ([`super::held_mux`]), or
/// through a connection of its own when the holder does not speak the mux.
pub async fn attach(host: &str, tenant: &str, held: &Held, token: &HeaderValue, connect_timeout: Duration) -> io::Result<HeldBody> {
    let ticket = u64::from_str_radix(&held.ticket, 16).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad ticket"))?;
    if let Some(local) = crate::stream_holder::attach_local(held.port, token.as_bytes(), ticket) {
        return Ok(HeldBody::Local(local));
    }
    if held.mux {
        return Ok(HeldBody::Local(super::held_mux::attach(host, held.port, token.as_bytes(), tenant, ticket, connect_timeout).await?));
    }
    let connect = TcpStream::connect(format!("{host}:{}", held.port));
    let mut socket = tokio::time::timeout(connect_timeout, connect)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "stream holder connect timeout"))??;
    socket.set_nodelay(true)?;
    let mut hello = Vec::with_capacity(token.len() + held.ticket.len() + 2);
    hello.extend_from_slice(token.as_bytes());
    hello.push(b' ');
    hello.extend_from_slice(held.ticket.as_bytes());
    hello.push(b'\n');
    socket.write_all(&hello).await?;
    Ok(HeldBody::Socket(socket))
}

/// The stream's bytes as the holder queues them; ends at its clean end. No buffer of its own while idle.
pub enum HeldBody {
    /// Read from a table of this process: the holder's own (all-in-one) or a multiplexed connection's.
    Local(LocalReader),
    /// A connection of its own to a holder without the mux: ends at the holder's FIN.
    Socket(TcpStream),
}

impl Body for HeldBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let socket = match self.get_mut() {
            HeldBody::Local(local) => {
                return Poll::Ready(match ready!(local.poll_read(cx)) {
                    Read::Frames(frames) => Some(Ok(Frame::data(frames))),
                    Read::Ended => None,
                    Read::Broken(reason) => Some(Err(format!("held stream ended: {reason:?}").into())),
                });
            }
            HeldBody::Socket(socket) => socket,
        };
        loop {
            if let Err(err) = ready!(socket.poll_read_ready(cx)) {
                return Poll::Ready(Some(Err(err.into())));
            }
            let mut chunk = [0u8; READ_CHUNK];
            match socket.try_read(&mut chunk) {
                Ok(0) => return Poll::Ready(None),
                Ok(count) => return Poll::Ready(Some(Ok(Frame::data(Bytes::copy_from_slice(&chunk[..count]))))),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(err) => return Poll::Ready(Some(Err(err.into()))),
            }
        }
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
        assert_eq!(take(&mut headers), Some(Held { port: 41234, ticket: "9f0a".into(), mux: false }));
        assert!(headers.get(wire::STREAM_HELD).is_none() && headers.get(CONTENT_LENGTH).is_none());
        assert_eq!(headers.len(), 1);
        // A holder that speaks the mux says so (a list of versions: a later node may add its own).
        for (versions, mux) in [("1", true), ("2, 1", true), ("2", false), ("", false)] {
            let mut headers = HeaderMap::new();
            headers.insert(wire::STREAM_HELD, HeaderValue::from_static("41234 9f0a"));
            headers.insert(wire::STREAM_MUX, HeaderValue::from_static(versions));
            assert_eq!(take(&mut headers).map(|held| held.mux), Some(mux), "{versions}");
            assert!(headers.is_empty());
        }
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
