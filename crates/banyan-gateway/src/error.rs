//! The one error type of `banyan-gateway`.

use std::time::Duration;

/// Everything that can go wrong in the gateway kit.
///
/// The configuration variants name the flag a user sets, since that is what
/// they act on; the others end a gateway's `run`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A queue bound of zero messages.
    #[error("--queue must be at least 1 message")]
    ZeroQueue,

    /// A queue bound of zero bytes.
    #[error("--queue-bytes must be at least 1 byte")]
    ZeroQueueBytes,

    /// A duration that does not parse.
    #[error("{value:?} is not a duration: give a number of seconds, or one with a unit (250ms, 1.5s, 2m)")]
    Duration {
        /// What was given.
        value: String,
    },

    /// A reconnection range whose first wait is longer than its longest.
    #[error("--reconnect-min ({min:?}) is longer than --reconnect-max ({max:?})")]
    ReconnectRange {
        /// The first wait.
        min: Duration,
        /// The longest wait.
        max: Duration,
    },

    /// The bus stream ended under the gateway: its bus client was closed.
    #[error("the bus connection closed")]
    BusClosed,

    /// A task of the gateway panicked (a bug): the gateway stops.
    #[error("the {0} task stopped unexpectedly")]
    TaskFailed(&'static str),

    /// The bus failed.
    #[error("bus: {0}")]
    Bus(#[from] banyan_core::Error),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
