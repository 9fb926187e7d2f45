//! How a gateway matches a bus message's topic against the topics it was
//! told to forward (`-g`): exactly, or by prefix.
//!
//! The ZeroMQ subscription beneath is always a prefix (`-g figura` also
//! delivers `figura_2`); python-banyan's gateways differ in what they then
//! forward: `tgw` forwards all it is delivered, `mgw` only a topic equal to
//! `to_mqtt`, the WebSocket gateway only a page's exact reply topic. Each
//! gateway defaults to its python original; `--match` switches.
//! `docs/topics.md` has the rule of every gateway.

use std::fmt;
use std::str::FromStr;

/// How a bus message's topic is matched against a forwarded topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TopicMatch {
    /// Forwarded when the topic equals a forwarded topic.
    Exact,
    /// Forwarded when the topic starts with a forwarded topic, as the
    /// ZeroMQ subscription delivers it.
    Prefix,
}

impl TopicMatch {
    /// Whether a bus message on `topic` is forwarded for the forwarded
    /// topic `wanted`.
    pub fn matches(self, wanted: &str, topic: &str) -> bool {
        match self {
            TopicMatch::Exact => topic == wanted,
            TopicMatch::Prefix => topic.starts_with(wanted),
        }
    }
}

impl fmt::Display for TopicMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TopicMatch::Exact => "exact",
            TopicMatch::Prefix => "prefix",
        })
    }
}

/// A `--match` value that is neither `exact` nor `prefix`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("--match takes exact or prefix, not {0:?}")]
pub struct UnknownTopicMatch(pub String);

impl FromStr for TopicMatch {
    type Err = UnknownTopicMatch;

    fn from_str(s: &str) -> Result<Self, UnknownTopicMatch> {
        match s.trim() {
            "exact" => Ok(TopicMatch::Exact),
            "prefix" => Ok(TopicMatch::Prefix),
            other => Err(UnknownTopicMatch(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_prefix() {
        assert!(TopicMatch::Exact.matches("to_mqtt", "to_mqtt"));
        assert!(!TopicMatch::Exact.matches("to_mqtt", "to_mqtt_other"));
        assert!(TopicMatch::Prefix.matches("to_mqtt", "to_mqtt_other"));
        assert!(!TopicMatch::Prefix.matches("to_mqtt", "to_mq"));
        assert_eq!("exact".parse(), Ok(TopicMatch::Exact));
        assert_eq!(" prefix ".parse(), Ok(TopicMatch::Prefix));
        assert!("both".parse::<TopicMatch>().is_err());
        assert_eq!(TopicMatch::Exact.to_string(), "exact");
    }
}
