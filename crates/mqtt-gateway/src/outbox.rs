//! The queue of what goes to MQTT, and its policy when full.
//!
//! Bounded (`--queue`). What happens when it is full depends on the broker:
//!
//! * **connected**, merely slower than the bus: the gateway stops taking from
//!   the bus until there is room ([`Outbox::room`]), so the bus's
//!   back-pressure reaches the publishers and nothing is lost;
//! * **connected but stalled** (no room made within the grace period): the
//!   gateway marks the broker stalled ([`Outbox::mark_stalled`]) and drops
//!   the oldest message for each new one, counted, so that the bus keeps
//!   going; it waits again only once the queue has drained to half its bound;
//! * **away** (an outage): the queue holds what the bus publishes meanwhile
//!   and drops the oldest when full, so that after a long outage the broker
//!   gets the most recent state.
//!
//! Pure code; the gateway shares it between tasks behind a mutex.

use std::collections::VecDeque;

use bytes::Bytes;

/// One MQTT publication waiting to be sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    /// The MQTT topic.
    pub topic: String,
    /// The MQTT payload.
    pub payload: Bytes,
}

/// A bounded FIFO that drops its oldest entry when full.
#[derive(Debug)]
pub struct Outbox {
    items: VecDeque<Outgoing>,
    capacity: usize,
    dropped: u64,
    /// Set when a connected broker made no room within the grace period;
    /// cleared once the queue has drained to half its bound, or on a new
    /// connection.
    stalled: bool,
}

impl Outbox {
    /// An empty queue holding at most `capacity` messages (at least 1).
    pub fn new(capacity: usize) -> Outbox {
        let capacity = capacity.max(1);
        Outbox {
            items: VecDeque::with_capacity(capacity.min(1024)),
            capacity,
            dropped: 0,
            stalled: false,
        }
    }

    /// How many more messages the bus reader may queue now. While the
    /// broker is connected and not marked stalled, the free places (0: wait
    /// for room); otherwise any number, the oldest being dropped beyond the
    /// bound.
    pub fn room(&self, connected: bool) -> usize {
        if connected && !self.stalled {
            self.capacity.saturating_sub(self.items.len())
        } else {
            usize::MAX
        }
    }

    /// The bound.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The broker made no room within the grace period: from now on new
    /// messages push the oldest out instead of waiting, until the queue has
    /// drained to half its bound.
    pub fn mark_stalled(&mut self) {
        self.stalled = true;
    }

    /// Whether the broker is marked stalled.
    pub fn is_stalled(&self) -> bool {
        self.stalled
    }

    /// Forgets a stall (a new connection starts afresh).
    pub fn clear_stall(&mut self) {
        self.stalled = false;
    }

    /// Takes up to `max` of the oldest messages, appending them to `batch`.
    pub fn take_batch(&mut self, max: usize, batch: &mut Vec<Outgoing>) {
        let n = max.min(self.items.len());
        batch.extend(self.items.drain(..n));
        if self.stalled && self.items.len() <= self.capacity / 2 {
            self.stalled = false;
        }
    }

    /// Appends a message; returns `true` when the oldest one was dropped to
    /// make room.
    pub fn push(&mut self, item: Outgoing) -> bool {
        self.items.push_back(item);
        self.trim()
    }

    /// Puts messages that were handed to the MQTT client but not delivered
    /// back in front, in their order; returns `true` when some were dropped
    /// to stay within the bound (the oldest first).
    pub fn requeue(&mut self, items: impl DoubleEndedIterator<Item = Outgoing>) -> bool {
        for item in items.rev() {
            self.items.push_front(item);
        }
        self.trim()
    }

    /// Takes the oldest message.
    pub fn pop(&mut self) -> Option<Outgoing> {
        let mut batch = Vec::with_capacity(1);
        self.take_batch(1, &mut batch);
        batch.pop()
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether none is waiting.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Messages dropped since the queue was made.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    fn trim(&mut self) -> bool {
        let mut dropped = false;
        while self.items.len() > self.capacity {
            self.items.pop_front();
            self.dropped += 1;
            dropped = true;
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(n: u8) -> Outgoing {
        Outgoing {
            topic: "t".into(),
            payload: Bytes::from(vec![n]),
        }
    }

    fn drain(outbox: &mut Outbox) -> Vec<u8> {
        std::iter::from_fn(|| outbox.pop())
            .map(|o| o.payload[0])
            .collect()
    }

    #[test]
    fn keeps_order_and_drops_the_oldest_when_full() {
        let mut outbox = Outbox::new(3);
        for n in 1..=3 {
            assert!(!outbox.push(item(n)));
        }
        assert!(outbox.push(item(4)));
        assert!(outbox.push(item(5)));
        assert_eq!(outbox.dropped(), 2);
        assert_eq!(outbox.len(), 3);
        assert_eq!(drain(&mut outbox), vec![3, 4, 5]);
        assert!(outbox.is_empty());
    }

    #[test]
    fn requeued_messages_go_first_and_count_against_the_bound() {
        let mut outbox = Outbox::new(3);
        outbox.push(item(3));
        outbox.push(item(4));
        assert!(!outbox.requeue(vec![item(1)].into_iter()));
        assert_eq!(drain(&mut outbox), vec![1, 3, 4]);
        outbox.push(item(3));
        outbox.push(item(4));
        assert!(outbox.requeue(vec![item(1), item(2)].into_iter()));
        assert_eq!(outbox.dropped(), 1);
        assert_eq!(drain(&mut outbox), vec![2, 3, 4]);
    }

    #[test]
    fn a_full_queue_holds_the_reader_until_the_broker_is_marked_stalled() {
        let mut outbox = Outbox::new(4);
        for n in 1..=3 {
            outbox.push(item(n));
            assert_eq!(outbox.room(true), 4 - usize::from(n));
        }
        outbox.push(item(4));
        assert_eq!(outbox.room(true), 0, "full: wait for room, lose nothing");
        assert_eq!(outbox.room(false), usize::MAX, "away: drop the oldest");
        let mut batch = Vec::new();
        outbox.take_batch(1, &mut batch);
        assert_eq!(outbox.room(true), 1, "room again");

        outbox.push(item(5));
        outbox.mark_stalled();
        assert_eq!(outbox.room(true), usize::MAX, "stalled: drop, do not wait");
        assert!(outbox.push(item(6)));
        assert_eq!(outbox.dropped(), 1);
        // Draining to half the bound (2) ends the stall, not before.
        outbox.take_batch(1, &mut batch);
        assert!(outbox.is_stalled());
        outbox.take_batch(1, &mut batch);
        assert!(!outbox.is_stalled());
        assert_eq!(
            batch.iter().map(|o| o.payload[0]).collect::<Vec<_>>(),
            vec![1, 3, 4]
        );
        assert_eq!(drain(&mut outbox), vec![5, 6]);
    }

    #[test]
    fn a_zero_bound_still_holds_one() {
        let mut outbox = Outbox::new(0);
        outbox.push(item(1));
        assert_eq!(outbox.len(), 1);
    }
}
