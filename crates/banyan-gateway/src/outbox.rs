//! A peer's bounded queue, and the one policy every gateway follows when it
//! is full.
//!
//! Every gateway keeps one [`Outbox`] per peer (a page, a device, a broker)
//! between the bus and that peer. The bus side pushes (see
//! [`crate::intake`]); the peer's writer takes batches and writes them. The
//! queue is bounded in messages and in bytes ([`QueuePolicy`]); what a full
//! queue does depends on the peer:
//!
//! | the peer is | a message that does not fit |
//! |---|---|
//! | **connected** | is refused ([`Pushed::Full`]): the intake waits for room, reading nothing more from the bus, so the bus holds back its publishers and nothing is lost |
//! | **stalled**: connected, but made no room and took no byte for the stall grace | pushes the oldest messages out (counted); the bus is not held. The stall ends once the peer has caught up: a completed write leaves the queue empty ([`Outbox::written`]) |
//! | **away**: not connected (reconnecting, an outage) | pushes the oldest messages out (counted): the queue keeps the newest, which is what a device or broker that comes back wants (OneGPIO reports describe the current state of a pin) |
//! | **closed**: gone for good | is discarded |
//!
//! A stall or an outage is logged once when it begins and once when it
//! ends, with the number of messages the peer missed.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use banyan_core::Message;
use bytes::Bytes;
use tokio::sync::Notify;

use crate::config::QueuePolicy;
use crate::stats::Counter;
use crate::sync::lock;

/// What an item costs against the byte bound of a queue.
pub trait Weigh {
    /// The item's size in bytes (its payload, roughly what it holds in
    /// memory).
    fn weight(&self) -> usize;
}

impl Weigh for Message {
    fn weight(&self) -> usize {
        self.topic().len() + self.payload().len()
    }
}

impl Weigh for Bytes {
    fn weight(&self) -> usize {
        self.len()
    }
}

/// The counters an outbox drops into, shared by the outboxes of a gateway
/// (its `dropped_away` and `dropped_stalled` stats).
#[derive(Clone, Debug, Default)]
pub struct Drops {
    /// Dropped while the peer was away: the outage queue's oldest.
    pub away: Counter,
    /// Dropped while the connected peer was stalled.
    pub stalled: Counter,
}

/// Whether the peer is there to take messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    /// Connected: a full queue holds the bus back.
    Connected,
    /// Not connected: a full queue drops its oldest.
    Away,
}

/// What [`Outbox::push`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed<T> {
    /// Queued.
    Queued,
    /// Queued after dropping this many of the oldest messages (the peer is
    /// stalled or away).
    Dropped(u64),
    /// Not queued: the queue is full and its connected peer is not stalled.
    /// The item is handed back; wait for [`Outbox::room`] and push again, or
    /// [mark the peer stalled](Outbox::mark_stalled).
    Full(T),
    /// Discarded: the outbox is closed.
    Discarded,
}

/// How much one [`Outbox::take`] may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    /// Messages at most (at least one is taken when any waits).
    pub messages: usize,
    /// Bytes at most, unless the first message alone is larger.
    pub bytes: usize,
}

impl Limit {
    /// Everything queued.
    pub const ALL: Limit = Limit {
        messages: usize::MAX,
        bytes: usize::MAX,
    };
}

/// A bounded queue toward one peer; share it in an `Arc`.
#[derive(Debug)]
pub struct Outbox<T> {
    state: Mutex<State<T>>,
    /// Wakes the writer when the queue stops being empty, or closes.
    ready: Notify,
    /// Wakes the intake when the peer made progress, the queue closed or
    /// the peer's state changed.
    room: Notify,
    policy: QueuePolicy,
    /// Shared by the outboxes of a gateway: its drop counts.
    drops: Drops,
    /// The span current when the outbox was made (the peer's): what the
    /// outbox logs is about that peer, whichever task makes it log.
    span: tracing::Span,
}

#[derive(Debug)]
struct State<T> {
    queue: VecDeque<T>,
    bytes: usize,
    peer: Peer,
    stalled: bool,
    closed: bool,
    /// Grows whenever the peer takes messages or bytes: a waiting intake
    /// restarts its stall grace when it changes.
    progress: u64,
    /// Messages dropped by this outbox.
    dropped: u64,
    /// Messages dropped in the current stall or outage.
    missed: u64,
}

/// What to log once the lock is released.
enum Note {
    None,
    OutageBegins,
    Back(u64),
    CaughtUp(u64),
}

impl<T: Weigh> Outbox<T> {
    /// An empty queue bounded by `policy`, its peer `peer`; messages it
    /// drops are counted in `drops` too. Make it inside the peer's span: the
    /// outbox logs in it.
    pub fn new(policy: QueuePolicy, peer: Peer, drops: Drops) -> Outbox<T> {
        Outbox {
            state: Mutex::new(State {
                // Grows on demand: a large bound costs nothing until used.
                queue: VecDeque::new(),
                bytes: 0,
                peer,
                stalled: false,
                closed: false,
                progress: 0,
                dropped: 0,
                missed: 0,
            }),
            ready: Notify::new(),
            room: Notify::new(),
            policy,
            drops,
            span: tracing::Span::current(),
        }
    }

    /// The bounds and grace of this queue.
    pub fn policy(&self) -> &QueuePolicy {
        &self.policy
    }

    /// Queues `item` when it fits. When it does not: a connected peer that
    /// is not stalled gets nothing and the item comes back
    /// ([`Pushed::Full`]); otherwise the oldest messages make room. Never
    /// waits.
    pub fn push(&self, item: T) -> Pushed<T> {
        let weight = item.weight();
        let mut state = lock(&self.state);
        if state.closed {
            return Pushed::Discarded;
        }
        let mut dropped = 0;
        let mut note = Note::None;
        if !self.fits(&state, weight) {
            if state.peer == Peer::Connected && !state.stalled {
                return Pushed::Full(item);
            }
            if state.peer == Peer::Away && state.missed == 0 {
                note = Note::OutageBegins;
            }
            while !self.fits(&state, weight) && self.drop_oldest(&mut state) {
                dropped += 1;
            }
        }
        let was_empty = state.queue.is_empty();
        let missed = state.missed;
        state.bytes += weight;
        state.queue.push_back(item);
        drop(state);
        self.log(note);
        if dropped > 0 {
            let _peer = self.span.enter();
            tracing::debug!(missed, "dropped {dropped} oldest: {missed} missed so far");
        }
        // The writer waits only after seeing the queue empty: one wake-up per
        // batch, not per message.
        if was_empty {
            self.ready.notify_waiters();
        }
        if dropped > 0 {
            Pushed::Dropped(dropped)
        } else {
            Pushed::Queued
        }
    }

    /// Completes once a push of `weight` bytes would not be refused, or the
    /// peer made progress since `progress` (see [`Outbox::progress`]).
    /// Cancel-safe.
    pub async fn room(&self, weight: usize, progress: u64) {
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let state = lock(&self.state);
                if state.closed
                    || state.stalled
                    || state.peer == Peer::Away
                    || state.progress != progress
                    || self.fits(&state, weight)
                {
                    return;
                }
            }
            notified.await;
        }
    }

    /// A number that changes whenever the peer takes messages or bytes.
    pub fn progress(&self) -> u64 {
        lock(&self.state).progress
    }

    /// Declares the peer stalled: it made no room and took no byte within
    /// the grace period. Pushes drop its oldest messages from now on, until
    /// it catches up. `false` (nothing changes) when it is stalled already,
    /// away or closed.
    pub fn mark_stalled(&self, grace: Duration) -> bool {
        let mut state = lock(&self.state);
        if state.stalled || state.closed || state.peer == Peer::Away {
            return false;
        }
        state.stalled = true;
        state.missed = 0;
        let (messages, bytes) = (state.queue.len(), state.bytes);
        drop(state);
        let _peer = self.span.enter();
        tracing::warn!(
            queued = messages,
            queued_bytes = bytes,
            "took nothing for {grace:?} and its queue is full: \
             dropping its oldest messages until it catches up"
        );
        self.room.notify_waiters();
        true
    }

    /// Moves the oldest messages into `batch`, within `limit` (at least one
    /// when any waits); returns how many. Taking counts as progress.
    pub fn take(&self, limit: Limit, batch: &mut Vec<T>) -> usize {
        let mut state = lock(&self.state);
        let (mut taken, mut bytes) = (0, 0usize);
        while taken < limit.messages {
            let Some(front) = state.queue.front() else {
                break;
            };
            let weight = front.weight();
            if taken > 0 && bytes.saturating_add(weight) > limit.bytes {
                break;
            }
            let Some(item) = state.queue.pop_front() else {
                break;
            };
            state.bytes -= weight;
            bytes = bytes.saturating_add(weight);
            batch.push(item);
            taken += 1;
        }
        if taken > 0 {
            state.progress = state.progress.wrapping_add(1);
            drop(state);
            self.room.notify_waiters();
        }
        taken
    }

    /// Like [`Outbox::take`], waiting for at least one message; returns 0
    /// only once the outbox is closed. Cancel-safe.
    pub async fn take_wait(&self, limit: Limit, batch: &mut Vec<T>) -> usize {
        loop {
            let notified = self.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let taken = self.take(limit, batch);
            if taken > 0 || lock(&self.state).closed {
                return taken;
            }
            notified.await;
        }
    }

    /// The peer accepted bytes of what was taken (a partial write): progress,
    /// though it made no room yet.
    pub fn made_progress(&self) {
        let mut state = lock(&self.state);
        state.progress = state.progress.wrapping_add(1);
        drop(state);
        self.room.notify_waiters();
    }

    /// Called once everything taken has been written: if nothing new is
    /// queued, a stalled peer has caught up and is waited for again.
    pub fn written(&self) {
        let mut state = lock(&self.state);
        let note = if state.stalled && state.queue.is_empty() {
            state.stalled = false;
            Note::CaughtUp(std::mem::take(&mut state.missed))
        } else {
            Note::None
        };
        drop(state);
        self.log(note);
    }

    /// Puts messages taken but not delivered (a connection failed under
    /// them) back in front, in their order. Beyond the bounds the oldest are
    /// dropped; returns how many.
    pub fn requeue(&self, items: impl DoubleEndedIterator<Item = T>) -> u64 {
        let mut state = lock(&self.state);
        if state.closed {
            return 0;
        }
        for item in items.rev() {
            state.bytes += item.weight();
            state.queue.push_front(item);
        }
        let mut note = Note::None;
        let mut dropped = 0;
        while self.over(&state) {
            if state.peer == Peer::Away && state.missed == 0 && dropped == 0 {
                note = Note::OutageBegins;
            }
            if !self.drop_oldest(&mut state) {
                break;
            }
            dropped += 1;
        }
        let wake = !state.queue.is_empty();
        drop(state);
        self.log(note);
        if wake {
            self.ready.notify_waiters();
        }
        dropped
    }

    /// The peer connected or went away. A new connection starts trusted
    /// (not stalled); an outage ends with a word on what was dropped.
    pub fn set_peer(&self, peer: Peer) {
        let mut state = lock(&self.state);
        let was = std::mem::replace(&mut state.peer, peer);
        state.stalled = false;
        let note = match (was, peer) {
            (Peer::Away, Peer::Connected) => Note::Back(std::mem::take(&mut state.missed)),
            (Peer::Connected, Peer::Away) => {
                state.missed = 0;
                Note::None
            }
            _ => Note::None,
        };
        drop(state);
        self.log(note);
        self.room.notify_waiters();
    }

    /// The peer has left for good: forget its messages, accept no more, and
    /// end any wait for its room or its messages.
    pub fn close(&self) {
        let mut state = lock(&self.state);
        state.closed = true;
        state.queue = VecDeque::new();
        state.bytes = 0;
        drop(state);
        self.ready.notify_waiters();
        self.room.notify_waiters();
    }

    /// Whether the outbox is closed.
    pub fn is_closed(&self) -> bool {
        lock(&self.state).closed
    }

    /// Whether the peer is stalled (pushes drop rather than wait).
    pub fn is_stalled(&self) -> bool {
        lock(&self.state).stalled
    }

    /// The peer's state.
    pub fn peer(&self) -> Peer {
        lock(&self.state).peer
    }

    /// Messages dropped by this outbox so far.
    pub fn dropped(&self) -> u64 {
        lock(&self.state).dropped
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        lock(&self.state).queue.len()
    }

    /// Bytes waiting.
    pub fn bytes(&self) -> usize {
        lock(&self.state).bytes
    }

    /// Whether no message waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn fits(&self, state: &State<T>, weight: usize) -> bool {
        state.queue.len() < self.policy.messages
            && (state.queue.is_empty() || state.bytes.saturating_add(weight) <= self.policy.bytes)
    }

    fn over(&self, state: &State<T>) -> bool {
        state.queue.len() > self.policy.messages
            || (state.queue.len() > 1 && state.bytes > self.policy.bytes)
    }

    /// Drops the oldest message, counted; `false` when there is none.
    fn drop_oldest(&self, state: &mut State<T>) -> bool {
        let Some(item) = state.queue.pop_front() else {
            return false;
        };
        state.bytes -= item.weight();
        state.dropped += 1;
        state.missed += 1;
        match state.peer {
            Peer::Away => self.drops.away.inc(),
            Peer::Connected => self.drops.stalled.inc(),
        };
        true
    }

    fn log(&self, note: Note) {
        let QueuePolicy {
            messages, bytes, ..
        } = self.policy;
        if matches!(note, Note::None) {
            return;
        }
        let _peer = self.span.enter();
        match note {
            Note::None => {}
            Note::OutageBegins => tracing::warn!(
                "the peer is away and its queue is full ({messages} messages, \
                 {bytes} bytes): dropping the oldest messages until it is back"
            ),
            Note::Back(0) => {}
            Note::Back(missed) => tracing::warn!(
                missed,
                "the peer is back; it missed its {missed} oldest messages while away"
            ),
            Note::CaughtUp(missed) => tracing::info!(
                missed,
                "caught up; it missed {missed} messages while stalled"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn b(n: u8, size: usize) -> Bytes {
        Bytes::from(vec![n; size])
    }

    fn outbox(messages: usize, bytes: usize, peer: Peer) -> Outbox<Bytes> {
        Outbox::new(QueuePolicy::new(messages, bytes), peer, Drops::default())
    }

    fn firsts(batch: &[Bytes]) -> Vec<u8> {
        batch.iter().map(|b| b[0]).collect()
    }

    fn take_all(outbox: &Outbox<Bytes>) -> Vec<u8> {
        let mut batch = Vec::new();
        outbox.take(Limit::ALL, &mut batch);
        firsts(&batch)
    }

    #[test]
    fn connected_full_refuses_until_stalled_and_the_stall_ends_when_caught_up() {
        let outbox = outbox(2, 1 << 20, Peer::Connected);
        assert_eq!(outbox.push(b(1, 1)), Pushed::Queued);
        assert_eq!(outbox.push(b(2, 1)), Pushed::Queued);
        assert_eq!(outbox.push(b(3, 1)), Pushed::Full(b(3, 1)));
        assert_eq!(outbox.dropped(), 0);
        assert!(outbox.mark_stalled(Duration::from_secs(1)));
        assert!(!outbox.mark_stalled(Duration::from_secs(1)), "already");
        assert_eq!(outbox.push(b(3, 1)), Pushed::Dropped(1));
        assert_eq!(outbox.push(b(4, 1)), Pushed::Dropped(1));
        assert_eq!(take_all(&outbox), [3, 4]);
        // Taken but not yet written: still stalled.
        outbox.push(b(5, 1));
        outbox.push(b(6, 1));
        assert_eq!(outbox.push(b(7, 1)), Pushed::Dropped(1));
        outbox.written();
        assert!(outbox.is_stalled(), "more was queued during the write");
        assert_eq!(take_all(&outbox), [6, 7]);
        outbox.written();
        assert!(!outbox.is_stalled(), "caught up");
        assert_eq!(outbox.dropped(), 3);
        outbox.push(b(8, 1));
        outbox.push(b(9, 1));
        assert!(matches!(outbox.push(b(10, 1)), Pushed::Full(_)));
    }

    #[test]
    fn away_keeps_the_newest_and_counts() {
        let drops = Drops::default();
        let outbox = Outbox::new(QueuePolicy::new(3, 1 << 20), Peer::Away, drops.clone());
        for n in 0..5 {
            outbox.push(b(n, 1));
        }
        assert_eq!(take_all(&outbox), [2, 3, 4]);
        assert_eq!(
            (outbox.dropped(), drops.away.get(), drops.stalled.get()),
            (2, 2, 0)
        );
        assert!(!outbox.mark_stalled(Duration::ZERO), "away is not stalled");
    }

    #[test]
    fn bytes_bound_the_queue_too_but_one_large_message_fits_alone() {
        let outbox = outbox(100, 10, Peer::Connected);
        assert_eq!(outbox.push(b(1, 6)), Pushed::Queued);
        assert!(matches!(outbox.push(b(2, 6)), Pushed::Full(_)));
        assert_eq!(outbox.bytes(), 6);
        assert_eq!(take_all(&outbox), [1]);
        assert_eq!(outbox.push(b(3, 50)), Pushed::Queued, "alone");
        assert!(matches!(outbox.push(b(4, 1)), Pushed::Full(_)));
        outbox.set_peer(Peer::Away);
        assert_eq!(outbox.push(b(4, 1)), Pushed::Dropped(1));
        assert_eq!(outbox.bytes(), 1);
    }

    #[test]
    fn take_respects_the_limit_but_takes_at_least_one() {
        let outbox = outbox(100, 1 << 20, Peer::Connected);
        for n in 0..5 {
            outbox.push(b(n, 4));
        }
        let mut batch = Vec::new();
        let limit = Limit {
            messages: 10,
            bytes: 9,
        };
        assert_eq!(outbox.take(limit, &mut batch), 2);
        let one = Limit {
            messages: 10,
            bytes: 1,
        };
        assert_eq!(outbox.take(one, &mut batch), 1);
        let two = Limit {
            messages: 2,
            bytes: usize::MAX,
        };
        assert_eq!(outbox.take(two, &mut batch), 2);
        assert_eq!(firsts(&batch), [0, 1, 2, 3, 4]);
        assert_eq!(outbox.bytes(), 0);
    }

    #[test]
    fn requeued_messages_go_first_and_count_against_the_bounds() {
        let outbox = outbox(3, 1 << 20, Peer::Away);
        outbox.push(b(3, 1));
        outbox.push(b(4, 1));
        assert_eq!(outbox.requeue(vec![b(1, 1), b(2, 1)].into_iter()), 1);
        assert_eq!(take_all(&outbox), [2, 3, 4]);
    }

    #[test]
    fn a_new_connection_is_trusted_and_a_closed_outbox_takes_nothing() {
        let outbox = outbox(1, 1 << 20, Peer::Connected);
        outbox.push(b(1, 1));
        outbox.mark_stalled(Duration::ZERO);
        outbox.set_peer(Peer::Away);
        outbox.set_peer(Peer::Connected);
        assert!(!outbox.is_stalled());
        assert!(matches!(outbox.push(b(2, 1)), Pushed::Full(_)));
        outbox.close();
        assert!(outbox.is_empty());
        assert_eq!(outbox.push(b(3, 1)), Pushed::Discarded);
    }

    #[tokio::test]
    async fn take_wait_wakes_on_a_push_and_ends_on_close() {
        let outbox = Arc::new(outbox(4, 1 << 20, Peer::Connected));
        let writer = {
            let outbox = outbox.clone();
            tokio::spawn(async move {
                let mut batch = Vec::new();
                let first = outbox.take_wait(Limit::ALL, &mut batch).await;
                let second = outbox.take_wait(Limit::ALL, &mut batch).await;
                (first, second, firsts(&batch))
            })
        };
        tokio::task::yield_now().await;
        outbox.push(b(9, 1));
        tokio::task::yield_now().await;
        outbox.close();
        let got = tokio::time::timeout(Duration::from_secs(5), writer)
            .await
            .expect("the writer returns")
            .expect("task");
        assert_eq!(got, (1, 0, vec![9]));
    }

    #[tokio::test]
    async fn room_waits_for_a_take_progress_or_a_change_of_peer() {
        let outbox = Arc::new(outbox(1, 1 << 20, Peer::Connected));
        outbox.push(b(1, 1));
        let waiting = |outbox: &Arc<Outbox<Bytes>>| {
            let outbox = outbox.clone();
            let progress = outbox.progress();
            tokio::spawn(async move { outbox.room(1, progress).await })
        };
        let done = |task: tokio::task::JoinHandle<()>| async move {
            tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .expect("room")
                .expect("task");
        };
        let waiter = waiting(&outbox);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        take_all(&outbox);
        done(waiter).await;

        outbox.push(b(2, 1));
        let waiter = waiting(&outbox);
        tokio::task::yield_now().await;
        outbox.made_progress();
        done(waiter).await;

        let waiter = waiting(&outbox);
        tokio::task::yield_now().await;
        outbox.set_peer(Peer::Away);
        done(waiter).await;
    }
}
