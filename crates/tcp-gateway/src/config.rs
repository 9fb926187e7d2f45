//! What the gateway is told to do: a configuration with python-banyan's
//! defaults, validated by [`crate::Gateway::new`].

use std::time::Duration;

use banyan_gateway::{QueuePolicy, Reconnect};

use crate::framing::{Framing, PrefixWidth};
pub use banyan_gateway::topics::{TopicMatch, UnknownTopicMatch};

/// python-banyan's default TCP port of the device.
pub const DEFAULT_PORT: u16 = 31335;
/// python-banyan's default bus topic forwarded to the device.
pub const DEFAULT_TOPIC: &str = "figura";
/// python-banyan's default bus topic for what the device sends.
pub const DEFAULT_PUBLISH_TOPIC: &str = "from_pico";
/// python-banyan's default name in the banner.
pub const DEFAULT_NAME: &str = "TcpGateway";
/// Default of [`Config::queue`]: 1,000 messages, 8 MiB.
pub const DEFAULT_QUEUE: QueuePolicy = QueuePolicy::new(1000, 8 << 20);
/// Default of [`Config::max_payload`]: 1 MiB.
pub const DEFAULT_MAX_PAYLOAD: usize = 1 << 20;
/// Default of [`Config::keepalive`]: 30 s.
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(30);

/// The configuration of one gateway.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The device's (TCP server's) host name or address (`-a`).
    pub server: String,
    /// The device's TCP port (`-n`).
    pub port: u16,
    /// Bus topics forwarded to the device (`-g`); at least one. Matched by
    /// [`Config::matching`].
    pub topics: Vec<String>,
    /// How bus topics are matched against [`Config::topics`] (`--match`): as
    /// prefixes by default, as python-banyan's `tgw` forwards everything its
    /// ZeroMQ subscriptions deliver.
    pub matching: TopicMatch,
    /// Bus topic on which what the device sends is published (`-e`).
    pub publish_topic: String,
    /// Width of the length prefix in both directions (`--prefix`).
    pub prefix: PrefixWidth,
    /// Largest payload accepted from the device or sent to it, also bounded
    /// by what the prefix can express (`--max-payload`). A device announcing
    /// more is disconnected: its stream cannot be resynchronised.
    pub max_payload: usize,
    /// The queue toward the device (`--queue`, `--queue-bytes`,
    /// `--stall-grace`): while the device is connected and reading, a full
    /// queue holds the bus back; while it is away or stalled, the oldest
    /// message is dropped (see [`banyan_gateway::outbox`]).
    pub queue: QueuePolicy,
    /// Waits between connection attempts (`--reconnect-min`,
    /// `--reconnect-max`).
    pub reconnect: Reconnect,
    /// When set, a device that sends no complete frame for this long, or
    /// whose connection accepts no written byte for this long, counts as
    /// gone: the gateway disconnects and reconnects (`--idle-timeout`). Off
    /// by default, since a device may only listen.
    pub idle_timeout: Option<Duration>,
    /// TCP keepalive idle time: the OS probes a quiet connection after this
    /// long and drops it when the device does not answer (a device that lost
    /// power). `None` turns keepalive off (`--keepalive 0`).
    pub keepalive: Option<Duration>,
    /// Check that each frame from the device is one valid MessagePack value
    /// before publishing it; an invalid one is logged and not published
    /// (`--validate`). Off by default (python-banyan passes bytes through).
    pub validate: bool,
    /// How long one connection attempt may take.
    pub connect_timeout: Duration,
    /// At shutdown, how long queued messages may take to reach the device
    /// before the connection is closed.
    pub flush_timeout: Duration,
}

impl Config {
    /// The framing this configuration selects.
    pub fn framing(&self) -> Framing {
        Framing::new(self.prefix, self.max_payload)
    }

    /// `host:port` of the device, for connecting and for the log.
    pub fn server_address(&self) -> String {
        if self.server.contains(':') && !self.server.starts_with('[') {
            format!("[{}]:{}", self.server, self.port)
        } else {
            format!("{}:{}", self.server, self.port)
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server: "127.0.0.1".to_owned(),
            port: DEFAULT_PORT,
            topics: vec![DEFAULT_TOPIC.to_owned()],
            matching: TopicMatch::Prefix,
            publish_topic: DEFAULT_PUBLISH_TOPIC.to_owned(),
            prefix: PrefixWidth::One,
            max_payload: DEFAULT_MAX_PAYLOAD,
            queue: DEFAULT_QUEUE,
            reconnect: Reconnect::default(),
            idle_timeout: None,
            keepalive: Some(DEFAULT_KEEPALIVE),
            validate: false,
            connect_timeout: Duration::from_secs(5),
            flush_timeout: Duration::from_secs(1),
        }
    }
}

impl Config {
    /// Whether a bus message on `topic` goes to the device.
    pub fn forwards(&self, topic: &str) -> bool {
        self.topics
            .iter()
            .any(|wanted| self.matching.matches(wanted, topic))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_pythons() {
        let config = Config::default();
        assert_eq!(config.port, 31335);
        assert_eq!(config.topics, vec!["figura"]);
        assert_eq!(config.publish_topic, "from_pico");
        assert_eq!(config.framing().max_payload(), 255);
        assert!(!config.validate);
        assert_eq!(config.matching, TopicMatch::Prefix);
    }

    #[test]
    fn prefix_matching_is_pythons_and_exact_is_the_opt_in() {
        let mut config = Config {
            topics: vec!["figura".into(), "to_pico".into()],
            ..Config::default()
        };
        for (topic, prefix, exact) in [
            ("figura", true, true),
            ("figura_2", true, false),
            ("to_pico", true, true),
            ("to_picow", true, false),
            ("figur", false, false),
            ("other", false, false),
        ] {
            config.matching = TopicMatch::Prefix;
            assert_eq!(config.forwards(topic), prefix, "prefix: {topic}");
            config.matching = TopicMatch::Exact;
            assert_eq!(config.forwards(topic), exact, "exact: {topic}");
        }
        assert_eq!("exact".parse(), Ok(TopicMatch::Exact));
        assert_eq!("prefix".parse(), Ok(TopicMatch::Prefix));
        assert!("both".parse::<TopicMatch>().is_err());
        assert_eq!(TopicMatch::Exact.to_string(), "exact");
    }

    #[test]
    fn ipv6_addresses_get_brackets() {
        let config = Config {
            server: "::1".into(),
            port: 7,
            ..Config::default()
        };
        assert_eq!(config.server_address(), "[::1]:7");
    }
}
