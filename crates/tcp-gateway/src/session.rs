//! One connection to the device: device → bus and bus → device run side by
//! side, so a device that stops reading never stalls what it sends, and
//! the other way round. Generic over the connection
//! (`AsyncRead + AsyncWrite`), so it is unit tested over an in-memory pipe.

use std::fmt;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use banyan_core::{Client, Message};
use banyan_gateway::outbox::Limit;
use banyan_gateway::{CancellationToken, Outbox};
use bytes::BytesMut;
use futures_core::Stream;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::FramedRead;

use crate::config::Config;
use crate::error::Error;
use crate::framing::Framing;
use crate::stats::Counters;

/// How many bytes of frames the writer gathers into one write.
const BATCH_BYTES: usize = 64 * 1024;

/// The read buffer of frames from the device: one read takes many frames.
const READ_BYTES: usize = 64 * 1024;

/// Why a session ended.
#[derive(Debug)]
pub(crate) enum End {
    /// The device closed the connection.
    Closed,
    /// The device closed the connection in the middle of a frame (the part
    /// received is not published).
    ClosedMidFrame,
    /// Reading failed (a reset) or the device announced a frame over the
    /// limit.
    ReadFailed(std::io::Error),
    /// Writing failed; `lost` frames were in flight.
    WriteFailed { error: std::io::Error, lost: usize },
    /// No complete frame from the device within the idle timeout.
    Silent(Duration),
    /// The device read nothing for the idle timeout; `lost` frames were in
    /// flight.
    WriteStalled { after: Duration, lost: usize },
    /// The bus client is closed.
    BusClosed,
    /// Shutdown was asked for.
    Shutdown,
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            End::Closed => write!(f, "the device closed the connection"),
            End::ClosedMidFrame => write!(
                f,
                "the device closed the connection in the middle of a frame (partial frame discarded)"
            ),
            End::ReadFailed(e) => write!(f, "reading failed: {e}"),
            End::WriteFailed { error, lost } => {
                write!(f, "writing failed: {error} ({lost} frames in flight lost)")
            }
            End::Silent(after) => write!(f, "no frame from the device for {after:?}"),
            End::WriteStalled { after, lost } => write!(
                f,
                "the device read nothing for {after:?} ({lost} frames in flight lost)"
            ),
            End::BusClosed => write!(f, "the bus connection closed"),
            End::Shutdown => write!(f, "shutting down"),
        }
    }
}

/// Runs one connection until it ends, forwarding both ways: frames from the
/// device are published on the bus; the device's outbox (which the bus
/// intake fills, see [`banyan_gateway::intake`]) is written to it. `token`
/// cancelled starts a goodbye: what is queued is flushed (for at most
/// [`Config::flush_timeout`]), then the connection is shut down.
pub(crate) async fn run<S>(
    stream: S,
    config: &Config,
    client: &Client,
    outbox: &Outbox<Message>,
    counters: &Counters,
    token: &CancellationToken,
) -> End
where
    S: AsyncRead + AsyncWrite,
{
    let (read_half, write_half) = tokio::io::split(stream);
    let framing = config.framing();
    let reader = read_device(read_half, config, framing, client, counters);
    let writer = write_device(
        write_half,
        config.idle_timeout,
        framing,
        outbox,
        counters,
        token,
    );
    tokio::pin!(reader, writer);
    tokio::select! {
        end = &mut reader => return end,
        end = &mut writer => return end,
        () = token.cancelled() => {}
    }
    // The writer sees the token too: it writes what is queued, then shuts
    // the connection down.
    match tokio::time::timeout(config.flush_timeout, &mut writer).await {
        Ok(End::Shutdown) => {}
        Ok(end) => tracing::warn!("while closing: {end}"),
        Err(_) => tracing::warn!(
            waiting = outbox.len(),
            "the device did not take the queued messages within {:?}",
            config.flush_timeout
        ),
    }
    End::Shutdown
}

/// Device → bus: each frame is published unchanged on the publish topic.
async fn read_device<R: AsyncRead + Unpin>(
    read_half: R,
    config: &Config,
    framing: Framing,
    client: &Client,
    counters: &Counters,
) -> End {
    let mut frames = FramedRead::with_capacity(read_half, framing.decoder(), READ_BYTES);
    // One topic for every frame: a clone is a reference count, not a copy.
    let topic: Arc<str> = config.publish_topic.as_str().into();
    loop {
        let next = poll_fn(|cx| Pin::new(&mut frames).poll_next(cx));
        let item = match config.idle_timeout {
            Some(after) => match tokio::time::timeout(after, next).await {
                Ok(item) => item,
                Err(_) => return End::Silent(after),
            },
            None => next.await,
        };
        let frame = match item {
            None => return End::Closed,
            Some(Ok(frame)) => frame,
            Some(Err(e)) if is_mid_frame_eof(&e) => return End::ClosedMidFrame,
            Some(Err(e)) => return End::ReadFailed(e),
        };
        if frame.is_empty() {
            tracing::debug!("empty frame from the device ignored");
            continue;
        }
        if config.validate {
            if let Err(e) = banyan_core::envelope::validate(&frame) {
                counters.invalid.inc();
                tracing::warn!(
                    size = frame.len(),
                    "frame from the device not published: {e}"
                );
                continue;
            }
        }
        let size = frame.len() as u64;
        let message = Message::from_raw(topic.clone(), frame.freeze());
        if client.send(message).await.is_err() {
            return End::BusClosed;
        }
        counters.from_device.inc();
        counters.from_device_bytes.add(size);
    }
}

/// FramedRead reports the end of the stream inside a frame as an `Other`
/// error with this text (tokio-util 0.7) and no type of its own.
fn is_mid_frame_eof(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::Other && e.to_string().contains("bytes remaining on stream")
}

/// Bus → device: the outbox is written in batches, one flush each, until
/// the connection fails, takes no byte for `stall_timeout`, or, once
/// `token` is cancelled, the outbox is empty.
async fn write_device<W: AsyncWrite + Unpin>(
    mut write_half: W,
    stall_timeout: Option<Duration>,
    framing: Framing,
    outbox: &Outbox<Message>,
    counters: &Counters,
    token: &CancellationToken,
) -> End {
    let limit = Limit {
        messages: usize::MAX,
        bytes: BATCH_BYTES,
    };
    let mut taken = Vec::new();
    let mut batch = BytesMut::with_capacity(BATCH_BYTES);
    loop {
        taken.clear();
        if token.is_cancelled() {
            if outbox.take(limit, &mut taken) == 0 {
                let _ = write_half.shutdown().await;
                return End::Shutdown;
            }
        } else {
            tokio::select! {
                _ = outbox.take_wait(limit, &mut taken) => {}
                () = token.cancelled() => continue,
            }
        }
        let frames = encode(&taken, framing, &mut batch, counters);
        let bytes = batch.len() as u64 - frames as u64 * framing.width().bytes() as u64;
        let lost = frames;
        while !batch.is_empty() {
            let write = write_half.write_buf(&mut batch);
            let result = match stall_timeout {
                Some(after) => match tokio::time::timeout(after, write).await {
                    Ok(result) => result,
                    Err(_) => return End::WriteStalled { after, lost },
                },
                None => write.await,
            };
            match result {
                Ok(0) => {
                    let error = std::io::Error::from(std::io::ErrorKind::WriteZero);
                    return End::WriteFailed { error, lost };
                }
                // The device took bytes: it is slow, not stalled.
                Ok(_) => outbox.made_progress(),
                Err(error) => return End::WriteFailed { error, lost },
            }
        }
        if let Err(error) = write_half.flush().await {
            return End::WriteFailed { error, lost };
        }
        batch.clear();
        counters.to_device.add(frames as u64);
        counters.to_device_bytes.add(bytes);
        outbox.written();
    }
}

/// Frames the payloads of `messages` into `batch`; returns how many. A
/// payload the prefix cannot carry is logged, counted and skipped.
fn encode(
    messages: &[Message],
    framing: Framing,
    batch: &mut BytesMut,
    counters: &Counters,
) -> usize {
    let mut frames = 0;
    for message in messages {
        match framing.encode(message.payload(), batch) {
            Ok(()) => frames += 1,
            Err(Error::FrameTooLarge { size, max }) => {
                counters.too_large.inc();
                tracing::warn!(
                    topic = message.topic(),
                    size,
                    max,
                    "bus message too large for the frame prefix: not sent"
                );
            }
            Err(e) => tracing::warn!(topic = message.topic(), "not sent: {e}"),
        }
    }
    frames
}

#[cfg(test)]
mod tests {
    use banyan_core::{Backplane, BackplaneConfig, ClientConfig, Messages};
    use banyan_gateway::outbox::Peer;
    use banyan_gateway::{intake, QueuePolicy, ToOne};
    use tokio::io::AsyncReadExt;

    use super::*;

    /// A bus; the gateway's client, its intake filling the outbox; an
    /// application client (what it receives is returned beside the rig:
    /// what the device sends).
    struct Rig {
        _backplane: Backplane,
        gateway: Client,
        app: Client,
        outbox: Arc<Outbox<Message>>,
        counters: Counters,
        token: CancellationToken,
    }

    async fn rig(config: &Config) -> (Rig, Messages) {
        let backplane = Backplane::bind(&BackplaneConfig {
            bind_address: "127.0.0.1".into(),
            publisher_port: 0,
            subscriber_port: 0,
            ..BackplaneConfig::default()
        })
        .expect("backplane");
        let bus = ClientConfig {
            publisher_port: backplane.publisher_port(),
            subscriber_port: backplane.subscriber_port(),
            ..ClientConfig::default()
        };
        let (gateway, mut messages) = Client::connect(&bus).await.expect("gateway");
        gateway.subscribe("to_dev").await.expect("subscribed");
        let (app, from_device) = Client::connect(&bus).await.expect("app");
        app.subscribe("from_dev").await.expect("subscribed");
        let counters = Counters::default();
        let outbox = Arc::new(Outbox::new(config.queue, Peer::Connected, counters.drops()));
        let token = CancellationToken::new();
        tokio::spawn({
            let mut route = ToOne::new(outbox.clone(), Some::<Message>);
            let (grace, token) = (config.queue.stall_grace, token.clone());
            async move { intake::run(&mut messages, &mut route, grace, &token).await }
        });
        let rig = Rig {
            _backplane: backplane,
            gateway,
            app,
            outbox,
            counters,
            token,
        };
        (rig, from_device)
    }

    impl Rig {
        /// A session over `connection`.
        async fn session<S: AsyncRead + AsyncWrite>(&self, connection: S, config: &Config) -> End {
            run(
                connection,
                config,
                &self.gateway,
                &self.outbox,
                &self.counters,
                &self.token,
            )
            .await
        }

        /// Publishes `n` messages of 8 bytes `n` each, for the device.
        async fn publish(&self, range: std::ops::Range<u8>) {
            for n in range {
                self.app
                    .publish_raw("to_dev", vec![n; 8])
                    .await
                    .expect("published");
            }
        }
    }

    fn config() -> Config {
        Config {
            topics: vec!["to_dev".into()],
            publish_topic: "from_dev".into(),
            queue: QueuePolicy {
                stall_grace: Duration::from_millis(100),
                ..QueuePolicy::new(4, 1 << 20)
            },
            ..Config::default()
        }
    }

    /// The device end of an in-memory connection that holds 16 bytes: a
    /// device that does not read blocks the gateway's writes at once.
    #[tokio::test]
    async fn a_device_that_does_not_read_blocks_neither_the_bus_nor_its_own_frames() {
        let config = config();
        let (rig, mut from_device) = rig(&config).await;
        let (mut device, connection) = tokio::io::duplex(16);
        // A backlog from while the device was away: the bound keeps 4.
        rig.outbox.set_peer(Peer::Away);
        for n in 0..50u8 {
            rig.outbox.push(Message::from_raw("to_dev", vec![n; 8]));
        }
        assert_eq!(rig.counters.dropped_away.get(), 46);
        rig.outbox.set_peer(Peer::Connected);
        let session = rig.session(connection, &config);
        let test = async {
            // More from the bus while the writer is blocked on the device.
            rig.publish(50..60).await;
            // The device answers without having read anything.
            device.write_all(&[1, 0xc3]).await.expect("device writes");
            let reply = from_device.recv().await.expect("the reply");
            assert_eq!(reply.payload()[..], [0xc3]);
            // After the grace the device counts as stalled and its oldest
            // messages are dropped. No event says so but the counter: look
            // at it, within a deadline.
            tokio::time::timeout(Duration::from_secs(10), async {
                while rig.counters.dropped_stalled.get() == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await
            .expect("drops once the device is stalled");
            // Then it reads up to the newest message.
            let mut wire = Vec::new();
            let reading = async {
                while !wire.ends_with(&[59; 8]) {
                    let mut buf = [0u8; 64];
                    let n = device.read(&mut buf).await.expect("device reads");
                    wire.extend_from_slice(&buf[..n]);
                }
            };
            tokio::time::timeout(Duration::from_secs(10), reading)
                .await
                .expect("the newest message within 10 s");
            rig.token.cancel();
            let mut rest = Vec::new();
            device.read_to_end(&mut rest).await.expect("goodbye");
            assert!(rest.is_empty());
            wire
        };
        let (end, wire) = tokio::join!(session, test);
        assert!(matches!(end, End::Shutdown), "{end}");
        let stats = rig.counters.snapshot();
        assert_eq!(wire.len() % 9, 0);
        assert_eq!(wire[..9], [8, 46, 46, 46, 46, 46, 46, 46, 46]);
        assert_eq!(
            wire.len() / 9 + (stats.dropped_away + stats.dropped_stalled) as usize,
            60,
            "each message delivered or counted as dropped"
        );
        assert_eq!(stats.from_device, 1);
        assert!(!rig.outbox.is_stalled(), "caught up");
    }

    /// A device that reads, but slower than the bus publishes, with a queue
    /// of 4 and 16 bytes of connection: the bus waits for it.
    #[tokio::test]
    async fn a_device_slower_than_the_bus_loses_nothing() {
        const COUNT: u8 = 200;
        let config = Config {
            queue: QueuePolicy {
                // Never reached by a device that keeps reading.
                stall_grace: Duration::from_secs(30),
                ..config().queue
            },
            ..config()
        };
        let (rig, _) = rig(&config).await;
        let (mut device, connection) = tokio::io::duplex(16);
        let session = rig.session(connection, &config);
        let test = async {
            rig.publish(0..COUNT).await;
            let mut received = Vec::new();
            let reading = async {
                while received.len() < COUNT as usize {
                    let mut frame = [0u8; 9];
                    device.read_exact(&mut frame).await.expect("a frame");
                    assert_eq!(frame[0], 8);
                    received.push(frame[1]);
                    // The device's pace: far slower than the bus.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            };
            // On failure, what arrived is compared below.
            let _ = tokio::time::timeout(Duration::from_secs(10), reading).await;
            rig.token.cancel();
            received
        };
        let (end, received) = tokio::join!(session, test);
        assert!(matches!(end, End::Shutdown), "{end}");
        assert_eq!(received, (0..COUNT).collect::<Vec<_>>());
        let stats = rig.counters.snapshot();
        assert_eq!(
            (stats.dropped_away + stats.dropped_stalled, stats.to_device),
            (0, COUNT as u64)
        );
        assert_eq!(stats.to_device_bytes, 8 * COUNT as u64);
    }

    #[tokio::test]
    async fn the_device_closing_mid_frame_publishes_nothing() {
        let config = config();
        let (rig, _) = rig(&config).await;
        let (mut device, connection) = tokio::io::duplex(64);
        device.write_all(&[5, 1, 2]).await.expect("device writes");
        drop(device);
        let end = rig.session(connection, &config).await;
        assert!(matches!(end, End::ClosedMidFrame), "{end}");
        assert_eq!(rig.counters.from_device.get(), 0);
    }
}
