//! Metrics: each executable's Prometheus endpoint, scraped while traffic
//! and drops happen.

use std::process::Command;

use banyan_core::rmpv::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::util::*;

/// Sends `request` to `address` and reads the whole response.
async fn http(address: &str, request: &[u8]) -> String {
    let mut stream = within(
        "connecting to the metrics endpoint",
        TcpStream::connect(address),
    )
    .await
    .expect("connect");
    stream.write_all(request).await.expect("request");
    let mut response = String::new();
    within("the HTTP response", stream.read_to_string(&mut response))
        .await
        .expect("response");
    response
}

/// `GET /metrics` from `address`: the body.
async fn scrape(address: &str) -> String {
    let response = http(address, b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n").await;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not HTTP: {response:?}"));
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    body.to_owned()
}

/// The value of the sample `sample` (a name with its labels) in `body`.
fn sample(body: &str, sample: &str) -> Option<f64> {
    body.lines()
        .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' '))
        .and_then(|value| value.parse().ok())
}

/// Scrapes until `sample` reaches `expected` (counters move as the
/// gateway's tasks run); each scrape is an answer, the loop is bounded.
async fn scrape_until(address: &str, name: &str, expected: f64) -> String {
    let mut body = String::new();
    for _ in 0..200 {
        body = scrape(address).await;
        if sample(&body, name) == Some(expected) {
            return body;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("{name} never reached {expected}; last scrape:\n{body}");
}

/// Publishes `0..count` on `topic` once the gateway has subscribed to it;
/// returns the publishing connection.
async fn publish_numbers(bp: &BackplaneProc, topic: &str, count: i64) -> banyan_core::Client {
    let (client, _) = bp.connect().await;
    within(
        "the gateway's subscription",
        client.wait_for_subscriber(topic),
    )
    .await
    .expect("subscribed");
    for n in 0..count {
        client
            .publish(topic, &Value::from(n))
            .await
            .expect("published");
    }
    client
}

/// Starts `name` with `--metrics 127.0.0.1:0`; returns it and the address
/// from its start-up lines.
async fn with_metrics(name: &str, command: &mut Command) -> (Proc, String) {
    let mut proc = Proc::spawn(name, command.args(["--metrics", "127.0.0.1:0"]));
    let line = proc.wait_for_text("Metrics on http://").await;
    let address = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_owned();
    (proc, address)
}

#[tokio::test(flavor = "multi_thread")]
async fn tgw_counts_what_it_sends_and_what_it_drops_while_the_device_is_away() {
    let bp = BackplaneProc::start().await;
    let device = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = device.local_addr().expect("address").port().to_string();
    // The device is not listening at first: close the listener, keep the port.
    drop(device);
    let (_gateway, address) = with_metrics(
        "tgw",
        Command::new(exe("tgw")).args(bp.flags()).args([
            "-a",
            "127.0.0.1",
            "-n",
            &port,
            "-g",
            "to_dev",
            "--queue",
            "3",
        ]),
    )
    .await;
    let body = scrape(&address).await;
    for family in [
        "# TYPE banyan_tgw_to_device_messages_total counter",
        "# TYPE banyan_tgw_dropped_messages_total counter",
        "# TYPE banyan_tgw_queue_messages gauge",
        "# TYPE banyan_tgw_peers_connected gauge",
    ] {
        assert!(body.contains(family), "{family} missing:\n{body}");
    }
    assert_eq!(sample(&body, "banyan_tgw_peers_connected"), Some(0.0));
    let _client = publish_numbers(&bp, "to_dev", 5).await;
    // A queue of 3 while the device is away: 2 dropped, 3 waiting.
    let body = scrape_until(
        &address,
        "banyan_tgw_dropped_messages_total{reason=\"away\"}",
        2.0,
    )
    .await;
    assert_eq!(
        sample(&body, "banyan_tgw_queue_messages"),
        Some(3.0),
        "{body}"
    );
    assert_eq!(
        sample(
            &body,
            "banyan_tgw_dropped_messages_total{reason=\"stalled\"}"
        ),
        Some(0.0)
    );
    // The device comes: the queue is delivered and counted.
    let device = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}"))
        .await
        .expect("the device port again");
    let (_connection, _) = within("the gateway to connect", device.accept())
        .await
        .expect("accept");
    let body = scrape_until(&address, "banyan_tgw_to_device_messages_total", 3.0).await;
    assert_eq!(
        sample(&body, "banyan_tgw_peers_connected"),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        sample(&body, "banyan_tgw_to_device_bytes_total"),
        Some(3.0),
        "{body}"
    );
    assert_eq!(
        sample(&body, "banyan_tgw_connections_total"),
        Some(1.0),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn mqttgw_counts_what_it_drops_while_the_broker_is_away_and_serves_only_metrics() {
    let bp = BackplaneProc::start().await;
    // Nothing listens on port 9 (discard) of 127.0.0.1: the broker is away.
    let (_gateway, address) = with_metrics(
        "mqttgw",
        Command::new(exe("mqttgw")).args(bp.flags()).args([
            "-a",
            "127.0.0.1",
            "-d",
            "9",
            "--queue",
            "2",
        ]),
    )
    .await;
    let _client = publish_numbers(&bp, "to_mqtt", 5).await;
    let body = scrape_until(
        &address,
        "banyan_mqttgw_dropped_messages_total{reason=\"away\"}",
        3.0,
    )
    .await;
    assert_eq!(
        sample(&body, "banyan_mqttgw_queue_messages"),
        Some(2.0),
        "{body}"
    );
    assert_eq!(
        sample(&body, "banyan_mqttgw_connections_total"),
        Some(0.0),
        "{body}"
    );
    // Only GET /metrics is served.
    let response = http(&address, b"GET / HTTP/1.1\r\n\r\n").await;
    assert!(response.starts_with("HTTP/1.1 404"), "{response}");
}

/// Scrapes until `done` accepts the body (counters move as the process's
/// threads run), doing `each` before every scrape; bounded.
async fn scrape_while(
    address: &str,
    what: &str,
    mut each: impl AsyncFnMut(),
    done: impl Fn(&str) -> bool,
) -> String {
    let mut body = String::new();
    for _ in 0..200 {
        each().await;
        body = scrape(address).await;
        if done(&body) {
            return body;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("{what} never happened; last scrape:\n{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn wsgw_serves_metrics_on_its_own_port_and_counts_a_stalled_pages_drops() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message as WsMessage;

    let bp = BackplaneProc::start().await;
    let mut gateway = Proc::spawn(
        "wsgw",
        Command::new(exe("wsgw")).args(bp.flags()).args([
            "-w",
            "0",
            "--queue",
            "4",
            "--stall-grace",
            "100ms",
        ]),
    );
    let line = gateway.wait_for_text("WebSocket server on ws://").await;
    let address = line
        .split("ws://")
        .nth(1)
        .map(str::trim)
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_owned();
    let body = scrape(&address).await;
    for family in [
        "# TYPE banyan_wsgw_pages_total counter",
        "# TYPE banyan_wsgw_to_pages_messages_total counter",
        "# TYPE banyan_wsgw_dropped_messages_total counter",
        "# TYPE banyan_wsgw_queue_messages gauge",
        "# TYPE banyan_wsgw_peers_stalled gauge",
    ] {
        assert!(body.contains(family), "{family} missing:\n{body}");
    }
    assert_eq!(sample(&body, "banyan_wsgw_peers_connected"), Some(0.0));

    // A page that joins, sends one command, and then reads nothing.
    let (device, mut commands) = bp.connect().await;
    within("a subscription", device.subscribe("to_stall"))
        .await
        .expect("subscribed");
    let mut page = within("the page to connect", ws_connect(&address))
        .await
        .expect("the page connects");
    for text in [r#"{"id": "to_stall"}"#, r#"{"command": "hello"}"#] {
        within("the page's message", page.send(WsMessage::text(text)))
            .await
            .expect("sent");
    }
    recv(&mut commands, "the page's command").await;
    let body = scrape_until(&address, "banyan_wsgw_to_bus_messages_total", 1.0).await;
    assert_eq!(
        sample(&body, "banyan_wsgw_pages_total"),
        Some(1.0),
        "{body}"
    );
    within(
        "the gateway's subscription",
        device.wait_for_subscriber("from_stall"),
    )
    .await
    .expect("subscribed");

    // 16 KiB messages until its socket, then its queue of 4, are full and
    // the grace has passed: its oldest are dropped, and counted.
    let pad = Value::from("x".repeat(16 * 1024));
    let stalled = "banyan_wsgw_dropped_messages_total{reason=\"stalled\"}";
    let body = scrape_while(
        &address,
        "drops for the stalled page",
        async || {
            for _ in 0..50 {
                within("publishing", device.publish("from_stall", &pad))
                    .await
                    .expect("published");
            }
        },
        |body| sample(body, stalled).is_some_and(|n| n > 0.0),
    )
    .await;
    assert_eq!(
        sample(&body, "banyan_wsgw_peers_stalled"),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        sample(&body, "banyan_wsgw_peers_connected"),
        Some(1.0),
        "{body}"
    );
    gateway.expect_text("dropping its oldest messages").await;
    drop(page);
}

#[tokio::test(flavor = "multi_thread")]
async fn backplane_counts_what_it_forwards_and_the_topics_subscribed() {
    let proc = Proc::spawn(
        "backplane",
        Command::new(exe("backplane")).args([
            "-a",
            "127.0.0.1",
            "-p",
            "0",
            "-s",
            "0",
            "--metrics",
            "127.0.0.1:0",
        ]),
    );
    // The banner first, then where the metrics are.
    let mut bp = BackplaneProc::from_banner(proc).await;
    let line = bp.proc.wait_for_text("Metrics on http://").await;
    let address = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_owned();
    let body = scrape(&address).await;
    for family in [
        "# TYPE banyan_backplane_forwarded_messages_total counter",
        "# TYPE banyan_backplane_forwarded_bytes_total counter",
        "# TYPE banyan_backplane_overflows_total counter",
        "# TYPE banyan_backplane_subscribed_topics gauge",
    ] {
        assert!(body.contains(family), "{family} missing:\n{body}");
    }
    assert_eq!(
        sample(&body, "banyan_backplane_forwarded_messages_total"),
        Some(0.0),
        "{body}"
    );

    let (subscriber, mut messages) = bp.connect().await;
    within("a subscription", subscriber.subscribe("metered"))
        .await
        .expect("subscribed");
    scrape_until(&address, "banyan_backplane_subscribed_topics", 1.0).await;
    let (publisher, _) = bp.connect().await;
    const MESSAGES: u64 = 1000;
    let payload = banyan_core::envelope::encode(&Value::from("a payload"));
    for _ in 0..MESSAGES {
        publisher
            .publish_raw("metered", payload.clone())
            .await
            .expect("published");
    }
    for _ in 0..MESSAGES {
        recv(&mut messages, "a forwarded message").await;
    }
    let body = scrape_until(
        &address,
        "banyan_backplane_forwarded_messages_total",
        MESSAGES as f64,
    )
    .await;
    assert_eq!(
        sample(&body, "banyan_backplane_forwarded_bytes_total"),
        Some((MESSAGES as usize * ("metered".len() + payload.len())) as f64),
        "{body}"
    );
    assert_eq!(
        sample(&body, "banyan_backplane_overflows_total"),
        Some(0.0),
        "{body}"
    );
    subscriber
        .unsubscribe("metered")
        .await
        .expect("unsubscribed");
    scrape_until(&address, "banyan_backplane_subscribed_topics", 0.0).await;
}
