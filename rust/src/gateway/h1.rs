//! A minimal HTTP/1.1 client for the gateway's hot path: requests whose body was read whole.
//!
//! The request goes out as one write (head and body), the answer's head is parsed with `httparse` on the
//! handler's own task, and the body is decoded (`Content-Length`, chunked, or until close) straight from
//! the socket into the frames the server writes to the client: no connection task, no channel, no
//! second copy of the headers. Connections are kept per node and reused once an answer has been read
//! to its end; a pooled connection found closed before any byte of an answer came back is replaced by
//! a fresh one (for any request when the write failed, for idempotent ones after it). Requests with a
//! streamed body use hyper's client instead ([`super::pool`]).
//!
//! Thread-safety: the idle lists sit behind a mutex (uncontended: each server thread has its own pool).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::body::{BodyError, BoxError, IdleTimer};
use super::idle::IdleConnections;
use super::pool::SendError;

/// The longest answer head accepted from a node.
const MAX_HEAD_BYTES: usize = 64 << 10;
/// Headers of one answer head at most.
const MAX_HEADERS: usize = 128;
/// The longest chunk-size or trailer line accepted.
const MAX_LINE_BYTES: usize = 8 << 10;
const READ_CHUNK: usize = 16 << 10;

/// A node's answer is not valid HTTP/1.1.
#[derive(Debug)]
pub struct ProtocolError(pub &'static str);

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid answer from the node: {}", self.0)
    }
}

impl std::error::Error for ProtocolError {}

fn protocol(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, ProtocolError(what))
}

pub struct FastPool {
    idle: IdleConnections<TcpStream>,
    connect_timeout: Duration,
    read_timeout: Duration,
}

/// What [`FastPool::send`] needs to know about the request it sends.
pub struct Outgoing<'a> {
    /// The whole request: head and body.
    pub bytes: &'a [u8],
    /// A HEAD request (its answer has no body whatever its head says).
    pub head_only: bool,
    /// Safe to send twice (GET, HEAD, PUT, DELETE, OPTIONS, TRACE).
    pub idempotent: bool,
}

enum Failure {
    /// The request could not be written: nothing reached the node.
    Write(io::Error),
    /// Written, but the connection ended before any byte of an answer.
    NoAnswer(io::Error),
    /// Anything later.
    Broken(io::Error),
}

impl FastPool {
    pub fn new(connect_timeout: Duration, idle_timeout: Duration, max_idle_per_node: usize, read_timeout: Duration) -> Self {
        FastPool { idle: IdleConnections::new(idle_timeout, max_idle_per_node), connect_timeout, read_timeout }
    }

    /// Send `request` to the node at `address` (`http://host:port`, `authority` its `host:port`) and
    /// read its answer's head.
    pub async fn send(
        self: &Arc<Self>,
        address: &Arc<str>,
        authority: &str,
        request: Outgoing<'_>,
    ) -> Result<Response<NodeBody>, SendError> {
        let mut pooled = self.checkout(address);
        loop {
            let reused = pooled.is_some();
            let mut stream = match pooled.take() {
                Some(stream) => stream,
                None => self.connect(authority).await?,
            };
            match exchange(&mut stream, &request).await {
                Ok((head, decoder, buffer, reusable, drained)) => {
                    let body = NodeBody {
                        stream: Some(stream),
                        buffer,
                        decoder,
                        reusable,
                        drained,
                        home: Some((self.clone(), address.clone())),
                        idle: Some(IdleTimer::new(self.read_timeout)),
                    };
                    return Ok(Response::from_parts(head, body.settled()));
                }
                Err(Failure::Write(_)) if reused => pooled = self.checkout(address), // closed while idle
                Err(Failure::NoAnswer(_)) if reused && request.idempotent => pooled = self.checkout(address),
                Err(Failure::Write(err) | Failure::NoAnswer(err) | Failure::Broken(err)) => {
                    return Err(SendError::Io(err));
                }
            }
        }
    }

    async fn connect(&self, authority: &str) -> Result<TcpStream, SendError> {
        match tokio::time::timeout(self.connect_timeout, TcpStream::connect(authority)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                Ok(stream)
            }
            Ok(Err(err)) => Err(SendError::Connect(err)),
            Err(_) => Err(SendError::ConnectTimeout),
        }
    }

    /// The most recently used idle connection to `address` that is still open.
    ///
    /// A connection's read readiness is cleared when it goes idle; any readiness since (the node closed
    /// it, or sent something unasked) retires it. Found without a system call: the event loop has
    /// already seen the node's FIN by the time a later request comes.
    fn checkout(&self, address: &str) -> Option<TcpStream> {
        let mut probe = Context::from_waker(std::task::Waker::noop());
        self.idle.checkout(address, |stream| stream.poll_read_ready(&mut probe).is_pending())
    }

    /// Pool a connection whose answer was read to its end. `drained`: its last read returned less
    /// than it could take, so the kernel had nothing more then; otherwise one non-blocking read makes
    /// sure nothing (a stray byte, a close) is left before it can serve another request.
    fn checkin(&self, address: &Arc<str>, stream: TcpStream, drained: bool) {
        if drained {
            // Forget the readiness of the answer just read, so that checkout sees only what comes later.
            let _ = stream.try_io(tokio::io::Interest::READABLE, || Err::<(), _>(io::ErrorKind::WouldBlock.into()));
        } else {
            match stream.try_read(&mut [0u8; 1]) {
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {} // clean (and readiness cleared)
                _ => return, // data nobody asked for, a close, or an error: not reusable
            }
        }
        self.idle.checkin(address, stream);
    }

    /// Close idle connections past the idle time or closed by their node, and forget nodes without any.
    pub fn sweep(&self) {
        let mut probe = Context::from_waker(std::task::Waker::noop());
        self.idle.sweep(|stream| stream.poll_read_ready(&mut probe).is_pending());
    }
}

/// Write the request, read the answer's head: `(head, body decoder, bytes read past the head, whether
/// the connection may be reused after the body, whether the last read drained the socket)`.
async fn exchange(
    stream: &mut TcpStream,
    request: &Outgoing<'_>,
) -> Result<(http::response::Parts, Decoder, BytesMut, bool, bool), Failure> {
    stream.write_all(request.bytes).await.map_err(Failure::Write)?;
    let mut buffer = BytesMut::with_capacity(4096);
    let mut drained;
    loop {
        if buffer.capacity() - buffer.len() < 1024 {
            buffer.reserve(4096);
        }
        let room = buffer.capacity() - buffer.len();
        let read = stream.read_buf(&mut buffer).await;
        match read {
            Ok(0) if buffer.is_empty() => {
                return Err(Failure::NoAnswer(io::Error::new(io::ErrorKind::UnexpectedEof, "closed before answering")))
            }
            Ok(0) => return Err(Failure::Broken(protocol("the connection closed mid-head"))),
            Ok(n) => drained = n < room,
            Err(err) if buffer.is_empty() => return Err(Failure::NoAnswer(err)),
            Err(err) => return Err(Failure::Broken(err)),
        }
        loop {
            match parse_head(&buffer, request.head_only).map_err(Failure::Broken)? {
                Parsed::Partial if buffer.len() > MAX_HEAD_BYTES => {
                    return Err(Failure::Broken(protocol("head too large")))
                }
                Parsed::Partial => break,
                Parsed::Interim(length) => buffer.advance(length), // 1xx: wait for the final answer
                Parsed::Complete { length, head, decoder, reusable } => {
                    buffer.advance(length);
                    return Ok((head, decoder, buffer, reusable, drained));
                }
            }
        }
    }
}

enum Parsed {
    Partial,
    Interim(usize),
    Complete { length: usize, head: http::response::Parts, decoder: Decoder, reusable: bool },
}

fn parse_head(buffer: &[u8], head_only: bool) -> io::Result<Parsed> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut answer = httparse::Response::new(&mut slots);
    let length = match answer.parse(buffer) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(_) => return Err(protocol("unparsable head")),
    };
    let code = answer.code.ok_or_else(|| protocol("no status"))?;
    if (100..200).contains(&code) && code != 101 {
        return Ok(Parsed::Interim(length));
    }
    let status = StatusCode::from_u16(code).map_err(|_| protocol("bad status"))?;
    let mut headers = HeaderMap::with_capacity(answer.headers.len());
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut encoded = false;
    let mut close = answer.version == Some(0);
    for header in answer.headers.iter() {
        let name = HeaderName::from_bytes(header.name.as_bytes()).map_err(|_| protocol("bad header name"))?;
        let value = HeaderValue::from_bytes(header.value).map_err(|_| protocol("bad header value"))?;
        if name == http::header::CONTENT_LENGTH {
            let parsed = std::str::from_utf8(header.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| protocol("bad content-length"))?;
            if content_length.is_some_and(|known| known != parsed) {
                return Err(protocol("conflicting content-length"));
            }
            content_length = Some(parsed);
        } else if name == http::header::TRANSFER_ENCODING {
            encoded = true;
            let text = value.to_str().unwrap_or("");
            chunked = text.rsplit(',').next().is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        } else if name == http::header::CONNECTION {
            let text = value.to_str().unwrap_or("");
            if text.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")) {
                close = true;
            } else if text.split(',').any(|t| t.trim().eq_ignore_ascii_case("keep-alive")) && answer.version == Some(0) {
                close = false;
            }
        }
        headers.append(name, value);
    }
    let decoder = if head_only || code == 204 || code == 304 {
        Decoder::Length(0)
    } else if encoded {
        headers.remove(http::header::CONTENT_LENGTH); // a length beside an encoding is meaningless
        if chunked {
            Decoder::Chunked(Chunk::Size)
        } else {
            Decoder::UntilClose
        }
    } else if let Some(length) = content_length {
        Decoder::Length(length)
    } else {
        Decoder::UntilClose
    };
    let reusable = !close && !matches!(decoder, Decoder::UntilClose);
    let mut head = Response::new(()).into_parts().0;
    head.status = status;
    head.version = Version::HTTP_11;
    head.headers = headers;
    Ok(Parsed::Complete { length, head, decoder, reusable })
}

/// How the body of an answer is framed, and where the decoding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decoder {
    Length(u64),
    Chunked(Chunk),
    UntilClose,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size,
    Data(u64),
    DataEnd,
    Trailer,
    Done,
}

enum Decoded {
    Data(Bytes),
    NeedMore,
    Done,
}

impl Decoder {
    fn decode(&mut self, buffer: &mut BytesMut) -> io::Result<Decoded> {
        match self {
            Decoder::Length(0) => Ok(Decoded::Done),
            Decoder::Length(remaining) => {
                if buffer.is_empty() {
                    return Ok(Decoded::NeedMore);
                }
                let take = (*remaining).min(buffer.len() as u64) as usize;
                *remaining -= take as u64;
                Ok(Decoded::Data(buffer.split_to(take).freeze()))
            }
            Decoder::UntilClose if buffer.is_empty() => Ok(Decoded::NeedMore),
            Decoder::UntilClose => Ok(Decoded::Data(buffer.split().freeze())),
            Decoder::Chunked(state) => loop {
                match *state {
                    Chunk::Size => {
                        let Some(end) = find_crlf(buffer)? else { return Ok(Decoded::NeedMore) };
                        let size = parse_chunk_size(&buffer[..end])?;
                        buffer.advance(end + 2);
                        *state = if size == 0 { Chunk::Trailer } else { Chunk::Data(size) };
                    }
                    Chunk::Data(remaining) => {
                        if buffer.is_empty() {
                            return Ok(Decoded::NeedMore);
                        }
                        let take = remaining.min(buffer.len() as u64) as usize;
                        let left = remaining - take as u64;
                        *state = if left == 0 { Chunk::DataEnd } else { Chunk::Data(left) };
                        return Ok(Decoded::Data(buffer.split_to(take).freeze()));
                    }
                    Chunk::DataEnd => {
                        if buffer.len() < 2 {
                            return Ok(Decoded::NeedMore);
                        }
                        if &buffer[..2] != b"\r\n" {
                            return Err(protocol("chunk not followed by CRLF"));
                        }
                        buffer.advance(2);
                        *state = Chunk::Size;
                    }
                    Chunk::Trailer => {
                        let Some(end) = find_crlf(buffer)? else { return Ok(Decoded::NeedMore) };
                        buffer.advance(end + 2);
                        if end == 0 {
                            *state = Chunk::Done;
                        } // else: a trailer field, dropped
                    }
                    Chunk::Done => return Ok(Decoded::Done),
                }
            },
        }
    }

    fn remaining(&self) -> Option<u64> {
        match self {
            Decoder::Length(n) => Some(*n),
            Decoder::Chunked(Chunk::Done) => Some(0),
            _ => None,
        }
    }
}

fn find_crlf(buffer: &[u8]) -> io::Result<Option<usize>> {
    match buffer.windows(2).position(|w| w == b"\r\n") {
        Some(end) => Ok(Some(end)),
        None if buffer.len() > MAX_LINE_BYTES => Err(protocol("line too long")),
        None => Ok(None),
    }
}

fn parse_chunk_size(line: &[u8]) -> io::Result<u64> {
    let digits = line.split(|&b| b == b';').next().unwrap_or(b"");
    let digits = digits.trim_ascii();
    if digits.is_empty() || digits.len() > 15 {
        return Err(protocol("bad chunk size"));
    }
    let mut size: u64 = 0;
    for &b in digits {
        let digit = (b as char).to_digit(16).ok_or_else(|| protocol("bad chunk size"))?;
        size = size * 16 + u64::from(digit);
    }
    Ok(size)
}

/// A node's answer body, decoded from its connection; the connection goes back to its pool once the
/// body ended (if the framing allows it), and is closed if the body is dropped before.
pub struct NodeBody {
    stream: Option<TcpStream>,
    buffer: BytesMut,
    decoder: Decoder,
    reusable: bool,
    /// The last read returned less than it could take (see [`FastPool::checkin`]).
    drained: bool,
    home: Option<(Arc<FastPool>, Arc<str>)>,
    idle: Option<IdleTimer>,
}

impl NodeBody {
    /// No read timeout (an event stream may stay quiet as long as it likes).
    pub fn without_timeout(mut self) -> Self {
        self.idle = None;
        self
    }

    /// Give the connection back at once when there is nothing to read.
    fn settled(mut self) -> Self {
        if self.decoder == Decoder::Length(0) {
            self.finish();
        }
        self
    }

    fn finish(&mut self) {
        let stream = self.stream.take();
        if let (Some(stream), Some((pool, address))) = (stream, self.home.take()) {
            if self.reusable && self.buffer.is_empty() {
                pool.checkin(&address, stream, self.drained);
            }
        }
    }

    fn fail(&mut self, err: impl Into<BoxError>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.stream = None;
        self.home = None;
        Poll::Ready(Some(Err(err.into())))
    }
}

impl Body for NodeBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            match this.decoder.decode(&mut this.buffer) {
                Err(err) => return this.fail(err),
                Ok(Decoded::Data(data)) => {
                    if let Some(idle) = this.idle.as_mut() {
                        idle.progress();
                    }
                    if this.decoder.remaining() == Some(0) {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Decoded::Done) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(Decoded::NeedMore) => {}
            }
            let Some(stream) = this.stream.as_mut() else {
                return this.fail(protocol("the connection is gone"));
            };
            match stream.poll_read_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(err)) => return this.fail(err),
                Poll::Pending => {
                    if let Some(Poll::Ready(())) = this.idle.as_mut().map(|idle| idle.poll_expired(cx)) {
                        return this.fail(BodyError::UpstreamIdle);
                    }
                    release_if_empty(&mut this.buffer);
                    return Poll::Pending;
                }
            }
            if this.buffer.capacity() - this.buffer.len() < READ_CHUNK / 4 {
                this.buffer.reserve(READ_CHUNK);
            }
            let room = this.buffer.capacity() - this.buffer.len();
            let read = stream.try_read_buf(&mut this.buffer);
            if let Ok(n) = read {
                this.drained = n < room;
            }
            match read {
                Ok(0) if this.decoder == Decoder::UntilClose => {
                    this.reusable = false;
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(0) => return this.fail(protocol("the connection closed mid-body")),
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(err) => return this.fail(err),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.decoder.remaining() == Some(0)
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoder {
            Decoder::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

/// Free an empty buffer's allocation while its connection waits: an event stream may stay quiet for
/// minutes, and thousands of them would each hold a read chunk for nothing (the next read allocates again).
pub fn release_if_empty(buffer: &mut BytesMut) {
    if buffer.is_empty() && buffer.capacity() > 0 {
        *buffer = BytesMut::new();
    }
}

#[cfg(test)]#[cfg(test)]
mod tests {

    #[test]
    fn an_empty_buffer_gives_its_allocation_back_and_a_full_one_keeps_its_bytes() {
        let mut empty = BytesMut::with_capacity(16 << 10);
        release_if_empty(&mut empty);
        assert_eq!(empty.capacity(), 0);
        let mut full = BytesMut::with_capacity(16 << 10);
        full.extend_from_slice(b"data: x\n\n");
        release_if_empty(&mut full);
        assert_eq!(&full[..], b"data: x\n\n");
        assert!(full.capacity() >= 16 << 10);
    }

    use super::*;

    fn decode_all(decoder: &mut Decoder, input: &[u8], step: usize) -> io::Result<(Vec<u8>, bool)> {
        let mut buffer = BytesMut::new();
        let mut out = Vec::new();
        for piece in input.chunks(step.max(1)) {
            buffer.extend_from_slice(piece);
            loop {
                match decoder.decode(&mut buffer)? {
                    Decoded::Data(data) => out.extend_from_slice(&data),
                    Decoded::NeedMore => break,
                    Decoded::Done => return Ok((out, buffer.is_empty())),
                }
            }
        }
        Ok((out, false))
    }

    #[test]
    fn chunked_bodies_decode_in_any_split() {
        let wire = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: 1\r\n\r\n";
        for step in [1, 2, 3, 7, wire.len()] {
            let mut decoder = Decoder::Chunked(Chunk::Size);
            let (body, clean) = decode_all(&mut decoder, wire, step).unwrap();
            assert_eq!(body, b"hello world", "step {step}");
            assert!(clean);
            assert_eq!(decoder.remaining(), Some(0));
        }
        for bad in [&b"zz\r\n"[..], b"5\r\nhelloXX", b"\r\n", b"fffffffffffffffff\r\n"] {
            assert!(decode_all(&mut Decoder::Chunked(Chunk::Size), bad, 100).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn length_bodies_stop_at_the_length() {
        let mut decoder = Decoder::Length(5);
        let mut buffer = BytesMut::from(&b"hello"[..]);
        assert!(matches!(decoder.decode(&mut buffer).unwrap(), Decoded::Data(d) if &d[..] == b"hello"));
        assert!(matches!(decoder.decode(&mut buffer).unwrap(), Decoded::Done));
    }

    #[test]
    fn heads_and_framing() {
        let parse = |wire: &[u8], head_only: bool| match parse_head(wire, head_only).unwrap() {
            Parsed::Complete { head, decoder, reusable, length } => (head, decoder, reusable, length),
            _ => panic!("not complete"),
        };
        let (head, decoder, reusable, length) =
            parse(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-A: b\r\n\r\nabc", false);
        assert_eq!((head.status, decoder, reusable, length), (StatusCode::OK, Decoder::Length(3), true, 46));
        assert_eq!(head.headers["x-a"], "b");
        let (head, decoder, _, _) =
            parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n", false);
        assert_eq!(decoder, Decoder::Chunked(Chunk::Size));
        assert!(head.headers.get("content-length").is_none());
        let (_, decoder, reusable, _) = parse(b"HTTP/1.1 200 OK\r\n\r\n", false);
        assert_eq!((decoder, reusable), (Decoder::UntilClose, false));
        let (_, decoder, reusable, _) = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\n", false);
        assert_eq!((decoder, reusable), (Decoder::Length(3), false));
        let (_, decoder, _, _) = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", true);
        assert_eq!(decoder, Decoder::Length(0));
        let (_, decoder, _, _) = parse(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 3\r\n\r\n", false);
        assert_eq!(decoder, Decoder::Length(0));
        assert!(matches!(parse_head(b"HTTP/1.1 100 Continue\r\n\r\n", false).unwrap(), Parsed::Interim(25)));
        assert!(matches!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Le", false).unwrap(), Parsed::Partial));
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", false).is_err());
        assert!(parse_head(b"garbage\r\n\r\n", false).is_err());
    }
}
