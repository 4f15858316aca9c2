//! Request targets as PocketBase (Go's net/http) accepts them, in front of hyper.
//!
//! Go takes any visible ASCII and any byte from 0x80 unencoded in a request target: `curl
//! '.../records?filter=(views>100)'` works against PocketBase. hyper parses targets with the `http` crate,
//! which refuses `"` (query), `<`, `>`, `` ` `` (path) and bytes that are not UTF-8, and cuts at `#`;
//! none of that is configurable. So a connection's bytes pass through [`TargetNormaliser`] first: in each
//! request line it percent-encodes those bytes (`>` becomes `%3E`, which every server decodes to the same
//! `>`; Go itself treats both spellings alike), leaving everything else byte for byte as the client sent
//! it. A request line Go refuses too (a control byte or space in the target, a `%` not followed by two hex
//! digits in the path, a line that is not `METHOD TARGET HTTP/x`) becomes a request with the method
//! [`MALFORMED_METHOD`] and the connection's [`Malformed`] flag set; the handler answers it with a
//! PocketBase-shaped 400 and closes the connection (Go answers 400 and closes too, with a text body).
//! The verdict on one line is [`super::request_line`]'s.
//!
//! To find every request line on a keep-alive connection the normaliser follows the message framing as
//! hyper does (`Content-Length`, `Transfer-Encoding: chunked` and its trailers). Whatever it cannot follow
//! (a head hyper refuses, an upgrade or CONNECT, a head or chunk line beyond the limits) it passes through
//! unchanged from there on: hyper then judges the bytes itself, so the normaliser never makes a request
//! valid that hyper and Go would both refuse, and never changes a body byte.
//!
//! A connection that opens with HTTP/2's preface (`PRI * HTTP/2.0`, h2c with prior knowledge, as
//! `curl --http2-prior-knowledge` sends) is no HTTP/1 stream: [`TargetNormaliser::sniff`] tells it from the
//! first bytes (read into the normaliser's buffer, so HTTP/1 costs no extra read) and the normaliser then
//! passes every byte through untouched, for hyper's HTTP/2 server.
//!
//! Thread-safety: one normaliser per connection, on that connection's task.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};

use super::h1::release_if_empty;
use super::request_line::{classify_request_line, LineVerdict};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The method a malformed request line is replaced with (the handler answers 400 when the connection's
/// [`Malformed`] flag is set too, so a client sending this method itself gets no such answer).
pub const MALFORMED_METHOD: &str = "PBFAST-MALFORMED-REQUEST";
const MALFORMED_LINE: &[u8] = b"PBFAST-MALFORMED-REQUEST / HTTP/1.1\r\n\r\n";
/// The longest chunk-size or trailer line followed; a longer one is left to hyper.
const MAX_LINE_BYTES: usize = 8 << 10;
/// Headers in one head (hyper's own limit is 100; more and hyper refuses the head).
const MAX_HEADERS: usize = 128;
const READ_CHUNK: usize = 16 << 10;
/// What an HTTP/2 client with prior knowledge sends first.
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a client speaks, told from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    /// HTTP/2 with prior knowledge (h2c).
    Http2,
}

/// The protocol of a connection whose first bytes are `data`; None while they could still be either.
pub fn protocol_of(data: &[u8]) -> Option<Protocol> {
    let seen = data.len().min(H2_PREFACE.len());
    if data[..seen] != H2_PREFACE[..seen] {
        Some(Protocol::Http1)
    } else if seen == H2_PREFACE.len() {
        Some(Protocol::Http2)
    } else {
        None
    }
}

/// Set on a connection once its request line was malformed (that request is its last).
#[derive(Debug, Default)]
pub struct Malformed(AtomicBool);

impl Malformed {
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn set(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Where the normaliser is in the client's byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before a request head (leading empty lines are passed on, as hyper skips them).
    Head,
    /// In a body with this many bytes left.
    Sized(u64),
    /// At a chunk-size line.
    ChunkSize,
    /// In a chunk's data with this many bytes left, then its CR LF.
    ChunkData(u64),
    /// The CR LF after a chunk's data.
    ChunkEnd,
    /// In the trailer section after the last chunk.
    Trailers,
    /// Framing no longer followed: everything goes through unchanged.
    Passthrough,
    /// A malformed request was handed on: nothing more is read from the client.
    Ended,
}

/// The framing of the body after a head hyper accepts.
enum Framing {
    Sized(u64),
    Chunked,
    /// hyper refuses the head, or the connection may change protocols: stop following.
    Unfollowed,
}

fn content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

fn last_encoding_is_chunked(value: &[u8]) -> bool {
    let last = value.rsplit(|&b| b == b',').next().unwrap_or(value);
    std::str::from_utf8(last).is_ok_and(|s| s.trim().eq_ignore_ascii_case("chunked"))
}

/// The body framing of `head` (a complete, already normalised head), as hyper's server decides it.
fn framing(head: &[u8]) -> Framing {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Framing::Unfollowed,
    }
    if request.method == Some("CONNECT") || request.version != Some(1) && request.version != Some(0) {
        return Framing::Unfollowed;
    }
    let mut chunked = None;
    let mut length: Option<u64> = None;
    for header in request.headers.iter() {
        if header.name.eq_ignore_ascii_case("upgrade") {
            return Framing::Unfollowed;
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            if request.version == Some(0) {
                return Framing::Unfollowed; // hyper refuses it
            }
            chunked = Some(last_encoding_is_chunked(header.value));
        } else if header.name.eq_ignore_ascii_case("content-length") {
            match (content_length(header.value), length) {
                (None, _) => return Framing::Unfollowed,
                (Some(n), Some(previous)) if n != previous => return Framing::Unfollowed,
                (Some(n), _) => length = Some(n),
            }
        }
    }
    match chunked {
        Some(true) => Framing::Chunked,
        Some(false) => Framing::Unfollowed, // hyper answers 400
        None => Framing::Sized(length.unwrap_or(0)),
    }
}

/// The end of a head whose header lines start at `from` in `data` (the index after its empty line), if
/// complete.
fn head_end(data: &[u8], from: usize) -> Option<usize> {
    let mut line_start = from;
    while let Some(offset) = data[line_start..].iter().position(|&b| b == b'\n') {
        let line = &data[line_start..line_start + offset];
        if line.is_empty() || line == b"\r" {
            return Some(line_start + offset + 1);
        }
        line_start += offset + 1;
    }
    None
}

/// The byte-stream half of the normaliser, kept apart from the IO for testing.
pub struct Framer {
    state: State,
    /// Bytes read from the client and not yet judged.
    pending: BytesMut,
    /// Judged bytes for hyper.
    ready: BytesMut,
    max_head_bytes: usize,
    malformed: Arc<Malformed>,
}

impl Framer {
    pub fn new(max_head_bytes: usize, malformed: Arc<Malformed>) -> Self {
        Framer {
            state: State::Head,
            pending: BytesMut::new(),
            ready: BytesMut::new(),
            max_head_bytes,
            malformed,
        }
    }

    /// Take in bytes from the client.
    pub fn feed(&mut self, data: &[u8]) {
        self.pending.extend_from_slice(data);
        self.advance();
    }

    /// The client closed its side: what is left is handed on as it is (hyper judges a partial head).
    pub fn finish(&mut self) {
        if self.state != State::Ended {
            let rest = self.pending.split();
            self.ready.extend_from_slice(&rest);
        }
    }

    /// Bytes ready for hyper.
    pub fn ready(&mut self) -> &mut BytesMut {
        &mut self.ready
    }

    fn pass(&mut self, count: usize) {
        let bytes = self.pending.split_to(count);
        self.ready.extend_from_slice(&bytes);
    }

    fn passthrough(&mut self) {
        self.state = State::Passthrough;
        let all = self.pending.len();
        self.pass(all);
    }

    /// A complete line (with its LF) at the start of `pending`, None while incomplete; Err when longer
    /// than `limit`.
    fn line(&self, limit: usize) -> Result<Option<usize>, ()> {
        let window = &self.pending[..self.pending.len().min(limit)];
        match window.iter().position(|&b| b == b'\n') {
            Some(end) => Ok(Some(end + 1)),
            None if self.pending.len() >= limit => Err(()),
            None => Ok(None),
        }
    }

    fn advance(&mut self) {
        loop {
            match self.state {
                State::Ended => {
                    self.pending.clear();
                    return;
                }
                State::Passthrough => {
                    self.passthrough();
                    return;
                }
                State::Sized(left) => {
                    let count = (left.min(self.pending.len() as u64)) as usize;
                    self.pass(count);
                    let left = left - count as u64;
                    self.state = if left == 0 { State::Head } else { State::Sized(left) };
                    if left > 0 {
                        return;
                    }
                }
                State::ChunkData(left) => {
                    let count = (left.min(self.pending.len() as u64)) as usize;
                    self.pass(count);
                    let left = left - count as u64;
                    if left > 0 {
                        self.state = State::ChunkData(left);
                        return;
                    }
                    self.state = State::ChunkEnd;
                }
                State::ChunkEnd => {
                    if self.pending.len() < 2 {
                        return;
                    }
                    if &self.pending[..2] != b"\r\n" {
                        return self.passthrough(); // hyper refuses it
                    }
                    self.pass(2);
                    self.state = State::ChunkSize;
                }
                State::ChunkSize => match self.line(MAX_LINE_BYTES) {
                    Err(()) => return self.passthrough(),
                    Ok(None) => return,
                    Ok(Some(end)) => {
                        let line = &self.pending[..end];
                        let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
                        let size = std::str::from_utf8(&line[..digits]).ok().and_then(|s| u64::from_str_radix(s, 16).ok());
                        let Some(size) = size.filter(|_| digits > 0) else {
                            return self.passthrough();
                        };
                        self.pass(end);
                        self.state = if size == 0 { State::Trailers } else { State::ChunkData(size) };
                    }
                },
                State::Trailers => match self.line(MAX_LINE_BYTES) {
                    Err(()) => return self.passthrough(),
                    Ok(None) => return,
                    Ok(Some(end)) => {
                        let empty = end == 1 || (end == 2 && self.pending[0] == b'\r');
                        self.pass(end);
                        if empty {
                            self.state = State::Head;
                        }
                    }
                },
                State::Head => {
                    // hyper skips empty lines before a request line.
                    let blank = self.pending.iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
                    self.pass(blank);
                    if self.pending.is_empty() {
                        return;
                    }
                    let Ok(line) = self.line(self.max_head_bytes) else {
                        return self.passthrough(); // hyper answers 414/431 itself
                    };
                    let Some(line_end) = line else { return };
                    let line = &self.pending[..line_end];
                    let content = line.strip_suffix(b"\n").unwrap_or(line);
                    let content = content.strip_suffix(b"\r").unwrap_or(content);
                    let content_end = content.len();
                    let rewritten = match classify_request_line(content) {
                        LineVerdict::Malformed => {
                            self.malformed.set();
                            self.ready.extend_from_slice(MALFORMED_LINE);
                            self.pending.clear();
                            self.state = State::Ended;
                            return;
                        }
                        LineVerdict::Keep => None,
                        LineVerdict::Rewrite(line) => Some(line),
                    };
                    let Some(end) = head_end(&self.pending, line_end) else {
                        if self.pending.len() >= self.max_head_bytes {
                            return self.passthrough();
                        }
                        return;
                    };
                    let head_start = self.ready.len();
                    match rewritten {
                        Some(line) => {
                            self.ready.extend_from_slice(&line);
                            self.ready.extend_from_slice(&self.pending[content_end..end]); // line ending, headers
                        }
                        None => self.ready.extend_from_slice(&self.pending[..end]),
                    }
                    self.pending.advance(end);
                    self.state = match framing(&self.ready[head_start..]) {
                        Framing::Sized(0) => State::Head,
                        Framing::Sized(length) => State::Sized(length),
                        Framing::Chunked => State::ChunkSize,
                        Framing::Unfollowed => State::Passthrough,
                    };
                }
            }
        }
    }

    /// Bytes hyper may read straight from the socket, bypassing the framer (None: they must be judged).
    fn direct_budget(&self) -> Option<u64> {
        if !self.pending.is_empty() || !self.ready.is_empty() {
            return None;
        }
        match self.state {
            State::Passthrough => Some(u64::MAX),
            State::Sized(left) | State::ChunkData(left) => Some(left),
            _ => None,
        }
    }

    /// `count` bytes went to hyper straight from the socket.
    fn consumed_directly(&mut self, count: u64) {
        self.state = match self.state {
            State::Sized(left) if left == count => State::Head,
            State::Sized(left) => State::Sized(left - count),
            State::ChunkData(left) if left == count => State::ChunkEnd,
            State::ChunkData(left) => State::ChunkData(left - count),
            other => other,
        };
    }
}

/// A client connection whose request lines reach hyper normalised (see the module docs).
pub struct TargetNormaliser<I> {
    inner: I,
    framer: Framer,
    eof: bool,
}

impl<I> TargetNormaliser<I> {
    pub fn new(inner: I, max_head_bytes: usize, malformed: Arc<Malformed>) -> Self {
        TargetNormaliser { inner, framer: Framer::new(max_head_bytes, malformed), eof: false }
    }
}

impl<I: AsyncRead + Unpin> TargetNormaliser<I> {
    /// Read until the client's first bytes tell its protocol (a client that closes at once: HTTP/1, for
    /// hyper to see the end). HTTP/2 connections pass through untouched from here on.
    pub async fn sniff(&mut self) -> io::Result<Protocol> {
        loop {
            if let Some(protocol) = protocol_of(&self.framer.pending) {
                if protocol == Protocol::Http2 {
                    self.framer.passthrough();
                } else {
                    self.framer.advance();
                }
                return Ok(protocol);
            }
            let pending = &mut self.framer.pending;
            pending.reserve(READ_CHUNK);
            let count = std::future::poll_fn(|cx| {
                let mut read = ReadBuf::uninit(pending.spare_capacity_mut());
                std::task::ready!(Pin::new(&mut self.inner).poll_read(cx, &mut read))?;
                Poll::Ready(Ok::<usize, io::Error>(read.filled().len()))
            })
            .await?;
            if count == 0 {
                self.eof = true;
                self.framer.finish();
                return Ok(Protocol::Http1);
            }
            // SAFETY: the read initialised `count` bytes of the spare capacity.
            unsafe { pending.set_len(pending.len() + count) };
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for TargetNormaliser<I> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            let ready = this.framer.ready();
            if !ready.is_empty() {
                let count = ready.len().min(buf.remaining());
                buf.put_slice(&ready[..count]);
                ready.advance(count);
                return Poll::Ready(Ok(()));
            }
            if this.framer.state == State::Ended {
                // The malformed request is answered and the connection closed by the server; no more reads.
                return Poll::Pending;
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            // Body bytes go from the socket to hyper without a copy.
            if let Some(budget) = this.framer.direct_budget() {
                let limit = usize::try_from(budget).unwrap_or(usize::MAX).min(buf.remaining());
                let mut direct = buf.take(limit);
                std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, &mut direct))?;
                let count = direct.filled().len();
                // SAFETY: `direct` filled (initialised) `count` bytes of `buf`'s unfilled part.
                unsafe { buf.assume_init(count) };
                buf.advance(count);
                if count == 0 {
                    this.eof = true;
                } else {
                    this.framer.consumed_directly(count as u64);
                }
                return Poll::Ready(Ok(()));
            }
            // Straight into the framer's buffer (no zeroed scratch buffer, no second copy).
            let pending = &mut this.framer.pending;
            pending.reserve(READ_CHUNK);
            let mut read = ReadBuf::uninit(pending.spare_capacity_mut());
            let polled = Pin::new(&mut this.inner).poll_read(cx, &mut read);
            let count = read.filled().len();
            if polled.is_pending() {
                // A connection waiting (for its next request, or while its event stream is answered)
                // keeps no read chunk.
                release_if_empty(&mut this.framer.pending);
                release_if_empty(&mut this.framer.ready);
                return Poll::Pending;
            }
            if let Poll::Ready(Err(err)) = polled {
                return Poll::Ready(Err(err));
            }
            if count == 0 {
                this.eof = true;
                this.framer.finish();
            } else {
                // SAFETY: the read initialised `count` bytes of the spare capacity.
                unsafe { pending.set_len(pending.len() + count) };
                this.framer.advance();
            }
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for TargetNormaliser<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn through(chunks: &[&[u8]]) -> (Vec<u8>, bool) {
        let flag = Arc::new(Malformed::default());
        let mut framer = Framer::new(64 << 10, flag.clone());
        for chunk in chunks {
            framer.feed(chunk);
        }
        framer.finish();
        (framer.ready().to_vec(), flag.is_set())
    }

    #[test]
    fn every_request_line_of_a_connection_is_normalised_and_bodies_are_untouched() {
        let body = b"GET /x?a=> HTTP/1.1\r\n\r\n"; // a body that looks like a request is left alone
        let mut stream = Vec::new();
        stream.extend_from_slice(b"POST /a?x=> HTTP/1.1\r\nContent-Length: 23\r\n\r\n");
        stream.extend_from_slice(body);
        stream.extend_from_slice(b"\r\nPUT /b<c HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        stream.extend_from_slice(b"5;ext=1\r\nGET /\r\n17\r\nGET /x?a=> HTTP/1.1\r\n\r\n\r\n0\r\nTrailer: >\r\n\r\n");
        stream.extend_from_slice(b"GET /c?d=\"e\" HTTP/1.1\nHost: h\n\n");
        let expected = String::from_utf8_lossy(&stream)
            .replacen("/a?x=>", "/a?x=%3E", 1)
            .replacen("/b<c", "/b%3Cc", 1)
            .replacen("/c?d=\"e\"", "/c?d=%22e%22", 1);
        for split in [1, 3, 7, 64, stream.len()] {
            let chunks: Vec<&[u8]> = stream.chunks(split).collect();
            let (out, malformed) = through(&chunks);
            assert_eq!(String::from_utf8_lossy(&out), expected, "split {split}");
            assert!(!malformed);
        }
    }

    #[test]
    fn a_malformed_line_ends_the_stream_with_the_marker() {
        let (out, malformed) = through(&[b"GET /ok HTTP/1.1\r\n\r\nGET /a b HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/1.1\r\n\r\n"]);
        assert_eq!(out, b"GET /ok HTTP/1.1\r\n\r\nPBFAST-MALFORMED-REQUEST / HTTP/1.1\r\n\r\n");
        assert!(malformed);
    }

    #[test]
    fn the_http2_preface_is_told_from_http1() {
        assert_eq!(protocol_of(b""), None);
        assert_eq!(protocol_of(b"PRI * HTTP/2.0\r\n"), None);
        assert_eq!(protocol_of(H2_PREFACE), Some(Protocol::Http2));
        assert_eq!(protocol_of(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04"), Some(Protocol::Http2));
        for http1 in [&b"GET / HTTP/1.1\r\n"[..], b"POST", b"PRI / HTTP/1.1\r\n", b"PRI * HTTP/1.1\r\n\r\n", b"\r\n"] {
            assert_eq!(protocol_of(http1), Some(Protocol::Http1), "{}", String::from_utf8_lossy(http1));
        }
    }

    #[tokio::test]
    async fn an_http2_connection_passes_untouched_and_http1_is_normalised() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // HTTP/2 frames after the preface, with bytes an HTTP/1 head would have encoded.
        let h2 = [H2_PREFACE, b"\0\0\0\x04\0\0\0\0\0GET /a> HTTP/1.1\r\n\r\n"].concat();
        let http1 = b"GET /a> HTTP/1.1\r\nHost: h\r\n\r\n".to_vec();
        for (sent, protocol, expected) in [(h2.clone(), Protocol::Http2, h2.clone()),
                                           (http1, Protocol::Http1, b"GET /a%3E HTTP/1.1\r\nHost: h\r\n\r\n".to_vec())] {
            let (mut client, server) = tokio::io::duplex(64);
            let mut normaliser = TargetNormaliser::new(server, 64 << 10, Arc::new(Malformed::default()));
            let writer = tokio::spawn(async move {
                for chunk in sent.chunks(5) {
                    client.write_all(chunk).await.unwrap();
                }
            });
            assert_eq!(normaliser.sniff().await.unwrap(), protocol);
            writer.await.unwrap();
            let mut out = vec![0u8; expected.len()];
            normaliser.read_exact(&mut out).await.unwrap();
            assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(&expected));
        }
    }

    #[test]
    fn what_hyper_refuses_passes_unchanged() {
        let upgrade = b"GET /a HTTP/1.1\r\nUpgrade: x\r\n\r\nGET /b> HTTP/1.1\r\n\r\n";
        assert_eq!(through(&[upgrade]).0, upgrade);
        let conflicting = b"POST /a HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxGET /b> HTTP/1.1\r\n\r\n";
        assert_eq!(through(&[conflicting]).0, conflicting);
        let partial = b"GET /a> HTTP/1.1\r\nHost: h\r\n";
        assert_eq!(through(&[partial]).0, partial);
        let flag = Arc::new(Malformed::default());
        let mut framer = Framer::new(64, flag);
        let long = format!("GET /{}> HTTP/1.1\r\n\r\n", "a".repeat(100));
        framer.feed(long.as_bytes());
        assert_eq!(framer.ready().to_vec(), long.as_bytes());
    }
}
