//! This machine as seen from the LAN, in private network and PID namespaces
//! with LAN addresses of their own (`tests/python/lan_ns.sh`): the
//! backplane's banner, and python components that find the bus by
//! themselves.
//!
//! Each test runs twice: here, it starts this test binary again inside the
//! namespaces, running only itself, and requires it to pass there; inside
//! (`BANYAN_TEST_NAMESPACE` names it), it does the work.

use std::process::Command;

use banyan_core::rmpv::Value;
use banyan_core::{Client, ClientConfig};

use crate::util::*;

/// The namespace's LAN addresses, on one interface, in this order.
const LAN: &str = "10.77.0.2";
const LAN_2: &str = "10.88.0.3";
const INSIDE: &str = "BANYAN_TEST_NAMESPACE";

fn inside(test: &str) -> bool {
    std::env::var(INSIDE).is_ok_and(|name| name == test)
}

/// Runs the test `module::test` of this binary in the namespaces.
async fn run_inside(test: &str) {
    let exe = std::env::current_exe().expect("the test binary");
    let mut proc = Proc::spawn(
        &format!("{test} in a namespace"),
        Command::new(root().join("tests/python/lan_ns.sh"))
            .arg(format!("{LAN}/24,{LAN_2}/24"))
            .arg(exe)
            .args([
                &format!("bus::lan::{test}"),
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(INSIDE, test),
    );
    let code = proc.wait().await;
    let out = proc.output();
    assert_eq!(code, Some(0), "inside the namespaces:\n{out}");
    assert!(
        out.contains("1 passed"),
        "the test did not run inside:\n{out}"
    );
}

/// The lines of a banner, from its first rule to its second.
async fn banner(proc: &mut Proc) -> Vec<String> {
    let mut lines = vec![proc.wait_for_text("*****").await];
    loop {
        let line = proc
            .wait_for("the rest of the banner", |l| !l.starts_with("stderr: "))
            .await;
        let end = line.starts_with("*****");
        lines.push(line);
        if end {
            return lines;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_banner_shows_the_addresses_to_pass_as_b() {
    if !inside("the_banner_shows_the_addresses_to_pass_as_b") {
        return run_inside("the_banner_shows_the_addresses_to_pass_as_b").await;
    }
    let rule = "*".repeat(42);
    // Every interface (the default): each LAN address, not 0.0.0.0.
    let mut bp = Proc::spawn("backplane", &mut Command::new(exe("backplane")));
    assert_eq!(
        banner(&mut bp).await,
        [
            rule.clone(),
            format!("Backplane IP address: {LAN}"),
            format!("Backplane IP address: {LAN_2}"),
            "Subscriber Port = 43125".into(),
            "Publisher  Port = 43124".into(),
            rule.clone(),
        ]
    );
    // One address: that one.
    let mut one = Proc::spawn(
        "backplane on one address",
        Command::new(exe("backplane")).args(["-a", LAN_2, "-p", "0", "-s", "0", "-n", "Lab"]),
    );
    let lines = banner(&mut one).await;
    assert_eq!(
        lines[1],
        format!("Lab Backplane IP address: {LAN_2}"),
        "{lines:?}"
    );
    assert_eq!(lines.len(), 5, "{lines:?}");
    // The address shown is one a component can use.
    let port = |prefix: &str| -> u16 {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix:?} in {lines:?}"))
    };
    let config = ClientConfig {
        address: LAN_2.into(),
        publisher_port: port("Publisher  Port = "),
        subscriber_port: port("Subscriber Port = "),
        ..ClientConfig::default()
    };
    within("a client on the LAN address", Client::connect(&config))
        .await
        .expect("connects");
}

/// The README's one command, `monitor`, on a machine with no backplane: an
/// unchanged python-banyan component started without `-b` joins that bus,
/// and messages flow both ways.
#[tokio::test(flavor = "multi_thread")]
async fn python_components_without_b_join_the_bus_the_monitor_started() {
    if !inside("python_components_without_b_join_the_bus_the_monitor_started") {
        return run_inside("python_components_without_b_join_the_bus_the_monitor_started").await;
    }
    let mut monitor = Proc::spawn("monitor", &mut Command::new(exe("monitor")));
    monitor
        .wait_for_text("No backplane was running: started one as process")
        .await;
    monitor.wait_for_text("*****").await;

    // python-banyan finds a process named backplane, then connects to the
    // LAN address it discovers.
    let mut py = Proc::spawn(
        "python echo",
        Command::new(python())
            .arg(root().join("tests/python/banyan_peer.py"))
            .args(["echo", "--topic", "ping", "--reply", "pong"])
            .args(["-p", "43124", "-s", "43125"]),
    );
    py.wait_for_text("READY").await;
    py.expect_text(&format!("using Back Plane IP address: {LAN}"))
        .await;

    let (client, mut inbox) = within("a Rust client", Client::connect(&ClientConfig::default()))
        .await
        .expect("connects");
    client.subscribe("pong").await.expect("subscribed");
    within(
        "the python component's subscription",
        client.wait_for_subscriber("ping"),
    )
    .await
    .expect("open");
    let payload = Value::Map(vec![("n".into(), Value::from(1))]);
    client.publish("ping", &payload).await.expect("published");
    let pong = recv(&mut inbox, "python's answer").await;
    assert_eq!(pong.topic(), "pong");
    assert_eq!(pong.value().expect("decodes"), payload);
    monitor
        .wait_for("the Rust message", |l| l == "ping {'n': 1}")
        .await;
    monitor
        .wait_for("the python message", |l| l == "pong {'n': 1}")
        .await;
}
