//! The holder's listener: gateways attach to admitted streams here and read them.
//!
//! Protocol (plain bytes, not HTTP): the gateway connects and sends `<cluster token> <ticket>\n`; a wrong
//! token, an unknown ticket or nothing within [`HELLO_TIME`] closes the connection. Then the holder writes
//! the stream's bytes (SSE frames, as they are queued) until the stream ends: a stream ended by Python is
//! written out and closed with a FIN (the gateway ends the client's stream cleanly), any other end is a
//! close. The gateway sends nothing more; its close (EOF or error) ends the stream as `Gone`.
//!
//! One current-thread tokio runtime on a thread of its own; one task per connection, holding the socket and
//! the stream's shared state (no buffer of its own while the stream is idle).

use std::future::{poll_fn, Future};
use std::io;
use std::net::TcpListener as StdListener;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::streams::{EndReason, Stream, Streams};

/// How long a connection may take to say which stream it wants.
pub const HELLO_TIME: Duration = Duration::from_secs(5);
/// How often unattached tickets are looked at.
const EXPIRE_EVERY: Duration = Duration::from_secs(1);
/// Longest hello line: a token and a ticket.
const MAX_HELLO: usize = 512;

/// Whether two secrets are equal, in time independent of where they differ.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What a connection asks for in its hello.
#[derive(Debug, PartialEq, Eq)]
pub enum Hello {
    /// One stream, by its ticket.
    Ticket(u64),
    /// A gateway's multiplexed connection ([`super::mux`]).
    Mux,
}

/// Parse `<token> <ticket>` (ticket in hex) or `<token> mux` when the token is `token`.
pub fn read_hello(line: &[u8], token: &[u8]) -> Option<Hello> {
    let line = line.strip_suffix(b"\n")?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let space = line.iter().rposition(|&b| b == b' ')?;
    if !same_secret(&line[..space], token) {
        return None;
    }
    let word = &line[space + 1..];
    if word == MUX_HELLO {
        return Some(Hello::Mux);
    }
    u64::from_str_radix(std::str::from_utf8(word).ok()?, 16).ok().map(Hello::Ticket)
}

/// The hello's last word asking for a multiplexed connection.
pub const MUX_HELLO: &[u8] = b"mux";

/// How a holder serves its gateways.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Whether it takes multiplexed connections (off: a `mux` hello is closed, as a holder from before the
    /// mux did; the node then does not offer it either).
    pub mux: bool,
    /// How long a multiplexed connection's write may make no progress before it is dropped.
    pub peer_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options { mux: true, peer_timeout: super::mux_wire::PEER_TIMEOUT }
    }
}

/// Serve `listener` until `stop` says so; then end every stream (written out, closed).
pub async fn serve(listener: StdListener, streams: Arc<Streams>, token: Arc<[u8]>, options: Options, mut stop: watch::Receiver<bool>) {
    let Ok(listener) = listener.set_nonblocking(true).and_then(|()| TcpListener::from_std(listener)) else { return };
    let mut expiry = tokio::time::interval(EXPIRE_EVERY);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((socket, _)) = accepted {
                    let _ = socket.set_nodelay(true);
                    tokio::spawn(connection(socket, streams.clone(), token.clone(), options, stop.clone()));
                }
            }
            _ = expiry.tick() => streams.expire(Instant::now()),
            _ = stop.changed() => break,
        }
    }
    for handle in streams.handles() {
        streams.end(handle);
    }
}

/// The hello, and what the peer sent after it (a multiplexed connection's first commands).
async fn hello(socket: &TcpStream, token: &[u8]) -> Option<(Hello, Vec<u8>)> {
    let mut line = [0u8; MAX_HELLO];
    let mut filled = 0;
    let read = async {
        loop {
            socket.readable().await.ok()?;
            match socket.try_read(&mut line[filled..]) {
                Ok(0) => return None,
                Ok(count) => {
                    filled += count;
                    if line[..filled].contains(&b'\n') {
                        return Some(());
                    }
                    if filled == MAX_HELLO {
                        return None;
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return None,
            }
        }
    };
    tokio::time::timeout(HELLO_TIME, read).await.ok()??;
    let end = line[..filled].iter().position(|&b| b == b'\n')? + 1;
    Some((read_hello(&line[..end], token)?, line[end..filled].to_vec()))
}

/// What a stream's task has to do next.
enum Next {
    Write(Vec<u8>),
    End(EndReason, Vec<u8>),
}

/// Done once the stream has something queued or has ended.
fn next(stream: &Stream) -> impl Future<Output = Next> + '_ {
    poll_fn(move |cx| {
        let mut state = stream.lock();
        if let Some(reason) = state.end {
            return Poll::Ready(Next::End(reason, std::mem::take(&mut state.pending)));
        }
        if !state.pending.is_empty() {
            return Poll::Ready(Next::Write(super::streams::take_pending(&mut state.pending)));
        }
        super::lanes::register(&mut state.reader, cx);
        Poll::Pending
    })
}

/// Whether the peer closed (or broke) its side; bytes it sends are ignored.
async fn peer_closed(socket: &TcpStream) {
    let mut sink = [0u8; 64];
    loop {
        if socket.readable().await.is_err() {
            return;
        }
        match socket.try_read(&mut sink) {
            Ok(0) => return,
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

/// Done once the stream overflowed (its reader stopped reading while frames kept coming).
fn overflowed(stream: &Stream) -> impl Future<Output = ()> + '_ {
    poll_fn(move |cx| {
        let mut state = stream.lock();
        if state.end == Some(EndReason::Overflow) {
            return Poll::Ready(());
        }
        super::lanes::register(&mut state.reader, cx);
        Poll::Pending
    })
}

/// Write all of `bytes`, unless the peer goes away (false) or the stream overflows meanwhile (false).
async fn write_all(socket: &TcpStream, stream: &Stream, mut bytes: &[u8]) -> bool {
    while !bytes.is_empty() {
        match socket.try_write(bytes) {
            Ok(written) => bytes = &bytes[written..],
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                tokio::select! {
                    writable = socket.writable() => if writable.is_err() { return false },
                    () = peer_closed(socket) => return false,
                    () = overflowed(stream) => return false,
                }
            }
            Err(_) => return false,
        }
    }
    true
}

async fn connection(socket: TcpStream, streams: Arc<Streams>, token: Arc<[u8]>, options: Options, stop: watch::Receiver<bool>) {
    let ticket = match hello(&socket, &token).await {
        Some((Hello::Ticket(ticket), _)) => ticket,
        Some((Hello::Mux, first)) if options.mux => return super::mux::serve(socket, streams, first, stop, options.peer_timeout).await,
        Some((Hello::Mux, _)) | None => return,
    };
    let Some((handle, stream)) = streams.attach(ticket) else { return };
    let reason = loop {
        let next = {
            let mut closed = pin!(peer_closed(&socket));
            let mut next = pin!(next(&stream));
            poll_fn(|cx| {
                if let Poll::Ready(next) = next.as_mut().poll(cx) {
                    return Poll::Ready(Some(next));
                }
                closed.as_mut().poll(cx).map(|()| None)
            })
            .await
        };
        match next {
            None => break EndReason::Gone,
            Some(Next::Write(bytes)) => {
                if !write_all(&socket, &stream, &bytes).await {
                    let overflowed = stream.lock().end == Some(EndReason::Overflow);
                    break if overflowed { EndReason::Overflow } else { EndReason::Gone };
                }
            }
            Some(Next::End(EndReason::Ended, rest)) => {
                if write_all(&socket, &stream, &rest).await {
                    let _ = socket2::SockRef::from(&socket).shutdown(std::net::Shutdown::Write);
                }
                break EndReason::Ended;
            }
            Some(Next::End(reason, _)) => break reason,
        }
    };
    streams.finished(handle, reason);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn a_hello_names_its_ticket_only_with_the_token() {
        assert_eq!(read_hello(b"secret 2a\n", b"secret"), Some(Hello::Ticket(42)));
        assert_eq!(read_hello(b"secret 2a\r\n", b"secret"), Some(Hello::Ticket(42)));
        assert_eq!(read_hello(b"secret mux\n", b"secret"), Some(Hello::Mux));
        assert_eq!(read_hello(b"secreT mux\n", b"secret"), None);
        assert_eq!(read_hello(b"secreT 2a\n", b"secret"), None);
        assert_eq!(read_hello(b"secret 2a", b"secret"), None);
        assert_eq!(read_hello(b"secret zz\n", b"secret"), None);
        assert_eq!(read_hello(b"2a\n", b"secret"), None);
    }

    async fn started(streams: Arc<Streams>) -> (std::net::SocketAddr, watch::Sender<bool>) {
        let listener = StdListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(serve(listener, streams, Arc::from(&b"tok"[..]), Options::default(), stopped));
        (address, stop)
    }

    #[tokio::test]
    async fn an_attached_stream_gets_its_frames_and_its_end() {
        let streams = Arc::new(Streams::new(1 << 20, Duration::from_secs(5), Box::new(|| {})));
        let (address, _stop) = started(streams.clone()).await;
        let handle = streams.admit(b"first\n", 0xab, Instant::now());
        let mut peer = tokio::net::TcpStream::connect(address).await.unwrap();
        peer.write_all(b"tok ab\n").await.unwrap();
        let mut got = vec![0u8; 6];
        peer.read_exact(&mut got).await.unwrap();
        assert_eq!(got, b"first\n");
        streams.send([(handle, &b"second\n"[..])]);
        streams.end(handle);
        let mut rest = Vec::new();
        peer.read_to_end(&mut rest).await.unwrap(); // the FIN comes after what was queued
        assert_eq!(rest, b"second\n");
        while streams.take_ended().is_empty() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(streams.is_empty());
    }

    #[tokio::test]
    async fn a_peer_that_stops_reading_overflows_and_is_dropped() {
        let streams = Arc::new(Streams::new(64 << 10, Duration::from_secs(5), Box::new(|| {})));
        let (address, _stop) = started(streams.clone()).await;
        let handle = streams.admit(b"", 5, Instant::now());
        let mut peer = tokio::net::TcpStream::connect(address).await.unwrap();
        peer.write_all(b"tok 5\n").await.unwrap();
        let frame = vec![b'x'; 16 << 10];
        // The socket buffers fill (the peer never reads), then the stream's own queue: it ends.
        let ended = loop {
            streams.send([(handle, &frame[..])]);
            let ended = streams.take_ended();
            if !ended.is_empty() {
                break ended;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        assert_eq!(ended, vec![(handle, EndReason::Overflow)]);
    }

    #[tokio::test]
    async fn a_holder_with_the_mux_off_closes_a_mux_hello_and_still_serves_a_stream_per_connection() {
        let streams = Arc::new(Streams::new(1 << 20, Duration::from_secs(5), Box::new(|| {})));
        let listener = StdListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let (_stop, stopped) = watch::channel(false);
        let options = Options { mux: false, ..Options::default() };
        tokio::spawn(serve(listener, streams.clone(), Arc::from(&b"tok"[..]), options, stopped));
        streams.admit(b"first\n", 0xab, Instant::now());
        let mut mux = tokio::net::TcpStream::connect(address).await.unwrap();
        mux.write_all(b"tok mux\n").await.unwrap();
        let mut nothing = Vec::new();
        mux.read_to_end(&mut nothing).await.unwrap(); // closed, as a holder from before the mux
        assert!(nothing.is_empty());
        let mut peer = tokio::net::TcpStream::connect(address).await.unwrap();
        peer.write_all(b"tok ab\n").await.unwrap();
        let mut got = vec![0u8; 6];
        peer.read_exact(&mut got).await.unwrap();
        assert_eq!(got, b"first\n");
    }

    #[tokio::test]
    async fn a_wrong_token_is_closed_and_a_peer_that_leaves_ends_its_stream() {
        let streams = Arc::new(Streams::new(1 << 20, Duration::from_secs(5), Box::new(|| {})));
        let (address, _stop) = started(streams.clone()).await;
        let handle = streams.admit(b"x", 1, Instant::now());
        let mut intruder = tokio::net::TcpStream::connect(address).await.unwrap();
        intruder.write_all(b"nope 1\n").await.unwrap();
        let mut nothing = Vec::new();
        intruder.read_to_end(&mut nothing).await.unwrap();
        assert!(nothing.is_empty());
        let mut peer = tokio::net::TcpStream::connect(address).await.unwrap();
        peer.write_all(b"tok 1\n").await.unwrap();
        let mut got = [0u8; 1];
        peer.read_exact(&mut got).await.unwrap();
        drop(peer);
        let ended = loop {
            let ended = streams.take_ended();
            if !ended.is_empty() {
                break ended;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        assert_eq!(ended, vec![(handle, EndReason::Gone)]);
    }
}
