//! The WebSocket gateway end to end: the real `backplane` and `wsgw`
//! executables, a real WebSocket client, python-banyan peers and headless
//! Chromium.

pub(crate) mod cdp;
mod hardening;
mod onegpio;
mod raw;

use std::process::Command;

use banyan_core::rmpv::Value;
use banyan_core::{Client, Messages};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value as Json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};
use tokio_tungstenite::WebSocketStream;

use crate::util::*;

type Ws = WebSocketStream<TcpStream>;

/// 1700000000.5 in UTC, as the gateway (run with TZ=UTC) shows it.
const TIMESTAMP: f64 = 1_700_000_000.5;
const TIMESTAMP_TEXT: &str = "2023-11-14 22:13:20";

/// A running `wsgw` on a free port, attached to `bp`, showing times in UTC.
struct Gateway {
    proc: Proc,
    port: u16,
}

impl Gateway {
    async fn start(bp: &BackplaneProc, extra: &[&str]) -> Gateway {
        // Port 0: the gateway binds a free port and says which.
        Gateway::start_with(bp, &[&["-w", "0"], extra].concat(), &[]).await
    }

    /// `wsgw` with exactly these flags after the bus flags (one of them
    /// must give port 0), and these environment variables.
    async fn start_with(
        bp: &BackplaneProc,
        flags: &[&str],
        env: &[(&str, &std::path::Path)],
    ) -> Gateway {
        let mut command = Command::new(exe("wsgw"));
        command.args(bp.flags()).args(flags).env("TZ", "UTC");
        for (name, value) in env {
            command.env(name, value);
        }
        let mut proc = Proc::spawn("wsgw", &mut command);
        let line = proc.wait_for_text("WebSocket server on ws://").await;
        let port = line
            .rsplit(':')
            .next()
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        Gateway { proc, port }
    }

    /// A WebSocket client with this `Origin` header (none when `None`).
    async fn connect_from(&self, origin: Option<&str>) -> Result<Ws, WsError> {
        let tcp = within(
            "a TCP connection to wsgw",
            TcpStream::connect(("127.0.0.1", self.port)),
        )
        .await
        .expect("wsgw accepts TCP");
        let mut request = format!("ws://127.0.0.1:{}/", self.port)
            .into_client_request()
            .expect("a request");
        if let Some(origin) = origin {
            request
                .headers_mut()
                .insert("Origin", origin.parse().expect("a header value"));
        }
        within(
            "the WebSocket handshake",
            tokio_tungstenite::client_async(request, tcp),
        )
        .await
        .map(|(ws, _)| ws)
    }

    async fn connect(&self) -> Ws {
        self.connect_from(None).await.expect("handshake accepted")
    }

    /// A client that has sent its id and been taken in: a marker command sent
    /// after the id has reached the bus (`inbox` subscribes to `id`).
    async fn join(&self, id: &str, inbox: &mut Messages) -> Ws {
        let mut ws = self.connect().await;
        send(&mut ws, &json!({"id": id}).to_string()).await;
        send(&mut ws, r#"{"marker": "joined"}"#).await;
        let marker = recv(inbox, "the joined marker on the bus").await;
        assert_eq!(marker.topic(), id);
        assert_eq!(to_json(&marker), json!({"marker": "joined"}));
        ws
    }
}

async fn bus(bp: &BackplaneProc, topics: &[&str]) -> (Client, Messages) {
    let (client, messages) = bp.connect().await;
    for topic in topics {
        within("a test subscription", client.subscribe(topic))
            .await
            .expect("subscribed");
    }
    (client, messages)
}

async fn send(ws: &mut Ws, text: &str) {
    within("sending to wsgw", ws.send(WsMessage::text(text)))
        .await
        .expect("sent");
}

/// The next text message; panics on a close or the deadline.
async fn next_text(ws: &mut Ws, what: &str) -> String {
    within(what, async {
        loop {
            match ws.next().await {
                Some(Ok(WsMessage::Text(text))) => return text.as_str().to_owned(),
                Some(Ok(WsMessage::Close(frame))) => {
                    panic!("closed ({frame:?}) while waiting for {what}")
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("connection failed ({e}) while waiting for {what}"),
                None => panic!("connection ended while waiting for {what}"),
            }
        }
    })
    .await
}

async fn next_json(ws: &mut Ws, what: &str) -> Json {
    let text = next_text(ws, what).await;
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what} is not JSON ({e}): {text}"))
}

/// The close frame's code, after any text messages before it.
async fn next_close(ws: &mut Ws, what: &str) -> Option<CloseCode> {
    within(what, async {
        loop {
            match ws.next().await {
                Some(Ok(WsMessage::Close(frame))) => return frame.map(|f| f.code),
                Some(Ok(_)) => {}
                other => panic!("no close frame while waiting for {what}: {other:?}"),
            }
        }
    })
    .await
}

fn to_json(message: &banyan_core::Message) -> Json {
    let value = message.value().expect("a MessagePack payload");
    serde_json::from_str(&banyan_core::json::to_json(&value).expect("JSON form")).expect("JSON")
}

fn value(json: Json) -> Value {
    banyan_core::json::from_json(&json.to_string()).expect("a value")
}

async fn publish(client: &Client, topic: &str, json: Json) {
    client
        .publish(topic, &value(json))
        .await
        .expect("published");
}

async fn error_message(ws: &mut Ws, what: &str) -> String {
    let answer = next_json(ws, what).await;
    answer["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: not an error message: {answer}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn id_handshake_and_both_directions() {
    let bp = BackplaneProc::start().await;
    let gw = Gateway::start(&bp, &[]).await;
    let (device, mut commands) = bus(&bp, &["to_motor"]).await;
    let mut page = gw.join("to_motor", &mut commands).await;

    // Page -> bus: MessagePack on the id topic.
    send(
        &mut page,
        r#"{"command": "digital_write", "pin": 4, "value": 1}"#,
    )
    .await;
    let command = recv(&mut commands, "the command on the bus").await;
    assert_eq!(command.topic(), "to_motor");
    assert_eq!(
        command.value().expect("msgpack"),
        value(json!({"command": "digital_write", "pin": 4, "value": 1}))
    );
    // Any JSON value is published, not only objects.
    send(&mut page, "[1, 2.5, null]").await;
    let array = recv(&mut commands, "the array on the bus").await;
    assert_eq!(to_json(&array), json!([1, 2.5, null]));

    // Bus -> page: only the leading "to" of the id is replaced.
    device
        .wait_for_subscriber("from_motor")
        .await
        .expect("wsgw subscribes the reply topic");
    publish(
        &device,
        "from_motor",
        json!({"report": "digital_input", "pin": 2, "value": 1, "timestamp": TIMESTAMP}),
    )
    .await;
    assert_eq!(
        next_json(&mut page, "the report").await,
        json!({"report": "digital_input", "pin": 2, "value": 1, "timestamp": TIMESTAMP_TEXT})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn same_id_clients_share_and_the_topic_is_released_by_the_last() {
    let bp = BackplaneProc::start().await;
    let gw = Gateway::start(&bp, &[]).await;
    let (device, mut commands) = bus(&bp, &["to_x"]).await;
    let mut first = gw.join("to_x", &mut commands).await;
    let mut second = gw.join("to_x", &mut commands).await;
    device
        .wait_for_subscriber("from_x")
        .await
        .expect("subscribed");

    publish(&device, "from_x", json!({"n": 1})).await;
    assert_eq!(
        next_json(&mut first, "n=1 at the first").await,
        json!({"n": 1})
    );
    assert_eq!(
        next_json(&mut second, "n=1 at the second").await,
        json!({"n": 1})
    );

    // The first leaves: the topic stays subscribed for the second.
    first.close(None).await.expect("close sent");
    let _ = next_close(&mut first, "the close answer").await;
    publish(&device, "from_x", json!({"n": 2})).await;
    assert_eq!(
        next_json(&mut second, "n=2 at the second").await,
        json!({"n": 2})
    );

    // A client joining again gets each message once (no leftover of the first).
    let mut again = gw.join("to_x", &mut commands).await;
    publish(&device, "from_x", json!({"n": 3})).await;
    publish(&device, "from_x", json!({"n": 4})).await;
    assert_eq!(
        next_json(&mut again, "n=3 at the rejoined").await,
        json!({"n": 3})
    );
    assert_eq!(
        next_json(&mut again, "n=4 at the rejoined").await,
        json!({"n": 4})
    );
    assert_eq!(
        next_json(&mut second, "n=3 at the second").await,
        json!({"n": 3})
    );
    assert_eq!(
        next_json(&mut second, "n=4 at the second").await,
        json!({"n": 4})
    );

    // The last two leave (one closing, one just dropping its connection):
    // the gateway lets go of the topic on the bus.
    again.close(None).await.expect("close sent");
    drop(second);
    within(
        "wsgw to unsubscribe from_x",
        device.wait_for_no_subscriber("from_x"),
    )
    .await
    .expect("no subscriber left");
    assert!(
        gw.proc.output().contains("client left"),
        "{}",
        gw.proc.output()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn different_ids_receive_only_their_own_topic() {
    let bp = BackplaneProc::start().await;
    let gw = Gateway::start(&bp, &[]).await;
    let (device, mut commands) = bus(&bp, &["to_a", "to_b"]).await;
    let mut a = gw.join("to_a", &mut commands).await;
    let mut b = gw.join("to_b", &mut commands).await;
    device.wait_for_subscriber("from_a").await.expect("from_a");
    device.wait_for_subscriber("from_b").await.expect("from_b");

    publish(&device, "from_b", json!({"for": "b"})).await;
    publish(&device, "from_a_extra", json!({"for": "nobody"})).await;
    publish(&device, "from_a", json!({"for": "a"})).await;
    assert_eq!(next_json(&mut a, "a's message").await, json!({"for": "a"}));
    assert_eq!(next_json(&mut b, "b's message").await, json!({"for": "b"}));

    send(&mut b, r#"{"from": "b"}"#).await;
    let command = recv(&mut commands, "b's command").await;
    assert_eq!(command.topic(), "to_b");
}

#[tokio::test(flavor = "multi_thread")]
async fn reply_topics_match_exactly_never_by_prefix() {
    // The gateway's bus subscriptions are ZeroMQ prefixes: holding "from"
    // (-m) and subscribing "from_a" deliver every topic below to it. A page
    // must still get only the messages of exactly its reply topic.
    let bp = BackplaneProc::start().await;
    let gw = Gateway::start(&bp, &["-m", "from", "-m", "from_a_b"]).await;
    let (device, mut commands) = bus(&bp, &["to_a"]).await;
    let mut a = gw.join("to_a", &mut commands).await;
    let mut a_b = gw.join("to_a_b", &mut commands).await;
    device.wait_for_subscriber("from_a").await.expect("from_a");
    for topic in [
        "from",
        "from_",
        "from_a_",
        "from_ab",
        "from_a/x",
        "from_a_b_c",
        "from_A",
    ] {
        publish(&device, topic, json!({"leak": topic})).await;
    }
    publish(&device, "from_a_b", json!({"for": "a_b"})).await;
    publish(&device, "from_a", json!({"for": "a"})).await;
    assert_eq!(
        next_json(&mut a, "from_a's first message").await,
        json!({"for": "a"}),
        "a page of from_a got a message of another topic first"
    );
    assert_eq!(
        next_json(&mut a_b, "from_a_b's first message").await,
        json!({"for": "a_b"}),
        "a page of from_a_b got a message of another topic first"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_answered_and_harms_no_one() {
    let bp = BackplaneProc::start().await;
    let mut gw = Gateway::start(&bp, &["--max-message-size", "1024"]).await;
    let (device, mut commands) = bus(&bp, &["to_good", "to_bad"]).await;
    let mut good = gw.join("to_good", &mut commands).await;

    let mut bad = gw.connect().await;
    send(&mut bad, "hello").await;
    assert!(error_message(&mut bad, "non-JSON id")
        .await
        .contains("not valid JSON"));
    send(&mut bad, r#"["to_bad"]"#).await;
    assert!(error_message(&mut bad, "non-object id")
        .await
        .contains("JSON object"));
    send(&mut bad, r#"{"id": 5}"#).await;
    assert!(error_message(&mut bad, "numeric id")
        .await
        .contains("string \"id\""));
    send(&mut bad, r#"{"name": "to_bad"}"#).await;
    assert!(error_message(&mut bad, "no id")
        .await
        .contains("string \"id\""));
    within("a binary frame", bad.send(WsMessage::binary(vec![1, 2, 3])))
        .await
        .expect("sent");
    assert!(error_message(&mut bad, "binary before id")
        .await
        .contains("binary"));

    // The connection stays usable: a correct id now works.
    send(&mut bad, r#"{"id": "to_bad"}"#).await;
    send(&mut bad, "{oops").await;
    assert!(error_message(&mut bad, "non-JSON command")
        .await
        .contains("not valid JSON"));
    send(&mut bad, r#"{"data": {"$bin": "***"}}"#).await;
    assert!(error_message(&mut bad, "bad $bin").await.contains("$bin"));
    within("a binary frame", bad.send(WsMessage::binary(vec![4, 5])))
        .await
        .expect("sent");
    assert!(error_message(&mut bad, "binary command")
        .await
        .contains("binary"));
    send(&mut bad, r#"{"still": "here"}"#).await;
    let command = recv(&mut commands, "the bad client's good command").await;
    assert_eq!(
        (command.topic(), to_json(&command)),
        ("to_bad", json!({"still": "here"}))
    );

    // Over the limit: told, then closed with 1009 (message too big).
    send(&mut bad, &format!("{{\"pad\": \"{}\"}}", "x".repeat(2000))).await;
    assert!(error_message(&mut bad, "oversized message")
        .await
        .contains("too large"));
    assert_eq!(
        next_close(&mut bad, "the close after oversize").await,
        Some(CloseCode::Size)
    );

    // Everyone else is fine.
    send(&mut good, r#"{"command": "ok"}"#).await;
    let command = recv(&mut commands, "the good client's command").await;
    assert_eq!(
        (command.topic(), to_json(&command)),
        ("to_good", json!({"command": "ok"}))
    );
    device
        .wait_for_subscriber("from_good")
        .await
        .expect("from_good");
    publish(&device, "from_good", json!({"report": "fine"})).await;
    assert_eq!(
        next_json(&mut good, "the good report").await,
        json!({"report": "fine"})
    );
    gw.proc.wait_for_text("bad input").await;
    gw.proc.wait_for_text("too large").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bus_payloads_follow_the_json_rules_and_bad_ones_are_skipped() {
    let bp = BackplaneProc::start().await;
    let mut gw = Gateway::start(&bp, &[]).await;
    let (device, mut commands) = bus(&bp, &["to_odd"]).await;
    let mut page = gw.join("to_odd", &mut commands).await;
    device
        .wait_for_subscriber("from_odd")
        .await
        .expect("from_odd");

    // Not MessagePack at all: skipped, logged. A NaN, which JSON lacks: sent
    // as python's json.dumps writes it (a page's JSON.parse refuses it, as
    // with python's gateway).
    device
        .publish_raw("from_odd", vec![0xc1])
        .await
        .expect("published");
    device
        .publish(
            "from_odd",
            &Value::Map(vec![(Value::from("x"), Value::F64(f64::NAN))]),
        )
        .await
        .expect("published");
    // bin, a non-string key and a non-map payload: converted by the rules.
    device
        .publish(
            "from_odd",
            &Value::Map(vec![
                (Value::from("data"), Value::Binary(vec![1, 2, 3])),
                (Value::from(7), Value::from("seven")),
            ]),
        )
        .await
        .expect("published");
    device
        .publish("from_odd", &Value::from("plain"))
        .await
        .expect("published");
    publish(&device, "from_odd", json!({"after": "bad ones"})).await;

    assert_eq!(
        next_text(&mut page, "the NaN payload").await,
        r#"{"x": NaN}"#
    );
    assert_eq!(
        next_json(&mut page, "the bin payload").await,
        json!({"data": {"$bin": "AQID"}, "7": "seven"})
    );
    assert_eq!(
        next_json(&mut page, "the str payload").await,
        json!("plain")
    );
    assert_eq!(
        next_json(&mut page, "the next payload").await,
        json!({"after": "bad ones"})
    );
    gw.proc.wait_for_text("no JSON form").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_client_delays_no_one() {
    const BATCHES: usize = 30;
    const BATCH: usize = 100;
    let bp = BackplaneProc::start().await;
    let mut gw = Gateway::start(&bp, &["--queue", "64"]).await;
    let (device, mut commands) = bus(&bp, &["to_feed"]).await;
    // Same reply topic for both: the stalled one is not read from until the
    // end.
    let mut stalled = gw.join("to_feed", &mut commands).await;
    let mut reader = gw.join("to_feed", &mut commands).await;
    device
        .wait_for_subscriber("from_feed")
        .await
        .expect("from_feed");

    // 30 x 100 messages of 8 KiB (24 MB, more than the stalled client's
    // socket buffers hold). Batches keep the reader's own queue from
    // overflowing on a busy machine; the stalled client never catches up.
    let pad = "x".repeat(8 * 1024);
    let mut next = 0u64;
    for _ in 0..BATCHES {
        for _ in 0..BATCH {
            next += 1;
            publish(&device, "from_feed", json!({"seq": next, "pad": pad})).await;
        }
        for expected in next - BATCH as u64 + 1..=next {
            let got = next_json(&mut reader, "the reader's next message").await;
            assert_eq!(got["seq"], json!(expected), "messages in order, none lost");
        }
    }
    gw.proc.wait_for_text("dropping its oldest messages").await;
    // The stalled client was sent 24 MB; the gateway held a bounded part.
    let peak = peak_memory_kib(gw.proc.pid());
    assert!(
        peak < 24 * 1024,
        "wsgw's peak memory is {peak} KiB: the stalled client's messages piled up"
    );
    // It reads at last: what it gets is in order and ends with the newest;
    // the rest it missed, and the gateway counted every one.
    let mut received = 0u64;
    let mut last = 0;
    while last < next {
        let got = next_json(&mut stalled, "the stalled client's next message").await;
        let seq = got["seq"].as_u64().expect("seq");
        assert!(seq > last, "out of order: {seq} after {last}");
        last = seq;
        received += 1;
    }
    let missed = assert_stall_ended_with_every_drop_counted(&mut gw.proc).await;
    assert_eq!(
        received + missed,
        next,
        "every message delivered or counted"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_client_loses_nothing_while_a_stalled_one_is_dropped() {
    // Unpaced: the publisher outruns the reader, whose queue of 16 is full
    // most of the time. 20,000 x 1 KiB (20 MB) also fills the stalled
    // client's socket buffers, then its queue.
    const MESSAGES: u64 = 20_000;
    let bp = BackplaneProc::start().await;
    let mut gw = Gateway::start(&bp, &["--queue", "16", "--stall-grace", "1s"]).await;
    let (device, mut commands) = bus(&bp, &["to_burst"]).await;
    let _stalled = gw.join("to_burst", &mut commands).await;
    let mut reader = gw.join("to_burst", &mut commands).await;
    device
        .wait_for_subscriber("from_burst")
        .await
        .expect("from_burst");

    let reading = tokio::spawn(async move {
        for expected in 1..=MESSAGES {
            let got = next_json(&mut reader, "the slow reader's next message").await;
            assert_eq!(got["seq"], json!(expected), "messages in order, none lost");
        }
    });
    let pad = Value::from("x".repeat(1024));
    for seq in 1..=MESSAGES {
        let message = Value::Map(vec![
            (Value::from("seq"), Value::from(seq)),
            (Value::from("pad"), pad.clone()),
        ]);
        within(
            "publishing the burst",
            device.publish("from_burst", &message),
        )
        .await
        .expect("published");
    }
    within("the slow reader's 20,000 messages", reading)
        .await
        .expect("every message, in order");
    gw.proc.wait_for_text("dropping its oldest messages").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn other_sites_are_refused() {
    let bp = BackplaneProc::start().await;
    let gw = Gateway::start(&bp, &["-o", "https://pages.example:8443"]).await;
    match gw.connect_from(Some("http://evil.example")).await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 403),
        other => panic!("expected HTTP 403 for a foreign origin, got {other:?}"),
    }
    for origin in [
        "null",
        "http://localhost:8000",
        "http://127.0.0.1",
        "https://pages.example:8443",
    ] {
        gw.connect_from(Some(origin))
            .await
            .unwrap_or_else(|e| panic!("origin {origin} refused: {e}"));
    }
    assert!(
        gw.proc.output().contains("origin not allowed"),
        "{}",
        gw.proc.output()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn python_style_subscription_lists_are_held() {
    let bp = BackplaneProc::start().await;
    let _gw = Gateway::start(
        &bp,
        &["-m", "from_p1", "from_p2,from_p3", "-m", "from_p4, from_p5"],
    )
    .await;
    let (watcher, _) = bus(&bp, &[]).await;
    for topic in ["from_p1", "from_p2", "from_p3", "from_p4", "from_p5"] {
        within(
            &format!("wsgw to subscribe {topic}"),
            watcher.wait_for_subscriber(topic),
        )
        .await
        .expect("subscribed");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_sends_close_frames() {
    let bp = BackplaneProc::start().await;
    let mut gw = Gateway::start(&bp, &[]).await;
    let (_device, mut commands) = bus(&bp, &["to_bye"]).await;
    let mut page = gw.join("to_bye", &mut commands).await;
    let mut waiting = gw.connect().await; // no id yet
    assert_eq!(gw.proc.stop(false).await, Some(0), "{}", gw.proc.output());
    assert_eq!(
        next_close(&mut page, "the close at shutdown").await,
        Some(CloseCode::Away)
    );
    assert_eq!(
        next_close(&mut waiting, "the close at shutdown").await,
        Some(CloseCode::Away)
    );
}

/// Reads the MessagePack hex of a banyan_peer.py line.
fn from_hex(hex: &str) -> Value {
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect();
    banyan_core::envelope::decode(&bytes).expect("msgpack")
}

#[tokio::test(flavor = "multi_thread")]
async fn python_component_on_the_other_side() {
    let bp = BackplaneProc::start().await;
    let gw = Gateway::start(&bp, &[]).await;
    let mut echo = Proc::spawn(
        "banyan_peer echo",
        Command::new(python())
            .arg(root().join("tests/python/banyan_peer.py"))
            .arg("echo")
            .args(bp.flags())
            .args(["--topic", "to_py", "--reply", "from_py"]),
    );
    echo.wait_for_text("READY").await;
    let (watcher, _) = bus(&bp, &[]).await;
    let mut page = gw.connect().await;
    send(&mut page, r#"{"id": "to_py"}"#).await;
    within(
        "wsgw to subscribe from_py",
        watcher.wait_for_subscriber("from_py"),
    )
    .await
    .expect("subscribed");

    let command = json!({"command": "digital_write", "pin": 4, "value": 1, "timestamp": TIMESTAMP});
    send(&mut page, &command.to_string()).await;
    let line = echo.wait_for_text("to_py\t").await;
    let hex = line.split('\t').nth(1).expect("a hex field");
    assert_eq!(from_hex(hex), value(command), "what python received");
    assert_eq!(
        next_json(&mut page, "python's echo").await,
        json!({"command": "digital_write", "pin": 4, "value": 1, "timestamp": TIMESTAMP_TEXT})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_onegpio_page_in_chromium() {
    let bp = BackplaneProc::start().await;
    let gw = Gateway::start(&bp, &[]).await;
    let (device, mut commands) = bus(&bp, &["to_arduino_gateway"]).await;

    let mut browser = cdp::Browser::start(&[]).await;
    let page = root().join("tests/pages/onegpio.html");
    let session = browser
        .cdp
        .open(&format!("file://{}?port={}", page.display(), gw.port))
        .await;

    // The page's command reaches the bus...
    let command = recv(&mut commands, "the page's command").await;
    assert_eq!(command.topic(), "to_arduino_gateway");
    assert_eq!(
        to_json(&command),
        json!({"command": "digital_write", "pin": 4, "value": 1})
    );

    // ...and a device's report reaches the page's DOM.
    device
        .wait_for_subscriber("from_arduino_gateway")
        .await
        .expect("subscribed");
    publish(
        &device,
        "from_arduino_gateway",
        json!({"report": "digital_input", "pin": 2, "value": 1, "timestamp": TIMESTAMP}),
    )
    .await;
    let expected = format!("digital_input 2 1 {TIMESTAMP_TEXT}");
    let state = browser
        .wait_for(
            &session,
            "JSON.stringify({status: document.getElementById('status').textContent, \
             report: document.getElementById('report').textContent, \
             errors: document.getElementById('errors').textContent})",
            &format!("{expected:?}"),
            |state| state["report"] == json!(expected),
        )
        .await;
    assert_eq!(state["status"], json!("open"));
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_port_in_use_is_reported_with_exit_code_1() {
    let bp = BackplaneProc::start().await;
    // Held by this test for as long as wsgw runs.
    let held = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let port = held.local_addr().expect("its address").port().to_string();
    let mut gw = Proc::spawn(
        "wsgw",
        Command::new(exe("wsgw"))
            .args(bp.flags())
            .args(["-w", &port])
            .env("NO_COLOR", "1"),
    );
    assert_eq!(gw.wait().await, Some(1), "{}", gw.output());
    let output = gw.output();
    assert!(
        output.contains(&format!("127.0.0.1:{port}")) && output.contains("in use"),
        "{output}"
    );
    drop(held);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_page_that_sends_no_id_is_told_and_closed_after_ten_seconds() {
    let bp = BackplaneProc::start().await;
    let gw = Gateway::start(&bp, &[]).await;
    let mut silent = gw.connect().await;
    // The deadline is 10 s from connecting; `within` allows 20.
    assert_eq!(
        next_json(&mut silent, "the answer to a page without an id").await,
        json!({"error": "no WebSocket handshake and id message within 10s"})
    );
    assert_eq!(
        next_close(&mut silent, "the close after no id").await,
        Some(CloseCode::Policy)
    );
}
