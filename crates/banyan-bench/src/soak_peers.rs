//! The soak's traffic: every sender, receiver and misbehaving peer of
//! [`crate::soak`], as tasks and threads of the bench's own process, so that
//! the accounting sees every sequence number at once and a snapshot of all
//! paths is taken in one instant.
//!
//! * a raw ZeroMQ PUB socket (send high-water mark 0, two frames: topic and
//!   MessagePack payload) publishes `{'msg': i, 'pad': ...}` for the pages,
//!   the device and MQTT;
//! * a raw ZeroMQ SUB socket (receive high-water mark 0) counts, on the bus
//!   itself, both what the PUB socket published and what the gateways
//!   published, so every loss can be put on a hop;
//! * two pages on one reply topic: one that always reads and also sends, and
//!   one with a small receive buffer that stalls on command;
//! * a TCP device server (1-byte length framing) that sends and receives,
//!   closes and comes back, or stops reading, on command;
//! * an MQTT subscriber and an MQTT publisher that reconnect to a restarted
//!   broker by themselves;
//! * on command, a WebSocket client that floods pings and never reads.
//!
//! Each stream has one sender, which numbers its messages from 0 and counts
//! a message as sent once it has handed it to its socket. Receivers keep a
//! bitmap of the numbers they saw: loss, duplicates and order are exact.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::codec;
use crate::error::{Error, Result};
use crate::worker::BusAddr;

/// Bus topic of the messages for the pages (their id is `to_soak`).
pub(crate) const TOPIC_PAGES: &str = "from_soak";
/// The pages' id, and the bus topic the gateway publishes their messages on.
pub(crate) const TOPIC_PAGE_IN: &str = "to_soak";
/// Bus topic `tgw` forwards to the device (`-g`).
pub(crate) const TOPIC_DEVICE: &str = "to_dev";
/// Bus topic `tgw` publishes the device's frames on (`-e`).
pub(crate) const TOPIC_DEVICE_IN: &str = "from_dev";
/// Bus topic `mqttgw` forwards to MQTT (`-g`).
pub(crate) const TOPIC_MQTT: &str = "to_mqtt";
/// Bus topic `mqttgw` publishes MQTT messages on (`-e`).
pub(crate) const TOPIC_MQTT_IN: &str = "from_mqtt";
/// MQTT topic `mqttgw` publishes bus messages on (`-i`).
pub(crate) const MQTT_OUT: &str = "from_banyan";
/// MQTT topic `mqttgw` subscribes to (`-j`).
pub(crate) const MQTT_IN: &str = "soak_in";
/// The flooding client's id: a reply topic nothing is published on, so
/// the flood is about pings alone.
const FLOOD_ID: &str = "to_flood";

/// The streams, one sender each.
pub(crate) const STREAMS: [&str; 6] = [
    TOPIC_PAGES,
    TOPIC_PAGE_IN,
    TOPIC_DEVICE,
    TOPIC_DEVICE_IN,
    TOPIC_MQTT,
    MQTT_IN,
];
const S_PAGES: usize = 0;
const S_PAGE_IN: usize = 1;
const S_DEVICE: usize = 2;
const S_DEVICE_IN: usize = 3;
const S_MQTT: usize = 4;
const S_MQTT_IN: usize = 5;

/// One receiver of one stream: a path through the system.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PathSpec {
    /// As shown in the report.
    pub(crate) name: &'static str,
    /// The stream it receives (index in [`STREAMS`]).
    pub(crate) stream: usize,
    /// The gateway on the path.
    pub(crate) gateway: Option<&'static str>,
    /// The bus-level receiver of the same stream, for a path that leaves
    /// the bus through a gateway: a message it saw was carried by the bus.
    pub(crate) observer: Option<usize>,
}

/// Every receiver.
pub(crate) const PATHS: [PathSpec; 10] = [
    PathSpec {
        name: "bus -> page",
        stream: S_PAGES,
        gateway: Some("wsgw"),
        observer: Some(T_BUS_PAGES),
    },
    PathSpec {
        name: "bus -> stalling page",
        stream: S_PAGES,
        gateway: Some("wsgw"),
        observer: Some(T_BUS_PAGES),
    },
    PathSpec {
        name: "page -> bus",
        stream: S_PAGE_IN,
        gateway: Some("wsgw"),
        observer: None,
    },
    PathSpec {
        name: "bus -> device",
        stream: S_DEVICE,
        gateway: Some("tgw"),
        observer: Some(T_BUS_DEVICE),
    },
    PathSpec {
        name: "device -> bus",
        stream: S_DEVICE_IN,
        gateway: Some("tgw"),
        observer: None,
    },
    PathSpec {
        name: "bus -> mqtt",
        stream: S_MQTT,
        gateway: Some("mqttgw"),
        observer: Some(T_BUS_MQTT),
    },
    PathSpec {
        name: "mqtt -> bus",
        stream: S_MQTT_IN,
        gateway: Some("mqttgw"),
        observer: None,
    },
    PathSpec {
        name: "bus (pages' topic)",
        stream: S_PAGES,
        gateway: None,
        observer: None,
    },
    PathSpec {
        name: "bus (device's topic)",
        stream: S_DEVICE,
        gateway: None,
        observer: None,
    },
    PathSpec {
        name: "bus (mqtt's topic)",
        stream: S_MQTT,
        gateway: None,
        observer: None,
    },
];
/// The page that always reads.
pub(crate) const T_PAGE: usize = 0;
/// The page that stalls on command.
pub(crate) const T_STALL_PAGE: usize = 1;
const T_PAGE_IN: usize = 2;
/// The device's receiver.
pub(crate) const T_DEVICE: usize = 3;
const T_DEVICE_IN: usize = 4;
/// The MQTT subscriber.
pub(crate) const T_MQTT: usize = 5;
/// MQTT -> bus, counted on the bus.
pub(crate) const T_MQTT_IN: usize = 6;
const T_BUS_PAGES: usize = 7;
const T_BUS_DEVICE: usize = 8;
const T_BUS_MQTT: usize = 9;

/// How often senders look at their pace.
const TICK: Duration = Duration::from_millis(10);
/// How often the sent counts are recorded, to date each sequence number.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);
/// Receive buffer of the stalling page, the flooder and the device: small,
/// so that a peer that stops reading fills the gateway's queue in seconds
/// at a modest rate rather than hiding in kernel buffers.
const SMALL_BUFFER: u32 = 4096;
/// Pings a second sent by the flooding client.
const FLOOD_RATE: u64 = 20_000;
/// A ping's payload: the largest a control frame may carry.
const PING_BYTES: usize = 125;
/// Deadline of one connection attempt or handshake of a peer.
const CONNECT: Duration = Duration::from_secs(5);
/// Deadline of one write of a peer: a gateway that takes nothing that long
/// counts as a broken connection.
const WRITE: Duration = Duration::from_secs(10);
/// Wait between reconnection attempts of a peer.
const RETRY: Duration = Duration::from_millis(100);
/// How far beyond its sender's count a received number may be and still be
/// counted (a receiver may see a message before its sender counted it);
/// anything larger is not one of ours, and bounds the bitmap.
const SLACK: u64 = 1 << 16;
/// Notes kept (peer errors, reconnections), so a failing peer cannot grow
/// them without bound.
const MAX_NOTES: usize = 100;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking peer task leaves plain counters behind: still valid.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// A sender's count: the next sequence number.
#[derive(Debug, Default)]
pub(crate) struct Stream {
    next: AtomicU64,
}

impl Stream {
    /// Messages sent so far (the next sequence number).
    pub(crate) fn sent(&self) -> u64 {
        self.next.load(Ordering::Acquire)
    }

    fn advance(&self, n: u64) {
        self.next.fetch_add(n, Ordering::AcqRel);
    }
}

/// What one receiver saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Seen {
    /// Bit `i` set: message `i` arrived.
    bits: Vec<u64>,
    /// Distinct messages received.
    pub(crate) received: u64,
    /// Messages received again.
    pub(crate) duplicates: u64,
    /// Messages received after a later one.
    pub(crate) out_of_order: u64,
    /// The highest number received.
    pub(crate) max: Option<u64>,
    /// Probes received (not counted).
    pub(crate) probes: u64,
    /// Numbers far beyond what was sent: not ours, not counted.
    pub(crate) unknown: u64,
}

impl Seen {
    /// Counts message `seq` (`None`: a probe); `bound` is the highest
    /// number that can be ours, plus one.
    pub(crate) fn observe(&mut self, seq: Option<u64>, bound: u64) {
        let Some(seq) = seq else {
            self.probes += 1;
            return;
        };
        if seq >= bound {
            self.unknown += 1;
            return;
        }
        let (word, mask) = ((seq / 64) as usize, 1u64 << (seq % 64));
        if self.bits.len() <= word {
            self.bits.resize(word + 1, 0);
        }
        if self.bits[word] & mask != 0 {
            self.duplicates += 1;
            return;
        }
        self.bits[word] |= mask;
        self.received += 1;
        match self.max {
            Some(max) if seq < max => self.out_of_order += 1,
            _ => self.max = Some(seq),
        }
    }

    /// Whether message `seq` arrived.
    pub(crate) fn has(&self, seq: u64) -> bool {
        self.bits
            .get((seq / 64) as usize)
            .is_some_and(|word| word & (1 << (seq % 64)) != 0)
    }

    /// The first number in `from..to` that arrived.
    pub(crate) fn first_from(&self, from: u64, to: u64) -> Option<u64> {
        (from..to).find(|&seq| self.has(seq))
    }
}

/// A receiver: what it saw, checked against its sender's count.
#[derive(Debug)]
struct Tally {
    stream: Arc<Stream>,
    seen: Mutex<Seen>,
}

impl Tally {
    fn observe(&self, seq: Option<u64>) {
        let bound = self.stream.sent() + SLACK;
        lock(&self.seen).observe(seq, bound);
    }
}

/// Paces a sender at a steady rate.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pace {
    per_second: f64,
    start: Option<Instant>,
    done: u64,
}

impl Pace {
    /// `rate` messages a second, from the first call of [`Pace::due`].
    pub(crate) fn new(rate: u32) -> Pace {
        Pace {
            per_second: f64::from(rate),
            start: None,
            done: 0,
        }
    }

    /// How many messages are due at `now` (they count as done). A sender
    /// held up for more than a second skips the older part of its backlog
    /// instead of bursting it: the soak is about steady traffic.
    pub(crate) fn due(&mut self, now: Instant) -> u64 {
        let start = *self.start.get_or_insert(now);
        let target = (now.saturating_duration_since(start).as_secs_f64() * self.per_second) as u64;
        let cap = self.per_second.ceil() as u64;
        if target > self.done + cap {
            self.done = target - cap;
        }
        let due = target.saturating_sub(self.done);
        self.done = self.done.max(target);
        due
    }
}

/// What every sender does now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Probes, until every path has carried one.
    Probe = 0,
    /// Numbered messages at the rate.
    Go = 1,
    /// Nothing: the soak is ending.
    Stop = 2,
}

/// What the peers counted about themselves.
#[derive(Debug, Default)]
pub(crate) struct PeerStats {
    /// WebSocket connections the two pages made (2 without trouble).
    pub(crate) page_connects: AtomicU64,
    /// Connections the gateway made to the device.
    pub(crate) device_connects: AtomicU64,
    /// CONNACKs the two MQTT clients received.
    pub(crate) mqtt_connects: AtomicU64,
    /// Ping floods run.
    pub(crate) floods: AtomicU64,
    /// Pings the flooders sent.
    pub(crate) pings: AtomicU64,
    notes: Mutex<Vec<String>>,
}

impl PeerStats {
    fn note(&self, note: String) {
        let mut notes = lock(&self.notes);
        if notes.len() < MAX_NOTES {
            notes.push(note);
        }
    }

    /// What the peers noted (errors, reconnections), oldest first.
    pub(crate) fn notes(&self) -> Vec<String> {
        lock(&self.notes).clone()
    }
}

/// The state every peer shares.
#[derive(Debug)]
struct Shared {
    phase: AtomicU8,
    streams: Vec<Arc<Stream>>,
    tallies: Vec<Tally>,
    stats: PeerStats,
    rate: u32,
    payload: usize,
}

impl Shared {
    fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Probe,
            1 => Phase::Go,
            _ => Phase::Stop,
        }
    }

    fn stream(&self, index: usize) -> &Stream {
        &self.streams[index]
    }

    fn observe(&self, tally: usize, seq: Option<u64>) {
        self.tallies[tally].observe(seq);
    }
}

/// A command to the device.
#[derive(Clone, Copy, Debug)]
enum DeviceCommand {
    /// Close the connection (write side first, then read what the gateway
    /// had sent until it closes too) and refuse connections for this long.
    Close(Duration),
    /// Read nothing for this long (and keep sending).
    StopReading(Duration),
}

/// Every path's sent and highest received number at one instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Snapshot {
    /// Milliseconds since the traffic started.
    pub(crate) at_ms: u64,
    /// Per stream: messages sent so far.
    pub(crate) sent: Vec<u64>,
    /// Per path: the highest number received so far.
    pub(crate) max_seen: Vec<Option<u64>>,
}

/// Every stream's sent count at one instant, to date sequence numbers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    /// Milliseconds since the traffic started.
    pub(crate) at_ms: u64,
    /// Per stream: messages sent so far.
    pub(crate) sent: Vec<u64>,
}

/// What the traffic left behind.
#[derive(Debug)]
pub(crate) struct Finished {
    /// Per stream: messages sent.
    pub(crate) sent: Vec<u64>,
    /// Per path: what it received.
    pub(crate) seen: Vec<Seen>,
    /// Sent counts over time.
    pub(crate) checkpoints: Vec<Checkpoint>,
    /// Peers' reconnections and floods.
    pub(crate) connects: [(&'static str, u64); 5],
    /// What the peers noted.
    pub(crate) notes: Vec<String>,
}

/// Where the gateways and the broker are.
#[derive(Clone, Debug)]
pub(crate) struct Endpoints {
    /// The backplane.
    pub(crate) bus: BusAddr,
    /// `wsgw`'s `ws://127.0.0.1:PORT`.
    pub(crate) ws_url: String,
    /// mosquitto's port on 127.0.0.1.
    pub(crate) mqtt_port: u16,
}

/// The running traffic. Dropping it stops every peer.
#[derive(Debug)]
pub(crate) struct Traffic {
    shared: Arc<Shared>,
    handle: tokio::runtime::Handle,
    runtime: Option<std::thread::JoinHandle<()>>,
    /// Ends the runtime thread's `block_on`, which drops every task.
    finish: Option<tokio::sync::oneshot::Sender<()>>,
    shutdown: watch::Sender<bool>,
    zmq_stop: Arc<AtomicBool>,
    zmq_threads: Vec<std::thread::JoinHandle<()>>,
    device_port: u16,
    device: mpsc::Sender<DeviceCommand>,
    page_stall: mpsc::Sender<Duration>,
    page_stall_commands: Option<mpsc::Receiver<Duration>>,
    ws_url: String,
    origin: Arc<Mutex<Option<Instant>>>,
    checkpoints: Arc<Mutex<Vec<Checkpoint>>>,
}

impl Traffic {
    /// Starts the peers' runtime and the device's listener (on a free
    /// port: [`Traffic::device_port`]), so that `tgw` can be started.
    pub(crate) fn new(rate: u32, payload: usize) -> Result<Traffic> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (finish, finished) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("soak-peers".to_owned())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = finished.await;
                });
            })?;
        let streams: Vec<Arc<Stream>> = STREAMS.iter().map(|_| Arc::default()).collect();
        let tallies = PATHS
            .iter()
            .map(|path| Tally {
                stream: streams[path.stream].clone(),
                seen: Mutex::default(),
            })
            .collect();
        let shared = Arc::new(Shared {
            phase: AtomicU8::new(Phase::Probe as u8),
            streams,
            tallies,
            stats: PeerStats::default(),
            rate,
            payload,
        });
        let (shutdown, _) = watch::channel(false);
        let (device_sender, device_commands) = mpsc::channel(4);
        let (page_stall, page_stall_commands) = mpsc::channel(4);
        let listener = {
            // Registering a socket needs the runtime's context.
            let _runtime = handle.enter();
            bind_device(0)?
        };
        let device_port = listener.local_addr()?.port();
        handle.spawn(device(
            shared.clone(),
            listener,
            device_port,
            device_commands,
            shutdown.subscribe(),
        ));
        Ok(Traffic {
            shared,
            handle,
            runtime: Some(thread),
            finish: Some(finish),
            shutdown,
            zmq_stop: Arc::new(AtomicBool::new(false)),
            zmq_threads: Vec::new(),
            device_port,
            device: device_sender,
            page_stall,
            page_stall_commands: Some(page_stall_commands),
            ws_url: String::new(),
            origin: Arc::default(),
            checkpoints: Arc::default(),
        })
    }

    /// The device's port on 127.0.0.1 (`tgw -n`).
    pub(crate) fn device_port(&self) -> u16 {
        self.device_port
    }

    /// Starts every other peer, probing their paths.
    pub(crate) fn connect(&mut self, at: &Endpoints) -> Result<()> {
        let context = zmq::Context::new();
        self.spawn_zmq(
            "soak-publisher",
            &context,
            at.bus.publisher_port,
            raw_publisher,
        )?;
        self.spawn_zmq("soak-observer", &context, at.bus.subscriber_port, observer)?;
        self.ws_url = at.ws_url.clone();
        let steady = Page {
            url: at.ws_url.clone(),
            tally: T_PAGE,
            sends: true,
            small_buffer: false,
        };
        let stalling = Page {
            url: at.ws_url.clone(),
            tally: T_STALL_PAGE,
            sends: false,
            small_buffer: true,
        };
        self.handle.spawn(page(
            self.shared.clone(),
            steady,
            None,
            self.shutdown.subscribe(),
        ));
        self.handle.spawn(page(
            self.shared.clone(),
            stalling,
            self.page_stall_commands.take(),
            self.shutdown.subscribe(),
        ));
        self.handle.spawn(mqtt_receiver(
            self.shared.clone(),
            at.mqtt_port,
            self.shutdown.subscribe(),
        ));
        self.handle.spawn(mqtt_sender(
            self.shared.clone(),
            at.mqtt_port,
            self.shutdown.subscribe(),
        ));
        Ok(())
    }

    /// Runs a raw socket's loop on a thread of its own (libzmq sockets stay
    /// on one thread); its error becomes a note.
    fn spawn_zmq(
        &mut self,
        name: &'static str,
        context: &zmq::Context,
        port: u16,
        run: fn(&zmq::Context, u16, &Shared, &AtomicBool) -> Result<()>,
    ) -> Result<()> {
        let (context, shared, stop) = (context.clone(), self.shared.clone(), self.zmq_stop.clone());
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                if let Err(e) = run(&context, port, &shared, &stop) {
                    shared.stats.note(format!("{name}: {e}"));
                }
            })?;
        self.zmq_threads.push(thread);
        Ok(())
    }

    /// Paths that have not yet carried a probe.
    pub(crate) fn unprobed(&self) -> Vec<&'static str> {
        PATHS
            .iter()
            .zip(&self.shared.tallies)
            .filter(|(_, tally)| lock(&tally.seen).probes == 0)
            .map(|(path, _)| path.name)
            .collect()
    }

    /// Starts the numbered traffic (once every path carried a probe).
    pub(crate) fn go(&self) {
        let origin = Instant::now();
        *lock(&self.origin) = Some(origin);
        self.shared.phase.store(Phase::Go as u8, Ordering::Release);
        self.handle.spawn(checkpoints(
            self.shared.clone(),
            self.checkpoints.clone(),
            origin,
            self.shutdown.subscribe(),
        ));
    }

    /// Milliseconds since [`Traffic::go`].
    pub(crate) fn elapsed_ms(&self) -> u64 {
        lock(&self.origin).map_or(0, |origin| origin.elapsed().as_millis() as u64)
    }

    /// Every path's counts now.
    pub(crate) fn snapshot(&self) -> Snapshot {
        Snapshot {
            at_ms: self.elapsed_ms(),
            sent: self.shared.streams.iter().map(|s| s.sent()).collect(),
            max_seen: self
                .shared
                .tallies
                .iter()
                .map(|tally| lock(&tally.seen).max)
                .collect(),
        }
    }

    /// Total messages received by every path (to see whether they still
    /// arrive).
    pub(crate) fn received(&self) -> u64 {
        self.shared
            .tallies
            .iter()
            .map(|tally| lock(&tally.seen).received)
            .sum()
    }

    /// The stalling page reads nothing for `time`.
    pub(crate) fn stall_page(&self, time: Duration) -> Result<()> {
        self.page_stall
            .try_send(time)
            .map_err(|e| Error::Protocol(format!("the stalling page takes no command: {e}")))
    }

    /// The device closes its connection and is away for `time`.
    pub(crate) fn close_device(&self, time: Duration) -> Result<()> {
        self.device_command(DeviceCommand::Close(time))
    }

    /// The device reads nothing for `time`.
    pub(crate) fn stall_device(&self, time: Duration) -> Result<()> {
        self.device_command(DeviceCommand::StopReading(time))
    }

    fn device_command(&self, command: DeviceCommand) -> Result<()> {
        self.device
            .try_send(command)
            .map_err(|e| Error::Protocol(format!("the device takes no command: {e}")))
    }

    /// A new client floods `wsgw` with pings for `time`, never reading.
    pub(crate) fn flood(&self, time: Duration) {
        self.handle.spawn(flood(
            self.shared.clone(),
            self.ws_url.clone(),
            time,
            self.shutdown.subscribe(),
        ));
    }

    /// Senders stop; receivers go on.
    pub(crate) fn stop_sending(&self) {
        self.shared
            .phase
            .store(Phase::Stop as u8, Ordering::Release);
    }

    /// Stops every peer and returns what they counted.
    pub(crate) fn finish(mut self) -> Finished {
        self.stop();
        let stats = &self.shared.stats;
        let count = |c: &AtomicU64| c.load(Ordering::Acquire);
        Finished {
            sent: self.shared.streams.iter().map(|s| s.sent()).collect(),
            seen: self
                .shared
                .tallies
                .iter()
                .map(|tally| lock(&tally.seen).clone())
                .collect(),
            checkpoints: lock(&self.checkpoints).clone(),
            connects: [
                ("page connections", count(&stats.page_connects)),
                ("device connections", count(&stats.device_connects)),
                ("mqtt connections", count(&stats.mqtt_connects)),
                ("ping floods", count(&stats.floods)),
                ("pings", count(&stats.pings)),
            ],
            notes: stats.notes(),
        }
    }

    fn stop(&mut self) {
        self.stop_sending();
        let _ = self.shutdown.send(true);
        self.zmq_stop.store(true, Ordering::Release);
        for thread in self.zmq_threads.drain(..) {
            let _ = thread.join();
        }
        // Gives the tasks a moment to say goodbye (close frames, MQTT
        // DISCONNECT) before their runtime goes.
        std::thread::sleep(Duration::from_millis(200));
        if let Some(finish) = self.finish.take() {
            let _ = finish.send(());
        }
        if let Some(thread) = self.runtime.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The device's listening socket, with the small receive buffer its
/// connections inherit, on `port` (0: any) again after a restart.
fn bind_device(port: u16) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.set_recv_buffer_size(SMALL_BUFFER)?;
    socket.bind(SocketAddr::from(([127, 0, 0, 1], port)))?;
    socket.listen(4)
}

fn raw_publisher(
    context: &zmq::Context,
    port: u16,
    shared: &Shared,
    stop: &AtomicBool,
) -> Result<()> {
    let socket = context.socket(zmq::PUB)?;
    // No limit: while the backplane is away, messages are dropped by the
    // socket (nobody subscribes), never held back, so the sender's pace and
    // count stay exact.
    socket.set_sndhwm(0)?;
    socket.set_linger(0)?;
    socket.connect(&format!("tcp://127.0.0.1:{port}"))?;
    let topics = [
        (TOPIC_PAGES, S_PAGES),
        (TOPIC_DEVICE, S_DEVICE),
        (TOPIC_MQTT, S_MQTT),
    ];
    let mut paces = [Pace::new(shared.rate); 3];
    let mut buffer = Vec::with_capacity(shared.payload.max(16));
    while !stop.load(Ordering::Acquire) {
        std::thread::sleep(TICK);
        let now = Instant::now();
        for ((topic, stream), pace) in topics.iter().zip(paces.iter_mut()) {
            match shared.phase() {
                Phase::Probe => {
                    socket.send(topic.as_bytes(), zmq::SNDMORE)?;
                    socket.send(codec::PROBE, 0)?;
                }
                Phase::Go => {
                    let stream = shared.stream(*stream);
                    for _ in 0..pace.due(now) {
                        buffer.clear();
                        codec::encode(stream.sent(), shared.payload, &mut buffer);
                        socket.send(topic.as_bytes(), zmq::SNDMORE)?;
                        socket.send(&buffer[..], 0)?;
                        stream.advance(1);
                    }
                }
                Phase::Stop => {}
            }
        }
    }
    Ok(())
}

/// Which path a bus message of `topic` belongs to.
fn bus_path(topic: &[u8]) -> Option<usize> {
    [
        (TOPIC_PAGES, T_BUS_PAGES),
        (TOPIC_PAGE_IN, T_PAGE_IN),
        (TOPIC_DEVICE, T_BUS_DEVICE),
        (TOPIC_DEVICE_IN, T_DEVICE_IN),
        (TOPIC_MQTT, T_BUS_MQTT),
        (TOPIC_MQTT_IN, T_MQTT_IN),
    ]
    .into_iter()
    .find(|(name, _)| name.as_bytes() == topic)
    .map(|(_, path)| path)
}

fn observer(context: &zmq::Context, port: u16, shared: &Shared, stop: &AtomicBool) -> Result<()> {
    let socket = context.socket(zmq::SUB)?;
    // No limit, so that this subscriber never misses what the bus carried.
    socket.set_rcvhwm(0)?;
    socket.set_rcvtimeo(100)?;
    socket.connect(&format!("tcp://127.0.0.1:{port}"))?;
    for topic in [
        TOPIC_PAGES,
        TOPIC_PAGE_IN,
        TOPIC_DEVICE,
        TOPIC_DEVICE_IN,
        TOPIC_MQTT,
        TOPIC_MQTT_IN,
    ] {
        socket.set_subscribe(topic.as_bytes())?;
    }
    let (mut topic, mut body) = (zmq::Message::new(), zmq::Message::new());
    while !stop.load(Ordering::Acquire) {
        match socket.recv(&mut topic, 0) {
            Ok(()) => {}
            Err(zmq::Error::EAGAIN) => continue,
            Err(e) => return Err(e.into()),
        }
        if !socket.get_rcvmore()? {
            continue;
        }
        socket.recv(&mut body, 0)?;
        // A message of more than two frames is not ours: skip the rest.
        while socket.get_rcvmore()? {
            socket.recv(&mut body, 0)?;
        }
        if let Some(path) = bus_path(&topic) {
            shared.observe(path, codec::decode(&body));
        }
    }
    Ok(())
}

async fn checkpoints(
    shared: Arc<Shared>,
    out: Arc<Mutex<Vec<Checkpoint>>>,
    origin: Instant,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {}
        }
        lock(&out).push(Checkpoint {
            at_ms: origin.elapsed().as_millis() as u64,
            sent: shared.streams.iter().map(|s| s.sent()).collect(),
        });
    }
}

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

fn ws_error(e: tokio_tungstenite::tungstenite::Error) -> Error {
    Error::WebSocket(Box::new(e))
}

/// Opens a WebSocket to `url` (`ws://127.0.0.1:PORT`), with a small receive
/// buffer when asked.
async fn open_page(url: &str, small_buffer: bool) -> Result<Ws> {
    let address: SocketAddr = url
        .strip_prefix("ws://")
        .map(|rest| rest.split('/').next().unwrap_or(rest))
        .and_then(|authority| authority.parse().ok())
        .ok_or_else(|| Error::Invalid(format!("not a ws://ADDRESS:PORT URL: {url}")))?;
    let socket = TcpSocket::new_v4()?;
    if small_buffer {
        socket.set_recv_buffer_size(SMALL_BUFFER)?;
    }
    let stream = socket.connect(address).await?;
    stream.set_nodelay(true)?;
    let (ws, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .map_err(ws_error)?;
    Ok(ws)
}

/// Waits for shutdown for at most `time`; true if it came.
async fn pause(shutdown: &mut watch::Receiver<bool>, time: Duration) -> bool {
    tokio::select! {
        _ = shutdown.changed() => true,
        () = tokio::time::sleep(time) => *shutdown.borrow(),
    }
}

/// A page of the soak.
#[derive(Debug)]
struct Page {
    url: String,
    /// The path it counts.
    tally: usize,
    /// Whether it also sends (page -> bus).
    sends: bool,
    small_buffer: bool,
}

/// One page, reconnecting when its connection ends: it receives the pages'
/// topic, sends when asked to, stalls on command.
async fn page(
    shared: Arc<Shared>,
    page: Page,
    mut stall: Option<mpsc::Receiver<Duration>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut pace = Pace::new(shared.rate);
    let hello = json!({"id": TOPIC_PAGE_IN}).to_string();
    loop {
        if *shutdown.borrow() {
            return;
        }
        let ws = match tokio::time::timeout(CONNECT, open_page(&page.url, page.small_buffer)).await
        {
            Ok(Ok(ws)) => ws,
            Ok(Err(e)) => {
                shared
                    .stats
                    .note(format!("{}: {e}", PATHS[page.tally].name));
                if pause(&mut shutdown, RETRY).await {
                    return;
                }
                continue;
            }
            Err(_) => {
                shared.stats.note(format!(
                    "{}: no connection within {CONNECT:?}",
                    PATHS[page.tally].name
                ));
                continue;
            }
        };
        shared.stats.page_connects.fetch_add(1, Ordering::AcqRel);
        let (mut sink, mut source) = ws.split();
        if sink.send(WsMessage::text(hello.clone())).await.is_err() {
            continue;
        }
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let why = loop {
            tokio::select! {
                _ = shutdown.changed() => {
                    let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
                    return;
                }
                _ = tick.tick(), if page.sends => {
                    let sent = tokio::time::timeout(WRITE, send_due(&shared, &mut sink, &mut pace)).await;
                    match sent {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => break e.to_string(),
                        Err(_) => break format!("sending took over {WRITE:?}"),
                    }
                }
                command = async {
                    match stall.as_mut() {
                        Some(commands) => commands.recv().await,
                        None => std::future::pending().await,
                    }
                } => match command {
                    // Reads nothing meanwhile: the gateway's queue for this
                    // page fills, and the grace runs out.
                    Some(time) => if pause(&mut shutdown, time).await {
                        return;
                    },
                    None => stall = None,
                },
                frame = source.next() => match frame {
                    Some(Ok(WsMessage::Text(text))) => {
                        shared.observe(page.tally, codec::decode_json(&text));
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => break e.to_string(),
                    None => break "the gateway closed the connection".to_owned(),
                },
            }
        };
        shared.stats.note(format!(
            "{}: connection ended: {why}",
            PATHS[page.tally].name
        ));
    }
}

/// The page's messages due now: probes, or numbered `{"msg": i}`.
async fn send_due<S>(shared: &Shared, sink: &mut S, pace: &mut Pace) -> Result<()>
where
    S: futures_util::Sink<WsMessage, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
{
    match shared.phase() {
        Phase::Probe => sink
            .send(WsMessage::text(codec::PROBE_JSON))
            .await
            .map_err(ws_error),
        Phase::Go => {
            let stream = shared.stream(S_PAGE_IN);
            let due = pace.due(Instant::now());
            if due == 0 {
                return Ok(());
            }
            for _ in 0..due {
                sink.feed(WsMessage::text(codec::encode_json(stream.sent())))
                    .await
                    .map_err(ws_error)?;
                stream.advance(1);
            }
            sink.flush().await.map_err(ws_error)
        }
        Phase::Stop => Ok(()),
    }
}

/// A client that sends pings at [`FLOOD_RATE`] for `time` and reads
/// nothing, then goes (with the gateway's pongs unread).
async fn flood(
    shared: Arc<Shared>,
    url: String,
    time: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ws = match tokio::time::timeout(CONNECT, open_page(&url, true)).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => return shared.stats.note(format!("ping flood: {e}")),
        Err(_) => {
            return shared
                .stats
                .note(format!("ping flood: no connection within {CONNECT:?}"))
        }
    };
    shared.stats.floods.fetch_add(1, Ordering::AcqRel);
    let hello = json!({"id": FLOOD_ID}).to_string();
    if ws.send(WsMessage::text(hello)).await.is_err() {
        return shared
            .stats
            .note("ping flood: the id message failed".to_owned());
    }
    let ping = WsMessage::Ping(vec![0x70; PING_BYTES].into());
    let per_tick = (FLOOD_RATE * TICK.as_millis() as u64 / 1000).max(1);
    let end = Instant::now() + time;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    while Instant::now() < end {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {}
        }
        let burst = async {
            for _ in 0..per_tick {
                ws.feed(ping.clone()).await?;
            }
            ws.flush().await
        };
        match tokio::time::timeout(WRITE, burst).await {
            Ok(Ok(())) => {
                shared.stats.pings.fetch_add(per_tick, Ordering::AcqRel);
            }
            Ok(Err(e)) => return shared.stats.note(format!("ping flood: {e}")),
            Err(_) => {
                return shared.stats.note(format!(
                    "ping flood: the gateway took no ping for {WRITE:?}"
                ))
            }
        }
    }
}

/// The device: accepts the gateway, serves it until it leaves or is told
/// to close, and listens again on the same port.
async fn device(
    shared: Arc<Shared>,
    listener: TcpListener,
    port: u16,
    mut commands: mpsc::Receiver<DeviceCommand>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut listener = Some(listener);
    loop {
        let Some(accepting) = listener.as_ref() else {
            match bind_device(port) {
                Ok(bound) => listener = Some(bound),
                Err(e) => {
                    shared.stats.note(format!("device: listening again: {e}"));
                    if pause(&mut shutdown, RETRY).await {
                        return;
                    }
                }
            }
            continue;
        };
        let stream = tokio::select! {
            _ = shutdown.changed() => return,
            accepted = accepting.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    shared.stats.note(format!("device: accept: {e}"));
                    if pause(&mut shutdown, RETRY).await {
                        return;
                    }
                    continue;
                }
            },
            command = commands.recv() => {
                shared.stats.note(format!("device: {command:?} while not connected: ignored"));
                continue;
            }
        };
        shared.stats.device_connects.fetch_add(1, Ordering::AcqRel);
        match serve_device(&shared, stream, &mut listener, &mut commands, &mut shutdown).await {
            DeviceEnd::Shutdown => return,
            DeviceEnd::Away(time) => {
                if pause(&mut shutdown, time).await {
                    return;
                }
            }
            DeviceEnd::Lost(why) => shared
                .stats
                .note(format!("device: connection ended: {why}")),
        }
    }
}

enum DeviceEnd {
    Shutdown,
    /// Told to close: away for this long.
    Away(Duration),
    /// The gateway closed, or the connection failed.
    Lost(String),
}

async fn serve_device(
    shared: &Arc<Shared>,
    stream: TcpStream,
    listener: &mut Option<TcpListener>,
    commands: &mut mpsc::Receiver<DeviceCommand>,
    shutdown: &mut watch::Receiver<bool>,
) -> DeviceEnd {
    let _ = stream.set_nodelay(true);
    let (read_half, write_half) = stream.into_split();
    let paused = Arc::new(Mutex::new(None::<Instant>));
    let closing = Arc::new(AtomicBool::new(false));
    let mut reader = tokio::spawn(read_device(shared.clone(), read_half, paused.clone()));
    let writer = tokio::spawn(write_device(shared.clone(), write_half, closing.clone()));
    let end = loop {
        tokio::select! {
            _ = shutdown.changed() => break DeviceEnd::Shutdown,
            read = &mut reader => {
                let why = match read {
                    Ok(Ok(())) => "the gateway closed the connection".to_owned(),
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => e.to_string(),
                };
                writer.abort();
                return DeviceEnd::Lost(why);
            }
            command = commands.recv() => match command {
                Some(DeviceCommand::StopReading(time)) => {
                    *lock(&paused) = Some(Instant::now() + time);
                }
                Some(DeviceCommand::Close(time)) => {
                    // Refuse the gateway's next attempts first, so that it
                    // really finds the device away.
                    *listener = None;
                    // Says goodbye (end of stream), then reads what the
                    // gateway had already written until it closes too: a
                    // device leaving this way loses nothing in flight.
                    closing.store(true, Ordering::Release);
                    match tokio::time::timeout(CONNECT, &mut reader).await {
                        Ok(_) => {}
                        Err(_) => shared.stats.note(format!(
                            "device: the gateway did not close within {CONNECT:?} of the device's end of stream"
                        )),
                    }
                    break DeviceEnd::Away(time);
                }
                None => break DeviceEnd::Shutdown,
            },
        }
    };
    reader.abort();
    writer.abort();
    end
}

/// Reads frames from the gateway, pausing when told, until end of stream.
async fn read_device(
    shared: Arc<Shared>,
    read_half: OwnedReadHalf,
    paused: Arc<Mutex<Option<Instant>>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(read_half);
    let mut frame = [0u8; 255];
    loop {
        let until = lock(&paused).take();
        if let Some(until) = until {
            tokio::time::sleep_until(until).await;
        }
        let length = match reader.read_u8().await {
            Ok(length) => usize::from(length),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        };
        reader.read_exact(&mut frame[..length]).await?;
        shared.observe(T_DEVICE, codec::decode(&frame[..length]));
    }
}

/// Sends the device's frames at the pace; on `closing`, ends the stream.
async fn write_device(
    shared: Arc<Shared>,
    mut write_half: OwnedWriteHalf,
    closing: Arc<AtomicBool>,
) -> std::io::Result<()> {
    let stream = shared.stream(S_DEVICE_IN);
    let mut pace = Pace::new(shared.rate);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut buffer = Vec::with_capacity(4096);
    loop {
        tick.tick().await;
        if closing.load(Ordering::Acquire) {
            return write_half.shutdown().await;
        }
        buffer.clear();
        let first = stream.sent();
        let frames = match shared.phase() {
            Phase::Probe => {
                frame(&mut buffer, |out| out.extend_from_slice(codec::PROBE))?;
                0
            }
            Phase::Go => {
                let due = pace.due(Instant::now());
                for seq in first..first + due {
                    frame(&mut buffer, |out| codec::encode(seq, shared.payload, out))?;
                }
                due
            }
            Phase::Stop => continue,
        };
        if buffer.is_empty() {
            continue;
        }
        match tokio::time::timeout(WRITE, write_half.write_all(&buffer)).await {
            Ok(written) => written?,
            Err(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("the gateway took nothing for {WRITE:?}"),
                ))
            }
        }
        stream.advance(frames);
    }
}

/// Appends one frame, behind its 1-byte length, to `out`.
fn frame(out: &mut Vec<u8>, payload: impl FnOnce(&mut Vec<u8>)) -> std::io::Result<()> {
    let at = out.len();
    out.push(0);
    payload(out);
    out[at] = u8::try_from(out.len() - at - 1).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "a device frame must fit in 255 bytes",
        )
    })?;
    Ok(())
}

fn mqtt_options(role: &str, port: u16) -> MqttOptions {
    let id = format!("banyan-soak-{role}-{}", std::process::id());
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(5));
    options
}

/// Counts what `mqttgw` publishes on MQTT, resubscribing after every
/// reconnection (a restarted broker forgets subscriptions).
async fn mqtt_receiver(shared: Arc<Shared>, port: u16, mut shutdown: watch::Receiver<bool>) {
    let (client, mut eventloop) = AsyncClient::new(mqtt_options("sub", port), 16);
    loop {
        let event = tokio::select! {
            _ = shutdown.changed() => {
                let _ = client.try_disconnect();
                return;
            }
            event = eventloop.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                shared.stats.mqtt_connects.fetch_add(1, Ordering::AcqRel);
                if let Err(e) = client.try_subscribe(MQTT_OUT, QoS::AtMostOnce) {
                    shared.stats.note(format!("mqtt subscriber: {e}"));
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let seq = std::str::from_utf8(&publish.payload)
                    .ok()
                    .and_then(codec::decode_json);
                shared.observe(T_MQTT, seq);
            }
            Ok(_) => {}
            Err(_) => {
                if pause(&mut shutdown, RETRY).await {
                    return;
                }
            }
        }
    }
}

/// Publishes on the topic `mqttgw` subscribes to, at the pace, while
/// connected (a publisher that knows its broker is down does not publish).
async fn mqtt_sender(shared: Arc<Shared>, port: u16, mut shutdown: watch::Receiver<bool>) {
    let (client, mut eventloop) = AsyncClient::new(mqtt_options("pub", port), 64);
    let stream = shared.stream(S_MQTT_IN);
    let mut pace = Pace::new(shared.rate);
    let mut connected = false;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => {
                let _ = client.try_disconnect();
                return;
            }
            event = eventloop.poll() => match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    shared.stats.mqtt_connects.fetch_add(1, Ordering::AcqRel);
                    connected = true;
                }
                Ok(_) => {}
                Err(_) => {
                    connected = false;
                    if pause(&mut shutdown, RETRY).await {
                        return;
                    }
                }
            },
            _ = tick.tick() => {
                let due = pace.due(Instant::now());
                if !connected {
                    continue;
                }
                match shared.phase() {
                    Phase::Probe => {
                        let _ = client.try_publish(MQTT_IN, QoS::AtMostOnce, false, codec::PROBE_JSON);
                    }
                    Phase::Go => {
                        for _ in 0..due {
                            let payload = codec::encode_json(stream.sent());
                            // A full request queue: the client is not keeping
                            // up with its broker; what is not taken is not sent.
                            if client.try_publish(MQTT_IN, QoS::AtMostOnce, false, payload).is_err() {
                                break;
                            }
                            stream.advance(1);
                        }
                    }
                    Phase::Stop => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_counts_loss_duplicates_order_and_strangers() {
        let mut seen = Seen::default();
        for seq in [0, 1, 3, 2, 3, 200] {
            seen.observe(Some(seq), 100);
        }
        seen.observe(None, 100);
        assert_eq!(seen.received, 4);
        assert_eq!(seen.duplicates, 1);
        assert_eq!(seen.out_of_order, 1);
        assert_eq!(seen.unknown, 1);
        assert_eq!(seen.probes, 1);
        assert_eq!(seen.max, Some(3));
        assert!(seen.has(2) && !seen.has(4) && !seen.has(10_000));
        assert_eq!(seen.first_from(4, 100), None);
        seen.observe(Some(70), 100);
        assert_eq!(seen.first_from(4, 100), Some(70));
    }

    #[test]
    fn pace_is_steady_and_skips_a_long_backlog() {
        let start = Instant::now();
        let mut pace = Pace::new(100);
        assert_eq!(pace.due(start), 0);
        assert_eq!(pace.due(start + Duration::from_millis(100)), 10);
        assert_eq!(pace.due(start + Duration::from_millis(100)), 0);
        assert_eq!(pace.due(start + Duration::from_millis(250)), 15);
        // Held up for 5 s: one second's worth, not five.
        assert_eq!(pace.due(start + Duration::from_millis(5250)), 100);
    }

    #[test]
    fn every_bus_topic_has_its_path_and_frames_fit() {
        assert_eq!(bus_path(b"from_soak"), Some(T_BUS_PAGES));
        assert_eq!(bus_path(b"from_mqtt"), Some(T_MQTT_IN));
        assert_eq!(bus_path(b"from_soakx"), None);
        let mut out = Vec::new();
        frame(&mut out, |o| codec::encode(7, 100, o)).expect("fits");
        assert_eq!(usize::from(out[0]), out.len() - 1);
        assert_eq!(codec::decode(&out[1..]), Some(7));
        assert!(frame(&mut out, |o| codec::encode(7, 400, o)).is_err());
    }
}
