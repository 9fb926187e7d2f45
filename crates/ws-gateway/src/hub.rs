//! What the sessions and the bus intake share: the one bus connection, the
//! settings, the routing table of reply topics to pages, and the counters.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use banyan_core::{Client, Message};
use banyan_gateway::metrics::{self, Metric};
use banyan_gateway::{Outbox, Route, Weigh};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::config::Config;
use crate::origin::OriginPolicy;
use crate::protocol;
use crate::routes::{ClientId, Routes};
use crate::stats::Counters;

/// A JSON text for pages: converted once per bus message and shared
/// (reference-counted) by every page of its topic, never copied.
#[derive(Clone, Debug)]
pub(crate) struct Text(pub(crate) Utf8Bytes);

impl Weigh for Text {
    fn weight(&self) -> usize {
        self.0.len()
    }
}

/// What the sessions share.
#[derive(Debug)]
pub(crate) struct Hub {
    pub(crate) bus: Client,
    pub(crate) config: Config,
    pub(crate) origins: OriginPolicy,
    pub(crate) ws_config: WebSocketConfig,
    pub(crate) counters: Counters,
    /// Connections being served, counted against `max_clients`.
    sessions: AtomicUsize,
    /// A plain mutex: every critical section is a few map operations, never
    /// held across an await.
    routes: Mutex<Routes<Arc<Outbox<Text>>>>,
}

impl Hub {
    pub(crate) fn new(bus: Client, config: Config, counters: Counters) -> Hub {
        let ws_config = WebSocketConfig::default()
            .max_message_size(Some(config.max_message_size))
            .max_frame_size(Some(config.max_message_size));
        Hub {
            bus,
            origins: OriginPolicy::new(&config.allowed_origins),
            ws_config,
            config,
            counters,
            sessions: AtomicUsize::new(0),
            routes: Mutex::new(Routes::default()),
        }
    }

    fn routes(&self) -> MutexGuard<'_, Routes<Arc<Outbox<Text>>>> {
        banyan_gateway::sync::lock(&self.routes)
    }

    /// Counts a new connection against the limit; `None` when the gateway
    /// is full. The count drops when the guard does.
    pub(crate) fn admit(self: &Arc<Self>) -> Option<SessionGuard> {
        let limit = self.config.max_clients;
        self.sessions
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()?;
        Some(SessionGuard(self.clone()))
    }

    /// Adds a page to `topic` and subscribes the topic on the bus when it
    /// is the topic's first page.
    pub(crate) async fn join(&self, topic: &str, client: ClientId, outbox: Arc<Outbox<Text>>) {
        let first = self.routes().join(topic, client, outbox);
        if first {
            tracing::debug!(topic, "subscribing");
            if let Err(e) = self.bus.subscribe(topic).await {
                tracing::warn!(topic, error = %e, "subscribing the reply topic failed");
            }
        }
    }

    /// Removes a page from `topic` and unsubscribes the topic when it was
    /// the topic's last page.
    pub(crate) async fn leave(&self, topic: &str, client: ClientId) {
        let last = self.routes().leave(topic, client);
        if last {
            tracing::debug!(topic, "unsubscribing: its last client left");
            if let Err(e) = self.bus.unsubscribe(topic).await {
                tracing::warn!(topic, error = %e, "unsubscribing the reply topic failed");
            }
        }
    }
}

impl Hub {
    /// The gateway's metrics now: its counters and its pages' queues.
    pub(crate) fn metrics(&self) -> Vec<Metric> {
        let mut out = metrics::from_report("banyan_wsgw", &self.counters.snapshot());
        let routes = self.routes();
        out.extend(metrics::queue_gauges(
            "banyan_wsgw",
            routes.all().map(|outbox| &**outbox),
        ));
        out
    }
}

/// A connection counted against `max_clients`.
#[derive(Debug)]
pub(crate) struct SessionGuard(Arc<Hub>);

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.0.sessions.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The bus intake's route: a bus message goes, as JSON text converted once,
/// to every page whose reply topic is exactly its topic.
#[derive(Debug)]
pub(crate) struct ToPages(pub(crate) Arc<Hub>);

impl Route for ToPages {
    type Item = Text;

    fn route(&mut self, message: Message, targets: &mut Vec<Arc<Outbox<Text>>>) -> Option<Text> {
        let hub = &self.0;
        let topic = message.topic();
        if !hub.routes().has(topic) {
            return None;
        }
        let text = match protocol::bus_to_json(message.payload()) {
            Ok(text) => Text(Utf8Bytes::from(text)),
            Err(e) => {
                let skipped = hub.counters.not_json.inc();
                tracing::warn!(topic, skipped, error = %e, "bus message not forwarded: it has no JSON form");
                return None;
            }
        };
        targets.extend(hub.routes().clients(topic).cloned());
        Some(text)
    }
}
