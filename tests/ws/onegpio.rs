//! Drop-in for s3-extend's `wsgw`, which Scratch 3 OneGPIO classrooms run:
//! its flags (`-i PORT`, `-l True|False`), its panic rule, and the editor's
//! origin allowed out of the box. (tests/s3extend.rs runs s3-extend's own
//! launchers.)

use std::process::Command;

use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Error as WsError;

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::{bus, next_json, publish, Gateway};
use crate::util::*;

const EDITOR: &str = "https://mryslab.github.io";

/// Runs `wsgw` with `args` to its exit (a usage error exits at once) and
/// returns its exit code and output.
async fn run_to_exit(bp: &BackplaneProc, args: &[&str]) -> (Option<i32>, String) {
    let mut proc = Proc::spawn(
        "wsgw",
        Command::new(exe("wsgw")).args(bp.flags()).args(args),
    );
    let code = proc.wait().await;
    (code, proc.output())
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_extend_flags_i_and_l_work() {
    let bp = BackplaneProc::start().await;
    // -i is the port, as s3-extend's launchers give it (wsgw -i 9002).
    let mut gw = Gateway::start_with(&bp, &["-i", "0", "-l", "False"], &[]).await;
    let (device, mut commands) = bus(&bp, &["to_esp8266_gateway"]).await;
    let mut page = gw.join("to_esp8266_gateway", &mut commands).await;
    device
        .wait_for_subscriber("from_esp8266_gateway")
        .await
        .expect("subscribed");
    publish(
        &device,
        "from_esp8266_gateway",
        json!({"report": "analog_input", "pin": 0, "value": 3}),
    )
    .await;
    assert_eq!(
        next_json(&mut page, "the report through -i's port").await,
        json!({"report": "analog_input", "pin": 0, "value": 3})
    );
    // -l False: the log is on stderr, as without -l.
    gw.proc.expect_text("stderr: ").await;
    gw.proc.expect_text("client joined").await;

    // -l True: the log goes to ~/wsgw.log, at debug level, and not to stderr.
    let home = std::env::temp_dir().join(format!("banyan-wsgw-home-{}", free_port()));
    std::fs::create_dir_all(&home).expect("a home");
    std::fs::write(home.join("wsgw.log"), "an old log\n").expect("an old log");
    let logged = Gateway::start_with(&bp, &["-w", "0", "-l", "True"], &[("HOME", &home)]).await;
    let (_device, mut commands) = bus(&bp, &["to_rpi_gateway"]).await;
    let _page = logged.join("to_rpi_gateway", &mut commands).await;
    // A log line is written before its call returns; the page's marker
    // reached the bus after "client joined" was logged.
    let log = std::fs::read_to_string(home.join("wsgw.log")).expect("~/wsgw.log");
    assert!(log.contains("client joined"), "~/wsgw.log: {log}");
    assert!(log.contains("DEBUG"), "debug level: {log}");
    assert!(!log.contains("an old log"), "emptied at start: {log}");
    assert!(
        !logged.proc.output().contains("client joined"),
        "logged to stderr too: {}",
        logged.proc.output()
    );
    let _ = std::fs::remove_dir_all(&home);

    // Both -w and -i for different ports, or -l with another word: usage
    // errors, exit code 2.
    let (code, output) = run_to_exit(&bp, &["-w", "9000", "-i", "9001"]).await;
    assert_eq!(code, Some(2), "{output}");
    assert!(output.contains("-w 9000 and -i 9001"), "{output}");
    let (code, output) = run_to_exit(&bp, &["-w", "0", "-l", "yes"]).await;
    assert_eq!(code, Some(2), "{output}");
    assert!(output.contains("True or False"), "{output}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_panic_report_reaches_its_pages_then_closes_them() {
    let bp = BackplaneProc::start().await;
    let mut gw = Gateway::start(&bp, &[]).await;
    let (device, mut commands) = bus(&bp, &["to_arduino_gateway", "to_rpi_gateway"]).await;
    let mut first = gw.join("to_arduino_gateway", &mut commands).await;
    let mut second = gw.join("to_arduino_gateway", &mut commands).await;
    let mut other = gw.join("to_rpi_gateway", &mut commands).await;
    device
        .wait_for_subscriber("from_arduino_gateway")
        .await
        .expect("subscribed");
    device
        .wait_for_subscriber("from_rpi_gateway")
        .await
        .expect("subscribed");

    publish(
        &device,
        "from_arduino_gateway",
        json!({"report": "panic", "timestamp": 1_700_000_000}),
    )
    .await;
    publish(
        &device,
        "from_arduino_gateway",
        json!({"report": "digital_input", "pin": 2, "value": 1}),
    )
    .await;
    for page in [&mut first, &mut second] {
        assert_eq!(
            next_json(page, "the panic report").await,
            json!({"report": "panic", "timestamp": "2023-11-14 22:13:20"})
        );
        // Nothing after the panic but the close, with s3-extend's code
        // (1000).
        match within("the close after the panic", page.next()).await {
            Some(Ok(WsMessage::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::Normal),
            other => panic!("expected the close after the panic, got {other:?}"),
        }
    }
    gw.proc.wait_for_text("reported a panic").await;
    within(
        "wsgw to release from_arduino_gateway",
        device.wait_for_no_subscriber("from_arduino_gateway"),
    )
    .await
    .expect("released");

    // The pages of other topics go on.
    publish(
        &device,
        "from_rpi_gateway",
        json!({"report": "digital_input", "pin": 4, "value": 0}),
    )
    .await;
    assert_eq!(
        next_json(&mut other, "a report on another topic").await,
        json!({"report": "digital_input", "pin": 4, "value": 0})
    );
    assert_eq!(gw.proc.stop(false).await, Some(0));
    let stopped = gw.proc.wait_for_text("stopped: ").await;
    assert_eq!(count(&stopped, "panics"), 2, "{stopped}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_onegpio_editor_connects_by_default_and_other_sites_do_not() {
    let bp = BackplaneProc::start().await;
    let mut gw = Gateway::start(&bp, &[]).await;
    let banner = gw.proc.wait_for_text("Pages allowed: ").await;
    assert!(
        banner.contains(
            "https://mryslab.github.io (Scratch 3 OneGPIO; --no-default-origins removes it)"
        ),
        "{banner}"
    );
    let (_device, mut commands) = bus(&bp, &["to_arduino_gateway"]).await;
    let mut editor = gw
        .connect_from(Some(EDITOR))
        .await
        .expect("the editor's page");
    super::send(&mut editor, r#"{"id": "to_arduino_gateway"}"#).await;
    super::send(
        &mut editor,
        r#"{"command": "digital_write", "pin": 2, "value": 1}"#,
    )
    .await;
    let command = recv(&mut commands, "the editor's command").await;
    assert_eq!(command.topic(), "to_arduino_gateway");
    for site in [
        "https://evil.example",
        "http://mryslab.github.io",
        "https://mryslab.github.io.evil.example",
        "https://someone.github.io",
    ] {
        match gw.connect_from(Some(site)).await {
            Err(WsError::Http(response)) => assert_eq!(response.status(), 403, "{site}"),
            other => panic!("{site}: expected HTTP 403, got {other:?}"),
        }
    }

    // --no-default-origins: the editor is a site like any other; -o brings
    // it back.
    let mut closed = Gateway::start(&bp, &["--no-default-origins"]).await;
    let banner = closed.proc.wait_for_text("Pages allowed: ").await;
    assert!(!banner.contains("mryslab"), "{banner}");
    match closed.connect_from(Some(EDITOR)).await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 403),
        other => panic!("expected HTTP 403 with --no-default-origins, got {other:?}"),
    }
    let listed = Gateway::start(&bp, &["--no-default-origins", "-o", EDITOR]).await;
    listed
        .connect_from(Some(EDITOR))
        .await
        .expect("-o allows it again");

    let help = Command::new(exe("wsgw"))
        .arg("--help")
        .output()
        .expect("wsgw --help");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("https://mryslab.github.io"), "{help}");
    assert!(help.contains("--no-default-origins"), "{help}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_page_of_the_onegpio_editors_site_in_chromium() {
    // A page with the editor's origin: served over HTTPS by a local server
    // to which Chromium resolves mryslab.github.io (its certificate, made
    // here, is not trusted: the browser is told to ignore that).
    let dir = std::env::temp_dir().join(format!("banyan-editor-site-{}", free_port()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=mryslab.github.io", "-keyout"])
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .output()
        .expect("openssl is not installed: run scripts/test, which installs it");
    assert!(
        made.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let mut site = Proc::spawn(
        "https pages",
        Command::new(python())
            .arg(root().join("tests/python/https_pages.py"))
            .arg(dir.join("cert.pem"))
            .arg(dir.join("key.pem"))
            .arg(root().join("tests/pages")),
    );
    let line = site.wait_for_text("SERVING ").await;
    let site_port: u16 = line
        .rsplit(' ')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port");

    let bp = BackplaneProc::start().await;
    let mut gw = Gateway::start(&bp, &[]).await;
    let (device, mut commands) = bus(&bp, &["to_arduino_gateway"]).await;
    let rules = format!("--host-resolver-rules=MAP mryslab.github.io:443 127.0.0.1:{site_port}");
    let mut browser = super::cdp::Browser::start(&[&rules, "--ignore-certificate-errors"]).await;
    let session = browser
        .cdp
        .open(&format!("{EDITOR}/s3onegpio.html?port={}", gw.port))
        .await;

    for expected in [
        json!({"command": "set_mode_digital_output", "pin": 2}),
        json!({"command": "digital_write", "pin": 2, "value": 1}),
        json!({"command": "set_mode_digital_input", "pin": 6}),
    ] {
        let command = recv(&mut commands, "the editor page's command").await;
        assert_eq!(command.topic(), "to_arduino_gateway");
        assert_eq!(super::to_json(&command), expected);
    }
    let state = "JSON.stringify({origin: location.origin, \
                 status: document.getElementById('status').textContent, \
                 digital: document.getElementById('digital').textContent, \
                 report: document.getElementById('report').textContent})";
    device
        .wait_for_subscriber("from_arduino_gateway")
        .await
        .expect("subscribed");
    publish(
        &device,
        "from_arduino_gateway",
        json!({"report": "digital_input", "pin": 6, "value": 1, "timestamp": 1_700_000_000.5}),
    )
    .await;
    let shown = browser
        .wait_for(&session, state, "pin 6 reading 1", |s| {
            s["digital"] == json!(r#"{"6":1}"#)
        })
        .await;
    assert_eq!(shown["origin"], json!(EDITOR), "{shown}");
    assert_eq!(shown["status"], json!("open"), "{shown}");

    // The board is lost: the page sees the panic report, then the close.
    publish(&device, "from_arduino_gateway", json!({"report": "panic"})).await;
    let shown = browser
        .wait_for(&session, state, "the close after the panic", |s| {
            s["status"] != json!("open")
        })
        .await;
    assert_eq!(shown["status"], json!("closed 1000"), "{shown}");
    assert_eq!(shown["report"], json!("panic"), "{shown}");
    gw.proc.expect_text("reported a panic").await;
    browser.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}
