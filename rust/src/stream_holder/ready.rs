//! Which streams of a multiplexed connection have something for it ([`super::mux`]): a sender marks a
//! stream once until the connection's task takes it, and wakes that task once per batch, however many of
//! its streams the batch touched.
//!
//! Thread-safety: shared by the connection's task and the senders (the database threads); two short mutexes.

use std::sync::Arc;
use std::task::{Context, Poll};

use parking_lot::Mutex;

use super::lanes::{self, Registration, Wakeups};

/// The marked streams of one connection, by its ids.
#[derive(Default)]
pub struct ReadyList {
    ids: Mutex<Vec<u64>>,
    reader: Mutex<Option<Registration>>,
}

impl ReadyList {
    /// The ids marked since the last take, or Pending (the task of `cx` is woken when some are).
    pub fn poll_take(&self, cx: &Context<'_>) -> Poll<Vec<u64>> {
        let mut ids = self.ids.lock();
        if ids.is_empty() {
            // Registered while the list is locked: a sender's push after this finds the registration.
            lanes::register(&mut self.reader.lock(), cx);
            return Poll::Pending;
        }
        Poll::Ready(std::mem::take(&mut *ids))
    }

    /// Mark `id` from the connection's own task (no wake-up needed).
    pub fn push(&self, id: u64) {
        self.ids.lock().push(id);
    }
}

/// A stream's place in a multiplexed connection.
pub struct Slot {
    pub ready: Arc<ReadyList>,
    pub id: u64,
    /// Marked and not yet taken by the connection's task.
    pub marked: bool,
}

/// Streams marked during one send, gathered by connection (call [`Marks::wake`] with no lock held).
#[derive(Default)]
pub struct Marks {
    groups: Vec<(Arc<ReadyList>, Vec<u64>)>,
}

impl Marks {
    /// Mark the stream of `slot` unless it is marked already.
    pub fn mark(&mut self, slot: &mut Slot) {
        if slot.marked {
            return;
        }
        slot.marked = true;
        match self.groups.iter_mut().find(|(ready, _)| Arc::ptr_eq(ready, &slot.ready)) {
            Some((_, ids)) => ids.push(slot.id),
            None => self.groups.push((slot.ready.clone(), vec![slot.id])),
        }
    }

    pub fn wake(self) {
        let mut wake = Wakeups::default();
        for (ready, ids) in self.groups {
            ready.ids.lock().extend(ids);
            if let Some(reader) = ready.reader.lock().take() {
                wake.add(reader);
            }
        }
        wake.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    #[test]
    fn a_stream_is_marked_once_until_taken_and_the_list_wakes_its_task() {
        let ready = Arc::new(ReadyList::default());
        let cx = Context::from_waker(Waker::noop());
        assert_eq!(ready.poll_take(&cx), Poll::Pending);
        assert!(ready.reader.lock().is_some());
        let mut slot = Slot { ready: ready.clone(), id: 4, marked: false };
        let mut marks = Marks::default();
        marks.mark(&mut slot);
        marks.mark(&mut slot);
        marks.wake();
        assert!(ready.reader.lock().is_none()); // taken to be woken
        let mut again = Marks::default();
        again.mark(&mut slot); // still marked: not listed twice
        again.wake();
        assert_eq!(ready.poll_take(&cx), Poll::Ready(vec![4]));
        ready.push(5);
        assert_eq!(ready.poll_take(&cx), Poll::Ready(vec![5]));
    }
}
