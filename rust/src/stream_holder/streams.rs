//! The node's held event streams, by handle: what each has waiting to be written, and why one ended.
//!
//! A stream is *admitted* by Python (its first frame, `PB_CONNECT`, queued at once) and gets a handle and a
//! ticket; the gateway then *attaches* a connection with the ticket, and the connection's task writes what
//! is queued. A ticket nobody attaches within the attach time is dropped. Frames are appended to a stream's
//! one buffer; a stream whose buffer would pass its limit is ended (`Overflow`): nothing ever waits for a
//! slow reader. Every ended stream is reported once through [`Streams::take_ended`], and the `notify`
//! callback is called when the first of a batch is there (Python reads them on its loop).
//!
//! Tables may share a [`Budget`]: a bound on the bytes queued in all of them (the gateway's queues for the
//! streams it reads from nodes), past which the streams with the most queued overflow.
//!
//! Thread-safety: one mutex over the table, one per stream; sends lock the table once per batch. A budget's
//! count is atomic; shedding locks one table at a time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;

use super::lanes::{self, Registration, Wakeups};
use super::ready::{Marks, Slot};

/// Why a stream ended (reported to Python as its number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// Ended by Python (a move, the idle time, shutdown): written out, then closed.
    Ended = 1,
    /// The peer closed its connection (or a write failed).
    Gone = 2,
    /// More was queued than the stream's limit.
    Overflow = 3,
    /// No connection attached within the attach time.
    Unattached = 4,
}

/// One stream's state, shared by the table and its connection's task.
#[derive(Default)]
pub struct StreamState {
    pub pending: Vec<u8>,
    pub end: Option<EndReason>,
    /// The connection's task, waiting for something to write.
    pub reader: Option<Registration>,
    /// Attached through a multiplexed connection: marked there when something is queued or it ends.
    pub mux: Option<Slot>,
    /// The budget `pending` is counted in (the bytes still counted are released when the state drops).
    budget: Option<Arc<Budget>>,
}

impl StreamState {
    /// `bytes` of `pending` left it (read, dropped).
    fn release(&self, bytes: usize) {
        if let Some(budget) = &self.budget {
            budget.queued.fetch_sub(bytes, Ordering::Relaxed);
        }
    }

    /// Drop what is queued.
    fn discard(&mut self) {
        self.release(self.pending.len());
        self.pending = Vec::new();
    }
}

impl Drop for StreamState {
    fn drop(&mut self) {
        self.release(self.pending.len());
    }
}

/// Bytes queued in all the tables that share it, bounded: a send that takes the count past `limit` has the
/// streams with the most queued overflow (as one past its own limit does) until it is under 7/8 of it.
/// Counted only where frames are read by [`LocalReader`]s (the gateway's tables), not by a node's
/// connection tasks.
pub struct Budget {
    limit: AtomicUsize,
    queued: AtomicUsize,
    tables: Mutex<Vec<Weak<Streams>>>,
    /// Held by the one send that sheds (others meanwhile do not shed the same bytes again).
    shedding: Mutex<()>,
}

impl Budget {
    pub fn new(limit: usize) -> Arc<Budget> {
        Arc::new(Budget { limit: AtomicUsize::new(limit), queued: AtomicUsize::new(0), tables: Mutex::new(Vec::new()), shedding: Mutex::new(()) })
    }

    /// The bound on the bytes queued (a setting, changed before the tables fill).
    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// Bytes queued now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Overflow the streams with the most queued until the count is under 7/8 of the limit.
    fn shed(&self) {
        let Some(_shedding) = self.shedding.try_lock() else { return };
        let target = self.limit() / 8 * 7;
        let tables: Vec<Arc<Streams>> = {
            let mut tables = self.tables.lock();
            tables.retain(|table| table.strong_count() > 0);
            tables.iter().filter_map(Weak::upgrade).collect()
        };
        let mut queues: Vec<(usize, usize, u64)> = Vec::new(); // bytes, table, handle
        for (index, table) in tables.iter().enumerate() {
            queues.extend(table.queued().into_iter().map(|(handle, bytes)| (bytes, index, handle)));
        }
        queues.sort_unstable_by_key(|queue| std::cmp::Reverse(queue.0));
        for (_, index, handle) in queues {
            if self.queued() <= target {
                break;
            }
            tables[index].overflow(handle);
        }
    }
}

pub type Stream = Mutex<StreamState>;

struct Waiting {
    handle: u64,
    stream: Arc<Stream>,
    deadline: Instant,
}

#[derive(Default)]
struct Table {
    streams: HashMap<u64, Arc<Stream>>,
    waiting: HashMap<u64, Waiting>, // by ticket
    ended: Vec<(u64, EndReason)>,
    next: u64,
    /// The first handle this table gave.
    first: u64,
}

pub struct Streams {
    table: Mutex<Table>,
    limit: usize,
    attach_time: Duration,
    notify: Box<dyn Fn() + Send + Sync>,
    budget: Option<Arc<Budget>>,
}

impl Streams {
    /// `limit`: bytes a stream may have waiting; `notify`: called when ended streams wait to be taken.
    pub fn new(limit: usize, attach_time: Duration, notify: Box<dyn Fn() + Send + Sync>) -> Streams {
        Streams { table: Mutex::new(Table { next: 1, first: 1, ..Table::default() }), limit, attach_time, notify, budget: None }
    }

    /// Handles start at `first` (a gateway gives each connection's table its own range, so that a record
    /// naming another connection's stream is recognised as foreign: [`Streams::issued`]).
    pub fn starting_at(self: Arc<Self>, first: u64) -> Arc<Self> {
        {
            let mut table = self.table.lock();
            table.first = first.max(1);
            table.next = table.first;
        }
        self
    }

    /// Whether this table gave `handle` (open now or ended since).
    pub fn issued(&self, handle: u64) -> bool {
        let table = self.table.lock();
        (table.first..table.next).contains(&handle)
    }

    /// [`Streams::new`] with its queued bytes counted in `budget` (for tables read by [`LocalReader`]s).
    pub fn with_budget(limit: usize, attach_time: Duration, notify: Box<dyn Fn() + Send + Sync>, budget: &Arc<Budget>) -> Arc<Streams> {
        let streams = Arc::new(Streams { budget: Some(budget.clone()), ..Streams::new(limit, attach_time, notify) });
        let mut tables = budget.tables.lock();
        tables.retain(|table| table.strong_count() > 0);
        tables.push(Arc::downgrade(&streams));
        streams
    }

    /// A new stream with `first` queued: its handle, and the ticket its connection attaches with.
    pub fn admit(&self, first: &[u8], ticket: u64, now: Instant) -> u64 {
        let mut table = self.table.lock();
        let handle = table.next;
        table.next += 1;
        if let Some(budget) = &self.budget {
            budget.queued.fetch_add(first.len(), Ordering::Relaxed);
        }
        let mut state = StreamState::default();
        state.pending = first.to_vec();
        state.budget = self.budget.clone();
        let stream = Arc::new(Mutex::new(state));
        table.streams.insert(handle, stream.clone());
        table.waiting.insert(ticket, Waiting { handle, stream, deadline: now + self.attach_time });
        handle
    }

    /// The stream a connection with `ticket` takes over (once), unless it was dropped meanwhile.
    pub fn attach(&self, ticket: u64) -> Option<(u64, Arc<Stream>)> {
        let waiting = self.table.lock().waiting.remove(&ticket)?;
        if waiting.stream.lock().end.is_some() {
            return None;
        }
        Some((waiting.handle, waiting.stream))
    }

    /// Queue `data` on each stream; streams that would pass their limit end (`Overflow`). Unknown handles
    /// (ended meanwhile) are skipped. How many streams took their data.
    pub fn send<'a>(&self, items: impl IntoIterator<Item = (u64, &'a [u8])>) -> usize {
        self.send_parts(items.into_iter().map(|(handle, data)| (handle, [data])))
    }

    /// [`Streams::send`] of frames given in parts, joined in the stream's buffer.
    pub fn send_parts<'a, const N: usize>(&self, items: impl IntoIterator<Item = (u64, [&'a [u8]; N])>) -> usize {
        let mut wake = Wakeups::default();
        let mut marks = Marks::default();
        let mut overflowed = Vec::new();
        let mut sent = 0;
        {
            let table = self.table.lock();
            for (handle, data) in items {
                let Some(stream) = table.streams.get(&handle) else { continue };
                let mut state = stream.lock();
                if state.end.is_some() {
                    continue;
                }
                let length: usize = data.iter().map(|part| part.len()).sum();
                if state.pending.len() + length > self.limit {
                    state.end = Some(EndReason::Overflow);
                    state.discard();
                    overflowed.push(handle);
                } else {
                    state.pending.reserve(length);
                    for part in data {
                        state.pending.extend_from_slice(part);
                    }
                    if let Some(budget) = &state.budget {
                        budget.queued.fetch_add(length, Ordering::Relaxed);
                    }
                    sent += 1;
                }
                if let Some(reader) = state.reader.take() {
                    wake.add(reader);
                }
                if let Some(slot) = state.mux.as_mut() {
                    marks.mark(slot);
                }
            }
        }
        wake.wake();
        marks.wake();
        // Reported at once: the reader may be busy with its own slow client and not look for a while.
        for handle in overflowed {
            self.finished(handle, EndReason::Overflow);
        }
        if let Some(budget) = &self.budget {
            if budget.queued() > budget.limit() {
                budget.shed();
            }
        }
        sent
    }

    /// The streams with bytes queued, and how many.
    fn queued(&self) -> Vec<(u64, usize)> {
        let table = self.table.lock();
        table.streams.iter().map(|(handle, stream)| (*handle, stream.lock().pending.len())).filter(|(_, bytes)| *bytes > 0).collect()
    }

    /// End a stream as overflowed and drop its queue (also one ended cleanly whose reader has not taken its
    /// last frames), reported at once.
    fn overflow(&self, handle: u64) {
        let (reader, marks) = {
            let table = self.table.lock();
            let Some(stream) = table.streams.get(&handle) else { return };
            let mut state = stream.lock();
            if state.end.is_none_or(|end| end == EndReason::Ended) {
                state.end = Some(EndReason::Overflow);
            }
            state.discard();
            let mut marks = Marks::default();
            if let Some(slot) = state.mux.as_mut() {
                marks.mark(slot);
            }
            (state.reader.take(), marks)
        };
        if let Some(reader) = reader {
            let mut wake = Wakeups::default();
            wake.add(reader);
            wake.wake();
        }
        marks.wake();
        self.finished(handle, EndReason::Overflow);
    }

    /// End a stream (what it has queued is still written).
    pub fn end(&self, handle: u64) {
        self.end_as(handle, EndReason::Ended);
    }

    /// End a stream as broken (`reason`): its reader gets no more of what it has queued.
    pub fn fail(&self, handle: u64, reason: EndReason) {
        self.end_as(handle, reason);
    }

    fn end_as(&self, handle: u64, reason: EndReason) {
        let (reader, marks) = {
            let table = self.table.lock();
            let Some(stream) = table.streams.get(&handle) else { return };
            let mut state = stream.lock();
            state.end.get_or_insert(reason);
            let mut marks = Marks::default();
            if let Some(slot) = state.mux.as_mut() {
                marks.mark(slot);
            }
            (state.reader.take(), state.mux.as_ref().map(|_| marks))
        };
        if let Some(marks) = marks {
            marks.wake();
        } else if let Some(reader) = reader {
            let mut wake = Wakeups::default();
            wake.add(reader);
            wake.wake();
        } else {
            // Not attached yet: nothing will write it; drop it now.
            let unattached = {
                let mut table = self.table.lock();
                let ticket = table.waiting.iter().find(|(_, w)| w.handle == handle).map(|(t, _)| *t);
                ticket.map(|t| table.waiting.remove(&t))
            };
            if unattached.is_some() {
                self.finished(handle, reason);
            }
        }
    }

    /// A stream's connection is done (or it never got one): removed, reported once.
    pub fn finished(&self, handle: u64, reason: EndReason) {
        let first = {
            let mut table = self.table.lock();
            if table.streams.remove(&handle).is_none() {
                return;
            }
            table.ended.push((handle, reason));
            table.ended.len() == 1
        };
        if first {
            (self.notify)();
        }
    }

    /// The stream of `ticket` read in this process, without a socket (see [`LocalReader`]).
    pub fn attach_local(self: &Arc<Self>, ticket: u64) -> Option<LocalReader> {
        let (handle, stream) = self.attach(ticket)?;
        Some(LocalReader { streams: self.clone(), handle, stream, done: false })
    }

    /// Drop the streams whose ticket was not attached in time.
    pub fn expire(&self, now: Instant) {
        let expired: Vec<u64> = {
            let mut table = self.table.lock();
            let tickets: Vec<u64> =
                table.waiting.iter().filter(|(_, w)| w.deadline <= now).map(|(ticket, _)| *ticket).collect();
            tickets.iter().filter_map(|t| table.waiting.remove(t)).map(|w| w.handle).collect()
        };
        for handle in expired {
            self.finished(handle, EndReason::Unattached);
        }
    }

    /// The streams that ended since the last call, with why.
    pub fn take_ended(&self) -> Vec<(u64, EndReason)> {
        std::mem::take(&mut self.table.lock().ended)
    }

    /// Streams held now (attached or waiting for their connection).
    pub fn len(&self) -> usize {
        self.table.lock().streams.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every stream, for the holder's stop.
    pub fn handles(&self) -> Vec<u64> {
        self.table.lock().streams.keys().copied().collect()
    }
}

/// The most a local reader's stream keeps allocated between events.
const KEPT_BUFFER: usize = 4 << 10;

/// What `pending` holds, copied out on the reader's thread; the buffer itself is kept (unless large, after a
/// burst). Handing the buffer over had the sender allocate a new one per stream and event, freed on another
/// thread: mimalloc's page refills on the database thread (py-spy, ~1 ms of an event for 1,000 streams).
pub fn take_pending(pending: &mut Vec<u8>) -> Vec<u8> {
    let frames = pending.clone();
    pending.clear();
    if pending.capacity() > KEPT_BUFFER {
        *pending = Vec::new();
    }
    frames
}

/// What a stream's reader gets next.
#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    /// Frames queued since the last read.
    Frames(Bytes),
    /// Ended by Python and written out: the stream's clean end.
    Ended,
    /// Ended otherwise (overflow): the stream is broken.
    Broken(EndReason),
}

/// A stream read by a gateway of the same process straight from its buffer: no socket, no holder thread.
/// Dropped before its end, the stream ends as `Gone` (the client went away).
pub struct LocalReader {
    streams: Arc<Streams>,
    handle: u64,
    stream: Arc<Stream>,
    done: bool,
}

impl LocalReader {
    pub fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Read> {
        if self.done {
            return Poll::Ready(Read::Ended);
        }
        let mut state = self.stream.lock();
        if !state.pending.is_empty() && state.end.is_none_or(|end| end == EndReason::Ended) {
            let frames = take_pending(&mut state.pending);
            state.release(frames.len());
            return Poll::Ready(Read::Frames(Bytes::from(frames)));
        }
        let Some(reason) = state.end else {
            lanes::register(&mut state.reader, cx);
            return Poll::Pending;
        };
        drop(state);
        self.done = true;
        self.streams.finished(self.handle, reason);
        Poll::Ready(if reason == EndReason::Ended { Read::Ended } else { Read::Broken(reason) })
    }
}

impl Drop for LocalReader {
    fn drop(&mut self) {
        if !self.done {
            self.stream.lock().end.get_or_insert(EndReason::Gone);
            self.streams.finished(self.handle, EndReason::Gone);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn streams(limit: usize) -> (Streams, Arc<AtomicUsize>) {
        let notified = Arc::new(AtomicUsize::new(0));
        let counter = notified.clone();
        let notify = Box::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        (Streams::new(limit, Duration::from_secs(5), notify), notified)
    }

    #[test]
    fn an_admitted_stream_is_taken_once_by_its_ticket_with_its_first_frame_queued() {
        let (streams, _) = streams(1024);
        let handle = streams.admit(b"hello", 42, Instant::now());
        assert!(streams.attach(7).is_none());
        let (attached, stream) = streams.attach(42).expect("attached");
        assert_eq!(attached, handle);
        assert_eq!(stream.lock().pending, b"hello");
        assert!(streams.attach(42).is_none());
    }

    #[test]
    fn frames_queue_up_and_a_stream_past_its_limit_ends_without_touching_the_others() {
        let (streams, notified) = streams(16);
        let now = Instant::now();
        let (a, b) = (streams.admit(b"", 1, now), streams.admit(b"", 2, now));
        let (_, stream_a) = streams.attach(1).unwrap();
        let (_, stream_b) = streams.attach(2).unwrap();
        assert_eq!(streams.send([(a, &b"12345678"[..]), (b, &b"12345678"[..]), (99, &b"x"[..])]), 2);
        assert_eq!(streams.send([(a, &b"123456789"[..]), (b, &b"1234"[..])]), 1);
        assert_eq!(stream_a.lock().end, Some(EndReason::Overflow));
        assert!(stream_a.lock().pending.is_empty());
        assert_eq!(stream_b.lock().pending, b"123456781234");
        assert_eq!(streams.send([(a, &b"1"[..])]), 0); // ended: nothing more queued
        streams.finished(a, EndReason::Overflow);
        streams.finished(a, EndReason::Gone); // reported once
        assert_eq!(notified.load(Ordering::SeqCst), 1);
        assert_eq!(streams.take_ended(), vec![(a, EndReason::Overflow)]);
        assert_eq!(streams.len(), 1);
    }

    #[test]
    fn unattached_tickets_expire_and_ending_one_drops_it_at_once() {
        let (streams, _) = streams(1024);
        let now = Instant::now();
        let late = streams.admit(b"", 1, now);
        let ended = streams.admit(b"", 2, now);
        streams.end(ended);
        assert_eq!(streams.take_ended(), vec![(ended, EndReason::Ended)]);
        assert!(streams.attach(2).is_none());
        streams.expire(now + Duration::from_secs(4));
        assert!(streams.take_ended().is_empty());
        streams.expire(now + Duration::from_secs(5));
        assert_eq!(streams.take_ended(), vec![(late, EndReason::Unattached)]);
        assert!(streams.attach(1).is_none());
        assert!(streams.is_empty());
    }

    #[test]
    fn ending_an_attached_stream_keeps_its_queue_for_the_connection_to_write() {
        let (streams, _) = streams(1024);
        let handle = streams.admit(b"last", 3, Instant::now());
        let (_, stream) = streams.attach(3).unwrap();
        streams.end(handle);
        let state = stream.lock();
        assert_eq!(state.end, Some(EndReason::Ended));
        assert_eq!(state.pending, b"last");
        drop(state);
        assert!(streams.take_ended().is_empty()); // reported once its connection is done
    }

    fn poll(reader: &mut LocalReader) -> Poll<Read> {
        reader.poll_read(&mut Context::from_waker(std::task::Waker::noop()))
    }

    #[test]
    fn a_local_reader_gets_the_frames_then_the_clean_end_and_reports_it_once() {
        let (streams, notified) = streams(1024);
        let streams = Arc::new(streams);
        let handle = streams.admit(b"first", 7, Instant::now());
        assert!(streams.attach_local(8).is_none());
        let mut reader = streams.attach_local(7).expect("attached");
        assert_eq!(poll(&mut reader), Poll::Ready(Read::Frames(Bytes::from_static(b"first"))));
        assert_eq!(poll(&mut reader), Poll::Pending);
        streams.send([(handle, &b"a"[..]), (handle, &b"b"[..])]);
        streams.end(handle);
        assert_eq!(poll(&mut reader), Poll::Ready(Read::Frames(Bytes::from_static(b"ab"))));
        assert_eq!(poll(&mut reader), Poll::Ready(Read::Ended));
        drop(reader);
        assert_eq!(streams.take_ended(), vec![(handle, EndReason::Ended)]);
        assert_eq!(notified.load(Ordering::SeqCst), 1);
        assert!(streams.is_empty());
    }

    #[test]
    fn a_local_reader_that_falls_behind_overflows_at_once_and_one_dropped_is_gone() {
        let (streams, _) = streams(8);
        let streams = Arc::new(streams);
        let now = Instant::now();
        let (slow, other) = (streams.admit(b"", 1, now), streams.admit(b"", 2, now));
        let mut slow_reader = streams.attach_local(1).unwrap();
        let other_reader = streams.attach_local(2).unwrap();
        assert_eq!(streams.send([(slow, &b"123456789"[..]), (other, &b"1234"[..])]), 1);
        // Reported without waiting for the reader to look.
        assert_eq!(streams.take_ended(), vec![(slow, EndReason::Overflow)]);
        assert_eq!(poll(&mut slow_reader), Poll::Ready(Read::Broken(EndReason::Overflow)));
        drop(other_reader);
        assert_eq!(streams.take_ended(), vec![(other, EndReason::Gone)]);
        assert_eq!(streams.send([(other, &b"x"[..])]), 0);
        assert!(streams.is_empty());
    }

    #[test]
    fn tables_sharing_a_budget_overflow_their_largest_queues_past_it_and_count_every_byte_back() {
        let budget = Budget::new(100);
        let first = Streams::with_budget(1024, Duration::from_secs(5), Box::new(|| {}), &budget);
        let second = Streams::with_budget(1024, Duration::from_secs(5), Box::new(|| {}), &budget);
        let now = Instant::now();
        let (stalled, small) = (first.admit(b"", 1, now), first.admit(b"", 2, now));
        let other = second.admit(b"", 3, now);
        let mut stalled_reader = first.attach_local(1).unwrap();
        let mut small_reader = first.attach_local(2).unwrap();
        let other_reader = second.attach_local(3).unwrap();
        first.send([(stalled, &[b's'; 50][..]), (small, &[b'a'; 20][..])]);
        second.send([(other, &[b'o'; 30][..])]);
        assert_eq!(budget.queued(), 100); // at the budget, not past it
        assert!(first.take_ended().is_empty());
        // 120 bytes: the largest queue goes (as an overflow, reported at once), back under 7/8 of the budget.
        first.send([(small, &[b'b'; 20][..])]);
        assert_eq!(budget.queued(), 70);
        assert_eq!(first.take_ended(), vec![(stalled, EndReason::Overflow)]);
        assert_eq!(poll(&mut stalled_reader), Poll::Ready(Read::Broken(EndReason::Overflow)));
        assert_eq!(poll(&mut small_reader), Poll::Ready(Read::Frames(Bytes::from([[b'a'; 20], [b'b'; 20]].concat()))));
        assert_eq!(budget.queued(), 30);
        second.send([(other, &b"more"[..])]);
        second.end(other); // ended with queued frames, then the reader goes away: its bytes are released
        drop(other_reader);
        drop(stalled_reader);
        drop(small_reader);
        assert_eq!(budget.queued(), 0);
    }
}
