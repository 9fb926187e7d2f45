//! The backplane: the ZeroMQ forwarder every component connects to.
//!
//! An XSUB socket bound on the publisher port (43124) receives what every
//! component publishes; an XPUB socket bound on the subscriber port (43125)
//! hands each message to the components whose subscriptions match. This is
//! wire-compatible with python-banyan's SUB/PUB forwarder, and it also carries
//! subscriptions upstream, so publishers drop at source what nobody wants and
//! a [`Client`](crate::Client) can tell when the bus knows its subscriptions.
//!
//! The forwarding loop runs on its own thread (`banyan-backplane`), because
//! libzmq sockets belong to one thread. It counts what it forwards and what it
//! could not hand to a subscriber whose queue was full (see
//! [`BackplaneStats::dropped`] and `docs/architecture.md`).

use std::net::Ipv6Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::wake::Wake;
use crate::zmq_ext::set_xpub_nodrop;

/// The port components publish to (the backplane's XSUB side).
pub const DEFAULT_PUBLISHER_PORT: u16 = 43124;
/// The port components subscribe from (the backplane's XPUB side).
pub const DEFAULT_SUBSCRIBER_PORT: u16 = 43125;
/// Messages queued per peer and direction before ZeroMQ's high-water mark
/// applies (ZeroMQ's own default is 1,000, which loses messages under the
/// reference benchmark). Each queued message costs about 64 bytes plus its
/// payload beyond 33 bytes.
pub const DEFAULT_HIGH_WATER_MARK: i32 = 200_000;

/// How long closing sockets may still flush queued messages.
const LINGER_MS: i32 = 500;
/// Messages moved per poll wake-up before the other direction gets a turn.
const BATCH: usize = 4096;
/// Drops are logged at most this often.
const DROP_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// How to run a backplane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackplaneConfig {
    /// The address both ports listen on. `0.0.0.0` (the default) is every
    /// interface, so components on other machines of the LAN can connect, as
    /// with python-banyan's backplane; `127.0.0.1` keeps the bus on this
    /// machine.
    pub bind_address: String,
    /// The publisher port (components' PUB sockets connect here); 0 picks a
    /// free port.
    pub publisher_port: u16,
    /// The subscriber port (components' SUB sockets connect here); 0 picks a
    /// free port.
    pub subscriber_port: u16,
    /// Per-peer queue bound, in messages, on both sockets.
    pub high_water_mark: i32,
}

impl Default for BackplaneConfig {
    fn default() -> Self {
        BackplaneConfig {
            bind_address: "0.0.0.0".to_owned(),
            publisher_port: DEFAULT_PUBLISHER_PORT,
            subscriber_port: DEFAULT_SUBSCRIBER_PORT,
            high_water_mark: DEFAULT_HIGH_WATER_MARK,
        }
    }
}

/// Counters a running backplane reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackplaneStats {
    /// Messages received from publishers and forwarded.
    pub forwarded: u64,
    /// Messages that at least one subscriber did not get because its queue
    /// was full (it was slower than the publishers for longer than the
    /// queues hold). Every other subscriber got them.
    pub dropped: u64,
    /// Distinct topic prefixes subscribed at the moment.
    pub topics: u64,
}

#[derive(Default)]
struct Counters {
    forwarded: AtomicU64,
    dropped: AtomicU64,
    topics: AtomicU64,
}

/// A running backplane. Dropping it stops it (as [`Backplane::shutdown`]).
pub struct Backplane {
    thread: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    wake: Arc<Wake>,
    counters: Arc<Counters>,
    bind_address: String,
    publisher_port: u16,
    subscriber_port: u16,
}

impl std::fmt::Debug for Backplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backplane")
            .field("bind_address", &self.bind_address)
            .field("publisher_port", &self.publisher_port)
            .field("subscriber_port", &self.subscriber_port)
            .finish()
    }
}

impl Backplane {
    /// Binds both ports and starts forwarding on a thread of its own.
    ///
    /// Returns once both ports listen, so components may connect at once.
    pub fn bind(config: &BackplaneConfig) -> Result<Backplane> {
        let context = zmq::Context::new();
        let ipv6 = config.bind_address.parse::<Ipv6Addr>().is_ok();
        let xsub = context.socket(zmq::XSUB)?;
        let mut xpub = context.socket(zmq::XPUB)?;
        for socket in [&xsub, &xpub] {
            socket.set_linger(LINGER_MS)?;
            socket.set_ipv6(ipv6)?;
            socket.set_rcvhwm(config.high_water_mark)?;
            socket.set_sndhwm(config.high_water_mark)?;
        }
        set_xpub_nodrop(&mut xpub, true)?;
        let publisher_port = bind(&xsub, &config.bind_address, config.publisher_port)?;
        let subscriber_port = bind(&xpub, &config.bind_address, config.subscriber_port)?;

        let wake = Arc::new(Wake::new()?);
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let thread = std::thread::Builder::new()
            .name("banyan-backplane".to_owned())
            .spawn({
                let (wake, stop, counters) = (wake.clone(), stop.clone(), counters.clone());
                move || {
                    let mut forwarder = Forwarder {
                        xsub,
                        xpub,
                        counters,
                        frames: Vec::with_capacity(4),
                        unlogged_drops: 0,
                        last_drop_log: None,
                    };
                    forwarder.run(&wake, &stop);
                    // Sockets close before the context, which then waits at most
                    // LINGER_MS for queued messages to leave.
                    drop(forwarder);
                    drop(context);
                }
            })?;
        tracing::debug!(publisher_port, subscriber_port, "backplane listening");
        Ok(Backplane {
            thread: Some(thread),
            stop,
            wake,
            counters,
            bind_address: config.bind_address.clone(),
            publisher_port,
            subscriber_port,
        })
    }

    /// The address the ports listen on.
    pub fn bind_address(&self) -> &str {
        &self.bind_address
    }

    /// The publisher port actually bound (useful when 0 was asked).
    pub fn publisher_port(&self) -> u16 {
        self.publisher_port
    }

    /// The subscriber port actually bound (useful when 0 was asked).
    pub fn subscriber_port(&self) -> u16 {
        self.subscriber_port
    }

    /// The counters so far.
    pub fn stats(&self) -> BackplaneStats {
        BackplaneStats {
            forwarded: self.counters.forwarded.load(Ordering::Relaxed),
            dropped: self.counters.dropped.load(Ordering::Relaxed),
            topics: self.counters.topics.load(Ordering::Relaxed),
        }
    }

    /// Stops forwarding, closes both ports and returns the final counters.
    ///
    /// Blocks for at most about half a second while queued messages leave.
    pub fn shutdown(mut self) -> BackplaneStats {
        self.stop_and_join();
        self.stats()
    }

    fn stop_and_join(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.stop.store(true, Ordering::SeqCst);
            self.wake.force();
            if thread.join().is_err() {
                tracing::error!("the backplane thread panicked");
            }
        }
    }
}

impl Drop for Backplane {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Runs a backplane until `shutdown` completes, then stops it and returns its
/// counters. This is what the `backplane` executable does.
pub async fn run(
    config: &BackplaneConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<BackplaneStats> {
    let backplane = Backplane::bind(config)?;
    tracing::info!(
        address = %backplane.bind_address(),
        publisher_port = backplane.publisher_port(),
        subscriber_port = backplane.subscriber_port(),
        "backplane running"
    );
    shutdown.await;
    let stats = tokio::task::spawn_blocking(move || backplane.shutdown())
        .await
        .unwrap_or_default();
    Ok(stats)
}

/// The ZeroMQ endpoint for an address and port (port 0: any free port).
pub(crate) fn endpoint(address: &str, port: u16) -> String {
    let host = if address.parse::<Ipv6Addr>().is_ok() {
        format!("[{address}]")
    } else {
        address.to_owned()
    };
    if port == 0 {
        format!("tcp://{host}:*")
    } else {
        format!("tcp://{host}:{port}")
    }
}

fn bind(socket: &zmq::Socket, address: &str, port: u16) -> Result<u16> {
    let endpoint = endpoint(address, port);
    socket.bind(&endpoint).map_err(|source| Error::Bind {
        endpoint: endpoint.clone(),
        source,
    })?;
    if port != 0 {
        return Ok(port);
    }
    let last = socket.get_last_endpoint()?.unwrap_or_default();
    last.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or(Error::Bind {
            endpoint,
            source: zmq::Error::EINVAL,
        })
}

struct Forwarder {
    xsub: zmq::Socket,
    xpub: zmq::Socket,
    counters: Arc<Counters>,
    /// The frames of the message being forwarded, reused between messages.
    frames: Vec<zmq::Message>,
    unlogged_drops: u64,
    last_drop_log: Option<Instant>,
}

impl Forwarder {
    fn run(&mut self, wake: &Wake, stop: &AtomicBool) {
        loop {
            let (published, subscribed, woken) = {
                let mut items = [
                    self.xsub.as_poll_item(zmq::POLLIN),
                    self.xpub.as_poll_item(zmq::POLLIN),
                    zmq::PollItem::from_fd(wake.fd(), zmq::POLLIN),
                ];
                let timeout = if self.unlogged_drops > 0 {
                    DROP_LOG_INTERVAL.as_millis() as i64
                } else {
                    -1
                };
                if let Err(e) = zmq::poll(&mut items, timeout) {
                    if e != zmq::Error::EINTR {
                        tracing::error!("backplane poll failed: {e}");
                        return;
                    }
                }
                (
                    items[0].is_readable(),
                    items[1].is_readable(),
                    items[2].is_readable(),
                )
            };
            if woken {
                wake.woke();
                if stop.load(Ordering::SeqCst) {
                    return;
                }
            }
            if subscribed {
                self.forward_subscriptions();
            }
            if published {
                self.forward_messages();
            }
            self.log_drops();
        }
    }

    /// Subscriptions travel from subscribers (XPUB side) to publishers.
    fn forward_subscriptions(&mut self) {
        for _ in 0..BATCH {
            let msg = match self.xpub.recv_msg(zmq::DONTWAIT) {
                Ok(msg) => msg,
                Err(zmq::Error::EAGAIN) => return,
                Err(e) => {
                    tracing::warn!("reading a subscription failed: {e}");
                    return;
                }
            };
            match msg.first() {
                Some(1) => {
                    self.counters.topics.fetch_add(1, Ordering::Relaxed);
                }
                Some(0) => {
                    let _ = self.counters.topics.fetch_update(
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                        |n| n.checked_sub(1),
                    );
                }
                _ => {}
            }
            if let Err(e) = self.xsub.send(msg, 0) {
                tracing::warn!("forwarding a subscription failed: {e}");
            }
        }
    }

    /// Messages travel from publishers (XSUB side) to subscribers.
    fn forward_messages(&mut self) {
        let mut forwarded = 0;
        for _ in 0..BATCH {
            match self.forward_one() {
                Ok(true) => forwarded += 1,
                Ok(false) => break,
                Err(e) => {
                    tracing::warn!("forwarding a message failed: {e}");
                    break;
                }
            }
        }
        self.counters
            .forwarded
            .fetch_add(forwarded, Ordering::Relaxed);
    }

    /// Forwards one whole multipart message; `Ok(false)` when none is waiting.
    fn forward_one(&mut self) -> zmq::Result<bool> {
        self.frames.clear();
        loop {
            let msg = match self.xsub.recv_msg(zmq::DONTWAIT) {
                Ok(msg) => msg,
                Err(zmq::Error::EAGAIN) if self.frames.is_empty() => return Ok(false),
                Err(e) => return Err(e),
            };
            let more = msg.get_more();
            self.frames.push(msg);
            if !more {
                break;
            }
        }
        // First try without dropping: the send fails with EAGAIN, and keeps
        // the message, if any matching subscriber's queue is full. The first
        // frame (the topic, a few bytes) is copied so that it survives that.
        let last = self.frames.len() - 1;
        let first_flags = if last > 0 { zmq::SNDMORE } else { 0 };
        match self.xpub.send(&self.frames[0][..], first_flags) {
            Ok(()) => {}
            Err(zmq::Error::EAGAIN) => {
                // Deliver to everyone who has room, and count the loss for
                // the others.
                set_xpub_nodrop(&mut self.xpub, false)?;
                let sent = self.xpub.send(&self.frames[0][..], first_flags);
                set_xpub_nodrop(&mut self.xpub, true)?;
                sent?;
                self.unlogged_drops += 1;
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => return Err(e),
        }
        for (i, frame) in self.frames.drain(1..).enumerate() {
            let flags = if i + 1 < last { zmq::SNDMORE } else { 0 };
            self.xpub.send(frame, flags)?;
        }
        Ok(true)
    }

    fn log_drops(&mut self) {
        if self.unlogged_drops == 0 {
            return;
        }
        let now = Instant::now();
        if self
            .last_drop_log
            .is_some_and(|last| now.duration_since(last) < DROP_LOG_INTERVAL)
        {
            return;
        }
        tracing::warn!(
            dropped = self.unlogged_drops,
            total = self.counters.dropped.load(Ordering::Relaxed),
            "a subscriber is slower than its publishers: messages not delivered to it"
        );
        self.unlogged_drops = 0;
        self.last_drop_log = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(endpoint("0.0.0.0", 43124), "tcp://0.0.0.0:43124");
        assert_eq!(endpoint("127.0.0.1", 0), "tcp://127.0.0.1:*");
        assert_eq!(endpoint("::1", 5), "tcp://[::1]:5");
    }

    #[test]
    fn binds_free_ports_and_reports_them() {
        let config = BackplaneConfig {
            bind_address: "127.0.0.1".into(),
            publisher_port: 0,
            subscriber_port: 0,
            ..BackplaneConfig::default()
        };
        let bp = Backplane::bind(&config).expect("binds");
        assert_ne!(bp.publisher_port(), 0);
        assert_ne!(bp.subscriber_port(), 0);
        assert_ne!(bp.publisher_port(), bp.subscriber_port());
        // The same ports cannot be bound twice.
        let again = BackplaneConfig {
            publisher_port: bp.publisher_port(),
            ..config
        };
        assert!(matches!(Backplane::bind(&again), Err(Error::Bind { .. })));
        assert_eq!(bp.shutdown(), BackplaneStats::default());
    }
}
