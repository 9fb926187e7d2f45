//! The queue of bus messages waiting for the device.

use std::collections::VecDeque;

use banyan_core::Message;

/// A bounded FIFO of bus messages on their way to the device.
///
/// It fills while the device is away (not connected, reconnecting) or not
/// reading, and empties as the connection writes. **When full, the oldest
/// message is dropped** to make room for the new one, and counted: a device
/// that comes back wants the latest state, and the bus side never waits for
/// the device. Messages hold the payload [`bytes::Bytes`] the bus client
/// received, so a queued message costs no copy.
#[derive(Debug)]
pub struct Outbox {
    queue: VecDeque<Message>,
    capacity: usize,
    dropped: u64,
    unreported: u64,
}

impl Outbox {
    /// An empty queue holding at most `capacity` messages (at least one).
    pub fn new(capacity: usize) -> Outbox {
        let capacity = capacity.max(1);
        Outbox {
            // Grows on demand: a large bound costs nothing until used.
            queue: VecDeque::with_capacity(capacity.min(64)),
            capacity,
            dropped: 0,
            unreported: 0,
        }
    }

    /// Appends `message`, dropping the oldest one when full; returns the
    /// dropped message, if any.
    pub fn push(&mut self, message: Message) -> Option<Message> {
        let dropped = if self.queue.len() >= self.capacity {
            self.dropped += 1;
            self.unreported += 1;
            self.queue.pop_front()
        } else {
            None
        };
        self.queue.push_back(message);
        dropped
    }

    /// Takes the oldest message.
    pub fn pop(&mut self) -> Option<Message> {
        self.queue.pop_front()
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether no message waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The bound.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Messages dropped since the start.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Messages dropped since the last [`Outbox::take_unreported`].
    pub fn unreported(&self) -> u64 {
        self.unreported
    }

    /// Messages dropped since the last call (for the log), resetting it.
    pub fn take_unreported(&mut self) -> u64 {
        std::mem::take(&mut self.unreported)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(n: u8) -> Message {
        Message::from_raw("t", vec![n])
    }

    #[test]
    fn drops_the_oldest_when_full_and_counts() {
        let mut outbox = Outbox::new(3);
        for n in 0..5 {
            outbox.push(msg(n));
        }
        assert_eq!(outbox.len(), 3);
        assert_eq!(outbox.dropped(), 2);
        assert_eq!(outbox.take_unreported(), 2);
        assert_eq!(outbox.take_unreported(), 0);
        let kept: Vec<u8> = std::iter::from_fn(|| outbox.pop())
            .map(|m| m.payload()[0])
            .collect();
        assert_eq!(kept, vec![2, 3, 4]);
        assert!(outbox.is_empty());
        assert_eq!(outbox.dropped(), 2);
    }

    #[test]
    fn push_returns_what_it_dropped() {
        let mut outbox = Outbox::new(0);
        assert_eq!(outbox.capacity(), 1);
        assert!(outbox.push(msg(1)).is_none());
        let dropped = outbox.push(msg(2)).expect("the oldest is dropped");
        assert_eq!(dropped.payload()[..], [1]);
    }
}
