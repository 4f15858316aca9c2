//! HTTP/1.1 client connections, and the event streams (`text/event-stream` answers, PocketBase's realtime)
//! they carry, outside hyper once the answer's head is known.
//!
//! An idle event stream may stay open for half an hour, and a gateway holds thousands of them. Inside
//! hyper each one kept its connection's read buffer (8 KB), its write buffer (8 KB, allocated with the
//! connection) and the connection's dispatcher state, for nothing: the client sends no more requests and the
//! events are a few hundred bytes now and then. So when a GET's answer is an event stream, the connection
//! leaves hyper: hyper's connection (with its buffers) is dropped, and [`stream_events`] writes the head
//! and the events in HTTP/1.1 chunks itself, watching the client for its close. When the node ends the
//! stream, the connection goes back to a fresh hyper connection for the client's next request.
//!
//! Behaviour kept from hyper: the head as hyper writes it (status line, the answer's headers in order,
//! `transfer-encoding: chunked`), a stream that fails mid-way is cut off without its last chunk (the client
//! sees a broken stream, not a complete one), and a client that stops reading is dropped after the client
//! idle time. On the server's stop a stream ends at once with its last chunk, so that SDKs reconnect
//! (elsewhere) rather than waiting out the grace time. Only plain keep-alive HTTP/1.1 GETs are taken out;
//! anything else (HTTP/1.0, `Connection: close`, a length-framed answer) stays with hyper. A client that
//! pipelines requests behind an event stream (which never lets them be answered before it ends) gets its
//! connection closed when the stream ends.
//!
//! Thread-safety: one connection per task; the socket is shared (`Arc`) between hyper's I/O object and the
//! task, only one of them using it at a time.

use std::convert::Infallible;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use http::header::{HeaderMap, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use http::{Method, Request, Response, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::Watcher;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};

use super::body::{ProxyBody, StallGuard};
use super::forward::DataPath;
use super::headers::Peer;
use super::target::{Malformed, TargetNormaliser};

/// The end of a chunked body.
const LAST_CHUNK: &[u8] = b"0\r\n\r\n";
/// How long the last chunk may take to go out on the server's stop.
const LAST_CHUNK_TIMEOUT: Duration = Duration::from_secs(1);

/// Whether an answer's head says it is an event stream.
pub fn is_event_stream(headers: &HeaderMap) -> bool {
    headers.get(CONTENT_TYPE).is_some_and(|v| {
        let v = v.as_bytes().trim_ascii_start();
        v.len() >= 17 && v[..17].eq_ignore_ascii_case(b"text/event-stream")
    })
}

/// A client's TCP socket, shared by hyper's I/O object and the connection's task (which gets it back when
/// an event stream leaves hyper). Reads and writes go through the socket's readiness like tokio's own.
pub struct SharedSocket(pub Arc<TcpStream>);

impl AsyncRead for SharedSocket {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            ready!(self.0.poll_read_ready(cx))?;
            // SAFETY: read(2) only writes into the slice; `assume_init` covers exactly what it wrote.
            let unfilled = unsafe { &mut *(buf.unfilled_mut() as *mut [MaybeUninit<u8>] as *mut [u8]) };
            match self.0.try_read(unfilled) {
                Ok(count) => {
                    unsafe { buf.assume_init(count) };
                    buf.advance(count);
                    return Poll::Ready(Ok(()));
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {} // readiness cleared: poll again
                Err(err) => return Poll::Ready(Err(err)),
            }
        }
    }
}

impl AsyncWrite for SharedSocket {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write(buf) {
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                done => return Poll::Ready(done),
            }
        }
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write_vectored(bufs) {
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                done => return Poll::Ready(done),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(socket2::SockRef::from(&*self.0).shutdown(std::net::Shutdown::Write))
    }
}

/// Everything one HTTP/1 client connection needs.
pub struct Http1Connection {
    /// The connection's first bytes are already in it (read to tell HTTP/1 from HTTP/2).
    pub normaliser: TargetNormaliser<SharedSocket>,
    pub socket: Arc<TcpStream>,
    pub path: Arc<DataPath>,
    pub client: Arc<Peer>,
    pub malformed: Arc<Malformed>,
    /// Keeps the server's graceful shutdown waiting for this connection.
    pub watcher: Watcher,
    /// The server's stop signal.
    pub stop: watch::Receiver<Option<Duration>>,
    pub client_idle: Duration,
    pub head_limit: usize,
}

/// Serve one HTTP/1 connection until it ends: hyper for requests, [`stream_events`] for event streams.
pub async fn serve(http1: &hyper::server::conn::http1::Builder, connection: Http1Connection) {
    let Http1Connection { mut normaliser, socket, path, client, malformed, watcher, mut stop, client_idle, head_limit } =
        connection;
    loop {
        let (handoff, mut taken) = oneshot::channel::<Response<ProxyBody>>();
        let handoff = Arc::new(Mutex::new(Some(handoff)));
        let service = {
            let (path, client, malformed) = (path.clone(), client.clone(), malformed.clone());
            service_fn(move |request: Request<Incoming>| {
                let movable = can_leave_hyper(&request);
                let answer = path.clone().handle(client.clone(), malformed.clone(), request);
                let handoff = handoff.clone();
                async move {
                    let response = answer.await?;
                    if !(movable && is_event_stream(response.headers()) && !response.headers().contains_key(CONTENT_LENGTH)) {
                        return Ok::<_, Infallible>(response);
                    }
                    let Some(sender) = handoff.lock().take() else { return Ok(response) };
                    match sender.send(response) {
                        Ok(()) => std::future::pending().await, // hyper's connection is dropped first
                        Err(response) => Ok(response),
                    }
                }
            })
        };
        let io = StallGuard::new(TokioIo::new(normaliser), client_idle);
        // Boxed: the connection task keeps only a pointer while an event stream is served outside hyper.
        let mut connection = Box::pin(http1.serve_connection(io, service));
        let mut closing = false;
        let mut waiting = true;
        let response = loop {
            tokio::select! {
                _ = connection.as_mut() => break None,
                response = &mut taken, if waiting => match response {
                    Ok(response) => break Some(response),
                    Err(_) => waiting = false,
                },
                _ = stop.changed(), if !closing => {
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        };
        drop(connection);
        let Some(response) = response else { break };
        if !stream_events(&socket, response, &mut stop, client_idle).await {
            break;
        }
        normaliser = TargetNormaliser::new(SharedSocket(socket.clone()), head_limit, malformed.clone());
    }
    drop(watcher);
}

/// A keep-alive HTTP/1.1 GET (its answer may be streamed outside hyper, see the module docs).
fn can_leave_hyper(request: &Request<Incoming>) -> bool {
    request.method() == Method::GET
        && request.version() == Version::HTTP_11
        && !request.headers().get_all(CONNECTION).iter().any(|v| {
            v.to_str().is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
        })
}

/// The answer's head as hyper writes it for a body of unknown length.
fn encode_head(response: &http::response::Parts) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(response.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(response.status.canonical_reason().unwrap_or("<none>").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &response.headers {
        if name == TRANSFER_ENCODING {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
    out
}

/// One body frame as an HTTP/1.1 chunk.
#[cfg(test)]
fn encode_chunk(data: &[u8]) -> Vec<u8> {
    let (size, length) = chunk_size(data.len());
    let mut out = Vec::with_capacity(data.len() + 20);
    out.extend_from_slice(&size[..length]);
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// A chunk's size line (`<hex>\r\n`) in a buffer on the stack, and its length.
fn chunk_size(length: usize) -> ([u8; 18], usize) {
    let mut line = [0u8; 18];
    let digits = (usize::BITS - length.leading_zeros()).div_ceil(4).max(1) as usize;
    for (index, slot) in line[..digits].iter_mut().enumerate() {
        *slot = b"0123456789abcdef"[(length >> (4 * (digits - 1 - index))) & 0xf];
    }
    line[digits..digits + 2].copy_from_slice(b"\r\n");
    (line, digits + 2)
}

/// Write `data` as one HTTP/1.1 chunk: size line, data and end in one `writev` (no copy of the frame, no
/// allocation: this runs once per recipient of every event); what the socket did not take goes the slow way.
async fn write_chunk(socket: &TcpStream, data: &[u8], timeout: Duration) -> bool {
    let (size, length) = chunk_size(data.len());
    let parts = [io::IoSlice::new(&size[..length]), io::IoSlice::new(data), io::IoSlice::new(b"\r\n")];
    let total = length + data.len() + 2;
    let written = match socket.try_write_vectored(&parts) {
        Ok(written) => written,
        Err(err) if err.kind() == io::ErrorKind::WouldBlock => 0,
        Err(_) => return false,
    };
    if written == total {
        return true;
    }
    let mut rest = Vec::with_capacity(total - written);
    for part in [&size[..length], data, b"\r\n"] {
        rest.extend_from_slice(part);
    }
    rest.drain(..written);
    write_all(socket, &rest, timeout).await
}

/// Write all of `bytes`, or fail when the client takes no byte for `timeout`.
async fn write_all(socket: &TcpStream, mut bytes: &[u8], timeout: Duration) -> bool {
    while !bytes.is_empty() {
        match socket.try_write(bytes) {
            Ok(written) => bytes = &bytes[written..],
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                if !matches!(tokio::time::timeout(timeout, socket.writable()).await, Ok(Ok(()))) {
                    return false;
                }
            }
            Err(_) => return false,
        }
    }
    true
}

/// Send an event stream to the client until the node ends it (true: the connection can serve the
/// client's next request), the client goes away, or the server stops.
async fn stream_events(
    socket: &TcpStream,
    response: Response<ProxyBody>,
    stop: &mut watch::Receiver<Option<Duration>>,
    client_idle: Duration,
) -> bool {
    let (head, mut body) = response.into_parts();
    if !write_all(socket, &encode_head(&head), client_idle).await {
        return false;
    }
    drop(head);
    let mut pipelined = false;
    loop {
        if stop.borrow().is_some() {
            let _ = write_all(socket, LAST_CHUNK, LAST_CHUNK_TIMEOUT).await;
            return false;
        }
        tokio::select! {
            frame = body.frame() => match frame {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref().filter(|data| !data.is_empty()) {
                        if !write_chunk(socket, data, client_idle).await {
                            return false;
                        }
                    }
                }
                Some(Err(_)) => return false, // cut off without the last chunk: the client sees it broken
                None => return write_all(socket, LAST_CHUNK, client_idle).await && !pipelined,
            },
            readable = socket.readable() => {
                if readable.is_err() {
                    return false;
                }
                match socket.try_read(&mut [0u8; 64]) {
                    Ok(0) => return false, // the client went away: dropping the body closes the node's side
                    Ok(_) => pipelined = true, // cannot be answered before the stream ends; closed then
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => return false,
                }
            }
            _ = stop.changed() => {} // looked at above
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderValue, StatusCode};

    #[test]
    fn heads_and_chunks_are_written_as_hyper_writes_them() {
        let mut response = Response::new(());
        *response.status_mut() = StatusCode::OK;
        response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        response.headers_mut().insert("x-request-id", HeaderValue::from_static("abc"));
        response.headers_mut().insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        let (head, ()) = response.into_parts();
        assert_eq!(
            encode_head(&head),
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nx-request-id: abc\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        assert_eq!(encode_chunk(b"data: x\n\n"), b"9\r\ndata: x\n\n\r\n");
        for (length, line) in [(0, &b"0\r\n"[..]), (15, b"f\r\n"), (16, b"10\r\n"), (300, b"12c\r\n"), (usize::MAX, b"ffffffffffffffff\r\n")] {
            let (size, used) = chunk_size(length);
            assert_eq!(&size[..used], line, "{length}");
        }
        assert!(is_event_stream(&head.headers));
    }

    #[test]
    fn event_streams_are_told_by_their_content_type() {
        let mut headers = HeaderMap::new();
        assert!(!is_event_stream(&headers));
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(" Text/Event-Stream; charset=utf-8"));
        assert!(is_event_stream(&headers));
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/html"));
        assert!(!is_event_stream(&headers));
    }
}
