//! A client's bounded outgoing queue, which drops its oldest message when
//! full.
//!
//! The bus side pushes without ever waiting, so a client that does not read
//! cannot delay delivery to any other client; the queue's bound caps the
//! memory such a client holds. For OneGPIO reports, which describe the
//! current state of a pin, the newest messages are the ones worth keeping.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// What [`Outbox::push`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    /// Queued.
    Queued,
    /// Queued, after dropping the oldest message; the first drop since the
    /// client last caught up (log it).
    StartedDropping,
    /// Queued, after dropping the oldest message; the client was already
    /// behind.
    Dropped,
}

/// A bounded queue of JSON texts for one client. The texts are shared
/// (reference-counted) between the clients of a topic, never copied.
#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    ready: Notify,
    capacity: usize,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Utf8Bytes>,
    dropped: u64,
    behind: bool,
}

impl Outbox {
    /// An empty queue holding at most `capacity` messages (at least 1).
    pub fn new(capacity: usize) -> Outbox {
        Outbox {
            state: Mutex::new(State::default()),
            ready: Notify::new(),
            capacity: capacity.max(1),
        }
    }

    /// Queues `text`, dropping the oldest message when full. Never waits.
    pub fn push(&self, text: Utf8Bytes) -> Pushed {
        let mut state = self.lock();
        let mut pushed = Pushed::Queued;
        if state.queue.len() >= self.capacity {
            state.queue.pop_front();
            state.dropped += 1;
            pushed = if state.behind {
                Pushed::Dropped
            } else {
                Pushed::StartedDropping
            };
            state.behind = true;
        }
        state.queue.push_back(text);
        drop(state);
        self.ready.notify_one();
        pushed
    }

    /// The oldest queued message, waiting for one. Cancel-safe.
    pub async fn pop(&self) -> Utf8Bytes {
        loop {
            if let Some(text) = self.try_pop() {
                return text;
            }
            // A push between try_pop and here leaves a permit: no lost wake-up.
            self.ready.notified().await;
        }
    }

    /// The oldest queued message, if any.
    pub fn try_pop(&self) -> Option<Utf8Bytes> {
        let mut state = self.lock();
        let text = state.queue.pop_front();
        if state.queue.is_empty() {
            state.behind = false;
        }
        text
    }

    /// Messages dropped so far.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    /// Whether no message waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state stays consistent at every step; a panic elsewhere while
        // holding the lock cannot leave it half-changed.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Utf8Bytes {
        Utf8Bytes::from(s.to_owned())
    }

    #[test]
    fn full_queue_drops_the_oldest_and_counts() {
        let outbox = Outbox::new(2);
        assert_eq!(outbox.push(text("1")), Pushed::Queued);
        assert_eq!(outbox.push(text("2")), Pushed::Queued);
        assert_eq!(outbox.push(text("3")), Pushed::StartedDropping);
        assert_eq!(outbox.push(text("4")), Pushed::Dropped);
        assert_eq!(outbox.dropped(), 2);
        assert_eq!(outbox.try_pop().as_deref(), Some("3"));
        assert_eq!(outbox.try_pop().as_deref(), Some("4"));
        assert_eq!(outbox.try_pop(), None);
        // Caught up: the next drop is a new episode.
        outbox.push(text("5"));
        outbox.push(text("6"));
        assert_eq!(outbox.push(text("7")), Pushed::StartedDropping);
    }

    #[tokio::test]
    async fn pop_waits_for_a_push() {
        let outbox = std::sync::Arc::new(Outbox::new(4));
        let pusher = outbox.clone();
        let waiter = tokio::spawn(async move { outbox.pop().await });
        tokio::task::yield_now().await;
        pusher.push(text("hello"));
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("pop returns after a push")
            .expect("task");
        assert_eq!(got.as_str(), "hello");
    }
}
