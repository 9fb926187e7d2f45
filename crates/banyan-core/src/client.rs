//! The component client: how a tokio program joins the bus.
//!
//! [`Client::connect`] opens one connection to a backplane (a publishing and a
//! subscribing socket, owned by a thread of their own) and returns a cheap,
//! cloneable [`Client`] for publishing and subscribing from any task, and the
//! [`Messages`] stream of everything the subscriptions match.
//!
//! # Readiness instead of a sleep
//!
//! python-banyan sleeps 0.3 s after connecting, because ZeroMQ publishers
//! drop what they send before they know who subscribes. The client knows
//! instead: its publishing socket is an XPUB, which sees the subscriptions the
//! backplane forwards upstream. On connect, the client subscribes to a probe
//! topic of its own; the backplane first replays every existing subscription to
//! a new publisher, then forwards the probe, so when the probe comes back the
//! publisher knows every subscriber already on the bus, and `connect` returns.
//! [`Client::subscribe`] uses the same probe to return only once the backplane
//! routes the topic to this client.
//!
//! python-banyan's own backplane (a SUB/PUB forwarder) forwards no
//! subscriptions; it subscribes to everything, which the client sees as the
//! empty subscription. When that is seen and no probe has come back after a
//! short grace period, the client publishes a message on its probe topic
//! until the message comes back through its own subscription: then its
//! subscriptions are in place at the forwarder, and `connect` (or
//! `subscribe`) returns. Such probe messages are never handed to a
//! [`Messages`] stream; python components subscribed to everything see them.

use std::pin::Pin;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use rmpv::Value;
use tokio::sync::{mpsc, oneshot};

pub use crate::config::ClientConfig;
use crate::driver::{self, Command, Shared};
use crate::envelope::Message;
use crate::error::{Error, Result};

/// A handle on one connection to the bus. Clone it freely: every clone
/// publishes and subscribes through the same sockets.
///
/// When the last clone is dropped the connection closes, flushing what was
/// queued; [`Client::close`] does the same and waits for it.
#[derive(Clone, Debug)]
pub struct Client {
    commands: mpsc::Sender<Command>,
    shared: Arc<Shared>,
    /// What it was connected with: for another connection to the same
    /// backplane.
    config: Arc<ClientConfig>,
}

/// The stream of messages matching the client's subscriptions, in the order
/// the backplane delivered them.
///
/// Its queue holds [`ClientConfig::queue_capacity`] messages; while it is
/// full the client stops reading from the backplane, whose own queue for this
/// client then fills, after which the backplane drops messages for this client
/// only (counted in its stats). The stream ends when the client is closed.
#[derive(Debug)]
pub struct Messages {
    rx: mpsc::Receiver<driver::Batch>,
    /// The rest of the batch being taken.
    batch: std::vec::IntoIter<Message>,
    shared: Arc<Shared>,
}

impl Client {
    /// Connects to the backplane at `config` and waits until it answers.
    ///
    /// Fails with [`Error::BackplaneUnreachable`] when nothing answers within
    /// [`ClientConfig::ready_timeout`].
    pub async fn connect(config: &ClientConfig) -> Result<(Client, Messages)> {
        let shared = Arc::new(Shared::new(config.queue_bytes)?);
        let capacity = config.queue_capacity.max(1);
        let (commands, command_rx) = mpsc::channel(capacity);
        // Received messages travel in batches of up to driver::BATCH.
        let (inbox, rx) = mpsc::channel(capacity.div_ceil(driver::BATCH));
        let (ready_tx, ready_rx) = oneshot::channel();
        driver::spawn(config, shared.clone(), command_rx, inbox, ready_tx)?;
        ready_rx.await.map_err(|_| Error::Closed)??;
        let client = Client {
            commands,
            shared: shared.clone(),
            config: Arc::new(config.clone()),
        };
        Ok((
            client,
            Messages {
                rx,
                batch: Vec::new().into_iter(),
                shared,
            },
        ))
    }

    /// Publishes `value` on `topic`, MessagePack-encoded.
    ///
    /// Waits only while the queue toward the backplane is full. A message
    /// published after `connect` returned reaches every subscriber that was on
    /// the bus when it returned.
    pub async fn publish(&self, topic: &str, value: &Value) -> Result<()> {
        self.send(Message::new(topic, value)).await
    }

    /// Publishes already-encoded MessagePack bytes on `topic`, unchanged.
    pub async fn publish_raw(&self, topic: &str, payload: impl Into<Bytes>) -> Result<()> {
        self.send(Message::from_raw(topic, payload)).await
    }

    /// Publishes a message.
    pub async fn send(&self, message: Message) -> Result<()> {
        let share = self.shared.outbox_share(&message);
        if share == 0 {
            return self.command(Command::Publish(message)).await;
        }
        self.shared
            .outbox_room
            .acquire_many(share)
            .await
            .map_err(|_| Error::Closed)?
            .forget();
        let sent = self.command(Command::Publish(message)).await;
        if sent.is_err() {
            self.shared.outbox_room.add_permits(share as usize);
        }
        sent
    }

    /// Publishes a message if the queue toward the backplane has room, else
    /// fails at once with [`Error::Full`].
    pub fn try_send(&self, message: Message) -> Result<()> {
        let share = self.shared.outbox_share(&message);
        if share > 0 {
            self.shared
                .outbox_room
                .try_acquire_many(share)
                .map_err(|e| match e {
                    tokio::sync::TryAcquireError::Closed => Error::Closed,
                    tokio::sync::TryAcquireError::NoPermits => Error::Full,
                })?
                .forget();
        }
        if let Err(e) = self.commands.try_send(Command::Publish(message)) {
            self.shared.outbox_room.add_permits(share as usize);
            return Err(match e {
                mpsc::error::TrySendError::Full(_) => Error::Full,
                mpsc::error::TrySendError::Closed(_) => Error::Closed,
            });
        }
        self.shared.wake.notify();
        Ok(())
    }

    /// Subscribes to every topic that starts with `prefix` (`""`: all).
    ///
    /// Returns once the backplane routes those topics to this client;
    /// publishers elsewhere learn of it within about a millisecond.
    /// Subscriptions count: subscribing twice needs two unsubscribes.
    pub async fn subscribe(&self, prefix: &str) -> Result<()> {
        let (done, rx) = oneshot::channel();
        self.command(Command::Subscribe {
            prefix: prefix.as_bytes().to_vec(),
            done,
        })
        .await?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Drops one subscription to `prefix`.
    pub async fn unsubscribe(&self, prefix: &str) -> Result<()> {
        self.command(Command::Unsubscribe {
            prefix: prefix.as_bytes().to_vec(),
        })
        .await
    }

    /// Waits until some component on the bus subscribes to a prefix of
    /// `topic` (this client's own subscriptions count). Against a backplane
    /// that forwards everything, returns at once.
    pub async fn wait_for_subscriber(&self, topic: &str) -> Result<()> {
        self.wait_subscribed(topic, true).await
    }

    /// Waits until no component on the bus subscribes to any prefix of
    /// `topic` any more (this client's own subscriptions count). Useful to
    /// check that a component let go of a topic.
    pub async fn wait_for_no_subscriber(&self, topic: &str) -> Result<()> {
        self.wait_subscribed(topic, false).await
    }

    async fn wait_subscribed(&self, topic: &str, present: bool) -> Result<()> {
        let (done, rx) = oneshot::channel();
        self.command(Command::WaitForSubscriber {
            topic: topic.as_bytes().to_vec(),
            present,
            done,
        })
        .await?;
        rx.await.map_err(|_| Error::Closed)
    }

    /// Whether the backplane forwards subscriptions to publishers (ours does;
    /// python-banyan's forwarder does not, and then every message is sent to
    /// it whoever subscribes).
    pub fn forwards_subscriptions(&self) -> bool {
        self.shared.forwards_subscriptions.load(Ordering::Relaxed)
    }

    /// How many received ZeroMQ messages were not Banyan messages (wrong
    /// frame count, topic not UTF-8) and were dropped with a warning.
    pub fn malformed_count(&self) -> u64 {
        self.shared.malformed.load(Ordering::Relaxed)
    }

    /// The readiness timeout this client was connected with.
    pub fn ready_timeout(&self) -> Duration {
        self.config.ready_timeout
    }

    /// The configuration this client was connected with (its backplane's
    /// address and ports): what another connection to the same bus uses.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Closes the connection for every clone: what was published before is
    /// flushed to the backplane (for at most a second), then the sockets
    /// close and [`Messages`] ends.
    pub async fn close(&self) -> Result<()> {
        let (done, rx) = oneshot::channel();
        if self.command(Command::Close { done }).await.is_err() {
            return Ok(()); // already closed
        }
        let _ = rx.await;
        Ok(())
    }

    async fn command(&self, command: Command) -> Result<()> {
        // The queue usually has room: skip the waiting machinery then.
        match self.commands.try_send(command) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(command)) => {
                self.commands
                    .send(command)
                    .await
                    .map_err(|_| Error::Closed)?;
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(Error::Closed),
        }
        self.shared.wake.notify();
        Ok(())
    }
}

impl Messages {
    /// The next message; `None` once the client is closed.
    pub async fn recv(&mut self) -> Option<Message> {
        loop {
            if let Some(message) = self.batch.next() {
                return Some(message);
            }
            let batch = self.rx.recv().await?;
            self.take(batch);
        }
    }

    /// The next message if one is waiting.
    pub fn try_recv(&mut self) -> Option<Message> {
        loop {
            if let Some(message) = self.batch.next() {
                return Some(message);
            }
            let batch = self.rx.try_recv().ok()?;
            self.take(batch);
        }
    }

    /// Takes a batch out of the inbox, freeing its bytes there.
    fn take(&mut self, batch: driver::Batch) {
        self.shared
            .inbox_bytes
            .fetch_sub(batch.bytes, Ordering::SeqCst);
        self.batch = batch.messages.into_iter();
        self.after_take();
    }

    fn after_take(&self) {
        // Pairs with the I/O thread's fence after it sets `inbox_blocked`:
        // either it sees the room we just made or we see its flag.
        fence(Ordering::SeqCst);
        if self.shared.inbox_blocked.load(Ordering::Relaxed)
            && self.shared.inbox_blocked.swap(false, Ordering::SeqCst)
        {
            self.shared.wake.force();
        }
    }
}

impl futures_core::Stream for Messages {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        loop {
            if let Some(message) = self.batch.next() {
                return Poll::Ready(Some(message));
            }
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(batch)) => self.take(batch),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
