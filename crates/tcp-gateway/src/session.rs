//! One connection to the device: device → bus and bus → device run side by
//! side, so a device that stops reading never stalls what it sends, and
//! the other way round.

use std::fmt;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use banyan_core::{Client, Message, Messages};
use bytes::BytesMut;
use futures_core::Stream;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::codec::FramedRead;

use crate::config::Config;
use crate::error::Error;
use crate::framing::Framing;
use crate::outbox::Outbox;
use crate::stats::Stats;

/// How many bytes of frames the writer gathers into one write.
const BATCH_BYTES: usize = 64 * 1024;

/// The read buffer of frames from the device: one read takes many frames.
const READ_BYTES: usize = 64 * 1024;

/// The most bus messages taken in one go, so that the device's frames and
/// shutdown are looked at in between.
const INTAKE_BATCH: usize = 4096;

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

impl End {
    /// Whether the gateway should connect again.
    pub(crate) fn reconnect(&self) -> bool {
        !matches!(self, End::BusClosed | End::Shutdown)
    }
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

/// What the parts of the gateway share: the queue toward the device, with
/// the writer's wake-up, and the counters.
#[derive(Debug)]
pub(crate) struct Shared {
    /// A std mutex: it is held only to push or pop, never across an await.
    pub(crate) outbox: Mutex<Outbox>,
    /// Wakes the writer when the outbox gains messages or shutdown begins.
    pub(crate) wake: Notify,
    /// Tells the bus side that the device took bytes or the writer made
    /// room: a full queue whose device still reads is waited for.
    pub(crate) progress: Notify,
    /// Set at shutdown: the writer flushes the outbox and closes.
    pub(crate) closing: AtomicBool,
    pub(crate) stats: Stats,
}

impl Shared {
    pub(crate) fn new(capacity: usize) -> Shared {
        Shared {
            outbox: Mutex::new(Outbox::new(capacity)),
            wake: Notify::new(),
            progress: Notify::new(),
            closing: AtomicBool::new(false),
            stats: Stats::default(),
        }
    }

    fn outbox(&self) -> std::sync::MutexGuard<'_, Outbox> {
        // A panic while holding the lock leaves a queue that is still valid.
        self.outbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a bus message for the device, dropping the oldest when full
    /// (the policy while the device is away).
    pub(crate) fn queue(&self, message: Message) {
        let mut outbox = self.outbox();
        self.push(&mut outbox, message);
        drop(outbox);
        self.wake.notify_one();
    }

    /// Queues `first`, then every bus message already received, while the
    /// outbox accepts them: one lock and one wake of the writer for a whole
    /// batch, so that the writer sends them in one write.
    fn queue_ready(&self, first: Message, messages: &mut Messages) {
        let mut outbox = self.outbox();
        self.push(&mut outbox, first);
        let mut taken = 1;
        while taken < INTAKE_BATCH && outbox.accepts() {
            let Some(message) = messages.try_recv() else {
                break;
            };
            self.push(&mut outbox, message);
            taken += 1;
        }
        drop(outbox);
        self.wake.notify_one();
    }

    fn push(&self, outbox: &mut Outbox, message: Message) {
        if outbox.push(message).is_some() {
            self.stats.add_dropped();
            // Once per run of drops; the count follows when it is reported.
            if outbox.unreported() == 1 {
                tracing::warn!(
                    capacity = outbox.capacity(),
                    "queue toward the device is full: dropping the oldest messages"
                );
            }
        }
    }

    /// Messages waiting, and messages dropped since the last report.
    pub(crate) fn take_report(&self) -> (usize, u64) {
        let mut outbox = self.outbox();
        (outbox.len(), outbox.take_unreported())
    }
}

/// Runs one connection until it ends, forwarding both ways.
///
/// Bus messages are taken while the outbox accepts them. When it is full
/// the bus is left to hold them back (back-pressure up to the publishers)
/// for as long as the device keeps taking bytes; a device that takes none
/// for [`Config::slow_device_grace`] is marked stalled, and bus messages
/// are then taken again, dropping the oldest, until it has drained the
/// outbox. `shutdown` completing starts a goodbye: what is queued is
/// flushed (for at most [`Config::flush_timeout`]), then the connection is
/// shut down.
pub(crate) async fn run<S, F>(
    stream: S,
    config: &Config,
    client: &Client,
    messages: &mut Messages,
    shared: &Shared,
    mut shutdown: Pin<&mut F>,
) -> End
where
    S: AsyncRead + AsyncWrite,
    F: Future<Output = ()>,
{
    let (read_half, write_half) = tokio::io::split(stream);
    let framing = config.framing();
    let reader = read_device(read_half, config, framing, client, shared);
    let writer = write_device(write_half, config.idle_timeout, framing, shared);
    tokio::pin!(reader, writer);
    shared.outbox().clear_stalled();
    // Since when the outbox has been full with no progress from the device.
    let mut full_since: Option<Instant> = None;
    loop {
        let accepts = shared.outbox().accepts();
        let stall_at = if accepts {
            full_since = None;
            None
        } else {
            Some(*full_since.get_or_insert_with(Instant::now) + config.slow_device_grace)
        };
        let grace = async {
            match stall_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            end = &mut reader => return end,
            end = &mut writer => return end,
            message = messages.recv(), if accepts => match message {
                Some(message) => shared.queue_ready(message, messages),
                None => return End::BusClosed,
            },
            // The device took something: the grace starts over.
            () = shared.progress.notified(), if !accepts => full_since = None,
            () = grace, if !accepts => {
                shared.outbox().mark_stalled();
                tracing::warn!(
                    grace = ?config.slow_device_grace,
                    "the device takes nothing and its queue is full: \
                     dropping the oldest messages until it catches up"
                );
            }
            () = &mut shutdown => break,
        }
    }
    shared.closing.store(true, Ordering::SeqCst);
    shared.wake.notify_one();
    match tokio::time::timeout(config.flush_timeout, &mut writer).await {
        Ok(End::Shutdown) => {}
        Ok(end) => tracing::warn!("while closing: {end}"),
        Err(_) => {
            let (waiting, _) = shared.take_report();
            tracing::warn!(
                waiting,
                "the device did not take the queued messages within {:?}",
                config.flush_timeout
            );
        }
    }
    End::Shutdown
}

/// Device → bus: each frame is published unchanged on the publish topic.
async fn read_device<R: AsyncRead + Unpin>(
    read_half: R,
    config: &Config,
    framing: Framing,
    client: &Client,
    shared: &Shared,
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
                shared.stats.add_invalid();
                tracing::warn!(
                    size = frame.len(),
                    "frame from the device not published: {e}"
                );
                continue;
            }
        }
        let message = Message::from_raw(topic.clone(), frame.freeze());
        if client.send(message).await.is_err() {
            return End::BusClosed;
        }
        shared.stats.add_from_device();
    }
}

/// FramedRead reports the end of the stream inside a frame as an `Other`
/// error with this text (tokio-util 0.7) and no type of its own.
fn is_mid_frame_eof(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::Other && e.to_string().contains("bytes remaining on stream")
}

/// Bus → device: the outbox is written in batches, one flush each, until
/// the connection fails, takes no byte for `stall_timeout`, or shutdown has
/// flushed it.
async fn write_device<W: AsyncWrite + Unpin>(
    write_half: W,
    stall_timeout: Option<Duration>,
    framing: Framing,
    shared: &Shared,
) -> End {
    let mut write_half = write_half;
    let mut batch = BytesMut::with_capacity(BATCH_BYTES);
    loop {
        let frames = fill(&mut batch, framing, shared);
        if batch.is_empty() {
            if shared.closing.load(Ordering::SeqCst) {
                let _ = write_half.shutdown().await;
                return End::Shutdown;
            }
            shared.wake.notified().await;
            continue;
        }
        // Taking messages made room in the outbox.
        shared.progress.notify_one();
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
                Ok(_) => shared.progress.notify_one(),
                Err(error) => return End::WriteFailed { error, lost },
            }
        }
        if let Err(error) = write_half.flush().await {
            return End::WriteFailed { error, lost };
        }
        batch.clear();
        shared.stats.add_to_device(frames as u64);
    }
}

/// Moves messages from the outbox into `batch` as frames, up to
/// [`BATCH_BYTES`]; returns how many.
fn fill(batch: &mut BytesMut, framing: Framing, shared: &Shared) -> usize {
    let mut frames = 0usize;
    let mut outbox = shared.outbox();
    while batch.len() < BATCH_BYTES {
        let Some(message) = outbox.pop() else { break };
        match framing.encode(message.payload(), batch) {
            Ok(()) => frames += 1,
            Err(Error::FrameTooLarge { size, max }) => {
                shared.stats.add_too_large();
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
    if outbox.is_empty() {
        let dropped = outbox.take_unreported();
        if dropped > 0 {
            tracing::warn!(
                dropped,
                total = outbox.dropped(),
                "queue toward the device drained; messages dropped meanwhile"
            );
        }
    }
    frames
}

#[cfg(test)]
mod tests {
    use banyan_core::{Backplane, BackplaneConfig, ClientConfig};
    use tokio::io::AsyncReadExt;

    use super::*;

    async fn bus() -> (Backplane, ClientConfig) {
        let backplane = Backplane::bind(&BackplaneConfig {
            bind_address: "127.0.0.1".into(),
            publisher_port: 0,
            subscriber_port: 0,
            ..BackplaneConfig::default()
        })
        .expect("backplane");
        let config = ClientConfig {
            publisher_port: backplane.publisher_port(),
            subscriber_port: backplane.subscriber_port(),
            ..ClientConfig::default()
        };
        (backplane, config)
    }

    fn config() -> Config {
        Config {
            topics: vec!["to_dev".into()],
            publish_topic: "from_dev".into(),
            queue_capacity: 4,
            slow_device_grace: Duration::from_millis(100),
            ..Config::default()
        }
    }

    /// The device end of an in-memory connection that holds 16 bytes: a
    /// device that does not read blocks the gateway's writes at once.
    #[tokio::test]
    async fn a_device_that_does_not_read_blocks_neither_the_bus_nor_its_own_frames() {
        let (_backplane, bus) = bus().await;
        let config = config();
        let (gateway, mut to_forward) = Client::connect(&bus).await.expect("gateway");
        gateway.subscribe("to_dev").await.expect("subscribed");
        let (app, mut from_device) = Client::connect(&bus).await.expect("app");
        app.subscribe("from_dev").await.expect("subscribed");
        let (mut device, connection) = tokio::io::duplex(16);
        let shared = Shared::new(config.queue_capacity);
        // A backlog from while the device was away: the bound keeps 4.
        for n in 0..50u8 {
            shared.queue(Message::from_raw("to_dev", vec![n; 8]));
        }
        assert_eq!(shared.stats.report().dropped, 46);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async {
            let _ = stopped.await;
        };
        tokio::pin!(shutdown);
        let session = run(
            connection,
            &config,
            &gateway,
            &mut to_forward,
            &shared,
            shutdown.as_mut(),
        );
        let test = async {
            // More from the bus while the writer is blocked on the device.
            for n in 50..60u8 {
                app.publish_raw("to_dev", vec![n; 8])
                    .await
                    .expect("published");
            }
            // The device answers without having read anything.
            device.write_all(&[1, 0xc3]).await.expect("device writes");
            let reply = from_device.recv().await.expect("the reply");
            assert_eq!(reply.payload()[..], [0xc3]);
            // After the grace the device counts as stalled and its oldest
            // messages are dropped. No event says so but the counter: look
            // at it, within a deadline.
            tokio::time::timeout(Duration::from_secs(10), async {
                while shared.stats.report().dropped == 46 {
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
            let _ = stop.send(());
            let mut rest = Vec::new();
            device.read_to_end(&mut rest).await.expect("goodbye");
            assert!(rest.is_empty());
            wire
        };
        let (end, wire) = tokio::join!(session, test);
        assert!(matches!(end, End::Shutdown), "{end}");
        let report = shared.stats.report();
        assert_eq!(wire.len() % 9, 0);
        assert_eq!(wire[..9], [8, 46, 46, 46, 46, 46, 46, 46, 46]);
        assert_eq!(
            wire.len() / 9 + report.dropped as usize,
            60,
            "each message delivered or counted as dropped"
        );
        assert_eq!(report.from_device, 1);
    }

    /// A device that reads, but slower than the bus publishes, with a queue
    /// of 4 and 16 bytes of connection: the bus waits for it.
    #[tokio::test]
    async fn a_device_slower_than_the_bus_loses_nothing() {
        const COUNT: u8 = 200;
        let (_backplane, bus) = bus().await;
        let config = Config {
            // Never reached by a device that keeps reading.
            slow_device_grace: Duration::from_secs(30),
            ..config()
        };
        let (gateway, mut to_forward) = Client::connect(&bus).await.expect("gateway");
        gateway.subscribe("to_dev").await.expect("subscribed");
        let (app, _) = Client::connect(&bus).await.expect("app");
        let (mut device, connection) = tokio::io::duplex(16);
        let shared = Shared::new(config.queue_capacity);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async {
            let _ = stopped.await;
        };
        tokio::pin!(shutdown);
        let session = run(
            connection,
            &config,
            &gateway,
            &mut to_forward,
            &shared,
            shutdown.as_mut(),
        );
        let test = async {
            for n in 0..COUNT {
                app.publish_raw("to_dev", vec![n; 8])
                    .await
                    .expect("published");
            }
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
            let _ = stop.send(());
            received
        };
        let (end, received) = tokio::join!(session, test);
        assert!(matches!(end, End::Shutdown), "{end}");
        assert_eq!(received, (0..COUNT).collect::<Vec<_>>());
        let report = shared.stats.report();
        assert_eq!((report.dropped, report.to_device), (0, COUNT as u64));
    }

    #[tokio::test]
    async fn the_device_closing_mid_frame_publishes_nothing() {
        let (_backplane, bus) = bus().await;
        let config = config();
        let (gateway, mut to_forward) = Client::connect(&bus).await.expect("gateway");
        let (mut device, connection) = tokio::io::duplex(64);
        let shared = Shared::new(config.queue_capacity);
        device.write_all(&[5, 1, 2]).await.expect("device writes");
        drop(device);
        let end = run(
            connection,
            &config,
            &gateway,
            &mut to_forward,
            &shared,
            std::pin::pin!(std::future::pending::<()>()),
        )
        .await;
        assert!(matches!(end, End::ClosedMidFrame), "{end}");
        assert!(end.reconnect());
        assert_eq!(shared.stats.report().from_device, 0);
    }
}
