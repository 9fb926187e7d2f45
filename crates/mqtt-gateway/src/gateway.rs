//! The gateway itself: two tasks around one MQTT connection.
//!
//! * the **bus reader** (the caller's task, in [`Gateway::run`]) converts each
//!   bus message and appends it to the [queue](crate::outbox) for MQTT. While
//!   the broker is connected and the queue is full, it stops taking from the
//!   bus (so the bus's back-pressure reaches the publishers) until there is
//!   room, for at most the stall grace period;
//! * the **driver** owns rumqttc's event loop: it polls it (connects,
//!   disconnects, subscription acknowledgements, what arrives from MQTT, which
//!   it publishes on the bus, reconnection with a doubling, capped delay) and
//!   writes what the queue holds to the connection in batches.
//!
//! Why the driver writes publishes itself: rumqttc 0.25's event loop takes
//! one request from its channel per `poll` and flushes the socket after each
//! (one `write` system call, and a wake-up of the broker, per message);
//! `max_request_batch` is not used by its MQTT 3.1.1 event loop. The driver
//! passes each publish through rumqttc's own session state (packet ids,
//! in-flight limit for QoS 1/2), feeds the packets to the connection's
//! buffered writer, and flushes once per batch. It does so between polls:
//! every flush completes before the next `poll`, which leaves rumqttc's write
//! buffer empty, so a `poll` cancelled to write a batch never drops a packet.
//!
//! Whatever rumqttc held unacknowledged when a connection failed (QoS 1/2
//! publishes) is put back at the front of the queue, since rumqttc would
//! drop it on a clean-session reconnect; a QoS 0 message already written to
//! a dying socket may be lost, as QoS 0 allows.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use banyan_core::{Client, Message, Messages};
use rumqttc::{
    ConnectReturnCode, ConnectionError, Disconnect, Event, EventLoop, MqttOptions, Packet, Publish,
    QoS, Request, Subscribe, SubscribeFilter, SubscribeReasonCode,
};
use tokio::sync::{watch, Notify};
use tracing::{debug, info, warn, Instrument};

use crate::codec::{self, PayloadFormat};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::outbox::{Outbox, Outgoing};
use crate::routes::Routes;

/// How long shutdown waits for the broker to take our DISCONNECT.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the gateway did, returned by [`Gateway::run`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Bus messages handed to the MQTT client.
    pub to_mqtt: u64,
    /// MQTT messages published on the bus.
    pub to_bus: u64,
    /// Bus messages that could not be sent (JSON cannot carry them, too big).
    pub refused_from_bus: u64,
    /// MQTT messages that could not be published (not JSON, not UTF-8, ...).
    pub refused_from_mqtt: u64,
    /// MQTT messages not published because they would go back to MQTT
    /// (the gateway's own publications, echoed by the broker).
    pub looped: u64,
    /// Messages for MQTT dropped because the queue was full while the broker
    /// was away or stalled.
    pub dropped: u64,
}

#[derive(Debug, Default)]
struct Counters {
    to_mqtt: AtomicU64,
    to_bus: AtomicU64,
    refused_from_bus: AtomicU64,
    refused_from_mqtt: AtomicU64,
    looped: AtomicU64,
}

impl Counters {
    fn bump(counter: &AtomicU64) -> u64 {
        counter.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// State the two tasks share.
#[derive(Debug)]
struct Shared {
    outbox: Mutex<Outbox>,
    /// Signalled when messages are appended to the outbox.
    queued: Notify,
    /// Signalled when the driver takes messages from the outbox.
    room: Notify,
    counters: Counters,
}

impl Shared {
    fn outbox(&self) -> MutexGuard<'_, Outbox> {
        // A panic while holding this lock leaves a consistent queue behind.
        self.outbox
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A configured gateway, ready to run.
#[derive(Debug)]
pub struct Gateway {
    config: Config,
    routes: Routes,
    options: MqttOptions,
}

impl Gateway {
    /// Validates `config` (topics, numbers, the CA file) without connecting.
    pub fn new(config: Config) -> Result<Gateway> {
        let routes = config.routes()?;
        let options = config.mqtt_options()?;
        Ok(Gateway {
            config,
            routes,
            options,
        })
    }

    /// The topic mapping in force.
    pub fn routes(&self) -> &Routes {
        &self.routes
    }

    /// Subscribes `bus` to the `-g` topics; returns once the backplane
    /// routes them. Call before announcing readiness, then [`Gateway::run`].
    pub async fn subscribe(&self, bus: &Client) -> Result<()> {
        for topic in self.routes.bus_subscriptions() {
            bus.subscribe(topic).await?;
        }
        Ok(())
    }

    /// Forwards between `bus` (its `messages`) and the broker until
    /// `shutdown` completes or the bus closes, then says goodbye to the
    /// broker. Ends early with [`Error::Refused`] when the broker refuses our
    /// credentials.
    pub async fn run(
        self,
        bus: Client,
        messages: &mut Messages,
        shutdown: impl Future<Output = ()>,
    ) -> Result<Stats> {
        let span = tracing::info_span!("mqtt", broker = %self.config.broker());
        self.run_inner(bus, messages, shutdown)
            .instrument(span)
            .await
    }

    async fn run_inner(
        self,
        bus: Client,
        messages: &mut Messages,
        shutdown: impl Future<Output = ()>,
    ) -> Result<Stats> {
        let Gateway {
            config,
            routes,
            options,
        } = self;
        let routes = Arc::new(routes);
        let shared = Arc::new(Shared {
            outbox: Mutex::new(Outbox::new(config.queue_capacity)),
            queued: Notify::new(),
            room: Notify::new(),
            counters: Counters::default(),
        });
        // Nothing goes through rumqttc's request channel: the driver writes
        // every packet itself.
        let eventloop = EventLoop::new(options, 1);
        let (connection_tx, mut connection) = watch::channel(None);
        let (goodbye_tx, goodbye_rx) = watch::channel(false);

        let driver = Driver {
            eventloop,
            shared: shared.clone(),
            routes: routes.clone(),
            to_bus: ToBus {
                shared: shared.clone(),
                routes: routes.clone(),
                format: config.format,
                bus,
            },
            connection: connection_tx,
            goodbye: goodbye_rx,
            broker: config.broker(),
            qos: config.qos,
            retain: config.retain,
            reconnect_min: config.reconnect_min,
            reconnect_max: config.reconnect_max.max(config.reconnect_min),
            batch: Vec::new(),
        };
        let mut driver = tokio::spawn(driver.run().in_current_span());

        tokio::pin!(shutdown);
        let mut outcome = Ok(());
        let mut driver_done = false;
        let mut reader = Reader {
            shared: &shared,
            routes: &routes,
            format: config.format,
            chunk: Vec::with_capacity(CHUNK),
        };
        // When the reader started waiting for room, if it is waiting.
        let mut holding_since: Option<tokio::time::Instant> = None;
        loop {
            let room = room_now(&shared, &mut connection);
            if room == 0 {
                // Connected, queue full: wait for the driver to make room,
                // for the connection to change, or for the grace to end.
                let since = *holding_since.get_or_insert_with(tokio::time::Instant::now);
                tokio::select! {
                    biased;
                    () = &mut shutdown => break,
                    joined = &mut driver => {
                        driver_done = true;
                        outcome = joined.unwrap_or(Ok(()));
                        break;
                    }
                    () = shared.room.notified() => {}
                    _ = connection.changed() => {}
                    () = tokio::time::sleep_until(since + config.stall_grace) => {
                        shared.outbox().mark_stalled();
                        holding_since = None;
                        warn!(
                            "the MQTT broker took nothing for {:?}: dropping the oldest \
                             messages for MQTT until it catches up",
                            config.stall_grace
                        );
                    }
                }
                continue;
            }
            holding_since = None;
            if reader.has_staged() {
                reader.queue(room);
                continue;
            }
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                joined = &mut driver => {
                    driver_done = true;
                    outcome = joined.unwrap_or(Ok(()));
                    break;
                }
                message = messages.recv() => match message {
                    Some(message) => {
                        reader.convert(message);
                        // The connection may have come back while waiting.
                        let room = room_now(&shared, &mut connection);
                        reader.take_waiting(messages, room);
                        reader.queue(room);
                    }
                    None => break,
                },
            }
        }

        if !driver_done {
            let _ = goodbye_tx.send(true);
            // The driver ends once it has sent DISCONNECT (or at once when
            // not connected).
            if tokio::time::timeout(GOODBYE_TIMEOUT, &mut driver)
                .await
                .is_err()
            {
                warn!("the broker did not take our DISCONNECT in time");
            }
            driver.abort();
        }
        let stats = stats(&shared);
        outcome.map(|()| stats)
    }
}

fn stats(shared: &Shared) -> Stats {
    let c = &shared.counters;
    Stats {
        to_mqtt: c.to_mqtt.load(Ordering::Relaxed),
        to_bus: c.to_bus.load(Ordering::Relaxed),
        refused_from_bus: c.refused_from_bus.load(Ordering::Relaxed),
        refused_from_mqtt: c.refused_from_mqtt.load(Ordering::Relaxed),
        looped: c.looped.load(Ordering::Relaxed),
        dropped: shared.outbox().dropped(),
    }
}

/// The most bus messages the reader converts and queues at a time.
const CHUNK: usize = 256;

/// How many bus messages may be queued now (see [`Outbox::room`]), at most
/// [`CHUNK`].
fn room_now(shared: &Shared, connection: &mut watch::Receiver<Option<u64>>) -> usize {
    let connected = connection.borrow_and_update().is_some();
    shared.outbox().room(connected).min(CHUNK)
}

/// Converts bus messages and queues them for MQTT.
struct Reader<'a> {
    shared: &'a Shared,
    routes: &'a Routes,
    format: PayloadFormat,
    /// Reused between chunks.
    chunk: Vec<Outgoing>,
}

impl Reader<'_> {
    /// Whether converted messages wait for room in the queue.
    fn has_staged(&self) -> bool {
        !self.chunk.is_empty()
    }

    /// Converts what the bus has already delivered, until `room` messages
    /// are staged.
    fn take_waiting(&mut self, messages: &mut Messages, room: usize) {
        while self.chunk.len() < room {
            match messages.try_recv() {
                Some(message) => self.convert(message),
                None => break,
            }
        }
    }

    /// Queues at most `room` of the staged messages, oldest first, taking
    /// the queue's lock once.
    fn queue(&mut self, room: usize) {
        let n = room.min(self.chunk.len());
        if n == 0 {
            return;
        }
        let (dropped, total, capacity) = {
            let mut outbox = self.shared.outbox();
            let before = outbox.dropped();
            for item in self.chunk.drain(..n) {
                outbox.push(item);
            }
            (
                outbox.dropped() - before,
                outbox.dropped(),
                outbox.capacity(),
            )
        };
        self.shared.queued.notify_one();
        if dropped > 0 {
            // Every drop is counted; the warnings thin out (1, 2, 4, 8, ...)
            // so a long outage cannot flood the log.
            if (total - dropped + 1..=total).any(u64::is_power_of_two) {
                warn!(
                    dropped = total,
                    "the queue for MQTT is full ({capacity}): dropped its oldest message"
                );
            } else {
                debug!(
                    dropped = total,
                    "the queue for MQTT is full ({capacity}): dropped its oldest message"
                );
            }
        }
    }

    fn convert(&mut self, message: Message) {
        let converted = self.routes.to_mqtt(message.topic()).and_then(|topic| {
            let payload = codec::bus_to_mqtt(self.format, &topic, message.payload())?;
            Ok(Outgoing { topic, payload })
        });
        match converted {
            Ok(outgoing) => self.chunk.push(outgoing),
            Err(error) => {
                let refused = Counters::bump(&self.shared.counters.refused_from_bus);
                warn!(
                    bus_topic = message.topic(),
                    refused, "not sent to MQTT: {error}"
                );
            }
        }
    }
}

/// The most messages written to the connection between two flushes.
const BATCH: usize = 1024;

/// What woke the driver.
enum Step {
    Polled(std::result::Result<Event, ConnectionError>),
    Write,
    Goodbye,
}

/// Owns rumqttc's event loop and the MQTT connection.
struct Driver {
    eventloop: EventLoop,
    shared: Arc<Shared>,
    routes: Arc<Routes>,
    /// Kept apart from the event loop, which is not `Sync`, so that
    /// publishing on the bus can be awaited from the driver's task.
    to_bus: ToBus,
    /// `Some(generation)` while connected; the generation grows with each
    /// connection.
    connection: watch::Sender<Option<u64>>,
    /// Becomes `true` when the gateway stops.
    goodbye: watch::Receiver<bool>,
    broker: String,
    qos: QoS,
    retain: bool,
    reconnect_min: Duration,
    reconnect_max: Duration,
    /// Reused between batches.
    batch: Vec<Outgoing>,
}

impl Driver {
    async fn run(mut self) -> Result<()> {
        let mut generation = 0;
        let mut connected = false;
        let mut failures = 0u32;
        let mut delay = self.reconnect_min;
        loop {
            let writable =
                connected && self.room_to_write() > 0 && !self.shared.outbox().is_empty();
            let step = tokio::select! {
                // Not biased: neither a flood from the broker nor one from
                // the bus may starve the other direction.
                changed = self.goodbye.wait_for(|&bye| bye) => {
                    // The sender lives as long as the bus reader, which only
                    // drops it after sending `true`.
                    let _ = changed;
                    Step::Goodbye
                }
                polled = self.eventloop.poll() => Step::Polled(polled),
                () = std::future::ready(()), if writable => Step::Write,
                () = self.shared.queued.notified(), if connected && !writable => Step::Write,
            };
            let failed = match step {
                Step::Goodbye => return self.say_goodbye(connected).await,
                Step::Write => match self.write_batch().await {
                    Ok(()) => continue,
                    Err(error) => {
                        // What poll() does on its own failures.
                        self.eventloop.clean();
                        error
                    }
                },
                Step::Polled(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                    generation += 1;
                    connected = true;
                    failures = 0;
                    delay = self.reconnect_min;
                    let queued = {
                        let mut outbox = self.shared.outbox();
                        outbox.clear_stall();
                        outbox.len()
                    };
                    info!(queued, "connected to the MQTT broker {}", self.broker);
                    self.connection.send_replace(Some(generation));
                    // Subscribed before anything is published on this
                    // connection.
                    match self.subscribe().await {
                        Ok(()) => continue,
                        Err(error) => {
                            self.eventloop.clean();
                            error
                        }
                    }
                }
                Step::Polled(Ok(Event::Incoming(Packet::Publish(publish)))) => {
                    self.to_bus.forward(publish).await?;
                    continue;
                }
                Step::Polled(Ok(Event::Incoming(Packet::SubAck(ack)))) => {
                    self.log_suback(&ack.return_codes);
                    continue;
                }
                Step::Polled(Ok(_)) => continue,
                Step::Polled(Err(ConnectionError::RequestsDone)) => return Ok(()),
                Step::Polled(Err(error)) => error,
            };

            // The connection failed.
            self.connection.send_replace(None);
            self.requeue_unsent();
            if let ConnectionError::ConnectionRefused(code) = &failed {
                if let Some(reason) = fatal_refusal(*code) {
                    return Err(Error::Refused {
                        broker: self.broker.clone(),
                        reason,
                    });
                }
            }
            if connected {
                warn!(
                    "disconnected from the MQTT broker {}: {failed}",
                    self.broker
                );
                connected = false;
            } else if failures == 0 {
                warn!(
                    "cannot connect to the MQTT broker {}: {failed}; retrying every {:?} at most",
                    self.broker, self.reconnect_max
                );
            } else {
                debug!(failures, "cannot connect to the MQTT broker: {failed}");
            }
            failures = failures.saturating_add(1);
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = self.goodbye.wait_for(|&bye| bye) => return Ok(()),
            }
            delay = (delay * 2).min(self.reconnect_max);
        }
    }

    /// How many publishes may be written now: QoS 0 is limited by the batch
    /// size only, QoS 1/2 by rumqttc's in-flight window.
    fn room_to_write(&self) -> usize {
        if self.qos == QoS::AtMostOnce {
            return BATCH;
        }
        let state = &self.eventloop.state;
        if state.collision.is_some() {
            return 0;
        }
        let max = self.eventloop.mqtt_options.inflight();
        usize::from(max.saturating_sub(state.inflight())).min(BATCH)
    }

    /// Writes a batch from the queue to the connection, flushing once.
    async fn write_batch(&mut self) -> std::result::Result<(), ConnectionError> {
        let mut batch = std::mem::take(&mut self.batch);
        self.shared
            .outbox()
            .take_batch(self.room_to_write(), &mut batch);
        if batch.is_empty() {
            self.batch = batch;
            return Ok(());
        }
        self.shared.room.notify_one();
        // A broker that takes nothing for this long is given up on, as
        // rumqttc does for its own flushes.
        let deadline = tokio::time::Instant::now()
            + Duration::from_secs(self.eventloop.network_options.connection_timeout());
        let Some(network) = self.eventloop.network.as_mut() else {
            // Not connected after all: back to the queue.
            self.shared.outbox().requeue(batch.drain(..));
            self.batch = batch;
            return Ok(());
        };
        let state = &mut self.eventloop.state;
        // rumqttc records an `Outgoing` event per packet for `poll` to hand
        // out; the driver has no use for them.
        let events = state.events.len();
        let mut items = batch.drain(..);
        let mut written = 0;
        let mut result: std::result::Result<(), ConnectionError> = Ok(());
        for item in items.by_ref() {
            let mut publish = Publish::from_bytes(item.topic, self.qos, item.payload);
            publish.retain = self.retain;
            let packet = if self.qos == QoS::AtMostOnce {
                // QoS 0 has no session state: no packet id, nothing to
                // acknowledge.
                Some(Packet::Publish(publish))
            } else {
                match state.handle_outgoing_packet(Request::Publish(publish)) {
                    Ok(packet) => packet,
                    Err(error) => {
                        result = Err(error.into());
                        break;
                    }
                }
            };
            if let Some(packet) = packet {
                // Writing waits only when the buffer is over its bound
                // (8 KiB) and the socket takes no more.
                match tokio::time::timeout_at(deadline, network.write(packet)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => {
                        result = Err(error.into());
                        break;
                    }
                    Err(_) => {
                        result = Err(ConnectionError::FlushTimeout);
                        break;
                    }
                }
            }
            written += 1;
        }
        // Not handed to rumqttc: back in front of the queue.
        let rest: Vec<Outgoing> = items.collect();
        self.batch = batch;
        if !rest.is_empty() {
            self.shared.outbox().requeue(rest.into_iter());
        }
        state.events.truncate(events);
        self.shared
            .counters
            .to_mqtt
            .fetch_add(written, Ordering::Relaxed);
        result?;
        match tokio::time::timeout_at(deadline, network.flush()).await {
            Ok(flushed) => Ok(flushed?),
            Err(_) => Err(ConnectionError::FlushTimeout),
        }
    }

    /// Subscribes the MQTT filters on a new connection.
    async fn subscribe(&mut self) -> std::result::Result<(), ConnectionError> {
        let filters = self.routes.mqtt_subscriptions();
        if filters.is_empty() {
            return Ok(());
        }
        info!(?filters, "subscribing on MQTT");
        let request = Subscribe::new_many(
            filters
                .iter()
                .map(|f| SubscribeFilter::new(f.clone(), self.qos)),
        );
        self.write_request(Request::Subscribe(request)).await
    }

    /// Writes one request and flushes.
    async fn write_request(
        &mut self,
        request: Request,
    ) -> std::result::Result<(), ConnectionError> {
        let timeout = Duration::from_secs(self.eventloop.network_options.connection_timeout());
        let Some(network) = self.eventloop.network.as_mut() else {
            return Ok(());
        };
        if let Some(packet) = self.eventloop.state.handle_outgoing_packet(request)? {
            network.write(packet).await?;
        }
        match tokio::time::timeout(timeout, network.flush()).await {
            Ok(flushed) => Ok(flushed?),
            Err(_) => Err(ConnectionError::FlushTimeout),
        }
    }

    /// Sends DISCONNECT when connected.
    async fn say_goodbye(&mut self, connected: bool) -> Result<()> {
        if connected
            && self
                .write_request(Request::Disconnect(Disconnect))
                .await
                .is_ok()
        {
            info!("disconnected from the MQTT broker (shutting down)");
        }
        Ok(())
    }

    fn log_suback(&self, codes: &[SubscribeReasonCode]) {
        for (filter, code) in self.routes.mqtt_subscriptions().iter().zip(codes) {
            match code {
                SubscribeReasonCode::Success(qos) => {
                    info!(granted = ?qos, "subscribed on MQTT to {filter}")
                }
                SubscribeReasonCode::Failure => {
                    warn!("the broker refused the subscription to {filter}")
                }
            }
        }
    }

    /// Puts back in the queue what rumqttc held unacknowledged when the
    /// connection failed; rumqttc would drop it on a clean-session reconnect.
    fn requeue_unsent(&mut self) {
        let unsent: Vec<Outgoing> = self
            .eventloop
            .pending
            .drain(..)
            .filter_map(|request| match request {
                Request::Publish(p) => Some(Outgoing {
                    topic: p.topic,
                    payload: p.payload,
                }),
                // Subscriptions are made anew on each connection.
                _ => None,
            })
            .collect();
        if unsent.is_empty() {
            return;
        }
        let count = unsent.len();
        let (dropped, total) = {
            let mut outbox = self.shared.outbox();
            let dropped = outbox.requeue(unsent.into_iter());
            (dropped, outbox.dropped())
        };
        debug!(
            count,
            "messages the broker did not acknowledge are queued again"
        );
        if dropped {
            warn!(
                dropped = total,
                "the queue for MQTT is full: dropped its oldest messages"
            );
        }
    }
}

/// Publishes what arrives from MQTT on the bus.
struct ToBus {
    shared: Arc<Shared>,
    routes: Arc<Routes>,
    format: PayloadFormat,
    bus: Client,
}

impl ToBus {
    async fn forward(&self, publish: Publish) -> Result<()> {
        let converted = self.routes.to_bus(&publish.topic).and_then(|bus_topic| {
            let payload = codec::mqtt_to_bus(self.format, &publish.payload)?;
            Ok(Message::from_raw(bus_topic, payload))
        });
        match converted {
            Ok(message) => {
                self.bus.send(message).await?;
                Counters::bump(&self.shared.counters.to_bus);
            }
            Err(error @ Error::WouldLoop { .. }) => {
                let looped = Counters::bump(&self.shared.counters.looped);
                debug!(looped, "not published on the bus: {error}");
            }
            Err(error) => {
                let refused = Counters::bump(&self.shared.counters.refused_from_mqtt);
                warn!(
                    mqtt_topic = %publish.topic,
                    refused,
                    "not published on the bus: {error}"
                );
            }
        }
        Ok(())
    }
}

/// The refusals that retrying cannot cure.
fn fatal_refusal(code: ConnectReturnCode) -> Option<&'static str> {
    match code {
        ConnectReturnCode::BadUserNamePassword => Some("bad user name or password"),
        ConnectReturnCode::NotAuthorized => Some("not authorized (credentials required?)"),
        ConnectReturnCode::BadClientId => Some("client id rejected"),
        ConnectReturnCode::RefusedProtocolVersion => Some("MQTT 3.1.1 not supported"),
        _ => None,
    }
}
