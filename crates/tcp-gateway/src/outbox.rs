//! The queue of bus messages waiting for the device.

use std::collections::VecDeque;

use banyan_core::Message;

/// A bounded FIFO of bus messages on their way to the device.
///
/// It fills while the device is away (not connected, reconnecting) or
/// reading slower than the bus publishes, and empties as the connection
/// writes. **When full, [`Outbox::push`] drops the oldest message** to make
/// room for the new one, and counts it: a device that comes back wants the
/// latest state. Whether to push into a full queue at all is the caller's
/// choice: while the device is connected and taking bytes, the gateway
/// stops taking from the bus instead (see [`Outbox::accepts`]), and drops
/// only once the device is marked stalled ([`Outbox::mark_stalled`]), until
/// it has drained the queue. Messages hold the payload [`bytes::Bytes`] the
/// bus client received, so a queued message costs no copy.
#[derive(Debug)]
pub struct Outbox {
    queue: VecDeque<Message>,
    capacity: usize,
    dropped: u64,
    unreported: u64,
    /// Set when the device made no room within the grace period; cleared
    /// when the queue drains, so a device that recovered is waited for again.
    stalled: bool,
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
            stalled: false,
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

    /// Takes the oldest message. Taking the last one clears the stalled
    /// mark: the device caught up.
    pub fn pop(&mut self) -> Option<Message> {
        let message = self.queue.pop_front();
        if self.queue.is_empty() {
            self.stalled = false;
        }
        message
    }

    /// Whether the queue holds its bound of messages.
    pub fn is_full(&self) -> bool {
        self.queue.len() >= self.capacity
    }

    /// Whether a connected device's queue takes another bus message now:
    /// there is room, or the device is stalled (and the push drops the
    /// oldest). When not, the caller stops taking from the bus, which then
    /// holds its messages back (back-pressure, nothing lost).
    pub fn accepts(&self) -> bool {
        !self.is_full() || self.stalled
    }

    /// Marks the device stalled: it made no room within the grace period.
    /// Pushes then drop the oldest until the queue drains.
    pub fn mark_stalled(&mut self) {
        self.stalled = true;
    }

    /// Whether the device is marked stalled.
    pub fn is_stalled(&self) -> bool {
        self.stalled
    }

    /// Forgets the stalled mark (a new connection starts trusted).
    pub fn clear_stalled(&mut self) {
        self.stalled = false;
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
    fn a_full_queue_accepts_only_once_stalled_until_drained() {
        let mut outbox = Outbox::new(2);
        outbox.push(msg(0));
        assert!(outbox.accepts());
        outbox.push(msg(1));
        assert!(outbox.is_full());
        assert!(!outbox.accepts(), "full: the bus must wait");
        outbox.mark_stalled();
        assert!(outbox.accepts(), "stalled: drop the oldest instead");
        outbox.push(msg(2));
        assert_eq!(outbox.dropped(), 1);
        // Room alone does not end the stall...
        outbox.pop();
        outbox.push(msg(3));
        assert!(outbox.is_stalled());
        // ...draining does.
        while outbox.pop().is_some() {}
        assert!(!outbox.is_stalled());
        outbox.push(msg(4));
        outbox.push(msg(5));
        assert!(!outbox.accepts(), "a drained device is waited for again");
        outbox.mark_stalled();
        outbox.clear_stalled();
        assert!(!outbox.accepts());
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
