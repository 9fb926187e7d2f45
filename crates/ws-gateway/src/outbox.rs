//! A client's bounded outgoing queue: full means "wait", until the client
//! is declared stalled; then its oldest messages are dropped.
//!
//! The bus side ([`crate::run`]'s dispatcher) pushes; the client's session
//! takes everything queued at once and writes it with one flush. When the
//! queue is full, [`Outbox::push`] refuses ([`Pushed::Full`]) and the
//! dispatcher waits for [`Outbox::room`], reading nothing more from the bus,
//! so the bus applies back-pressure up to the publishers and nothing is lost.
//! A client that makes no room within the gateway's grace period is marked
//! [stalled](Outbox::mark_stalled): from then on pushes never wait for it and
//! drop its oldest message instead (counted), until it has caught up (its
//! queue empty after a completed write), so a client that does not read
//! delays the others once, by the grace period, and holds a bounded amount of
//! memory. For OneGPIO reports, which describe the current state of a pin,
//! the newest messages are the ones worth keeping.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// What [`Outbox::push`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    /// Queued (or discarded because the client has left).
    Queued,
    /// Not queued: the queue is full and the client is not stalled. Wait for
    /// [`Outbox::room`] and push again, or mark it stalled.
    Full,
    /// Queued after dropping the oldest message: the client is stalled.
    Dropped,
}

/// A bounded queue of JSON texts for one client. The texts are shared
/// (reference-counted) between the clients of a topic, never copied.
#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    /// Wakes the session when the queue stops being empty.
    ready: Notify,
    /// Wakes the dispatcher waiting in [`Outbox::room`].
    room: Notify,
    capacity: usize,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Utf8Bytes>,
    /// Dropped since the client joined.
    dropped: u64,
    /// Declared stalled and not caught up since: pushes drop, never wait.
    stalled: bool,
    /// The dispatcher was refused and waits for room.
    waited_on: bool,
    /// The client has left: pushes are discarded, nobody waits for room.
    closed: bool,
}

impl Outbox {
    /// An empty queue holding at most `capacity` messages (at least 1).
    pub fn new(capacity: usize) -> Outbox {
        Outbox {
            state: Mutex::new(State::default()),
            ready: Notify::new(),
            room: Notify::new(),
            capacity: capacity.max(1),
        }
    }

    /// Queues `text` if there is room; when full, drops the oldest message
    /// if the client is stalled, and otherwise queues nothing and returns
    /// [`Pushed::Full`]. Never waits.
    pub fn push(&self, text: &Utf8Bytes) -> Pushed {
        let mut state = self.lock();
        if state.closed {
            return Pushed::Queued;
        }
        let mut pushed = Pushed::Queued;
        if state.queue.len() >= self.capacity {
            if !state.stalled {
                state.waited_on = true;
                return Pushed::Full;
            }
            state.queue.pop_front();
            state.dropped += 1;
            pushed = Pushed::Dropped;
        }
        let was_empty = state.queue.is_empty();
        state.queue.push_back(text.clone());
        drop(state);
        // The session waits only after seeing the queue empty: one wake-up
        // per batch, not per message.
        if was_empty {
            self.ready.notify_one();
        }
        pushed
    }

    /// Completes once a push would not be refused: the queue has room, the
    /// client is stalled, or it has left. Cancel-safe. Meant for one waiter
    /// (the dispatcher).
    pub async fn room(&self) {
        loop {
            {
                let state = self.lock();
                if state.closed || state.stalled || state.queue.len() < self.capacity {
                    return;
                }
            }
            // A take between the check and here leaves a permit.
            self.room.notified().await;
        }
    }

    /// Declares the client stalled: it made no room within the grace period.
    /// Pushes drop its oldest messages from now on, until it catches up.
    /// `true` when it was not stalled already (log it).
    pub fn mark_stalled(&self) -> bool {
        let mut state = self.lock();
        !std::mem::replace(&mut state.stalled, true)
    }

    /// Moves every queued message into `batch`, waiting for at least one.
    /// Cancel-safe.
    pub async fn take_all(&self, batch: &mut Vec<Utf8Bytes>) {
        loop {
            if self.try_take_all(batch) {
                return;
            }
            // A push between the check and here leaves a permit.
            self.ready.notified().await;
        }
    }

    /// Moves every queued message into `batch`; `false` when none was queued.
    pub fn try_take_all(&self, batch: &mut Vec<Utf8Bytes>) -> bool {
        let mut state = self.lock();
        if state.queue.is_empty() {
            return false;
        }
        batch.extend(state.queue.drain(..));
        let wake = std::mem::take(&mut state.waited_on);
        drop(state);
        if wake {
            self.room.notify_one();
        }
        true
    }

    /// Called once everything taken has been written: if nothing new is
    /// queued the client has caught up and is no longer stalled. Returns
    /// the messages dropped so far when this ends a stalled episode.
    pub fn written(&self) -> Option<u64> {
        let mut state = self.lock();
        if state.stalled && state.queue.is_empty() {
            state.stalled = false;
            return Some(state.dropped);
        }
        None
    }

    /// The client has left: forget its messages, accept no more, and stop
    /// any wait for its room.
    pub fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        state.queue = VecDeque::new();
        drop(state);
        self.room.notify_one();
    }

    /// Whether the client is stalled (dropping rather than waiting).
    pub fn is_stalled(&self) -> bool {
        self.lock().stalled
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
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    fn text(s: &str) -> Utf8Bytes {
        Utf8Bytes::from(s.to_owned())
    }

    fn take(outbox: &Outbox) -> Vec<String> {
        let mut batch = Vec::new();
        outbox.try_take_all(&mut batch);
        batch.iter().map(|t| t.as_str().to_owned()).collect()
    }

    #[test]
    fn a_full_queue_refuses_until_the_client_is_stalled() {
        let outbox = Outbox::new(2);
        assert_eq!(outbox.push(&text("1")), Pushed::Queued);
        assert_eq!(outbox.push(&text("2")), Pushed::Queued);
        assert_eq!(outbox.push(&text("3")), Pushed::Full);
        assert_eq!(outbox.dropped(), 0);
        assert!(outbox.mark_stalled());
        assert!(!outbox.mark_stalled(), "already stalled");
        assert_eq!(outbox.push(&text("3")), Pushed::Dropped);
        assert_eq!(outbox.push(&text("4")), Pushed::Dropped);
        assert_eq!(outbox.dropped(), 2);
        assert_eq!(take(&outbox), ["3", "4"]);
        // Taken but not yet written: still stalled, so pushes never wait.
        assert!(outbox.is_stalled());
        outbox.push(&text("5"));
        outbox.push(&text("6"));
        assert_eq!(outbox.push(&text("7")), Pushed::Dropped);
        assert_eq!(outbox.written(), None, "more is queued: not caught up");
        assert_eq!(take(&outbox), ["6", "7"]);
        assert_eq!(outbox.written(), Some(3), "caught up, 3 lost");
        assert!(!outbox.is_stalled());
        // Caught up: a full queue makes the dispatcher wait again.
        outbox.push(&text("8"));
        outbox.push(&text("9"));
        assert_eq!(outbox.push(&text("10")), Pushed::Full);
        assert_eq!(outbox.written(), None, "not stalled");
    }

    #[test]
    fn a_closed_outbox_takes_nothing_and_never_blocks() {
        let outbox = Outbox::new(1);
        outbox.push(&text("1"));
        outbox.close();
        assert!(outbox.is_empty());
        assert_eq!(outbox.push(&text("2")), Pushed::Queued);
        assert!(outbox.is_empty());
    }

    #[tokio::test]
    async fn take_all_waits_for_a_push() {
        let outbox = Arc::new(Outbox::new(4));
        let pusher = outbox.clone();
        let waiter = tokio::spawn(async move {
            let mut batch = Vec::new();
            outbox.take_all(&mut batch).await;
            batch
        });
        tokio::task::yield_now().await;
        pusher.push(&text("hello"));
        let got = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("take_all returns after a push")
            .expect("task");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].as_str(), "hello");
    }

    #[tokio::test]
    async fn room_waits_for_a_take_or_a_close() {
        let outbox = Arc::new(Outbox::new(1));
        outbox.push(&text("1"));
        assert_eq!(outbox.push(&text("2")), Pushed::Full);
        let waiting = outbox.clone();
        let waiter = tokio::spawn(async move { waiting.room().await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        assert_eq!(take(&outbox), ["1"]);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("room after a take")
            .expect("task");

        outbox.push(&text("2"));
        assert_eq!(outbox.push(&text("3")), Pushed::Full);
        let waiting = outbox.clone();
        let waiter = tokio::spawn(async move { waiting.room().await });
        tokio::task::yield_now().await;
        outbox.close();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("room once closed")
            .expect("task");
    }
}
