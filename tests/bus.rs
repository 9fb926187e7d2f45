//! The backplane, the component client and the monitor through the real
//! executables, and interop with python-banyan 3.17.

use std::io::Write;
use std::process::{Command, Stdio};

use banyan_core::rmpv::Value;
use banyan_core::{envelope, ClientConfig, Message};

use crate::util::*;

mod hosting;
mod lan;
mod restart;

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
    // The publisher drops at source what nobody wants: it must have heard
    // of the new subscription first.
    within(
        "the publisher to learn of the subscription",
        publisher.wait_for_subscriber("anything"),
    )
    .await
    .expect("client open");
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

    // python-banyan's monitor's text (the default format)
    let lines = [
        "to_arduino_gateway {'command': 'digital_write', 'pin': 4}",
        "broken <not MessagePack: the payload is not valid MessagePack: reserved marker 0xc1 at byte 0> c101",
        "truncated <not MessagePack: the payload is not valid MessagePack: more items declared than bytes left at byte 0> 82a161",
        r"bin b'\x01\x02\x03'",
        "nan nan",
    ];
    for line in lines {
        monitor.wait_for(line, |l| l == line).await;
    }
    monitor
        .wait_for("the after line", |l| l == "after still running")
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
    assert_eq!(monitor.next_line().await, "keep_me None");
    assert_eq!(monitor.next_line().await, "also None");
}

#[tokio::test(flavor = "multi_thread")]
async fn executables_without_a_backplane_start_one() {
    let (publisher_port, subscriber_port) = (free_port(), free_port());
    let ports = [
        "-p".to_owned(),
        publisher_port.to_string(),
        "-s".to_owned(),
        subscriber_port.to_string(),
    ];
    let mut monitor = Proc::spawn("monitor", Command::new(exe("monitor")).args(&ports));
    // The `backplane` beside the monitor, as a process of its own.
    let _backplane = StartedBy::from_line(
        &monitor
            .wait_for_text("No backplane was running: started one as process")
            .await,
    );
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

    // Once no component is left, the on-demand backplane stops by itself,
    // 5 s later; it logs to the monitor's stderr, which it inherited.
    client.close().await.expect("closed");
    echo.stop(true).await;
    assert_eq!(monitor.stop(true).await, Some(0), "{}", monitor.output());
    monitor
        .wait_for_text("no component has been connected for 5s: the on-demand backplane stops")
        .await;
    monitor.wait_for_text("backplane stopped").await;
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
            .args(["-m", "True", "--format", "json"]),
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

/// [`python_forms`] of the MessagePack encodings of `values`, as hex.
async fn python_forms_of(mode: &str, values: &[Value]) -> Vec<String> {
    let lines: Vec<String> = values.iter().map(|v| hex(&envelope::encode(v))).collect();
    python_forms(mode, &lines).await
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
        std::f64::consts::PI,
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
    let python = python_forms_of("dumps", &values).await;
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

/// A msgpack-numpy array as python's `numpy=True` components send it.
fn np_array(dtype: &str, shape: &[u64], data: Vec<u8>) -> Value {
    Value::Map(vec![
        (Value::Binary(b"nd".to_vec()), Value::Boolean(true)),
        (Value::Binary(b"type".to_vec()), Value::from(dtype)),
        (Value::Binary(b"kind".to_vec()), Value::Binary(vec![])),
        (
            Value::Binary(b"shape".to_vec()),
            Value::Array(shape.iter().map(|&d| Value::from(d)).collect()),
        ),
        (Value::Binary(b"data".to_vec()), Value::Binary(data)),
    ])
}

/// A msgpack-numpy scalar (`numpy.int64(5)` and the like).
fn np_scalar(dtype: &str, data: Vec<u8>) -> Value {
    Value::Map(vec![
        (Value::Binary(b"nd".to_vec()), Value::Boolean(false)),
        (Value::Binary(b"type".to_vec()), Value::from(dtype)),
        (Value::Binary(b"data".to_vec()), Value::Binary(data)),
    ])
}

fn le_f64(values: &[f64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn le_f32(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn le_i64(values: &[i64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Arrays of every dtype the monitor decodes, in the shapes and value
/// ranges where numpy's layout changes.
fn numpy_values() -> Vec<Value> {
    let floats = sample_floats(40);
    let mut values = vec![
        np_array("<i8", &[3], le_i64(&[1, 2, 3])),
        np_array("<i8", &[4], le_i64(&[-5, 100, 7, i64::MIN])),
        np_array("<f8", &[2, 2], le_f64(&[1.5, 2.5, 3.5, 4.5])),
        np_array("<f8", &[3], le_f64(&[1.0, 2.5, -0.0])),
        np_array(
            "<f8",
            &[4],
            le_f64(&[0.1, 0.2, 0.30000000000000004, 1.0 / 3.0]),
        ),
        np_array("<f8", &[3], le_f64(&[1e-5, 1.0, 2.0])),
        np_array("<f8", &[3], le_f64(&[1e10, 1.0, f64::NAN])),
        np_array(
            "<f8",
            &[3],
            le_f64(&[f64::NAN, f64::INFINITY, f64::NEG_INFINITY]),
        ),
        np_array("<f8", &[2], le_f64(&[1e-300, 1e300])),
        np_array("<f8", &[2], le_f64(&[0.001953125, 12.5])),
        np_array("<f8", &[0], vec![]),
        np_array("<i8", &[2, 0], vec![]),
        np_array("<i8", &[], le_i64(&[42])),
        np_array("<f8", &[], le_f64(&[2.5])),
        np_array("<f4", &[3], le_f32(&[0.1, 2.5, -7.25])),
        np_array("<f4", &[2], le_f32(&[1e-5, 3.0e38])),
        np_array(
            "<i4",
            &[3],
            [1i32, -2, 3].iter().flat_map(|v| v.to_le_bytes()).collect(),
        ),
        np_array(
            "<u2",
            &[2],
            [1u16, 65535].iter().flat_map(|v| v.to_le_bytes()).collect(),
        ),
        np_array("|u1", &[4], vec![0, 1, 128, 255]),
        np_array("|i1", &[2], vec![0x80, 0x7f]),
        np_array("<u8", &[1], u64::MAX.to_le_bytes().to_vec()),
        np_array(
            ">i8",
            &[2],
            [1i64, -1].iter().flat_map(|v| v.to_be_bytes()).collect(),
        ),
        np_array(">f8", &[1], 1.5f64.to_be_bytes().to_vec()),
        np_array("|b1", &[3], vec![1, 0, 1]),
        np_array("|b1", &[], vec![1]),
        np_array("<i8", &[2, 3, 2], le_i64(&(0..12).collect::<Vec<_>>())),
        // wraps at 75 columns
        np_array(
            "<i8",
            &[40],
            le_i64(&(0..40).map(|i| i * 1000).collect::<Vec<_>>()),
        ),
        np_array(
            "<f8",
            &[30],
            le_f64(&(0..30).map(|i| f64::from(i) / 7.0).collect::<Vec<_>>()),
        ),
        np_array("<f8", &[40], le_f64(&floats)),
        // summarized beyond 1000 elements
        np_array("<i8", &[2000], le_i64(&(0..2000).collect::<Vec<_>>())),
        np_array("<i8", &[40, 40], le_i64(&(0..1600).collect::<Vec<_>>())),
        np_array(
            "|u1",
            &[3000],
            (0..3000u32).map(|i| (i % 256) as u8).collect(),
        ),
        // a longer buffer than the shape needs: numpy reads its start
        np_array("<i8", &[1], le_i64(&[7, 8])),
        np_scalar("<i8", le_i64(&[5])),
        np_scalar("<f8", le_f64(&[1e-5])),
        np_scalar("<f4", le_f32(&[0.1])),
        np_scalar("|b1", vec![1]),
        np_scalar("|u1", vec![200]),
    ];
    for f in floats.iter().take(10) {
        values.push(np_array("<f8", &[2], le_f64(&[*f, 1.0])));
        values.push(np_array("<f4", &[2], le_f32(&[*f as f32, 0.5])));
    }
    values
}

/// Every kind of decoded value for `repr`, nested and at the top level.
fn python_repr_values() -> Vec<Value> {
    let mut values = python_json_values();
    values.extend([
        Value::Binary(vec![]),
        Value::Binary((0u8..=255).collect()),
        Value::Binary(b"it's".to_vec()),
        Value::Binary(b"'\"".to_vec()),
        Value::from("it's"),
        Value::from("'\""),
        Value::from("\"double\""),
        Value::from("line\nbreak"),
        Value::from("\u{a0}\u{ad}\u{378}\u{200b}\u{e0001}\u{2028}\u{f8ff}\u{1f600}\u{3000}"),
        Value::Ext(5, vec![1, 2]),
        Value::Ext(127, vec![]),
        Value::Ext(-1, vec![0, 0, 0, 1]),
        Value::Ext(-1, vec![0x3b, 0x9a, 0xc9, 0xff, 0, 0, 0, 1]),
        Value::Ext(-1, [vec![0x3b, 0x9a, 0xc9, 0xff], vec![0xff; 8]].concat()),
        Value::Map(vec![
            (Value::Binary(b"k".to_vec()), Value::from("bin key")),
            (Value::from("k"), Value::from("str key")),
            (Value::Ext(1, vec![]), Value::from("ext key")),
        ]),
        Value::Array(vec![
            Value::Binary(vec![0]),
            Value::from("x"),
            Value::Map(vec![(Value::from("deep"), Value::Array(vec![Value::Nil]))]),
        ]),
    ]);
    values.extend(
        (0u32..0x3000)
            .step_by(7)
            .filter_map(char::from_u32)
            .map(|c| Value::from(c.to_string())),
    );
    values
}

#[tokio::test(flavor = "multi_thread")]
async fn repr_is_python_repr_and_print() {
    let values = python_repr_values();
    let python = python_forms_of("repr", &values).await;
    let mut differ = Vec::new();
    for (value, theirs) in values.iter().zip(&python) {
        let ours = serde_json::to_string(&[
            banyan_core::pyrepr::repr(value),
            banyan_core::pyrepr::print_text(value),
        ])
        .expect("JSON");
        // serde_json and python escape differently; compare the texts.
        let Ok(theirs) = serde_json::from_str::<Vec<String>>(theirs) else {
            differ.push(format!("{value:?}\n  python: {theirs}"));
            continue;
        };
        let ours: Vec<String> = serde_json::from_str(&ours).expect("ours");
        if ours != theirs {
            differ.push(format!(
                "{value:?}\n  ours:   {ours:?}\n  python: {theirs:?}"
            ));
        }
    }
    assert!(
        differ.is_empty(),
        "{} of {} values differ from python's repr/str:\n{}",
        differ.len(),
        values.len(),
        differ.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn numpy_repr_is_numpy_repr() {
    let values = numpy_values();
    let python = python_forms_of("numpy", &values).await;
    let mut differ = Vec::new();
    for (value, theirs) in values.iter().zip(&python) {
        let theirs: Vec<String> = serde_json::from_str(theirs)
            .unwrap_or_else(|e| panic!("python's answer {theirs:?}: {e}"));
        let ours = banyan_core::pyrepr::repr_numpy(value);
        if ours != theirs[0] {
            differ.push(format!(
                "{value}\n  ours:\n{ours}\n  python:\n{}",
                theirs[0]
            ));
        }
    }
    assert!(
        differ.is_empty(),
        "{} of {} arrays differ from numpy's repr:\n{}",
        differ.len(),
        values.len(),
        differ.join("\n")
    );
}

/// Whether python-banyan's receiver decodes `value` at all: its msgpack
/// refuses map keys other than str and bin (`strict_map_key`), and ext types
/// below 0 other than a valid timestamp.
fn python_decodes(value: &Value) -> bool {
    match value {
        Value::Map(entries) => entries.iter().all(|(k, v)| {
            matches!(k, Value::String(_) | Value::Binary(_))
                && python_decodes(k)
                && python_decodes(v)
        }),
        Value::Array(items) => items.iter().all(python_decodes),
        Value::Ext(code, _) => *code >= 0,
        Value::String(s) => s.as_str().is_some(),
        _ => true,
    }
}

/// Starts python-banyan 3.17's own `monitor` on the backplane and returns
/// once its subscription has reached it (seen by `publisher`).
async fn python_monitor(
    bp: &BackplaneProc,
    publisher: &banyan_core::Client,
    extra: &[&str],
) -> Proc {
    let mut monitor = Proc::spawn(
        "python monitor",
        Command::new(python())
            .args(["-m", "python_banyan.utils.monitor.monitor"])
            .args(bp.flags())
            .args(extra)
            // print() to a pipe is block-buffered otherwise
            .env("PYTHONUNBUFFERED", "1"),
    );
    monitor.wait_for_text("Loop Time").await;
    within(
        "python's monitor's subscription",
        publisher.wait_for_subscriber("cmp"),
    )
    .await
    .expect("open");
    monitor
}

/// Starts our monitor with `extra` flags and waits for its banner, which it
/// prints once subscribed.
async fn rust_monitor(bp: &BackplaneProc, extra: &[&str]) -> Proc {
    let mut monitor = Proc::spawn(
        &format!("monitor {}", extra.join(" ")),
        Command::new(exe("monitor")).args(bp.flags()).args(extra),
    );
    monitor.wait_for_text("*****").await;
    monitor.wait_for_text("*****").await;
    monitor
}

/// The message lines a monitor printed: stdout after its banner up to the
/// line `end`, without probe messages.
async fn printed_messages(monitor: &mut Proc, end: &str) -> Vec<String> {
    monitor.expect_text(end).await;
    let output = monitor.output();
    let lines: Vec<&str> = output
        .lines()
        .filter(|l| !l.starts_with("stderr: "))
        .collect();
    let banner_end = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with("*****"))
        .nth(1)
        .map_or(0, |(i, _)| i + 1);
    lines[banner_end..]
        .iter()
        .take_while(|l| **l != end)
        .filter(|l| !l.starts_with("\u{1}banyan-probe"))
        .map(|l| l.to_string())
        .collect()
}

fn assert_same_lines(what: &str, ours: &[String], expected: &[String]) {
    let first_difference = ours
        .iter()
        .zip(expected)
        .position(|(a, b)| a != b)
        .unwrap_or(ours.len().min(expected.len()));
    assert!(
        ours == expected,
        "{what}: {} lines against {}, first difference at line {first_difference}:\n  ours:     {:?}\n  expected: {:?}",
        ours.len(),
        expected.len(),
        ours.get(first_difference),
        expected.get(first_difference)
    );
}

/// Our monitor prints what python-banyan's prints (default format), and
/// in `--format json` the JSON python's `json.dumps` writes, for the same
/// messages through one backplane.
#[tokio::test(flavor = "multi_thread")]
async fn monitor_prints_what_python_monitor_prints() {
    let bp = BackplaneProc::start().await;
    let (publisher, _) = bp.connect().await;
    let mut python_mon = python_monitor(&bp, &publisher, &[]).await;
    let mut ours = rust_monitor(&bp, &[]).await;
    let mut ours_json = rust_monitor(&bp, &["--format", "json"]).await;

    let mut values: Vec<Value> = python_repr_values()
        .into_iter()
        .filter(python_decodes)
        .filter(|v| !matches!(v, Value::F64(_)))
        .take(400)
        .collect();
    values.extend(sample_floats(200).into_iter().map(Value::F64));
    values.push(Value::from("two\nlines"));
    values.push(numpy_array());
    for (i, value) in values.iter().enumerate() {
        publisher
            .publish(&format!("cmp{i}"), value)
            .await
            .expect("published");
    }
    publisher
        .publish("cmp_end", &Value::from("done"))
        .await
        .expect("published");

    let python_lines = printed_messages(&mut python_mon, "cmp_end done").await;
    let our_lines = printed_messages(&mut ours, "cmp_end done").await;
    assert!(
        python_lines.len() > values.len(),
        "python printed {} lines",
        python_lines.len()
    );
    assert_same_lines(
        "monitor against python's monitor",
        &our_lines,
        &python_lines,
    );

    let dumps = python_forms_of("dumps", &values).await;
    let expected_json: Vec<String> = values
        .iter()
        .zip(&dumps)
        .enumerate()
        .map(|(i, (value, dumped))| {
            // bin and ext have no JSON form in python; ours is the rule's
            let text = if dumped.starts_with("ERROR ") {
                banyan_core::json::to_display(value)
            } else {
                dumped.clone()
            };
            format!("cmp{i} {text}")
        })
        .collect();
    let json_lines = printed_messages(&mut ours_json, r#"cmp_end "done""#).await;
    assert_same_lines(
        "monitor --format json against json.dumps",
        &json_lines,
        &expected_json,
    );
}

/// With `-m True`, maps holding msgpack-numpy arrays print as python's
/// `monitor -m True` prints them (numpy's repr, python-banyan's key rule).
#[tokio::test(flavor = "multi_thread")]
async fn numpy_monitor_prints_what_python_numpy_monitor_prints() {
    let bp = BackplaneProc::start().await;
    let (publisher, _) = bp.connect().await;
    let mut python_mon = python_monitor(&bp, &publisher, &["-m", "True"]).await;
    let mut ours = rust_monitor(&bp, &["-m", "True"]).await;

    let mut values: Vec<Value> = numpy_values()
        .into_iter()
        .map(|array| map(vec![("array", array), ("n", Value::from(1))]))
        .collect();
    values.extend([
        map(vec![
            ("msg", Value::from(1)),
            (
                "list",
                Value::Array(vec![np_array("<i8", &[1], le_i64(&[9]))]),
            ),
        ]),
        // bin keys become str, and python-banyan then drops the str keys
        Value::Map(vec![
            (Value::Binary(b"x".to_vec()), Value::from(1)),
            (Value::from("y"), Value::from(2)),
            (
                Value::Binary(b"z".to_vec()),
                np_array("<f8", &[1], le_f64(&[0.5])),
            ),
        ]),
        map(vec![]),
    ]);
    for (i, value) in values.iter().enumerate() {
        publisher
            .publish(&format!("cmp{i}"), value)
            .await
            .expect("published");
    }
    publisher
        .publish("cmp_end", &map(vec![("end", Value::from("done"))]))
        .await
        .expect("published");
    let end = "cmp_end {'end': 'done'}";
    let python_lines = printed_messages(&mut python_mon, end).await;
    let our_lines = printed_messages(&mut ours, end).await;
    assert!(
        python_lines.len() > values.len(),
        "python printed {} lines",
        python_lines.len()
    );
    assert_same_lines(
        "monitor -m True against python's",
        &our_lines,
        &python_lines,
    );
}

/// A msgpack-numpy map whose dtype is empty or starts with a multi-byte
/// character once killed `monitor -m True`; sent by a python component, it
/// is shown as the map it is, and the monitor goes on.
#[tokio::test(flavor = "multi_thread")]
async fn numpy_monitor_survives_any_dtype_from_a_peer() {
    let bp = BackplaneProc::start().await;
    let mut python_only = rust_monitor(&bp, &["-m", "True"]).await;
    let mut json = rust_monitor(&bp, &["-m", "True", "--format", "json"]).await;
    let mut py = Proc::spawn(
        "python publisher",
        peer(&bp, "pub", &["--topic", "bad_dtype"]).stdin(Stdio::piped()),
    );
    py.wait_for_text("READY").await;
    let payloads = [
        np_array("", &[1], le_i64(&[1])),
        np_array("é8", &[1], le_i64(&[1])),
        np_array("<é", &[1], le_i64(&[1])),
        map(vec![("after", Value::from(1))]),
    ];
    {
        let stdin = py.stdin().expect("stdin piped");
        for value in &payloads {
            writeln!(stdin, "{}", hex(&envelope::encode(value))).expect("written");
        }
    }
    py.close_stdin();
    assert_eq!(py.wait().await, Some(0), "{}", py.output());
    for dtype in ["''", "'é8'", "'<é'"] {
        python_only
            .wait_for(&format!("the map with dtype {dtype}"), |l| {
                // python-banyan's rule turns the bin keys into str keys
                l.starts_with("bad_dtype {'nd': True, 'type': ") && l.contains(dtype)
            })
            .await;
    }
    python_only
        .wait_for("the message after", |l| l == "bad_dtype {'after': 1}")
        .await;
    for dtype in ["\"\"", "\"\\u00e98\"", "\"<\\u00e9\""] {
        json.wait_for(&format!("the map with dtype {dtype}"), |l| {
            l.starts_with(r#"bad_dtype {"nd": true, "type": "#) && l.contains(dtype)
        })
        .await;
    }
    json.wait_for("the message after", |l| l == r#"bad_dtype {"after": 1}"#)
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backplane_address_where_nothing_answers_is_reported_after_ten_seconds() {
    let (publisher_port, subscriber_port) = (free_port(), free_port());
    let mut monitor = Proc::spawn(
        "monitor",
        Command::new(exe("monitor")).args([
            "-b",
            "127.0.0.1",
            "-p",
            &publisher_port.to_string(),
            "-s",
            &subscriber_port.to_string(),
        ]),
    );
    // The wait is 10 s; `wait` allows 20.
    assert_eq!(monitor.wait().await, Some(1), "{}", monitor.output());
    let expected = format!(
        "no backplane answered at 127.0.0.1 (publisher port {publisher_port}, subscriber port \
         {subscriber_port}) within 10s"
    );
    assert!(monitor.output().contains(&expected), "{}", monitor.output());
}

#[tokio::test(flavor = "multi_thread")]
async fn large_messages_for_a_stalled_subscriber_stay_within_the_queue_bytes() {
    /// The budget of each queue: 8 MiB.
    const QUEUE_BYTES: &str = "8388608";
    /// 3,000 messages of 64 KiB: 192 MiB, all of which a stalled
    /// subscriber's queue of 16,384 messages would hold.
    const COUNT: usize = 3_000;
    let bp = BackplaneProc::start_with(&["--queue-bytes", QUEUE_BYTES]).await;
    let context = zmq::Context::new();
    // Subscribes to everything and never reads, with small buffers of its own.
    let stalled = context.socket(zmq::SUB).expect("socket");
    stalled.set_rcvhwm(16).expect("RCVHWM");
    stalled.set_rcvbuf(65_536).expect("RCVBUF");
    stalled
        .connect(&format!("tcp://127.0.0.1:{}", bp.subscriber_port))
        .expect("connect");
    stalled.set_subscribe(b"").expect("subscribe");
    // Reads everything, so that the test knows when all has passed.
    let reader = context.socket(zmq::SUB).expect("socket");
    reader.set_rcvtimeo(20_000).expect("RCVTIMEO");
    reader
        .connect(&format!("tcp://127.0.0.1:{}", bp.subscriber_port))
        .expect("connect");
    reader.set_subscribe(b"big").expect("subscribe");
    // A raw publisher with no queue bound of its own, so that every message
    // reaches the backplane; an XPUB, to learn when both subscriptions have.
    let publisher = context.socket(zmq::XPUB).expect("socket");
    publisher.set_sndhwm(0).expect("SNDHWM");
    publisher.set_rcvtimeo(20_000).expect("RCVTIMEO");
    publisher
        .connect(&format!("tcp://127.0.0.1:{}", bp.publisher_port))
        .expect("connect");

    let received = tokio::task::spawn_blocking(move || {
        let mut heard = std::collections::HashSet::new();
        while heard.len() < 2 {
            let notice = publisher
                .recv_bytes(0)
                .expect("the subscriptions, within 20 s");
            heard.insert(notice);
        }
        let payload = {
            // bin 32 of 65,531 bytes: a 65,536-byte MessagePack value.
            let mut p = vec![0xc6, 0x00, 0x00, 0xff, 0xfb];
            p.resize(65_536, b'x');
            p
        };
        for _ in 0..COUNT {
            publisher
                .send_multipart([&b"big"[..], &payload[..]], 0)
                .expect("sent");
        }
        let mut received = 0;
        while received < COUNT {
            let frames = reader
                .recv_multipart(0)
                .unwrap_or_else(|e| panic!("message {received} of {COUNT} within 20 s: {e}"));
            assert_eq!(frames.len(), 2);
            received += 1;
        }
        drop(stalled);
        received
    })
    .await
    .expect("the publisher and the reader");
    assert_eq!(received, COUNT, "the subscriber that reads got everything");
    // Each queue holds 8 MiB at most (the publisher's, the reader's, the
    // stalled one's); 192 MiB went through.
    let peak = peak_memory_kib(bp.proc.pid());
    assert!(
        peak < 48 * 1024,
        "the backplane's peak was {peak} KiB for queues of 8 MiB"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_inbox_bounded_to_one_batch_still_delivers_everything_in_order() {
    const COUNT: u64 = 20_000;
    let bp = BackplaneProc::start().await;
    // A budget of one byte: the inbox takes a batch only when it is empty,
    // so the I/O thread waits for the reader at almost every batch.
    let config = ClientConfig {
        queue_bytes: 1,
        ..bp.config()
    };
    let (sub, mut inbox) = within("connect", banyan_core::Client::connect(&config))
        .await
        .expect("connects");
    sub.subscribe("seq").await.expect("subscribed");
    let (publisher, _) = bp.connect().await;
    let sender = tokio::spawn(async move {
        for n in 0..COUNT {
            publisher
                .publish("seq", &Value::from(n))
                .await
                .expect("published");
        }
        publisher
    });
    for expected in 0..COUNT {
        let message = recv(&mut inbox, "the next message of the sequence").await;
        assert_eq!(message.value().expect("msgpack"), Value::from(expected));
        if expected % 1000 == 0 {
            // A reader that pauses now and then.
            tokio::task::yield_now().await;
        }
    }
    let _publisher = sender.await.expect("the publisher");
}

#[tokio::test(flavor = "multi_thread")]
async fn large_messages_wait_for_room_in_a_publishers_byte_budget_and_all_arrive() {
    const COUNT: u64 = 2_000;
    let bp = BackplaneProc::start().await;
    let (sub, mut inbox) = bp.connect().await;
    sub.subscribe("big").await.expect("subscribed");
    // A budget smaller than one message: each waits until the one before
    // it has been handed to ZeroMQ.
    let config = ClientConfig {
        queue_bytes: 8_192,
        ..bp.config()
    };
    let (publisher, _) = within("connect", banyan_core::Client::connect(&config))
        .await
        .expect("connects");
    let sender = tokio::spawn({
        let publisher = publisher.clone();
        async move {
            for n in 0..COUNT {
                let mut payload = banyan_core::envelope::encode(&Value::from(n));
                payload.resize(65_536, 0xc0); // padding a reader ignores
                publisher
                    .send(banyan_core::Message::from_raw("big", payload))
                    .await
                    .expect("published");
            }
        }
    });
    for expected in 0..COUNT {
        let message = recv(&mut inbox, "the next large message").await;
        assert_eq!(message.payload().len(), 65_536);
        let first = rmpv::decode::read_value(&mut &message.payload()[..]).expect("msgpack");
        assert_eq!(first, Value::from(expected));
    }
    within("the publisher", sender)
        .await
        .expect("the publisher's task");
    // Closed: publishing fails at once, it does not wait for room.
    publisher.close().await.expect("closed");
    let refused = within(
        "a publish after close",
        publisher.send(banyan_core::Message::from_raw("big", vec![0xc0; 65_536])),
    )
    .await;
    assert!(refused.is_err(), "published after close");
}
