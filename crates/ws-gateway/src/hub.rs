//! What the sessions and the bus intake share: the one bus connection, the
//! settings, the routing table of reply topics to pages, and the counters.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use banyan_core::{Client, Message};
use banyan_gateway::metrics::{self, Metric};
use banyan_gateway::{CancellationToken, Outbox, Route, Weigh};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::config::Config;
use crate::origin::OriginPolicy;
use crate::pending::{Pending, Ticket};
use crate::protocol;
use crate::routes::{ClientId, Routes};
use crate::stats::Counters;
use crate::view::Views;

/// What a page's WebSocket reads from its socket at most at once, and the
/// buffer it keeps for that: the largest part of an idle page's memory
/// (tungstenite's default is 128 KiB). A frame larger than this still
/// arrives whole (the buffer grows for it, up to `--max-message-size`);
/// OneGPIO commands are a few dozen bytes, and 8 KiB holds hundreds.
pub(crate) const READ_BUFFER: usize = 8 * 1024;

/// How many bytes of frames a page's WebSocket gathers before it writes
/// them to the socket (tungstenite's default is 128 KiB); a batch's flush
/// writes the rest. The buffer's room stays with an idle page once it was
/// used, so it is kept small; with `TCP_NOTSENT_LOWAT` at 128 KiB the
/// kernel still takes many such writes before the socket is full.
pub(crate) const WRITE_BUFFER: usize = 16 * 1024;

/// A JSON text for pages: converted once per bus message and shared
/// (reference-counted) by every page of its topic, never copied.
#[derive(Clone, Debug)]
pub(crate) struct Text {
    pub(crate) text: Utf8Bytes,
    /// A panic report: its pages are closed once it is written.
    pub(crate) closes: bool,
}

impl Weigh for Text {
    fn weight(&self) -> usize {
        self.text.len()
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
    /// Pages (upgraded connections), counted against `max_clients`.
    sessions: AtomicUsize,
    /// Connections waiting for their upgrade, each with the token that
    /// closes it when it is pushed out of the line. A plain mutex, as for
    /// the routes.
    pending: Mutex<Pending<CancellationToken>>,
    /// A plain mutex: every critical section is a few map operations, never
    /// held across an await.
    routes: Mutex<Routes<Arc<Outbox<Text>>>>,
    /// The bus views open (`GET /`).
    pub(crate) views: Views,
}

impl Hub {
    pub(crate) fn new(bus: Client, config: Config, counters: Counters) -> Hub {
        let ws_config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER)
            .write_buffer_size(WRITE_BUFFER)
            .max_message_size(Some(config.max_message_size))
            .max_frame_size(Some(config.max_message_size));
        Hub {
            bus,
            origins: OriginPolicy::new(&config.allowed_origins, config.known_editors),
            ws_config,
            pending: Mutex::new(Pending::new(config.max_pending)),
            config,
            counters,
            sessions: AtomicUsize::new(0),
            routes: Mutex::new(Routes::default()),
            views: Views::default(),
        }
    }

    /// Puts a new connection in the line of those waiting for their
    /// upgrade. When the line was full, the connection that waited longest
    /// is pushed out: its [`Waiting::pushed_out`] completes.
    pub(crate) fn wait_for_upgrade(self: &Arc<Self>) -> Waiting {
        let token = CancellationToken::new();
        let (ticket, pushed_out) = banyan_gateway::sync::lock(&self.pending).arrive(token.clone());
        if let Some(oldest) = pushed_out {
            oldest.cancel();
        }
        Waiting {
            hub: self.clone(),
            ticket,
            token,
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
    /// The pages as the bus view shows them: per reply topic, its pages and
    /// their queues.
    pub(crate) fn pages_view(&self) -> serde_json::Value {
        let routes = self.routes();
        let mut topics: Vec<serde_json::Value> = routes
            .topics()
            .map(|(topic, pages)| {
                serde_json::json!({
                    "topic": topic,
                    "pages": pages.len(),
                    "queued": pages.iter().map(|o| o.len()).sum::<usize>(),
                    "stalled": pages.iter().filter(|o| o.is_stalled()).count(),
                    "dropped": pages.iter().map(|o| o.dropped()).sum::<u64>(),
                })
            })
            .collect();
        topics.sort_by(|a, b| a["topic"].as_str().cmp(&b["topic"].as_str()));
        serde_json::Value::Array(topics)
    }

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

/// A connection's place in the line of those waiting for their upgrade;
/// dropping it leaves the line.
#[derive(Debug)]
pub(crate) struct Waiting {
    hub: Arc<Hub>,
    ticket: Ticket,
    token: CancellationToken,
}

impl Waiting {
    /// Completes when the connection was pushed out of the line (more
    /// connections arrived than `--max-pending` allows to wait).
    pub(crate) async fn pushed_out(&self) {
        self.token.cancelled().await;
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        banyan_gateway::sync::lock(&self.hub.pending).leave(self.ticket);
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
        let text = match protocol::bus_to_page(message.payload()) {
            Ok(page) => Text {
                text: Utf8Bytes::from(page.text),
                closes: page.closes,
            },
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
