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
//! [`BackplaneStats::overflows`] and `docs/architecture.md`).

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
/// Messages queued per publisher before it must wait (ZeroMQ's own default
/// is 1,000, which loses messages of python publishers under the reference
/// benchmark). Each queued message costs about 64 bytes plus its payload
/// beyond 33 bytes.
pub const DEFAULT_HIGH_WATER_MARK: i32 = 200_000;
/// Messages queued per subscriber (in the backplane, and again in the
/// subscriber's client). Smaller than the publishers' bound on purpose:
/// ZeroMQ tells a writer that a full queue has room again only once half of
/// it has been read, so this bound sets how much a subscriber must read
/// within the slow-subscriber grace period to count as keeping up (half of
/// this queue and half of its client's, 16,384 messages in 250 ms, about
/// 65,000 messages/s).
pub const DEFAULT_SUBSCRIBER_HIGH_WATER_MARK: i32 = 16_384;

/// How long closing sockets may still flush queued messages.
const LINGER_MS: i32 = 500;
/// Messages moved per poll wake-up before the other direction gets a turn.
const BATCH: usize = 4096;
/// How often a message held for a full subscriber is offered again.
const RETRY_INTERVAL: Duration = Duration::from_millis(1);
/// How long a full subscriber may take to make room before it misses
/// messages (see [`BackplaneConfig::slow_subscriber_grace`]).
pub const DEFAULT_SLOW_SUBSCRIBER_GRACE: Duration = Duration::from_millis(250);
/// Overflows are logged at most this often.
const OVERFLOW_LOG_INTERVAL: Duration = Duration::from_secs(1);

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
    /// Queue bound per publisher, in messages (the XSUB side).
    pub high_water_mark: i32,
    /// Queue bound per subscriber, in messages (the XPUB side); see
    /// [`DEFAULT_SUBSCRIBER_HIGH_WATER_MARK`].
    pub subscriber_high_water_mark: i32,
    /// When a subscriber's queue is full, forwarding pauses (publishers
    /// wait) for at most this long for it to make room; after that the
    /// message goes to everyone else and that subscriber misses it (an
    /// overflow, counted and logged). A subscriber that keeps up on average
    /// therefore loses nothing, and one that stalls cannot stop the bus.
    pub slow_subscriber_grace: Duration,
}

impl Default for BackplaneConfig {
    fn default() -> Self {
        BackplaneConfig {
            bind_address: "0.0.0.0".to_owned(),
            publisher_port: DEFAULT_PUBLISHER_PORT,
            subscriber_port: DEFAULT_SUBSCRIBER_PORT,
            high_water_mark: DEFAULT_HIGH_WATER_MARK,
            subscriber_high_water_mark: DEFAULT_SUBSCRIBER_HIGH_WATER_MARK,
            slow_subscriber_grace: DEFAULT_SLOW_SUBSCRIBER_GRACE,
        }
    }
}

/// Counters a running backplane reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackplaneStats {
    /// Messages received from publishers and forwarded.
    pub forwarded: u64,
    /// How many times a subscriber's queue was found full, so that it missed
    /// messages (it was slower than the publishers for longer than the queues
    /// hold); everybody else got them. ZeroMQ then skips that subscriber
    /// silently until it has read part of its queue, so this counts
    /// overflows, not every message missed.
    pub overflows: u64,
    /// Distinct topic prefixes subscribed at the moment.
    pub topics: u64,
}

#[derive(Default)]
struct Counters {
    forwarded: AtomicU64,
    overflows: AtomicU64,
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
        xpub.set_sndhwm(config.subscriber_high_water_mark)?;
        set_xpub_nodrop(&mut xpub, true)?;
        let publisher_port = bind(&xsub, &config.bind_address, config.publisher_port)?;
        let subscriber_port = bind(&xpub, &config.bind_address, config.subscriber_port)?;

        let grace = config.slow_subscriber_grace;
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
                        held: false,
                        blocked_since: None,
                        grace,
                        unlogged_overflows: 0,
                        last_overflow_log: None,
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
            overflows: self.counters.overflows.load(Ordering::Relaxed),
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
    /// Whether `frames` holds a message not yet sent.
    held: bool,
    /// When a full subscriber first refused the held message.
    blocked_since: Option<Instant>,
    grace: Duration,
    unlogged_overflows: u64,
    last_overflow_log: Option<Instant>,
}

impl Forwarder {
    fn run(&mut self, wake: &Wake, stop: &AtomicBool) {
        loop {
            let (published, subscribed, woken) = {
                // While a message is held for a full subscriber, read nothing
                // new and retry soon: an XPUB socket signals no room to wait on.
                let publisher_events = if self.held {
                    zmq::PollEvents::empty()
                } else {
                    zmq::POLLIN
                };
                let mut items = [
                    self.xsub.as_poll_item(publisher_events),
                    self.xpub.as_poll_item(zmq::POLLIN),
                    zmq::PollItem::from_fd(wake.fd(), zmq::POLLIN),
                ];
                let timeout = if self.held {
                    RETRY_INTERVAL.as_millis() as i64
                } else if self.unlogged_overflows > 0 {
                    OVERFLOW_LOG_INTERVAL.as_millis() as i64
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
            if published || self.held {
                self.forward_messages();
            }
            self.log_overflows();
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
            if !self.held {
                match self.read_message() {
                    Ok(true) => self.held = true,
                    Ok(false) => break,
                    Err(e) => {
                        tracing::warn!("reading a message failed: {e}");
                        break;
                    }
                }
            }
            match self.send_held() {
                Ok(true) => forwarded += 1,
                // A subscriber is full: retry shortly, reading nothing new.
                Ok(false) => break,
                Err(e) => {
                    tracing::warn!("forwarding a message failed: {e}");
                    self.held = false;
                }
            }
        }
        self.counters
            .forwarded
            .fetch_add(forwarded, Ordering::Relaxed);
    }

    /// Reads the frames of one whole message; `Ok(false)` when none waits.
    fn read_message(&mut self) -> zmq::Result<bool> {
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
                return Ok(true);
            }
        }
    }

    /// Sends the held message; `Ok(false)` when a matching subscriber's queue
    /// is full and has been for less than the grace period, so the message
    /// stays held.
    fn send_held(&mut self) -> zmq::Result<bool> {
        // Never block: a blocking send would wait for the slowest subscriber
        // for ever, and stop subscriptions from flowing.
        let last = self.frames.len() - 1;
        let first_flags = zmq::DONTWAIT | if last > 0 { zmq::SNDMORE } else { 0 };
        // With NODROP the send fails, and the first frame (the topic, a few
        // bytes, sent by copy) survives, if any matching queue is full.
        match self.xpub.send(&self.frames[0][..], first_flags) {
            Ok(()) => {}
            Err(zmq::Error::EAGAIN) => {
                let now = Instant::now();
                let since = *self.blocked_since.get_or_insert(now);
                if now.duration_since(since) < self.grace {
                    return Ok(false);
                }
                // The subscriber made no room within the grace period:
                // deliver to everyone who has room, and count the overflow.
                set_xpub_nodrop(&mut self.xpub, false)?;
                let sent = self.xpub.send(&self.frames[0][..], first_flags);
                set_xpub_nodrop(&mut self.xpub, true)?;
                sent?;
                self.unlogged_overflows += 1;
                self.counters.overflows.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => return Err(e),
        }
        self.blocked_since = None;
        self.held = false;
        // Once the first frame is accepted, ZeroMQ accepts the rest of the
        // message (queue limits count whole messages), so the other frames
        // move without a copy.
        for (i, frame) in self.frames.drain(1..).enumerate() {
            let flags = zmq::DONTWAIT | if i + 1 < last { zmq::SNDMORE } else { 0 };
            self.xpub.send(frame, flags)?;
        }
        Ok(true)
    }

    fn log_overflows(&mut self) {
        if self.unlogged_overflows == 0 {
            return;
        }
        let now = Instant::now();
        if self
            .last_overflow_log
            .is_some_and(|last| now.duration_since(last) < OVERFLOW_LOG_INTERVAL)
        {
            return;
        }
        tracing::warn!(
            overflows = self.unlogged_overflows,
            total = self.counters.overflows.load(Ordering::Relaxed),
            "a subscriber is slower than its publishers: its queue is full and it misses messages"
        );
        self.unlogged_overflows = 0;
        self.last_overflow_log = Some(now);
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
