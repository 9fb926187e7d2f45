//! Topic prefixes: what the bus subscribes to, and the client's probe topics.
//!
//! Pure bookkeeping, no I/O.

use std::collections::BTreeSet;
use std::ops::Bound;

/// The marker that starts every topic the bus uses for itself: the clients'
/// probes and the backplanes' handover requests ([`crate::handover`]).
const CONTROL_PREFIX: &[u8] = b"\x01banyan-";

/// The marker that starts every probe topic. A control character keeps it
/// out of the way of any topic a person would choose; nothing is ever
/// published on a probe topic.
const PROBE_PREFIX: &[u8] = b"\x01banyan-probe/";

/// The probe topic number `seq` of the client named `base`.
pub(crate) fn probe_topic(base: &str, seq: u64) -> Vec<u8> {
    let mut topic = PROBE_PREFIX.to_vec();
    topic.extend_from_slice(format!("{base}/{seq}").as_bytes());
    topic
}

/// Whether a topic is one the bus uses for itself; messages on such topics
/// are never handed to a [`Messages`](crate::Messages) stream.
pub(crate) fn is_control(topic: &[u8]) -> bool {
    topic.starts_with(CONTROL_PREFIX)
}

/// Whether a subscription is one of the clients' probes.
pub(crate) fn is_probe(topic: &[u8]) -> bool {
    topic.starts_with(PROBE_PREFIX)
}

/// The set of topic prefixes somebody on the bus subscribes to, as seen by a
/// publisher: ZeroMQ forwards each prefix's first subscription and its last
/// unsubscription, so a count per prefix is not needed.
#[derive(Debug, Default)]
pub(crate) struct Upstream {
    prefixes: BTreeSet<Vec<u8>>,
}

impl Upstream {
    pub(crate) fn insert(&mut self, prefix: &[u8]) {
        self.prefixes.insert(prefix.to_vec());
    }

    pub(crate) fn remove(&mut self, prefix: &[u8]) {
        self.prefixes.remove(prefix);
    }

    /// Whether a message on `topic` has a subscriber.
    pub(crate) fn matches(&self, topic: &[u8]) -> bool {
        // Every prefix of `topic` sorts at or before it; walk back from it.
        self.prefixes
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(topic)))
            .rev()
            .any(|prefix| topic.starts_with(prefix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_matching() {
        let mut up = Upstream::default();
        assert!(!up.matches(b"to_mqtt"));
        up.insert(b"to");
        assert!(up.matches(b"to_mqtt"));
        assert!(up.matches(b"to"));
        assert!(!up.matches(b"t"));
        assert!(!up.matches(b"from_x"));
        up.remove(b"to");
        assert!(!up.matches(b"to_mqtt"));
        up.insert(b"");
        assert!(up.matches(b"anything"));
        assert!(up.matches(b""));
    }

    #[test]
    fn probes_are_recognised_and_distinct() {
        let a = probe_topic("12-0-5", 1);
        let b = probe_topic("12-0-5", 2);
        assert_ne!(a, b);
        assert!(is_probe(&a));
        assert!(is_control(&a));
        assert!(is_control(&crate::handover::request_topic(1, 2)));
        assert!(!is_control(b"to_banyan"));
        assert!(!is_probe(b"to_banyan"));
        assert!(!is_probe(b""));
    }
}
