//! The outage queue: what goes to MQTT, held while the broker is away.
//!
//! Bounded; when full, the **oldest** message is dropped and counted, so that
//! after a long outage the broker gets the most recent state. Pure code; the
//! gateway shares it between tasks behind a mutex.

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
}

impl Outbox {
    /// An empty queue holding at most `capacity` messages (at least 1).
    pub fn new(capacity: usize) -> Outbox {
        let capacity = capacity.max(1);
        Outbox {
            items: VecDeque::with_capacity(capacity.min(1024)),
            capacity,
            dropped: 0,
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
        self.items.pop_front()
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
    fn a_zero_bound_still_holds_one() {
        let mut outbox = Outbox::new(0);
        outbox.push(item(1));
        assert_eq!(outbox.len(), 1);
    }
}
