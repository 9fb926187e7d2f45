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
//!
//! A backplane started on demand ([`BackplaneConfig::gives_way`]) hands its
//! ports to a backplane started later on purpose; see [`crate::handover`] and
//! [`Backplane::bind_or_take_over`].

use std::collections::HashSet;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::handover::{self, Answer};
use crate::marks::Marks;
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
/// Bytes each queue of the backplane (each publisher's, each subscriber's)
/// holds at most, as well as its mark in messages: 64 MiB, so that 16,384
/// messages of 64 KiB (1 GiB) cannot pile up for a stalled subscriber. See
/// [`BackplaneConfig::queue_bytes`].
pub const DEFAULT_QUEUE_BYTES: u64 = 64 << 20;

/// How long a backplane process started on demand keeps running with no
/// component connected: long enough for a component to restart, short
/// enough that it does not linger once everyone has left.
pub const ON_DEMAND_IDLE_EXIT: Duration = Duration::from_secs(5);

/// The configuration of a backplane process started on demand by a
/// component that found none (`backplane --on-demand`): every interface, as
/// python-banyan's backplane, so python components without `-b` find it;
/// gives way to a backplane started later; stops once idle.
pub fn on_demand(publisher_port: u16, subscriber_port: u16) -> BackplaneConfig {
    BackplaneConfig {
        publisher_port,
        subscriber_port,
        gives_way: true,
        idle_exit: Some(ON_DEMAND_IDLE_EXIT),
        ..BackplaneConfig::default()
    }
}

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
/// How long a backplane whose ports are taken waits for their holder to
/// answer a handover request (a backplane of ours answers within
/// milliseconds).
const HANDOVER_ASK_TIMEOUT: Duration = Duration::from_secs(2);
/// How long it then waits for the ports to be free.
const HANDOVER_BIND_TIMEOUT: Duration = Duration::from_secs(5);
/// How often it tries to bind meanwhile.
const HANDOVER_BIND_RETRY: Duration = Duration::from_millis(5);

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
    /// Bytes each queue (each publisher's, each subscriber's) holds at
    /// most. libzmq counts its queues in messages only, so the backplane
    /// lowers both marks while large messages flow: to this budget divided
    /// by the largest recent message (rounded up to a power of two), never
    /// above the marks above nor below 16 messages. They rise again once a
    /// window of 4,096 messages had none as large. Small messages (under
    /// about 400 bytes with the defaults) leave the marks as they are.
    pub queue_bytes: u64,
    /// When a subscriber's queue is full, forwarding pauses (publishers
    /// wait) for at most this long for it to make room; after that the
    /// message goes to everyone else and that subscriber misses it (an
    /// overflow, counted and logged). A subscriber that keeps up on average
    /// therefore loses nothing, and one that stalls cannot stop the bus.
    pub slow_subscriber_grace: Duration,
    /// Whether this backplane was started on demand, because a component
    /// found none: it then gives its ports to a backplane that asks for them
    /// (see [`crate::handover`]). One started on purpose keeps them.
    pub gives_way: bool,
    /// Stop once no component has been connected for this long (a backplane
    /// process started on demand, which nobody else would stop); `None`:
    /// run until shut down.
    pub idle_exit: Option<Duration>,
}

impl Default for BackplaneConfig {
    fn default() -> Self {
        BackplaneConfig {
            bind_address: "0.0.0.0".to_owned(),
            publisher_port: DEFAULT_PUBLISHER_PORT,
            subscriber_port: DEFAULT_SUBSCRIBER_PORT,
            high_water_mark: DEFAULT_HIGH_WATER_MARK,
            subscriber_high_water_mark: DEFAULT_SUBSCRIBER_HIGH_WATER_MARK,
            queue_bytes: DEFAULT_QUEUE_BYTES,
            slow_subscriber_grace: DEFAULT_SLOW_SUBSCRIBER_GRACE,
            gives_way: false,
            idle_exit: None,
        }
    }
}

/// Why a backplane's forwarding stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Ending {
    /// [`Backplane::shutdown`] (or dropping it) stopped it.
    Stopped,
    /// It gave its ports to the backplane of another process, as asked.
    HandedOver {
        /// The process the ports went to.
        pid: u32,
    },
    /// No component was connected for [`BackplaneConfig::idle_exit`].
    Idle,
    /// Its forwarding loop failed (logged).
    Failed,
}

/// Counters a running backplane reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackplaneStats {
    /// Messages received from publishers and forwarded.
    pub forwarded: u64,
    /// Bytes of the messages forwarded: every frame, topic and payload,
    /// counted once however many subscribers a message went to.
    pub forwarded_bytes: u64,
    /// How many times a subscriber's queue was found full, so that it missed
    /// messages (it was slower than the publishers for longer than the queues
    /// hold); everybody else got them. ZeroMQ then skips that subscriber
    /// silently until it has read part of its queue, so this counts
    /// overflows, not every message missed.
    pub overflows: u64,
    /// Distinct topic prefixes subscribed at the moment.
    pub topics: u64,
}

#[derive(Debug, Default)]
struct Counters {
    forwarded: AtomicU64,
    forwarded_bytes: AtomicU64,
    overflows: AtomicU64,
    topics: AtomicU64,
}

impl Counters {
    fn stats(&self) -> BackplaneStats {
        BackplaneStats {
            forwarded: self.forwarded.load(Ordering::Relaxed),
            forwarded_bytes: self.forwarded_bytes.load(Ordering::Relaxed),
            overflows: self.overflows.load(Ordering::Relaxed),
            topics: self.topics.load(Ordering::Relaxed),
        }
    }
}

/// A running backplane's counters, readable from anywhere while it runs
/// (for metrics) and after: [`Backplane::serve`] takes the backplane itself.
/// Cheap to clone; reading costs four atomic loads.
#[derive(Clone, Debug)]
pub struct StatsHandle(Arc<Counters>);

impl StatsHandle {
    /// The counters now.
    pub fn stats(&self) -> BackplaneStats {
        self.0.stats()
    }
}

/// A running backplane. Dropping it stops it (as [`Backplane::shutdown`]).
pub struct Backplane {
    thread: Option<JoinHandle<()>>,
    /// Set by the forwarding thread as it ends.
    ending: tokio::sync::watch::Receiver<Option<Ending>>,
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
        let gives_way = config.gives_way;
        let (queue_bytes, high_water_mark, subscriber_high_water_mark) = (
            config.queue_bytes,
            config.high_water_mark,
            config.subscriber_high_water_mark,
        );
        let idle = config
            .idle_exit
            .map(|after| IdleWatch::new(&context, [&xsub, &xpub], after))
            .transpose()?;
        let wake = Arc::new(Wake::new()?);
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let (ending_tx, ending) = tokio::sync::watch::channel(None);
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
                        held_bytes: 0,
                        marks: Marks::new(
                            queue_bytes,
                            (high_water_mark, subscriber_high_water_mark),
                        ),
                        blocked_since: None,
                        grace,
                        unlogged_overflows: 0,
                        last_overflow_log: None,
                        gives_way,
                        idle,
                    };
                    let ending = forwarder.run(&wake, &stop);
                    // Sockets close before the context, which then waits at most
                    // LINGER_MS for queued messages to leave. The listeners
                    // close at once, so a backplane taking over can bind.
                    drop(forwarder);
                    drop(context);
                    ending_tx.send_replace(Some(ending));
                }
            })?;
        tracing::debug!(publisher_port, subscriber_port, "backplane listening");
        Ok(Backplane {
            thread: Some(thread),
            ending,
            stop,
            wake,
            counters,
            bind_address: config.bind_address.clone(),
            publisher_port,
            subscriber_port,
        })
    }

    /// Binds as [`Backplane::bind`]; when the ports are taken, asks their
    /// holder for them (see [`crate::handover`]) and, if it is an on-demand
    /// backplane that gives way, binds once it has let go. Returns the
    /// holder's answer when the ports were taken over.
    ///
    /// Fails with [`Error::BackplaneRunning`] when the holder is a backplane
    /// started on purpose, and with the bind error when nothing of ours
    /// answers.
    pub fn bind_or_take_over(config: &BackplaneConfig) -> Result<(Backplane, Option<Answer>)> {
        let refused = match Backplane::bind(config) {
            Ok(backplane) => return Ok((backplane, None)),
            Err(e @ Error::Bind { .. }) if e.is_address_in_use() => e,
            Err(e) => return Err(e),
        };
        let holder = handover::holder_address(&config.bind_address);
        let Some(answer) = handover::ask(holder, config.subscriber_port, HANDOVER_ASK_TIMEOUT)?
        else {
            return Err(refused);
        };
        if !answer.gives_way {
            return Err(Error::BackplaneRunning {
                pid: answer.pid,
                name: answer.name,
                publisher_port: config.publisher_port,
                subscriber_port: config.subscriber_port,
            });
        }
        // It lets go of its ports as it answers; bind as soon as they are
        // free (no event says so: try again shortly).
        let deadline = Instant::now() + HANDOVER_BIND_TIMEOUT;
        loop {
            match Backplane::bind(config) {
                Ok(backplane) => {
                    tracing::info!(
                        "took the bus over from the on-demand backplane of process {} ({}): \
                         its components reconnect here",
                        answer.pid,
                        answer.name
                    );
                    return Ok((backplane, Some(answer)));
                }
                Err(e) if e.is_address_in_use() && Instant::now() < deadline => {
                    std::thread::sleep(HANDOVER_BIND_RETRY);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Waits until forwarding has stopped, and says why: after a
    /// [`Backplane::shutdown`] from elsewhere, or when the ports were handed
    /// over.
    pub async fn ended(&self) -> Ending {
        let mut ending = self.ending.clone();
        let ended = match ending.wait_for(Option::is_some).await {
            Ok(ending) => ending.clone().unwrap_or(Ending::Failed),
            Err(_) => Ending::Failed,
        };
        ended
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
        self.counters.stats()
    }

    /// A handle on the counters that outlives this value's move into
    /// [`Backplane::serve`] (a metrics endpoint reads it at each scrape).
    pub fn stats_handle(&self) -> StatsHandle {
        StatsHandle(self.counters.clone())
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

impl Backplane {
    /// The start-up banner, in python-banyan's layout, with one
    /// `Backplane IP address:` line per address that components on other
    /// machines can pass as `-b` (see [`reachable_addresses`]).
    pub fn banner(&self, name: &str) -> String {
        banner_text(
            name,
            &self.bind_address,
            &reachable_addresses(&self.bind_address),
            self.publisher_port,
            self.subscriber_port,
        )
    }

    /// Forwards until `shutdown` completes or forwarding ends by itself (the
    /// ports handed over), then stops and returns why, with the counters.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> (Ending, BackplaneStats) {
        let ending = tokio::select! {
            () = shutdown => Ending::Stopped,
            ending = self.ended() => ending,
        };
        let stats = tokio::task::spawn_blocking(move || self.shutdown())
            .await
            .unwrap_or_default();
        (ending, stats)
    }
}

/// Runs a backplane until `shutdown` completes (or it hands its ports over),
/// then stops it and returns its counters: the `backplane` executable without
/// its banner. Ports held by an on-demand backplane are taken over.
pub async fn run(
    config: &BackplaneConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<BackplaneStats> {
    let (backplane, _) = Backplane::bind_or_take_over(config)?;
    tracing::info!(
        address = %backplane.bind_address(),
        publisher_port = backplane.publisher_port(),
        subscriber_port = backplane.subscriber_port(),
        "backplane running"
    );
    Ok(backplane.serve(shutdown).await.1)
}

/// The addresses of this machine that reach a backplane bound to
/// `bind_address`, as other machines would write them in `-b`: for every
/// interface (`0.0.0.0`, `::`), each address of this machine other than
/// loopback (and IPv6 link-local, which needs a scope); for one address, that
/// one. Empty when bound to every interface of a machine with no network
/// address.
pub fn reachable_addresses(bind_address: &str) -> Vec<IpAddr> {
    let wildcard: Option<IpAddr> = bind_address.parse().ok().filter(IpAddr::is_unspecified);
    let Some(wildcard) = wildcard else {
        return bind_address.parse().into_iter().collect();
    };
    let interfaces = match if_addrs::get_if_addrs() {
        Ok(interfaces) => interfaces,
        Err(e) => {
            tracing::debug!("cannot list this machine's addresses: {e}");
            return Vec::new();
        }
    };
    let mut addresses: Vec<IpAddr> = Vec::new();
    for ip in interfaces.iter().map(if_addrs::Interface::ip) {
        let usable = match ip {
            IpAddr::V4(v4) => !v4.is_loopback(),
            // An IPv6 socket bound to `::` takes IPv4 too, not the reverse.
            IpAddr::V6(v6) => {
                wildcard.is_ipv6() && !v6.is_loopback() && !v6.is_unicast_link_local()
            }
        };
        if usable && !addresses.contains(&ip) {
            addresses.push(ip);
        }
    }
    addresses
}

/// The banner for a backplane bound to `bind_address` and reachable at
/// `addresses` (pure, for [`Backplane::banner`]).
fn banner_text(
    name: &str,
    bind_address: &str,
    addresses: &[IpAddr],
    publisher_port: u16,
    subscriber_port: u16,
) -> String {
    let name = if name.is_empty() {
        String::new()
    } else {
        format!("{name} ")
    };
    let rule = "*".repeat(42);
    let mut text = format!("{rule}\n");
    let local = |text: &mut String, address: &str, why: &str| {
        text.push_str(&format!(
            "{name}Backplane IP address: {address} (this machine only{why})\n"
        ));
    };
    match addresses {
        [] => local(&mut text, "127.0.0.1", ": it has no network address"),
        [one] if one.is_loopback() => local(&mut text, bind_address, ""),
        _ => {
            for address in addresses {
                text.push_str(&format!("{name}Backplane IP address: {address}\n"));
            }
        }
    }
    text.push_str(&format!(
        "Subscriber Port = {subscriber_port}\nPublisher  Port = {publisher_port}\n{rule}"
    ));
    text
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
    /// The bytes of the frames in `frames`, counted as they are read (the
    /// send moves the payload away).
    held_bytes: u64,
    /// The queues' marks, lowered while large messages flow.
    marks: Marks,
    /// When a full subscriber first refused the held message.
    blocked_since: Option<Instant>,
    grace: Duration,
    unlogged_overflows: u64,
    last_overflow_log: Option<Instant>,
    /// Whether handover requests are granted.
    gives_way: bool,
    /// Watches the connections, for [`BackplaneConfig::idle_exit`].
    idle: Option<IdleWatch>,
}

/// Counts the connections of a backplane's two sockets, from the socket
/// monitors' events, to tell when nobody has been connected for a while.
struct IdleWatch {
    /// The monitor of each socket (PAIR sockets receiving its events).
    events: [zmq::Socket; 2],
    /// The descriptors of the connections open now, per socket. A set, not
    /// a count, so that an event seen twice cannot make it drift.
    open: [HashSet<u32>; 2],
    idle_since: Option<Instant>,
    after: Duration,
}

impl IdleWatch {
    fn new(context: &zmq::Context, sockets: [&zmq::Socket; 2], after: Duration) -> Result<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let kinds = zmq::SocketEvent::ACCEPTED.to_raw() as i32
            | zmq::SocketEvent::DISCONNECTED.to_raw() as i32;
        let mut events = Vec::with_capacity(2);
        for (i, socket) in sockets.into_iter().enumerate() {
            let endpoint = format!("inproc://banyan-backplane-{}-{n}-{i}", std::process::id());
            socket.monitor(&endpoint, kinds)?;
            let pair = context.socket(zmq::PAIR)?;
            pair.set_linger(0)?;
            pair.connect(&endpoint)?;
            events.push(pair);
        }
        let events: [zmq::Socket; 2] = events
            .try_into()
            .map_err(|_| Error::Zmq(zmq::Error::EINVAL))?;
        Ok(IdleWatch {
            events,
            open: [HashSet::new(), HashSet::new()],
            idle_since: Some(Instant::now()),
            after,
        })
    }

    /// Takes the events that arrived; whether nobody has been connected for
    /// long enough.
    fn idle(&mut self, now: Instant) -> bool {
        for (events, open) in self.events.iter().zip(&mut self.open) {
            while let Ok(frames) = events.recv_multipart(zmq::DONTWAIT) {
                // The first frame is the event (u16) and its value (u32, the
                // descriptor here), in the machine's byte order.
                let Some(head) = frames.first().filter(|f| f.len() >= 6) else {
                    continue;
                };
                let event = u16::from_ne_bytes([head[0], head[1]]);
                let fd = u32::from_ne_bytes([head[2], head[3], head[4], head[5]]);
                if event == zmq::SocketEvent::ACCEPTED.to_raw() {
                    open.insert(fd);
                } else if event == zmq::SocketEvent::DISCONNECTED.to_raw() {
                    open.remove(&fd);
                }
            }
        }
        if self.open.iter().all(HashSet::is_empty) {
            let since = *self.idle_since.get_or_insert(now);
            now.duration_since(since) >= self.after
        } else {
            self.idle_since = None;
            false
        }
    }

    fn deadline(&self) -> Option<Instant> {
        self.idle_since.map(|since| since + self.after)
    }
}

impl Forwarder {
    fn run(&mut self, wake: &Wake, stop: &AtomicBool) -> Ending {
        loop {
            let (published, subscribed, woken) = {
                // While a message is held for a full subscriber, read nothing
                // new and retry soon: an XPUB socket signals no room to wait on.
                let publisher_events = if self.held {
                    zmq::PollEvents::empty()
                } else {
                    zmq::POLLIN
                };
                let mut items = vec![
                    self.xsub.as_poll_item(publisher_events),
                    self.xpub.as_poll_item(zmq::POLLIN),
                    zmq::PollItem::from_fd(wake.fd(), zmq::POLLIN),
                ];
                if let Some(idle) = &self.idle {
                    items.extend(idle.events.iter().map(|e| e.as_poll_item(zmq::POLLIN)));
                }
                let mut timeout = if self.held {
                    RETRY_INTERVAL.as_millis() as i64
                } else if self.unlogged_overflows > 0 {
                    OVERFLOW_LOG_INTERVAL.as_millis() as i64
                } else {
                    -1
                };
                if let Some(deadline) = self.idle.as_ref().and_then(IdleWatch::deadline) {
                    let left = deadline.saturating_duration_since(Instant::now());
                    let left = left.as_millis() as i64 + 1;
                    timeout = if timeout < 0 { left } else { timeout.min(left) };
                }
                if let Err(e) = zmq::poll(&mut items, timeout) {
                    if e != zmq::Error::EINTR {
                        tracing::error!("backplane poll failed: {e}");
                        return Ending::Failed;
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
                    return Ending::Stopped;
                }
            }
            if subscribed {
                if let Some(pid) = self.forward_subscriptions() {
                    return Ending::HandedOver { pid };
                }
            }
            if published || self.held {
                self.forward_messages();
            }
            self.log_overflows();
            if let Some(idle) = &mut self.idle {
                if idle.idle(Instant::now()) {
                    tracing::info!(
                        "no component has been connected for {:?}: the on-demand backplane stops",
                        idle.after
                    );
                    return Ending::Idle;
                }
            }
        }
    }

    /// Subscriptions travel from subscribers (XPUB side) to publishers.
    /// Returns the process to hand the ports to, when one asked and this
    /// backplane gives way.
    fn forward_subscriptions(&mut self) -> Option<u32> {
        for _ in 0..BATCH {
            let msg = match self.xpub.recv_msg(zmq::DONTWAIT) {
                Ok(msg) => msg,
                Err(zmq::Error::EAGAIN) => return None,
                Err(e) => {
                    tracing::warn!("reading a subscription failed: {e}");
                    return None;
                }
            };
            if let Some((&kind, topic)) = msg.split_first() {
                if handover::is_request(topic) {
                    if kind == 1 {
                        if let Some(pid) = self.answer_handover(topic) {
                            return Some(pid);
                        }
                    }
                    continue;
                }
            }
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
        None
    }

    /// Answers a handover request; the requesting process when this
    /// backplane gives way.
    fn answer_handover(&mut self, topic: &[u8]) -> Option<u32> {
        let Some(pid) = handover::parse_request(topic) else {
            tracing::debug!("ignored a malformed handover request");
            return None;
        };
        let answer = Answer::of_this_process(self.gives_way).encode();
        // The request's subscription routes the answer to the requester
        // only. Not while a message is half sent: none is (a held message's
        // first frame was refused).
        let sent = self
            .xpub
            .send(topic, zmq::SNDMORE | zmq::DONTWAIT)
            .and_then(|()| self.xpub.send(answer, zmq::DONTWAIT));
        if let Err(e) = sent {
            tracing::warn!("answering a handover request failed: {e}");
            return None;
        }
        if self.gives_way {
            tracing::info!(
                "handing the bus over to the backplane started by process {pid}: \
                 the components reconnect to it"
            );
            Some(pid)
        } else {
            tracing::warn!(
                "process {pid} tried to start a backplane on these ports; this one keeps them"
            );
            None
        }
    }

    /// Messages travel from publishers (XSUB side) to subscribers.
    fn forward_messages(&mut self) {
        let (mut forwarded, mut bytes) = (0, 0);
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
                Ok(true) => {
                    forwarded += 1;
                    bytes += self.held_bytes;
                }
                // A subscriber is full: retry shortly, reading nothing new.
                Ok(false) => break,
                Err(e) => {
                    tracing::warn!("forwarding a message failed: {e}");
                    self.held = false;
                }
            }
        }
        // Once per batch: the counters' cache line is shared with whoever
        // reads them.
        self.counters
            .forwarded
            .fetch_add(forwarded, Ordering::Relaxed);
        self.counters
            .forwarded_bytes
            .fetch_add(bytes, Ordering::Relaxed);
    }

    /// Reads the frames of one whole message; `Ok(false)` when none waits.
    fn read_message(&mut self) -> zmq::Result<bool> {
        self.frames.clear();
        self.held_bytes = 0;
        loop {
            let msg = match self.xsub.recv_msg(zmq::DONTWAIT) {
                Ok(msg) => msg,
                Err(zmq::Error::EAGAIN) if self.frames.is_empty() => return Ok(false),
                Err(e) => return Err(e),
            };
            let more = msg.get_more();
            self.held_bytes += msg.len() as u64;
            self.frames.push(msg);
            if !more {
                if let Some(marks) = self.marks.observe(self.held_bytes) {
                    self.set_marks(marks);
                }
                return Ok(true);
            }
        }
    }

    /// Sets the publishers' and the subscribers' queue marks, for the
    /// queues that exist and those to come.
    fn set_marks(&mut self, (publishers, subscribers): (i32, i32)) {
        tracing::debug!(
            publishers,
            subscribers,
            message_bytes = self.held_bytes,
            "queue marks set for the size of the messages"
        );
        if let Err(e) = self
            .xsub
            .set_rcvhwm(publishers)
            .and_then(|()| self.xpub.set_sndhwm(subscribers))
        {
            tracing::warn!("setting the queue marks failed: {e}");
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
    fn banners_show_addresses_to_copy_into_dash_b() {
        let lan: Vec<IpAddr> = vec![
            "10.0.0.2".parse().expect("ip"),
            "192.168.7.3".parse().expect("ip"),
        ];
        let rule = "*".repeat(42);
        assert_eq!(
            banner_text("Main", "0.0.0.0", &lan, 43124, 43125),
            format!(
                "{rule}\nMain Backplane IP address: 10.0.0.2\n\
                 Main Backplane IP address: 192.168.7.3\n\
                 Subscriber Port = 43125\nPublisher  Port = 43124\n{rule}"
            )
        );
        assert_eq!(
            banner_text("", "127.0.0.1", &["127.0.0.1".parse().expect("ip")], 1, 2),
            format!(
                "{rule}\nBackplane IP address: 127.0.0.1 (this machine only)\n\
                 Subscriber Port = 2\nPublisher  Port = 1\n{rule}"
            )
        );
        assert!(banner_text("", "0.0.0.0", &[], 1, 2).contains(
            "Backplane IP address: 127.0.0.1 (this machine only: it has no network address)"
        ));
        assert_eq!(
            reachable_addresses("10.1.2.3"),
            vec!["10.1.2.3".parse::<IpAddr>().expect("ip")]
        );
        assert!(reachable_addresses("0.0.0.0")
            .iter()
            .all(|a| a.is_ipv4() && !a.is_loopback()));
    }

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
