//! One connection's life: its wait for the upgrade (in the bounded line of
//! waiting connections, with a short deadline), the upgrade with the origin
//! check and the page limit, the id message, then commands to the bus and
//! the page's queue to the page, until either side ends.
//!
//! Everything after the TCP accept is generic over the byte stream, so that
//! it runs over an in-memory pipe in the unit tests as over TCP.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use banyan_gateway::outbox::{Limit, Peer};
use banyan_gateway::{CancellationToken, Outbox};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::error::{CapacityError, ProtocolError};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{header, HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;
use tracing::Instrument;

use crate::error::Error;
use crate::http::{self, Asked, BadHead};
use crate::hub::{Hub, SessionGuard, Text};
use crate::protocol;
use crate::routes::ClientId;
use crate::view::{self, ViewGuard};

/// A page's WebSocket over its byte stream.
pub(crate) type Ws<S> = WebSocketStream<Link<S>>;

/// `TCP_NOTSENT_LOWAT` of a client connection: bytes written but not yet
/// sent beyond which the socket stops taking more.
const UNSENT_LIMIT: u32 = 128 * 1024;

/// The longest close reason a close frame carries (RFC 6455, 5.5: a
/// control frame's payload is at most 125 bytes, 2 of them the code).
const MAX_CLOSE_REASON: usize = 123;

/// A page's byte stream, noting whether the last write to it could not be
/// completed: then the page is not taking what it was sent, and the
/// session reads nothing more from it until it has (see [`next_frame`]).
#[derive(Debug)]
pub(crate) struct Link<S> {
    inner: S,
    /// The last write found the socket full: tungstenite holds bytes for it.
    blocked: bool,
    /// Logged once per page, the first time reading was held back.
    held_back: bool,
    /// Bytes read already (the request head) and read again first.
    replay: Vec<u8>,
    replayed: usize,
}

impl<S> Link<S> {
    pub(crate) fn new(inner: S) -> Link<S> {
        Link {
            inner,
            blocked: false,
            held_back: false,
            replay: Vec::new(),
            replayed: 0,
        }
    }

    /// Reads `bytes` again before the rest of the stream.
    fn replay(&mut self, bytes: Vec<u8>) {
        self.replay = bytes;
        self.replayed = 0;
    }

    /// The stream itself, for reading past the replay (the request head).
    fn inner_mut(&mut self) -> &mut S {
        &mut self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Link<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.replayed < self.replay.len() {
            let n = buf.remaining().min(self.replay.len() - self.replayed);
            let start = self.replayed;
            buf.put_slice(&self.replay[start..start + n]);
            self.replayed += n;
            if self.replayed == self.replay.len() {
                self.replay = Vec::new();
                self.replayed = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Link<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.blocked = poll.is_pending();
        poll
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.blocked = poll.is_pending();
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// What a client's frame means to the session.
enum Incoming {
    Text(Utf8Bytes),
    /// Bad input, told to the client; `fatal` ones close the connection.
    Bad {
        error: Error,
        fatal: bool,
    },
    /// The page broke the protocol: the connection fails with `code`.
    Violation {
        error: Error,
        code: CloseCode,
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
        // The TCP connection ended without a close frame: the page left.
        Some(Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake))) => {
            tracing::debug!("connection ended without a close frame");
            Incoming::End
        }
        Some(Err(WsError::Protocol(violation))) => Incoming::Violation {
            error: Error::Protocol(violation),
            code: CloseCode::Protocol,
        },
        Some(Err(WsError::Utf8(detail))) => Incoming::Violation {
            error: Error::InvalidUtf8(detail),
            code: CloseCode::Invalid,
        },
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
        let connected = Instant::now();
        match upgrade(&hub, Link::new(stream), connected, &stop).await {
            Some(Upgraded::Page(ws, page)) => {
                let id_deadline = connected + hub.config.id_timeout;
                serve_page(&hub, ws, client, id_deadline, &stop).await;
                drop(page);
            }
            Some(Upgraded::View(ws, view)) => {
                tracing::Span::current().record("id", "bus view");
                view::serve(&hub, ws, view, &stop).await;
            }
            None => {}
        }
    }
    .instrument(span)
    .await
}

/// A connection that asked for a WebSocket and got it.
pub(crate) enum Upgraded<S> {
    /// A page (counted against `--max-clients`).
    Page(Ws<S>, SessionGuard),
    /// The bus view's own socket.
    View(Ws<S>, ViewGuard),
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

/// The wait for the request and the upgrade, in the line of waiting
/// connections: `None` when the connection was pushed out of the line, took
/// longer than the handshake timeout, was refused (403, 503), failed, or
/// was a plain HTTP request (answered: the view's page, the metrics).
pub(crate) async fn upgrade<S>(
    hub: &Arc<Hub>,
    stream: Link<S>,
    connected: Instant,
    stop: &CancellationToken,
) -> Option<Upgraded<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let waiting = hub.wait_for_upgrade();
    let deadline = connected + hub.config.handshake_timeout;
    tokio::select! {
        biased;
        () = stop.cancelled() => None,
        () = waiting.pushed_out() => {
            tracing::warn!(
                limit = hub.config.max_pending,
                "connection closed: it was waiting for its WebSocket upgrade longest of {} (--max-pending)",
                hub.config.max_pending
            );
            None
        }
        upgraded = tokio::time::timeout_at(deadline, route(hub, stream, stop)) => {
            upgraded.unwrap_or_else(|_| {
                tracing::debug!(
                    "connection closed: no WebSocket upgrade within {:?} (--handshake-timeout)",
                    hub.config.handshake_timeout
                );
                None
            })
        }
    }
}

/// Reads what the connection asks for: a plain `GET` is answered here (the
/// view's page at `/`, the metrics at `/metrics`), an upgrade of `/view` is
/// the bus view's socket, any other upgrade a page's.
async fn route<S>(
    hub: &Arc<Hub>,
    mut stream: Link<S>,
    stop: &CancellationToken,
) -> Option<Upgraded<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (asked, head) = match http::read_head(stream.inner_mut()).await {
        Ok(read) => read,
        Err(BadHead::Ended) => return None,
        Err(e) => {
            tracing::debug!("refused: {e}");
            let status = match e {
                BadHead::TooLarge => "431 Request Header Fields Too Large",
                _ => "400 Bad Request",
            };
            let _ = http::respond(
                stream.inner_mut(),
                status,
                TEXT,
                format!("{e}\n").as_bytes(),
            )
            .await;
            return None;
        }
    };
    let path = match asked {
        Asked::Upgrade { path } => path,
        Asked::Get { path } => {
            answer(hub, stream.inner_mut(), &path).await;
            return None;
        }
        Asked::Other(method) => {
            tracing::debug!(method, "refused: not GET");
            let _ = http::respond(
                stream.inner_mut(),
                "405 Method Not Allowed",
                TEXT,
                b"only GET\n",
            )
            .await;
            return None;
        }
    };
    stream.replay(head);
    if path == "/view" {
        return view_handshake(hub, stream, stop).await;
    }
    handshake(hub, stream)
        .await
        .map(|(ws, page)| Upgraded::Page(ws, page))
}

/// The content type of the gateway's plain answers.
const TEXT: &str = "text/plain; charset=utf-8";

/// Answers a plain `GET`.
async fn answer<S: AsyncWrite + Unpin>(hub: &Hub, stream: &mut S, path: &str) {
    let answered = match path {
        "/" | "/index.html" => {
            http::respond(stream, "200 OK", "text/html; charset=utf-8", view::PAGE.as_bytes()).await
        }
        "/metrics" => {
            let body = banyan_gateway::metrics::render(&hub.metrics());
            http::respond(stream, "200 OK", "text/plain; version=0.0.4; charset=utf-8", body.as_bytes()).await
        }
        _ => {
            http::respond(
                stream,
                "404 Not Found",
                TEXT,
                b"not found: pages connect by WebSocket; the bus view is at /, the metrics at /metrics\n",
            )
            .await
        }
    };
    if let Err(e) = answered {
        tracing::debug!(path, "answering failed: {e}");
    }
}

/// The bus view's upgrade: only from the view's own page under a local
/// name ([`view::may_open`]), and at most [`view::MAX_VIEWS`] at once.
#[allow(clippy::result_large_err)]
async fn view_handshake<S>(
    hub: &Arc<Hub>,
    stream: Link<S>,
    stop: &CancellationToken,
) -> Option<Upgraded<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut opened = None;
    let check = |request: &Request, response: Response| {
        let header = |name| {
            request
                .headers()
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
        };
        let (host, origin) = (header(header::HOST), header(header::ORIGIN));
        if let Err(refused) = view::may_open(host, origin) {
            tracing::warn!(?host, ?origin, "bus view refused: {refused}");
            return Err(refusal(StatusCode::FORBIDDEN, &refused.to_string()));
        }
        match view::open(hub, stop) {
            Some(view) => {
                opened = Some(view);
                Ok(response)
            }
            None => Err(refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("{} bus views are open, the most", view::MAX_VIEWS),
            )),
        }
    };
    let upgraded =
        tokio_tungstenite::accept_hdr_async_with_config(stream, check, Some(hub.ws_config)).await;
    match upgraded {
        Ok(ws) => opened.map(|view| Upgraded::View(ws, view)),
        Err(e) => {
            tracing::debug!(error = %e, "bus view handshake failed");
            None
        }
    }
}

/// The WebSocket upgrade: other sites' pages are refused with 403, and
/// pages beyond `--max-clients` with 503. An accepted page is counted.
// The callback's error type (an HTTP response) is tungstenite's, not ours.
#[allow(clippy::result_large_err)]
async fn handshake<S>(hub: &Arc<Hub>, stream: Link<S>) -> Option<(Ws<S>, SessionGuard)>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut admitted = None;
    let check = |request: &Request, response: Response| {
        let origin = request
            .headers()
            .get(header::ORIGIN)
            .map(|v| v.to_str().map_err(|_| ()));
        if !hub.origins.allows(origin) {
            tracing::warn!(origin = ?request.headers().get(header::ORIGIN), "connection refused: origin not allowed (see --allow-origin)");
            return Err(refusal(
                StatusCode::FORBIDDEN,
                "origin not allowed by the Banyan WebSocket gateway (see wsgw --allow-origin)",
            ));
        }
        match hub.admit() {
            Some(page) => {
                admitted = Some(page);
                Ok(response)
            }
            None => {
                let full = Error::TooManyPages(hub.config.max_clients);
                tracing::warn!(
                    "connection refused: {} pages are connected, the limit (--max-clients)",
                    hub.config.max_clients
                );
                Err(refusal(StatusCode::SERVICE_UNAVAILABLE, &full.to_string()))
            }
        }
    };
    let upgraded =
        tokio_tungstenite::accept_hdr_async_with_config(stream, check, Some(hub.ws_config)).await;
    match upgraded {
        Ok(ws) => admitted.map(|page| (ws, page)),
        Err(e) => {
            tracing::debug!(error = %e, "handshake failed");
            None
        }
    }
}

/// An HTTP answer refusing an upgrade, with a one-line text body.
fn refusal(status: StatusCode, text: &str) -> ErrorResponse {
    let mut refusal = ErrorResponse::new(Some(format!("{text}\n")));
    *refusal.status_mut() = status;
    refusal.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    refusal
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    refusal
}

/// A page from its upgrade to its end: the id message by `id_deadline`,
/// then the exchange.
pub(crate) async fn serve_page<S>(
    hub: &Hub,
    mut ws: Ws<S>,
    client: ClientId,
    id_deadline: Instant,
    stop: &CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Some(id) = hello(hub, &mut ws, id_deadline, stop).await else {
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
    hub.join(&reply, client, outbox.clone()).await;
    tracing::info!(reply = %reply, "client joined");
    exchange(hub, &mut ws, &id, &outbox, stop).await;
    // Before leaving the routes: the dispatcher must not wait for a
    // queue nobody will empty.
    outbox.close();
    hub.leave(&reply, client).await;
    let dropped = outbox.dropped();
    if dropped > 0 {
        tracing::warn!(
            dropped,
            "client left; it was too slow for {dropped} messages"
        );
    } else {
        tracing::info!("client left");
    }
}

/// The page's next frame, once it has taken what it was sent.
///
/// tungstenite answers a ping (and a close) while reading, and when the
/// socket is full it keeps the answer and reads on: a client that sends
/// pings and never reads would make it hold a pong for every ping. So a
/// page whose last write could not complete is read no further until the
/// write has: the socket's buffers, not the gateway's memory, then hold the
/// flood, and the client's own sends block. Cancel-safe.
async fn next_frame<S>(ws: &mut Ws<S>) -> Option<Result<WsMessage, WsError>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if ws.get_ref().blocked {
        if !ws.get_ref().held_back {
            ws.get_mut().held_back = true;
            tracing::warn!(
                "the page is not reading what it is sent (its socket is full): \
                 reading nothing more from it until it does"
            );
        }
        if let Err(e) = ws.flush().await {
            return Some(Err(e));
        }
    }
    ws.next().await
}

/// Waits for a valid `{"id": ...}` message, telling the client about each
/// bad one. `None` when the client leaves, takes too long, or sends a frame
/// over the limit.
async fn hello<S>(
    hub: &Hub,
    ws: &mut Ws<S>,
    deadline: Instant,
    stop: &CancellationToken,
) -> Option<String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let frame = tokio::select! {
            frame = tokio::time::timeout_at(deadline, next_frame(ws)) => match frame {
                Ok(frame) => frame,
                Err(_) => {
                    let error = Error::HandshakeTimeout(hub.config.id_timeout);
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
            Incoming::Violation { error, code } => {
                fail(hub, ws, &error, code).await;
                return None;
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
async fn exchange<S>(
    hub: &Hub,
    ws: &mut Ws<S>,
    id: &str,
    outbox: &Outbox<Text>,
    stop: &CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut batch = Vec::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => {
                goodbye(hub, ws, CloseCode::Away, "gateway shutting down").await;
                return;
            }
            _ = outbox.take_wait(Limit::ALL, &mut batch) => {
                // A panic report is the page's last message (s3-extend's
                // rule): what follows it is not sent.
                let panic = batch.iter().position(|text| text.closes);
                if let Some(last) = panic {
                    batch.truncate(last + 1);
                }
                // A client that does not read blocks here, and only here; the
                // bus intake waits for its room for the grace period, then
                // drops its oldest messages.
                let count = batch.len() as u64;
                let bytes: usize = batch.iter().map(|item| item.text.len()).sum();
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
                if panic.is_some() {
                    hub.counters.panics.inc();
                    tracing::warn!("the hardware gateway reported a panic: closing the page");
                    goodbye(hub, ws, CloseCode::Normal, "the hardware gateway reported a panic").await;
                    return;
                }
            }
            frame = next_frame(ws) => match classify(frame) {
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
                Incoming::Violation { error, code } => {
                    fail(hub, ws, &error, code).await;
                    return;
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
async fn write_batch<S>(ws: &mut Ws<S>, batch: &mut Vec<Text>) -> Result<(), WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    for text in batch.drain(..) {
        ws.feed(WsMessage::Text(text.text)).await?;
    }
    ws.flush().await
}

/// Logs bad input and tells the client, as `{"error": "..."}`.
async fn tell<S>(hub: &Hub, ws: &mut Ws<S>, error: &Error)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    hub.counters.refused.inc();
    tracing::warn!(%error, "bad input from client");
    let text = protocol::error_message(error);
    let _ = tokio::time::timeout(hub.config.close_timeout, ws.send(WsMessage::text(text))).await;
}

/// Fails the connection on a protocol violation (RFC 6455, 7.1.7): logs
/// why, and closes with `code` and the cause as the reason.
async fn fail<S>(hub: &Hub, ws: &mut Ws<S>, error: &Error, code: CloseCode)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    hub.counters.protocol_errors.inc();
    tracing::warn!(code = u16::from(code), "closing the connection: {error}");
    goodbye(hub, ws, code, &close_reason(&error.to_string())).await;
}

/// `text` cut to what a close frame carries, on a character boundary.
fn close_reason(text: &str) -> String {
    let mut end = text.len().min(MAX_CLOSE_REASON);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// Sends a close frame (or answers the client's) and flushes it, for at most
/// the close timeout.
async fn goodbye<S>(hub: &Hub, ws: &mut Ws<S>, code: CloseCode, reason: &str)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = tokio::time::timeout(hub.config.close_timeout, ws.close(Some(frame))).await;
}

/// Sends the close frame tungstenite queued in answer to the client's.
async fn answer_close<S>(hub: &Hub, ws: &mut Ws<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let _ = tokio::time::timeout(hub.config.close_timeout, ws.flush()).await;
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn code(incoming: Incoming) -> Option<CloseCode> {
        match incoming {
            Incoming::Violation { code, .. } => Some(code),
            _ => None,
        }
    }

    #[test]
    fn violations_get_the_rfc_close_codes() {
        let protocol = |p| Some(Err(WsError::Protocol(p)));
        for violation in [
            ProtocolError::UnmaskedFrameFromClient,
            ProtocolError::NonZeroReservedBits,
            ProtocolError::FragmentedControlFrame,
            ProtocolError::ControlFrameTooBig,
            ProtocolError::UnexpectedContinueFrame,
        ] {
            assert_eq!(
                code(classify(protocol(violation))),
                Some(CloseCode::Protocol)
            );
        }
        assert_eq!(
            code(classify(Some(Err(WsError::Utf8("bad".into()))))),
            Some(CloseCode::Invalid)
        );
        // A page that just went away broke nothing.
        assert!(matches!(
            classify(protocol(ProtocolError::ResetWithoutClosingHandshake)),
            Incoming::End
        ));
        let too_long = CapacityError::MessageTooLong {
            size: 2,
            max_size: 1,
        };
        assert!(matches!(
            classify(Some(Err(WsError::Capacity(too_long)))),
            Incoming::Bad { fatal: true, .. }
        ));
    }

    #[tokio::test]
    async fn a_link_knows_when_its_peer_takes_nothing() {
        let (near, mut far) = tokio::io::duplex(16);
        let mut link = Link::new(near);
        // The pipe holds 16 bytes: the first write fills it, the next one
        // cannot complete.
        link.write_all(&[1; 16]).await.expect("written");
        assert!(!link.blocked);
        let written = link.write_all(&[2; 8]).now_or_never();
        assert!(written.is_none() && link.blocked, "the peer takes nothing");
        let mut taken = [0; 16];
        far.read_exact(&mut taken).await.expect("read");
        link.write_all(&[3; 8]).await.expect("written");
        assert!(!link.blocked, "the peer took what was sent");
    }

    #[test]
    fn close_reasons_fit_a_control_frame() {
        assert_eq!(close_reason("short"), "short");
        let long = "é".repeat(100);
        let cut = close_reason(&long);
        assert!(cut.len() <= MAX_CLOSE_REASON);
        assert_eq!(cut.len(), 122, "cut on a character boundary");
    }
}
