//! The answers of one event-loop iteration, sent together ([`super::in_process`]): completing a handed request's
//! oneshot wakes a gateway thread, and on a busy machine the woken thread takes the core from the loop right in
//! that call (the kernel's wake-up preemption) while the loop holds the GIL, so every tenant's requests stall
//! behind one answer. Here `push` only queues the answer (no wake-up); `flush`, once per loop iteration,
//! completes them all: the handlers no longer wake anyone, and the runtime is woken once per batch (the sends
//! after the first find it awake) instead of once per answer.
//!
//! Guarantees kept: each queued answer still holds its request's place of the queue (given back when it is sent
//! or dropped); an answer whose client went away is dropped at the flush (its send fails).
//!
//! Thread-safety: a short mutex section; `push` and `flush` from any thread.

use std::sync::Arc;

use parking_lot::Mutex;
use super::answer_mailbox::{Delivery, Mailbox};
use super::in_process::{HandedAnswer, Reply};

#[derive(Debug, Default)]
pub struct AnswerBatch {
    pending: Mutex<Vec<(Reply, HandedAnswer)>>,
}

impl AnswerBatch {
    /// Queue an answer; true when it is the first since the last flush (the caller arranges one flush).
    pub fn push(&self, reply: Reply, answer: HandedAnswer) -> bool {
        let mut pending = self.pending.lock();
        pending.push((reply, answer));
        pending.len() == 1
    }

    /// Send every queued answer, in the order queued: through its gateway thread's mailbox (one wake-up per
    /// thread for the batch), or directly when it has none. Returns how many went to a waiting client.
    pub fn flush(&self) -> usize {
        let batch = std::mem::take(&mut *self.pending.lock());
        let mut sent = 0;
        let mut posts: Vec<(Arc<Mailbox>, Vec<Delivery>)> = Vec::new();
        for (reply, answer) in batch {
            let (sender, mailbox) = reply.into_parts();
            if sender.is_closed() {
                continue; // the client went away: dropped here
            }
            let Some(mailbox) = mailbox else {
                sent += usize::from(sender.send(answer).is_ok());
                continue;
            };
            sent += 1;
            match posts.iter_mut().find(|(posted, _)| Arc::ptr_eq(posted, &mailbox)) {
                Some((_, deliveries)) => deliveries.push((sender, answer)),
                None => posts.push((mailbox, vec![(sender, answer)])),
            }
        }
        for (mailbox, deliveries) in posts {
            mailbox.post(deliveries);
        }
        sent
    }

    /// Answers queued and not sent yet.
    pub fn len(&self) -> usize {
        self.pending.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http::{HeaderMap, Method, StatusCode, Uri};
    use tokio::sync::oneshot;

    use super::*;
    use crate::gateway::in_process::InProcess;

    fn submit(queue: &InProcess) -> oneshot::Receiver<HandedAnswer> {
        queue.submit(Method::GET, Uri::from_static("/t/a/api/health"), HeaderMap::new(), Bytes::new()).unwrap()
    }

    fn answer(body: &'static str) -> HandedAnswer {
        HandedAnswer { status: StatusCode::OK, headers: HeaderMap::new(), body: Bytes::from_static(body.as_bytes()) }
    }

    #[test]
    fn answers_wait_for_the_flush_and_keep_their_places_until_then() {
        let queue = InProcess::new(4).unwrap();
        let mut receivers: Vec<_> = (0..3).map(|_| submit(&queue)).collect();
        let batch = AnswerBatch::default();
        let bodies = ["a", "b", "c"];
        let firsts: Vec<bool> = queue.take(8).into_iter().zip(bodies).map(|(handed, body)| batch.push(handed.reply, answer(body))).collect();
        assert_eq!(firsts, [true, false, false], "only the first of a batch asks for a flush");
        assert_eq!(batch.len(), 3);
        assert!(receivers[0].try_recv().is_err(), "nothing sent (nobody woken) before the flush");
        assert_eq!(queue.outstanding(), 3, "a queued answer still holds its place");
        assert_eq!(batch.flush(), 3);
        assert!(batch.is_empty());
        assert_eq!(queue.outstanding(), 0);
        let got: Vec<_> = receivers.iter_mut().map(|receiver| receiver.try_recv().unwrap().body).collect();
        assert_eq!(got, ["a", "b", "c"]);
        let _next = submit(&queue);
        let handed = queue.take(8).pop().unwrap();
        assert!(batch.push(handed.reply, answer("d")), "the first after a flush asks for one again");
    }

    #[test]
    fn a_gone_clients_answer_is_dropped_at_the_flush() {
        let queue = InProcess::new(4).unwrap();
        let mut kept = submit(&queue);
        drop(submit(&queue));
        let batch = AnswerBatch::default();
        for handed in queue.take(8) {
            batch.push(handed.reply, answer("x"));
        }
        assert_eq!(batch.flush(), 1, "one client waits");
        assert_eq!(kept.try_recv().unwrap().body, "x");
        assert_eq!(queue.outstanding(), 0, "both places given back");
        assert_eq!(batch.flush(), 0);
    }
}
