//! The gateways' real peers, in Rust so they outrun what they measure: a
//! WebSocket page, a TCP device server with the 1-byte length framing, and
//! an MQTT client.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::codec;
use crate::error::{Error, Result};
use crate::protocol::{emit, go_signal, now_ns, Tally, PROBE_INTERVAL};

/// Frames written between flushes of a buffered sender.
const FLUSH_EVERY: u64 = 256;

fn ws_error(e: tokio_tungstenite::tungstenite::Error) -> Error {
    Error::WebSocket(Box::new(e))
}

type Page = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Opens a WebSocket to `url` (`ws://HOST:PORT`) over a plain TCP stream.
async fn connect(url: &str) -> Result<(Page, ())> {
    let authority = url
        .strip_prefix("ws://")
        .map(|rest| rest.split('/').next().unwrap_or(rest))
        .ok_or_else(|| Error::Invalid(format!("not a ws:// URL: {url}")))?;
    let stream = tokio::net::TcpStream::connect(authority).await?;
    stream.set_nodelay(true)?;
    let (page, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .map_err(ws_error)?;
    Ok((page, ()))
}

/// One page: sends its id, probes until the go signal, then sends `send`
/// messages `{"msg": i}`.
pub(crate) async fn ws_send(url: &str, id: &str, send: u64) -> Result<()> {
    let (mut socket, _) = connect(url).await?;
    socket
        .send(WsMessage::text(json!({"id": id}).to_string()))
        .await
        .map_err(ws_error)?;
    emit("ready", json!({}));
    let mut go = go_signal();
    loop {
        socket
            .send(WsMessage::text(codec::PROBE_JSON))
            .await
            .map_err(ws_error)?;
        tokio::select! {
            _ = &mut go => break,
            _ = tokio::time::sleep(PROBE_INTERVAL) => {}
        }
    }
    let start_ns = now_ns();
    for seq in 0..send {
        socket
            .feed(WsMessage::text(codec::encode_json(seq)))
            .await
            .map_err(ws_error)?;
        if seq % FLUSH_EVERY == FLUSH_EVERY - 1 {
            socket.flush().await.map_err(ws_error)?;
        }
    }
    socket.flush().await.map_err(ws_error)?;
    let end_ns = now_ns();
    emit(
        "result",
        json!({"sent": send, "start_ns": start_ns, "end_ns": end_ns}),
    );
    // Stay connected until told to stop, so nothing in flight is cut off.
    let _ = go_signal().await;
    let _ = socket.close(None).await;
    Ok(())
}

/// `clients` pages with the same id, each counting what it receives.
pub(crate) async fn ws_receive(
    url: &str,
    id: &str,
    clients: usize,
    expected: u64,
    idle_ms: u64,
) -> Result<()> {
    let probed = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients {
        let (mut socket, _) = connect(url).await?;
        socket
            .send(WsMessage::text(json!({"id": id}).to_string()))
            .await
            .map_err(ws_error)?;
        let probed = probed.clone();
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            while tally.received < expected {
                let next = tokio::time::timeout(tally.patience(idle_ms), socket.next()).await;
                let Ok(Some(Ok(message))) = next else { break };
                let WsMessage::Text(text) = message else {
                    continue;
                };
                if tally.observe(b"", codec::decode_json(&text))
                    && probed.fetch_add(1, Ordering::SeqCst) + 1 == clients
                {
                    emit("probed", json!({}));
                }
            }
            let _ = socket.close(None).await;
            tally
        }));
    }
    emit("ready", json!({}));
    let mut tallies = Vec::with_capacity(clients);
    for task in tasks {
        tallies.push(
            task.await
                .map_err(|e| Error::Protocol(format!("page task failed: {e}")))?,
        );
    }
    let received: u64 = tallies.iter().map(|t| t.received).sum();
    let min = tallies.iter().map(|t| t.received).min().unwrap_or(0);
    let out_of_order: u64 = tallies.iter().map(|t| t.out_of_order).sum();
    let first_ns = tallies.iter().map(|t| t.first_ns).filter(|&t| t > 0).min();
    let last_ns = tallies.iter().map(|t| t.last_ns).max();
    emit(
        "result",
        json!({
            "received": received,
            "min_per_client": min,
            "out_of_order": out_of_order,
            "first_ns": first_ns.unwrap_or(0),
            "last_ns": last_ns.unwrap_or(0),
        }),
    );
    Ok(())
}

/// How long the idle pages' commands may take to cross the gateway.
const JOIN_DEADLINE: Duration = Duration::from_secs(120);

/// `pages` pages with the same id, each sending one command after its id;
/// once every command has reached the bus (`commands`, subscribed to `id`:
/// a page's later messages are read only once it has joined), all have
/// joined: `ready`. They stay connected and idle until the stop signal.
pub(crate) async fn ws_idle(
    url: &str,
    id: &str,
    pages: usize,
    mut commands: banyan_core::Messages,
) -> Result<()> {
    let mut sockets = Vec::with_capacity(pages);
    for n in 0..pages {
        let (mut socket, _) = connect(url).await?;
        socket
            .send(WsMessage::text(json!({"id": id}).to_string()))
            .await
            .map_err(ws_error)?;
        socket
            .send(WsMessage::text(json!({"joined": n}).to_string()))
            .await
            .map_err(ws_error)?;
        sockets.push(socket);
    }
    for n in 0..pages {
        match tokio::time::timeout(JOIN_DEADLINE, commands.recv()).await {
            Ok(Some(_)) => {}
            _ => {
                return Err(Error::Protocol(format!(
                    "only {n} of {pages} idle pages' commands reached the bus"
                )))
            }
        }
    }
    emit("ready", json!({"pages": pages}));
    let _ = go_signal().await;
    for mut socket in sockets {
        let _ = socket.close(None).await;
    }
    emit("result", json!({"pages": pages}));
    Ok(())
}

/// A device server on a free port of 127.0.0.1: accepts one connection
/// from the gateway, then sends `send` frames (after probing until the go
/// signal) or counts the frames it receives.
pub(crate) async fn tcp_device(
    send: u64,
    payload: usize,
    expected: u64,
    idle_ms: u64,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    emit("ready", json!({"port": listener.local_addr()?.port()}));
    let (stream, _) = listener.accept().await?;
    stream.set_nodelay(true)?;
    let (reader, writer) = stream.into_split();
    if send > 0 {
        let mut writer = BufWriter::new(writer);
        let mut go = go_signal();
        loop {
            writer.write_all(&[codec::PROBE.len() as u8]).await?;
            writer.write_all(codec::PROBE).await?;
            writer.flush().await?;
            tokio::select! {
                _ = &mut go => break,
                _ = tokio::time::sleep(PROBE_INTERVAL) => {}
            }
        }
        let start_ns = now_ns();
        let mut frame = Vec::with_capacity(payload.max(16) + 1);
        for seq in 0..send {
            frame.clear();
            frame.push(0);
            codec::encode(seq, payload, &mut frame);
            let length = u8::try_from(frame.len() - 1)
                .map_err(|_| Error::Invalid("tcp payloads must fit in 255 bytes".to_owned()))?;
            frame[0] = length;
            writer.write_all(&frame).await?;
        }
        writer.flush().await?;
        let end_ns = now_ns();
        emit(
            "result",
            json!({"sent": send, "start_ns": start_ns, "end_ns": end_ns}),
        );
        let _ = go_signal().await;
        return Ok(());
    }
    let mut reader = BufReader::with_capacity(1 << 16, reader);
    let mut tally = Tally::default();
    let mut frame = [0u8; 255];
    while tally.received < expected {
        let read = async {
            let length = reader.read_u8().await? as usize;
            reader.read_exact(&mut frame[..length]).await?;
            Ok::<usize, std::io::Error>(length)
        };
        match tokio::time::timeout(tally.patience(idle_ms), read).await {
            Ok(Ok(length)) => {
                if tally.observe(b"", codec::decode(&frame[..length])) {
                    emit("probed", json!({}));
                }
            }
            _ => break,
        }
    }
    emit("result", tally.report());
    drop(writer);
    Ok(())
}

/// Connects an MQTT client to the broker on `port`; returns it once the
/// broker acknowledged the connection, with its event loop polled by a task
/// that forwards publishes and acknowledgements.
async fn mqtt_connect(
    port: u16,
) -> Result<(
    AsyncClient,
    tokio::sync::mpsc::Receiver<Packet>,
    tokio::task::JoinHandle<()>,
)> {
    let id = format!("banyan-bench-{}", std::process::id());
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(options, 4096);
    let (tx, mut rx) = tokio::sync::mpsc::channel(65536);
    let task = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(packet)) => {
                    if tx.send(packet).await.is_err() {
                        break;
                    }
                }
                Ok(Event::Outgoing(_)) => {}
                Err(e) => {
                    eprintln!("MQTT connection ended: {e}");
                    break;
                }
            }
        }
    });
    loop {
        match tokio::time::timeout(Duration::from_secs(20), rx.recv()).await {
            Ok(Some(Packet::ConnAck(_))) => break,
            Ok(Some(_)) => {}
            _ => return Err(Error::Mqtt(format!("no CONNACK from 127.0.0.1:{port}"))),
        }
    }
    Ok((client, rx, task))
}

fn mqtt_error(e: rumqttc::ClientError) -> Error {
    Error::Mqtt(e.to_string())
}

/// Publishes `send` JSON messages at QoS 0 on `topic` after probing until
/// the go signal; a final QoS 1 marker's acknowledgement tells that the
/// broker has read everything before it.
pub(crate) async fn mqtt_send(port: u16, topic: &str, send: u64) -> Result<()> {
    let (client, mut packets, task) = mqtt_connect(port).await?;
    emit("ready", json!({}));
    let mut go = go_signal();
    loop {
        client
            .publish(topic, QoS::AtMostOnce, false, codec::PROBE_JSON)
            .await
            .map_err(mqtt_error)?;
        tokio::select! {
            _ = &mut go => break,
            _ = tokio::time::sleep(PROBE_INTERVAL) => {}
        }
    }
    let start_ns = now_ns();
    for seq in 0..send {
        client
            .publish(topic, QoS::AtMostOnce, false, codec::encode_json(seq))
            .await
            .map_err(mqtt_error)?;
    }
    client
        .publish(topic, QoS::AtLeastOnce, false, "{\"end\": 1}")
        .await
        .map_err(mqtt_error)?;
    loop {
        match tokio::time::timeout(Duration::from_secs(60), packets.recv()).await {
            Ok(Some(Packet::PubAck(_))) => break,
            Ok(Some(_)) => {}
            _ => {
                return Err(Error::Mqtt(
                    "the broker did not acknowledge the end marker".to_owned(),
                ))
            }
        }
    }
    let end_ns = now_ns();
    emit(
        "result",
        json!({"sent": send, "start_ns": start_ns, "end_ns": end_ns}),
    );
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
    Ok(())
}

/// Subscribes to `filter` and counts the JSON messages `{"msg": i}`.
pub(crate) async fn mqtt_receive(
    port: u16,
    filter: &str,
    expected: u64,
    idle_ms: u64,
) -> Result<()> {
    let (client, mut packets, task) = mqtt_connect(port).await?;
    client
        .subscribe(filter, QoS::AtMostOnce)
        .await
        .map_err(mqtt_error)?;
    loop {
        match tokio::time::timeout(Duration::from_secs(20), packets.recv()).await {
            Ok(Some(Packet::SubAck(_))) => break,
            Ok(Some(_)) => {}
            _ => return Err(Error::Mqtt(format!("no SUBACK for {filter}"))),
        }
    }
    emit("ready", json!({}));
    let mut tally = Tally::default();
    while tally.received < expected {
        match tokio::time::timeout(tally.patience(idle_ms), packets.recv()).await {
            Ok(Some(Packet::Publish(publish))) => {
                let seq = std::str::from_utf8(&publish.payload)
                    .ok()
                    .and_then(codec::decode_json);
                if tally.observe(b"", seq) {
                    emit("probed", json!({}));
                }
            }
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    emit("result", tally.report());
    let _ = client.disconnect().await;
    task.abort();
    Ok(())
}

/// A bus view (`wsgw`'s `/view` at `url`, `ws://HOST:PORT`, opened as its
/// own page: `Origin: http://HOST:PORT`) that notes when each snapshot
/// arrives and the bus total it shows. `ready` after the first snapshot
/// (the view's bus connection then subscribes to everything); at the stop
/// signal, it waits for one more snapshot (the view's last count) and
/// reports them all.
pub(crate) async fn view_watch(url: &str) -> Result<()> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let authority = url
        .strip_prefix("ws://")
        .map(|rest| rest.split('/').next().unwrap_or(rest))
        .ok_or_else(|| Error::Invalid(format!("not a ws:// URL: {url}")))?;
    let mut request = format!("ws://{authority}/view")
        .into_client_request()
        .map_err(ws_error)?;
    let origin = format!("http://{authority}")
        .parse()
        .map_err(|_| Error::Invalid(format!("not an origin: http://{authority}")))?;
    request.headers_mut().insert("Origin", origin);
    let stream = tokio::net::TcpStream::connect(authority).await?;
    let (mut view, _) = tokio_tungstenite::client_async(request, stream)
        .await
        .map_err(ws_error)?;
    let (mut at_ns, mut totals) = (Vec::new(), Vec::new());
    let mut next = async || -> Result<u64> {
        loop {
            let frame = tokio::time::timeout(VIEW_SILENCE, view.next())
                .await
                .map_err(|_| {
                    Error::Protocol(format!("the view sent nothing for {VIEW_SILENCE:?}"))
                })?;
            match frame {
                Some(Ok(WsMessage::Text(text))) => {
                    let snapshot: serde_json::Value = serde_json::from_str(text.as_str())?;
                    if let Some(total) = snapshot["total"].as_u64() {
                        return Ok(total);
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(ws_error(e)),
                None => return Err(Error::Protocol("the view closed".to_owned())),
            }
        }
    };
    totals.push(next().await?);
    at_ns.push(now_ns());
    emit("ready", json!({}));
    let mut stop = go_signal();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            total = next() => {
                totals.push(total?);
                at_ns.push(now_ns());
            }
        }
    }
    totals.push(next().await?);
    at_ns.push(now_ns());
    emit("result", json!({"at_ns": at_ns, "totals": totals}));
    Ok(())
}

/// How long a view may go without a snapshot before the bench gives up on
/// it (they come every 250 ms).
const VIEW_SILENCE: Duration = Duration::from_secs(30);
