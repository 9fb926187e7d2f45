//! The gateway's life: connect to the device with backoff, run a session,
//! reconnect when it ends, and keep queueing bus messages throughout.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use banyan_core::{Client, Messages};
use tokio::net::TcpStream;
use tracing::Instrument;

use crate::backoff::Backoff;
use crate::config::Config;
use crate::error::Error;
use crate::session::{self, Shared};
use crate::stats::Report;

/// Subscribes `client` to every topic of [`Config::topics`]; call it before
/// announcing readiness and before [`run`]. Fails with [`Error::NoTopics`]
/// when there are none.
pub async fn subscribe(client: &Client, config: &Config) -> Result<(), Error> {
    if config.topics.is_empty() {
        return Err(Error::NoTopics);
    }
    for topic in &config.topics {
        client.subscribe(topic).await?;
    }
    Ok(())
}

/// Runs the gateway until `shutdown` completes or the bus closes.
///
/// `messages` are the bus messages to forward (the client subscribed with
/// [`subscribe`]); `client` publishes what the device sends. The device is
/// connected to, and reconnected to, with backoff; bus messages received
/// while it is away wait in the bounded queue ([`crate::Outbox`]).
/// Returns what was done.
pub async fn run(
    config: &Config,
    client: &Client,
    messages: &mut Messages,
    shutdown: impl Future<Output = ()>,
) -> Result<Report, Error> {
    if config.topics.is_empty() {
        return Err(Error::NoTopics);
    }
    let shared = Shared::new(config.queue_capacity);
    let address = config.server_address();
    let mut backoff = Backoff::new(config.retry_initial, config.retry_max);
    tokio::pin!(shutdown);
    tracing::info!(
        device = %address,
        topics = ?config.topics,
        publish = %config.publish_topic,
        prefix = %config.prefix,
        "waiting to connect to the device"
    );
    let mut delay = Duration::ZERO;
    loop {
        let Some(stream) = connect(
            config,
            &address,
            &mut backoff,
            delay,
            messages,
            &shared,
            shutdown.as_mut(),
        )
        .await
        else {
            break;
        };
        shared.stats.add_connection();
        let (waiting, dropped) = shared.take_report();
        tracing::info!(
            device = %address,
            queued = waiting,
            dropped_while_away = dropped,
            "connected"
        );
        let started = Instant::now();
        let span = tracing::info_span!("device", addr = %address);
        let end = session::run(stream, config, client, messages, &shared, shutdown.as_mut())
            .instrument(span)
            .await;
        if !end.reconnect() {
            tracing::info!(device = %address, "disconnected: {end}");
            break;
        }
        // A connection that lasted starts the backoff over; one that the
        // device drops at once keeps growing it, so a crash loop cannot spin.
        if started.elapsed() >= config.retry_max {
            backoff.reset();
        }
        delay = backoff.next_delay();
        tracing::warn!(device = %address, "disconnected: {end}; reconnecting in {delay:?}");
    }
    let report = shared.stats.report();
    let (waiting, _) = shared.take_report();
    tracing::info!(
        to_device = report.to_device,
        from_device = report.from_device,
        dropped = report.dropped,
        too_large = report.too_large,
        invalid = report.invalid,
        undelivered = waiting,
        "gateway stopped"
    );
    Ok(report)
}

/// Waits `delay`, then tries to connect until it succeeds, queueing bus
/// messages all along. `None` when shutdown came first or the bus closed.
async fn connect<F: Future<Output = ()>>(
    config: &Config,
    address: &str,
    backoff: &mut Backoff,
    mut delay: Duration,
    messages: &mut Messages,
    shared: &Shared,
    mut shutdown: Pin<&mut F>,
) -> Option<TcpStream> {
    let mut failures = 0u64;
    loop {
        let wait = delay;
        let attempt = async move {
            tokio::time::sleep(wait).await;
            match tokio::time::timeout(config.connect_timeout, TcpStream::connect(address)).await {
                Ok(result) => result,
                Err(_) => Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within {:?}", config.connect_timeout),
                )),
            }
        };
        tokio::pin!(attempt);
        let result = loop {
            tokio::select! {
                result = &mut attempt => break result,
                message = messages.recv() => match message {
                    Some(message) => shared.queue(message),
                    None => {
                        tracing::info!("the bus connection closed");
                        return None;
                    }
                },
                () = &mut shutdown => return None,
            }
        };
        match result {
            Ok(stream) => {
                prepare(&stream, config);
                return Some(stream);
            }
            Err(e) => {
                failures += 1;
                delay = backoff.next_delay();
                // The first failure is news; the retries that follow are not.
                if failures == 1 {
                    tracing::info!(device = %address, "cannot connect: {e}; retrying (at most every {:?})", config.retry_max);
                } else {
                    tracing::debug!(device = %address, failures, "cannot connect: {e}; next try in {delay:?}");
                }
            }
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
