//! The gateway's side of the multiplexed connection to a node's stream holder
//! ([`crate::stream_holder::mux_wire`]): one connection per holder (host, port) and tenant carries every
//! stream of that tenant this gateway reads from it, instead of one connection (a descriptor and a read per
//! event) per stream.
//!
//! Each connection has a [`Streams`] table of its own: a stream attached through it is admitted there and
//! read by the client's connection task as a [`LocalReader`] (the same reader an all-in-one's gateway uses
//! for its own node's streams). One task reads the connection and queues each record's frames on its
//! stream: it never waits for a client, and a stream whose client does not keep up overflows its bounded
//! queue and ends (its client's connection breaks) without slowing the others; the queues of all the
//! connections share one budget, past which the largest ones end the same way. Another task writes the
//! commands: attach, and close for the streams whose client went away (so the node forgets them). When
//! the connection ends (the node stopped or died, the network broke) every stream on it ends cleanly, so the
//! SDKs reconnect at once, and the next attach connects again.
//!
//! The node names a record's stream by the id this gateway gave it, and is not trusted to get it right: a
//! connection carries one tenant's streams only, and each connection's ids are a range of their own, so a
//! record for an id this connection never gave (another connection's, another tenant's, none) is dropped
//! and counted ([`foreign_records`], the gateway's `pbfast_gateway_held_records_dropped_total`), never
//! queued on a stream. (A record for a stream of this connection that ended meanwhile is dropped quietly:
//! its close and the node's frames cross on the wire.) One connection per tenant also keeps a tenant's
//! burst, or a broken record, from delaying or ending another tenant's streams.
//!
//! Thread-safety: the pool is a process-wide table; a connection's table is shared by its tasks and the
//! clients' tasks on any of the gateway's threads. The settings are process-wide too ([`configure`]).

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify};

use crate::stream_holder::listener::MUX_HELLO;
use crate::stream_holder::mux_wire::{self, ATTACH, BROKEN, CLOSE, DATA, END};
use crate::stream_holder::streams::{Budget, EndReason, LocalReader, Streams};

/// The gateway's bounds on held streams (`--gateway-held-stream-limit-kb`, `--gateway-held-streams-budget-mb`,
/// `--gateway-held-stream-timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Bytes a stream may have queued on the gateway for a client that does not read (as the holder's default,
    /// so that any event the node queues fits).
    pub stream_limit: usize,
    /// Bytes queued on the gateway for all the streams of all its connections: past it, the streams with the
    /// most queued are dropped as a client past its own limit is (10,000 stalled clients would otherwise hold
    /// 40 GiB of a gateway every tenant shares).
    pub budget: usize,
    /// How long a node may take no commands, or leave keepalive probes unanswered, before its connection
    /// (and every stream on it) is dropped.
    pub peer_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { stream_limit: STREAM_LIMIT, budget: GATEWAY_LIMIT, peer_timeout: mux_wire::PEER_TIMEOUT }
    }
}

/// The default of [`Settings::stream_limit`].
pub const STREAM_LIMIT: usize = 4 << 20;
/// The default of [`Settings::budget`].
pub const GATEWAY_LIMIT: usize = 256 << 20;
static SETTINGS: LazyLock<Mutex<Settings>> = LazyLock::new(|| Mutex::new(Settings::default()));
static GATEWAY_BUDGET: LazyLock<Arc<Budget>> = LazyLock::new(|| Budget::new(GATEWAY_LIMIT));

/// Set the bounds of held streams for this process (a gateway's start; connections made afterwards use them,
/// the budget at once).
pub fn configure(settings: Settings) {
    *SETTINGS.lock() = settings;
    GATEWAY_BUDGET.set_limit(settings.budget);
}

fn settings() -> Settings {
    *SETTINGS.lock()
}

/// Bytes read from the connection at most per read: an event's frames for 1,000 recipients (~300 KB) in one
/// or two reads, so their readers are woken in one or two batches.
const READ_CHUNK: usize = 256 << 10;

/// A connection with no stream for this long (two idle checks in a row) is closed: one connection per node and
/// tenant would otherwise stay open for every tenant that ever had a stream through this gateway.
const IDLE_CLOSE: Duration = Duration::from_secs(60);

/// Records a node sent for a stream id their connection never gave, dropped.
static FOREIGN_RECORDS: AtomicU64 = AtomicU64::new(0);

/// How many records nodes sent for streams their connection never gave (dropped, never delivered).
pub fn foreign_records() -> u64 {
    FOREIGN_RECORDS.load(Ordering::Relaxed)
}

/// Connections made so far: each connection's stream ids start at its number times 2^32.
static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(1);

type Command = [u8; mux_wire::COMMAND_LEN];

/// One multiplexed connection to a holder.
struct Mux {
    streams: Arc<Streams>,
    commands: mpsc::UnboundedSender<Command>,
    /// False once the connection ended (checked and set under this lock, so a stream admitted while it is
    /// true is among those the end ends).
    alive: Mutex<bool>,
}

impl Mux {
    /// A new stream for `ticket` read through this connection; None when the connection has ended.
    fn attach(&self, ticket: u64) -> Option<LocalReader> {
        let alive = self.alive.lock();
        if !*alive {
            return None;
        }
        let local = NEXT_LOCAL.fetch_add(1, Ordering::Relaxed);
        let id = self.streams.admit(b"", local, Instant::now());
        let reader = self.streams.attach_local(local)?;
        drop(alive);
        if self.commands.send(mux_wire::command(ATTACH, id, ticket)).is_err() {
            self.streams.end(id);
        }
        Some(reader)
    }

    /// Mark the connection ended if it has no stream (checked under the lock an attach admits under, so no
    /// stream is admitted to a connection about to close); true when it was marked.
    fn end_if_idle(&self) -> bool {
        let mut alive = self.alive.lock();
        if *alive && self.streams.is_empty() {
            *alive = false;
            return true;
        }
        false
    }

    /// The connection ended: every stream on it ends cleanly (its queued frames are still read).
    fn ended(&self) {
        *self.alive.lock() = false;
        for handle in self.streams.handles() {
            self.streams.end(handle);
        }
    }
}

/// Local tickets of the per-connection tables (any unique number: only this module attaches them).
static NEXT_LOCAL: AtomicU64 = AtomicU64::new(1);

/// Key: the holder's host, port, the token this gateway speaks with, and the tenant.
type Key = (String, u16, Vec<u8>, String);

/// Why a connect failed, kept to answer the attaches that waited for it (and those of the next moment).
#[derive(Clone)]
struct Failure {
    kind: io::ErrorKind,
    message: String,
}

impl Failure {
    fn error(&self) -> io::Error {
        io::Error::new(self.kind, self.message.clone())
    }
}

/// How long a failed connect answers the attaches that come next, instead of each trying again (a holder
/// that is down or blackholed would otherwise cost each of them the whole connect timeout).
const FAILURE_MEMORY: Duration = Duration::from_secs(1);

/// A connect in progress: its outcome once it is done.
type Attempt = tokio::sync::watch::Receiver<Option<Result<Arc<Mux>, Failure>>>;

enum Connection {
    Absent,
    Live(Arc<Mux>),
    Connecting(Attempt),
    Failed(Failure, Instant),
}

/// A holder's connection, and how many connects were started for it.
struct Slot {
    connection: Connection,
    connects: u64,
}

impl Slot {
    fn live(&self) -> Option<&Arc<Mux>> {
        match &self.connection {
            Connection::Live(mux) if *mux.alive.lock() => Some(mux),
            _ => None,
        }
    }
}

static POOL: LazyLock<Mutex<HashMap<Key, Arc<Mutex<Slot>>>>> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// The stream of `ticket` of `tenant` held at `host:port`, read through this gateway's connection to that
/// holder for that tenant (made when there is none, or the last one ended). The connect runs in a task of its
/// own, with no lock held: the attaches that come meanwhile wait for its outcome, and share it (a failure too).
pub async fn attach(host: &str, port: u16, token: &[u8], tenant: &str, ticket: u64, connect_timeout: Duration) -> io::Result<LocalReader> {
    let key = (host.to_owned(), port, token.to_vec(), tenant.to_owned());
    let slot = {
        let mut pool = POOL.lock();
        if !pool.contains_key(&key) {
            // Holders' ports change with every node start: forget the connections that ended (a failure only
            // once its memory is over: until then the attaches that come get it without trying again).
            let now = Instant::now();
            pool.retain(|_, slot| {
                let slot = slot.lock();
                slot.live().is_some()
                    || match &slot.connection {
                        Connection::Connecting(_) => true,
                        Connection::Failed(_, until) => now < *until,
                        _ => false,
                    }
            });
        }
        pool.entry(key.clone()).or_insert_with(|| Arc::new(Mutex::new(Slot { connection: Connection::Absent, connects: 0 }))).clone()
    };
    loop {
        let mut attempt = {
            let mut current = slot.lock();
            match &current.connection {
                Connection::Live(mux) => {
                    if let Some(reader) = mux.attach(ticket) {
                        return Ok(reader);
                    }
                }
                Connection::Failed(failure, until) if Instant::now() < *until => return Err(failure.error()),
                _ => {}
            }
            match &current.connection {
                // Its sender is gone when the connecting task was dropped (the runtime stops): try again.
                Connection::Connecting(attempt) if attempt.has_changed().is_ok() => attempt.clone(),
                _ => {
                    let (done, attempt) = tokio::sync::watch::channel(None);
                    current.connection = Connection::Connecting(attempt.clone());
                    current.connects += 1;
                    tokio::spawn(connect_for(slot.clone(), key.clone(), connect_timeout, done));
                    attempt
                }
            }
        };
        let outcome = match attempt.wait_for(Option::is_some).await {
            Ok(outcome) => outcome.clone(),
            Err(_) => continue,
        };
        return match outcome {
            Some(Ok(mux)) => mux.attach(ticket).ok_or_else(|| io::Error::new(io::ErrorKind::ConnectionReset, "stream holder closed")),
            Some(Err(failure)) => Err(failure.error()),
            None => continue,
        };
    }
}

/// Connect to the holder of `key` and publish the outcome in its slot and to the attaches waiting for it.
async fn connect_for(slot: Arc<Mutex<Slot>>, key: Key, connect_timeout: Duration, done: tokio::sync::watch::Sender<Option<Result<Arc<Mux>, Failure>>>) {
    let (host, port, token, tenant) = key;
    let outcome = connect(&host, port, &token, &tenant, connect_timeout)
        .await
        .map_err(|error| Failure { kind: error.kind(), message: error.to_string() });
    slot.lock().connection = match &outcome {
        Ok(mux) => Connection::Live(mux.clone()),
        Err(failure) => Connection::Failed(failure.clone(), Instant::now() + FAILURE_MEMORY),
    };
    done.send_replace(Some(outcome));
}

/// Streams open through multiplexed connections, and the connections (for the gateway's tests and stats).
pub fn open_counts() -> (usize, usize) {
    let pool = POOL.lock();
    let live: Vec<Arc<Mux>> = pool.values().filter_map(|slot| slot.lock().live().cloned()).collect();
    (live.iter().map(|mux| mux.streams.len()).sum(), live.len())
}

async fn connect(host: &str, port: u16, token: &[u8], tenant: &str, connect_timeout: Duration) -> io::Result<Arc<Mux>> {
    let settings = settings();
    let connecting = TcpStream::connect(format!("{host}:{port}"));
    let socket = tokio::time::timeout(connect_timeout, connecting)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "stream holder connect timeout"))??;
    socket.set_nodelay(true)?;
    mux_wire::watch_peer(&socket, settings.peer_timeout)?;
    let (reading, mut writing) = socket.into_split();
    let mut hello = token.to_vec();
    hello.push(b' ');
    hello.extend_from_slice(MUX_HELLO);
    hello.push(b'\n');
    writing.write_all(&hello).await?;
    let closed = Arc::new(Notify::new());
    let notified = closed.clone();
    let first_id = NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed) << 32;
    let streams = Streams::with_budget(settings.stream_limit, Duration::from_secs(3600), Box::new(move || notified.notify_one()), &GATEWAY_BUDGET)
        .starting_at(first_id);
    let peer = format!("{host}:{port} (tenant {tenant})");
    let (commands, queued) = mpsc::unbounded_channel();
    let mux = Arc::new(Mux { streams, commands, alive: Mutex::new(true) });
    let guard = EndGuard(mux.clone());
    tokio::spawn(async move {
        // Whichever half ends first (the node closed, a bad record, a failed or stalled write) ends the
        // other: the socket closes with both halves, and the guard ends the streams and marks the connection
        // dead, so the next attach connects again.
        tokio::select! {
            () = read_records(reading, &guard.0.streams, &peer) => {}
            () = write_commands(writing, queued, &guard.0, closed, settings.peer_timeout) => {}
        }
        drop(guard);
    });
    Ok(mux)
}

/// Ends the connection's streams when its task ends, also when the task is dropped with its runtime.
struct EndGuard(Arc<Mux>);

impl Drop for EndGuard {
    fn drop(&mut self) {
        self.0.ended();
    }
}

/// Queue each record's frames on its stream until the connection ends; records for ids this connection never
/// gave are dropped and counted (`peer`: the connection, for the log).
async fn read_records(socket: OwnedReadHalf, streams: &Streams, peer: &str) {
    let mut buffer: Vec<u8> = Vec::new();
    let mut foreign: u64 = 0;
    loop {
        if socket.readable().await.is_err() {
            return;
        }
        buffer.reserve(READ_CHUNK);
        match socket.try_read_buf(&mut buffer) {
            Ok(0) => return,
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
            Err(_) => return,
        }
        let mut used = 0;
        let mut frames: Vec<(u64, &[u8])> = Vec::new();
        let mut ends: Vec<(u64, u8)> = Vec::new();
        loop {
            match mux_wire::record(&buffer[used..]) {
                Ok(Some((record, length))) => {
                    used += length;
                    if !streams.issued(record.id) {
                        foreign += 1;
                        FOREIGN_RECORDS.fetch_add(1, Ordering::Relaxed);
                        if foreign == 1 {
                            eprintln!("[Gateway] held streams: {peer} sent a record for a stream it was not given (dropped; counted in pbfast_gateway_held_records_dropped_total)");
                        }
                        continue;
                    }
                    match record.kind {
                        DATA => frames.push((record.id, record.data)),
                        kind => ends.push((record.id, kind)),
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        // One table lock and one wake-up per reading thread for all the frames of this read.
        streams.send(frames);
        for (id, kind) in ends {
            match kind {
                END => streams.end(id),
                BROKEN => streams.fail(id, EndReason::Gone),
                _ => {}
            }
        }
        buffer.drain(..used);
        if buffer.is_empty() {
            buffer = Vec::new(); // an idle connection keeps no read buffer
        }
    }
}

/// Write the attach commands, and a close for every stream whose client went away or fell behind; return (the
/// connection ends) once it has had no stream for [`IDLE_CLOSE`].
async fn write_commands(mut socket: OwnedWriteHalf, mut queued: mpsc::UnboundedReceiver<Command>, mux: &Mux, closed: Arc<Notify>, peer_timeout: Duration) {
    let streams = &mux.streams;
    let mut out: Vec<u8> = Vec::new();
    let mut idle_check = tokio::time::interval_at(tokio::time::Instant::now() + IDLE_CLOSE / 2, IDLE_CLOSE / 2);
    let mut idle_before = false;
    loop {
        tokio::select! {
            command = queued.recv() => match command {
                Some(command) => out.extend_from_slice(&command),
                None => return,
            },
            () = closed.notified() => {}
            _ = idle_check.tick() => {
                let idle = streams.is_empty();
                if idle && idle_before && mux.end_if_idle() {
                    return;
                }
                idle_before = idle;
                continue;
            }
        }
        while let Ok(command) = queued.try_recv() {
            out.extend_from_slice(&command);
        }
        for (id, reason) in streams.take_ended() {
            if reason != EndReason::Ended {
                out.extend_from_slice(&mux_wire::command(CLOSE, id, 0));
            }
        }
        // A node that takes no commands for this long is stuck (the reading half keeps draining it).
        if !out.is_empty() && !matches!(tokio::time::timeout(peer_timeout, socket.write_all(&out)).await, Ok(Ok(()))) {
            return;
        }
        out.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream_holder::streams::Read;
    use bytes::Bytes;
    use std::future::poll_fn;
    use std::net::TcpListener as StdListener;
    use tokio::sync::watch;

    /// A holder's listener on loopback: its port, its table, and the sender that stops it.
    fn holder() -> (u16, Arc<Streams>, watch::Sender<bool>) {
        let listener = StdListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let streams = Arc::new(Streams::new(1 << 20, Duration::from_secs(5), Box::new(|| {})));
        let (stop, stopped) = watch::channel(false);
        let options = crate::stream_holder::listener::Options::default();
        tokio::spawn(crate::stream_holder::listener::serve(listener, streams.clone(), Arc::from(&b"tok"[..]), options, stopped));
        (port, streams, stop)
    }

    async fn read(reader: &mut LocalReader) -> Read {
        tokio::time::timeout(Duration::from_secs(10), poll_fn(|cx| reader.poll_read(cx))).await.expect("read in time")
    }

    /// Everything until the stream's end: its bytes and how it ended.
    async fn read_to_end(reader: &mut LocalReader) -> (Vec<u8>, Read) {
        let mut got = Vec::new();
        loop {
            match read(reader).await {
                Read::Frames(frames) => got.extend_from_slice(&frames),
                end => return (got, end),
            }
        }
    }

    /// The pooled connection to the test holder at `port` (alive or not), and how many connects it took.
    fn pooled(port: u16) -> Option<Arc<Mux>> {
        pooled_for(port, "acme")
    }

    fn pooled_for(port: u16, tenant: &str) -> Option<Arc<Mux>> {
        let slot = POOL.lock().get(&("127.0.0.1".to_owned(), port, b"tok".to_vec(), tenant.to_owned())).cloned()?;
        let slot = slot.lock();
        match &slot.connection {
            Connection::Live(mux) => Some(mux.clone()),
            _ => None,
        }
    }

    fn connects(port: u16) -> u64 {
        POOL.lock().get(&("127.0.0.1".to_owned(), port, b"tok".to_vec(), "acme".to_owned())).map_or(0, |slot| slot.lock().connects)
    }

    async fn until(mut done: impl FnMut() -> bool) {
        tokio::time::timeout(Duration::from_secs(10), async {
            while !done() {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await
        .expect("in time");
    }

    #[tokio::test]
    async fn a_connection_left_without_streams_closes_and_the_next_attach_connects_again() {
        let (port, held, _stop) = holder();
        let first_handle = held.admit(b"x;", 0x1, Instant::now());
        let timeout = Duration::from_secs(5);
        let mut reader = attach("127.0.0.1", port, b"tok", "idle", 0x1, timeout).await.unwrap();
        assert_eq!(read(&mut reader).await, Read::Frames(Bytes::from_static(b"x;")));
        let first = pooled_for(port, "idle").unwrap();
        assert!(!first.end_if_idle()); // a stream is open on it
        held.end(first_handle);
        assert_eq!(read_to_end(&mut reader).await, (Vec::new(), Read::Ended));
        until(|| first.streams.is_empty()).await;
        assert!(first.end_if_idle());
        assert!(first.attach(0x2).is_none()); // closed to new streams
        held.admit(b"y;", 0x2, Instant::now());
        let mut again = attach("127.0.0.1", port, b"tok", "idle", 0x2, timeout).await.unwrap();
        assert_eq!(read(&mut again).await, Read::Frames(Bytes::from_static(b"y;")));
        assert!(!Arc::ptr_eq(&first, &pooled_for(port, "idle").unwrap()));
    }

    #[tokio::test]
    async fn streams_of_one_holder_share_one_connection_and_end_each_on_their_own() {
        let (port, held, _stop) = holder();
        let now = Instant::now();
        let (a, b, c) = (held.admit(b"A0;", 0xa, now), held.admit(b"B0;", 0xb, now), held.admit(b"C0;", 0xc, now));
        let timeout = Duration::from_secs(5);
        let mut reader_a = attach("127.0.0.1", port, b"tok", "acme", 0xa, timeout).await.unwrap();
        let mut reader_b = attach("127.0.0.1", port, b"tok", "acme", 0xb, timeout).await.unwrap();
        let reader_c = attach("127.0.0.1", port, b"tok", "acme", 0xc, timeout).await.unwrap();
        assert_eq!(read(&mut reader_a).await, Read::Frames(Bytes::from_static(b"A0;")));
        assert_eq!(read(&mut reader_b).await, Read::Frames(Bytes::from_static(b"B0;")));
        // An unknown ticket breaks only its own stream.
        let mut stranger = attach("127.0.0.1", port, b"tok", "acme", 0xdead, timeout).await.unwrap();
        assert_eq!(read(&mut stranger).await, Read::Broken(EndReason::Gone));

        held.send([(a, &b"A1;"[..]), (b, &b"B1;"[..])]);
        held.send([(a, &b"A2;"[..])]);
        held.end(a); // a move, the idle time: written out, then the clean end
        assert_eq!(read_to_end(&mut reader_a).await, (b"A1;A2;".to_vec(), Read::Ended));
        assert_eq!(read(&mut reader_b).await, Read::Frames(Bytes::from_static(b"B1;")));
        until(|| held.take_ended() == vec![(a, EndReason::Ended)]).await;

        drop(reader_c); // the client went away: the node forgets the stream
        until(|| held.take_ended() == vec![(c, EndReason::Gone)]).await;
        assert_eq!(held.len(), 1);
        assert_eq!(pooled(port).unwrap().streams.len(), 1); // b's
        drop(reader_b);
        until(|| held.is_empty()).await;
    }

    #[tokio::test]
    async fn a_client_that_stops_reading_overflows_alone() {
        let (port, held, _stop) = holder();
        let now = Instant::now();
        let (stalled, live) = (held.admit(b"", 1, now), held.admit(b"", 2, now));
        let timeout = Duration::from_secs(5);
        let mut stalled_reader = attach("127.0.0.1", port, b"tok", "acme", 1, timeout).await.unwrap();
        let mut live_reader = attach("127.0.0.1", port, b"tok", "acme", 2, timeout).await.unwrap();
        let frame = vec![b'x'; 64 << 10];
        let (mut sent, mut received) = (0, 0);
        // The stalled client's queue on the gateway passes its limit: it is dropped, on both sides, while
        // the other stream gets every frame.
        for _ in 0..(STREAM_LIMIT / frame.len() + 8) {
            held.send([(stalled, &frame[..]), (live, &frame[..])]);
            sent += frame.len();
            while received < sent {
                match read(&mut live_reader).await {
                    Read::Frames(frames) => received += frames.len(),
                    other => panic!("the live stream ended: {other:?}"),
                }
            }
        }
        assert_eq!(read_to_end(&mut stalled_reader).await.1, Read::Broken(EndReason::Overflow));
        until(|| held.take_ended() == vec![(stalled, EndReason::Gone)]).await;
        held.send([(live, &b"after"[..])]);
        assert_eq!(read(&mut live_reader).await, Read::Frames(Bytes::from_static(b"after")));
    }

    #[tokio::test]
    async fn the_holders_stop_ends_every_stream_cleanly_and_the_next_attach_connects_again() {
        let (port, held, stop) = holder();
        let handle = held.admit(b"first;", 7, Instant::now());
        let timeout = Duration::from_secs(5);
        let mut reader = attach("127.0.0.1", port, b"tok", "acme", 7, timeout).await.unwrap();
        assert_eq!(read(&mut reader).await, Read::Frames(Bytes::from_static(b"first;")));
        held.send([(handle, &b"last;"[..])]);
        stop.send(true).unwrap();
        assert_eq!(read_to_end(&mut reader).await, (b"last;".to_vec(), Read::Ended));
        until(|| held.is_empty()).await;
        assert!(attach("127.0.0.1", port, b"tok", "acme", 8, timeout).await.is_err()); // nobody listens there now
    }

    #[tokio::test]
    async fn a_connection_that_breaks_ends_its_streams_cleanly_after_what_arrived() {
        // A holder that dies: it sends one stream's frame, then its connection is gone.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut hello = [0u8; 8]; // "tok mux\n"
            tokio::io::AsyncReadExt::read_exact(&mut socket, &mut hello).await.unwrap();
            let mut attach = [0u8; mux_wire::COMMAND_LEN];
            tokio::io::AsyncReadExt::read_exact(&mut socket, &mut attach).await.unwrap();
            let (commands, _) = mux_wire::commands(&attach);
            let mut out = Vec::new();
            mux_wire::push_record(&mut out, DATA, commands[0].1, b"data:1\n\n");
            socket.write_all(&out).await.unwrap();
        });
        let mut reader = attach("127.0.0.1", port, b"tok", "acme", 1, Duration::from_secs(5)).await.unwrap();
        assert_eq!(read_to_end(&mut reader).await, (b"data:1\n\n".to_vec(), Read::Ended));
    }

    #[tokio::test]
    async fn a_bad_record_closes_the_whole_connection_and_the_next_attach_opens_a_new_one() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut hello_and_attach = [0u8; 8 + mux_wire::COMMAND_LEN];
            tokio::io::AsyncReadExt::read_exact(&mut socket, &mut hello_and_attach).await.unwrap();
            socket.write_all(&[9u8; mux_wire::RECORD_HEAD]).await.unwrap(); // no holder writes this
            // The gateway closes its writing half too: this read ends instead of waiting forever.
            let mut rest = Vec::new();
            let _ = tokio::io::AsyncReadExt::read_to_end(&mut socket, &mut rest).await;
            closed_tx.send(()).unwrap();
            let (mut again, _) = listener.accept().await.unwrap();
            let mut hello = [0u8; 8];
            tokio::io::AsyncReadExt::read_exact(&mut again, &mut hello).await.unwrap();
            std::future::pending::<()>().await;
        });
        let timeout = Duration::from_secs(5);
        let mut reader = attach("127.0.0.1", port, b"tok", "acme", 1, timeout).await.unwrap();
        assert_eq!(read_to_end(&mut reader).await, (Vec::new(), Read::Ended));
        tokio::time::timeout(Duration::from_secs(10), closed_rx).await.expect("closed in time").unwrap();
        let first = pooled(port).unwrap();
        assert!(!*first.alive.lock());
        let _second = attach("127.0.0.1", port, b"tok", "acme", 2, timeout).await.unwrap();
        let second = pooled(port).unwrap();
        assert!(!Arc::ptr_eq(&first, &second));
        assert!(*second.alive.lock());
    }

    /// A fake holder's side of one connection: the hello's last word and the attach command's id.
    async fn accept_attach(listener: &tokio::net::TcpListener) -> (TcpStream, String, u64) {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut hello = [0u8; 8]; // "tok mux\n"
        tokio::io::AsyncReadExt::read_exact(&mut socket, &mut hello).await.unwrap();
        let mut attach = [0u8; mux_wire::COMMAND_LEN];
        tokio::io::AsyncReadExt::read_exact(&mut socket, &mut attach).await.unwrap();
        let (commands, _) = mux_wire::commands(&attach);
        (socket, String::from_utf8_lossy(&hello).into_owned(), commands[0].1)
    }

    #[tokio::test]
    async fn records_for_streams_a_connection_never_gave_are_dropped_and_counted() {
        // A node that gets the ids wrong: on tenant a's connection it sends frames for tenant b's stream, for
        // an id nobody gave, then a's own.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let timeout = Duration::from_secs(5);
        let before = foreign_records();
        let (reader_a, accepted_a) = tokio::join!(attach("127.0.0.1", port, b"tok", "tenant-a", 1, timeout), accept_attach(&listener));
        let (reader_b, accepted_b) = tokio::join!(attach("127.0.0.1", port, b"tok", "tenant-b", 2, timeout), accept_attach(&listener));
        let (mut reader_a, mut reader_b) = (reader_a.unwrap(), reader_b.unwrap());
        let ((mut socket_a, hello_a, id_a), (mut socket_b, _, id_b)) = (accepted_a, accepted_b);
        assert_eq!(hello_a, "tok mux\n");
        assert_ne!(id_a, id_b); // each connection's ids are its own
        let mut out = Vec::new();
        mux_wire::push_record(&mut out, DATA, id_b, b"data:secret-of-b\n\n");
        mux_wire::push_record(&mut out, END, id_b, b"");
        mux_wire::push_record(&mut out, DATA, id_a + 1000, b"data:nobody\n\n");
        mux_wire::push_record(&mut out, DATA, 0, b"data:nobody\n\n");
        mux_wire::push_record(&mut out, DATA, id_a, b"data:a\n\n");
        socket_a.write_all(&out).await.unwrap();
        assert_eq!(read(&mut reader_a).await, Read::Frames(Bytes::from_static(b"data:a\n\n")));
        assert!(foreign_records() >= before + 4);
        // b's stream got none of it, and is still open: its own frames come on its own connection.
        let mut own = Vec::new();
        mux_wire::push_record(&mut own, DATA, id_b, b"data:b\n\n");
        socket_b.write_all(&own).await.unwrap();
        assert_eq!(read(&mut reader_b).await, Read::Frames(Bytes::from_static(b"data:b\n\n")));
        // The connections stay up for the streams they do carry.
        assert_eq!(pooled_for(port, "tenant-a").unwrap().streams.len(), 1);
    }

    #[tokio::test]
    async fn attaches_that_come_together_share_one_connect_and_its_failure() {
        let timeout = Duration::from_secs(5);
        // Nobody listens: the attaches that came while it was tried, and those of the next moment, get its
        // failure without trying again.
        let refused = StdListener::bind("127.0.0.1:0").unwrap();
        let port = refused.local_addr().unwrap().port();
        drop(refused);
        let one = |ticket| attach("127.0.0.1", port, b"tok", "acme", ticket, timeout);
        let (a, b, c, d) = tokio::join!(one(1), one(2), one(3), one(4));
        assert!([a, b, c, d].iter().all(Result::is_err));
        assert!(one(5).await.is_err());
        assert_eq!(connects(port), 1);

        let (port, held, _stop) = holder();
        for ticket in 1..=4 {
            held.admit(b"x;", ticket, Instant::now());
        }
        let one = |ticket| attach("127.0.0.1", port, b"tok", "acme", ticket, timeout);
        let (a, b, c, d) = tokio::join!(one(1), one(2), one(3), one(4));
        assert_eq!(connects(port), 1);
        assert_eq!(pooled(port).unwrap().streams.len(), 4);
        for mut reader in [a, b, c, d].map(Result::unwrap) {
            assert_eq!(read(&mut reader).await, Read::Frames(Bytes::from_static(b"x;")));
        }
    }
}
