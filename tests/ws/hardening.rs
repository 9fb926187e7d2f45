//! What a misbehaving client must not do to the gateway: grow its memory
//! with pings it never takes the answers of, lock pages out with idle
//! sockets, or break the protocol without being told why.

use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;

use super::raw::{client_frame, frame, Raw, BINARY, CONTINUATION, PING, TEXT};
use super::{bus, next_json, peak_memory_kib, publish, send, Gateway};
use crate::util::*;

/// Bytes of pings each flooding client sends: more than wsgw may hold.
const PING_FLOOD: usize = 64 << 20;

/// Pings of the largest control payload (125 bytes), 512 to a write, until
/// [`PING_FLOOD`] bytes are written or the gateway stops reading (the write
/// then waits until the test ends and drops it).
async fn flood(mut writer: OwnedWriteHalf) -> std::io::Result<()> {
    let ping = client_frame(PING, &[b'p'; 125]);
    let chunk: Vec<u8> = ping
        .iter()
        .copied()
        .cycle()
        .take(ping.len() * 512)
        .collect();
    let mut sent = 0;
    while sent < PING_FLOOD {
        writer.write_all(&chunk).await?;
        sent += chunk.len();
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ping_flood_from_a_client_that_never_reads_is_read_no_further() {
    let bp = BackplaneProc::start().await;
    let mut gw = Gateway::start(&bp, &[]).await;
    // One floods before sending an id, one after: both phases read pings.
    let early = Raw::open(gw.port).await;
    let mut late = Raw::open(gw.port).await;
    late.send(&client_frame(TEXT, br#"{"id": "to_flood"}"#))
        .await;
    // Their reading halves stay open and are never read.
    let _unread = (early.reader, late.reader);
    let mut floods: FuturesUnordered<_> = [early.writer, late.writer]
        .into_iter()
        .map(|writer| tokio::spawn(flood(writer)))
        .collect();

    // Either wsgw stops reading each flooder (it takes no pongs), or it
    // reads both floods to the end (and holds a pong for every ping).
    let (mut held_back, mut read_through) = (0, 0);
    while held_back + read_through < 2 {
        tokio::select! {
            Some(done) = floods.next() => {
                done.expect("flood task").expect("flood written");
                read_through += 1;
            }
            _ = gw.proc.wait_for_text("reading nothing more from it") => held_back += 1,
        }
    }

    // Other pages are served as usual meanwhile.
    let (device, mut commands) = bus(&bp, &["to_calm"]).await;
    let mut calm = gw.join("to_calm", &mut commands).await;
    device
        .wait_for_subscriber("from_calm")
        .await
        .expect("from_calm");
    publish(&device, "from_calm", json!({"report": "fine"})).await;
    assert_eq!(
        next_json(&mut calm, "a report beside the floods").await,
        json!({"report": "fine"})
    );

    let peak = peak_memory_kib(gw.proc.pid());
    assert!(
        peak < 24 * 1024,
        "wsgw's peak memory is {peak} KiB after {} MiB of pings from clients that take no pongs",
        2 * (PING_FLOOD >> 20)
    );
    assert_eq!(
        (held_back, read_through),
        (2, 0),
        "wsgw kept reading pings from clients that take none of its pongs"
    );
    for flood in floods {
        flood.abort();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_page_costs_wsgw_little_memory() {
    // Few enough pages for the usual `ulimit -n` of 1,024 in this process
    // (it runs other tests meanwhile); `banyan-bench run ws` measures 2,000.
    const PAGES: usize = 300;
    let bp = BackplaneProc::start().await;
    let gw = Gateway::start(&bp, &["--max-clients", "400"]).await;
    let (_device, mut commands) = bus(&bp, &["to_idle"]).await;
    let before = memory_kib(gw.proc.pid());
    let mut pages = Vec::with_capacity(PAGES);
    for n in 0..PAGES {
        let mut page = gw.connect().await;
        send(&mut page, r#"{"id": "to_idle"}"#).await;
        send(&mut page, &json!({"joined": n}).to_string()).await;
        pages.push(page);
    }
    // A page's later messages are read once it has joined.
    for _ in 0..PAGES {
        recv(&mut commands, "a page's command after its id").await;
    }
    let per_page = (memory_kib(gw.proc.pid()).saturating_sub(before)) as f64 / PAGES as f64;
    assert!(
        per_page <= 32.0,
        "wsgw holds {per_page:.1} KiB per idle page ({PAGES} pages)"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_connections_do_not_lock_pages_out() {
    // More idle TCP connections than --max-clients (256, the default) and
    // than the handshakes allowed to wait (--max-pending, 64).
    const IDLE: usize = 300;
    let bp = BackplaneProc::start().await;
    let mut gw = Gateway::start(&bp, &[]).await;
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        idle.push(
            within(
                "an idle TCP connection to wsgw",
                TcpStream::connect(("127.0.0.1", gw.port)),
            )
            .await
            .expect("wsgw accepts TCP"),
        );
    }
    // A page arriving after them connects, and works both ways.
    let (device, mut commands) = bus(&bp, &["to_late"]).await;
    let mut page = gw.join("to_late", &mut commands).await;
    device
        .wait_for_subscriber("from_late")
        .await
        .expect("from_late");
    publish(&device, "from_late", json!({"report": "served"})).await;
    assert_eq!(
        next_json(&mut page, "the late page's report").await,
        json!({"report": "served"})
    );
    gw.proc
        .expect_text("waiting for its WebSocket upgrade longest")
        .await;
    drop(idle);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_gateway_answers_503_and_takes_pages_again_when_one_leaves() {
    let bp = BackplaneProc::start().await;
    let mut gw = Gateway::start(&bp, &["--max-clients", "2"]).await;
    let (_device, mut commands) = bus(&bp, &["to_full"]).await;
    let mut first = gw.join("to_full", &mut commands).await;
    let _second = gw.join("to_full", &mut commands).await;

    let (mut refused, head) = Raw::upgrade(gw.port, None).await;
    assert!(
        head.starts_with("HTTP/1.1 503"),
        "a third page while two are connected (--max-clients 2): {head}"
    );
    let body = String::from_utf8_lossy(&refused.reader.rest().await).into_owned();
    assert!(body.contains("--max-clients"), "503 body: {body:?}");
    gw.proc
        .expect_text("connection refused: 2 pages are connected")
        .await;

    first.close(None).await.expect("close sent");
    gw.proc.wait_for_text("client left").await;
    let _third = gw.join("to_full", &mut commands).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn protocol_errors_are_answered_with_their_close_code_and_logged() {
    let invalid_utf8 = [b'{', 0xff, 0xfe, b'}'];
    let cases: [(&str, Vec<u8>, u16); 9] = [
        (
            "invalid UTF-8 in a text frame",
            client_frame(TEXT, &invalid_utf8),
            1007,
        ),
        (
            "invalid UTF-8 across fragments",
            [
                frame(false, false, TEXT, true, &[b'"', 0xe2]),
                frame(true, false, CONTINUATION, true, &[0x28, 0xa1, b'"']),
            ]
            .concat(),
            1007,
        ),
        (
            "an unmasked frame",
            frame(true, false, TEXT, false, b"{}"),
            1002,
        ),
        (
            "RSV1 without an extension",
            frame(true, true, TEXT, true, b"{}"),
            1002,
        ),
        ("a reserved data opcode", client_frame(0x3, b"{}"), 1002),
        ("a reserved control opcode", client_frame(0xb, b""), 1002),
        (
            "a control frame over 125 bytes",
            client_frame(PING, &[b'p'; 126]),
            1002,
        ),
        (
            "a fragmented ping",
            frame(false, false, PING, true, b"p"),
            1002,
        ),
        (
            "a continuation with nothing to continue",
            client_frame(CONTINUATION, b"{}"),
            1002,
        ),
    ];
    let bp = BackplaneProc::start().await;
    let mut gw = Gateway::start(&bp, &[]).await;
    let (_device, mut commands) = bus(&bp, &["to_rude"]).await;
    let mut bystander = gw.join("to_rude", &mut commands).await;
    for (i, (case, bytes, expected)) in cases.into_iter().enumerate() {
        let mut raw = Raw::open(gw.port).await;
        // Half the cases after the id message, half before.
        if i % 2 == 0 {
            raw.send(&client_frame(TEXT, br#"{"id": "to_rude"}"#)).await;
        }
        raw.send(&bytes).await;
        let (code, reason) = raw.reader.close_frame().await;
        assert_eq!(code, expected, "{case}: close code (reason {reason:?})");
        assert!(!reason.is_empty(), "{case}: a close frame without a reason");
        let logged = gw.proc.wait_for_text("WARN").await;
        assert!(
            logged.contains("protocol") || logged.contains("UTF-8"),
            "{case}: logged {logged:?}"
        );
        assert!(
            raw.reader.next_frame().await.is_none(),
            "{case}: the connection stays open after the close frame"
        );
    }
    // A binary frame is bad input, not a protocol error: the page is told
    // and stays connected (docs/ws-gateway.md, "Bad input").
    let mut raw = Raw::open(gw.port).await;
    raw.send(&client_frame(BINARY, b"\x01")).await;
    let answer = raw.reader.next_frame().await.expect("an answer");
    assert_eq!(answer.opcode, TEXT);
    // Everyone else is fine.
    send(&mut bystander, r#"{"still": "here"}"#).await;
    let command = recv(&mut commands, "the bystander's command").await;
    assert_eq!(command.topic(), "to_rude");
}
