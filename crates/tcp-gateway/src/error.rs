//! The one error type of `tcp-gateway`.

/// Everything that can go wrong in the TCP gateway.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A bus message too large for the chosen length prefix; it is not sent.
    #[error("a {size}-byte payload does not fit the frame limit of {max} bytes")]
    FrameTooLarge {
        /// The payload size.
        size: usize,
        /// The largest payload the framing carries.
        max: usize,
    },

    /// A prefix width other than 1, 2 or 4.
    #[error("the length prefix is 1, 2 or 4 bytes, not {0:?}")]
    PrefixWidth(String),

    /// `--max-payload 0`: no frame could pass either way.
    #[error("--max-payload must be at least 1 byte")]
    ZeroMaxPayload,

    /// The configuration names no bus topic to forward to the device.
    #[error("no bus topic to forward to the device (-g)")]
    NoTopics,

    /// A shared setting is invalid, or the gateway's bus stream ended (the
    /// gateway kit).
    #[error(transparent)]
    Kit(#[from] banyan_gateway::Error),

    /// The bus (banyan-core) failed.
    #[error("bus: {0}")]
    Bus(#[from] banyan_core::Error),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
