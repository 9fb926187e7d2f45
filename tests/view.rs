//! The bus view of `wsgw` (`GET /` and its WebSocket `/view`) in headless
//! Chromium, on a real backplane with a python-banyan component publishing:
//! what the page shows, its plot, its publish form against python's own
//! encoding, who may open it, and that the gateway subscribes to the whole
//! bus only while a view is open.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use banyan_core::{Message, Messages};
use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value as Json};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};

use crate::util::*;
use crate::ws::cdp::Browser;

/// Where the python component publishes its reports.
const REPORTS: &str = "from_arduino_gateway";
/// The size the view is shown at (and its screenshot taken at).
const VIEWPORT: (u32, u32) = (1280, 860);

/// A running `wsgw` on a free port (`-w 0`, read from its banner).
struct Wsgw {
    proc: Proc,
    port: u16,
}

impl Wsgw {
    async fn start(bp: &BackplaneProc) -> Wsgw {
        let mut proc = Proc::spawn(
            "wsgw",
            Command::new(exe("wsgw")).args(bp.flags()).args(["-w", "0"]),
        );
        let line = proc.wait_for_text("WebSocket server on ws://").await;
        let port = line
            .rsplit(':')
            .next()
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        Wsgw { proc, port }
    }

    /// The view's address, as a user types it.
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// A WebSocket handshake for `/view` with these `Host` and `Origin`
    /// headers (none when `None`).
    async fn open_view(&self, host: &str, origin: Option<&str>) -> Result<Ws, WsError> {
        let tcp = within(
            "a TCP connection to wsgw",
            TcpStream::connect(("127.0.0.1", self.port)),
        )
        .await
        .expect("wsgw accepts TCP");
        let mut request = format!("ws://127.0.0.1:{}/view", self.port)
            .into_client_request()
            .expect("a request");
        let headers = request.headers_mut();
        headers.insert("Host", host.parse().expect("a header value"));
        if let Some(origin) = origin {
            headers.insert("Origin", origin.parse().expect("a header value"));
        }
        within(
            "the view's WebSocket handshake",
            tokio_tungstenite::client_async(request, tcp),
        )
        .await
        .map(|(ws, _)| ws)
    }
}

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

/// A python-banyan component (`tests/python/banyan_peer.py pub`) that
/// publishes, with `publish_payload`, one analog report on [`REPORTS`] per
/// line written to it.
struct Reports {
    proc: Proc,
    sent: u64,
}

impl Reports {
    /// Starts it and waits for its readiness probe: from then on, it knows
    /// every subscription the backplane had when it connected.
    async fn start(bp: &BackplaneProc) -> Reports {
        let mut proc = Proc::spawn(
            "banyan_peer pub",
            Command::new(python())
                .arg(root().join("tests/python/banyan_peer.py"))
                .arg("pub")
                .args(bp.flags())
                .args(["--topic", REPORTS])
                .stdin(Stdio::piped()),
        );
        proc.wait_for_text("READY").await;
        Reports { proc, sent: 0 }
    }

    /// Publishes `{"report": "analog_input", "pin": 2, "value": value,
    /// "timestamp": now}`.
    fn send(&mut self, value: i64) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("a clock after 1970")
            .as_secs_f64();
        let report = banyan_core::json::from_json(&format!(
            r#"{{"report": "analog_input", "pin": 2, "value": {value}, "timestamp": {now}}}"#
        ))
        .expect("a report");
        let hex: String = banyan_core::envelope::encode(&report)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let stdin = self.proc.stdin().expect("the component's stdin is piped");
        writeln!(stdin, "{hex}").expect("the component takes a line");
        stdin.flush().expect("flushed");
        self.sent += 1;
    }
}

/// The view in a browser tab, shown at [`VIEWPORT`].
async fn open_view(browser: &mut Browser, gw: &Wsgw) -> String {
    let session = browser.cdp.open(&gw.url()).await;
    browser
        .cdp
        .call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": VIEWPORT.0, "height": VIEWPORT.1, "deviceScaleFactor": 1, "mobile": false}),
            Some(&session),
        )
        .await;
    browser
        .wait_for(&session, STATUS, "the view connected (\"live\")", |s| {
            s["status"] == "live"
        })
        .await;
    session
}

/// The connection status the view shows.
const STATUS: &str = "JSON.stringify({status: document.getElementById('status').textContent})";

/// What the view shows of `topic`: its row's count and payload cells, the
/// plot's points and title, the publish form's status, and the pages table.
fn shown(topic: &str) -> String {
    let selector = serde_json::to_string(&format!("#topics tr[data-topic=\"{topic}\"]"))
        .expect("a JSON string");
    format!(
        "JSON.stringify((() => {{
            const row = document.querySelector({selector});
            const text = (el) => el ? el.textContent : null;
            return {{
                status: text(document.getElementById('status')),
                count: row && text(row.querySelector('.count')),
                payload: row && text(row.querySelector('.payload')),
                chip: row && !!row.querySelector('.field.on'),
                points: Number(document.getElementById('plot').dataset.points),
                plot: text(document.getElementById('plot-title')),
                published: text(document.getElementById('publish-status')),
                publishError: document.getElementById('publish-status').className === 'error',
                pages: [...document.querySelectorAll('#pages tbody tr')].map(
                    (r) => [...r.cells].map((c) => c.textContent)),
            }};
        }})())"
    )
}

/// Evaluates `expression` (a JSON text) until `done` accepts it, doing
/// `each` before every look (publishing, so that there is something new to
/// show), within [`DEADLINE`]. The DOM offers no event to an outside
/// reader: it is polled, bounded.
async fn poll(
    browser: &mut Browser,
    session: &str,
    expression: &str,
    what: &str,
    mut each: impl FnMut(),
    done: impl Fn(&Json) -> bool,
) -> Json {
    let deadline = Instant::now() + DEADLINE;
    loop {
        each();
        let value = browser.cdp.evaluate(session, expression).await;
        let state: Json =
            serde_json::from_str(value.as_str().unwrap_or("null")).unwrap_or_default();
        if done(&state) {
            return state;
        }
        assert!(
            Instant::now() < deadline,
            "the view did not show {what} within {DEADLINE:?}; it shows: {state}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Clicks the middle of the element `selector` with the mouse, as a user
/// would: it must be visible and on top there.
async fn click(browser: &mut Browser, session: &str, selector: &str) {
    let quoted = serde_json::to_string(selector).expect("a JSON string");
    let centre = browser
        .cdp
        .evaluate(
            session,
            &format!(
                "(() => {{
                    const el = document.querySelector({quoted});
                    if (!el) return null;
                    el.scrollIntoView({{block: 'center'}});
                    const r = el.getBoundingClientRect();
                    return JSON.stringify({{x: r.left + r.width / 2, y: r.top + r.height / 2}});
                }})()"
            ),
        )
        .await;
    let centre: Json = centre
        .as_str()
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or_else(|| panic!("nothing to click: no {selector} in the view"));
    for kind in ["mouseMoved", "mousePressed", "mouseReleased"] {
        browser
            .cdp
            .call(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": centre["x"], "y": centre["y"], "button": "left", "clickCount": 1}),
                Some(session),
            )
            .await;
    }
}

/// Replaces the text of the field `selector` by typing `text` into it.
async fn type_into(browser: &mut Browser, session: &str, selector: &str, text: &str) {
    let quoted = serde_json::to_string(selector).expect("a JSON string");
    let found = browser
        .cdp
        .evaluate(
            session,
            &format!(
                "(() => {{ const el = document.querySelector({quoted}); \
                 if (!el) return false; el.focus(); el.select(); return true; }})()"
            ),
        )
        .await;
    assert_eq!(found, json!(true), "no {selector} in the view");
    browser
        .cdp
        .call("Input.insertText", json!({"text": text}), Some(session))
        .await;
}

/// Closes the browser tab of `session`.
async fn close_tab(browser: &mut Browser, session: &str) {
    let info = browser
        .cdp
        .call("Target.getTargetInfo", json!({}), Some(session))
        .await;
    let target = info["targetInfo"]["targetId"].clone();
    browser
        .cdp
        .call("Target.closeTarget", json!({"targetId": target}), None)
        .await;
}

/// The next bus message on `topic`, skipping others.
async fn next_on(messages: &mut Messages, topic: &str) -> Message {
    within(&format!("a message on {topic}"), async {
        loop {
            match messages.recv().await {
                Some(message) if message.topic() == topic => return message,
                Some(_) => {}
                None => panic!("the bus connection ended while waiting for {topic}"),
            }
        }
    })
    .await
}

/// What python-banyan's `publish_payload` sends for the JSON `text`:
/// `msgpack.packb(json.loads(text), use_bin_type=True)`, computed by
/// python itself.
fn python_payload(text: &str) -> Vec<u8> {
    let mut packer = Command::new(python())
        .args([
            "-c",
            "import json, sys, msgpack; \
             sys.stdout.write(msgpack.packb(json.loads(sys.stdin.read()), use_bin_type=True).hex())",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python runs");
    packer
        .stdin
        .take()
        .expect("stdin piped")
        .write_all(text.as_bytes())
        .expect("python takes the text");
    let output = packer.wait_with_output().expect("python ends");
    assert!(
        output.status.success(),
        "python could not pack {text}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let hex = String::from_utf8(output.stdout).expect("hex");
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

/// Where the test writes the view's screenshot: beside the build, as
/// `docs/ws-gateway.md` says (the picture in `docs/` is a copy of it).
fn screenshot_path() -> std::path::PathBuf {
    exe("backplane")
        .parent()
        .and_then(|profile| profile.parent())
        .expect("the target directory")
        .join("ws-gateway-view.png")
}

/// An analog reading that rises and falls, so that the plot has a shape.
fn wave(n: u64) -> i64 {
    (512.0 + 300.0 * (n as f64 / 4.0).sin()).round() as i64
}

#[tokio::test(flavor = "multi_thread")]
async fn the_view_shows_each_topic_its_count_and_payload_and_plots_a_field() {
    let bp = BackplaneProc::start().await;
    let gw = Wsgw::start(&bp).await;
    // Subscribed before the python component starts, so that it knows, once
    // ready, that someone wants its reports: it sends them from the first.
    let (watcher, mut seen) = bp.connect().await;
    for topic in [REPORTS, "to_arduino_gateway"] {
        within("a subscription", watcher.subscribe(topic))
            .await
            .expect("subscribed");
    }
    // A OneGPIO page on the gateway, for the view's table of pages.
    let mut page = within(
        "a page to connect",
        ws_connect(&format!("127.0.0.1:{}", gw.port)),
    )
    .await
    .expect("the page connects");
    within(
        "the page's id",
        page.send(WsMessage::text(r#"{"id": "to_arduino_gateway"}"#)),
    )
    .await
    .expect("sent");
    let mut reports = Reports::start(&bp).await;

    let mut browser = Browser::start(&[]).await;
    let session = open_view(&mut browser, &gw).await;
    within(
        "the view's subscription to every topic",
        watcher.wait_for_subscriber(""),
    )
    .await
    .expect("subscribed");

    // Five reports: the row shows all five and the last one's payload.
    for value in 100..105 {
        reports.send(value);
    }
    let state = browser
        .wait_for(
            &session,
            &shown(REPORTS),
            "5 reports, the last payload and the page",
            |s| s["count"] == "5" && s["pages"].as_array().is_some_and(|p| !p.is_empty()),
        )
        .await;
    let payload = state["payload"].as_str().unwrap_or_default();
    assert!(
        payload.contains(r#""report": "analog_input""#) && payload.contains(r#""value": 104"#),
        "the last payload: {state}"
    );
    // The page's reply topic, its one page (its queue moves as it reads).
    assert_eq!(state["pages"][0][0], REPORTS, "{state}");
    assert_eq!(state["pages"][0][1], "1", "{state}");

    // Other traffic on the bus gets rows of its own.
    let other = |n: u64| {
        let reading = banyan_core::json::from_json(&format!(
            r#"{{"temperature": {}, "humidity": {}}}"#,
            21.0 + (n % 8) as f64 / 4.0,
            40 + n % 5
        ))
        .expect("a reading");
        watcher
            .try_send(Message::new("sensors/bme280", &reading))
            .expect("published");
        let pin = banyan_core::json::from_json(&format!(
            r#"{{"report": "digital_input", "pin": 17, "value": {}}}"#,
            n % 2
        ))
        .expect("a report");
        watcher
            .try_send(Message::new("from_rpi_gateway", &pin))
            .expect("published");
    };

    // Picking the numeric field "value" plots it as reports keep coming.
    let chip = format!("#topics tr[data-topic=\"{REPORTS}\"] .field[data-path=\"value\"]");
    click(&mut browser, &session, &chip).await;
    let mut n = 0;
    let state = poll(
        &mut browser,
        &session,
        &shown(REPORTS),
        "a plot of value with a line, not a dot",
        || {
            n += 1;
            reports.send(wave(n));
            other(n);
        },
        // More than one point is the point; ten make a line worth a picture.
        |s| s["points"].as_u64().is_some_and(|points| points >= 10),
    )
    .await;
    assert_eq!(state["plot"], json!(format!("{REPORTS} · value")));
    assert_eq!(state["chip"], json!(true), "the picked chip is marked");
    // Every report counted, none twice.
    let sent = reports.sent.to_string();
    browser
        .wait_for(&session, &shown(REPORTS), &format!("{sent} reports"), |s| {
            s["count"] == json!(sent)
        })
        .await;

    // The publish form, as it comes: a OneGPIO command reaches the bus.
    click(&mut browser, &session, "#publish-button").await;
    let command = next_on(&mut seen, "to_arduino_gateway").await;
    assert_eq!(
        banyan_core::json::to_json(&command.value().expect("MessagePack")).expect("JSON"),
        r#"{"command": "digital_write", "pin": 4, "value": 1}"#
    );
    let state = browser
        .wait_for(
            &session,
            &shown("to_arduino_gateway"),
            "the published command",
            |s| s["count"] == "1" && s["published"] == "published on to_arduino_gateway",
        )
        .await;
    assert_eq!(state["publishError"], json!(false));

    let shot = browser
        .cdp
        .call(
            "Page.captureScreenshot",
            json!({"format": "png"}),
            Some(&session),
        )
        .await;
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().expect("screenshot data"))
        .expect("base64");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    std::fs::write(screenshot_path(), &png).expect("screenshot written");
    browser.close().await;
    drop(page);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_publish_form_publishes_the_bytes_python_would() {
    let bp = BackplaneProc::start().await;
    let gw = Wsgw::start(&bp).await;
    let (listener, mut inbox) = bp.connect().await;
    within("a subscription", listener.subscribe("view_test"))
        .await
        .expect("subscribed");
    let mut browser = Browser::start(&[]).await;
    let session = open_view(&mut browser, &gw).await;

    // Floats that look like integers stay floats (python's json.loads),
    // non-ASCII text is UTF-8, big and negative integers keep their type.
    let text = r#"{"value": 1.0, "name": "Grüße, 世界 ☃", "count": -3, "big": 12345678901, "ratio": 0.1, "list": [1, 2.5, "x", null, true, false], "nested": {"empty": {}, "none": []}}"#;
    type_into(&mut browser, &session, "#publish-topic", "view_test").await;
    type_into(&mut browser, &session, "#publish-payload", text).await;
    click(&mut browser, &session, "#publish-button").await;
    let published = next_on(&mut inbox, "view_test").await;
    assert_eq!(
        published.payload().as_ref(),
        python_payload(text).as_slice(),
        "the view's publication and python's differ"
    );
    browser
        .wait_for(&session, &shown("view_test"), "the publication", |s| {
            s["published"] == "published on view_test"
        })
        .await;

    // Text that is not JSON is refused in the page; nothing is published.
    type_into(&mut browser, &session, "#publish-payload", "{\"value\": 1,").await;
    click(&mut browser, &session, "#publish-button").await;
    let state = browser
        .wait_for(&session, &shown("view_test"), "the refusal", |s| {
            s["publishError"] == true
        })
        .await;
    assert!(
        state["published"]
            .as_str()
            .is_some_and(|t| t.starts_with("not JSON")),
        "{state}"
    );
    assert_nothing_before_marker(&listener, &mut inbox, "view_test_marker").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn other_sites_cannot_open_the_view_so_cannot_publish() {
    let bp = BackplaneProc::start().await;
    let gw = Wsgw::start(&bp).await;
    let own = format!("127.0.0.1:{}", gw.port);
    let refused = |result: Result<Ws, WsError>, what: &str| match result {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 403, "{what}"),
        Ok(_) => panic!("{what}: the view was opened"),
        Err(e) => panic!("{what}: expected HTTP 403, got {e}"),
    };
    refused(
        gw.open_view(&own, Some("http://evil.example")).await,
        "another site's page",
    );
    refused(gw.open_view(&own, None).await, "no Origin");
    refused(
        gw.open_view(&own, Some("null")).await,
        "a page opened from disk",
    );
    // A site whose name was made to resolve to this machine (DNS
    // rebinding): to the browser, the gateway is that site's own server.
    let rebound = format!("evil.example:{}", gw.port);
    refused(
        gw.open_view(&rebound, Some(&format!("http://{rebound}")))
            .await,
        "a rebound site name",
    );
    // Nothing of it reached the bus: the view never subscribed.
    let (watcher, _) = bp.connect().await;
    within(
        "no subscription to every topic",
        watcher.wait_for_no_subscriber(""),
    )
    .await
    .expect("no subscriber");
    assert!(
        !gw.proc.output().contains("bus view opened"),
        "{}",
        gw.proc.output()
    );

    // The view's own page may, and by this machine's other names.
    for host in [own.clone(), format!("localhost:{}", gw.port)] {
        let mut view = gw
            .open_view(&host, Some(&format!("http://{host}")))
            .await
            .unwrap_or_else(|e| panic!("the view's own origin {host} refused: {e}"));
        let snapshot = within("a snapshot", async {
            loop {
                match view.next().await {
                    Some(Ok(WsMessage::Text(text))) => {
                        return serde_json::from_str::<Json>(text.as_str()).expect("JSON")
                    }
                    Some(Ok(_)) => {}
                    other => panic!("no snapshot: {other:?}"),
                }
            }
        })
        .await;
        assert!(snapshot["topics"].is_array(), "{snapshot}");
    }
    assert!(
        gw.proc.output().contains("bus view refused"),
        "{}",
        gw.proc.output()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_view_subscribes_to_the_bus_only_while_it_is_open() {
    let bp = BackplaneProc::start().await;
    let mut gw = Wsgw::start(&bp).await;
    let (watcher, _) = bp.connect().await;
    within(
        "nobody subscribed to every topic",
        watcher.wait_for_no_subscriber(""),
    )
    .await
    .expect("no subscriber");

    let mut browser = Browser::start(&[]).await;
    let first = open_view(&mut browser, &gw).await;
    let second = open_view(&mut browser, &gw).await;
    within(
        "the view's subscription to every topic",
        watcher.wait_for_subscriber(""),
    )
    .await
    .expect("subscribed");
    gw.proc.expect_text("bus view opened").await;

    // One view leaves: the other still sees what is published after that.
    close_tab(&mut browser, &first).await;
    gw.proc.wait_for_text("a bus view left; 1 still open").await;
    watcher
        .publish("after_the_first_left", &banyan_core::rmpv::Value::from(1))
        .await
        .expect("published");
    browser
        .wait_for(
            &second,
            &shown("after_the_first_left"),
            "a message published after the first view left",
            |s| s["count"] == "1",
        )
        .await;

    // The last one leaves: the gateway lets go of the bus.
    close_tab(&mut browser, &second).await;
    within(
        "the view to let go of every topic",
        watcher.wait_for_no_subscriber(""),
    )
    .await
    .expect("no subscriber");
    gw.proc.expect_text("bus view closed").await;

    // And takes it again for the next view.
    let again = open_view(&mut browser, &gw).await;
    within(
        "the view's subscription again",
        watcher.wait_for_subscriber(""),
    )
    .await
    .expect("subscribed");
    close_tab(&mut browser, &again).await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn at_most_sixteen_views_are_open_at_once() {
    let bp = BackplaneProc::start().await;
    let mut gw = Wsgw::start(&bp).await;
    let own = format!("127.0.0.1:{}", gw.port);
    let origin = format!("http://{own}");
    let mut views = Vec::new();
    for n in 1..=16 {
        let view = gw
            .open_view(&own, Some(&origin))
            .await
            .unwrap_or_else(|e| panic!("view {n} of 16 refused: {e}"));
        views.push(view);
    }
    match gw.open_view(&own, Some(&origin)).await {
        Err(WsError::Http(response)) => {
            assert_eq!(response.status(), 503);
            let body = response
                .body()
                .as_ref()
                .map(|body| String::from_utf8_lossy(body).into_owned())
                .unwrap_or_default();
            assert!(body.contains("16 bus views are open"), "{body:?}");
        }
        Ok(_) => panic!("a 17th view was opened"),
        Err(e) => panic!("expected HTTP 503 for a 17th view, got {e}"),
    }
    // One leaves: its place is free again.
    let mut leaving = views.pop().expect("a view");
    within("the view's close", leaving.close(None))
        .await
        .expect("closed");
    gw.proc
        .wait_for_text("a bus view left; 15 still open")
        .await;
    gw.open_view(&own, Some(&origin))
        .await
        .expect("a view once another left");
}
