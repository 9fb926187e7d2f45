//! What the gateway is told to do: a validated configuration with
//! python-banyan's defaults.

use std::time::Duration;

use crate::framing::{Framing, PrefixWidth};

/// python-banyan's default TCP port of the device.
pub const DEFAULT_PORT: u16 = 31335;
/// python-banyan's default bus topic forwarded to the device.
pub const DEFAULT_TOPIC: &str = "figura";
/// python-banyan's default bus topic for what the device sends.
pub const DEFAULT_PUBLISH_TOPIC: &str = "from_pico";
/// python-banyan's default name in the banner.
pub const DEFAULT_NAME: &str = "TcpGateway";

/// The configuration of one gateway.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The device's (TCP server's) host name or address (`-a`).
    pub server: String,
    /// The device's TCP port (`-n`).
    pub port: u16,
    /// Bus topic prefixes forwarded to the device (`-g`). The client must be
    /// subscribed to them (see [`crate::subscribe`]).
    pub topics: Vec<String>,
    /// Bus topic on which what the device sends is published (`-e`).
    pub publish_topic: String,
    /// Width of the length prefix in both directions.
    pub prefix: PrefixWidth,
    /// Largest payload accepted from the device or sent to it, also bounded
    /// by what the prefix can express. A device announcing more is
    /// disconnected: its stream cannot be resynchronised.
    pub max_payload: usize,
    /// Bound of the queue of bus messages waiting for the device. When full
    /// while the device is away or stalled, the oldest is dropped; while it
    /// is connected and reading, the gateway takes nothing more from the bus
    /// until there is room (see [`crate::Outbox`]).
    pub queue_capacity: usize,
    /// How long a connected device whose queue is full may take no byte
    /// before it counts as stalled: the gateway then takes from the bus
    /// again and drops the oldest queued messages until the device has
    /// drained its queue. Until then the bus holds its messages back
    /// (publishers wait, nothing is lost).
    pub slow_device_grace: Duration,
    /// When set, a device that sends no complete frame for this long, or
    /// whose connection accepts no written byte for this long, counts as
    /// gone: the gateway disconnects and reconnects. Off by default, since a
    /// device may only listen.
    pub idle_timeout: Option<Duration>,
    /// TCP keepalive idle time: the OS probes a quiet connection after this
    /// long and drops it when the device does not answer (a device that lost
    /// power). `None` turns keepalive off.
    pub keepalive: Option<Duration>,
    /// Check that each frame from the device is one valid MessagePack value
    /// before publishing it; an invalid one is logged and not published.
    /// Off by default (python-banyan passes bytes through).
    pub validate: bool,
    /// The first delay before reconnecting; it doubles on each failure.
    pub retry_initial: Duration,
    /// The longest delay between connection attempts.
    pub retry_max: Duration,
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
            publish_topic: DEFAULT_PUBLISH_TOPIC.to_owned(),
            prefix: PrefixWidth::One,
            max_payload: 1 << 20,
            queue_capacity: 1000,
            // Longer than a TCP retransmission timeout (200 ms at least on
            // Linux), so one lost segment on a Wi-Fi link is no stall.
            slow_device_grace: Duration::from_secs(1),
            idle_timeout: None,
            keepalive: Some(Duration::from_secs(30)),
            validate: false,
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            flush_timeout: Duration::from_secs(1),
        }
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
