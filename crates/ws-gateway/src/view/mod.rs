//! The live bus view: a page served by the gateway itself (`GET /`), which
//! shows every topic seen with its count, rate and last payload, a stream of
//! recent messages, a plot of any numeric field, the gateway's pages and
//! their queues, and a form that publishes on the bus.
//!
//! The view must never slow the bus. While no view is open the gateway does
//! not even subscribe to it: the first view opens a bus connection of its
//! own subscribed to everything, the last one closes it. That connection's
//! reader only counts ([`aggregate`]); a few times a second it makes one
//! snapshot, which every view is sent as the newest state (a view that reads
//! slowly skips snapshots, it never holds one back). The pages' own
//! connection and queues are untouched by it.
//!
//! The view's WebSocket (`/view`) is accepted only from the view's own page
//! (`Origin` equal to `http://` and the request's `Host`), so another web
//! site can neither watch the bus nor publish on it; and only under this
//! machine's addresses and local names ([`may_open`]), so that a site whose
//! name was made to resolve to this machine (DNS rebinding) cannot pass for
//! the view's own page.

pub(crate) mod aggregate;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use banyan_core::Client;
use banyan_gateway::CancellationToken;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value as Json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;

use crate::hub::Hub;
use aggregate::Aggregate;

/// The view's page, compiled into the executable: no CDN, no build step.
pub(crate) const PAGE: &str = include_str!("view.html");
/// How often views get a snapshot.
pub(crate) const SNAPSHOT_EVERY: Duration = Duration::from_millis(250);
/// Views open at once at most; more are refused with 503.
pub(crate) const MAX_VIEWS: usize = 16;
/// Bus messages counted in a row before the snapshot timer is looked at.
const OBSERVE_BATCH: usize = 4096;

/// The views' shared state: how many are open, the newest snapshot, and the
/// token of the bus connection they share while any is open.
#[derive(Debug)]
pub(crate) struct Views {
    open: Mutex<Option<(usize, CancellationToken)>>,
    snapshot: watch::Sender<Option<Arc<str>>>,
}

impl Default for Views {
    fn default() -> Self {
        Views {
            open: Mutex::new(None),
            snapshot: watch::channel(None).0,
        }
    }
}

/// A view counted as open; the last one dropped closes the view's bus
/// connection.
#[derive(Debug)]
pub(crate) struct ViewGuard(Arc<Hub>);

impl Drop for ViewGuard {
    fn drop(&mut self) {
        let left = {
            let mut open = banyan_gateway::sync::lock(&self.0.views.open);
            match open.as_mut() {
                Some((count, token)) => {
                    *count -= 1;
                    let left = *count;
                    if left == 0 {
                        token.cancel();
                        *open = None;
                    }
                    left
                }
                None => 0,
            }
        };
        // The last one's leaving is logged by the bus connection it closes.
        if left > 0 {
            tracing::info!("a bus view left; {left} still open");
        }
    }
}

/// Counts a new view; the first starts the view's bus connection. `None`
/// when [`MAX_VIEWS`] are open.
pub(crate) fn open(hub: &Arc<Hub>, stop: &CancellationToken) -> Option<ViewGuard> {
    let mut open = banyan_gateway::sync::lock(&hub.views.open);
    match open.as_mut() {
        Some((count, _)) if *count >= MAX_VIEWS => return None,
        Some((count, _)) => *count += 1,
        None => {
            let token = stop.child_token();
            *open = Some((1, token.clone()));
            tokio::spawn(watch_bus(hub.clone(), token));
        }
    }
    Some(ViewGuard(hub.clone()))
}

/// Why a request for the view's WebSocket is refused (with HTTP 403).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refused {
    /// Its `Origin` is not the view's own page at its `Host`.
    #[error("the bus view accepts only its own page (open it at /)")]
    NotOwnPage,
    /// Its `Host` is a site's name, not an address or a local name.
    #[error(
        "the bus view is served under this machine's addresses and local names only, \
         not {0:?}: a site name that resolves here is another site (DNS rebinding)"
    )]
    SiteName(String),
}

/// Whether a request with these `Host` and `Origin` headers may open the
/// view: its origin must be the view's own page (`http://` and the host,
/// ASCII case aside), and the host an IP address, `localhost` (or a name
/// under it), an mDNS name (`raspberrypi.local`) or a single-label LAN name.
///
/// Equal origin and host alone would not do: a page of `evil.example`
/// whose DNS answer is changed to 127.0.0.1 once loaded sends `Host:
/// evil.example:9000` and `Origin: http://evil.example:9000`. Only names a
/// remote site cannot own are taken.
pub(crate) fn may_open(host: Option<&str>, origin: Option<&str>) -> Result<(), Refused> {
    let (Some(host), Some(origin)) = (host, origin) else {
        return Err(Refused::NotOwnPage);
    };
    let own = origin
        .get(..7)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("http://"))
        && origin[7..].eq_ignore_ascii_case(host);
    if !own {
        return Err(Refused::NotOwnPage);
    }
    if is_local_name(host) {
        Ok(())
    } else {
        Err(Refused::SiteName(host.to_owned()))
    }
}

/// `host` (with or without its port) names this machine or the LAN, not a
/// site: see [`may_open`].
fn is_local_name(host: &str) -> bool {
    // `[::1]:9000`, `[::1]`, `127.0.0.1:9000`, `name:9000`, `name`.
    let name = match host.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((address, _)) => return address.parse::<std::net::Ipv6Addr>().is_ok(),
            None => return false,
        },
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    if name.is_empty() {
        return false;
    }
    name.parse::<std::net::Ipv4Addr>().is_ok()
        || name == "localhost"
        || name.ends_with(".localhost")
        || name.ends_with(".local")
        || !name.contains('.')
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The view's bus connection: subscribed to everything while views are
/// open, counting, and making a snapshot every [`SNAPSHOT_EVERY`].
async fn watch_bus(hub: Arc<Hub>, token: CancellationToken) {
    let (client, mut messages) = match Client::connect(hub.bus.config()).await {
        Ok(connection) => connection,
        Err(e) => {
            tracing::warn!("the bus view cannot connect to the bus: {e}");
            return;
        }
    };
    if let Err(e) = client.subscribe("").await {
        tracing::warn!("the bus view cannot subscribe: {e}");
        let _ = client.close().await;
        return;
    }
    tracing::info!("bus view opened: watching every topic");
    let mut aggregate = Aggregate::default();
    let mut tick = tokio::time::interval(SNAPSHOT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            biased;
            () = token.cancelled() => break,
            _ = tick.tick() => {
                let mut snapshot = aggregate.snapshot(now_ms());
                snapshot["pages"] = hub.pages_view();
                hub.views.snapshot.send_replace(Some(snapshot.to_string().into()));
            }
            message = messages.recv() => {
                let Some(message) = message else { break };
                let now = now_ms();
                aggregate.observe(message, now);
                for _ in 1..OBSERVE_BATCH {
                    let Some(message) = messages.try_recv() else { break };
                    aggregate.observe(message, now);
                }
            }
        }
    }
    let _ = client.close().await;
    hub.views.snapshot.send_replace(None);
    tracing::info!("bus view closed: the last view left");
}

/// One open view, from its upgrade: the newest snapshot whenever there is
/// one, and what its publish form sends, published on the bus.
pub(crate) async fn serve<S>(
    hub: &Hub,
    mut ws: WebSocketStream<S>,
    _guard: ViewGuard,
    stop: &CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut snapshots = hub.views.snapshot.subscribe();
    snapshots.mark_changed();
    loop {
        tokio::select! {
            () = stop.cancelled() => {
                let _ = ws.close(None).await;
                return;
            }
            changed = snapshots.changed() => {
                if changed.is_err() {
                    return;
                }
                let text = snapshots.borrow_and_update().clone();
                if let Some(text) = text {
                    if ws.send(WsMessage::text(&*text)).await.is_err() {
                        return;
                    }
                }
            }
            frame = ws.next() => match frame {
                Some(Ok(WsMessage::Text(text))) => {
                    let answer = publish(hub, &text).await;
                    if ws.send(WsMessage::text(answer.to_string())).await.is_err() {
                        return;
                    }
                }
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

/// What the publish form sent: `{"publish": {"topic": T, "json": TEXT}}`,
/// TEXT read by the bus's JSON rules (python's `json.loads`), so that what
/// is published is what python would publish for the same text.
async fn publish(hub: &Hub, request: &str) -> Json {
    let parsed: Result<(String, String), String> = serde_json::from_str::<Json>(request)
        .map_err(|e| format!("not a view request: {e}"))
        .and_then(|request| {
            let publish = &request["publish"];
            match (publish["topic"].as_str(), publish["json"].as_str()) {
                (Some(topic), Some(json)) if !topic.is_empty() => {
                    Ok((topic.to_owned(), json.to_owned()))
                }
                _ => Err("a publish needs a topic and a JSON payload".to_owned()),
            }
        });
    let (topic, text) = match parsed {
        Ok(parsed) => parsed,
        Err(error) => return json!({"error": error}),
    };
    let value = match banyan_core::json::from_json(&text) {
        Ok(value) => value,
        Err(e) => return json!({"error": format!("the payload is not JSON: {e}")}),
    };
    match hub.bus.publish(&topic, &value).await {
        Ok(()) => {
            tracing::info!(topic, "published from the bus view");
            json!({"published": topic})
        }
        Err(e) => json!({"error": format!("not published: {e}")}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_views_own_page_under_a_local_name_may_open_it() {
        for (host, origin) in [
            ("127.0.0.1:9000", "http://127.0.0.1:9000"),
            ("localhost:9000", "http://LOCALHOST:9000"),
            ("[::1]:9000", "http://[::1]:9000"),
            ("192.168.1.10:9000", "http://192.168.1.10:9000"),
            ("raspberrypi.local:9000", "http://raspberrypi.local:9000"),
            ("raspberrypi:9000", "http://raspberrypi:9000"),
            ("view.localhost", "http://view.localhost"),
        ] {
            assert_eq!(may_open(Some(host), Some(origin)), Ok(()), "{host}");
        }
        for (host, origin) in [
            (Some("127.0.0.1:9000"), Some("http://evil.example")),
            (Some("127.0.0.1:9000"), Some("null")),
            (Some("127.0.0.1:9000"), None),
            (None, Some("http://127.0.0.1:9000")),
            (Some("127.0.0.1:9000"), Some("https://127.0.0.1:9000")),
            (Some("127.0.0.1:9000"), Some("http://127.0.0.1:9001")),
            (Some("127.0.0.1:9000"), Some("http:/")),
        ] {
            assert_eq!(
                may_open(host, origin),
                Err(Refused::NotOwnPage),
                "{origin:?}"
            );
        }
        for host in [
            "evil.example:9000",
            "localhost.evil.example:9000",
            "127.0.0.1.nip.io:9000",
            "[evil]:9000",
            ":9000",
        ] {
            let origin = format!("http://{host}");
            assert!(
                matches!(
                    may_open(Some(host), Some(&origin)),
                    Err(Refused::SiteName(_))
                ),
                "{host}"
            );
        }
    }
}
