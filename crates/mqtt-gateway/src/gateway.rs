//! The gateway itself: three tasks around one MQTT connection.
//!
//! * the **bus reader** (the caller's task, in [`Gateway::run`]) converts each
//!   bus message and appends it to the [outage queue](crate::outbox);
//! * the **sender** hands queued messages to the MQTT client, only while the
//!   broker is connected, and subscribes the `-j` filters first on every new
//!   connection;
//! * the **driver** polls rumqttc's event loop: it logs connects, disconnects
//!   and subscriptions, publishes what arrives from MQTT on the bus, and
//!   reconnects with a doubling, capped delay.
//!
//! rumqttc's own request channel is a rendezvous (capacity 0) because
//! rumqttc drops every request still queued in it when a clean session
//! reconnects. Whatever rumqttc held unsent when a connection failed (its
//! `pending` list: unacknowledged QoS 1/2 publishes, the one in hand) is put
//! back at the front of the outage queue, so nothing handed over is lost
//! silently; a QoS 0 message already written to a dying socket may be lost,
//! as QoS 0 allows.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use banyan_core::{Client, Message, Messages};
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, MqttOptions,
    Outgoing as OutgoingEvent, Packet, Publish, QoS, Request, SubscribeFilter, SubscribeReasonCode,
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
    /// Messages for MQTT dropped because the outage queue was full.
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

/// State the three tasks share.
#[derive(Debug)]
struct Shared {
    outbox: Mutex<Outbox>,
    /// Signalled on every message appended to the outbox.
    queued: Notify,
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
            counters: Counters::default(),
        });
        let (client, eventloop) = AsyncClient::new(options, 0);
        let (connection_tx, connection_rx) = watch::channel(None);

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
            broker: config.broker(),
            reconnect_min: config.reconnect_min,
            reconnect_max: config.reconnect_max.max(config.reconnect_min),
        };
        let mut driver = tokio::spawn(driver.run().in_current_span());
        let sender = tokio::spawn(
            send(
                client.clone(),
                shared.clone(),
                connection_rx.clone(),
                routes.mqtt_subscriptions().to_vec(),
                config.qos,
                config.retain,
            )
            .in_current_span(),
        );

        tokio::pin!(shutdown);
        let mut outcome = Ok(());
        let mut driver_done = false;
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                joined = &mut driver => {
                    driver_done = true;
                    outcome = joined.unwrap_or(Ok(()));
                    break;
                }
                message = messages.recv() => match message {
                    Some(message) => forward_to_mqtt(&shared, &routes, config.format, message),
                    None => break,
                },
            }
        }

        sender.abort();
        if !driver_done {
            if connection_rx.borrow().is_some() {
                // The driver ends when rumqttc reports the DISCONNECT sent.
                let _ = tokio::time::timeout(GOODBYE_TIMEOUT, client.disconnect()).await;
                if tokio::time::timeout(GOODBYE_TIMEOUT, &mut driver)
                    .await
                    .is_err()
                {
                    warn!("the broker did not take our DISCONNECT in time");
                }
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

/// Converts one bus message and queues it for MQTT.
fn forward_to_mqtt(shared: &Shared, routes: &Routes, format: PayloadFormat, message: Message) {
    let converted = routes.to_mqtt(message.topic()).and_then(|topic| {
        let payload = codec::bus_to_mqtt(format, &topic, message.payload())?;
        Ok(Outgoing { topic, payload })
    });
    let outgoing = match converted {
        Ok(outgoing) => outgoing,
        Err(error) => {
            let refused = Counters::bump(&shared.counters.refused_from_bus);
            warn!(
                bus_topic = message.topic(),
                refused, "not sent to MQTT: {error}"
            );
            return;
        }
    };
    let (dropped, total, capacity) = {
        let mut outbox = shared.outbox();
        let dropped = outbox.push(outgoing);
        (dropped, outbox.dropped(), outbox.len())
    };
    shared.queued.notify_one();
    if dropped {
        // Every drop is counted; the warnings thin out (1, 2, 4, 8, ...) so a
        // long outage cannot flood the log.
        if total.is_power_of_two() {
            warn!(
                dropped = total,
                "the outage queue is full ({capacity}): dropped its oldest message"
            );
        } else {
            debug!(
                dropped = total,
                "the outage queue is full ({capacity}): dropped its oldest message"
            );
        }
    }
}

/// Hands queued messages to the MQTT client while connected; subscribes the
/// MQTT filters first on every new connection.
async fn send(
    client: AsyncClient,
    shared: Arc<Shared>,
    mut connection: watch::Receiver<Option<u64>>,
    filters: Vec<String>,
    qos: QoS,
    retain: bool,
) {
    let mut subscribed = None;
    loop {
        let generation = match connection.wait_for(Option::is_some).await {
            Ok(generation) => *generation,
            Err(_) => return,
        };
        if subscribed != generation {
            if !filters.is_empty() {
                info!(?filters, "subscribing on MQTT");
                let request = filters.iter().map(|f| SubscribeFilter::new(f.clone(), qos));
                if client.subscribe_many(request).await.is_err() {
                    return;
                }
            }
            subscribed = generation;
            continue;
        }
        let next = shared.outbox().pop();
        match next {
            Some(item) => {
                if client
                    .publish_bytes(item.topic, qos, retain, item.payload)
                    .await
                    .is_err()
                {
                    return;
                }
                Counters::bump(&shared.counters.to_mqtt);
            }
            None => {
                tokio::select! {
                    () = shared.queued.notified() => {}
                    changed = connection.changed() => if changed.is_err() { return },
                }
            }
        }
    }
}

/// Owns rumqttc's event loop.
struct Driver {
    eventloop: EventLoop,
    shared: Arc<Shared>,
    routes: Arc<Routes>,
    /// Kept apart from the event loop, which is not `Sync`, so that
    /// publishing on the bus can be awaited from the driver's task.
    to_bus: ToBus,
    /// `Some(generation)` while connected; the generation grows with each
    /// connection so the sender knows to subscribe again.
    connection: watch::Sender<Option<u64>>,
    broker: String,
    reconnect_min: Duration,
    reconnect_max: Duration,
}

impl Driver {
    async fn run(mut self) -> Result<()> {
        let mut generation = 0;
        let mut connected = false;
        let mut failures = 0u32;
        let mut delay = self.reconnect_min;
        loop {
            match self.eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    generation += 1;
                    connected = true;
                    failures = 0;
                    delay = self.reconnect_min;
                    let queued = self.shared.outbox().len();
                    info!(queued, "connected to the MQTT broker {}", self.broker);
                    self.connection.send_replace(Some(generation));
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    self.to_bus.forward(publish).await?;
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    for (filter, code) in self
                        .routes
                        .mqtt_subscriptions()
                        .iter()
                        .zip(&ack.return_codes)
                    {
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
                Ok(Event::Outgoing(OutgoingEvent::Disconnect)) => {
                    info!("disconnected from the MQTT broker (shutting down)");
                    return Ok(());
                }
                Ok(_) => {}
                Err(ConnectionError::RequestsDone) => return Ok(()),
                Err(error) => {
                    self.connection.send_replace(None);
                    self.requeue_unsent();
                    if let ConnectionError::ConnectionRefused(code) = &error {
                        if let Some(reason) = fatal_refusal(*code) {
                            return Err(Error::Refused {
                                broker: self.broker.clone(),
                                reason,
                            });
                        }
                    }
                    if connected {
                        warn!("disconnected from the MQTT broker {}: {error}", self.broker);
                        connected = false;
                    } else if failures == 0 {
                        warn!(
                            "cannot connect to the MQTT broker {}: {error}; retrying every {:?} at most",
                            self.broker, self.reconnect_max
                        );
                    } else {
                        debug!(failures, "cannot connect to the MQTT broker: {error}");
                    }
                    failures = failures.saturating_add(1);
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(self.reconnect_max);
                }
            }
        }
    }

    /// Puts back in the outage queue what rumqttc held unsent when the
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
        self.shared.queued.notify_one();
        debug!(
            count,
            "messages the broker did not acknowledge are queued again"
        );
        if dropped {
            warn!(
                dropped = total,
                "the outage queue is full: dropped its oldest messages"
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
