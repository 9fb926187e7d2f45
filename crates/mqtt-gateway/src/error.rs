//! The one error type of `mqtt-gateway`.

use std::path::PathBuf;

use crate::config::EmptyPassword;

/// Everything that can go wrong in the MQTT gateway.
///
/// Configuration and broker-refusal variants end the gateway's `run`;
/// the payload variants are reported per message (logged and counted) and the
/// gateway goes on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A bus topic, MQTT topic or prefix that is empty where one is needed.
    #[error("{what} is empty")]
    EmptyTopic {
        /// Which setting (e.g. `-e`).
        what: &'static str,
    },

    /// An MQTT topic to publish on that MQTT does not allow: a wildcard, a
    /// NUL or control character, or more than 65,535 bytes.
    #[error(
        "{what} {topic:?} is not a valid MQTT topic to publish on (no + or #, no NUL or \
         control character, at most 65,535 bytes)"
    )]
    InvalidMqttTopic {
        /// Which setting, or `bus topic` for a mapped one.
        what: &'static str,
        /// The topic.
        topic: String,
    },

    /// An MQTT subscription filter that MQTT refuses (a `#` not at the end,
    /// a `+` sharing a level with other characters, a NUL or control
    /// character, more than 65,535 bytes).
    #[error("-j {filter:?} is not a valid MQTT topic filter")]
    InvalidMqttFilter {
        /// The filter.
        filter: String,
    },

    /// Without a prefix, the bus topic for what comes from MQTT (`-e`) is one
    /// the gateway forwards to MQTT (`-g`): every MQTT message would be sent
    /// straight back to MQTT.
    #[error(
        "-e {bus_topic:?} is forwarded to MQTT by the -g topic {forwarded:?} (--match \
         {matching}): everything from MQTT would be sent back to MQTT"
    )]
    EchoLoop {
        /// The `-e` topic.
        bus_topic: String,
        /// The `-g` topic that matches it.
        forwarded: String,
        /// How it matches.
        matching: crate::routes::TopicMatch,
    },

    /// A `--max-payload` of zero, or more than an MQTT packet can carry.
    #[error("--max-payload must be between 1 and {max} bytes, not {value}")]
    MaxPayload {
        /// The value given.
        value: usize,
        /// The largest allowed.
        max: usize,
    },

    /// A keepalive of less than a second (other than 0, which disables it).
    #[error("a keepalive must be 0 (off) or at least 1 second")]
    KeepAlive,

    /// The CA file could not be read.
    #[error("cannot read the CA file {path}: {source}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },

    /// The CA file holds no usable PEM certificate.
    #[error("the CA file {path} holds no PEM certificate that can be used: {reason}")]
    NoCertificates {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },

    /// No system root certificate could be loaded for `--tls`.
    #[error("no system root certificate could be loaded for TLS; give --ca-file")]
    NoSystemRoots,

    /// rustls refused the TLS settings.
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),

    /// The broker refused our credentials or our right to connect; retrying
    /// would not help.
    #[error(
        "the MQTT broker at {broker} refused the connection: {reason}{}",
        empty_password.as_ref().map(|why| format!("; {why}")).unwrap_or_default()
    )]
    Refused {
        /// `address:port`.
        broker: String,
        /// What the broker answered.
        reason: &'static str,
        /// When the broker refused the credentials and the password was
        /// empty because of its environment variable: which variable, and
        /// why (never the password).
        empty_password: Option<EmptyPassword>,
    },

    /// A bus payload that JSON cannot carry (a composite map key, ...), or
    /// that is not MessagePack.
    #[error("the bus payload cannot be sent as JSON: {0}")]
    NotJsonable(#[source] banyan_core::Error),

    /// An MQTT payload that is not UTF-8.
    #[error("the MQTT payload is not UTF-8 text")]
    NotUtf8,

    /// An MQTT payload that is not one JSON value.
    #[error("the MQTT payload is not JSON: {0}")]
    NotJson(#[source] banyan_core::Error),

    /// An MQTT payload that is not one MessagePack value (with `--format msgpack`).
    #[error("the MQTT payload is not one MessagePack value: {0}")]
    NotMessagePack(#[source] banyan_core::Error),

    /// A payload larger than `--max-payload` (or than an MQTT packet can
    /// carry with its topic): it is refused, and the gateway goes on.
    #[error("the payload of {size} bytes is over the limit of {limit} bytes (--max-payload)")]
    TooLarge {
        /// The payload size.
        size: usize,
        /// The limit.
        limit: usize,
    },

    /// An MQTT message whose topic is outside the prefix (prefix mapping).
    #[error("MQTT topic {0:?} is not under the prefix")]
    OutsidePrefix(String),

    /// An MQTT message that maps to a bus topic the gateway itself forwards
    /// to MQTT: publishing it would echo it back forever.
    #[error("MQTT topic {mqtt_topic:?} maps to bus topic {bus_topic:?}, which goes back to MQTT")]
    WouldLoop {
        /// The MQTT topic.
        mqtt_topic: String,
        /// The bus topic it maps to.
        bus_topic: String,
    },

    /// A shared setting is invalid, or the gateway's bus stream ended (the
    /// gateway kit).
    #[error(transparent)]
    Kit(#[from] banyan_gateway::Error),

    /// The bus failed.
    #[error("bus: {0}")]
    Bus(#[from] banyan_core::Error),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
