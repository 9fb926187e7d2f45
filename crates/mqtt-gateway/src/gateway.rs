//! The gateway itself: two tasks around one MQTT connection.
//!
//! * the **bus intake** ([`banyan_gateway::intake`]) converts each bus
//!   message for MQTT and appends it to the broker's queue: while the broker
//!   is connected and the queue is full it stops taking from the bus (so the
//!   bus's back-pressure reaches the publishers) for at most the stall
//!   grace; while the broker is away the queue keeps the newest messages;
//! * the **driver** owns the MQTT connection (`connection.rs`): it polls it (connects,
//!   disconnects, subscription acknowledgements, what arrives from MQTT,
//!   which it publishes on the bus), reconnects with the kit's [`Backoff`],
//!   and writes what the queue holds in batches.
//!
//! Whatever rumqttc held unacknowledged when a connection failed (QoS 1/2
//! publishes) is put back at the front of the queue, since rumqttc would
//! drop it on a clean-session reconnect; a QoS 0 message already written to
//! a dying socket may be lost, as QoS 0 allows.

use std::sync::Arc;
use std::time::Duration;

use banyan_core::{Client, Message};
use banyan_gateway::outbox::{Limit, Peer};
use banyan_gateway::{
    intake, metrics, Backoff, Bus, CancellationToken, Drops, Outbox, Tasks, ToOne,
};
use rumqttc::{
    ConnectReturnCode, ConnectionError, Disconnect, Event, MqttOptions, Packet, Publish, QoS,
    Request, Subscribe, SubscribeFilter, SubscribeReasonCode,
};
use tracing::{debug, info, warn, Instrument};

use crate::codec::{Codec, Outgoing};
use crate::config::{Config, EmptyPassword};
use crate::connection::{self, Connection};
use crate::error::{Error, Result};
use crate::routes::Routes;

/// How long shutdown may take to flush the queue and say DISCONNECT.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(2);

banyan_gateway::stats! {
    /// What the gateway did, returned by its `run` (its `stopped:` line and
    /// its metrics, `banyan_mqttgw_*`).
    pub struct Stats;
    /// The live counters the gateway's tasks share.
    pub(crate) struct Counters {
        /// Connections made to the broker (CONNACKs received).
        connections,
        /// Bus messages handed to the MQTT connection.
        #[metric = "to_mqtt_messages_total"]
        to_mqtt,
        /// Bytes of MQTT payload handed to the connection.
        #[metric = "to_mqtt_bytes_total"]
        to_mqtt_bytes,
        /// MQTT messages published on the bus.
        #[metric = "to_bus_messages_total"]
        to_bus,
        /// Bytes of MQTT payload published on the bus.
        #[metric = "to_bus_bytes_total"]
        to_bus_bytes,
        /// Messages dropped, by reason: bus messages that could not be sent
        /// (JSON cannot carry them, a topic MQTT cannot carry).
        #[metric = "dropped_messages_total{reason=\"refused_from_bus\"}"]
        refused_from_bus,
        /// MQTT messages that could not be published (not JSON, not UTF-8,
        /// ...).
        #[metric = "dropped_messages_total{reason=\"refused_from_mqtt\"}"]
        refused_from_mqtt,
        /// Messages whose payload is over `--max-payload`, either way, not
        /// passed on; and packets from the broker too large even to read
        /// (each of those cost the connection).
        #[metric = "dropped_messages_total{reason=\"too_large\"}"]
        too_large,
        /// MQTT messages not published because they would go back to MQTT
        /// (the gateway's own publications, echoed by the broker).
        #[metric = "dropped_messages_total{reason=\"looped\"}"]
        looped,
        /// Messages for MQTT dropped because the queue was full while the
        /// broker was away.
        #[metric = "dropped_messages_total{reason=\"away\"}"]
        dropped_away,
        /// Messages for MQTT dropped because the broker was stalled.
        #[metric = "dropped_messages_total{reason=\"stalled\"}"]
        dropped_stalled,
    }
}

/// A configured gateway, ready to run.
#[derive(Debug)]
pub struct Gateway {
    config: Config,
    routes: Routes,
    codec: Codec,
    options: MqttOptions,
}

impl Gateway {
    /// Validates `config` (topics, numbers, the CA file) without connecting.
    pub fn new(config: Config) -> Result<Gateway> {
        let routes = config.routes()?;
        let codec = config.codec()?;
        let options = config.mqtt_options()?;
        config.queue.validate()?;
        config.reconnect.validate()?;
        Ok(Gateway {
            config,
            routes,
            codec,
            options,
        })
    }

    /// The topic mapping in force.
    pub fn routes(&self) -> &Routes {
        &self.routes
    }
}

impl banyan_gateway::Gateway for Gateway {
    type Stats = Stats;
    type Error = Error;

    /// Subscribes `bus` to the `-g` topics.
    async fn subscribe(&self, bus: &Client) -> Result<()> {
        Ok(banyan_gateway::subscribe_all(bus, self.routes.bus_subscriptions()).await?)
    }

    fn banner(&self) -> Vec<String> {
        let tls = if self.config.tls.is_some() {
            " (TLS)"
        } else {
            ""
        };
        vec![format!("MQTT broker at {}{tls}", self.config.broker())]
    }

    /// Forwards between the bus and the broker until `token` is cancelled,
    /// then flushes the queue (for at most 2 s) and says DISCONNECT. Ends
    /// early with [`Error::Refused`] when the broker refuses our
    /// credentials.
    async fn run(self, bus: Bus, token: CancellationToken) -> Result<Stats> {
        let span = tracing::info_span!("mqtt", broker = %self.config.broker());
        self.run_inner(bus, token).instrument(span).await
    }
}

impl Gateway {
    async fn run_inner(self, bus: Bus, token: CancellationToken) -> Result<Stats> {
        let Gateway {
            config,
            routes,
            codec,
            options,
        } = self;
        let Bus {
            client,
            mut messages,
            metrics,
        } = bus;
        let routes = Arc::new(routes);
        let counters = Counters::default();
        let outbox = Arc::new(Outbox::new(
            config.queue,
            Peer::Away,
            Drops {
                away: counters.dropped_away.clone(),
                stalled: counters.dropped_stalled.clone(),
            },
        ));
        metrics.register({
            let (counters, outbox) = (counters.clone(), outbox.clone());
            move |out| {
                out.extend(metrics::from_report("banyan_mqttgw", &counters.snapshot()));
                out.extend(metrics::queue_gauges("banyan_mqttgw", [&*outbox]));
            }
        });
        let tasks = Tasks::new(&token);
        tasks.spawn("bus intake", {
            let convert = convert(routes.clone(), codec, counters.clone());
            let mut route = ToOne::new(outbox.clone(), convert);
            let grace = config.queue.stall_grace;
            let token = tasks.token().clone();
            async move { Ok(intake::run(&mut messages, &mut route, grace, &token).await?) }
                .in_current_span()
        });
        let driver = Driver {
            connection: Connection::new(options),
            outbox,
            routes: routes.clone(),
            to_bus: ToBus {
                routes,
                codec,
                bus: client,
                counters: counters.clone(),
            },
            counters: counters.clone(),
            backoff: Backoff::new(config.reconnect),
            broker: config.broker(),
            qos: config.qos,
            retain: config.retain,
            max_wait: config.reconnect.max,
            max_payload: codec.max_payload(),
            empty_password: config
                .credentials
                .as_ref()
                .and_then(|credentials| credentials.empty_password.clone()),
        };
        let token_for_driver = tasks.token().clone();
        tasks.spawn(
            "mqtt connection",
            async move { driver.run(&token_for_driver).await }.in_current_span(),
        );
        tasks.wait().await?;
        Ok(counters.snapshot())
    }
}

/// The intake's conversion of a bus message for MQTT: `None` for a message
/// that is not forwarded (its topic only starts with a `-g` topic, under
/// exact matching) or cannot be sent (logged and counted).
fn convert(
    routes: Arc<Routes>,
    codec: Codec,
    counters: Counters,
) -> impl FnMut(Message) -> Option<Outgoing> {
    let mut hinted = false;
    move |message| {
        if !routes.forwards(message.topic()) {
            // The ZeroMQ subscription is a prefix; python's mgw forwards the
            // exact topic only, and so do we by default. Said once, for the
            // user who meant a prefix.
            if !hinted {
                hinted = true;
                info!(
                    bus_topic = message.topic(),
                    "not sent to MQTT: the -g topics match exactly (--match prefix \
                     forwards every topic that starts with one); such messages are \
                     logged at debug level from now on"
                );
            } else {
                debug!(
                    bus_topic = message.topic(),
                    "not sent to MQTT: no -g topic is it"
                );
            }
            return None;
        }
        let converted = routes.to_mqtt(message.topic()).and_then(|topic| {
            let payload = codec.to_mqtt(&topic, message.payload())?;
            Ok(Outgoing { topic, payload })
        });
        match converted {
            Ok(outgoing) => Some(outgoing),
            Err(error @ Error::TooLarge { .. }) => {
                let too_large = counters.too_large.inc();
                warn!(
                    bus_topic = message.topic(),
                    too_large, "not sent to MQTT: {error}"
                );
                None
            }
            Err(error) => {
                let refused = counters.refused_from_bus.inc();
                warn!(
                    bus_topic = message.topic(),
                    refused, "not sent to MQTT: {error}"
                );
                None
            }
        }
    }
}

/// What woke the driver.
enum Step {
    Polled(std::result::Result<Event, ConnectionError>),
    Write,
    Goodbye,
}

/// Owns the MQTT connection.
struct Driver {
    connection: Connection,
    outbox: Arc<Outbox<Outgoing>>,
    routes: Arc<Routes>,
    to_bus: ToBus,
    counters: Counters,
    backoff: Backoff,
    broker: String,
    qos: QoS,
    retain: bool,
    /// The longest wait between attempts, for the log.
    max_wait: Duration,
    /// `--max-payload`, for the log.
    max_payload: usize,
    /// Why the password is empty, named when the broker refuses it.
    empty_password: Option<EmptyPassword>,
}

impl Driver {
    async fn run(mut self, token: &CancellationToken) -> Result<()> {
        let mut connected = false;
        let mut failures = 0u32;
        let mut batch = Vec::new();
        loop {
            let room = self.connection.room(self.qos);
            let limit = Limit {
                messages: room,
                bytes: usize::MAX,
            };
            let step = tokio::select! {
                // Not biased: neither a flood from the broker nor one from
                // the bus may starve the other direction.
                () = token.cancelled() => Step::Goodbye,
                polled = self.connection.poll() => Step::Polled(polled),
                _ = self.outbox.take_wait(limit, &mut batch), if connected && room > 0 => Step::Write,
            };
            let failed = match step {
                Step::Goodbye => {
                    if connected {
                        self.goodbye(&mut batch).await;
                    }
                    return Ok(());
                }
                Step::Write => match self.write(&mut batch).await {
                    Ok(()) => continue,
                    Err(error) => error,
                },
                Step::Polled(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                    connected = true;
                    failures = 0;
                    self.counters.connections.inc();
                    self.backoff.connected();
                    self.outbox.set_peer(Peer::Connected);
                    info!(
                        queued = self.outbox.len(),
                        "connected to the MQTT broker {}", self.broker
                    );
                    // Subscribed before anything is published on this
                    // connection.
                    match self.subscribe().await {
                        Ok(()) => continue,
                        Err(error) => error,
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
            if let Some(size) = connection::too_large_packet(&failed) {
                let too_large = self.counters.too_large.inc();
                warn!(
                    size,
                    too_large,
                    "the broker sent a packet of {size} bytes, more than the gateway reads \
                     with --max-payload {}: it cannot be skipped unread, so the connection \
                     is closed (a larger --max-payload lets the gateway read and refuse it)",
                    self.max_payload
                );
            }
            self.outbox.set_peer(Peer::Away);
            self.requeue_unacknowledged();
            if let ConnectionError::ConnectionRefused(code) = &failed {
                if let Some(refused) = refusal(*code, &self.broker, self.empty_password.as_ref()) {
                    return Err(refused);
                }
            }
            let delay = self.backoff.next_delay();
            if connected {
                warn!(
                    "disconnected from the MQTT broker {}: {failed}; reconnecting in {delay:?}",
                    self.broker
                );
                connected = false;
            } else if failures == 0 {
                warn!(
                    "cannot connect to the MQTT broker {}: {failed}; retrying every {:?} at most",
                    self.broker, self.max_wait
                );
            } else {
                debug!(
                    failures,
                    "cannot connect to the MQTT broker: {failed}; next try in {delay:?}"
                );
            }
            failures = failures.saturating_add(1);
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = token.cancelled() => return Ok(()),
            }
        }
    }

    /// Writes the batch taken from the queue; what the connection did not
    /// take goes back in front of the queue.
    async fn write(
        &mut self,
        batch: &mut Vec<Outgoing>,
    ) -> std::result::Result<(), ConnectionError> {
        let (written, result) = self.connection.publish(batch, self.qos, self.retain).await;
        self.counters.to_mqtt.add(written.messages);
        self.counters.to_mqtt_bytes.add(written.bytes);
        if !batch.is_empty() {
            self.outbox.requeue(batch.drain(..));
        }
        if result.is_ok() {
            self.outbox.written();
        }
        result
    }

    /// At shutdown: writes what is queued, for at most [`GOODBYE_TIMEOUT`],
    /// then says DISCONNECT.
    async fn goodbye(&mut self, batch: &mut Vec<Outgoing>) {
        let flushed = tokio::time::timeout(GOODBYE_TIMEOUT, async {
            loop {
                let limit = Limit {
                    messages: self.connection.room(self.qos),
                    bytes: usize::MAX,
                };
                if limit.messages == 0 || self.outbox.take(limit, batch) == 0 {
                    return true;
                }
                if self.write(batch).await.is_err() {
                    return false;
                }
            }
        })
        .await;
        match flushed {
            Ok(true) => {}
            Ok(false) => return,
            Err(_) => warn!(
                waiting = self.outbox.len(),
                "the broker did not take the queued messages within {GOODBYE_TIMEOUT:?}"
            ),
        }
        let said = tokio::time::timeout(
            GOODBYE_TIMEOUT,
            self.connection.request(Request::Disconnect(Disconnect)),
        )
        .await;
        match said {
            Ok(Ok(())) => info!("disconnected from the MQTT broker (shutting down)"),
            _ => warn!("the broker did not take our DISCONNECT in time"),
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
        self.connection.request(Request::Subscribe(request)).await
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
    /// connection failed.
    fn requeue_unacknowledged(&mut self) {
        let unsent = self.connection.take_unacknowledged();
        if unsent.is_empty() {
            return;
        }
        debug!(
            count = unsent.len(),
            "messages the broker did not acknowledge are queued again"
        );
        self.outbox.requeue(unsent.into_iter());
    }
}

/// Publishes what arrives from MQTT on the bus.
struct ToBus {
    routes: Arc<Routes>,
    codec: Codec,
    bus: Client,
    counters: Counters,
}

impl ToBus {
    async fn forward(&self, publish: Publish) -> Result<()> {
        let converted = self.routes.to_bus(&publish.topic).and_then(|bus_topic| {
            let payload = self.codec.to_bus(&publish.payload)?;
            Ok(Message::from_raw(bus_topic, payload))
        });
        match converted {
            Ok(message) => {
                let size = message.payload().len() as u64;
                self.bus.send(message).await?;
                self.counters.to_bus.inc();
                self.counters.to_bus_bytes.add(size);
            }
            Err(error @ Error::WouldLoop { .. }) => {
                let looped = self.counters.looped.inc();
                debug!(looped, "not published on the bus: {error}");
            }
            Err(error @ Error::TooLarge { .. }) => {
                let too_large = self.counters.too_large.inc();
                warn!(
                    mqtt_topic = %publish.topic,
                    retained = publish.retain,
                    too_large,
                    "not published on the bus: {error}"
                );
            }
            Err(error) => {
                let refused = self.counters.refused_from_mqtt.inc();
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

/// The error of a refusal that retrying cannot cure, `None` for the others.
/// A refusal of the credentials names the environment variable that left
/// the password empty, if one did.
fn refusal(
    code: ConnectReturnCode,
    broker: &str,
    empty_password: Option<&EmptyPassword>,
) -> Option<Error> {
    let (reason, credentials) = match code {
        ConnectReturnCode::BadUserNamePassword => ("bad user name or password", true),
        ConnectReturnCode::NotAuthorized => ("not authorized (credentials required?)", true),
        ConnectReturnCode::BadClientId => ("client id rejected", false),
        ConnectReturnCode::RefusedProtocolVersion => ("MQTT 3.1.1 not supported", false),
        _ => return None,
    };
    Some(Error::Refused {
        broker: broker.to_owned(),
        reason,
        empty_password: empty_password.filter(|_| credentials).cloned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_password_names_the_variable_that_left_it_empty() {
        let unset = EmptyPassword::Unset("MQTTGW_PASSWORD".into());
        let refused = refusal(
            ConnectReturnCode::NotAuthorized,
            "127.0.0.1:1883",
            Some(&unset),
        )
        .expect("fatal");
        assert_eq!(
            refused.to_string(),
            "the MQTT broker at 127.0.0.1:1883 refused the connection: not authorized \
             (credentials required?); the password was empty: MQTTGW_PASSWORD is not set"
        );
        let empty = EmptyPassword::Empty("GW_PASS".into());
        let refused = refusal(
            ConnectReturnCode::BadUserNamePassword,
            "broker:8883",
            Some(&empty),
        )
        .expect("fatal");
        assert!(matches!(
            &refused,
            Error::Refused { empty_password: Some(EmptyPassword::Empty(var)), .. } if var == "GW_PASS"
        ));
        assert!(
            refused
                .to_string()
                .ends_with("bad user name or password; the password was empty: GW_PASS is set to the empty string"),
            "{refused}"
        );
    }

    #[test]
    fn other_refusals_say_nothing_of_the_password() {
        let unset = EmptyPassword::Unset("MQTTGW_PASSWORD".into());
        let refused = refusal(ConnectReturnCode::BadClientId, "b:1", Some(&unset)).expect("fatal");
        assert_eq!(
            refused.to_string(),
            "the MQTT broker at b:1 refused the connection: client id rejected"
        );
        let refused = refusal(ConnectReturnCode::NotAuthorized, "b:1", None).expect("fatal");
        assert_eq!(
            refused.to_string(),
            "the MQTT broker at b:1 refused the connection: not authorized (credentials required?)"
        );
        // The broker may be back later: not fatal.
        assert!(refusal(ConnectReturnCode::ServiceUnavailable, "b:1", Some(&unset)).is_none());
    }
}
