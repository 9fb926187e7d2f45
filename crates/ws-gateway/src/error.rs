//! The one error type of `ws-gateway`.

use std::time::Duration;

/// Everything that can go wrong in the gateway.
///
/// The variants about a client's input ([`Error::NotJson`] to
/// [`Error::TooLarge`]) are also what the client is told, as
/// `{"error": "<this text>"}`; the others end a session or the gateway and are
/// logged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A text message that is not JSON (or not JSON the bus can carry, such as
    /// a malformed `{"$bin": ...}` object).
    #[error("message is not valid JSON: {0}")]
    NotJson(#[source] banyan_core::Error),

    /// The first message is JSON but not an object.
    #[error("the first message must be a JSON object like {{\"id\": \"to_arduino_gateway\"}}")]
    HelloNotObject,

    /// The first message is an object without a string `id`.
    #[error(
        "the first message must have a string \"id\", like {{\"id\": \"to_arduino_gateway\"}}"
    )]
    HelloWithoutId,

    /// The first message's `id` is the empty string, which would subscribe
    /// the gateway to the whole bus.
    #[error("the \"id\" must not be empty")]
    EmptyId,

    /// A binary WebSocket frame: the protocol is JSON text.
    #[error("binary frames are not accepted: send JSON text")]
    BinaryFrame,

    /// A message over the size limit.
    #[error("message too large: {size} bytes, the limit is {limit}")]
    TooLarge {
        /// The size the client announced or sent.
        size: usize,
        /// The gateway's limit (`--max-message-size`).
        limit: usize,
    },

    /// No id message within the id timeout of connecting.
    #[error("no WebSocket handshake and id message within {0:?}")]
    HandshakeTimeout(Duration),

    /// The page broke the WebSocket protocol (RFC 6455): an unmasked frame,
    /// reserved bits or opcodes, a control frame that is fragmented or over
    /// 125 bytes, a continuation of nothing. Closed with 1002.
    #[error("the page broke the WebSocket protocol: {0}")]
    Protocol(#[source] tokio_tungstenite::tungstenite::error::ProtocolError),

    /// A text message (or a close reason) that is not UTF-8. Closed with
    /// 1007.
    #[error("a text message from the page is not valid UTF-8: {0}")]
    InvalidUtf8(String),

    /// An upgrade request while `--max-clients` pages are connected: told
    /// in the body of the HTTP 503 answer.
    #[error(
        "{0} pages are connected to this Banyan WebSocket gateway, its limit (wsgw --max-clients)"
    )]
    TooManyPages(usize),

    /// The WebSocket connection failed (handshake refused or broken, I/O).
    #[error("websocket: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),

    /// The bus connection failed.
    #[error("bus: {0}")]
    Bus(#[from] banyan_core::Error),

    /// The WebSocket server cannot listen on its address.
    #[error("cannot listen on {address}: {source}")]
    Listen {
        /// `address:port`.
        address: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },

    /// A limit of zero (`--max-clients`, `--max-pending`,
    /// `--max-message-size`), which would refuse
    /// every page or every message.
    #[error("{0} must be at least 1")]
    ZeroLimit(&'static str),

    /// A timeout of zero (`--handshake-timeout`), which no page could meet.
    #[error("{0} must be longer than zero")]
    ZeroTimeout(&'static str),

    /// A shared setting is invalid, or the gateway's bus stream ended (the
    /// gateway kit).
    #[error(transparent)]
    Kit(#[from] banyan_gateway::Error),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
