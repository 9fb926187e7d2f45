//! The listener and the bus side: accepts connections (one task each,
//! spawned before any handshake) and hands every bus message to the clients
//! of its topic.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use banyan_core::{Client, Message, Messages};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::origin::OriginPolicy;
use crate::outbox::{Outbox, Pushed};
use crate::protocol;
use crate::routes::{ClientId, Routes};
use crate::session;

/// Pause after a failed `accept` (out of file descriptors, usually), so the
/// loop does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Bus messages dispatched in a row before the loop looks at connections
/// and shutdown again.
const DISPATCH_BATCH: usize = 256;

/// A client in the routing table: its queue, and its address for the log.
#[derive(Debug, Clone)]
pub(crate) struct Subscriber {
    pub(crate) peer: SocketAddr,
    pub(crate) outbox: Arc<Outbox>,
}

/// What the sessions share: the one bus connection and the routing table.
#[derive(Debug)]
pub(crate) struct Hub {
    pub(crate) bus: Client,
    pub(crate) config: Config,
    pub(crate) origins: OriginPolicy,
    pub(crate) ws_config: WebSocketConfig,
    /// A plain mutex: every critical section is a few map operations, never
    /// held across an await.
    routes: Mutex<Routes<Subscriber>>,
}

impl Hub {
    fn new(bus: Client, config: Config) -> Hub {
        let ws_config = WebSocketConfig::default()
            .max_message_size(Some(config.max_message_size))
            .max_frame_size(Some(config.max_message_size));
        Hub {
            bus,
            origins: OriginPolicy::new(&config.allowed_origins),
            ws_config,
            config,
            routes: Mutex::new(Routes::default()),
        }
    }

    pub(crate) fn routes(&self) -> MutexGuard<'_, Routes<Subscriber>> {
        self.routes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a client to `topic` and subscribes the topic on the bus when it
    /// is the topic's first client.
    pub(crate) async fn join(&self, topic: &str, client: ClientId, subscriber: Subscriber) {
        let first = self.routes().join(topic, client, subscriber);
        if first {
            tracing::debug!(topic, "subscribing");
            if let Err(e) = self.bus.subscribe(topic).await {
                tracing::warn!(topic, error = %e, "subscribing the reply topic failed");
            }
        }
    }

    /// Removes a client from `topic` and unsubscribes the topic when it was
    /// the topic's last client.
    pub(crate) async fn leave(&self, topic: &str, client: ClientId) {
        let last = self.routes().leave(topic, client);
        if last {
            tracing::debug!(topic, "unsubscribing: its last client left");
            if let Err(e) = self.bus.unsubscribe(topic).await {
                tracing::warn!(topic, error = %e, "unsubscribing the reply topic failed");
            }
        }
    }

    /// Converts a bus message to JSON once and queues the shared text for
    /// every client of its topic. Never waits: the clients whose queue is
    /// full are returned, to be waited for ([`Delivery::settle`]).
    fn dispatch(&self, message: &Message) -> Option<Delivery> {
        let topic = message.topic();
        if !self.routes().has(topic) {
            return None;
        }
        let text = match protocol::bus_to_json(message.payload()) {
            Ok(text) => Utf8Bytes::from(text),
            Err(e) => {
                tracing::warn!(topic, error = %e, "bus message not forwarded: it has no JSON form");
                return None;
            }
        };
        let mut full = Vec::new();
        for subscriber in self.routes().clients(topic) {
            if subscriber.outbox.push(&text) == Pushed::Full {
                full.push(subscriber.clone());
            }
        }
        if full.is_empty() {
            return None;
        }
        Some(Delivery {
            text,
            full,
            deadline: Instant::now() + self.config.stall_grace,
        })
    }
}

/// A bus message some clients could not take yet (their queue was full).
/// While it is pending the gateway reads nothing more from the bus.
#[derive(Debug)]
struct Delivery {
    text: Utf8Bytes,
    /// The clients still to be given `text`, in routing order.
    full: Vec<Subscriber>,
    /// When the clients still full are declared stalled.
    deadline: Instant,
}

impl Delivery {
    /// Waits until the first client still full has room, or the grace
    /// period is over.
    async fn wait(&self) {
        if let Some(first) = self.full.first() {
            let _ = tokio::time::timeout_at(self.deadline, first.outbox.room()).await;
        }
    }

    /// Gives `text` to every client that has room now. Past the deadline,
    /// the clients still full are declared stalled and lose their oldest
    /// message instead. `true` once every client has it.
    fn settle(&mut self) -> bool {
        let late = Instant::now() >= self.deadline;
        self.full.retain(|subscriber| {
            if subscriber.outbox.push(&self.text) != Pushed::Full {
                return false;
            }
            if !late {
                return true;
            }
            if subscriber.outbox.mark_stalled() {
                tracing::warn!(
                    client = %subscriber.peer,
                    "client is not reading: dropping its oldest messages until it catches up"
                );
            }
            subscriber.outbox.push(&self.text);
            false
        });
        self.full.is_empty()
    }
}

/// Completes once a pending delivery can make progress; never without one.
async fn progress(pending: &Option<Delivery>) {
    match pending {
        Some(delivery) => delivery.wait().await,
        None => std::future::pending().await,
    }
}

/// Runs the gateway until `shutdown` completes or the bus closes.
///
/// `listener` is bound already (tests bind port 0); `bus` and `messages` are
/// the gateway's one bus connection, from [`banyan_core::attach()`]. The
/// [`Config::held_topics`] are subscribed first. At shutdown every client
/// gets a close frame (within [`Config::close_timeout`]).
pub async fn run(
    listener: TcpListener,
    bus: Client,
    messages: &mut Messages,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    for topic in &config.held_topics {
        bus.subscribe(topic).await?;
    }
    let hub = Arc::new(Hub::new(bus, config));
    let (stop, stopped) = watch::channel(false);
    let mut sessions = JoinSet::new();
    let mut next_client: ClientId = 0;
    let mut pending: Option<Delivery> = None;
    tokio::pin!(shutdown);
    let result = loop {
        tokio::select! {
            () = &mut shutdown => break Ok(()),
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if sessions.len() >= hub.config.max_clients {
                        tracing::warn!(%peer, limit = hub.config.max_clients, "connection refused: too many clients");
                        continue;
                    }
                    next_client += 1;
                    // The handshake happens in the session's task, never here.
                    sessions.spawn(session::serve(hub.clone(), stream, peer, next_client, stopped.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            message = messages.recv(), if pending.is_none() => match message {
                Some(message) => {
                    pending = hub.dispatch(&message);
                    // What the bus already handed over is dispatched without
                    // another turn of this loop.
                    for _ in 1..DISPATCH_BATCH {
                        if pending.is_some() {
                            break;
                        }
                        match messages.try_recv() {
                            Some(message) => pending = hub.dispatch(&message),
                            None => break,
                        }
                    }
                }
                None => break Err(Error::BusClosed),
            },
            () = progress(&pending) => {
                if pending.as_mut().is_some_and(Delivery::settle) {
                    pending = None;
                }
            }
            Some(done) = sessions.join_next(), if !sessions.is_empty() => {
                if let Err(e) = done {
                    tracing::error!(error = %e, "a client session failed");
                }
            }
        }
    };
    tracing::info!(clients = sessions.len(), "shutting down");
    let _ = stop.send(true);
    let grace = hub.config.close_timeout + Duration::from_secs(1);
    let drained = tokio::time::timeout(grace, async {
        while sessions.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        sessions.abort_all();
    }
    result
}
