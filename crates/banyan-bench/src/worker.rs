//! The worker roles: the bench runs itself once per role (`banyan-bench
//! worker '<role as JSON>'`), so that publishers, subscribers, proxies and
//! peers are separate processes, as in python-banyan's own benchmark.
//!
//! A worker talks to the orchestrator in JSON lines on stdout: `{"event":
//! "ready", ...}` once it can take load, `{"event": "probed"}` once a probe
//! crossed the path under test, and one `{"event": "result", ...}` at the
//! end. A sending worker that probes repeats a probe every
//! probe interval (5 ms) until a line arrives on its stdin (the go signal), so
//! that no measured message is sent before the whole path is open.

use std::time::Instant;

use banyan_core::{Client, ClientConfig};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::codec;
use crate::error::{Error, Result};
use crate::protocol::{
    emit, go_signal, latency_report, now_ns, Tally, FIRST_MESSAGE_DEADLINE, PROBE_INTERVAL,
};

/// Where a bus worker finds the backplane.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BusAddr {
    /// The backplane's publisher port.
    pub publisher_port: u16,
    /// The backplane's subscriber port.
    pub subscriber_port: u16,
}

impl BusAddr {
    fn config(&self) -> ClientConfig {
        ClientConfig {
            address: "127.0.0.1".to_owned(),
            publisher_port: self.publisher_port,
            subscriber_port: self.subscriber_port,
            ..ClientConfig::default()
        }
    }
}

/// What a worker process does.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum Role {
    /// Publishes `messages` payloads `{'msg': i}` on `topic` with the bus
    /// client.
    BusPublish {
        /// The backplane.
        bus: BusAddr,
        /// The topic.
        topic: String,
        /// How many messages.
        messages: u64,
        /// Payload size in bytes (0: `{'msg': i}` alone).
        payload: usize,
        /// Wait until something subscribes to this topic first.
        wait_for: Option<String>,
        /// Probe until the go signal.
        probe: bool,
    },
    /// Counts `{'msg': i}` messages under `prefix` with the bus client.
    BusSubscribe {
        /// The backplane.
        bus: BusAddr,
        /// The subscription.
        prefix: String,
        /// Messages expected in total.
        expected: u64,
        /// Silence after which the count is final, in ms.
        idle_ms: u64,
    },
    /// A bare ZeroMQ XSUB/XPUB proxy.
    RawProxy {
        /// Send and receive high-water mark of both sockets.
        high_water_mark: i32,
    },
    /// Publishes with a bare ZeroMQ socket, once `subscribers` raw
    /// subscribers are known to the proxy.
    RawPublish {
        /// The proxy's publisher port.
        port: u16,
        /// The topic.
        topic: String,
        /// How many messages.
        messages: u64,
        /// Payload size in bytes.
        payload: usize,
        /// Subscribers to wait for.
        subscribers: usize,
        /// Send high-water mark.
        high_water_mark: i32,
    },
    /// Subscribes with a bare ZeroMQ SUB socket and never reads: a stalled
    /// subscriber, until it is ended.
    StalledSubscribe {
        /// The backplane's subscriber port.
        port: u16,
        /// The subscription.
        prefix: String,
    },
    /// Counts messages with a bare ZeroMQ SUB socket.
    RawSubscribe {
        /// The proxy's subscriber port.
        port: u16,
        /// The subscription.
        prefix: String,
        /// This subscriber's number (its readiness topic).
        index: usize,
        /// Messages expected in total.
        expected: u64,
        /// Silence after which the count is final, in ms.
        idle_ms: u64,
        /// Receive high-water mark.
        high_water_mark: i32,
    },
    /// Answers every `ping` with a `pong` carrying the same payload (bus).
    BusEcho {
        /// The backplane.
        bus: BusAddr,
    },
    /// Measures `ping`/`pong` round trips (bus).
    BusPing {
        /// The backplane.
        bus: BusAddr,
        /// Round trips measured.
        round_trips: u64,
        /// Round trips before measuring.
        warmup: u64,
    },
    /// Answers every `ping` with a `pong` (bare ZeroMQ).
    RawEcho {
        /// The proxy's publisher port.
        publisher_port: u16,
        /// The proxy's subscriber port.
        subscriber_port: u16,
    },
    /// Measures `ping`/`pong` round trips (bare ZeroMQ).
    RawPing {
        /// The proxy's publisher port.
        publisher_port: u16,
        /// The proxy's subscriber port.
        subscriber_port: u16,
        /// Round trips measured.
        round_trips: u64,
        /// Round trips before measuring.
        warmup: u64,
    },
    /// WebSocket pages: one sending `send` messages, or `clients` counting.
    WsPeer {
        /// The gateway's URL.
        url: String,
        /// The id message's id.
        id: String,
        /// Pages opened (receiving only).
        clients: usize,
        /// Messages to send (0: receive).
        send: u64,
        /// Messages each page expects (receiving).
        expected: u64,
        /// Silence after which the count is final, in ms.
        idle_ms: u64,
    },
    /// `pages` WebSocket pages that join with `id`, each send one command,
    /// and then sit idle until the stop signal.
    WsIdle {
        /// The gateway's URL.
        url: String,
        /// The backplane, where the pages' commands prove they joined.
        bus: BusAddr,
        /// The id message's id.
        id: String,
        /// Pages opened.
        pages: usize,
    },
    /// A bus view of `wsgw` (its `/view`), noting each snapshot's arrival
    /// and the bus total it shows, until the stop signal.
    ViewWatch {
        /// The gateway's URL (`ws://HOST:PORT`).
        url: String,
    },
    /// A TCP device server speaking the 1-byte length framing.
    TcpDevice {
        /// Frames to send (0: receive).
        send: u64,
        /// Payload size in bytes.
        payload: usize,
        /// Frames expected (receiving).
        expected: u64,
        /// Silence after which the count is final, in ms.
        idle_ms: u64,
    },
    /// An MQTT client publishing `send` JSON messages on `topic`, or
    /// counting what arrives on it.
    MqttPeer {
        /// The broker's port on 127.0.0.1.
        port: u16,
        /// Topic (sending) or filter (receiving).
        topic: String,
        /// Messages to send (0: receive).
        send: u64,
        /// Messages expected (receiving).
        expected: u64,
        /// Silence after which the count is final, in ms.
        idle_ms: u64,
    },
}

/// Runs the worker described by `role` (JSON) until it has reported.
pub fn run(role: &str) -> Result<()> {
    let role: Role = serde_json::from_str(role)?;
    match role {
        Role::RawProxy { high_water_mark } => raw_proxy(high_water_mark),
        Role::RawPublish {
            port,
            topic,
            messages,
            payload,
            subscribers,
            high_water_mark,
        } => raw_publish(
            port,
            &topic,
            messages,
            payload,
            subscribers,
            high_water_mark,
        ),
        Role::RawSubscribe {
            port,
            prefix,
            index,
            expected,
            idle_ms,
            high_water_mark,
        } => raw_subscribe(port, &prefix, index, expected, idle_ms, high_water_mark),
        Role::RawEcho {
            publisher_port,
            subscriber_port,
        } => raw_echo(publisher_port, subscriber_port),
        Role::StalledSubscribe { port, prefix } => stalled_subscribe(port, &prefix),
        Role::RawPing {
            publisher_port,
            subscriber_port,
            round_trips,
            warmup,
        } => raw_ping(publisher_port, subscriber_port, round_trips, warmup),
        role => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(run_async(role))
        }
    }
}

async fn run_async(role: Role) -> Result<()> {
    match role {
        Role::BusPublish {
            bus,
            topic,
            messages,
            payload,
            wait_for,
            probe,
        } => bus_publish(bus, &topic, messages, payload, wait_for, probe).await,
        Role::BusSubscribe {
            bus,
            prefix,
            expected,
            idle_ms,
        } => bus_subscribe(bus, &prefix, expected, idle_ms).await,
        Role::BusEcho { bus } => bus_echo(bus).await,
        Role::BusPing {
            bus,
            round_trips,
            warmup,
        } => bus_ping(bus, round_trips, warmup).await,
        Role::WsPeer {
            url,
            id,
            clients,
            send,
            expected,
            idle_ms,
        } => {
            if send > 0 {
                crate::peers::ws_send(&url, &id, send).await
            } else {
                crate::peers::ws_receive(&url, &id, clients, expected, idle_ms).await
            }
        }
        Role::WsIdle {
            url,
            bus,
            id,
            pages,
        } => {
            let (client, messages) = Client::connect(&bus.config()).await?;
            client.subscribe(&id).await?;
            let result = crate::peers::ws_idle(&url, &id, pages, messages).await;
            client.close().await?;
            result
        }
        Role::ViewWatch { url } => crate::peers::view_watch(&url).await,
        Role::TcpDevice {
            send,
            payload,
            expected,
            idle_ms,
        } => crate::peers::tcp_device(send, payload, expected, idle_ms).await,
        Role::MqttPeer {
            port,
            topic,
            send,
            expected,
            idle_ms,
        } => {
            if send > 0 {
                crate::peers::mqtt_send(port, &topic, send).await
            } else {
                crate::peers::mqtt_receive(port, &topic, expected, idle_ms).await
            }
        }
        _ => Err(Error::Protocol("not an async role".to_owned())),
    }
}

async fn bus_publish(
    bus: BusAddr,
    topic: &str,
    messages: u64,
    payload: usize,
    wait_for: Option<String>,
    probe: bool,
) -> Result<()> {
    let (client, _messages) = Client::connect(&bus.config()).await?;
    if let Some(topic) = wait_for {
        client.wait_for_subscriber(&topic).await?;
    }
    emit("ready", json!({}));
    if probe {
        let mut go = go_signal();
        loop {
            client.publish_raw(topic, codec::PROBE).await?;
            tokio::select! {
                _ = &mut go => break,
                _ = tokio::time::sleep(PROBE_INTERVAL) => {}
            }
        }
    }
    let start_ns = now_ns();
    let mut buffer = Vec::with_capacity(payload.max(16));
    for seq in 0..messages {
        buffer.clear();
        codec::encode(seq, payload, &mut buffer);
        client.publish_raw(topic, buffer.clone()).await?;
    }
    let end_ns = now_ns();
    client.close().await?;
    emit(
        "result",
        json!({"sent": messages, "start_ns": start_ns, "end_ns": end_ns}),
    );
    Ok(())
}

async fn bus_subscribe(bus: BusAddr, prefix: &str, expected: u64, idle_ms: u64) -> Result<()> {
    let (client, mut messages) = Client::connect(&bus.config()).await?;
    client.subscribe(prefix).await?;
    emit("ready", json!({}));
    let mut tally = Tally::default();
    while tally.received < expected {
        match tokio::time::timeout(tally.patience(idle_ms), messages.recv()).await {
            Ok(Some(message)) => {
                let seq = codec::decode(message.payload());
                if tally.observe(message.topic().as_bytes(), seq) {
                    emit("probed", json!({}));
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
    emit("result", tally.report());
    client.close().await?;
    Ok(())
}

fn ephemeral_port(socket: &zmq::Socket) -> Result<u16> {
    let endpoint = socket
        .get_last_endpoint()?
        .map_err(|_| Error::Protocol("endpoint is not UTF-8".to_owned()))?;
    endpoint
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| Error::Protocol(format!("no port in {endpoint}")))
}

fn raw_proxy(high_water_mark: i32) -> Result<()> {
    let context = zmq::Context::new();
    let xsub = context.socket(zmq::XSUB)?;
    let xpub = context.socket(zmq::XPUB)?;
    for socket in [&xsub, &xpub] {
        socket.set_sndhwm(high_water_mark)?;
        socket.set_rcvhwm(high_water_mark)?;
        socket.bind("tcp://127.0.0.1:*")?;
    }
    emit(
        "ready",
        json!({"publisher_port": ephemeral_port(&xsub)?, "subscriber_port": ephemeral_port(&xpub)?}),
    );
    zmq::proxy(&xsub, &xpub)?;
    Ok(())
}

/// Reads subscription notices on `xpub` until every topic in `topics` was
/// subscribed.
fn await_subscriptions(xpub: &zmq::Socket, topics: &[String]) -> Result<()> {
    xpub.set_rcvtimeo(FIRST_MESSAGE_DEADLINE.as_millis() as i32)?;
    let mut missing: Vec<Vec<u8>> = topics.iter().map(|t| t.as_bytes().to_vec()).collect();
    while !missing.is_empty() {
        let notice = xpub.recv_bytes(0)?;
        if let Some((1, topic)) = notice.split_first() {
            missing.retain(|t| t != topic);
        }
    }
    xpub.set_rcvtimeo(-1)?;
    Ok(())
}

fn raw_publish(
    port: u16,
    topic: &str,
    messages: u64,
    payload: usize,
    subscribers: usize,
    high_water_mark: i32,
) -> Result<()> {
    let context = zmq::Context::new();
    let socket = context.socket(zmq::XPUB)?;
    socket.set_sndhwm(high_water_mark)?;
    socket.set_linger(10_000)?;
    socket.connect(&format!("tcp://127.0.0.1:{port}"))?;
    let ready: Vec<String> = (0..subscribers).map(|k| format!("ready/{k}")).collect();
    await_subscriptions(&socket, &ready)?;
    emit("ready", json!({}));
    let start_ns = now_ns();
    let mut buffer = Vec::with_capacity(payload.max(16));
    for seq in 0..messages {
        buffer.clear();
        codec::encode(seq, payload, &mut buffer);
        socket.send(topic.as_bytes(), zmq::SNDMORE)?;
        socket.send(&buffer[..], 0)?;
    }
    let end_ns = now_ns();
    drop(socket);
    drop(context); // waits until the queue is flushed (linger)
    emit(
        "result",
        json!({"sent": messages, "start_ns": start_ns, "end_ns": end_ns}),
    );
    Ok(())
}

fn raw_subscribe(
    port: u16,
    prefix: &str,
    index: usize,
    expected: u64,
    idle_ms: u64,
    high_water_mark: i32,
) -> Result<()> {
    let context = zmq::Context::new();
    let socket = context.socket(zmq::SUB)?;
    socket.set_rcvhwm(high_water_mark)?;
    socket.connect(&format!("tcp://127.0.0.1:{port}"))?;
    socket.set_subscribe(prefix.as_bytes())?;
    socket.set_subscribe(format!("ready/{index}").as_bytes())?;
    emit("ready", json!({}));
    let mut tally = Tally::default();
    let (mut topic, mut body) = (zmq::Message::new(), zmq::Message::new());
    while tally.received < expected {
        socket.set_rcvtimeo(tally.patience(idle_ms).as_millis() as i32)?;
        match socket.recv(&mut topic, 0) {
            Ok(()) => {}
            Err(zmq::Error::EAGAIN) => break,
            Err(e) => return Err(e.into()),
        }
        socket.recv(&mut body, 0)?;
        tally.observe(&topic, codec::decode(&body));
    }
    emit("result", tally.report());
    Ok(())
}

fn stalled_subscribe(port: u16, prefix: &str) -> Result<()> {
    let context = zmq::Context::new();
    let socket = context.socket(zmq::SUB)?;
    // Small queues of its own, so that what piles up piles up in the
    // backplane.
    socket.set_rcvhwm(16)?;
    socket.set_rcvbuf(65_536)?;
    socket.connect(&format!("tcp://127.0.0.1:{port}"))?;
    socket.set_subscribe(prefix.as_bytes())?;
    emit("ready", json!({}));
    // Ended by the bench (SIGKILL) once the case is measured.
    loop {
        std::thread::park();
    }
}

fn raw_echo(publisher_port: u16, subscriber_port: u16) -> Result<()> {
    let context = zmq::Context::new();
    let sub = context.socket(zmq::SUB)?;
    sub.connect(&format!("tcp://127.0.0.1:{subscriber_port}"))?;
    sub.set_subscribe(b"ping")?;
    let xpub = context.socket(zmq::XPUB)?;
    xpub.connect(&format!("tcp://127.0.0.1:{publisher_port}"))?;
    emit("ready", json!({}));
    let (mut topic, mut body) = (zmq::Message::new(), zmq::Message::new());
    let mut answering = false;
    loop {
        sub.recv(&mut topic, 0)?;
        sub.recv(&mut body, 0)?;
        if !answering {
            await_subscriptions(&xpub, &["pong".to_owned()])?;
            answering = true;
        }
        xpub.send("pong", zmq::SNDMORE)?;
        xpub.send(&body[..], 0)?;
    }
}

fn raw_ping(
    publisher_port: u16,
    subscriber_port: u16,
    round_trips: u64,
    warmup: u64,
) -> Result<()> {
    let context = zmq::Context::new();
    let sub = context.socket(zmq::SUB)?;
    sub.connect(&format!("tcp://127.0.0.1:{subscriber_port}"))?;
    sub.set_subscribe(b"pong")?;
    sub.set_rcvtimeo(FIRST_MESSAGE_DEADLINE.as_millis() as i32)?;
    let xpub = context.socket(zmq::XPUB)?;
    xpub.connect(&format!("tcp://127.0.0.1:{publisher_port}"))?;
    await_subscriptions(&xpub, &["ping".to_owned()])?;
    emit("ready", json!({}));
    let mut rtts = Vec::with_capacity(round_trips as usize);
    let (mut topic, mut body) = (zmq::Message::new(), zmq::Message::new());
    let mut buffer = Vec::with_capacity(16);
    for seq in 0..warmup + round_trips {
        buffer.clear();
        codec::encode(seq, 0, &mut buffer);
        let sent = Instant::now();
        xpub.send("ping", zmq::SNDMORE)?;
        xpub.send(&buffer[..], 0)?;
        sub.recv(&mut topic, 0)?;
        sub.recv(&mut body, 0)?;
        if seq >= warmup {
            rtts.push(sent.elapsed().as_nanos() as u64);
        }
    }
    emit("result", latency_report(rtts));
    Ok(())
}

async fn bus_echo(bus: BusAddr) -> Result<()> {
    let (client, mut messages) = Client::connect(&bus.config()).await?;
    client.subscribe("ping").await?;
    emit("ready", json!({}));
    let mut answering = false;
    while let Some(message) = messages.recv().await {
        if !answering {
            client.wait_for_subscriber("pong").await?;
            answering = true;
        }
        client
            .publish_raw("pong", message.payload().clone())
            .await?;
    }
    Ok(())
}

async fn bus_ping(bus: BusAddr, round_trips: u64, warmup: u64) -> Result<()> {
    let (client, mut messages) = Client::connect(&bus.config()).await?;
    client.subscribe("pong").await?;
    client.wait_for_subscriber("ping").await?;
    emit("ready", json!({}));
    let mut rtts = Vec::with_capacity(round_trips as usize);
    let mut buffer = Vec::with_capacity(16);
    for seq in 0..warmup + round_trips {
        buffer.clear();
        codec::encode(seq, 0, &mut buffer);
        let sent = Instant::now();
        client.publish_raw("ping", buffer.clone()).await?;
        match tokio::time::timeout(FIRST_MESSAGE_DEADLINE, messages.recv()).await {
            Ok(Some(_)) => {}
            _ => return Err(Error::Protocol(format!("no pong for ping {seq}"))),
        }
        if seq >= warmup {
            rtts.push(sent.elapsed().as_nanos() as u64);
        }
    }
    emit("result", latency_report(rtts));
    client.close().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_counts_loss_order_and_probes() {
        let mut tally = Tally::default();
        assert!(tally.observe(b"t", None));
        assert!(!tally.observe(b"t", None));
        for seq in [0, 1, 3, 2, 4] {
            tally.observe(b"t", Some(seq));
        }
        tally.observe(b"u", Some(0));
        assert_eq!(tally.received, 6);
        assert_eq!(tally.out_of_order, 1);
        assert_eq!(tally.other, 2);
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let report = latency_report((1..=1000).map(|us| us * 1000).collect());
        assert_eq!(report["p50_us"], 500.0);
        assert_eq!(report["p99_us"], 990.0);
        assert_eq!(report["p999_us"], 999.0);
        assert_eq!(report["max_us"], 1000.0);
    }

    #[test]
    fn roles_round_trip_through_json() {
        let role = Role::RawProxy { high_water_mark: 7 };
        let text = serde_json::to_string(&role).expect("serialises");
        assert_eq!(text, r#"{"role":"raw_proxy","high_water_mark":7}"#);
    }
}
