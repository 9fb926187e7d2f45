//! The MQTT gateway end to end: the real `backplane` and `mqttgw`
//! executables, a real mosquitto broker, rumqttc and paho-mqtt peers on the
//! MQTT side, Rust and python-banyan components on the bus side.

pub(crate) mod broker;

use std::process::Command;

use banyan_core::rmpv::Value;
use banyan_core::{json, Client, Messages};
use rumqttc::QoS;

use self::broker::{temp_dir, Mosquitto, Peer};
use crate::util::*;

/// A backplane, a broker and a gateway between them, and a bus client.
struct Setup {
    backplane: BackplaneProc,
    broker: Mosquitto,
    gateway: Proc,
    bus: Client,
    messages: Messages,
}

/// Starts the gateway with `args` against `broker`; returns once it is
/// subscribed on MQTT to `last_filter`.
async fn start_gateway(
    backplane: &BackplaneProc,
    broker: &Mosquitto,
    args: &[&str],
    env: &[(&str, &str)],
    last_filter: &str,
) -> Proc {
    start_named("mqttgw", backplane, broker, args, env, last_filter).await
}

/// [`start_gateway`] with the executable named `name` (`mqttgw` or `mgw`).
async fn start_named(
    name: &str,
    backplane: &BackplaneProc,
    broker: &Mosquitto,
    args: &[&str],
    env: &[(&str, &str)],
    last_filter: &str,
) -> Proc {
    let mut gateway = Proc::spawn(
        name,
        Command::new(exe(name))
            .args(backplane.flags())
            .args(["-a", "127.0.0.1", "-d", &broker.port.to_string()])
            .args(args)
            .env("NO_COLOR", "1")
            // The queue's drops one by one, for the tests that count them.
            .env("BANYAN_LOG", "info,banyan_gateway=debug")
            .env_remove("MQTTGW_PASSWORD")
            .envs(env.iter().copied()),
    );
    // Logged after the banner (stdout) was printed; the two streams may
    // arrive here in either order.
    gateway
        .wait_for_text(&format!("subscribed on MQTT to {last_filter}"))
        .await;
    gateway
}

async fn setup(broker: Mosquitto, args: &[&str], last_filter: &str, bus_topics: &[&str]) -> Setup {
    let backplane = BackplaneProc::start().await;
    let gateway = start_gateway(&backplane, &broker, args, &[], last_filter).await;
    let (bus, messages) = backplane.connect().await;
    for topic in bus_topics {
        within("a bus subscription", bus.subscribe(topic))
            .await
            .expect("subscribed");
    }
    Setup {
        backplane,
        broker,
        gateway,
        bus,
        messages,
    }
}

fn map(pairs: &[(&str, Value)]) -> Value {
    Value::Map(
        pairs
            .iter()
            .map(|(k, v)| (Value::from(*k), v.clone()))
            .collect(),
    )
}

fn json_of(publish: &rumqttc::Publish) -> Value {
    json::from_json_slice(&publish.payload).expect("the gateway sends JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_directions_with_several_bus_topics() {
    let broker = Mosquitto::start("both", "allow_anonymous true").await;
    let mut peer = Peer::connect(broker.port, &["out"], QoS::AtMostOnce).await;
    let mut s = setup(
        broker,
        &[
            "-g",
            "alpha",
            "beta",
            "--client-id",
            "gw-both",
            "-i",
            "out",
            "-j",
            "in",
            "-e",
            "from_mqtt",
        ],
        "in",
        &["from_mqtt"],
    )
    .await;

    // Bus -> MQTT, from every -g topic (python only forwarded `to_mqtt`),
    // each matched exactly (as python matched `to_mqtt`): `alpha_x` is not
    // forwarded, nor `gamma`; `alpha` again is the marker after them.
    for (topic, n) in [
        ("alpha", 1),
        ("beta", 2),
        ("gamma", 3),
        ("alpha_x", 4),
        ("alpha", 5),
    ] {
        s.bus
            .publish(topic, &map(&[("n", n.into())]))
            .await
            .expect("published");
    }
    for n in [1, 2, 5] {
        let got = peer.recv("a bus message on MQTT").await;
        assert_eq!(got.topic, "out");
        assert_eq!(
            json_of(&got),
            map(&[("n", n.into())]),
            "gamma and alpha_x are not forwarded"
        );
    }

    // MQTT -> bus.
    peer.publish("in", QoS::AtMostOnce, r#"{"a": [1, 2.5, "x"], "b": null}"#)
        .await;
    let got = recv(&mut s.messages, "an MQTT message on the bus").await;
    assert_eq!(got.topic(), "from_mqtt");
    assert_eq!(
        got.value().expect("msgpack"),
        map(&[
            ("a", Value::Array(vec![1.into(), 2.5.into(), "x".into()])),
            ("b", Value::Nil)
        ])
    );

    // SIGTERM: the broker is told goodbye, the process ends with 0.
    assert_eq!(s.gateway.stop(false).await, Some(0));
    s.broker
        .proc
        .wait_for_text("Client gw-both disconnected.")
        .await;
    drop(s.backplane);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bus_payloads_that_are_not_messagepack_are_refused_nan_and_bin_are_written_as_python() {
    let broker = Mosquitto::start("jsonable", "allow_anonymous true").await;
    let mut peer = Peer::connect(broker.port, &["from_banyan"], QoS::AtMostOnce).await;
    let mut s = setup(broker, &[], "mqtt_network", &[]).await;

    s.bus
        .publish("to_mqtt", &map(&[("raw", Value::Binary(vec![0, 1, 255]))]))
        .await
        .expect("published");
    s.bus
        .publish("to_mqtt", &map(&[("reading", Value::F64(f64::NAN))]))
        .await
        .expect("published");
    s.bus
        .publish_raw("to_mqtt", vec![0xc1])
        .await
        .expect("published");
    s.bus
        .publish("to_mqtt", &Value::from("marker"))
        .await
        .expect("published");

    let got = peer.recv("the bin payload").await;
    assert_eq!(&got.payload[..], br#"{"raw": {"$bin": "AAH/"}}"#);
    // NaN as python's json.dumps writes it.
    let got = peer.recv("the NaN payload").await;
    assert_eq!(&got.payload[..], br#"{"reading": NaN}"#);
    let got = peer.recv("the marker").await;
    assert_eq!(json_of(&got), Value::from("marker"), "0xc1 is not sent");
    s.gateway.wait_for_text("not sent to MQTT").await;
    s.gateway.expect_text("refused=1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_json_from_mqtt_is_logged_and_the_rest_goes_on() {
    let broker = Mosquitto::start("badjson", "allow_anonymous true").await;
    let peer = Peer::connect(broker.port, &[], QoS::AtMostOnce).await;
    let mut s = setup(broker, &[], "mqtt_network", &["from_mqtt"]).await;

    peer.publish("mqtt_network", QoS::AtMostOnce, "{not json")
        .await;
    peer.publish("mqtt_network", QoS::AtMostOnce, b"\"\xff\xfe\"".to_vec())
        .await;
    peer.publish("mqtt_network", QoS::AtMostOnce, r#"{"ok": 1}"#)
        .await;

    let got = recv(&mut s.messages, "the good message").await;
    assert_eq!(got.value().expect("msgpack"), map(&[("ok", 1.into())]));
    let line = s.gateway.wait_for_text("not published on the bus").await;
    assert!(
        line.contains("mqtt_network") && line.contains("not JSON"),
        "{line}"
    );
    let line = s.gateway.wait_for_text("refused=2").await;
    assert!(line.contains("not UTF-8"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_mapping_keeps_topics_apart_both_ways() {
    let broker = Mosquitto::start("prefix", "allow_anonymous true").await;
    let mut peer = Peer::connect(broker.port, &["banyan/#"], QoS::AtMostOnce).await;
    // `-j '#'` also brings the gateway its own publications back: they must
    // not go round again.
    // Every bus topic starting with `to_` goes to MQTT: `--match prefix`.
    let mut s = setup(
        broker,
        &[
            "--prefix", "banyan", "--match", "prefix", "-g", "to_", "-j", "#",
        ],
        "banyan/#",
        &["from_"],
    )
    .await;

    s.bus
        .publish("to_motor", &Value::from(1))
        .await
        .expect("published");
    s.bus
        .publish("to_lamp", &Value::from(2))
        .await
        .expect("published");
    let first = peer.recv("to_motor on MQTT").await;
    let second = peer.recv("to_lamp on MQTT").await;
    assert_eq!(
        (first.topic.as_str(), json_of(&first)),
        ("banyan/to_motor", 1.into())
    );
    assert_eq!(
        (second.topic.as_str(), json_of(&second)),
        ("banyan/to_lamp", 2.into())
    );

    peer.publish("banyan/from_pin", QoS::AtMostOnce, "7").await;
    peer.publish("banyan/from_sensor/a", QoS::AtMostOnce, "8")
        .await;
    let got = recv(&mut s.messages, "from_pin on the bus").await;
    assert_eq!(
        (got.topic(), got.value().expect("msgpack")),
        ("from_pin", 7.into())
    );
    let got = recv(&mut s.messages, "from_sensor/a on the bus").await;
    assert_eq!(
        (got.topic(), got.value().expect("msgpack")),
        ("from_sensor/a", 8.into())
    );
    // The gateway's two publications came back from the broker and were
    // not sent round again.
    assert_eq!(s.gateway.stop(false).await, Some(0));
    let line = s.gateway.wait_for_text("stopped").await;
    assert!(
        line.contains("looped=2") && line.contains("to_bus=2"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bus_topic_the_broker_would_close_the_connection_for_is_refused_alone() {
    let broker = Mosquitto::start("badtopic", "allow_anonymous true").await;
    let mut peer = Peer::connect(broker.port, &["banyan/#"], QoS::AtMostOnce).await;
    // QoS 1: a publication that cost the connection would be sent again on
    // every reconnection, for ever.
    let mut s = setup(
        broker,
        &[
            "--prefix", "banyan", "--match", "prefix", "-g", "to_", "-j", "in", "--qos", "1",
        ],
        "banyan/in",
        &[],
    )
    .await;
    within(
        "the gateway's bus subscription",
        s.bus.wait_for_subscriber("to_"),
    )
    .await
    .expect("subscribed");
    // mosquitto closes the connection of a client that publishes on a topic
    // with a control character ("malformed packet").
    for topic in ["to_\u{1}bell", "to_\u{85}next", "to_ok"] {
        s.bus
            .publish(topic, &Value::from(topic))
            .await
            .expect("published");
    }
    let got = peer.recv("the message with a good topic").await;
    assert_eq!(got.topic, "banyan/to_ok");
    assert_eq!(s.gateway.stop(false).await, Some(0));
    let line = s.gateway.wait_for_text("stopped: ").await;
    assert_eq!(count(&line, "connections"), 1, "{line}");
    assert_eq!(count(&line, "refused_from_bus"), 2, "{line}");
    s.gateway.expect_text("is not a valid MQTT topic").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcards_and_qos_1() {
    let broker = Mosquitto::start("wild", "allow_anonymous true").await;
    let mut peer = Peer::connect(broker.port, &["from_banyan"], QoS::AtLeastOnce).await;
    let mut s = setup(
        broker,
        &["--qos", "1", "-j", "sensors/+/temp", "alarms/#"],
        "alarms/#",
        &["from_mqtt"],
    )
    .await;

    for (topic, n) in [
        ("sensors/a/temp", 1),
        ("sensors/a/hum", 2),
        ("alarms/x/y", 3),
        ("alarms", 4),
    ] {
        peer.publish(topic, QoS::AtLeastOnce, n.to_string()).await;
    }
    for n in [1, 3, 4] {
        let got = recv(&mut s.messages, "a wildcard match on the bus").await;
        assert_eq!(got.value().expect("msgpack"), Value::from(n));
    }

    s.bus
        .publish("to_mqtt", &Value::from("q1"))
        .await
        .expect("published");
    let got = peer.recv("a QoS 1 message").await;
    assert_eq!(got.qos, QoS::AtLeastOnce);
    assert_eq!(json_of(&got), Value::from("q1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messagepack_format_passes_bytes_through() {
    let broker = Mosquitto::start("msgpack", "allow_anonymous true").await;
    let mut peer = Peer::connect(broker.port, &["from_banyan"], QoS::AtMostOnce).await;
    let mut s = setup(
        broker,
        &["--format", "msgpack"],
        "mqtt_network",
        &["from_mqtt"],
    )
    .await;

    // Not canonical MessagePack (7 as uint16): it must arrive as it left.
    s.bus
        .publish_raw("to_mqtt", vec![0xcd, 0, 7])
        .await
        .expect("published");
    assert_eq!(
        &peer.recv("raw bytes on MQTT").await.payload[..],
        [0xcd, 0, 7]
    );
    peer.publish("mqtt_network", QoS::AtMostOnce, vec![0x92, 0x01])
        .await;
    peer.publish("mqtt_network", QoS::AtMostOnce, vec![0xcd, 0, 8])
        .await;
    let got = recv(&mut s.messages, "raw bytes on the bus").await;
    assert_eq!(
        &got.payload()[..],
        [0xcd, 0, 8],
        "the truncated array is refused"
    );
    s.gateway.wait_for_text("not one MessagePack value").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_loses_nothing_within_the_queue_bound() {
    let broker = Mosquitto::start("restart", "allow_anonymous true").await;
    // The gateway reads back what it publishes: after a reconnection it
    // subscribes before it sends, so the round trip proves delivery.
    let mut s = setup(
        broker,
        &[
            "-g", "out", "-i", "loop", "-j", "loop", "-e", "back", "--queue", "3",
        ],
        "loop",
        &["back"],
    )
    .await;
    s.bus
        .publish("out", &Value::from(0))
        .await
        .expect("published");
    let got = recv(&mut s.messages, "the first round trip").await;
    assert_eq!(got.value().expect("msgpack"), Value::from(0));

    s.broker.kill().await;
    s.gateway
        .wait_for_text("disconnected from the MQTT broker")
        .await;
    for n in 1..=5 {
        s.bus
            .publish("out", &Value::from(n))
            .await
            .expect("published");
    }
    // Beyond the bound of 3, the two oldest are dropped, counted and logged.
    s.gateway.wait_for_text("2 missed so far").await;
    s.broker.restart().await;
    s.gateway
        .wait_for_text("connected to the MQTT broker")
        .await;
    s.gateway
        .expect_text("it missed its 2 oldest messages while away")
        .await;
    for n in 3..=5 {
        let got = recv(&mut s.messages, "a message published during the outage").await;
        assert_eq!(got.value().expect("msgpack"), Value::from(n));
    }
    s.bus
        .publish("out", &Value::from(6))
        .await
        .expect("published");
    let got = recv(&mut s.messages, "a message after the outage").await;
    assert_eq!(got.value().expect("msgpack"), Value::from(6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_slower_than_the_bus_loses_nothing() {
    const COUNT: u64 = 20_000;
    let broker = Mosquitto::start("slower", "allow_anonymous true").await;
    let mut peer = Peer::connect(broker.port, &["from_banyan"], QoS::AtMostOnce).await;
    // A queue of 10 is far smaller than the burst: the bus must wait for
    // the broker instead of the queue dropping.
    let s = setup(broker, &["--queue", "10"], "mqtt_network", &[]).await;
    within(
        "the gateway's bus subscription",
        s.bus.wait_for_subscriber("to_mqtt"),
    )
    .await
    .expect("subscribed");
    for n in 0..COUNT {
        s.bus
            .publish("to_mqtt", &Value::from(n))
            .await
            .expect("published");
    }
    for n in 0..COUNT {
        let got = peer.recv("every message of the burst, in order").await;
        assert_eq!(json_of(&got), Value::from(n), "nothing lost, in order");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_broker_is_dropped_for_after_the_grace() {
    let broker = Mosquitto::start("stalled", "allow_anonymous true").await;
    let mut peer = Peer::connect(broker.port, &["from_banyan"], QoS::AtMostOnce).await;
    let mut s = setup(
        broker,
        &[
            "--format",
            "msgpack",
            "--queue",
            "4",
            "--stall-grace",
            "200ms",
        ],
        "mqtt_network",
        &[],
    )
    .await;
    within(
        "the gateway's bus subscription",
        s.bus.wait_for_subscriber("to_mqtt"),
    )
    .await
    .expect("subscribed");
    // A hung broker reads nothing: once the socket buffers are full
    // (64 KiB messages fill them quickly), the gateway's queue fills too.
    s.broker.pause();
    // 400 messages of 64 KiB (26 MB) are more than the socket buffers
    // between the two hold.
    let big = Value::Binary(vec![7; 64 * 1024]);
    const BURST: usize = 400;
    for _ in 0..BURST {
        s.bus.publish("to_mqtt", &big).await.expect("published");
    }
    let line = s.gateway.wait_for_text("took nothing for").await;
    assert!(line.contains("200ms"), "{line}");
    // From now on the bus is not held: new messages push the oldest out.
    for _ in 0..8 {
        s.bus.publish("to_mqtt", &big).await.expect("published");
    }
    s.broker.resume();
    s.bus
        .publish("to_mqtt", &Value::from("marker"))
        .await
        .expect("published");
    // The newest message survives the drops and arrives once the broker
    // runs again.
    let mut marker = false;
    for _ in 0..BURST + 9 {
        let got = peer.recv("the marker after the stall").await;
        if got.payload[..] == b"\xa6marker"[..] {
            marker = true;
            break;
        }
    }
    assert!(marker, "the marker never arrived");
    // Once the broker took everything, the stall ends with the count of
    // what it missed: the 8 messages published during the stall pushed
    // older ones out.
    assert_stall_ended_with_every_drop_counted(&mut s.gateway).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_required_and_a_wrong_password_is_a_clear_error() {
    let dir = temp_dir("passwd");
    let passwords = dir.join("passwords");
    let made = Command::new("mosquitto_passwd")
        .args(["-c", "-b"])
        .arg(&passwords)
        .args(["gateway", "right-secret"])
        .status()
        .expect("mosquitto_passwd (package mosquitto) runs");
    assert!(made.success(), "mosquitto_passwd failed");
    let broker = Mosquitto::start(
        "auth",
        &format!(
            "allow_anonymous false\npassword_file {}",
            passwords.display()
        ),
    )
    .await;
    let backplane = BackplaneProc::start().await;

    let mut wrong = Proc::spawn(
        "mqttgw",
        Command::new(exe("mqttgw"))
            .args(backplane.flags())
            .args(["-a", "127.0.0.1", "-d", &broker.port.to_string()])
            .args(["--username", "gateway", "--password-env", "GW_SECRET"])
            .env("GW_SECRET", "wrong-secret")
            .env("NO_COLOR", "1"),
    );
    assert_eq!(wrong.wait().await, Some(1), "{}", wrong.output());
    let output = wrong.output();
    assert!(output.contains("refused the connection"), "{output}");
    assert!(
        !output.contains("wrong-secret"),
        "the password is never shown"
    );

    // The default variable, never exported: the refusal says so.
    let mut unset = Proc::spawn(
        "mqttgw",
        Command::new(exe("mqttgw"))
            .args(backplane.flags())
            .args(["-a", "127.0.0.1", "-d", &broker.port.to_string()])
            .args(["--username", "gateway"])
            .env_remove("MQTTGW_PASSWORD")
            .env("NO_COLOR", "1"),
    );
    assert_eq!(unset.wait().await, Some(1), "{}", unset.output());
    let output = unset.output();
    assert!(
        output.contains("refused the connection")
            && output.contains("the password was empty: MQTTGW_PASSWORD is not set"),
        "{output}"
    );

    let mut gateway = start_gateway(
        &backplane,
        &broker,
        &["--username", "gateway"],
        &[("MQTTGW_PASSWORD", "right-secret")],
        "mqtt_network",
    )
    .await;
    let (bus, mut messages) = backplane.connect().await;
    bus.subscribe("from_mqtt").await.expect("subscribed");
    let peer_options = {
        let mut o = rumqttc::MqttOptions::new("test-auth-peer", "127.0.0.1", broker.port);
        o.set_credentials("gateway", "right-secret");
        o
    };
    let (peer, mut eventloop) = rumqttc::AsyncClient::new(peer_options, 10);
    let driving = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    peer.publish("mqtt_network", QoS::AtLeastOnce, false, "42")
        .await
        .expect("published");
    let got = recv(&mut messages, "a message through the authenticated gateway").await;
    assert_eq!(got.value().expect("msgpack"), Value::from(42));
    driving.abort();
    assert!(!gateway.output().contains("right-secret"));
    assert_eq!(gateway.stop(true).await, Some(0));
    let _ = std::fs::remove_dir_all(dir);
}

/// Runs `openssl` with `args` in `dir`.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_ca_file() {
    let dir = temp_dir("tls");
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &dir,
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=mqttgw test CA",
            ],
        ]
        .concat(),
    );
    openssl(
        &dir,
        &[
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        ]
        .concat(),
    );
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").expect("ext file");
    openssl(
        &dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
    let broker = Mosquitto::start(
        "tls",
        &format!(
            "allow_anonymous true\ncertfile {}\nkeyfile {}",
            dir.join("server.pem").display(),
            dir.join("server.key").display()
        ),
    )
    .await;
    let ca = dir.join("ca.pem");
    // The gateway reads back what it publishes: one message crosses TLS both
    // ways.
    let mut s = setup(
        broker,
        &[
            "--ca-file",
            ca.to_str().expect("utf-8 path"),
            "-i",
            "loop",
            "-j",
            "loop",
        ],
        "loop",
        &["from_mqtt"],
    )
    .await;
    s.bus
        .publish("to_mqtt", &Value::from("over tls"))
        .await
        .expect("published");
    let got = recv(&mut s.messages, "a round trip over TLS").await;
    assert_eq!(got.value().expect("msgpack"), Value::from("over tls"));
    drop(s);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retained_message_over_the_limit_is_refused_and_the_connection_stays() {
    // mosquitto takes and keeps messages of up to 8 MiB here; the gateway's
    // limit is its default, 1 MiB.
    let broker = Mosquitto::start(
        "toolarge",
        "allow_anonymous true\nmessage_size_limit 8388608",
    )
    .await;
    let mut peer = Peer::connect(
        broker.port,
        &["mqtt_network", "from_banyan"],
        QoS::AtMostOnce,
    )
    .await;
    // 2 MiB retained on the topic the gateway subscribes to: the broker
    // sends it on every (re)subscription. Its copy coming back to the peer
    // says the broker has stored it.
    let big = vec![b'7'; 2 << 20];
    peer.publish_retained("mqtt_network", big.clone()).await;
    let stored = peer.recv("the 2 MiB message back from the broker").await;
    assert_eq!(stored.payload.len(), big.len());

    let mut s = setup(broker, &[], "mqtt_network", &["from_mqtt"]).await;
    for n in 1..=5 {
        peer.publish("mqtt_network", QoS::AtLeastOnce, n.to_string())
            .await;
    }
    // The retained message came first on the gateway's connection: the
    // first one on the bus is 1, so it was not published.
    for n in 1..=5 {
        let got = recv(&mut s.messages, "the small messages, in order").await;
        assert_eq!(got.value().expect("msgpack"), Value::from(n));
    }
    let line = s.gateway.wait_for_text("not published on the bus").await;
    assert!(
        line.contains("mqtt_network")
            && line.contains("2097152 bytes")
            && line.contains("--max-payload")
            && line.contains("retained=true"),
        "{line}"
    );

    // The other way: a bus payload whose JSON is over 1 MiB is not sent;
    // what follows it is.
    s.bus
        .publish("to_mqtt", &Value::Binary(vec![0; 1 << 20]))
        .await
        .expect("published");
    s.bus
        .publish("to_mqtt", &Value::from("after the big one"))
        .await
        .expect("published");
    let got = loop {
        let got = peer.recv("the message after the big one on MQTT").await;
        if got.topic == "from_banyan" {
            break got;
        }
    };
    assert_eq!(json_of(&got), Value::from("after the big one"));

    // One connection all along, both refusals counted.
    assert_eq!(s.gateway.stop(false).await, Some(0));
    let line = s.gateway.wait_for_text("stopped: ").await;
    assert_eq!(count(&line, "connections"), 1, "{line}");
    assert_eq!(count(&line, "too_large"), 2, "{line}");
    assert_eq!(count(&line, "to_bus"), 5, "{line}");
    assert_eq!(count(&line, "to_mqtt"), 1, "{line}");
}

/// Publishes `{"n": 1}` on `to_mqtt_other`, then `{"n": 2}` on `to_mqtt`,
/// and returns the first message `peer` gets on `from_banyan`: `n` 2 when
/// the gateway matches exactly (python's `mgw`), 1 when it matches prefixes.
async fn first_forwarded(bus: &Client, peer: &mut Peer) -> Value {
    within(
        "the gateway's bus subscription",
        bus.wait_for_subscriber("to_mqtt"),
    )
    .await
    .expect("subscribed");
    for (topic, n) in [("to_mqtt_other", 1), ("to_mqtt", 2)] {
        bus.publish(topic, &map(&[("n", n.into())]))
            .await
            .expect("published");
    }
    json_of(&peer.recv("the first bus message on MQTT").await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bus_topics_match_exactly_as_pythons_mgw_and_prefixes_with_match_prefix() {
    let broker = Mosquitto::start("match", "allow_anonymous true").await;
    let backplane = BackplaneProc::start().await;
    let (bus, _messages) = backplane.connect().await;

    // python-banyan 3.17's own gateway, on the same bus and broker: its
    // subscription `to_mqtt` delivers `to_mqtt_other` too, and it forwards
    // only `to_mqtt`.
    let mut peer = Peer::connect(broker.port, &["from_banyan"], QoS::AtMostOnce).await;
    let mut python = Proc::spawn(
        "python mgw",
        Command::new(python())
            .arg("-u")
            .arg(root().join("tests/mqtt/python_mgw.py"))
            .args([
                &backplane.publisher_port.to_string(),
                &backplane.subscriber_port.to_string(),
                &broker.port.to_string(),
            ]),
    );
    python.wait_for_text("Connected to MQTT").await;
    assert_eq!(
        first_forwarded(&bus, &mut peer).await,
        map(&[("n", 2.into())]),
        "python's mgw forwarded to_mqtt_other"
    );
    drop(python);

    // Ours by default: the same.
    let mut peer = Peer::connect(broker.port, &["from_banyan"], QoS::AtMostOnce).await;
    let gateway = start_gateway(&backplane, &broker, &[], &[], "mqtt_network").await;
    assert_eq!(
        first_forwarded(&bus, &mut peer).await,
        map(&[("n", 2.into())]),
        "to_mqtt_other was forwarded by default"
    );
    drop(gateway);

    // With the opt-in, every topic starting with a -g topic.
    let mut peer = Peer::connect(broker.port, &["from_banyan"], QoS::AtMostOnce).await;
    let _gateway = start_gateway(
        &backplane,
        &broker,
        &["--match", "prefix"],
        &[],
        "mqtt_network",
    )
    .await;
    assert_eq!(
        first_forwarded(&bus, &mut peer).await,
        map(&[("n", 1.into())]),
        "--match prefix forwards to_mqtt_other"
    );
    let got = peer.recv("to_mqtt after to_mqtt_other").await;
    assert_eq!(json_of(&got), map(&[("n", 2.into())]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mgw_is_mqttgw_under_pythons_name() {
    // The same help, but for the name in its usage line.
    let help = |name: &str| {
        let out = Command::new(exe(name))
            .arg("--help")
            .output()
            .expect("runs");
        assert!(out.status.success(), "{name} --help");
        String::from_utf8(out.stdout).expect("utf-8 help")
    };
    let mgw = help("mgw");
    assert!(mgw.starts_with("Usage: mgw "), "{mgw}");
    assert_eq!(
        mgw,
        help("mqttgw").replacen("Usage: mqttgw ", "Usage: mgw ", 1)
    );
    for flag in ["--match", "--max-payload", "(default 1048576)", "-g", "-j"] {
        assert!(mgw.contains(flag), "mgw --help lacks {flag}:\n{mgw}");
    }
    // Its errors name it, and the library validates its flags.
    let out = Command::new(exe("mgw"))
        .args(["--max-payload", "0"])
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("mgw: --max-payload must be between 1 and")
            && stderr.contains("see mgw --help"),
        "{stderr}"
    );

    // It runs: python's banner and defaults, both directions.
    let broker = Mosquitto::start("mgw", "allow_anonymous true").await;
    let mut peer = Peer::connect(broker.port, &["from_banyan"], QoS::AtMostOnce).await;
    let backplane = BackplaneProc::start().await;
    let mut gateway = start_named("mgw", &backplane, &broker, &[], &[], "mqtt_network").await;
    gateway
        .expect_text("MQTT Gateway using Back Plane IP address")
        .await;
    let (bus, mut messages) = backplane.connect().await;
    bus.subscribe("from_mqtt").await.expect("subscribed");
    within("mgw's bus subscription", bus.wait_for_subscriber("to_mqtt"))
        .await
        .expect("subscribed");
    bus.publish("to_mqtt", &Value::from("via mgw"))
        .await
        .expect("published");
    assert_eq!(
        json_of(&peer.recv("mgw's message").await),
        Value::from("via mgw")
    );
    peer.publish("mqtt_network", QoS::AtLeastOnce, "7").await;
    let got = recv(&mut messages, "an MQTT message through mgw").await;
    assert_eq!(got.value().expect("msgpack"), Value::from(7));
    assert_eq!(gateway.stop(false).await, Some(0));
    gateway.wait_for_text("stopped: connections=1").await;
}

/// A python script of this test suite, run with the venv's python.
fn python_script(name: &str) -> Command {
    let mut command = Command::new(python());
    command.arg(root().join("tests/python").join(name));
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interop_with_paho_and_python_banyan_with_pythons_defaults() {
    let broker = Mosquitto::start("interop", "allow_anonymous true").await;
    let backplane = BackplaneProc::start().await;
    let port = broker.port.to_string();
    let bus_flags = backplane.flags();

    // MQTT side: paho-mqtt listens on python's -i default.
    let mut paho_sub = Proc::spawn(
        "paho sub",
        python_script("mqtt_paho_peer.py").args(["sub", "--port", &port, "--topic", "from_banyan"]),
    );
    paho_sub.wait_for_text("READY").await;
    // Bus side: a python-banyan component listens on python's -e default.
    let mut banyan_sub = Proc::spawn(
        "banyan_peer sub",
        python_script("banyan_peer.py")
            .arg("sub")
            .args(&bus_flags)
            .args(["--topic", "from_mqtt", "--count", "1"]),
    );
    banyan_sub.wait_for_text("READY").await;

    // Only the broker and the bus are named: every topic is python's default.
    let _gateway = start_gateway(&backplane, &broker, &[], &[], "mqtt_network").await;

    // python-banyan -> bus -> mqttgw -> MQTT -> paho.
    let mut banyan_pub = Proc::spawn(
        "banyan_peer pub",
        python_script("banyan_peer.py")
            .arg("pub")
            .args(&bus_flags)
            .args(["--topic", "to_mqtt"])
            .stdin(std::process::Stdio::piped()),
    );
    banyan_pub.wait_for_text("READY").await;
    let value = map(&[("x", 1.into()), ("name", "pico".into())]);
    {
        use std::io::Write;
        let stdin = banyan_pub.stdin().expect("stdin piped");
        let hex: String = banyan_core::envelope::encode(&value)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        writeln!(stdin, "{hex}").expect("written");
    }
    banyan_pub.close_stdin();
    banyan_pub.wait_for_text("DONE 1").await;
    let line = paho_sub
        .wait_for("a JSON line", |l| !l.starts_with("stderr:") && l != "READY")
        .await;
    assert_eq!(
        line, r#"{"x": 1, "name": "pico"}"#,
        "python's json.dumps layout"
    );

    // paho -> MQTT -> mqttgw -> bus -> python-banyan.
    let mut paho_pub = Proc::spawn(
        "paho pub",
        python_script("mqtt_paho_peer.py")
            .args(["pub", "--port", &port, "--topic", "mqtt_network"])
            .stdin(std::process::Stdio::piped()),
    );
    paho_pub.wait_for_text("READY").await;
    {
        use std::io::Write;
        let stdin = paho_pub.stdin().expect("stdin piped");
        writeln!(
            stdin,
            r#"{{"report": "digital_input", "pin": 2, "value": [1, 2.5]}}"#
        )
        .expect("written");
    }
    paho_pub.close_stdin();
    paho_pub.wait_for_text("DONE 1").await;
    let line = banyan_sub.wait_for_text("from_mqtt\t").await;
    let hex = line.split('\t').nth(1).expect("hex column");
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect();
    assert_eq!(
        banyan_core::envelope::decode(&bytes).expect("msgpack"),
        map(&[
            ("report", "digital_input".into()),
            ("pin", 2.into()),
            ("value", Value::Array(vec![1.into(), 2.5.into()])),
        ])
    );
}
