//! The client's I/O thread, which owns its two ZeroMQ sockets.
//!
//! libzmq sockets may be used by one thread only, so each [`Client`] has a
//! thread (`banyan-client`) that owns an XPUB socket connected to the
//! backplane's publisher port and a SUB socket connected to its subscriber
//! port. Tasks reach it through a bounded command queue; it hands received
//! messages to a bounded inbox. When it has nothing to do it sleeps in
//! `zmq_poll`, watching both sockets and a wake-up descriptor (see
//! [`crate::wake`]).
//!
//! [`Client`]: crate::Client

use std::collections::HashMap;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::backplane::endpoint;
use crate::config::ClientConfig;
use crate::envelope::{FrameReader, Message};
use crate::error::{Error, Result};
use crate::marks::Marks;
use crate::topic::{is_control, is_probe, probe_topic, Upstream};
use crate::wake::Wake;
use crate::zmq_ext::set_xpub_nodrop;

/// State shared by the handles and the I/O thread.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) wake: Wake,
    /// Set by the I/O thread when it holds a received message the inbox had
    /// no room for; the reader of [`Messages`](crate::Messages) then wakes it.
    pub(crate) inbox_blocked: AtomicBool,
    /// Bytes (topics and payloads) of the batches in the inbox, not yet
    /// taken by the reader: the inbox is bounded in bytes as well as in
    /// batches ([`ClientConfig::queue_bytes`](crate::ClientConfig::queue_bytes)).
    pub(crate) inbox_bytes: AtomicU64,
    /// Bytes the queue toward the I/O thread may still take in large
    /// messages ([`LARGE`] bytes or more): a publisher of one takes its
    /// bytes (at most the whole budget) before queuing it, the I/O thread
    /// gives them back once ZeroMQ has the message. Small messages skip it:
    /// the queue's bound in messages bounds their bytes.
    pub(crate) outbox_room: Semaphore,
    /// The budget of each queue ([`ClientConfig::queue_bytes`](crate::ClientConfig::queue_bytes)).
    pub(crate) queue_bytes: u64,
    /// Whether the backplane forwards subscriptions (an XPUB backplane), so
    /// that probes return as subscription notices rather than as messages.
    pub(crate) forwards_subscriptions: AtomicBool,
    /// Received messages that were not Banyan messages and were dropped.
    pub(crate) malformed: AtomicU64,
}

impl Shared {
    pub(crate) fn new(queue_bytes: u64) -> Result<Shared> {
        let queue_bytes = queue_bytes.clamp(1, u64::from(u32::MAX));
        Ok(Shared {
            wake: Wake::new()?,
            inbox_blocked: AtomicBool::new(false),
            inbox_bytes: AtomicU64::new(0),
            outbox_room: Semaphore::new(queue_bytes as usize),
            queue_bytes,
            forwards_subscriptions: AtomicBool::new(false),
            malformed: AtomicU64::new(0),
        })
    }
}

/// Received messages on their way to the reader, and their bytes (topics
/// and payloads), counted once as they are read: the inbox is bounded in
/// both.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub(crate) messages: Vec<Message>,
    pub(crate) bytes: u64,
}

/// The bytes of a message as the queues count them: topic and payload.
fn message_bytes(message: &Message) -> u64 {
    (message.topic().len() + message.payload().len()) as u64
}

/// Messages of this many bytes or more count against the outgoing queue's
/// byte budget; smaller ones are bounded by its count alone (8,192 of them
/// are at most 32 MiB), so that publishing them costs nothing more.
pub(crate) const LARGE: u64 = 4096;

impl Shared {
    /// The bytes of the outgoing queue's budget `message` takes: none for a
    /// small message; its own, or the whole budget when it is larger, for a
    /// large one (which then goes alone).
    pub(crate) fn outbox_share(&self, message: &Message) -> u32 {
        self.outbox_share_of(message_bytes(message))
    }

    /// [`Shared::outbox_share`] of a message of `bytes`.
    fn outbox_share_of(&self, bytes: u64) -> u32 {
        if bytes < LARGE {
            return 0;
        }
        // `queue_bytes` fits in a u32.
        bytes.min(self.queue_bytes) as u32
    }
}

/// What became of one attempt to queue a batch for the reader.
enum Delivered {
    Yes,
    Full(Batch),
    Closed,
}

/// Work handed to the I/O thread.
#[derive(Debug)]
pub(crate) enum Command {
    Publish(Message),
    Subscribe {
        prefix: Vec<u8>,
        done: oneshot::Sender<Result<()>>,
    },
    Unsubscribe {
        prefix: Vec<u8>,
    },
    /// Answer once whether somebody subscribes to `topic` equals `present`.
    WaitForSubscriber {
        topic: Vec<u8>,
        present: bool,
        done: oneshot::Sender<()>,
    },
    Close {
        done: oneshot::Sender<()>,
    },
}

/// How often a socket retries its connection to an absent backplane, in ms.
const RECONNECT_INTERVAL_MS: i32 = 100;

/// Commands or messages handled per turn before the other side gets one;
/// received messages reach [`Messages`](crate::Messages) in batches of at
/// most this many, one channel operation each.
pub(crate) const BATCH: usize = 1024;
/// Commands handled between looks at the sockets while commands stream in.
const LOOK_EVERY: usize = 256;
/// Retry interval while the backplane's queue for us is full.
const BACKOFF: Duration = Duration::from_millis(1);
/// After the empty subscription of a forwarding backplane has been seen, how
/// long to wait for the probe before deciding the backplane does not forward
/// subscriptions.
const FORWARDER_GRACE: Duration = Duration::from_millis(300);
/// How often a probe message is published again until it comes back.
const PROBE_RESEND: Duration = Duration::from_millis(20);
/// How long closing may flush queued messages.
const LINGER: Duration = Duration::from_secs(1);

static NEXT_CLIENT: AtomicU64 = AtomicU64::new(0);

/// Creates the sockets, starts connecting and spawns the thread. `ready` is
/// answered once the backplane answered (or did not in time).
pub(crate) fn spawn(
    config: &ClientConfig,
    shared: Arc<Shared>,
    commands: mpsc::Receiver<Command>,
    inbox: mpsc::Sender<Batch>,
    ready: oneshot::Sender<Result<()>>,
) -> Result<()> {
    let context = zmq::Context::new();
    let mut xpub = context.socket(zmq::XPUB)?;
    let sub = context.socket(zmq::SUB)?;
    let ipv6 = config.address.contains(':');
    for socket in [&xpub, &sub] {
        socket.set_linger(LINGER.as_millis() as i32)?;
        socket.set_ipv6(ipv6)?;
        socket.set_sndhwm(config.high_water_mark)?;
        socket.set_rcvhwm(config.high_water_mark)?;
        // Retry every 100 ms, as pyzmq's sockets do (ZeroMQ's default with
        // no maximum): a backplane restarted by hand or by a service
        // manager is found within 0.1 s. A doubling backoff (100 ms up to
        // 2 s) found it 1.3 s late, while every publisher's messages of that
        // time were lost; ten connection attempts a second to one address
        // cost nothing worth saving.
        socket.set_reconnect_ivl(RECONNECT_INTERVAL_MS)?;
        socket.set_reconnect_ivl_max(0)?;
    }
    sub.set_rcvhwm(config.receive_high_water_mark)?;
    set_xpub_nodrop(&mut xpub, true)?;
    for (socket, port) in [
        (&xpub, config.publisher_port),
        (&sub, config.subscriber_port),
    ] {
        let endpoint = endpoint(&config.address, port);
        socket
            .connect(&endpoint)
            .map_err(|source| Error::Connect { endpoint, source })?;
    }

    let now = Instant::now();
    let client_id = NEXT_CLIENT.fetch_add(1, Ordering::Relaxed);
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let mut driver = Driver {
        xpub,
        sub,
        shared,
        commands,
        inbox: Some(inbox),
        reader: FrameReader::default(),
        held_in: None,
        held_out: None,
        out_marks: Marks::new(
            config.queue_bytes,
            (config.high_water_mark, config.high_water_mark),
        ),
        in_marks: Marks::new(
            config.queue_bytes,
            (
                config.receive_high_water_mark,
                config.receive_high_water_mark,
            ),
        ),
        inbox_budget: config.queue_bytes,
        outbox_taken: 0,
        upstream: Upstream::default(),
        probes: HashMap::new(),
        waiters: Vec::new(),
        probe_base: format!("{}-{client_id}-{nonce}", std::process::id()),
        probe_seq: 0,
        ready: Some(Ready {
            tx: ready,
            deadline: now + config.ready_timeout,
            grace: None,
            address: config.address.clone(),
            publisher_port: config.publisher_port,
            subscriber_port: config.subscriber_port,
            timeout: config.ready_timeout,
        }),
        timeout: config.ready_timeout,
        unlogged_malformed: 0,
    };
    let probe = driver.new_probe();
    driver.sub.set_subscribe(&probe)?;
    driver.probes.insert(
        probe,
        Probe {
            what: ProbeFor::Connect,
            resend: None,
        },
    );

    std::thread::Builder::new()
        .name("banyan-client".to_owned())
        .spawn(move || {
            let close = driver.run();
            // Publishers waiting for room hear that nothing will take their
            // message any more.
            driver.shared.outbox_room.close();
            driver.flush();
            drop(driver);
            // Waits up to LINGER for queued messages to reach the backplane.
            drop(context);
            if let Some(done) = close {
                let _ = done.send(());
            }
        })?;
    Ok(())
}

/// The pending answer to `connect`.
struct Ready {
    tx: oneshot::Sender<Result<()>>,
    deadline: Instant,
    /// Set once the empty subscription has been seen.
    grace: Option<Instant>,
    address: String,
    publisher_port: u16,
    subscriber_port: u16,
    timeout: Duration,
}

/// A probe topic this client subscribed to, and what its return answers.
///
/// It returns as a subscription notice on the XPUB socket from a backplane
/// that forwards subscriptions. A forwarder that does not (python-banyan's)
/// subscribes to everything instead; there the client publishes a message
/// on the probe topic until it comes back through the SUB socket, which shows
/// the subscriptions made before the probe's are in place too.
struct Probe {
    what: ProbeFor,
    /// When to publish the probe message next (forwarder backplanes only).
    resend: Option<Instant>,
}

enum ProbeFor {
    Connect,
    Subscribe {
        topic: Vec<u8>,
        done: oneshot::Sender<Result<()>>,
        deadline: Instant,
    },
}

struct Driver {
    xpub: zmq::Socket,
    sub: zmq::Socket,
    shared: Arc<Shared>,
    commands: mpsc::Receiver<Command>,
    /// `None` once the [`Messages`](crate::Messages) stream was dropped.
    /// Messages travel in batches: one channel operation for up to `BATCH`.
    inbox: Option<mpsc::Sender<Batch>>,
    reader: FrameReader,
    /// A received batch the inbox had no room for.
    held_in: Option<Batch>,
    /// A message the backplane's queue had no room for.
    held_out: Option<Message>,
    /// The mark of the queue toward the backplane, lowered while large
    /// messages are published (only its first half is used).
    out_marks: Marks,
    /// The mark of the queue of what the backplane sends, likewise.
    in_marks: Marks,
    /// Bytes the inbox holds at most (but always one batch).
    inbox_budget: u64,
    /// Bytes of the large messages handed to ZeroMQ this turn, to give
    /// back to [`Shared::outbox_room`].
    outbox_taken: u64,
    /// The subscriptions the backplane forwards upstream.
    upstream: Upstream,
    probes: HashMap<Vec<u8>, Probe>,
    waiters: Vec<Waiter>,
    probe_base: String,
    probe_seq: u64,
    ready: Option<Ready>,
    timeout: Duration,
    unlogged_malformed: u64,
}

impl Driver {
    /// Runs until closed; returns the close request to answer, if any.
    fn run(&mut self) -> Option<oneshot::Sender<()>> {
        let mut since_look = 0;
        loop {
            let handled = match self.handle_commands() {
                Ok(Flow::Continue(handled)) => handled,
                Ok(Flow::Close(done)) => return done,
                Err(e) => {
                    tracing::error!("bus client stopped: {e}");
                    return None;
                }
            };
            let mut busy = handled > 0;
            // A look at a socket that finds nothing costs ZeroMQ a system
            // call; while commands stream in, look only every so often.
            since_look += handled;
            if handled == 0 || since_look >= LOOK_EVERY {
                since_look = 0;
                busy |= self.receive_messages();
                busy |= self.receive_subscriptions();
            }
            let now = Instant::now();
            self.expire(now);
            self.resend_probes(now);
            if !busy {
                self.sleep();
            }
        }
    }

    fn handle_commands(&mut self) -> Result<Flow> {
        let flow = self.take_commands();
        // Once per turn: the room goes back to publishers in one operation.
        if self.outbox_taken > 0 {
            self.shared
                .outbox_room
                .add_permits(std::mem::take(&mut self.outbox_taken) as usize);
        }
        flow
    }

    fn take_commands(&mut self) -> Result<Flow> {
        if let Some(message) = self.held_out.take() {
            if !self.try_publish(message)? {
                return Ok(Flow::Continue(0));
            }
        }
        let mut handled = 0;
        while handled < BATCH {
            let command = match self.commands.try_recv() {
                Ok(command) => command,
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => return Ok(Flow::Close(None)),
            };
            handled += 1;
            match command {
                Command::Publish(message) => {
                    if !self.try_publish(message)? {
                        break;
                    }
                }
                Command::Subscribe { prefix, done } => self.subscribe(prefix, done)?,
                Command::Unsubscribe { prefix } => self.sub.set_unsubscribe(&prefix)?,
                Command::WaitForSubscriber {
                    topic,
                    present,
                    done,
                } => {
                    self.waiters.push(Waiter {
                        topic,
                        present,
                        done,
                    });
                    self.answer_waiters();
                }
                Command::Close { done } => return Ok(Flow::Close(Some(done))),
            }
        }
        Ok(Flow::Continue(handled))
    }

    /// Sends a message; `Ok(false)` when the backplane's queue is full and the
    /// message is held for a retry.
    fn try_publish(&mut self, message: Message) -> Result<bool> {
        let size = message_bytes(&message);
        if let Some((mark, _)) = self.out_marks.observe(size) {
            tracing::debug!(mark, message_bytes = size, "publishing queue mark set");
            self.xpub.set_sndhwm(mark)?;
        }
        match self
            .xpub
            .send(message.topic().as_bytes(), zmq::SNDMORE | zmq::DONTWAIT)
        {
            Ok(()) => {}
            Err(zmq::Error::EAGAIN) => {
                self.held_out = Some(message);
                return Ok(false);
            }
            Err(e) => return Err(e.into()),
        }
        // Once the first frame is accepted the second always is.
        self.xpub.send(&message.payload()[..], zmq::DONTWAIT)?;
        self.outbox_taken += u64::from(self.shared.outbox_share_of(size));
        Ok(true)
    }

    fn subscribe(&mut self, prefix: Vec<u8>, done: oneshot::Sender<Result<()>>) -> Result<()> {
        self.sub.set_subscribe(&prefix)?;
        // The backplane handles our subscriptions in order, so once this
        // fresh probe has come back it has registered `prefix` too.
        let probe = self.new_probe();
        self.sub.set_subscribe(&probe)?;
        let now = Instant::now();
        let by_message = !self.shared.forwards_subscriptions.load(Ordering::Relaxed);
        self.probes.insert(
            probe,
            Probe {
                what: ProbeFor::Subscribe {
                    topic: prefix,
                    done,
                    deadline: now + self.timeout,
                },
                resend: by_message.then_some(now),
            },
        );
        Ok(())
    }

    /// Publishes the probe messages that are due (forwarder backplanes).
    fn resend_probes(&mut self, now: Instant) {
        for (topic, probe) in &mut self.probes {
            if probe.resend.is_some_and(|at| at <= now) {
                // Lost if the backplane's queue is full: the next resend
                // tries again.
                let _ = self
                    .xpub
                    .send(&topic[..], zmq::SNDMORE | zmq::DONTWAIT)
                    .and_then(|()| self.xpub.send(&[0xc0u8][..], zmq::DONTWAIT));
                probe.resend = Some(now + PROBE_RESEND);
            }
        }
    }

    fn new_probe(&mut self) -> Vec<u8> {
        self.probe_seq += 1;
        probe_topic(&self.probe_base, self.probe_seq)
    }

    /// Moves received messages to the inbox; true if any moved.
    fn receive_messages(&mut self) -> bool {
        let Some(inbox) = self.inbox.clone() else {
            // Nobody reads: keep the socket drained so the backplane does not
            // count drops for us.
            return self.discard_messages();
        };
        if let Some(batch) = self.held_in.take() {
            if !self.deliver(&inbox, batch) {
                return false;
            }
        }
        let mut batch = Batch::default();
        let mut frames: Vec<zmq::Message> = Vec::with_capacity(2);
        while batch.messages.len() < BATCH {
            frames.clear();
            if !self.read_frames(&mut frames) {
                break;
            }
            if let Some(topic) = frames.first().filter(|t| is_control(t)) {
                if is_probe(topic) {
                    let topic = topic.to_vec();
                    self.probe_returned(&topic);
                }
                continue;
            }
            let size = frames.iter().map(|frame| frame.len() as u64).sum();
            if let Some((mark, _)) = self.in_marks.observe(size) {
                tracing::debug!(mark, message_bytes = size, "receiving queue mark set");
                if let Err(e) = self.sub.set_rcvhwm(mark) {
                    tracing::warn!("setting the receiving queue's mark failed: {e}");
                }
            }
            match self.reader.read(&frames) {
                Ok(message) => {
                    batch.messages.push(message);
                    batch.bytes += size;
                }
                Err(e) => self.malformed(e),
            }
        }
        self.log_malformed();
        if batch.messages.is_empty() {
            return false;
        }
        self.deliver(&inbox, batch);
        true
    }

    fn discard_messages(&mut self) -> bool {
        let mut frames = Vec::with_capacity(2);
        let mut moved = false;
        for _ in 0..BATCH {
            frames.clear();
            if !self.read_frames(&mut frames) {
                break;
            }
            moved = true;
        }
        moved
    }

    /// Reads the frames of one message; false when none is waiting.
    fn read_frames(&mut self, frames: &mut Vec<zmq::Message>) -> bool {
        loop {
            match self.sub.recv_msg(zmq::DONTWAIT) {
                Ok(frame) => {
                    let more = frame.get_more();
                    frames.push(frame);
                    if !more {
                        return true;
                    }
                }
                Err(zmq::Error::EAGAIN) if frames.is_empty() => return false,
                Err(e) => {
                    tracing::warn!("receiving from the backplane failed: {e}");
                    return !frames.is_empty();
                }
            }
        }
    }

    /// Queues a batch for the reader; false (batch held) when the inbox is
    /// full, in batches or in bytes.
    fn deliver(&mut self, inbox: &mpsc::Sender<Batch>, batch: Batch) -> bool {
        match self.try_deliver(inbox, batch) {
            Delivered::Yes => true,
            Delivered::Closed => {
                self.inbox = None;
                true
            }
            Delivered::Full(batch) => {
                // Say we wait, then look again: the reader either sees the
                // flag or made room before our second look.
                self.shared.inbox_blocked.store(true, Ordering::SeqCst);
                fence(Ordering::SeqCst);
                match self.try_deliver(inbox, batch) {
                    Delivered::Yes => {
                        self.shared.inbox_blocked.store(false, Ordering::SeqCst);
                        true
                    }
                    Delivered::Full(batch) => {
                        self.held_in = Some(batch);
                        false
                    }
                    Delivered::Closed => {
                        self.inbox = None;
                        true
                    }
                }
            }
        }
    }

    /// One attempt at queuing a batch. A batch always goes into an inbox
    /// that holds no bytes, so that a batch larger than the bound passes
    /// alone.
    fn try_deliver(&self, inbox: &mpsc::Sender<Batch>, batch: Batch) -> Delivered {
        let bytes = batch.bytes;
        let held = self.shared.inbox_bytes.fetch_add(bytes, Ordering::SeqCst);
        if held > 0 && held + bytes > self.inbox_budget {
            self.shared.inbox_bytes.fetch_sub(bytes, Ordering::SeqCst);
            return Delivered::Full(batch);
        }
        match inbox.try_send(batch) {
            Ok(()) => Delivered::Yes,
            Err(mpsc::error::TrySendError::Full(batch)) => {
                self.shared.inbox_bytes.fetch_sub(bytes, Ordering::SeqCst);
                Delivered::Full(batch)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Delivered::Closed,
        }
    }

    fn malformed(&mut self, error: Error) {
        self.shared.malformed.fetch_add(1, Ordering::Relaxed);
        if self.unlogged_malformed == 0 {
            tracing::warn!("dropped a message that is not a Banyan message: {error}");
        }
        self.unlogged_malformed += 1;
    }

    fn log_malformed(&mut self) {
        if self.unlogged_malformed > 1 {
            tracing::warn!(
                count = self.unlogged_malformed - 1,
                "dropped more messages that are not Banyan messages"
            );
        }
        self.unlogged_malformed = 0;
    }

    /// Handles subscription notices the backplane forwards to our XPUB.
    fn receive_subscriptions(&mut self) -> bool {
        let mut any = false;
        for _ in 0..BATCH {
            let notice = match self.xpub.recv_msg(zmq::DONTWAIT) {
                Ok(notice) => notice,
                Err(zmq::Error::EAGAIN) => break,
                Err(e) => {
                    tracing::warn!("reading a subscription notice failed: {e}");
                    break;
                }
            };
            any = true;
            let (kind, topic) = match notice.split_first() {
                Some((kind, topic)) => (*kind, topic),
                None => continue,
            };
            if is_probe(topic) {
                if kind == 1 {
                    self.probe_returned(topic);
                }
                continue;
            }
            match kind {
                1 => {
                    self.upstream.insert(topic);
                    if topic.is_empty() {
                        self.everything_forwarded();
                    }
                }
                0 => self.upstream.remove(topic),
                _ => {}
            }
            self.answer_waiters();
        }
        any
    }

    fn answer_waiters(&mut self) {
        let upstream = &self.upstream;
        let (answered, waiting): (Vec<Waiter>, Vec<Waiter>) = std::mem::take(&mut self.waiters)
            .into_iter()
            .filter(|w| !w.done.is_closed())
            .partition(|w| upstream.matches(&w.topic) == w.present);
        self.waiters = waiting;
        for waiter in answered {
            let _ = waiter.done.send(());
        }
    }

    fn probe_returned(&mut self, probe: &[u8]) {
        let Some(what) = self.probes.remove(probe) else {
            return;
        };
        if let Err(e) = self.sub.set_unsubscribe(probe) {
            tracing::debug!("dropping a probe subscription failed: {e}");
        }
        match what.what {
            ProbeFor::Connect => {
                // Returned as a subscription notice: the backplane forwards
                // subscriptions. As a message: it forwards everything.
                if what.resend.is_none()
                    && !self
                        .shared
                        .forwards_subscriptions
                        .swap(true, Ordering::Relaxed)
                {
                    tracing::debug!("the backplane forwards subscriptions");
                }
                if let Some(ready) = self.ready.take() {
                    let _ = ready.tx.send(Ok(()));
                }
            }
            ProbeFor::Subscribe { done, .. } => {
                let _ = done.send(Ok(()));
            }
        }
    }

    fn everything_forwarded(&mut self) {
        if let Some(ready) = &mut self.ready {
            ready
                .grace
                .get_or_insert_with(|| Instant::now() + FORWARDER_GRACE);
        }
    }

    /// Answers what timed out.
    fn expire(&mut self, now: Instant) {
        if let Some(ready) = self.ready.take() {
            if ready.grace.is_some_and(|g| now >= g) {
                // The backplane forwards everything and no subscription:
                // confirm by message from now on.
                for probe in self.probes.values_mut() {
                    probe.resend.get_or_insert(now);
                }
            }
            if now >= ready.deadline {
                let _ = ready.tx.send(Err(Error::BackplaneUnreachable {
                    address: ready.address,
                    publisher_port: ready.publisher_port,
                    subscriber_port: ready.subscriber_port,
                    timeout: ready.timeout,
                }));
            } else {
                self.ready = Some(ready);
            }
        }
        let expired: Vec<Vec<u8>> = self
            .probes
            .iter()
            .filter(
                |(_, p)| matches!(p.what, ProbeFor::Subscribe { deadline, .. } if now >= deadline),
            )
            .map(|(k, _)| k.clone())
            .collect();
        for key in expired {
            if let Some(Probe {
                what: ProbeFor::Subscribe { topic, done, .. },
                ..
            }) = self.probes.remove(&key)
            {
                let _ = self.sub.set_unsubscribe(&key);
                let _ = done.send(Err(Error::SubscriptionUnconfirmed {
                    topic: String::from_utf8_lossy(&topic).into_owned(),
                    timeout: self.timeout,
                }));
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let ready = self
            .ready
            .as_ref()
            .map(|r| r.grace.map_or(r.deadline, |g| g.min(r.deadline)));
        let probes = self.probes.values().flat_map(|p| {
            let deadline = match &p.what {
                ProbeFor::Subscribe { deadline, .. } => Some(*deadline),
                ProbeFor::Connect => None,
            };
            deadline.into_iter().chain(p.resend)
        });
        ready.into_iter().chain(probes).min()
    }

    /// Sleeps in `zmq_poll` until a socket, a command or a deadline needs us.
    fn sleep(&mut self) {
        self.shared.wake.prepare_sleep();
        if !self.commands.is_empty() && self.held_out.is_none() {
            self.shared.wake.woke();
            return;
        }
        let now = Instant::now();
        let mut timeout = self
            .next_deadline()
            .map(|d| d.saturating_duration_since(now).as_millis() as i64 + 1);
        if self.held_out.is_some() {
            timeout = Some(timeout.map_or(BACKOFF.as_millis() as i64, |t| {
                t.min(BACKOFF.as_millis() as i64)
            }));
        }
        let read_sub = self.held_in.is_none();
        let mut items = [
            self.xpub.as_poll_item(zmq::POLLIN),
            zmq::PollItem::from_fd(self.shared.wake.fd(), zmq::POLLIN),
            self.sub.as_poll_item(if read_sub {
                zmq::POLLIN
            } else {
                zmq::PollEvents::empty()
            }),
        ];
        if let Err(e) = zmq::poll(&mut items, timeout.unwrap_or(-1)) {
            if e != zmq::Error::EINTR {
                tracing::warn!("poll failed: {e}");
            }
        }
        self.shared.wake.woke();
    }

    /// Sends what is still held before the sockets close.
    fn flush(&mut self) {
        let deadline = Instant::now() + LINGER;
        while let Some(message) = self.held_out.take() {
            match self.try_publish(message) {
                Ok(true) => {}
                // An XPUB socket signals no writability to wait on; retry.
                Ok(false) if Instant::now() < deadline => std::thread::sleep(BACKOFF),
                _ => break,
            }
        }
        if let Some(message) = self.held_out.take() {
            tracing::warn!(
                topic = message.topic(),
                "closing with a message the backplane did not take"
            );
        }
    }
}

/// A task waiting for a topic to gain or lose its last subscriber.
struct Waiter {
    topic: Vec<u8>,
    present: bool,
    done: oneshot::Sender<()>,
}

enum Flow {
    /// Carry on; how many commands were handled.
    Continue(usize),
    Close(Option<oneshot::Sender<()>>),
}
