//! Waking the readers of an event's streams: one wake-up per reading thread, not one per stream.
//!
//! Waking a tokio task from outside its runtime's thread queues it on the runtime's shared queue and
//! writes the runtime's eventfd: a system call per stream, 1,000 of them on the database thread that
//! queues an event for 1,000 recipients (~1.7 ms of its ~6 ms per event under py-spy, benchmarks/RESULTS.md).
//! So a reader registers with its thread's [`Lane`]; the sender gives each lane all its wakers at once
//! and wakes the lane's dispatcher task, which wakes them on its own thread (a local schedule).
//!
//! Thread-safety: a lane is shared by its thread and the senders (two short mutexes). A lane lives as long
//! as its dispatcher task; wakers handed to a lane whose task is gone (its runtime stopped) are woken
//! directly.

use std::cell::RefCell;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use parking_lot::Mutex;

/// The readers of one thread, woken from there.
pub struct Lane {
    wakers: Mutex<Vec<Waker>>,
    dispatcher: Mutex<Option<Waker>>,
    alive: AtomicBool,
}

impl Lane {
    fn alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }
}

/// Marks its lane dead when the dispatcher task is dropped (also when it never ran).
struct AliveGuard(Arc<Lane>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.alive.store(false, Ordering::Release);
        for waker in std::mem::take(&mut *self.0.wakers.lock()) {
            waker.wake();
        }
    }
}

thread_local! {
    static LANE: RefCell<Option<Arc<Lane>>> = const { RefCell::new(None) };
}

/// This thread's lane, started with its dispatcher on the current runtime (None outside a runtime).
fn current_lane() -> Option<Arc<Lane>> {
    LANE.with(|slot| {
        let mut slot = slot.borrow_mut();
        if let Some(lane) = slot.as_ref().filter(|lane| lane.alive()) {
            return Some(lane.clone());
        }
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let lane = Arc::new(Lane { wakers: Mutex::new(Vec::new()), dispatcher: Mutex::new(None), alive: AtomicBool::new(true) });
        let guard = AliveGuard(lane.clone());
        runtime.spawn(async move {
            let lane = guard.0.clone();
            let _guard = guard;
            poll_fn(|cx| {
                *lane.dispatcher.lock() = Some(cx.waker().clone()); // before the drain: no wake-up is lost
                for waker in std::mem::take(&mut *lane.wakers.lock()) {
                    waker.wake();
                }
                Poll::<()>::Pending
            })
            .await;
        });
        *slot = Some(lane.clone());
        Some(lane)
    })
}

/// A reader waiting for its stream: its task's waker and the lane that wakes it.
pub struct Registration {
    waker: Waker,
    lane: Option<Arc<Lane>>,
}

/// Register the task of `cx` in `slot`, unless it is there already.
pub fn register(slot: &mut Option<Registration>, cx: &Context<'_>) {
    if !slot.as_ref().is_some_and(|r| r.waker.will_wake(cx.waker())) {
        *slot = Some(Registration { waker: cx.waker().clone(), lane: current_lane() });
    }
}

/// Readers to wake, gathered by lane (call [`Wakeups::wake`] with no lock held).
#[derive(Default)]
pub struct Wakeups {
    direct: Vec<Waker>,
    lanes: Vec<(Arc<Lane>, Vec<Waker>)>,
}

impl Wakeups {
    pub fn add(&mut self, registration: Registration) {
        match registration.lane {
            Some(lane) if lane.alive() => match self.lanes.iter_mut().find(|(l, _)| Arc::ptr_eq(l, &lane)) {
                Some((_, wakers)) => wakers.push(registration.waker),
                None => self.lanes.push((lane, vec![registration.waker])),
            },
            _ => self.direct.push(registration.waker),
        }
    }

    pub fn wake(self) {
        for waker in self.direct {
            waker.wake();
        }
        for (lane, wakers) in self.lanes {
            lane.wakers.lock().extend(wakers);
            let dispatcher = lane.dispatcher.lock().take();
            match dispatcher {
                Some(dispatcher) => dispatcher.wake(),
                // Not polled yet (it drains when it first runs), or gone (its guard woke what it held).
                None if !lane.alive() => std::mem::take(&mut *lane.wakers.lock()).into_iter().for_each(Waker::wake),
                None => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A reader that counts its wake-ups and re-registers each time it is polled.
    struct Reader {
        slot: Arc<Mutex<Option<Registration>>>,
        woken: Arc<AtomicUsize>,
    }

    impl std::future::Future for Reader {
        type Output = ();
        fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.woken.fetch_add(1, Ordering::SeqCst);
            register(&mut self.slot.lock(), cx);
            Poll::Pending
        }
    }

    #[test]
    fn readers_on_a_runtime_are_woken_through_their_lane_and_directly_once_it_is_gone() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let slots: Vec<_> = (0..3).map(|_| Arc::new(Mutex::new(None))).collect();
        let woken = Arc::new(AtomicUsize::new(0));
        runtime.block_on(async {
            for slot in &slots {
                tokio::spawn(Reader { slot: slot.clone(), woken: woken.clone() });
            }
            while woken.load(Ordering::SeqCst) < 3 {
                tokio::task::yield_now().await;
            }
            let mut wakeups = Wakeups::default();
            for slot in &slots {
                wakeups.add(slot.lock().take().expect("registered"));
            }
            assert_eq!((wakeups.direct.len(), wakeups.lanes.len()), (0, 1)); // one lane for the thread
            std::thread::spawn(move || wakeups.wake()).join().unwrap(); // from another thread, as the database's
            while woken.load(Ordering::SeqCst) < 6 {
                tokio::task::yield_now().await;
            }
        });
        drop(runtime); // its dispatcher goes with it: the lane is dead
        let mut wakeups = Wakeups::default();
        for slot in &slots {
            let registration = slot.lock().take().expect("registered again");
            assert!(registration.lane.as_ref().is_some_and(|lane| !lane.alive()));
            wakeups.add(registration);
        }
        assert_eq!((wakeups.direct.len(), wakeups.lanes.len()), (3, 0));
        wakeups.wake(); // the tasks are gone: waking them is harmless
    }
}
