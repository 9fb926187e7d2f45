//! The TCP gateway end to end: the real `backplane` and `tgw` executables,
//! with a device played by a TCP server on 127.0.0.1 (in the test, or a
//! MicroPython-style python script), and python-banyan components as peers.

use std::io::Write;
use std::process::{Command, Stdio};

use banyan_core::rmpv::Value;
use banyan_core::{Client, Messages};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::util::*;

const TO_DEVICE: &str = "to_dev";
const FROM_DEVICE: &str = "from_dev";

/// A backplane, a `tgw` and the device's listening socket.
struct Rig {
    /// Held so the backplane runs as long as the rig.
    _bp: BackplaneProc,
    gw: Proc,
    listener: Option<TcpListener>,
    port: u16,
    /// The test's bus connection: publishes on `TO_DEVICE`, receives
    /// `FROM_DEVICE`.
    client: Client,
    from_device: Messages,
}

/// A device listener on a free port; `small_buffer` shrinks its receive
/// buffer so that a device that does not read fills up soon.
fn device_listener(port: u16, small_buffer: bool) -> TcpListener {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_reuseaddr(true).expect("SO_REUSEADDR");
    if small_buffer {
        socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    }
    socket
        .bind(([127, 0, 0, 1], port).into())
        .expect("bind the device port");
    socket.listen(4).expect("listen")
}

impl Rig {
    async fn start(extra: &[&str]) -> Rig {
        Self::start_with(extra, false).await
    }

    async fn start_with(extra: &[&str], small_buffer: bool) -> Rig {
        let bp = BackplaneProc::start().await;
        // Subscribed before the gateway joins, so that what the device sends
        // from its first byte reaches us: a component's first publication
        // reaches the subscribers already on the bus when it connected.
        let (client, from_device) = bp.connect().await;
        client.subscribe(FROM_DEVICE).await.expect("subscribed");
        let listener = device_listener(0, small_buffer);
        let port = listener.local_addr().expect("local addr").port();
        let mut gw = Proc::spawn(
            "tgw",
            Command::new(exe("tgw"))
                .args(bp.flags())
                .args(["-a", "127.0.0.1", "-n", &port.to_string()])
                .args(["-g", TO_DEVICE, "-e", FROM_DEVICE])
                .args(["--reconnect-max", "200ms"])
                .args(extra)
                .env("NO_COLOR", "1"),
        );
        gw.wait_for_text("TcpGateway using Back Plane IP address")
            .await;
        Rig {
            _bp: bp,
            gw,
            listener: Some(listener),
            port,
            client,
            from_device,
        }
    }

    async fn accept(&mut self) -> TcpStream {
        let listener = self.listener.as_ref().expect("listening");
        let (stream, _) = within("the gateway to connect", listener.accept())
            .await
            .expect("accept");
        stream.set_nodelay(true).expect("TCP_NODELAY");
        stream
    }

    async fn publish(&self, payload: Vec<u8>) {
        self.client
            .publish_raw(TO_DEVICE, payload)
            .await
            .expect("published");
    }

    async fn next_from_device(&mut self) -> Vec<u8> {
        let message = recv(&mut self.from_device, "a message from the device").await;
        assert_eq!(message.topic(), FROM_DEVICE);
        message.payload().to_vec()
    }
}

/// Reads one frame with a `width`-byte big-endian length prefix.
async fn read_frame(stream: &mut TcpStream, width: usize) -> Vec<u8> {
    within("a frame from the gateway", async {
        let mut prefix = [0u8; 4];
        stream
            .read_exact(&mut prefix[4 - width..])
            .await
            .expect("the length prefix");
        let mut payload = vec![0u8; u32::from_be_bytes(prefix) as usize];
        stream.read_exact(&mut payload).await.expect("the payload");
        payload
    })
    .await
}

fn frame(payload: &[u8], width: usize) -> Vec<u8> {
    let length = (payload.len() as u32).to_be_bytes();
    let mut out = length[4 - width..].to_vec();
    out.extend_from_slice(payload);
    out
}

fn encode(value: &Value) -> Vec<u8> {
    banyan_core::envelope::encode(value)
}

/// A MessagePack bin value whose encoding is exactly `size` bytes (bin 8
/// for sizes up to 257, else bin 16).
fn bin_of_size(size: usize, fill: u8) -> Vec<u8> {
    let value = if size <= 257 {
        Value::Binary(vec![fill; size - 2])
    } else {
        Value::Binary(vec![fill; size - 3])
    };
    let bytes = encode(&value);
    assert_eq!(bytes.len(), size);
    bytes
}

#[tokio::test(flavor = "multi_thread")]
async fn both_directions_byte_exact_and_goodbye_on_sigterm() {
    let mut rig = Rig::start(&[]).await;
    let mut device = rig.accept().await;

    // Bus → device: frame 2 exactly, behind one length byte; no topic.
    let payloads = vec![
        encode(&Value::Map(vec![(
            Value::from("command"),
            Value::from("digital_write"),
        )])),
        encode(&Value::from(7)),
        // Not canonical MessagePack (7 as a uint 32): passed on untouched.
        vec![0xce, 0, 0, 0, 7],
        encode(&Value::Binary(vec![0, 1, 2, 255])),
    ];
    for payload in &payloads {
        rig.publish(payload.clone()).await;
    }
    for payload in &payloads {
        assert_eq!(&read_frame(&mut device, 1).await, payload);
    }

    // Device → bus: published unchanged; a zero length is ignored.
    let report = vec![
        0x81, 0xa9, b'p', b'i', b'c', b'o', b'_', b'd', b'a', b't', b'a', 0x00,
    ];
    let mut wire = vec![0u8];
    wire.extend(frame(&report, 1));
    wire.extend(frame(&[0xcc, 0xff], 1));
    device.write_all(&wire).await.expect("device writes");
    assert_eq!(rig.next_from_device().await, report);
    assert_eq!(rig.next_from_device().await, vec![0xcc, 0xff]);

    // SIGTERM: exit 0, and the device sees the connection closed.
    assert_eq!(rig.gw.stop(false).await, Some(0));
    let mut rest = Vec::new();
    within("the gateway's goodbye (EOF)", device.read_to_end(&mut rest))
        .await
        .expect("clean close");
    assert!(rest.is_empty(), "nothing after the goodbye: {rest:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn split_and_coalesced_frames() {
    let mut rig = Rig::start(&[]).await;
    let mut device = rig.accept().await;

    // One frame written a byte at a time.
    let payload = encode(&Value::from("split across many writes"));
    for byte in frame(&payload, 1) {
        device.write_all(&[byte]).await.expect("device writes");
        device.flush().await.expect("flush");
    }
    assert_eq!(rig.next_from_device().await, payload);

    // Many frames in one write.
    let mut wire = Vec::new();
    for n in 0..100u8 {
        wire.extend(frame(&encode(&Value::from(n)), 1));
    }
    device.write_all(&wire).await.expect("device writes");
    for n in 0..100u8 {
        assert_eq!(rig.next_from_device().await, encode(&Value::from(n)));
    }
}

/// 255- and 256-byte payloads both ways with a `width`-byte prefix.
async fn prefix_boundaries(width: usize) {
    let width_flag = width.to_string();
    let mut rig = Rig::start(&["--prefix", &width_flag]).await;
    let mut device = rig.accept().await;

    let fits = bin_of_size(255, 1);
    let bigger = bin_of_size(256, 2);
    let marker = encode(&Value::from("marker"));
    rig.publish(fits.clone()).await;
    rig.publish(bigger.clone()).await;
    rig.publish(marker.clone()).await;
    assert_eq!(read_frame(&mut device, width).await, fits);
    if width == 1 {
        // Not sent, logged with topic and size; forwarding goes on.
        assert_eq!(read_frame(&mut device, width).await, marker);
        rig.gw
            .wait_for("the too-large frame logged with topic and size", |l| {
                l.contains("too large") && l.contains(TO_DEVICE) && l.contains("size=256")
            })
            .await;
    } else {
        assert_eq!(read_frame(&mut device, width).await, bigger);
        assert_eq!(read_frame(&mut device, width).await, marker);
        let mut wire = frame(&fits, width);
        wire.extend(frame(&bigger, width));
        device.write_all(&wire).await.expect("device writes");
        assert_eq!(rig.next_from_device().await, fits);
        assert_eq!(rig.next_from_device().await, bigger);
    }
    // A 255-byte payload from the device always fits.
    device
        .write_all(&frame(&fits, width))
        .await
        .expect("device writes");
    assert_eq!(rig.next_from_device().await, fits);
}

#[tokio::test(flavor = "multi_thread")]
async fn prefix_of_one_byte_refuses_256() {
    prefix_boundaries(1).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn prefix_of_two_bytes_carries_256() {
    prefix_boundaries(2).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn prefix_of_four_bytes_carries_256() {
    prefix_boundaries(4).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reconnects_after_the_device_restarts_and_delivers_the_queue() {
    let mut rig = Rig::start(&[]).await;
    let mut device = rig.accept().await;
    rig.publish(encode(&Value::from("before"))).await;
    assert_eq!(
        read_frame(&mut device, 1).await,
        encode(&Value::from("before"))
    );

    // The device goes away: connection and listener closed.
    drop(device);
    rig.listener = None;
    rig.gw
        .wait_for_text("disconnected: the device closed the connection")
        .await;
    rig.gw.wait_for_text("cannot connect").await;

    // Published while nothing listens: only the queue can deliver them.
    let queued: Vec<Vec<u8>> = (0..3)
        .map(|n| encode(&Value::from(format!("while away {n}"))))
        .collect();
    for payload in &queued {
        rig.publish(payload.clone()).await;
    }

    // The device comes back on the same port.
    rig.listener = Some(device_listener(rig.port, false));
    let mut device = rig.accept().await;
    for payload in &queued {
        assert_eq!(&read_frame(&mut device, 1).await, payload);
    }
    rig.gw.wait_for_text("connected").await;
    device
        .write_all(&frame(&[0x2a], 1))
        .await
        .expect("device writes");
    assert_eq!(rig.next_from_device().await, vec![0x2a]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_device_that_never_reads_stalls_nothing_and_memory_stays_bounded() {
    // The earlier spelling of --stall-grace, in seconds: still accepted.
    let mut rig = Rig::start_with(&["--queue", "100", "--slow-device-grace", "0.2"], true).await;
    let mut device = rig.accept().await;
    // Far more than the socket buffers hold.
    const COUNT: usize = 20_000;
    for n in 0..COUNT {
        let mut payload = bin_of_size(250, (n % 251) as u8);
        payload[2..10].copy_from_slice(&(n as u64).to_be_bytes());
        rig.publish(payload).await;
    }
    rig.gw.wait_for_text("dropping its oldest messages").await;

    // The other direction still flows.
    device
        .write_all(&frame(&[0xc3], 1))
        .await
        .expect("device writes");
    assert_eq!(rig.next_from_device().await, vec![0xc3]);

    // The device starts reading: everything it gets is in order and ends
    // with the newest; the rest was dropped and counted.
    let mut received = 0usize;
    let mut last = None;
    loop {
        let payload = read_frame(&mut device, 1).await;
        let n = u64::from_be_bytes(payload[2..10].try_into().expect("8 bytes")) as usize;
        if let Some(previous) = last {
            assert!(n > previous, "out of order: {n} after {previous}");
        }
        last = Some(n);
        received += 1;
        if n == COUNT - 1 {
            break;
        }
    }
    let rss_kb = std::fs::read_to_string(format!("/proc/{}/status", rig.gw.pid()))
        .expect("tgw status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .expect("VmRSS");
    // The 5 MB published never sat in the gateway at once.
    assert!(rss_kb < 64 * 1024, "tgw uses {rss_kb} kB");

    // Every message before the newest was delivered or dropped: the final
    // count adds up, and every drop was the stall's.
    let dropped = assert_stall_ended_with_every_drop_counted(&mut rig.gw).await as usize;
    assert_eq!(
        received + dropped,
        COUNT,
        "every message delivered or counted"
    );
}

/// A device that reads, but slower than a burst from the bus, behind a
/// queue of 100 and a small socket buffer: the bus waits for it and it gets
/// every message, in order.
#[tokio::test(flavor = "multi_thread")]
async fn a_device_slower_than_the_bus_loses_nothing() {
    let mut rig = Rig::start_with(&["--queue", "100"], true).await;
    let mut device = rig.accept().await;
    // Far more than the queue and the socket buffers hold.
    const COUNT: usize = 5_000;
    for n in 0..COUNT {
        let mut payload = bin_of_size(250, 0);
        payload[2..10].copy_from_slice(&(n as u64).to_be_bytes());
        rig.publish(payload).await;
    }
    for expected in 0..COUNT {
        let payload = read_frame(&mut device, 1).await;
        let n = u64::from_be_bytes(payload[2..10].try_into().expect("8 bytes")) as usize;
        assert_eq!(n, expected, "lost or out of order");
        if expected % 500 == 0 {
            // The device's pace: slower than the bus, yet never silent for
            // the grace period (1 s).
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    assert_eq!(rig.gw.stop(false).await, Some(0));
    let line = rig.gw.wait_for_text("stopped: ").await;
    assert_eq!(
        (
            count(&line, "dropped_away"),
            count(&line, "dropped_stalled")
        ),
        (0, 0),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_device_is_reconnected_and_invalid_frames_are_refused() {
    let mut rig = Rig::start(&["--idle-timeout", "0.5", "--validate"]).await;
    let mut device = rig.accept().await;
    // Not MessagePack (0xc1 is reserved), then valid.
    let mut wire = frame(&[0xc1], 1);
    wire.extend(frame(&[0x01], 1));
    device.write_all(&wire).await.expect("device writes");
    assert_eq!(rig.next_from_device().await, vec![0x01]);
    rig.gw.wait_for_text("not published").await;

    // Then the device says nothing: the gateway gives up on it and comes
    // back on a new connection.
    rig.gw
        .wait_for_text("disconnected: no frame from the device")
        .await;
    let mut again = rig.accept().await;
    again
        .write_all(&frame(&[0x02], 1))
        .await
        .expect("device writes");
    assert_eq!(rig.next_from_device().await, vec![0x02]);
    drop(device);
}

/// Publishes `1` on `to_dev_2`, then `2` on `to_dev`, and returns the first
/// payload the device gets: `1` when the gateway forwards prefix matches
/// (python's `tgw`), `2` when it matches exactly.
async fn first_to_device(rig: &mut Rig, device: &mut TcpStream) -> Vec<u8> {
    for (topic, n) in [("to_dev_2", 1), ("to_dev", 2)] {
        rig.client
            .publish(topic, &Value::from(n))
            .await
            .expect("published");
    }
    read_frame(device, 1).await
}

#[tokio::test(flavor = "multi_thread")]
async fn topics_match_as_prefixes_as_pythons_tgw_and_exactly_with_match_exact() {
    // python's tgw forwards all its ZeroMQ subscription delivers.
    let mut rig = Rig::start(&[]).await;
    let mut device = rig.accept().await;
    assert_eq!(
        first_to_device(&mut rig, &mut device).await,
        encode(&Value::from(1))
    );
    assert_eq!(read_frame(&mut device, 1).await, encode(&Value::from(2)));

    // The opt-in: only `to_dev` itself.
    let mut rig = Rig::start(&["--match", "exact"]).await;
    let mut device = rig.accept().await;
    assert_eq!(
        first_to_device(&mut rig, &mut device).await,
        encode(&Value::from(2)),
        "to_dev_2 was forwarded under --match exact"
    );
    rig.gw.expect_text("not sent to the device").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn python_banyan_and_a_micropython_style_device() {
    let bp = BackplaneProc::start().await;
    let script = root().join("tests/python/tcp_device.py");
    let mut device = Proc::spawn(
        "tcp_device.py",
        Command::new(python()).arg(&script).stdin(Stdio::piped()),
    );
    let line = device.wait_for_text("LISTENING ").await;
    let port = line.trim_start_matches("LISTENING ").trim().to_owned();

    let peer_script = root().join("tests/python/banyan_peer.py");
    let mut sub = Proc::spawn(
        "banyan_peer sub",
        Command::new(python())
            .arg(&peer_script)
            .arg("sub")
            .args(bp.flags())
            .args(["--topic", FROM_DEVICE, "--count", "1"]),
    );
    sub.wait_for_text("READY").await;

    let mut gw = Proc::spawn(
        "tgw",
        Command::new(exe("tgw")).args(bp.flags()).args([
            "-a",
            "127.0.0.1",
            "-n",
            &port,
            "-g",
            TO_DEVICE,
            "-e",
            FROM_DEVICE,
        ]),
    );
    gw.wait_for_text("TcpGateway using Back Plane IP address")
        .await;
    device.wait_for_text("CONNECTED").await;

    // python-banyan → tgw → device.
    let command = Value::Map(vec![
        (Value::from("command"), Value::from("digital_write")),
        (Value::from("pin"), Value::from(4)),
        (Value::from("value"), Value::from(1)),
    ]);
    let mut publisher = Proc::spawn(
        "banyan_peer pub",
        Command::new(python())
            .arg(&peer_script)
            .arg("pub")
            .args(bp.flags())
            .args(["--topic", TO_DEVICE])
            .stdin(Stdio::piped()),
    );
    publisher.wait_for_text("READY").await;
    let stdin = publisher.stdin().expect("piped stdin");
    writeln!(stdin, "{}", hex(&encode(&command))).expect("write stdin");
    publisher.close_stdin();
    publisher.wait_for_text("DONE 1").await;
    let got = device.wait_for_text("GOT ").await;
    assert_eq!(decode_hex(got.trim_start_matches("GOT ")), command);

    // device → tgw → python-banyan.
    let report = Value::Map(vec![(Value::from("pico_data"), Value::from(17))]);
    let stdin = device.stdin().expect("piped stdin");
    writeln!(stdin, "{}", hex(&encode(&report))).expect("write stdin");
    stdin.flush().expect("flush");
    let line = sub.wait_for_text(FROM_DEVICE).await;
    let (topic, payload) = line.split_once('\t').expect("topic\\thex");
    assert_eq!(topic, FROM_DEVICE);
    assert_eq!(decode_hex(payload), report);

    device.close_stdin();
    assert_eq!(gw.stop(true).await, Some(0));
    device.wait_for_text("CLOSED").await;
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_hex(text: &str) -> Value {
    let text = text.trim();
    let bytes: Vec<u8> = (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect();
    banyan_core::envelope::decode(&bytes).expect("one MessagePack value")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_length_prefix_over_the_limit_ends_the_connection_and_the_next_one_works() {
    let mut rig = Rig::start(&["--prefix", "2", "--max-payload", "100"]).await;
    let mut device = rig.accept().await;
    // A good frame, then a length of 255: more than the gateway reads, so
    // the stream can no longer be trusted.
    let mut wire = frame(&[0x01], 2);
    wire.extend([0x00, 0xff, 0x00]);
    device.write_all(&wire).await.expect("device writes");
    assert_eq!(rig.next_from_device().await, vec![0x01]);
    rig.gw
        .wait_for_text("disconnected: reading failed: frame size too big")
        .await;
    let mut buf = [0u8; 16];
    // Closed: an end of stream, or a reset if a byte was still unread.
    match within("the gateway to close the bad stream", device.read(&mut buf)).await {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("the bad stream is still open: {other:?}"),
    }
    // It comes back on a new connection, and frames pass again.
    let mut again = rig.accept().await;
    again
        .write_all(&frame(&[0x02], 2))
        .await
        .expect("device writes");
    assert_eq!(rig.next_from_device().await, vec![0x02]);
}
