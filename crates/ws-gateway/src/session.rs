//! One client's session: upgrade (with the origin check), id message, then
//! commands to the bus and the client's queue to the client.

use std::net::SocketAddr;
use std::sync::Arc;

use banyan_gateway::outbox::{Limit, Peer};
use banyan_gateway::{CancellationToken, Outbox};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::error::CapacityError;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{header, StatusCode};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;
use tracing::Instrument;

use crate::error::Error;
use crate::hub::{Hub, Text};
use crate::protocol;
use crate::routes::ClientId;

type Ws = WebSocketStream<TcpStream>;

/// `TCP_NOTSENT_LOWAT` of a client connection: bytes written but not yet
/// sent beyond which the socket stops taking more.
const UNSENT_LIMIT: u32 = 128 * 1024;

/// What a client's frame means to the session.
enum Incoming {
    Text(Utf8Bytes),
    /// Bad input, told to the client; `fatal` ones close the connection.
    Bad {
        error: Error,
        fatal: bool,
    },
    /// Ping, pong: tungstenite answers pings itself.
    Ignore,
    /// The client's close frame: answer it.
    Closed,
    /// End of stream or a broken connection.
    End,
}

fn classify(frame: Option<Result<WsMessage, WsError>>) -> Incoming {
    match frame {
        Some(Ok(WsMessage::Text(text))) => Incoming::Text(text),
        Some(Ok(WsMessage::Binary(_))) => Incoming::Bad {
            error: Error::BinaryFrame,
            fatal: false,
        },
        Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_))) => Incoming::Ignore,
        Some(Ok(WsMessage::Close(_))) => Incoming::Closed,
        None => Incoming::End,
        // The rest of an oversized message is unread: the stream cannot go on.
        Some(Err(WsError::Capacity(CapacityError::MessageTooLong { size, max_size }))) => {
            Incoming::Bad {
                error: Error::TooLarge {
                    size,
                    limit: max_size,
                },
                fatal: true,
            }
        }
        Some(Err(e)) => {
            tracing::debug!(error = %e, "connection ended");
            Incoming::End
        }
    }
}

/// Serves one connection to its end. Everything that goes wrong is logged
/// here; nothing is returned to the accept loop.
pub(crate) async fn serve(
    hub: Arc<Hub>,
    stream: TcpStream,
    peer: SocketAddr,
    client: ClientId,
    stop: CancellationToken,
) {
    let span = tracing::info_span!("client", %peer, id = tracing::field::Empty);
    tune(&stream);
    async move {
        let deadline = Instant::now() + hub.config.handshake_timeout;
        let upgraded = tokio::select! {
            ws = tokio::time::timeout_at(deadline, handshake(&hub, stream)) => ws.unwrap_or_else(|_| {
                tracing::debug!("{}", Error::HandshakeTimeout(hub.config.handshake_timeout));
                None
            }),
            () = stop.cancelled() => None,
        };
        let Some(mut ws) = upgraded else {
            return;
        };
        let Some(id) = hello(&hub, &mut ws, deadline, &stop).await else {
            return;
        };
        tracing::Span::current().record("id", id.as_str());
        let reply = protocol::reply_topic(&id);
        hub.counters.pages.inc();
        let outbox = Arc::new(Outbox::new(
            hub.config.queue,
            Peer::Connected,
            hub.counters.drops(),
        ));
        hub.join(
            &reply,
            client,
            outbox.clone(),
        )
        .await;
        tracing::info!(reply = %reply, "client joined");
        exchange(&hub, &mut ws, &id, &outbox, &stop).await;
        // Before leaving the routes: the dispatcher must not wait for a
        // queue nobody will empty.
        outbox.close();
        hub.leave(&reply, client).await;
        let dropped = outbox.dropped();
        if dropped > 0 {
            tracing::warn!(dropped, "client left; it was too slow for {dropped} messages");
        } else {
            tracing::info!("client left");
        }
    }
    .instrument(span)
    .await
}

/// Socket options of a client connection. Failing to set them only costs
/// latency or memory, so it is logged, not fatal.
fn tune(stream: &TcpStream) {
    // Batches are flushed whole: Nagle's delay would only add latency.
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "TCP_NODELAY not set");
    }
    // The kernel wakes a writer blocked on a full send buffer only once a
    // third of it has drained: megabytes with an autotuned buffer, which a
    // page reading steadily but slowly can take longer than the stall grace
    // to read. Bounding the unsent part instead makes a reading page's
    // progress visible in small steps, and caps what a stalled page holds in
    // the kernel, without limiting what is in flight.
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_notsent_lowat(UNSENT_LIMIT) {
        tracing::debug!(error = %e, "TCP_NOTSENT_LOWAT not set");
    }
}

/// The WebSocket upgrade, refusing other sites' pages with 403.
// The callback's error type (an HTTP response) is tungstenite's, not ours.
#[allow(clippy::result_large_err)]
async fn handshake(hub: &Hub, stream: TcpStream) -> Option<Ws> {
    let check_origin = |request: &Request, response: Response| {
        let origin = request
            .headers()
            .get(header::ORIGIN)
            .map(|v| v.to_str().map_err(|_| ()));
        if hub.origins.allows(origin) {
            return Ok(response);
        }
        tracing::warn!(origin = ?request.headers().get(header::ORIGIN), "connection refused: origin not allowed (see --allow-origin)");
        let mut refusal = ErrorResponse::new(Some(
            "origin not allowed by the Banyan WebSocket gateway (see wsgw --allow-origin)\n"
                .to_owned(),
        ));
        *refusal.status_mut() = StatusCode::FORBIDDEN;
        Err(refusal)
    };
    match tokio_tungstenite::accept_hdr_async_with_config(stream, check_origin, Some(hub.ws_config))
        .await
    {
        Ok(ws) => Some(ws),
        Err(e) => {
            tracing::debug!(error = %e, "handshake failed");
            None
        }
    }
}

/// Waits for a valid `{"id": ...}` message, telling the client about each
/// bad one. `None` when the client leaves, takes too long, or sends a frame
/// over the limit.
async fn hello(
    hub: &Hub,
    ws: &mut Ws,
    deadline: Instant,
    stop: &CancellationToken,
) -> Option<String> {
    loop {
        let frame = tokio::select! {
            frame = tokio::time::timeout_at(deadline, ws.next()) => match frame {
                Ok(frame) => frame,
                Err(_) => {
                    let error = Error::HandshakeTimeout(hub.config.handshake_timeout);
                    tell(hub, ws, &error).await;
                    goodbye(hub, ws, CloseCode::Policy, "no id message").await;
                    return None;
                }
            },
            () = stop.cancelled() => {
                goodbye(hub, ws, CloseCode::Away, "gateway shutting down").await;
                return None;
            }
        };
        match classify(frame) {
            Incoming::Text(text) => match protocol::parse_hello(&text) {
                Ok(id) => return Some(id),
                Err(error) => tell(hub, ws, &error).await,
            },
            Incoming::Bad { error, fatal } => {
                tell(hub, ws, &error).await;
                if fatal {
                    goodbye(hub, ws, CloseCode::Size, "message too large").await;
                    return None;
                }
            }
            Incoming::Ignore => {}
            Incoming::Closed => {
                answer_close(hub, ws).await;
                return None;
            }
            Incoming::End => return None,
        }
    }
}

/// The session proper: the client's messages to the bus on `id`, its queue
/// to the client, until either side ends or the gateway stops.
async fn exchange(
    hub: &Hub,
    ws: &mut Ws,
    id: &str,
    outbox: &Outbox<Text>,
    stop: &CancellationToken,
) {
    let mut batch = Vec::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => {
                goodbye(hub, ws, CloseCode::Away, "gateway shutting down").await;
                return;
            }
            _ = outbox.take_wait(Limit::ALL, &mut batch) => {
                // A client that does not read blocks here, and only here; the
                // bus intake waits for its room for the grace period, then
                // drops its oldest messages.
                let count = batch.len() as u64;
                let bytes: usize = batch.iter().map(|Text(text)| text.len()).sum();
                tokio::select! {
                    sent = write_batch(ws, &mut batch) => if let Err(e) = sent {
                        tracing::debug!(error = %e, "sending failed");
                        return;
                    },
                    () = stop.cancelled() => return,
                }
                hub.counters.to_pages.add(count);
                hub.counters.to_pages_bytes.add(bytes as u64);
                outbox.written();
            }
            frame = ws.next() => match classify(frame) {
                Incoming::Text(text) => match protocol::parse_command(&text) {
                    Ok(value) => {
                        if let Err(e) = hub.bus.publish(id, &value).await {
                            tracing::error!(error = %e, "publishing on the bus failed");
                            goodbye(hub, ws, CloseCode::Error, "bus unavailable").await;
                            return;
                        }
                        hub.counters.to_bus.inc();
                    }
                    Err(error) => tell(hub, ws, &error).await,
                },
                Incoming::Bad { error, fatal } => {
                    tell(hub, ws, &error).await;
                    if fatal {
                        goodbye(hub, ws, CloseCode::Size, "message too large").await;
                        return;
                    }
                }
                Incoming::Ignore => {}
                Incoming::Closed => {
                    answer_close(hub, ws).await;
                    return;
                }
                Incoming::End => return,
            },
        }
    }
}

/// Writes every message of `batch` (emptying it), then flushes once: one
/// write to the socket for many messages, as far as its buffer allows.
async fn write_batch(ws: &mut Ws, batch: &mut Vec<Text>) -> Result<(), WsError> {
    for Text(text) in batch.drain(..) {
        ws.feed(WsMessage::Text(text)).await?;
    }
    ws.flush().await
}

/// Logs bad input and tells the client, as `{"error": "..."}`.
async fn tell(hub: &Hub, ws: &mut Ws, error: &Error) {
    hub.counters.refused.inc();
    tracing::warn!(%error, "bad input from client");
    let text = protocol::error_message(error);
    let _ = tokio::time::timeout(hub.config.close_timeout, ws.send(WsMessage::text(text))).await;
}

/// Sends a close frame (or answers the client's) and flushes it, for at most
/// the close timeout.
async fn goodbye(hub: &Hub, ws: &mut Ws, code: CloseCode, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = tokio::time::timeout(hub.config.close_timeout, ws.close(Some(frame))).await;
}

/// Sends the close frame tungstenite queued in answer to the client's.
async fn answer_close(hub: &Hub, ws: &mut Ws) {
    let _ = tokio::time::timeout(hub.config.close_timeout, ws.flush()).await;
}
