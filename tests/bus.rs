//! The backplane, the component client and the monitor through the real
//! executables, and interop with python-banyan 3.17.

use std::io::Write;
use std::process::{Command, Stdio};

use banyan_core::rmpv::Value;
use banyan_core::{envelope, ClientConfig, Message};

use crate::util::*;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

fn map(entries: Vec<(&str, Value)>) -> Value {
    Value::Map(
        entries
            .into_iter()
            .map(|(k, v)| (Value::from(k), v))
            .collect(),
    )
}

/// Values python-banyan must carry unchanged (no int map keys: python's
/// receiver refuses them, see `python_component_reaches_rust`).
fn interop_values() -> Vec<Value> {
    vec![
        Value::from("hello"),
        Value::from("héllo ✓ 日本語 🎉"),
        Value::from(""),
        Value::from(0),
        Value::from(-1),
        Value::from(127),
        Value::from(128),
        Value::from(-33),
        Value::from(65536),
        Value::from(i64::MIN),
        Value::from(i64::MAX),
        Value::from(u64::MAX),
        Value::F64(1.5),
        Value::F64(-1e300),
        Value::F64(f64::MIN_POSITIVE),
        Value::Boolean(true),
        Value::Boolean(false),
        Value::Nil,
        Value::Binary(vec![0, 1, 254, 255]),
        Value::Binary(vec![]),
        Value::Array(vec![]),
        map(vec![
            ("msg", Value::from(1)),
            (
                "nested",
                map(vec![(
                    "list",
                    Value::Array(vec![
                        Value::from(1),
                        map(vec![("deep", Value::Nil)]),
                        Value::from("x"),
                    ]),
                )]),
            ),
            ("empty", map(vec![])),
        ]),
        numpy_array(),
    ]
}

/// What msgpack-numpy sends for `numpy.array([1, 2, 3])`.
fn numpy_array() -> Value {
    let data: Vec<u8> = [1i64, 2, 3].iter().flat_map(|v| v.to_le_bytes()).collect();
    Value::Map(vec![
        (Value::Binary(b"nd".to_vec()), Value::Boolean(true)),
        (Value::Binary(b"type".to_vec()), Value::from("<i8")),
        (Value::Binary(b"kind".to_vec()), Value::Binary(vec![])),
        (
            Value::Binary(b"shape".to_vec()),
            Value::Array(vec![Value::from(3)]),
        ),
        (Value::Binary(b"data".to_vec()), Value::Binary(data)),
    ])
}

fn peer(bp: &BackplaneProc, mode: &str, args: &[&str]) -> Command {
    let mut command = Command::new(python());
    command
        .arg(root().join("tests/python/banyan_peer.py"))
        .arg(mode)
        .args(bp.flags())
        .args(args);
    command
}

#[tokio::test(flavor = "multi_thread")]
async fn publish_reaches_subscriber_across_processes() {
    let bp = BackplaneProc::start().await;
    // The echo example, a separate process, answers "ping" on "pong".
    let mut echo = Proc::spawn(
        "echo",
        Command::new(example("echo"))
            .args(bp.flags())
            .args(["ping", "pong"]),
    );
    echo.wait_for_text("READY").await;
    let (client, mut inbox) = bp.connect().await;
    client.subscribe("pong").await.expect("subscribed");
    for i in 0..10 {
        client
            .publish("ping", &map(vec![("msg", Value::from(i))]))
            .await
            .expect("published");
    }
    for i in 0..10 {
        let m = recv(&mut inbox, "an echoed message").await;
        assert_eq!(m.topic(), "pong");
        assert_eq!(
            m.value().expect("decodes"),
            map(vec![("msg", Value::from(i))])
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn subscriptions_are_prefixes_and_can_be_dropped() {
    let bp = BackplaneProc::start().await;
    let (sub, mut inbox) = bp.connect().await;
    sub.subscribe("to").await.expect("subscribed");
    sub.subscribe("marker").await.expect("subscribed");
    let (publisher, _) = bp.connect().await;
    for topic in ["to_mqtt", "from_x", "t", "to", "tox"] {
        publisher
            .publish(topic, &Value::from(topic))
            .await
            .expect("published");
    }
    for expected in ["to_mqtt", "to", "tox"] {
        assert_eq!(recv(&mut inbox, expected).await.topic(), expected);
    }
    assert_nothing_before_marker(&publisher, &mut inbox, "marker").await;

    sub.unsubscribe("to").await.expect("unsubscribed");
    within(
        "the bus to forget \"to\"",
        publisher.wait_for_no_subscriber("to_mqtt"),
    )
    .await
    .expect("client open");
    publisher
        .publish("to_mqtt", &Value::Nil)
        .await
        .expect("published");
    assert_nothing_before_marker(&publisher, &mut inbox, "marker").await;

    // Subscribing to everything, as the monitor does.
    sub.subscribe("").await.expect("subscribed");
    publisher
        .publish("anything", &Value::Nil)
        .await
        .expect("published");
    assert_eq!(recv(&mut inbox, "anything").await.topic(), "anything");
}

#[tokio::test(flavor = "multi_thread")]
async fn many_subscribers_each_get_everything_in_order() {
    let bp = BackplaneProc::start().await;
    let mut inboxes = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (client, inbox) = bp.connect().await;
        client.subscribe("data").await.expect("subscribed");
        clients.push(client);
        inboxes.push(inbox);
    }
    let (publisher, _) = bp.connect().await;
    for i in 0..500 {
        publisher
            .publish("data", &Value::from(i))
            .await
            .expect("published");
    }
    for inbox in &mut inboxes {
        for i in 0..500 {
            assert_eq!(
                recv(inbox, "message").await.value().expect("decodes"),
                Value::from(i)
            );
        }
    }
}

/// python-banyan's benchmark: 100,000 `{'msg': i}` from one publisher to one
/// subscriber; python loses about 10% of them, we lose none.
#[tokio::test(flavor = "multi_thread")]
async fn reference_benchmark_loses_nothing() {
    const N: i64 = 100_000;
    let bp = BackplaneProc::start().await;
    let (sub, mut inbox) = bp.connect().await;
    sub.subscribe("bench").await.expect("subscribed");
    let (publisher, _) = bp.connect().await;
    let sender = tokio::spawn(async move {
        for i in 0..N {
            publisher
                .publish("bench", &map(vec![("msg", Value::from(i))]))
                .await
                .expect("published");
        }
        publisher
    });
    for i in 0..N {
        let m = recv(&mut inbox, &format!("message {i} of {N}")).await;
        let value = m.value().expect("decodes");
        assert_eq!(
            value,
            map(vec![("msg", Value::from(i))]),
            "message {i} out of order or lost"
        );
    }
    let publisher = sender.await.expect("publisher task");
    publisher.close().await.expect("closed");
}

/// A subscriber that stops reading loses messages once the queues for it are
/// full; every other subscriber still gets everything, and the backplane says
/// so in its log.
#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_subscriber_hurts_nobody_else() {
    const N: usize = 4000;
    let mut bp = BackplaneProc::start_with(&["--subscriber-high-water-mark", "50"]).await;
    let small = ClientConfig {
        receive_high_water_mark: 50,
        queue_capacity: 50,
        ..bp.config()
    };
    let (stalled, _never_read) = within("stalled client", banyan_core::Client::connect(&small))
        .await
        .expect("connects");
    stalled.subscribe("big").await.expect("subscribed");
    let (fast, mut inbox) = bp.connect().await;
    fast.subscribe("big").await.expect("subscribed");
    let (publisher, _) = bp.connect().await;
    // 16 KiB each: 64 MiB in all, far beyond what socket buffers can hide.
    let payload = Value::Binary(vec![7; 16 * 1024]);
    let sender = tokio::spawn(async move {
        for i in 0..N {
            publisher
                .publish("big", &Value::Array(vec![Value::from(i), payload.clone()]))
                .await
                .expect("published");
        }
    });
    for i in 0..N {
        let value = recv(&mut inbox, &format!("message {i}"))
            .await
            .value()
            .expect("decodes");
        assert_eq!(value.as_array().map(|a| a[0].clone()), Some(Value::from(i)));
    }
    sender.await.expect("publisher task");
    bp.proc
        .expect_text("a subscriber is slower than its publishers")
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn monitor_prints_every_message_and_survives_bad_ones() {
    let bp = BackplaneProc::start().await;
    let mut monitor = Proc::spawn("monitor", Command::new(exe("monitor")).args(bp.flags()));
    monitor
        .wait_for_text("Monitor using Back Plane IP address: 127.0.0.1")
        .await;
    monitor.wait_for_text("*****").await;
    let (publisher, _) = bp.connect().await;
    within(
        "the monitor's subscription",
        publisher.wait_for_subscriber("x"),
    )
    .await
    .expect("open");

    publisher
        .publish(
            "to_arduino_gateway",
            &map(vec![
                ("command", Value::from("digital_write")),
                ("pin", Value::from(4)),
            ]),
        )
        .await
        .expect("published");
    publisher
        .publish_raw("broken", &b"\xc1\x01"[..])
        .await
        .expect("published");
    publisher
        .publish_raw("truncated", &b"\x82\xa1a"[..])
        .await
        .expect("published");
    publisher
        .publish("bin", &Value::Binary(vec![1, 2, 3]))
        .await
        .expect("published");
    publisher
        .publish("nan", &Value::F64(f64::NAN))
        .await
        .expect("published");

    // Not even Banyan messages: one frame, three frames.
    let context = zmq::Context::new();
    let raw = context.socket(zmq::PUB).expect("socket");
    raw.connect(&format!("tcp://127.0.0.1:{}", bp.publisher_port))
        .expect("connects");
    let (probe, mut probe_inbox) = bp.connect().await;
    probe.subscribe("raw-ready").await.expect("subscribed");
    // A PUB socket drops until it has the subscriptions: repeat until one arrives.
    for attempt in 0.. {
        assert!(attempt < 2000, "the raw socket never reached the backplane");
        raw.send_multipart([&b"raw-ready"[..], b"\xc0"], 0)
            .expect("sent");
        if tokio::time::timeout(std::time::Duration::from_millis(10), probe_inbox.recv())
            .await
            .is_ok()
        {
            break;
        }
    }
    raw.send(&b"one frame"[..], 0).expect("sent");
    raw.send_multipart([&b"three"[..], b"\xc0", b"\xc0"], 0)
        .expect("sent");
    publisher
        .publish("after", &Value::from("still running"))
        .await
        .expect("published");

    let lines = [
        r#"to_arduino_gateway {"command": "digital_write", "pin": 4}"#,
        "broken <not MessagePack: the payload is not valid MessagePack: reserved marker 0xc1 at byte 0> c101",
        "truncated <not MessagePack: the payload is not valid MessagePack: more items declared than bytes left at byte 0> 82a161",
        r#"bin {"$bin": "AQID"}"#,
        "nan NaN",
    ];
    for line in lines {
        monitor.wait_for(line, |l| l == line).await;
    }
    monitor
        .wait_for("the after line", |l| l == r#"after "still running""#)
        .await;
    monitor.expect_text("not a Banyan message").await;
    let out = monitor.output();
    assert!(
        !out.contains("one frame"),
        "a one-frame message was printed:\n{out}"
    );
    assert_eq!(
        monitor.stop(true).await,
        Some(0),
        "monitor exits cleanly on Ctrl-C"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn monitor_filters_topics() {
    let bp = BackplaneProc::start().await;
    let mut monitor = Proc::spawn(
        "monitor",
        Command::new(exe("monitor"))
            .args(bp.flags())
            .args(["-f", "keep,also"]),
    );
    monitor.wait_for_text("*****").await;
    monitor.wait_for_text("*****").await;
    let (publisher, _) = bp.connect().await;
    for topic in ["drop", "keep_me", "also", "end"] {
        publisher
            .publish(topic, &Value::Nil)
            .await
            .expect("published");
    }
    assert_eq!(monitor.next_line().await, "keep_me null");
    assert_eq!(monitor.next_line().await, "also null");
}

#[tokio::test(flavor = "multi_thread")]
async fn executables_without_a_backplane_host_one() {
    let (publisher_port, subscriber_port) = (free_port(), free_port());
    let ports = [
        "-p".to_owned(),
        publisher_port.to_string(),
        "-s".to_owned(),
        subscriber_port.to_string(),
    ];
    let mut monitor = Proc::spawn("monitor", Command::new(exe("monitor")).args(&ports));
    monitor
        .wait_for_text("No backplane was running: hosting one in this process (127.0.0.1 only)")
        .await;
    monitor.wait_for_text("*****").await;
    // A second component finds the hosted backplane instead of starting one.
    let mut echo = Proc::spawn(
        "echo",
        Command::new(example("echo")).args(&ports).args(["a", "b"]),
    );
    echo.wait_for_text("READY").await;
    let config = ClientConfig {
        publisher_port,
        subscriber_port,
        ..ClientConfig::default()
    };
    let (client, _) = within("connect", banyan_core::Client::connect(&config))
        .await
        .expect("connects");
    within("echo's subscription", client.wait_for_subscriber("a"))
        .await
        .expect("open");
    client
        .publish("a", &Value::from(1))
        .await
        .expect("published");
    monitor.wait_for("a 1", |l| l == "a 1").await;
    monitor.wait_for("b 1", |l| l == "b 1").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ports_held_on_another_address_are_reported() {
    // python's backplane binds the LAN address only; 127.0.0.2 stands in.
    let port = free_port();
    let _lan = std::net::TcpListener::bind(("127.0.0.2", port)).expect("bind 127.0.0.2");
    let mut monitor = Proc::spawn(
        "monitor",
        Command::new(exe("monitor")).args([
            "-p",
            &port.to_string(),
            "-s",
            &free_port().to_string(),
        ]),
    );
    assert_eq!(monitor.wait().await, Some(1));
    let out = monitor.output();
    assert!(
        out.contains("nothing answers on 127.0.0.1") && out.contains("-b ADDRESS"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn flags_help_errors_and_signals() {
    for name in ["backplane", "monitor"] {
        let out = Command::new(exe(name))
            .arg("--help")
            .output()
            .expect("runs");
        assert!(out.status.success());
        let help = String::from_utf8_lossy(&out.stdout);
        for flag in ["-p", "-s", "-n", "(default 43124)", "(default 43125)"] {
            assert!(help.contains(flag), "{name} --help lacks {flag}:\n{help}");
        }
        let out = Command::new(exe(name))
            .args(["-p", "not-a-port"])
            .output()
            .expect("runs");
        assert_eq!(out.status.code(), Some(2), "{name} with a bad flag");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{name}: one-line error, got {err}");
        assert!(err.contains("-p"), "{err}");
    }
    let out = Command::new(exe("monitor"))
        .args(["-m", "maybe"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));

    for interrupt in [true, false] {
        let mut bp = BackplaneProc::start_with(&["-t", "0.01", "-n", "Main"]).await;
        assert!(bp
            .proc
            .output()
            .contains("Main Backplane IP address: 127.0.0.1 (this machine only)"));
        assert_eq!(bp.proc.stop(interrupt).await, Some(0));
        assert!(
            bp.proc.output().contains("backplane stopped"),
            "{}",
            bp.proc.output()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn python_component_reaches_rust() {
    let bp = BackplaneProc::start().await;
    let (sub, mut inbox) = bp.connect().await;
    sub.subscribe("from_python").await.expect("subscribed");
    let mut values = interop_values();
    // Integer keys cross from python to Rust (not the other way).
    values.push(Value::Map(vec![(Value::from(1), Value::from("one"))]));
    let mut py = Proc::spawn(
        "python publisher",
        peer(&bp, "pub", &["--topic", "from_python"]).stdin(Stdio::piped()),
    );
    py.wait_for_text("READY").await;
    let stdin = py.stdin().expect("stdin piped");
    for value in &values {
        writeln!(stdin, "{}", hex(&envelope::encode(value))).expect("written");
    }
    py.close_stdin();
    for value in &values {
        let m = recv(&mut inbox, &format!("{value}")).await;
        assert_eq!(m.topic(), "from_python");
        assert_eq!(&m.value().expect("decodes"), value);
    }
    assert_eq!(py.wait().await, Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn rust_component_reaches_python() {
    let bp = BackplaneProc::start().await;
    let values = interop_values();
    let mut py = Proc::spawn(
        "python subscriber",
        &mut peer(
            &bp,
            "sub",
            &["--topic", "to_python", "--count", &values.len().to_string()],
        ),
    );
    py.wait_for_text("READY").await;
    let (publisher, _) = bp.connect().await;
    for value in &values {
        publisher
            .publish("to_python", value)
            .await
            .expect("published");
    }
    for value in &values {
        let line = py
            .wait_for("a received message", |l| l.starts_with("to_python\t"))
            .await;
        let got = envelope::decode(&unhex(line.split('\t').nth(1).expect("hex"))).expect("decodes");
        assert_eq!(&got, value);
    }
    assert_eq!(py.wait().await, Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn numpy_arrays_cross_both_ways() {
    let bp = BackplaneProc::start().await;
    let (sub, mut inbox) = bp.connect().await;
    sub.subscribe("np").await.expect("subscribed");
    let mut py = Proc::spawn(
        "python numpy publisher",
        peer(&bp, "pub-numpy", &["--topic", "np"]).stdin(Stdio::piped()),
    );
    py.wait_for_text("READY").await;
    py.close_stdin();
    assert_eq!(
        recv(&mut inbox, "numpy array")
            .await
            .value()
            .expect("decodes"),
        numpy_array()
    );
    let second = recv(&mut inbox, "second numpy array")
        .await
        .value()
        .expect("decodes");
    let shape = second.as_map().and_then(|m| {
        m.iter()
            .find(|(k, _)| k == &Value::Binary(b"shape".to_vec()))
    });
    assert_eq!(
        shape.map(|(_, v)| v.clone()),
        Some(Value::Array(vec![Value::from(2), Value::from(2)]))
    );

    let mut monitor = Proc::spawn(
        "monitor",
        Command::new(exe("monitor"))
            .args(bp.flags())
            .args(["-m", "True"]),
    );
    monitor.wait_for_text("*****").await;
    monitor.wait_for_text("*****").await;
    let mut py_sub = Proc::spawn(
        "python numpy subscriber",
        &mut peer(
            &bp,
            "sub",
            &["--topic", "np_rust", "--numpy", "--count", "1"],
        ),
    );
    py_sub.wait_for_text("READY").await;
    let (publisher, _) = bp.connect().await;
    publisher
        .publish("np_rust", &numpy_array())
        .await
        .expect("published");
    py_sub
        .wait_for("the array", |l| l == "np_rust\tndarray\t<i8\t[3]\t[1,2,3]")
        .await;
    monitor
        .wait_for("the array", |l| {
            l == "np_rust ndarray(<i8, shape [3]) [1, 2, 3]"
        })
        .await;
}

/// A Rust component on python-banyan's own backplane, in a private network
/// namespace where python's address discovery falls back to 127.0.0.1.
#[tokio::test(flavor = "multi_thread")]
async fn rust_component_works_through_python_backplane() {
    let values = interop_values();
    let mut scenario = Command::new(root().join("tests/python/netns.sh"));
    scenario
        .arg(python())
        .arg(root().join("tests/python/netns_scenario.py"))
        .args([
            "--peer",
            &format!("sub --topic pong --count {}", values.len()),
        ])
        .args(["--peer", "pub --topic ping"])
        .args(["--input", "-", "--cmd-ready", "READY", "--"])
        .arg(example("echo"))
        .args([
            "-b",
            "127.0.0.1",
            "-p",
            "{PUB}",
            "-s",
            "{SUB}",
            "ping",
            "pong",
        ])
        .arg(values.len().to_string())
        .stdin(Stdio::piped());
    let mut proc = Proc::spawn("netns scenario", &mut scenario);
    {
        let stdin = proc.stdin().expect("stdin piped");
        for value in &values {
            writeln!(stdin, "{}", hex(&envelope::encode(value))).expect("written");
        }
    }
    proc.close_stdin();
    for value in &values {
        let line = proc
            .wait_for("an echoed value", |l| l.starts_with("peer0\tpong\t"))
            .await;
        let got =
            envelope::decode(&unhex(line.rsplit('\t').next().expect("hex"))).expect("decodes");
        assert_eq!(&got, value);
    }
    assert_eq!(
        proc.wait().await,
        Some(0),
        "scenario output:\n{}",
        proc.output()
    );
}

#[test]
fn message_helpers_agree_with_the_wire() {
    let m = Message::new("t", &Value::from(1));
    assert_eq!(hex(m.payload()), "01");
    assert_eq!(unhex("c0"), vec![0xc0]);
}

/// CPU time (user + system) a process has used, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the command name, which is in parentheses: utime and
    // stime are the 12th and 13th of them.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

/// An idle component sleeps: its I/O thread waits in zmq_poll, it does not
/// spin.
#[tokio::test(flavor = "multi_thread")]
async fn idle_components_use_no_cpu() {
    let bp = BackplaneProc::start().await;
    let mut monitor = Proc::spawn("monitor", Command::new(exe("monitor")).args(bp.flags()));
    monitor.wait_for_text("*****").await;
    monitor.wait_for_text("*****").await;
    let before = cpu_ticks(monitor.pid());
    // Measuring idleness takes time passing; nothing is awaited here.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let used = cpu_ticks(monitor.pid()) - before;
    // A spinning thread would use about 100 ticks (a whole second).
    assert!(
        used < 20,
        "the idle monitor used {used} clock ticks in one second"
    );
}

/// Runs `tests/python/py_forms.py MODE` on `lines` and returns one output
/// line per input line.
async fn python_forms(mode: &str, lines: &[String]) -> Vec<String> {
    let mut py = Proc::spawn(
        &format!("py_forms.py {mode}"),
        Command::new(python())
            .arg(root().join("tests/python/py_forms.py"))
            .arg(mode)
            .stdin(Stdio::piped()),
    );
    {
        let stdin = py.stdin().expect("stdin piped");
        for line in lines {
            writeln!(stdin, "{line}").expect("written");
        }
    }
    py.close_stdin();
    let mut out = Vec::with_capacity(lines.len());
    for i in 0..lines.len() {
        out.push(
            py.wait_for(&format!("python's answer {i} of {}", lines.len()), |l| {
                !l.starts_with("stderr: ")
            })
            .await,
        );
    }
    assert_eq!(py.wait().await, Some(0), "py_forms.py:\n{}", py.output());
    out
}

/// Deterministic doubles from every part of the range: random bit patterns
/// and random decimals, the kinds of values where float printing differs.
fn sample_floats(n: usize) -> Vec<f64> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..n)
        .map(|i| {
            let r = next();
            match i % 3 {
                0 => f64::from_bits(r),
                // short decimals such as 0.3 or 12.75, with a scale
                1 => (r % 100_000) as f64 / 10f64.powi((r >> 40) as i32 % 12),
                _ => f64::from(f32::from_bits(r as u32)),
            }
        })
        .collect()
}

/// Every kind of value python's `json.dumps` can write, as python decodes it
/// from MessagePack.
fn python_json_values() -> Vec<Value> {
    let all_latin1: String = (0u32..0x100).filter_map(char::from_u32).collect();
    let mut values = vec![
        Value::Nil,
        Value::Boolean(true),
        Value::Boolean(false),
        Value::from(0),
        Value::from(-1),
        Value::from(i64::MIN),
        Value::from(i64::MAX),
        Value::from(u64::MAX),
        Value::from(all_latin1),
        Value::from(
            "\u{2028}\u{2029}\u{d7ff}\u{e000}\u{fffd}\u{fffe}\u{ffff}\u{10000}\u{1f389}\u{10ffff}",
        ),
        Value::from("quote \" backslash \\ slash / tab \t é ✓ 日本語 🎉"),
        Value::from(""),
        Value::Array(vec![]),
        Value::Map(vec![]),
        map(vec![
            ("command", Value::from("digital_write")),
            ("pin", Value::from(4)),
            (
                "nested",
                map(vec![(
                    "list",
                    Value::Array(vec![Value::from(1), Value::F64(2.5), Value::Nil]),
                )]),
            ),
        ]),
        Value::Map(vec![
            (Value::from(1), Value::from("int")),
            (Value::from(-7), Value::from("negative")),
            (Value::F64(1.5), Value::from("float")),
            (Value::F64(1e16), Value::from("big float")),
            (Value::F64(f64::NAN), Value::from("nan")),
            (Value::F64(f64::INFINITY), Value::from("inf")),
            (Value::F64(f64::NEG_INFINITY), Value::from("-inf")),
            (Value::Boolean(true), Value::from("true")),
            (Value::Boolean(false), Value::from("false")),
            (Value::Nil, Value::from("nil")),
            (Value::F32(0.1), Value::from("f32")),
        ]),
        // repeated keys, and keys python takes for equal (1 == 1.0 == True)
        Value::Map(vec![
            (Value::from("a"), Value::from(1)),
            (Value::from(2), Value::from("two")),
            (Value::from("a"), Value::from(3)),
            (Value::F64(2.0), Value::from("two as float")),
            (Value::from(1), Value::from("one")),
            (Value::Boolean(true), Value::from("true")),
            (Value::F64(-0.0), Value::from("minus zero")),
            (Value::from(0), Value::from("zero")),
        ]),
        Value::Array(vec![
            Value::F64(f64::NAN),
            Value::F64(f64::INFINITY),
            Value::F64(f64::NEG_INFINITY),
            Value::F32(f32::NAN),
            Value::F32(f32::NEG_INFINITY),
        ]),
    ];
    // each control character and DEL on its own, where escapes differ
    values.extend(
        (0u32..0x20)
            .chain([0x7f, 0x80, 0x9f, 0xa0, 0xad])
            .map(|c| Value::from(char::from_u32(c).expect("a char").to_string())),
    );
    for f in [
        0.0,
        -0.0,
        1.0,
        -1.0,
        0.1,
        0.5,
        1e-5,
        1e-4,
        1.5e-4,
        1e-7,
        1e15,
        1e16,
        1e17,
        1e22,
        1e23,
        5e-324,
        2.2250738585072014e-308,
        1.7976931348623157e308,
        -1.7976931348623157e308,
        123456789012345680.0,
        100000000000000.0,
        9007199254740993.0,
        0.30000000000000004,
        1234.5678,
        1e300,
        3.141592653589793,
    ] {
        values.push(Value::F64(f));
    }
    for f in [0.1f32, 1e-45, 3.402_823_5e38, 16_777_217.0, 0.3, 1e10, -2.5] {
        values.push(Value::F32(f));
    }
    values.extend(sample_floats(3000).into_iter().map(Value::F64));
    values
}

#[tokio::test(flavor = "multi_thread")]
async fn json_is_byte_identical_to_python_json_dumps() {
    let values = python_json_values();
    let lines: Vec<String> = values.iter().map(|v| hex(&envelope::encode(v))).collect();
    let python = python_forms("dumps", &lines).await;
    let mut differ = Vec::new();
    for (value, theirs) in values.iter().zip(&python) {
        let ours = banyan_core::json::to_json(value).expect("every value here has a JSON form");
        assert_eq!(
            banyan_core::json::to_display(value),
            ours,
            "the monitor's JSON form is the gateways' where that exists"
        );
        if &ours != theirs {
            differ.push(format!("{value:?}\n  ours:   {ours}\n  python: {theirs}"));
        }
    }
    assert!(
        differ.is_empty(),
        "{} of {} values differ from python's json.dumps:\n{}",
        differ.len(),
        values.len(),
        differ.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn json_reads_what_python_json_loads_reads() {
    let mut texts: Vec<String> = [
        r#"{"command": "digital_write", "pin": 4, "value": 1}"#,
        r#"{"a": 1, "b": [true, false, null], "a": 2}"#,
        "[NaN, Infinity, -Infinity, -0, -0.0, 0, 1.0, 1E2, 1e-2, 2.5e+3, 1e400, -1e400, 1e-400]",
        "18446744073709551615",
        "-9223372036854775808",
        r#""\u00e9\u00E9\ud83c\udf89\/\b\f\n\r\t\"\\""#,
        "\"é🎉\u{7f}\"",
        " \t\n\r[ 1 , { } , [ ] ] \n",
        "{}",
        "[]",
        "\"\"",
        // python refuses these
        "",
        "{",
        "{\"id\"}",
        "[1,]",
        "[1 2]",
        "'x'",
        "{\"a\":1} trailing",
        "[\n  1.]",
        "01",
        "\"é\tx\"",
        "\"abc",
        "\"\\x\"",
        "\"\\u12\"",
        "\"\\u12zz\"",
        "\u{feff}1",
        "\"\\",
        "-",
        "-Inf",
        "nan",
        "[1,",
        "{\"a\" 1}",
        "{\"a\":1,}",
        "nul",
        "1e",
        "1.5e",
        "{\"a\":",
        "[1]]",
        "  ",
        "{\"a\":1 \"b\":2}",
        "{1: 2}",
        ".5",
        "+1",
        "0x10",
    ]
    .iter()
    .map(|t| t.to_string())
    .collect();
    for f in sample_floats(600) {
        texts.push(format!("{f:e}"));
        texts.push(format!("{f}"));
    }
    let lines: Vec<String> = texts
        .iter()
        .map(|t| serde_json::to_string(t).expect("a JSON string"))
        .collect();
    let python = python_forms("loads", &lines).await;
    let mut differ = Vec::new();
    for (text, theirs) in texts.iter().zip(&python) {
        let ours = match banyan_core::json::from_json(text) {
            Ok(value) => hex(&envelope::encode(&value)),
            Err(e) => format!("ERROR {e}"),
        };
        let expected = match theirs.strip_prefix("ERROR JSONDecodeError: ") {
            Some(message) => format!("ERROR invalid JSON: {message}"),
            None => theirs.clone(),
        };
        // An integer beyond i64/u64: python's int does not pack
        // (OverflowError); ours is a float64, as JavaScript reads it.
        let big_integer = theirs == "ERROR OverflowError" && ours.starts_with("cb");
        if ours != expected && !big_integer {
            differ.push(format!("{text:?}\n  ours:   {ours}\n  python: {theirs}"));
        }
    }
    assert!(
        differ.is_empty(),
        "{} of {} texts read differently from python's json.loads:\n{}",
        differ.len(),
        texts.len(),
        differ.join("\n")
    );
}
