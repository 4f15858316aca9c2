//! The holder's side of a multiplexed connection ([`super::mux_wire`]): one gateway's streams of this node
//! over one socket, instead of a connection (two descriptors on the gateway, one write each per event)
//! per stream.
//!
//! One task per connection. Senders mark the streams that have something ([`super::ready`]); the task takes
//! the marked ones, gathers their frames into one buffer and writes it (one system call for an event's
//! recipients on this gateway). Nothing waits for one stream: a stream's queue is bounded in [`Streams`]
//! (past it the stream ends as `Overflow`, sent as [`BROKEN`]), and the gateway never stops reading the
//! connection (its own per-stream queues are bounded the same way). The connection's end ends its streams
//! as `Gone` (Python forgets their clients).

use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::io;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::watch;

use super::mux_wire::{self, ATTACH, BROKEN, CLOSE, DATA, END};
use super::ready::{ReadyList, Slot};
use super::streams::{take_pending, EndReason, Stream, Streams};

/// Bytes gathered before a write; more marked streams wait for the next one.
const WRITE_BATCH: usize = 512 << 10;
/// Commands read at most per read.
const READ_CHUNK: usize = 64 * mux_wire::COMMAND_LEN;

/// What woke the connection's task.
enum Wake {
    Marked(Vec<u64>),
    Readable,
    Closed,
}

struct Attached {
    handle: u64,
    stream: Arc<Stream>,
}

/// Serve a gateway's multiplexed connection (after its hello; `first`: what came after it) until it closes,
/// or until the holder stops (`stop`) and its streams are written out: then it closes it (the gateway
/// connects again for the next stream, to wherever that is held). The connection is dropped when a write
/// makes no progress for `write_stall` (a gateway that is stuck or gone; also its TCP user timeout): its
/// streams end as `Gone`, reported at once, so they stop counting against the limits.
pub async fn serve(socket: TcpStream, streams: Arc<Streams>, first: Vec<u8>, mut stop: watch::Receiver<bool>, write_stall: Duration) {
    let _ = mux_wire::watch_peer(&socket, write_stall); // best effort: the write stall bounds the rest
    let ready = Arc::new(ReadyList::default());
    let mut attached: HashMap<u64, Attached> = HashMap::new();
    let mut backlog: VecDeque<u64> = VecDeque::new();
    let mut commands: Vec<u8> = first;
    let mut out: Vec<u8> = Vec::new();
    let mut finished: Vec<(u64, EndReason)> = Vec::new();
    let mut stopping = *stop.borrow();
    'serving: loop {
        if stopping && attached.is_empty() && backlog.is_empty() {
            break 'serving;
        }
        // Commands first (cheap, and an attach or a close must not wait out a long burst of events).
        let waiting = poll_fn(|cx| {
            if commands.len() >= mux_wire::COMMAND_LEN {
                return Poll::Ready(Wake::Readable); // the commands that came with the hello
            }
            match socket.poll_read_ready(cx) {
                Poll::Ready(Ok(())) => return Poll::Ready(Wake::Readable),
                Poll::Ready(Err(_)) => return Poll::Ready(Wake::Closed),
                Poll::Pending => {}
            }
            if let Poll::Ready(ids) = ready.poll_take(cx) {
                return Poll::Ready(Wake::Marked(ids));
            }
            if !backlog.is_empty() {
                return Poll::Ready(Wake::Marked(Vec::new()));
            }
            Poll::Pending
        });
        let wake = tokio::select! {
            wake = waiting => wake,
            changed = stop.changed(), if !stopping => {
                stopping = changed.is_err() || *stop.borrow();
                continue 'serving;
            }
        };
        match wake {
            Wake::Closed => break 'serving,
            Wake::Readable => {
                let mut chunk = [0u8; READ_CHUNK];
                match socket.try_read(&mut chunk) {
                    Ok(0) => break 'serving,
                    Ok(count) => commands.extend_from_slice(&chunk[..count]),
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock && commands.len() < mux_wire::COMMAND_LEN => continue,
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => break 'serving,
                }
                let (parsed, used) = mux_wire::commands(&commands);
                commands.drain(..used);
                if commands.is_empty() {
                    commands = Vec::new();
                }
                for (op, id, ticket) in parsed {
                    match op {
                        ATTACH => attach(&streams, &ready, &mut attached, &mut out, id, ticket),
                        CLOSE => {
                            if let Some(gone) = attached.remove(&id) {
                                let reason = detach(&gone.stream, EndReason::Gone);
                                streams.finished(gone.handle, reason);
                            }
                        }
                        _ => break 'serving,
                    }
                }
            }
            Wake::Marked(ids) => {
                backlog.extend(ids);
                while out.len() < WRITE_BATCH {
                    let Some(id) = backlog.pop_front() else { break };
                    let Some(entry) = attached.get(&id) else { continue };
                    if let Some(reason) = gather(&entry.stream, id, &mut out) {
                        finished.push((entry.handle, reason));
                        attached.remove(&id);
                    }
                }
            }
        }
        if !out.is_empty() {
            if write_all(&socket, &out, write_stall).await.is_err() {
                break 'serving;
            }
            out.clear();
            if out.capacity() > WRITE_BATCH * 2 {
                out = Vec::new();
            }
        }
        for (handle, reason) in finished.drain(..) {
            streams.finished(handle, reason);
        }
    }
    for (handle, reason) in finished {
        streams.finished(handle, reason);
    }
    for (_, gone) in attached {
        let reason = detach(&gone.stream, EndReason::Gone);
        streams.finished(gone.handle, reason);
    }
}

/// Take the admitted stream of `ticket` as `id` (marked at once when it has its first frame queued), or
/// answer [`BROKEN`] when there is none (expired, ended, unknown).
fn attach(streams: &Streams, ready: &Arc<ReadyList>, attached: &mut HashMap<u64, Attached>, out: &mut Vec<u8>, id: u64, ticket: u64) {
    let Some((handle, stream)) = (!attached.contains_key(&id)).then(|| streams.attach(ticket)).flatten() else {
        mux_wire::push_record(out, BROKEN, id, b"");
        return;
    };
    {
        let mut state = stream.lock();
        let marked = !state.pending.is_empty() || state.end.is_some();
        state.mux = Some(Slot { ready: ready.clone(), id, marked });
        if marked {
            ready.push(id);
        }
    }
    attached.insert(id, Attached { handle, stream });
}

/// Append what the stream of `id` has for the gateway to `out`; its end reason when it is done.
fn gather(stream: &Stream, id: u64, out: &mut Vec<u8>) -> Option<EndReason> {
    let mut state = stream.lock();
    if let Some(slot) = state.mux.as_mut() {
        slot.marked = false;
    }
    match state.end {
        None => {
            if !state.pending.is_empty() {
                mux_wire::push_record(out, DATA, id, &take_pending(&mut state.pending));
            }
            None
        }
        Some(EndReason::Ended) => {
            let rest = std::mem::take(&mut state.pending);
            if !rest.is_empty() {
                mux_wire::push_record(out, DATA, id, &rest);
            }
            mux_wire::push_record(out, END, id, b"");
            state.mux = None;
            Some(EndReason::Ended)
        }
        Some(reason) => {
            state.pending = Vec::new();
            mux_wire::push_record(out, BROKEN, id, b"");
            state.mux = None;
            Some(reason)
        }
    }
}

/// Leave the connection: the stream's end reason (`otherwise` unless it had ended already).
fn detach(stream: &Stream, otherwise: EndReason) -> EndReason {
    let mut state = stream.lock();
    state.mux = None;
    state.pending = Vec::new();
    *state.end.get_or_insert(otherwise)
}

/// Write all of `bytes`; an error when the socket takes nothing for `stall`.
async fn write_all(socket: &TcpStream, mut bytes: &[u8], stall: Duration) -> io::Result<()> {
    while !bytes.is_empty() {
        match socket.try_write(bytes) {
            Ok(written) => bytes = &bytes[written..],
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => tokio::time::timeout(stall, socket.writable())
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "gateway takes nothing"))??,
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    async fn until(mut done: impl FnMut() -> bool) {
        tokio::time::timeout(Duration::from_secs(10), async {
            while !done() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("in time");
    }

    #[tokio::test]
    async fn a_gateway_that_takes_nothing_is_dropped_and_its_streams_are_reported_gone() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gateway = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        gateway.set_recv_buffer_size(4096).unwrap(); // a gateway that never reads: little buffered
        gateway.connect(&listener.local_addr().unwrap().into()).unwrap();
        let (node_side, _) = listener.accept().await.unwrap();
        socket2::SockRef::from(&node_side).set_send_buffer_size(4096).unwrap();
        let streams = Arc::new(Streams::new(64 << 20, Duration::from_secs(5), Box::new(|| {})));
        let now = Instant::now();
        let (busy, quiet) = (streams.admit(b"", 1, now), streams.admit(b"", 2, now));
        let mut first = mux_wire::command(ATTACH, 10, 1).to_vec();
        first.extend_from_slice(&mux_wire::command(ATTACH, 11, 2));
        let (_stop, stopped) = watch::channel(false);
        let serving = tokio::spawn(serve(node_side, streams.clone(), first, stopped, Duration::from_millis(200)));
        let chunk = vec![b'x'; 256 << 10];
        // More than the buffers hold: the connection's write waits on the gateway, which takes nothing.
        for _ in 0..16 {
            streams.send([(busy, &chunk[..])]);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Past the stall the connection is dropped: the quiet stream is reported too, not held forever.
        until(|| serving.is_finished()).await;
        let mut ended = streams.take_ended();
        ended.sort_unstable_by_key(|(handle, _)| *handle);
        assert_eq!(ended, vec![(busy, EndReason::Gone), (quiet, EndReason::Gone)]);
        assert!(streams.is_empty());
        drop(gateway);
    }
}
