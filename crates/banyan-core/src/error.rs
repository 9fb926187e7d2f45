//! The one error type of `banyan-core`.

use std::time::Duration;

/// Everything that can go wrong in `banyan-core`.
///
/// Variants name their cause so that a caller can match on them; only the
/// executables turn an `Error` into a message and an exit code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A ZeroMQ message that is not the two frames (topic, payload) of a
    /// Banyan message.
    #[error("a Banyan message has 2 frames (topic, payload); this one has {0}")]
    FrameCount(usize),

    /// The topic frame is not UTF-8 text.
    #[error("the topic frame is not UTF-8")]
    TopicNotUtf8,

    /// The payload nests deeper than [`MAX_DEPTH`](crate::envelope::MAX_DEPTH).
    #[error("the payload cannot be decoded: {0}")]
    Decode(#[source] rmpv::decode::Error),

    /// The payload frame is not one well-formed MessagePack value.
    #[error("the payload is not valid MessagePack: {reason} at byte {offset}")]
    Malformed {
        /// Where the problem was found.
        offset: usize,
        /// What it is.
        reason: &'static str,
    },

    /// The payload frame holds more than one MessagePack value.
    #[error("the payload has {0} bytes after its MessagePack value")]
    TrailingBytes(usize),

    /// A JSON text that python's `json.loads` would refuse (or that nests
    /// deeper than [`MAX_DEPTH`](crate::envelope::MAX_DEPTH), or holds a lone
    /// surrogate), placed and worded as python does.
    #[error("invalid JSON: {reason}: line {line} column {column} (char {offset})")]
    JsonSyntax {
        /// What is wrong, in python's words (`Expecting value`).
        reason: &'static str,
        /// The line, from 1.
        line: usize,
        /// The column in characters, from 1.
        column: usize,
        /// The offset in characters, from 0.
        offset: usize,
    },

    /// A float that strict JSON cannot represent (NaN or an infinity), from
    /// [`to_json_strict`](crate::json::to_json_strict).
    #[error("{path}: {value} is not standard JSON")]
    NonFiniteFloat {
        /// Where in the value, e.g. `$.reading[2]`.
        path: String,
        /// `NaN`, `Infinity` or `-Infinity`.
        value: String,
    },

    /// A map key that cannot become a JSON object key.
    #[error("{path}: a map key of type {kind} cannot be a JSON object key")]
    UnsupportedKey {
        /// Where in the value.
        path: String,
        /// The MessagePack type of the key (`array`, `map`, `ext`, or
        /// `bin` that is not UTF-8).
        kind: &'static str,
    },

    /// A MessagePack `str` whose bytes are not UTF-8.
    #[error("{path}: a MessagePack str that is not UTF-8")]
    InvalidUtf8 {
        /// Where in the value.
        path: String,
    },

    /// A `{"$bin": ...}` or `{"$ext": ...}` object whose content is malformed.
    #[error("{path}: malformed {tag} object: {reason}")]
    BadTag {
        /// Where in the value.
        path: String,
        /// `$bin` or `$ext`.
        tag: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// A monitor format name other than `python` and `json`.
    #[error("unknown monitor format {0:?} (python or json)")]
    UnknownMonitorFormat(String),

    /// A ZeroMQ socket could not bind an endpoint.
    #[error("cannot listen on {endpoint}: {source}")]
    Bind {
        /// The endpoint, e.g. `tcp://0.0.0.0:43124`.
        endpoint: String,
        /// What ZeroMQ said.
        #[source]
        source: zmq::Error,
    },

    /// A ZeroMQ socket could not start connecting to an endpoint (a malformed
    /// address, usually; an absent peer is [`Error::BackplaneUnreachable`]).
    #[error("cannot connect to {endpoint}: {source}")]
    Connect {
        /// The endpoint.
        endpoint: String,
        /// What ZeroMQ said.
        #[source]
        source: zmq::Error,
    },

    /// No backplane answered within the readiness timeout.
    #[error(
        "no backplane answered at {address} (publisher port {publisher_port}, \
         subscriber port {subscriber_port}) within {timeout:?}"
    )]
    BackplaneUnreachable {
        /// The backplane address tried.
        address: String,
        /// Its publisher port.
        publisher_port: u16,
        /// Its subscriber port.
        subscriber_port: u16,
        /// How long we waited.
        timeout: Duration,
    },

    /// The backplane ports are held on this machine, but nothing answers on
    /// 127.0.0.1: a backplane bound to a LAN address only (as python-banyan's
    /// is) or another program.
    #[error(
        "ports {publisher_port}/{subscriber_port} are in use but nothing answers on 127.0.0.1; \
         a backplane may be listening on a LAN address only (python-banyan's backplane does): \
         pass -b ADDRESS"
    )]
    PortsTakenElsewhere {
        /// The publisher port.
        publisher_port: u16,
        /// The subscriber port.
        subscriber_port: u16,
    },

    /// The ports are held by a backplane started on purpose, which keeps
    /// them (only an on-demand backplane hands its ports over).
    #[error(
        "a backplane is already running on ports {publisher_port}/{subscriber_port} \
         (process {pid}, {name}); this one exits"
    )]
    BackplaneRunning {
        /// Its process id.
        pid: u32,
        /// Its process's name.
        name: String,
        /// The publisher port.
        publisher_port: u16,
        /// The subscriber port.
        subscriber_port: u16,
    },

    /// The `backplane` executable started on demand did not start listening.
    #[error("cannot start the backplane {path:?}: {reason}")]
    BackplaneStart {
        /// The executable.
        path: std::path::PathBuf,
        /// What went wrong.
        reason: String,
    },

    /// The backplane did not confirm a subscription within the timeout.
    #[error("the backplane did not confirm the subscription to {topic:?} within {timeout:?}")]
    SubscriptionUnconfirmed {
        /// The topic prefix subscribed.
        topic: String,
        /// How long we waited.
        timeout: Duration,
    },

    /// The client's queue toward the backplane is full (from `try_` methods).
    #[error("the publish queue is full")]
    Full,

    /// The client has been closed, or its I/O thread has stopped.
    #[error("the bus client is closed")]
    Closed,

    /// Any other ZeroMQ failure.
    #[error("zeromq: {0}")]
    Zmq(#[from] zmq::Error),

    /// An operating-system I/O failure.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// Whether this is a bind that failed because the port is taken.
    pub fn is_address_in_use(&self) -> bool {
        matches!(self, Error::Bind { source, .. } if *source == zmq::Error::EADDRINUSE)
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
