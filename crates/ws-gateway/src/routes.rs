//! The reply-topic table: which clients receive which bus topic.
//!
//! Pure bookkeeping, no I/O: [`Routes::join`] and [`Routes::leave`] say when
//! a topic gains its first client or loses its last one, which is when the
//! gateway subscribes or unsubscribes it on the bus. Decided under one lock,
//! these transitions alternate per topic, so the bus's subscription count
//! (ZeroMQ counts them) always matches "this topic has clients".

use std::collections::HashMap;

/// A client's identity in the table.
pub type ClientId = u64;

/// Reply topic → the clients waiting for it, each with a value (their
/// outgoing queue).
#[derive(Debug)]
pub struct Routes<V> {
    topics: HashMap<String, Vec<(ClientId, V)>>,
}

impl<V> Default for Routes<V> {
    fn default() -> Self {
        Routes {
            topics: HashMap::new(),
        }
    }
}

impl<V> Routes<V> {
    /// Adds a client to `topic`; `true` when it is the topic's first client
    /// (subscribe it).
    pub fn join(&mut self, topic: &str, client: ClientId, value: V) -> bool {
        match self.topics.get_mut(topic) {
            Some(clients) => {
                clients.push((client, value));
                false
            }
            None => {
                self.topics.insert(topic.to_owned(), vec![(client, value)]);
                true
            }
        }
    }

    /// Removes a client from `topic`; `true` when it was the topic's last
    /// client (unsubscribe it). Removing an absent client is `false`.
    pub fn leave(&mut self, topic: &str, client: ClientId) -> bool {
        let Some(clients) = self.topics.get_mut(topic) else {
            return false;
        };
        clients.retain(|(id, _)| *id != client);
        if clients.is_empty() {
            self.topics.remove(topic);
            return true;
        }
        false
    }

    /// The clients of a topic (exact match), empty when none.
    pub fn clients(&self, topic: &str) -> impl Iterator<Item = &V> {
        self.topics
            .get(topic)
            .into_iter()
            .flat_map(|clients| clients.iter().map(|(_, v)| v))
    }

    /// Each topic with its clients.
    pub fn topics(&self) -> impl Iterator<Item = (&str, Vec<&V>)> {
        self.topics
            .iter()
            .map(|(topic, clients)| (topic.as_str(), clients.iter().map(|(_, v)| v).collect()))
    }

    /// Every client of every topic.
    pub fn all(&self) -> impl Iterator<Item = &V> {
        self.topics.values().flatten().map(|(_, v)| v)
    }

    /// Whether any client waits for `topic`.
    pub fn has(&self, topic: &str) -> bool {
        self.topics.contains_key(topic)
    }

    /// Topics with at least one client.
    pub fn len(&self) -> usize {
        self.topics.len()
    }

    /// Whether no topic has a client.
    pub fn is_empty(&self) -> bool {
        self.topics.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_and_last_client_of_a_topic() {
        let mut r = Routes::default();
        assert!(r.join("from_a", 1, 'x'));
        assert!(!r.join("from_a", 2, 'y'));
        assert!(r.join("from_b", 3, 'z'));
        assert_eq!(r.clients("from_a").collect::<Vec<_>>(), [&'x', &'y']);
        assert!(!r.leave("from_a", 1));
        assert_eq!(r.clients("from_a").collect::<Vec<_>>(), [&'y']);
        assert!(r.leave("from_a", 2));
        assert!(!r.has("from_a"));
        assert_eq!(r.clients("from_a").count(), 0);
        assert!(r.join("from_a", 4, 'w'), "a topic emptied is new again");
        assert_eq!(r.len(), 2);
        let mut all: Vec<char> = r.all().copied().collect();
        all.sort();
        assert_eq!(all, ['w', 'z']);
    }

    #[test]
    fn leaving_twice_or_elsewhere_changes_nothing() {
        let mut r = Routes::default();
        r.join("from_a", 1, ());
        r.join("from_a", 2, ());
        assert!(!r.leave("from_b", 1));
        assert!(!r.leave("from_a", 9));
        assert!(!r.leave("from_a", 1));
        assert!(!r.leave("from_a", 1));
        assert!(r.leave("from_a", 2));
        assert!(!r.leave("from_a", 2));
        assert!(r.is_empty());
    }

    #[test]
    fn topics_match_exactly_not_by_prefix() {
        let mut r = Routes::default();
        r.join("from_a", 1, ());
        assert_eq!(r.clients("from_a_2").count(), 0);
        assert_eq!(r.clients("from_").count(), 0);
    }
}
