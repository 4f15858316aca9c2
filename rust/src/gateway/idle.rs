//! Idle keep-alive connections per node, shared by both node clients ([`super::h1`], [`super::pool`]).
//!
//! Most recently used first on checkout; expired ones are dropped from the front on check-in and by
//! [`IdleConnections::sweep`], which also forgets nodes left without any. Thread-safety: one mutex
//! (uncontended: each server thread has its own pools).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// Per node address: its idle connections with the time each went idle, oldest first.
type Lists<C> = HashMap<Arc<str>, VecDeque<(C, Instant)>, foldhash::fast::RandomState>;

pub struct IdleConnections<C> {
    lists: Mutex<Lists<C>>,
    idle_timeout: Duration,
    max_per_node: usize,
}

impl<C> IdleConnections<C> {
    pub fn new(idle_timeout: Duration, max_per_node: usize) -> Self {
        IdleConnections { lists: Mutex::new(HashMap::default()), idle_timeout, max_per_node: max_per_node.max(1) }
    }

    /// The most recently used unexpired connection to `address` that `usable` accepts.
    pub fn checkout(&self, address: &str, mut usable: impl FnMut(&C) -> bool) -> Option<C> {
        let mut lists = self.lists.lock();
        let list = lists.get_mut(address)?;
        let now = Instant::now();
        while let Some((connection, since)) = list.pop_back() {
            if now.duration_since(since) < self.idle_timeout && usable(&connection) {
                return Some(connection);
            }
        }
        None
    }

    /// Keep `connection` for later requests to `address` (the longest idle one goes when full).
    pub fn checkin(&self, address: &Arc<str>, connection: C) {
        let now = Instant::now();
        let mut lists = self.lists.lock();
        let list = lists.entry(address.clone()).or_default();
        while list.front().is_some_and(|(_, since)| now.duration_since(*since) >= self.idle_timeout) {
            list.pop_front();
        }
        if list.len() >= self.max_per_node {
            list.pop_front();
        }
        list.push_back((connection, now));
    }

    /// Close connections past the idle time or that `usable` rejects; forget nodes without any.
    pub fn sweep(&self, mut usable: impl FnMut(&C) -> bool) {
        let now = Instant::now();
        let mut lists = self.lists.lock();
        lists.retain(|_, list| {
            list.retain(|(connection, since)| now.duration_since(*since) < self.idle_timeout && usable(connection));
            !list.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn most_recent_first_bounded_and_expiring() {
        let pool = IdleConnections::new(Duration::from_secs(10), 2);
        let node: Arc<str> = Arc::from("http://n:1");
        for c in [1, 2, 3] {
            pool.checkin(&node, c);
        }
        assert_eq!(pool.checkout(&node, |_| true), Some(3)); // 1 was dropped when full
        assert_eq!(pool.checkout(&node, |c| *c != 2), None); // rejected ones are dropped
        pool.checkin(&node, 4);
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(pool.checkout(&node, |_| true), None);
        pool.checkin(&node, 5);
        pool.sweep(|_| false);
        assert!(pool.lists.lock().is_empty());
    }
}
