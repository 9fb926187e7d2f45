//! The connections waiting for their WebSocket upgrade: a bounded line,
//! oldest first.
//!
//! Pure bookkeeping, no I/O. A connection that has not sent its upgrade
//! request yet costs the gateway a task and a socket, and until it has
//! there is no request to answer. So such connections are not counted
//! against the pages (`--max-clients`), which only upgraded connections
//! hold; they wait in a line of their own, bounded by `--max-pending`, and
//! when one more arrives at a full line the one that has waited longest
//! leaves it ([`Pending::arrive`] names it, the gateway closes it). A
//! browser sends its upgrade request as soon as its connection is up, so
//! idle sockets, however many, push out only each other.

use std::collections::VecDeque;

/// A connection's place in the line.
pub type Ticket = u64;

/// The line of waiting connections, each with a value (what the gateway
/// needs to close it).
#[derive(Debug)]
pub struct Pending<V> {
    bound: usize,
    next: Ticket,
    line: VecDeque<(Ticket, V)>,
}

impl<V> Pending<V> {
    /// A line of at most `bound` connections (at least one).
    pub fn new(bound: usize) -> Pending<V> {
        Pending {
            bound: bound.max(1),
            next: 0,
            line: VecDeque::new(),
        }
    }

    /// Adds a connection at the end of the line; returns its ticket, and
    /// the value of the connection that waited longest when the line was
    /// full (it has left the line: close it).
    pub fn arrive(&mut self, value: V) -> (Ticket, Option<V>) {
        let pushed_out = if self.line.len() >= self.bound {
            self.line.pop_front().map(|(_, v)| v)
        } else {
            None
        };
        self.next += 1;
        self.line.push_back((self.next, value));
        (self.next, pushed_out)
    }

    /// Removes a connection (upgraded, gone, or timed out); its value, or
    /// `None` when it had left the line already.
    pub fn leave(&mut self, ticket: Ticket) -> Option<V> {
        let at = self.line.iter().position(|(t, _)| *t == ticket)?;
        self.line.remove(at).map(|(_, v)| v)
    }

    /// Connections waiting.
    pub fn len(&self) -> usize {
        self.line.len()
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.line.is_empty()
    }

    /// The most that may wait at once.
    pub fn bound(&self) -> usize {
        self.bound
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_line_pushes_out_the_longest_waiting() {
        let mut p = Pending::new(2);
        let (a, none) = p.arrive('a');
        assert_eq!(none, None);
        let (_, none) = p.arrive('b');
        assert_eq!(none, None);
        let (c, out) = p.arrive('c');
        assert_eq!(out, Some('a'));
        assert_eq!(p.len(), 2);
        assert_eq!(p.leave(a), None, "a has left the line already");
        assert_eq!(p.leave(c), Some('c'));
        let (_, none) = p.arrive('d');
        assert_eq!(none, None, "room again");
        let (_, out) = p.arrive('e');
        assert_eq!(out, Some('b'));
    }

    #[test]
    fn leaving_from_the_middle_keeps_the_order() {
        let mut p = Pending::new(3);
        let (_, _) = p.arrive(1);
        let (two, _) = p.arrive(2);
        let (_, _) = p.arrive(3);
        assert_eq!(p.leave(two), Some(2));
        assert_eq!(p.leave(two), None);
        p.arrive(4);
        assert_eq!(p.arrive(5).1, Some(1));
        assert_eq!(p.arrive(6).1, Some(3));
        assert_eq!(p.len(), 3);
        assert!(!p.is_empty());
    }

    #[test]
    fn a_bound_of_zero_still_lets_one_wait() {
        let mut p = Pending::new(0);
        assert_eq!(p.bound(), 1);
        assert_eq!(p.arrive('x').1, None);
        assert_eq!(p.arrive('y').1, Some('x'));
    }
}
