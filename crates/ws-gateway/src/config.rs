//! What the gateway can be told: where it listens, limits, origins, held
//! topics.

use std::time::Duration;

use banyan_gateway::QueuePolicy;

/// The gateway's settings. `Config::default()` is what `wsgw` uses without
/// flags; [`crate::Gateway::new`] validates them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The address the WebSocket server listens on (`-a`; default
    /// 127.0.0.1: this machine only).
    pub address: String,
    /// Its port (`-w`; default 9000, python's). 0 picks a free port.
    pub port: u16,
    /// Origins accepted besides this machine's (none, `null`, and
    /// `http(s)://localhost`, `127.0.0.1` or `[::1]` on any port) and the
    /// known editors ([`crate::origin::KNOWN_EDITORS`]), exactly as a browser
    /// sends them, e.g. `https://example.org:8443`. `*` accepts any origin,
    /// which lets every web site the user visits drive the bus.
    pub allowed_origins: Vec<String>,
    /// Whether the known OneGPIO editors' origins
    /// ([`crate::origin::KNOWN_EDITORS`]: the Scratch 3 OneGPIO editor) are
    /// accepted (`--no-default-origins` turns this off).
    pub known_editors: bool,
    /// Largest WebSocket message (and frame) accepted from a client, in
    /// bytes. Larger ones close the connection: memory per client stays
    /// bounded.
    pub max_message_size: usize,
    /// The queue of messages waiting to be written to one page
    /// (`--queue`, `--queue-bytes`, `--stall-grace`). When a page's queue is
    /// full the gateway stops taking messages from the bus (which then holds
    /// back its publishers) for up to the stall grace; a page that makes no
    /// room within it is stalled, and loses its oldest messages (counted)
    /// rather than delaying the others again, until it catches up.
    pub queue: QueuePolicy,
    /// Pages connected at once (upgraded connections, with or without their
    /// id yet). An upgrade request beyond it is answered with HTTP 503.
    pub max_clients: usize,
    /// Connections that may wait at once for their WebSocket upgrade,
    /// apart from the pages. When one more arrives, the one that has
    /// waited longest is closed ([`crate::pending`]), so idle sockets cannot
    /// lock pages out.
    pub max_pending: usize,
    /// Time a new connection has for its upgrade request: a browser sends it
    /// at once, so this is short.
    pub handshake_timeout: Duration,
    /// Time a new connection has, from connecting, for its id message.
    pub id_timeout: Duration,
    /// Time a client has at shutdown to take its close frame.
    pub close_timeout: Duration,
    /// Topics subscribed for the gateway's whole life (`-m`), on top of the
    /// reply topics subscribed while clients use them.
    pub held_topics: Vec<String>,
}

/// Default of [`Config::port`]: python's 9000.
pub const DEFAULT_PORT: u16 = 9000;
/// Default of [`Config::max_message_size`]: 64 KiB, far above any OneGPIO
/// command.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 * 1024;
/// Default of [`Config::queue`]: 256 messages and 4 MiB per page, with a
/// stall grace of 1 s. A page that reads makes room as the kernel reports
/// its socket writable again, which over loopback comes in steps of 64 KiB
/// (the MTU): a page sharing a burst with a hundred others can take a few
/// hundred milliseconds per step on a busy machine.
pub const DEFAULT_QUEUE: QueuePolicy = QueuePolicy::new(256, 4 << 20);
/// Default of [`Config::max_clients`]: far more pages than one computer's
/// browser opens, and with the other sockets a process needs, below 1,024
/// file descriptors, the usual `ulimit -n`.
pub const DEFAULT_MAX_CLIENTS: usize = 256;
/// Default of [`Config::max_pending`].
pub const DEFAULT_MAX_PENDING: usize = 64;
/// Default of [`Config::handshake_timeout`].
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);

impl Default for Config {
    fn default() -> Self {
        Config {
            address: "127.0.0.1".to_owned(),
            port: DEFAULT_PORT,
            allowed_origins: Vec::new(),
            known_editors: true,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            queue: DEFAULT_QUEUE,
            max_clients: DEFAULT_MAX_CLIENTS,
            max_pending: DEFAULT_MAX_PENDING,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            id_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(1),
            held_topics: Vec::new(),
        }
    }
}
