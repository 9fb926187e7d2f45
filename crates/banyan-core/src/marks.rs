//! Queue marks sized in bytes as well as in messages.
//!
//! libzmq bounds its queues (a socket's pipes) in messages only: a mark of
//! 16,384 is 160 KiB of `{'msg': i}` but 1 GiB of 64 KiB payloads. It does
//! let a socket's marks change while it runs, for the pipes it has, so the
//! owner of a socket lowers them as the messages it sees grow: [`Marks`]
//! keeps each mark at the configured message count or at the byte budget
//! divided by the size of the largest recent message, whichever is lower,
//! and says when the marks must change. Pure bookkeeping, unit tested here.

/// How many messages one window lasts: the marks rise again (messages got
/// smaller) only at the end of a window, from the largest message in it.
const WINDOW: u32 = 4096;

/// No mark goes below this many messages, however large they are: a queue
/// of one message would stop the bus at every hiccup.
pub(crate) const MIN_MARK: i32 = 16;

/// The marks of two queues (in the backplane: each publisher's and each
/// subscriber's) under one byte budget per queue.
#[derive(Debug)]
pub(crate) struct Marks {
    budget: u64,
    most: (i32, i32),
    /// The message size the marks are set for: a power of two at least as
    /// large as the largest message seen (0: none yet, the marks at most).
    sized_for: u64,
    window_largest: u64,
    window_seen: u32,
}

impl Marks {
    /// Marks of at most `most` messages each, and `budget` bytes.
    pub(crate) fn new(budget: u64, most: (i32, i32)) -> Marks {
        Marks {
            budget: budget.max(1),
            most,
            sized_for: 0,
            window_largest: 0,
            window_seen: 0,
        }
    }

    /// The marks for messages of `size` bytes.
    pub(crate) fn for_size(&self, size: u64) -> (i32, i32) {
        let fit = |most: i32| -> i32 {
            if size == 0 {
                return most;
            }
            let fits = self.budget / size;
            i32::try_from(fits)
                .unwrap_or(i32::MAX)
                .clamp(MIN_MARK.min(most), most)
        };
        (fit(self.most.0), fit(self.most.1))
    }

    /// The marks in force.
    pub(crate) fn current(&self) -> (i32, i32) {
        self.for_size(self.sized_for)
    }

    /// Counts one message of `size` bytes (its frames); returns the marks to
    /// set when they change. A larger message lowers them at once; they rise
    /// again at the end of a window whose largest message was less than
    /// half the size they were set for. Called for every message: the
    /// common case is two comparisons.
    pub(crate) fn observe(&mut self, size: u64) -> Option<(i32, i32)> {
        self.window_seen += 1;
        self.window_largest = self.window_largest.max(size);
        if size > self.sized_for {
            // A power of two, so that sizes growing a little at a time
            // change the marks a few times, not at every message.
            return self.size_for(size.checked_next_power_of_two().unwrap_or(u64::MAX));
        }
        if self.window_seen < WINDOW {
            return None;
        }
        let largest = self
            .window_largest
            .checked_next_power_of_two()
            .unwrap_or(u64::MAX);
        self.window_largest = 0;
        self.window_seen = 0;
        if largest < self.sized_for / 2 {
            self.size_for(largest)
        } else {
            None
        }
    }

    fn size_for(&mut self, size: u64) -> Option<(i32, i32)> {
        let before = self.current();
        self.sized_for = size;
        let after = self.current();
        (after != before).then_some(after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn small_messages_keep_the_marks_in_messages() {
        let mut marks = Marks::new(64 * MIB, (200_000, 16_384));
        for _ in 0..10_000 {
            assert_eq!(marks.observe(15), None);
        }
        assert_eq!(marks.current(), (200_000, 16_384));
    }

    #[test]
    fn large_messages_lower_the_marks_at_once_within_the_budget() {
        let mut marks = Marks::new(64 * MIB, (200_000, 16_384));
        assert_eq!(marks.observe(15), None);
        // 64 KiB of payload and a topic: sized as 128 KiB.
        assert_eq!(marks.observe(65_536 + 3), Some((512, 512)));
        let (publisher, subscriber) = marks.current();
        assert!(publisher as u64 * (65_536 + 3) <= 64 * MIB);
        assert!(subscriber as u64 * (65_536 + 3) <= 64 * MIB);
        // The same size again changes nothing.
        assert_eq!(marks.observe(65_539), None);
    }

    #[test]
    fn the_marks_rise_again_a_window_after_the_large_messages_stopped() {
        let mut marks = Marks::new(64 * MIB, (200_000, 16_384));
        assert!(marks.observe(1 << 16).is_some());
        // The window that saw the large message ends, then a whole one
        // without any.
        let mut changed = None;
        for _ in 0..2 * WINDOW {
            changed = changed.or(marks.observe(15));
        }
        assert_eq!(changed, Some((200_000, 16_384)));
        // Large messages now and then keep them low.
        assert!(marks.observe(1 << 16).is_some());
        for n in 0..4 * WINDOW {
            let size = if n % 1000 == 0 { 1 << 16 } else { 15 };
            assert_eq!(marks.observe(size), None, "message {n}");
        }
    }

    #[test]
    fn huge_messages_keep_a_floor_of_messages() {
        let mut marks = Marks::new(MIB, (200_000, 16_384));
        assert_eq!(marks.observe(64 * MIB), Some((MIN_MARK, MIN_MARK)));
        let mut marks = Marks::new(MIB, (8, 4));
        assert_eq!(
            marks.observe(64 * MIB),
            None,
            "never above the configured marks"
        );
        assert_eq!(marks.current(), (8, 4));
        let mut marks = Marks::new(1, (10, 10));
        assert_eq!(marks.observe(u64::MAX), None);
    }
}
