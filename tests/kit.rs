//! The gateway kit's policies, run against each gateway executable: the same
//! flags mean the same thing, and the same events are reported the same way,
//! in `wsgw`, `tgw` and `mqttgw` (and `mgw`, its python name).

use std::process::Command;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use crate::util::*;

/// Each gateway's command line without its queue flags: everything it needs
/// to start, with peers that need not exist.
fn gateways(bp: &BackplaneProc) -> Vec<(&'static str, Command)> {
    let mut ws = Command::new(exe("wsgw"));
    ws.args(bp.flags()).args(["-w", "0"]);
    let mut tcp = Command::new(exe("tgw"));
    // Nothing listens on port 9 of 127.0.0.1 (discard): the device is away.
    tcp.args(bp.flags()).args(["-a", "127.0.0.1", "-n", "9"]);
    let mut mqtt = Command::new(exe("mqttgw"));
    mqtt.args(bp.flags()).args(["-a", "127.0.0.1", "-d", "9"]);
    // python's name for the MQTT gateway: the same program.
    let mut mgw = Command::new(exe("mgw"));
    mgw.args(bp.flags()).args(["-a", "127.0.0.1", "-d", "9"]);
    vec![("wsgw", ws), ("tgw", tcp), ("mqttgw", mqtt), ("mgw", mgw)]
}

/// Runs a gateway that must refuse its flags at once, and its output; one
/// that starts instead is killed at the deadline and fails the test.
async fn refused_at_start(name: &str, command: Command) -> std::process::Output {
    let mut command = tokio::process::Command::from(command);
    command.kill_on_drop(true);
    within(
        &format!("{name} to refuse its flags and exit"),
        command.output(),
    )
    .await
    .expect("runs")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_queue_of_nothing_is_refused_the_same_by_every_gateway() {
    let bp = BackplaneProc::start().await;
    for (flag, message) in [
        ("--queue", "--queue must be at least 1 message"),
        ("--queue-bytes", "--queue-bytes must be at least 1 byte"),
    ] {
        for (name, mut command) in gateways(&bp) {
            command.args([flag, "0"]);
            let out = refused_at_start(name, command).await;
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{name} {flag} 0: {stderr}");
            assert!(
                stderr.contains(&format!("{name}: {message} (see {name} --help)")),
                "{name} {flag} 0: {stderr}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_size_limit_of_nothing_is_refused_by_every_gateway() {
    let bp = BackplaneProc::start().await;
    for (name, mut command) in gateways(&bp) {
        // A page's message is wsgw's unit; a payload the others'.
        let flag = if name == "wsgw" {
            "--max-message-size"
        } else {
            "--max-payload"
        };
        command.args([flag, "0"]);
        let out = refused_at_start(name, command).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name} {flag} 0: {stderr}");
        assert!(
            stderr.contains(&format!("{name}: ")) && stderr.contains(flag),
            "{name} {flag} 0: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_gateway_reports_what_it_counted_the_same_way_at_exit() {
    let bp = BackplaneProc::start().await;
    for (name, mut command) in gateways(&bp) {
        let mut gateway = Proc::spawn(name, command.env("NO_COLOR", "1"));
        gateway.wait_for_text("using Back Plane IP address").await;
        assert_eq!(gateway.stop(false).await, Some(0), "{name}");
        let line = gateway.wait_for_text("stopped: ").await;
        let counts = line
            .split("stopped: ")
            .nth(1)
            .unwrap_or_else(|| panic!("{name}: {line:?}"));
        let names: Vec<&str> = counts
            .split_whitespace()
            .map(|field| {
                let (name, value) = field
                    .split_once('=')
                    .unwrap_or_else(|| panic!("{name}: {field:?} is not name=value in {line:?}"));
                assert!(value.parse::<u64>().is_ok(), "{name}: {line:?}");
                name
            })
            .collect();
        assert!(names.contains(&"dropped_stalled"), "{name}: {line:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn old_flag_spellings_are_listed_in_help_and_still_accepted() {
    for (exe_name, old, new) in [
        ("wsgw", "--stall-grace-ms", "--stall-grace"),
        ("mqttgw", "--stall-grace-ms", "--stall-grace"),
        ("mgw", "--stall-grace-ms", "--stall-grace"),
        ("tgw", "--slow-device-grace", "--stall-grace"),
        ("tgw", "--retry-max", "--reconnect-max"),
        ("backplane", "--slow-subscriber-grace-ms", "--stall-grace"),
    ] {
        let out = Command::new(exe(exe_name))
            .arg("--help")
            .output()
            .expect("runs");
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(
            help.lines()
                .any(|l| l.trim_start().starts_with(old) && l.contains(&format!("same as {new}"))),
            "{exe_name} --help does not list {old}:\n{help}"
        );
    }
    // An old spelling with a bad value is read as the new flag: argh's
    // error names the new one.
    let out = Command::new(exe("wsgw"))
        .args(["--stall-grace-ms", "soon"])
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--stall-grace"), "{stderr}");
}

/// Reads an MQTT CONNECT (or any packet) and answers CONNACK.
async fn connack(stream: &mut TcpStream) -> bool {
    let Ok(_kind) = stream.read_u8().await else {
        return false;
    };
    let (mut len, mut shift) = (0usize, 0);
    loop {
        let Ok(byte) = stream.read_u8().await else {
            return false;
        };
        len |= usize::from(byte & 0x7f) << shift;
        shift += 7;
        if byte & 0x80 == 0 || shift > 21 {
            break;
        }
    }
    let mut body = vec![0; len];
    stream.read_exact(&mut body).await.is_ok() && stream.write_all(&[0x20, 2, 0, 0]).await.is_ok()
}

/// A peer that accepts and drops the gateway at once is re-dialled with
/// growing waits, not in a tight loop; one that kept it connected for a
/// while is dialled again at once. `answer` plays the peer's side of a new
/// connection (true: it went well).
async fn redial_backoff<F, Fut>(listener: TcpListener, mut answer: F)
where
    F: FnMut(TcpStream) -> Fut,
    Fut: std::future::Future<Output = (bool, TcpStream)>,
{
    // Phase 1: every connection is accepted and closed at once, for 10 s
    // from the first one.
    let (first, _) = within("the first connection", listener.accept())
        .await
        .expect("accept");
    let start = Instant::now();
    let (ok, stream) = answer(first).await;
    assert!(ok, "the first connection was not a proper one");
    drop(stream);
    let mut connects = vec![Duration::ZERO];
    let window = Duration::from_secs(10);
    while let Ok(Ok((stream, _))) = tokio::time::timeout_at(start + window, listener.accept()).await
    {
        connects.push(start.elapsed());
        let (_, stream) = answer(stream).await;
        drop(stream);
    }
    // Doubling from 100 ms, at most a fifth shorter, up to 5 s: 8 attempts
    // fit in 10 s at the most; without backoff there would be a hundred.
    assert!(
        connects.len() <= 8,
        "{} connections in 10 s: {connects:?}",
        connects.len()
    );
    let last_gap = connects
        .windows(2)
        .last()
        .map(|w| w[1] - w[0])
        .expect("more than one connection");

    // Phase 2: the next connection stays up for longer than the longest
    // wait (5 s); once it ends, the gateway is back at once.
    let (stream, _) = within("a connection after the growing waits", listener.accept())
        .await
        .expect("accept");
    let (ok, stream) = answer(stream).await;
    assert!(ok);
    tokio::time::sleep(Duration::from_secs(6)).await;
    drop(stream);
    let closed = Instant::now();
    let (_again, _) = within("the connection after a stable one", listener.accept())
        .await
        .expect("accept");
    let gap = closed.elapsed();
    assert!(
        gap * 2 < last_gap,
        "after a stable connection the gateway waited {gap:?}, as long as after \
         failed ones ({last_gap:?}): the backoff was not reset"
    );
}

/// Starts `name` (its peer flag `port_flag`) against a peer listening on a
/// free port, and plays that peer with `answer` (see [`redial_backoff`]).
async fn peer_that_drops_the_gateway<F, Fut>(name: &str, port_flag: &str, answer: F)
where
    F: FnMut(TcpStream) -> Fut,
    Fut: std::future::Future<Output = (bool, TcpStream)>,
{
    let bp = BackplaneProc::start().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port().to_string();
    let _gateway = Proc::spawn(
        name,
        Command::new(exe(name))
            .args(bp.flags())
            .args(["-a", "127.0.0.1", port_flag, &port]),
    );
    redial_backoff(listener, answer).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broker_that_drops_the_gateway_at_once_is_not_hammered() {
    // A broker that accepts, sends CONNACK and closes: as a duplicate client
    // id taking over, or an ACL kick, does.
    peer_that_drops_the_gateway("mqttgw", "-d", |mut stream| async move {
        let ok = connack(&mut stream).await;
        (ok, stream)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_device_that_drops_the_gateway_at_once_is_not_hammered() {
    // A device that crashes whenever the gateway connects.
    peer_that_drops_the_gateway("tgw", "-n", |stream| async move { (true, stream) }).await;
}
