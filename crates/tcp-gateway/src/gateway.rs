//! The gateway's life: the bus intake fills the device's queue throughout;
//! the connection side dials the device with backoff, runs a session, and
//! dials again when it ends.

use std::sync::Arc;
use std::time::Duration;

use banyan_core::{Client, Message};
use banyan_gateway::outbox::Peer;
use banyan_gateway::{intake, metrics, Backoff, Bus, CancellationToken, Outbox, Tasks, ToOne};
use tokio::net::TcpStream;
use tracing::Instrument;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::session::{self, End};
use crate::stats::{Counters, Stats};

/// A configured TCP gateway, ready to run.
#[derive(Debug)]
pub struct Gateway {
    config: Config,
}

impl Gateway {
    /// Validates `config`: at least one bus topic, a payload limit of at
    /// least one byte, non-zero queue bounds, a reconnection range whose
    /// first wait is not past its longest.
    pub fn new(config: Config) -> Result<Gateway> {
        if config.topics.is_empty() {
            return Err(Error::NoTopics);
        }
        if config.max_payload == 0 {
            return Err(Error::ZeroMaxPayload);
        }
        config.queue.validate()?;
        config.reconnect.validate()?;
        Ok(Gateway { config })
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }
}

impl banyan_gateway::Gateway for Gateway {
    type Stats = Stats;
    type Error = Error;

    /// Subscribes `bus` to every topic of [`Config::topics`].
    async fn subscribe(&self, bus: &Client) -> Result<()> {
        Ok(banyan_gateway::subscribe_all(bus, &self.config.topics).await?)
    }

    fn banner(&self) -> Vec<String> {
        vec![format!(
            "TCP device at {} (prefix {} byte{})",
            self.config.server_address(),
            self.config.prefix,
            if self.config.prefix.bytes() == 1 {
                ""
            } else {
                "s"
            }
        )]
    }

    /// Forwards between the bus and the device until `token` is cancelled:
    /// bus messages on the topics are queued for the device all along (while
    /// it is away too), the device is dialled and re-dialled with backoff,
    /// and at the end what is queued is flushed to it (for at most
    /// [`Config::flush_timeout`]).
    async fn run(self, bus: Bus, token: CancellationToken) -> Result<Stats> {
        let Bus {
            client,
            mut messages,
            metrics,
        } = bus;
        let config = Arc::new(self.config);
        let counters = Counters::default();
        // What the queue logs, and every connection's log, is the device's.
        let span = tracing::info_span!("device", addr = %config.server_address());
        let outbox =
            span.in_scope(|| Arc::new(Outbox::new(config.queue, Peer::Away, counters.drops())));
        metrics.register({
            let (counters, outbox) = (counters.clone(), outbox.clone());
            move |out| {
                out.extend(metrics::from_report("banyan_tgw", &counters.snapshot()));
                out.extend(metrics::queue_gauges("banyan_tgw", [&*outbox]));
            }
        });
        let tasks = Tasks::new(&token);
        tasks.spawn("bus intake", {
            let mut route = ToOne::new(outbox.clone(), matching(config.clone()));
            let grace = config.queue.stall_grace;
            let token = tasks.token().clone();
            async move { Ok(intake::run(&mut messages, &mut route, grace, &token).await?) }
        });
        tasks.spawn("device", {
            let device = Device {
                config: config.clone(),
                client,
                outbox: outbox.clone(),
                counters: counters.clone(),
            };
            let token = tasks.token().clone();
            async move { device.run(&token).await }.instrument(span)
        });
        tasks.wait().await?;
        Ok(counters.snapshot())
    }
}

/// The intake's filter: the bus messages for the device, by
/// [`Config::forwards`]. The ZeroMQ subscription delivers every topic that
/// starts with a `-g` topic; with `--match exact` the others stop here.
fn matching(config: Arc<Config>) -> impl FnMut(Message) -> Option<Message> {
    let mut hinted = false;
    move |message| {
        if config.forwards(message.topic()) {
            return Some(message);
        }
        // Said once, for the user who meant a prefix.
        if !hinted {
            hinted = true;
            tracing::info!(
                bus_topic = message.topic(),
                "not sent to the device: the -g topics match exactly (--match exact); \
                 such messages are logged at debug level from now on"
            );
        } else {
            tracing::debug!(
                bus_topic = message.topic(),
                "not sent to the device: no -g topic is it"
            );
        }
        None
    }
}

/// The connection side: dials the device and runs one session at a time.
struct Device {
    config: Arc<Config>,
    client: Client,
    outbox: Arc<Outbox<Message>>,
    counters: Counters,
}

impl Device {
    async fn run(&self, token: &CancellationToken) -> Result<()> {
        let config = &*self.config;
        let address = config.server_address();
        let mut backoff = Backoff::new(config.reconnect);
        tracing::info!(
            device = %address,
            topics = ?config.topics,
            publish = %config.publish_topic,
            prefix = %config.prefix,
            "waiting to connect to the device"
        );
        let mut delay = Duration::ZERO;
        let mut failures = 0u64;
        loop {
            let stream = tokio::select! {
                () = token.cancelled() => break,
                attempt = self.connect(&address, delay) => attempt,
            };
            let stream = match stream {
                Ok(stream) => stream,
                Err(e) => {
                    failures += 1;
                    delay = backoff.next_delay();
                    // The first failure is news; the retries that follow are not.
                    if failures == 1 {
                        tracing::info!(device = %address, "cannot connect: {e}; retrying (at most every {:?})", config.reconnect.max);
                    } else {
                        tracing::debug!(device = %address, failures, "cannot connect: {e}; next try in {delay:?}");
                    }
                    continue;
                }
            };
            failures = 0;
            prepare(&stream, config);
            self.counters.connections.inc();
            backoff.connected();
            self.outbox.set_peer(Peer::Connected);
            tracing::info!(device = %address, queued = self.outbox.len(), "connected");
            let end = session::run(
                stream,
                config,
                &self.client,
                &self.outbox,
                &self.counters,
                token,
            )
            .await;
            self.outbox.set_peer(Peer::Away);
            match end {
                End::Shutdown => break,
                End::BusClosed => return Err(banyan_gateway::Error::BusClosed.into()),
                end => {
                    delay = backoff.next_delay();
                    tracing::warn!(device = %address, "disconnected: {end}; reconnecting in {delay:?}");
                }
            }
        }
        let undelivered = self.outbox.len();
        if undelivered > 0 {
            tracing::warn!(
                undelivered,
                "stopping with messages the device did not take"
            );
        }
        Ok(())
    }

    /// Waits `delay`, then makes one connection attempt.
    async fn connect(&self, address: &str, delay: Duration) -> std::io::Result<TcpStream> {
        tokio::time::sleep(delay).await;
        let timeout = self.config.connect_timeout;
        match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
            Ok(result) => result,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {timeout:?}"),
            )),
        }
    }
}

/// Socket options of a device connection: no Nagle delay (frames are small
/// commands), and keepalive so that a device that vanished (power loss) is
/// noticed even when the gateway has nothing to send.
fn prepare(stream: &TcpStream, config: &Config) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!("TCP_NODELAY not set: {e}");
    }
    if let Some(idle) = config.keepalive {
        let keepalive = socket2::TcpKeepalive::new().with_time(idle);
        #[cfg(target_os = "linux")]
        let keepalive = keepalive
            .with_interval((idle / 3).max(Duration::from_secs(1)))
            .with_retries(3);
        if let Err(e) = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive) {
            tracing::debug!("TCP keepalive not set: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_configs_are_refused() {
        let no_topics = Config {
            topics: Vec::new(),
            ..Config::default()
        };
        assert!(matches!(Gateway::new(no_topics), Err(Error::NoTopics)));
        let mut zero = Config::default();
        zero.queue.messages = 0;
        assert!(matches!(
            Gateway::new(zero),
            Err(Error::Kit(banyan_gateway::Error::ZeroQueue))
        ));
        assert!(Gateway::new(Config::default()).is_ok());
    }
}
