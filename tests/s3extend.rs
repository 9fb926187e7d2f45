//! s3-extend's launchers with our executables.
//!
//! The real s3-extend 1.35 from PyPI (in a virtual environment of its own,
//! target/s3env, which scripts/test creates) runs each of its eight
//! launchers (`s3a`, `s3e`, ...) as a classroom does, except that the
//! `backplane` and `wsgw` first on PATH are ours and its hardware gateway
//! is a stand-in (tests/python/s3_standin.py), since no board is attached.
//! Each launcher runs in a private network and PID namespace: its fixed
//! ports (9000 to 9007, 43124 and 43125) and its search for a process named
//! `backplane` see only what the test started, and when the launcher (the
//! namespace's first process) ends, everything in the namespace ends.
//!
//! A page speaking the Scratch extension's protocol, from the Scratch 3
//! OneGPIO editor's origin (`https://mryslab.github.io`), reaches `wsgw`
//! through a Unix socket forwarded into the namespace
//! (tests/python/unix_forward.py); the stand-in tells the test what it
//! received through another Unix socket.

use std::path::{Path, PathBuf};
use std::process::Command;

use futures_util::future::join_all;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value as Json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;

use crate::util::*;

/// The origin of the Scratch 3 OneGPIO editor's pages.
const EDITOR: &str = "https://mryslab.github.io";

/// One of s3-extend's launchers: its hardware gateway's executable, the
/// board name of its topics (`to_<board>_gateway`), the `wsgw -i` port.
struct Launcher {
    name: &'static str,
    gateway: &'static str,
    board: &'static str,
    port: u16,
}

/// The launchers of s3-extend 1.35, as their source starts them.
const LAUNCHERS: [Launcher; 8] = [
    Launcher {
        name: "s3a",
        gateway: "ardgw",
        board: "arduino",
        port: 9000,
    },
    Launcher {
        name: "s3r",
        gateway: "rpigw",
        board: "rpi",
        port: 9001,
    },
    Launcher {
        name: "s3e",
        gateway: "espgw",
        board: "esp8266",
        port: 9002,
    },
    Launcher {
        name: "s3c",
        gateway: "cpxgw",
        board: "cpx",
        port: 9003,
    },
    Launcher {
        name: "s3p",
        gateway: "pbgw",
        board: "picoboard",
        port: 9004,
    },
    Launcher {
        name: "s3rh",
        gateway: "rhgw",
        board: "robohat",
        port: 9005,
    },
    Launcher {
        name: "s3rp",
        gateway: "rpgw",
        board: "rpi_pico",
        port: 9006,
    },
    Launcher {
        name: "s32",
        gateway: "esp32gw",
        board: "esp32",
        port: 9007,
    },
];

/// The virtual environment with s3-extend 1.35 (and the python-banyan it
/// requires). Missing, it fails the test: scripts/test creates it.
fn s3env() -> PathBuf {
    let path = std::env::var_os("BANYAN_S3ENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/s3env"));
    assert!(
        path.join("bin/s3a").exists(),
        "{} has no s3-extend: run scripts/test, which installs s3-extend 1.35 in target/s3env",
        path.display()
    );
    path
}

fn ip_command() -> &'static str {
    ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("ip (iproute2) is not installed: run scripts/test, which installs it")
}

fn is_root() -> bool {
    let id = Command::new("id").arg("-u").output().expect("id runs");
    String::from_utf8_lossy(&id.stdout).trim() == "0"
}

/// A launcher running in its namespace, with the test's ends of the two
/// Unix sockets.
struct Classroom {
    launcher: Proc,
    dir: PathBuf,
    /// The stand-in's lines (`ready ...`, `command ...`).
    standin: Lines<BufReader<OwnedReadHalf>>,
    /// Lines to the stand-in (`panic`).
    to_standin: OwnedWriteHalf,
    port: u16,
    id: String,
    reports: String,
}

impl Classroom {
    /// Starts `launcher` with our executables first on PATH and waits for
    /// its stand-in hardware gateway to be on the bus.
    async fn start(launcher: &Launcher) -> Classroom {
        let s3env = s3env();
        let dir = std::env::temp_dir().join(format!(
            "banyan-s3-{}-{}-{}",
            launcher.name,
            std::process::id(),
            free_port()
        ));
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).expect("temp dir");
        for name in ["backplane", "wsgw"] {
            std::os::unix::fs::symlink(exe(name), bin.join(name)).expect("symlink");
        }
        let standin = bin.join(launcher.gateway);
        std::fs::write(
            &standin,
            format!(
                "#!/bin/sh\nexec '{}' '{}' --board {} \"$@\"\n",
                s3env.join("bin/python").display(),
                root().join("tests/python/s3_standin.py").display(),
                launcher.board
            ),
        )
        .expect("stand-in script");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&standin, std::fs::Permissions::from_mode(0o755))
            .expect("stand-in executable");

        let probe = dir.join("probe.sock");
        let listener = UnixListener::bind(&probe).expect("probe socket");
        let mut command = Command::new("unshare");
        if !is_root() {
            command.arg("-r");
        }
        command
            .args(["--net", "--pid", "--kill-child", "--mount-proc", "sh", "-c"])
            .arg(concat!(
                "set -e\n",
                "\"$1\" link set lo up\n",
                "\"$2\" \"$3\" \"$4\" \"$5\" &\n",
                "exec \"$6\"\n"
            ))
            .arg("s3-namespace")
            .arg(ip_command())
            .arg(s3env.join("bin/python"))
            .arg(root().join("tests/python/unix_forward.py"))
            .arg(dir.join("page.sock"))
            .arg(launcher.port.to_string())
            .arg(s3env.join("bin").join(launcher.name))
            .env(
                "PATH",
                format!(
                    "{}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
                    bin.display()
                ),
            )
            .env("BANYAN_S3_PROBE", &probe)
            .env("TZ", "UTC")
            .env_remove("BANYAN_LOG")
            .env_remove("RUST_LOG");
        let mut proc = Proc::spawn(launcher.name, &mut command);
        proc.wait_for_text("FORWARDING").await;
        let (stream, _) = within(
            &format!(
                "{}'s hardware gateway (the stand-in) to start",
                launcher.name
            ),
            listener.accept(),
        )
        .await
        .expect("the stand-in connects");
        let (read, to_standin) = stream.into_split();
        let mut classroom = Classroom {
            launcher: proc,
            dir,
            standin: BufReader::new(read).lines(),
            to_standin,
            port: launcher.port,
            id: format!("to_{}_gateway", launcher.board),
            reports: format!("from_{}_gateway", launcher.board),
        };
        let ready = classroom.standin_line("the stand-in's ready line").await;
        assert_eq!(
            ready,
            format!("ready {} {}", classroom.id, classroom.reports),
            "{}",
            classroom.launcher.output()
        );
        classroom
    }

    async fn standin_line(&mut self, what: &str) -> String {
        match within(what, self.standin.next_line()).await {
            Ok(Some(line)) => line,
            other => panic!(
                "the stand-in ended ({other:?}) before {what}; the launcher printed:\n{}",
                self.launcher.output()
            ),
        }
    }

    /// The next command the hardware gateway received.
    async fn command(&mut self) -> Json {
        let line = self.standin_line("a command at the hardware gateway").await;
        let json = line
            .strip_prefix("command ")
            .unwrap_or_else(|| panic!("not a command line: {line}"));
        serde_json::from_str(json).expect("JSON")
    }

    /// A page of the Scratch editor: a WebSocket to `ws://127.0.0.1:PORT`
    /// in the namespace, from the editor's origin.
    async fn page(&self) -> Page {
        let stream = within(
            "the forwarded WebSocket port",
            UnixStream::connect(self.dir.join("page.sock")),
        )
        .await
        .expect("the forwarder accepts");
        let mut request = format!("ws://127.0.0.1:{}/", self.port)
            .into_client_request()
            .expect("a request");
        request
            .headers_mut()
            .insert("Origin", EDITOR.parse().expect("a header value"));
        let (ws, _) = within(
            "the WebSocket handshake with wsgw in the namespace",
            tokio_tungstenite::client_async(request, stream),
        )
        .await
        .unwrap_or_else(|e| {
            panic!(
                "wsgw refused the editor's page: {e}; the launcher printed:\n{}",
                self.launcher.output()
            )
        });
        Page { ws }
    }
}

impl Drop for Classroom {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Page {
    ws: WebSocketStream<UnixStream>,
}

impl Page {
    async fn send(&mut self, json: Json) {
        within(
            "sending to wsgw",
            self.ws.send(WsMessage::text(json.to_string())),
        )
        .await
        .expect("sent");
    }

    async fn next_json(&mut self, what: &str) -> Json {
        within(what, async {
            loop {
                match self.ws.next().await {
                    Some(Ok(WsMessage::Text(text))) => {
                        return serde_json::from_str(text.as_str()).expect("JSON")
                    }
                    Some(Ok(WsMessage::Close(frame))) => {
                        panic!("closed ({frame:?}) while waiting for {what}")
                    }
                    Some(Ok(_)) => {}
                    other => panic!("connection ended ({other:?}) while waiting for {what}"),
                }
            }
        })
        .await
    }

    async fn close_code(&mut self, what: &str) -> Option<CloseCode> {
        within(what, async {
            loop {
                match self.ws.next().await {
                    Some(Ok(WsMessage::Close(frame))) => return frame.map(|f| f.code),
                    Some(Ok(_)) => {}
                    other => panic!("no close frame while waiting for {what}: {other:?}"),
                }
            }
        })
        .await
    }
}

/// A Scratch page's session with one board, as the OneGPIO extensions
/// drive it: the id, each block's mode command then its command, reports
/// read back, and the page closed by the board's panic.
async fn lesson(launcher: &Launcher) {
    let mut room = Classroom::start(launcher).await;
    let mut page = room.page().await;
    page.send(json!({"id": room.id})).await;
    let blocks = [
        json!({"command": "set_mode_digital_output", "pin": 2}),
        json!({"command": "digital_write", "pin": 2, "value": 1}),
        json!({"command": "set_mode_pwm", "pin": 3}),
        json!({"command": "pwm_write", "pin": 3, "value": 128}),
        json!({"command": "set_mode_tone", "pin": 4}),
        json!({"command": "play_tone", "pin": 4, "freq": 100, "duration": 50}),
        json!({"command": "set_mode_servo", "pin": 5}),
        json!({"command": "servo_position", "pin": 5, "position": 90}),
        json!({"command": "set_mode_digital_input", "pin": 6}),
        json!({"command": "set_mode_analog_input", "pin": 1}),
        json!({"command": "set_mode_sonar", "trigger_pin": 7, "echo_pin": 8}),
    ];
    for block in &blocks {
        page.send(block.clone()).await;
    }
    for block in &blocks {
        assert_eq!(
            &room.command().await,
            block,
            "{} on {}",
            launcher.name,
            room.id
        );
    }
    let timestamp = |report: &Json| -> String {
        let text = report["timestamp"].as_str().unwrap_or_default().to_owned();
        assert_eq!(
            text.len(),
            19,
            "a local time like 2024-01-31 12:00:00: {report}"
        );
        text
    };
    let digital = page.next_json("the digital input report").await;
    assert_eq!(
        digital,
        json!({"report": "digital_input", "pin": 6, "value": 1, "timestamp": timestamp(&digital)})
    );
    let analog = page.next_json("the analog input report").await;
    assert_eq!(
        analog,
        json!({"report": "analog_input", "pin": 1, "value": 512, "timestamp": timestamp(&analog)})
    );
    let sonar = page.next_json("the sonar report").await;
    assert_eq!(
        sonar,
        json!({"report": "sonar_data", "value": 33, "timestamp": timestamp(&sonar)})
    );

    // The board is gone: the page is told, then closed (s3-extend's rule).
    room.to_standin
        .write_all(b"panic\n")
        .await
        .expect("panic asked");
    assert_eq!(
        page.next_json("the panic report").await,
        json!({"report": "panic"})
    );
    assert_eq!(
        page.close_code("the close after the panic").await,
        Some(CloseCode::Normal)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_s3_extend_launcher_runs_a_lesson_with_our_executables() {
    join_all(LAUNCHERS.iter().map(lesson)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_launcher_that_never_reads_our_output_keeps_being_served() {
    // s3a reads nothing of what backplane and wsgw print (their stdout and
    // stderr are pipes it never reads): 400 pages coming and going log more
    // than such a pipe holds (64 KiB), yet the next page is served.
    const PAGES: usize = 400;
    let mut room = Classroom::start(&LAUNCHERS[0]).await;
    for n in 0..PAGES {
        let mut page = room.page().await;
        page.send(json!({"id": room.id})).await;
        page.send(json!({"command": "digital_write", "pin": 2, "value": n % 2}))
            .await;
        assert_eq!(room.command().await["value"], json!(n % 2), "page {n}");
        within("closing a page", page.ws.close(None))
            .await
            .expect("close sent");
    }
    let mut last = room.page().await;
    last.send(json!({"id": room.id})).await;
    last.send(json!({"command": "set_mode_digital_input", "pin": 9}))
        .await;
    assert_eq!(room.command().await["pin"], json!(9));
    assert_eq!(
        last.next_json("a report after 400 pages").await["report"],
        json!("digital_input")
    );
}
