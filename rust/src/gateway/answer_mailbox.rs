//! Where the event loop's batch of answers ([`super::answer_batch`]) lands on each gateway thread: completing a
//! request's oneshot from the loop's thread wakes that request's runtime with a system call (an eventfd write)
//! per answer, and the woken thread may take the core from the loop in it. Instead the batch's answers for one
//! gateway thread are put in that thread's mailbox and the thread is woken once (a `Notify`); its drain task
//! then completes the oneshots on the thread itself, which wakes nobody.
//!
//! Each gateway thread installs its mailbox when it starts serving ([`install`], [`Mailbox::run`]); a request
//! submitted on a thread without one (tests, the Python thread) is answered directly.
//!
//! Thread-safety: `post` from any thread (a short mutex section), `deliver` on the owning thread's runtime.

use std::cell::RefCell;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{oneshot, Notify};

use super::in_process::HandedAnswer;

/// An answer and the oneshot it completes.
pub type Delivery = (oneshot::Sender<HandedAnswer>, HandedAnswer);

#[derive(Debug, Default)]
pub struct Mailbox {
    pending: Mutex<Vec<Delivery>>,
    posted: Notify,
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<Mailbox>>> = const { RefCell::new(None) };
}

/// This thread's mailbox, made on first call (spawn its [`Mailbox::run`] on the thread's runtime).
pub fn install() -> Arc<Mailbox> {
    CURRENT.with(|current| current.borrow_mut().get_or_insert_with(Default::default).clone())
}

/// The mailbox of the calling thread, when it installed one.
pub fn current() -> Option<Arc<Mailbox>> {
    CURRENT.with(|current| current.borrow().clone())
}

impl Mailbox {
    /// Queue answers for this mailbox's thread and wake it (once: a wake-up not yet consumed is kept).
    pub fn post(&self, deliveries: Vec<Delivery>) {
        self.pending.lock().extend(deliveries);
        self.posted.notify_one();
    }

    /// Complete the posted answers' oneshots (on the owning thread); returns how many reached a waiting request.
    pub fn deliver(&self) -> usize {
        let deliveries = std::mem::take(&mut *self.pending.lock());
        deliveries.into_iter().map(|(sender, answer)| sender.send(answer).is_ok()).filter(|sent| *sent).count()
    }

    #[cfg(test)]
    fn posted_len(&self) -> usize {
        self.pending.lock().len()
    }

    /// The thread's drain task: delivers whatever is posted, for as long as the runtime runs.
    pub async fn run(self: Arc<Self>) {
        loop {
            self.posted.notified().await;
            self.deliver();
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http::{HeaderMap, Method, StatusCode, Uri};

    use super::*;
    use crate::gateway::answer_batch::AnswerBatch;
    use crate::gateway::in_process::InProcess;

    fn answer(body: &'static str) -> HandedAnswer {
        HandedAnswer { status: StatusCode::OK, headers: HeaderMap::new(), body: Bytes::from_static(body.as_bytes()) }
    }

    #[test]
    fn a_threads_answers_reach_it_in_one_post_and_its_drain_task_delivers_them() {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let mailbox = install();
        assert!(Arc::ptr_eq(&mailbox, &current().unwrap()), "one per thread");
        let queue = InProcess::new(8).unwrap();
        let submit = || queue.submit(Method::GET, Uri::from_static("/t/a/api/health"), HeaderMap::new(), Bytes::new()).unwrap();
        let receivers: Vec<_> = (0..3).map(|_| submit()).collect();
        drop(submit()); // a client gone before its answer
        let batch = AnswerBatch::default();
        for (handed, body) in queue.take(8).into_iter().zip(["a", "b", "c", "d"]) {
            batch.push(handed.reply, answer(body));
        }
        let flushed = std::thread::scope(|scope| scope.spawn(|| batch.flush()).join().unwrap()); // the loop's thread
        assert_eq!(flushed, 3, "the gone client's answer is dropped at the flush");
        assert_eq!(mailbox.posted_len(), 3, "posted to the submitting thread, not sent from the loop's");
        assert_eq!(queue.outstanding(), 0, "the places are given back at the flush");
        let got = runtime.block_on(async move {
            tokio::spawn(mailbox.clone().run());
            let mut got = Vec::new();
            for receiver in receivers {
                got.push(receiver.await.unwrap().body);
            }
            got
        });
        assert_eq!(got, ["a", "b", "c"], "in order, once the thread's drain task ran");
    }

    #[test]
    fn a_thread_without_a_mailbox_is_answered_directly() {
        assert!(current().is_none());
        let queue = InProcess::new(2).unwrap();
        let mut receiver = queue.submit(Method::GET, Uri::from_static("/x"), HeaderMap::new(), Bytes::new()).unwrap();
        let batch = AnswerBatch::default();
        batch.push(queue.take(1).pop().unwrap().reply, answer("direct"));
        assert_eq!(batch.flush(), 1);
        assert_eq!(receiver.try_recv().unwrap().body, "direct");
    }
}
