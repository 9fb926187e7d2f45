//! The one error type of the bench.

use std::path::PathBuf;

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An executable the bench starts is not beside the bench's own.
    #[error("{0} not found: build the executables with `cargo build --release --features bench`")]
    MissingExecutable(PathBuf),
    /// A process could not be started.
    #[error("cannot start {name}: {source}")]
    Spawn {
        /// What was started.
        name: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// A process did not print what it should have in time.
    #[error("{name} did not report {what} within {seconds} s; its output:\n{output}")]
    Timeout {
        /// The process.
        name: String,
        /// What was awaited.
        what: String,
        /// The deadline.
        seconds: u64,
        /// What it printed.
        output: String,
    },
    /// A process ended before reporting.
    #[error("{name} ended before reporting {what}; its output:\n{output}")]
    Ended {
        /// The process.
        name: String,
        /// What was awaited.
        what: String,
        /// What it printed.
        output: String,
    },
    /// A worker's description or report is not what the bench expects.
    #[error("malformed worker message: {0}")]
    Protocol(String),
    /// JSON (de)serialisation failed.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// An I/O error.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// A ZeroMQ error.
    #[error("ZeroMQ: {0}")]
    Zmq(#[from] zmq::Error),
    /// A bus error.
    #[error("bus: {0}")]
    Bus(#[from] banyan_core::Error),
    /// A WebSocket error.
    #[error("WebSocket: {0}")]
    WebSocket(#[from] Box<tokio_tungstenite::tungstenite::Error>),
    /// An MQTT client error.
    #[error("MQTT: {0}")]
    Mqtt(String),
    /// An option is out of range.
    #[error("invalid option: {0}")]
    Invalid(String),
}

/// The bench's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
