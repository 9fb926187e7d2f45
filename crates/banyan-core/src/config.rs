//! How a client reaches a backplane: addresses, ports, timeouts and bounds.

use std::time::Duration;

use crate::backplane::{
    DEFAULT_HIGH_WATER_MARK, DEFAULT_PUBLISHER_PORT, DEFAULT_QUEUE_BYTES,
    DEFAULT_SUBSCRIBER_HIGH_WATER_MARK, DEFAULT_SUBSCRIBER_PORT,
};

/// How to reach a backplane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    /// The backplane's host name or IP address.
    pub address: String,
    /// The backplane's publisher port.
    pub publisher_port: u16,
    /// The backplane's subscriber port.
    pub subscriber_port: u16,
    /// How long [`Client::connect`](crate::Client::connect) waits for the backplane to answer, and
    /// [`Client::subscribe`](crate::Client::subscribe) for its confirmation.
    pub ready_timeout: Duration,
    /// ZeroMQ queue bound, in messages, toward the backplane.
    pub high_water_mark: i32,
    /// ZeroMQ queue bound, in messages, of what the backplane sends us (see
    /// [`DEFAULT_SUBSCRIBER_HIGH_WATER_MARK`]).
    pub receive_high_water_mark: i32,
    /// Bytes each of the two ZeroMQ queues holds at most, as well as its
    /// mark in messages: both marks are lowered while large messages flow,
    /// as the backplane's are ([`BackplaneConfig::queue_bytes`](crate::BackplaneConfig::queue_bytes)).
    pub queue_bytes: u64,
    /// Bound of the queue from tasks to the I/O thread, and of the queue of
    /// received messages not yet taken from [`Messages`](crate::Messages).
    pub queue_capacity: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            address: "127.0.0.1".to_owned(),
            publisher_port: DEFAULT_PUBLISHER_PORT,
            subscriber_port: DEFAULT_SUBSCRIBER_PORT,
            ready_timeout: Duration::from_secs(10),
            high_water_mark: DEFAULT_HIGH_WATER_MARK,
            receive_high_water_mark: DEFAULT_SUBSCRIBER_HIGH_WATER_MARK,
            queue_bytes: DEFAULT_QUEUE_BYTES,
            queue_capacity: 8192,
        }
    }
}
