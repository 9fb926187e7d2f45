//! The examples of README.md and docs/*.md that claim an output, run as
//! written and compared with what they claim: the TCP framing bytes against
//! the real `tgw`, the monitor lines against the real `monitor`, the TLS
//! set-up of docs/mqtt-gateway.md against a real mosquitto, and README's
//! component against `examples/pong.rs`, which `cargo test` compiles.
//!
//! The claims are read from the documents themselves, so a document that
//! changes its example without the code, or the reverse, fails here.

use std::path::Path;
use std::process::Command;

use banyan_core::rmpv::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::mqtt::broker::{mosquitto_exe, temp_dir, user_name};
use crate::util::*;

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The text with every run of whitespace made one space, as Markdown shows
/// prose (a code span may be wrapped over two lines).
fn prose(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The first `count` code spans (`` `...` ``) after `marker` in `text`.
fn spans_after<'a>(text: &'a str, marker: &str, count: usize) -> Vec<&'a str> {
    let start = text
        .find(marker)
        .unwrap_or_else(|| panic!("the docs no longer say {marker:?}"))
        + marker.len();
    let spans: Vec<&str> = text[start..]
        .split('`')
        .skip(1)
        .step_by(2)
        .take(count)
        .collect();
    assert_eq!(spans.len(), count, "{count} code spans after {marker:?}");
    spans
}

/// The `n`th fenced code block (from 0) after the first line that starts
/// with `marker`.
fn block_after(text: &str, marker: &str, n: usize) -> String {
    let start = text
        .lines()
        .position(|line| line.starts_with(marker))
        .unwrap_or_else(|| panic!("no line starting {marker:?}"));
    let mut blocks = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in text.lines().skip(start + 1) {
        match (&mut current, line.starts_with("```")) {
            (None, true) => current = Some(Vec::new()),
            (Some(_), true) => blocks.push(current.take().unwrap_or_default().join("\n")),
            (Some(lines), false) => lines.push(line),
            (None, false) => {}
        }
        if blocks.len() > n {
            break;
        }
    }
    blocks
        .into_iter()
        .nth(n)
        .unwrap_or_else(|| panic!("no code block {n} after {marker:?}"))
}

/// The bytes written as hex at the start of each line of `listing` (`81
/// a9 70 ...`), up to the first word that is not a byte (a comment).
fn hex_listing(listing: &str) -> Vec<u8> {
    listing
        .lines()
        .flat_map(|line| {
            line.split_whitespace()
                .map_while(|word| (word.len() == 2).then(|| u8::from_str_radix(word, 16).ok())?)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn hex_span(span: &str) -> Vec<u8> {
    let bytes = hex_listing(span);
    assert_eq!(
        bytes.len(),
        span.split_whitespace().count(),
        "hex: {span:?}"
    );
    bytes
}

#[tokio::test(flavor = "multi_thread")]
async fn tcp_framing_examples_are_what_tgw_writes_and_publishes() {
    let doc = read("docs/tcp-gateway.md");
    let text = prose(&doc);
    let [json, topic] = spans_after(&text, "Example: the bus message", 2)[..] else {
        unreachable!()
    };
    let value = banyan_core::json::from_json(json).expect("the example is JSON");
    let payload = hex_listing(&block_after(&doc, "Example: the bus message", 0));
    assert_eq!(
        banyan_core::envelope::encode(&value),
        payload,
        "the documented MessagePack of {json}"
    );
    let frame = hex_listing(&block_after(&doc, "Example: the bus message", 1));
    let spans = spans_after(&text, "When the device sends", 6);
    assert_eq!(
        (spans[2], spans[4]),
        ("from_pico", "monitor"),
        "the sentence on the device's frames changed"
    );
    let (sent, published, shown) = (spans[0], spans[3], spans[5]);

    let bp = BackplaneProc::start().await;
    let device = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a device port");
    let port = device.local_addr().expect("its address").port().to_string();
    let _tgw = Proc::spawn(
        "tgw",
        Command::new(exe("tgw")).args(bp.flags()).args([
            "-a",
            "127.0.0.1",
            "-n",
            &port,
            "-g",
            topic,
        ]),
    );
    let mut monitor = Proc::spawn(
        "monitor",
        Command::new(exe("monitor"))
            .args(bp.flags())
            .args(["-f", "from_pico"]),
    );
    // The banner comes once the monitor's subscription is routed.
    monitor.wait_for_text("*****").await;
    monitor.wait_for_text("*****").await;
    let (app, mut inbox) = bp.connect().await;
    app.subscribe("from_pico").await.expect("subscribed");
    let (mut socket, _) = within("tgw to connect to the device", device.accept())
        .await
        .expect("accepted");
    within("tgw's subscription", app.wait_for_subscriber(topic))
        .await
        .expect("open");

    app.publish(topic, &value).await.expect("published");
    let mut written = vec![0; frame.len()];
    within(
        "the documented frame at the device",
        socket.read_exact(&mut written),
    )
    .await
    .expect("read");
    assert_eq!(written, frame, "what tgw writes for {json} on {topic}");

    socket.write_all(&hex_span(sent)).await.expect("written");
    let message = recv(&mut inbox, "the device's frame on the bus").await;
    assert_eq!(message.topic(), "from_pico");
    assert_eq!(&message.payload()[..], &hex_span(published)[..]);
    assert_eq!(monitor.next_line().await, shown);
}

#[tokio::test(flavor = "multi_thread")]
async fn monitor_output_examples_are_what_monitor_prints() {
    let readme = prose(&read("README.md"));
    let python = spans_after(&readme, "python's `repr` of the payload (", 5);
    let json = spans_after(
        &readme,
        "`--format json` prints the JSON the gateways send instead (",
        1,
    );
    let tcp = read("docs/tcp-gateway.md");
    let pico = tcp
        .lines()
        .find_map(|line| line.strip_prefix("monitor -f from_pico"))
        .and_then(|rest| rest.split_once("# "))
        .and_then(|(_, comment)| comment.split_once(", then"))
        .map(|(line, _)| line)
        .expect("the tcp gateway's monitor example");

    let command =
        banyan_core::json::from_json(r#"{"command": "digital_write", "pin": 4}"#).expect("json");
    // (topic, payload, the line the docs claim, with `--format json`?)
    let cases = [
        (
            "to_arduino_gateway",
            command.clone(),
            python[0].to_owned(),
            false,
        ),
        ("t", Value::Nil, format!("t {}", python[1]), false),
        ("t", Value::Boolean(true), format!("t {}", python[2]), false),
        (
            "t",
            Value::Binary(vec![0]),
            format!("t {}", python[3]),
            false,
        ),
        ("t", Value::from("bare"), "t bare".to_owned(), false),
        (
            "from_pico",
            banyan_core::json::from_json(r#"{"pico_data": 1}"#).expect("json"),
            pico.trim().to_owned(),
            false,
        ),
        (
            "to_arduino_gateway",
            command,
            format!("to_arduino_gateway {}", json[0]),
            true,
        ),
    ];
    assert_eq!(
        python[4], "-m True",
        "README's list of python forms changed"
    );

    let bp = BackplaneProc::start().await;
    let mut plain = Proc::spawn("monitor", Command::new(exe("monitor")).args(bp.flags()));
    let mut as_json = Proc::spawn(
        "monitor --format json",
        Command::new(exe("monitor"))
            .args(bp.flags())
            .args(["--format", "json"]),
    );
    for monitor in [&mut plain, &mut as_json] {
        monitor.wait_for_text("*****").await;
        monitor.wait_for_text("*****").await;
    }
    // Both monitors' subscriptions are routed (their banners come after):
    // a publisher that connects now reaches them.
    let (publisher, _) = bp.connect().await;
    for (topic, value, _, _) in &cases {
        publisher.publish(topic, value).await.expect("published");
    }
    for (_, _, claimed, json) in &cases {
        if *json {
            continue;
        }
        assert_eq!(&plain.next_line().await, claimed);
    }
    for (_, _, claimed, json) in cases.iter() {
        let line = as_json.next_line().await;
        if *json {
            assert_eq!(&line, claimed);
        }
    }
}

fn sh(dir: &Path, script: &str) {
    let output = Command::new("sh")
        .args(["-ec", script])
        .current_dir(dir)
        .output()
        .expect("sh runs");
    assert!(
        output.status.success(),
        "{script}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_tls_example_runs_with_a_real_mosquitto() {
    let block = block_after(&read("docs/mqtt-gateway.md"), "## TLS", 0);
    let dir = temp_dir("docs-tls");
    let (script, rest) = block
        .split_once("# mosquitto.conf")
        .expect("the block has a mosquitto.conf");
    sh(&dir, script);
    let (conf, commands) = rest
        .split_once("\n\n")
        .expect("a blank line after the config");

    let port = free_port().to_string();
    let user = user_name();
    let mut settings = Vec::new();
    for line in conf.lines().skip(1) {
        if let Some(made) = line.strip_prefix("# made with: ") {
            sh(&dir, made);
        } else if !line.starts_with('#') {
            settings.push(
                line.replace("listener 8883", &format!("listener {port}"))
                    .replace("user USER", &format!("user {user}")),
            );
        }
    }
    std::fs::write(dir.join("mosquitto.conf"), settings.join("\n") + "\n").expect("written");

    let mut lines = commands.lines();
    assert_eq!(lines.next(), Some("mosquitto -c mosquitto.conf &"));
    let mut broker = Proc::spawn(
        "mosquitto",
        Command::new(mosquitto_exe())
            .args(["-c", "mosquitto.conf"])
            .current_dir(&dir),
    );
    broker.wait_for_text(" running").await;

    let line = lines.next().expect("the mqttgw line");
    let mut words = line.split_whitespace();
    let mut command = Command::new(exe("mqttgw"));
    for word in words.by_ref() {
        match word.split_once('=') {
            Some((name, value)) => command.env(name, value),
            None => {
                assert_eq!(word, "mqttgw");
                break;
            }
        };
    }
    let bp = BackplaneProc::start().await;
    command
        .args(words.map(|word| if word == "8883" { port.as_str() } else { word }))
        .args(bp.flags())
        .current_dir(&dir);
    let mut gateway = Proc::spawn("mqttgw", &mut command);
    gateway
        .wait_for_text(&format!("connected to the MQTT broker 127.0.0.1:{port}"))
        .await;
    drop(gateway);
    drop(broker);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_readme_component_is_examples_pong_rs() {
    let readme = read("README.md");
    let start = readme.find("```rust\n").expect("README has a rust block") + 8;
    let code = &readme[start..];
    let code = &code[..code.find("```").expect("the block ends")];
    let example = read("examples/pong.rs");
    assert!(
        example.ends_with(code),
        "examples/pong.rs must end with README's rust block, which is compiled as it"
    );
}
