//! The shared test harness: runs the real executables, picks free ports,
//! waits for readiness lines with a deadline, and kills what it started.

#![allow(dead_code)] // each test module uses a part

use std::collections::HashSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use banyan_core::{Client, ClientConfig, Messages};
use tokio::sync::mpsc;

/// The default deadline of a wait in a test.
pub(crate) const DEADLINE: Duration = Duration::from_secs(20);

/// Awaits `future` for at most [`DEADLINE`]; panics naming `what` otherwise.
pub(crate) async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(DEADLINE, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {DEADLINE:?} waiting for {what}"),
    }
}

/// A port on 127.0.0.1 that was free a moment ago and that no other test of
/// this process has been given.
pub(crate) fn free_port() -> u16 {
    static GIVEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let given = GIVEN.get_or_init(|| Mutex::new(HashSet::new()));
    for _ in 0..1000 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("an ephemeral port")
            .port();
        if given.lock().expect("port set").insert(port) {
            return port;
        }
    }
    panic!("no free port found in 1000 tries");
}

/// The path of one of this package's executables.
pub(crate) fn exe(name: &str) -> PathBuf {
    let path = match name {
        "backplane" => env!("CARGO_BIN_EXE_backplane"),
        "monitor" => env!("CARGO_BIN_EXE_monitor"),
        "wsgw" => env!("CARGO_BIN_EXE_wsgw"),
        "tgw" => env!("CARGO_BIN_EXE_tgw"),
        "mqttgw" => env!("CARGO_BIN_EXE_mqttgw"),
        "mgw" => env!("CARGO_BIN_EXE_mgw"),
        #[cfg(feature = "bench")]
        "banyan-bench" => env!("CARGO_BIN_EXE_banyan-bench"),
        other => panic!("unknown executable {other}"),
    };
    PathBuf::from(path)
}

/// The path of an example program built beside the executables.
pub(crate) fn example(name: &str) -> PathBuf {
    let dir = exe("backplane")
        .parent()
        .expect("target dir")
        .join("examples")
        .join(name);
    assert!(
        dir.exists(),
        "{} is missing: `cargo test` builds examples; build it with `cargo build --example {name}`",
        dir.display()
    );
    dir
}

/// The repository root.
pub(crate) fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The python of the venv with python-banyan (`scripts/test` creates it).
/// Missing python-banyan fails the test: a peer that cannot be set up is an
/// error, never a skip.
pub(crate) fn python() -> PathBuf {
    let path = std::env::var_os("BANYAN_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/pyenv/bin/python"));
    assert!(
        path.exists(),
        "{} not found: run scripts/test, which installs python-banyan in target/pyenv",
        path.display()
    );
    path
}

/// A child process whose output lines are collected, killed on drop.
pub(crate) struct Proc {
    pub(crate) name: String,
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    log: Arc<Mutex<Vec<String>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Proc {
    /// Starts `command` with stdout and stderr captured (stdin null unless
    /// the command set it).
    pub(crate) fn spawn(name: &str, command: &mut Command) -> Proc {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let (tx, lines) = mpsc::unbounded_channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().expect("stdout piped");
        let stderr = child.stderr.take().expect("stderr piped");
        let mut readers = Vec::new();
        for (stream, prefix) in [
            (Box::new(stdout) as Box<dyn std::io::Read + Send>, ""),
            (Box::new(stderr), "stderr: "),
        ] {
            let (tx, log) = (tx.clone(), log.clone());
            readers.push(std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    let line = format!("{prefix}{line}");
                    log.lock().expect("log").push(line.clone());
                    let _ = tx.send(line);
                }
            }));
        }
        Proc {
            name: name.to_owned(),
            child,
            lines,
            log,
            readers,
        }
    }

    /// Waits for an output line (stdout, or stderr prefixed `stderr: `)
    /// matching `pred`, at most [`DEADLINE`]; panics with everything the
    /// process printed otherwise.
    pub(crate) async fn wait_for(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) if pred(&line) => return line,
                Ok(Some(_)) => {}
                Ok(None) => panic!(
                    "{} ended before printing {what}; it printed:\n{}",
                    self.name,
                    self.output()
                ),
                Err(_) => panic!(
                    "timed out after {DEADLINE:?} waiting for {} to print {what}; it printed:\n{}",
                    self.name,
                    self.output()
                ),
            }
        }
    }

    /// Waits for a line containing `text`.
    pub(crate) async fn wait_for_text(&mut self, text: &str) -> String {
        self.wait_for(&format!("{text:?}"), |l| l.contains(text))
            .await
    }

    /// Returns at once if some line printed so far contains `text`, else
    /// waits for one (stdout and stderr lines interleave in no fixed order).
    pub(crate) async fn expect_text(&mut self, text: &str) {
        if !self
            .log
            .lock()
            .expect("log")
            .iter()
            .any(|l| l.contains(text))
        {
            self.wait_for_text(text).await;
        }
    }

    /// The next output line, within [`DEADLINE`].
    pub(crate) async fn next_line(&mut self) -> String {
        self.wait_for("a line", |_| true).await
    }

    /// Everything printed so far.
    pub(crate) fn output(&self) -> String {
        self.log.lock().expect("log").join("\n")
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The process's standard input, if it was piped.
    pub(crate) fn stdin(&mut self) -> Option<&mut std::process::ChildStdin> {
        self.child.stdin.as_mut()
    }

    /// Closes the process's standard input.
    pub(crate) fn close_stdin(&mut self) {
        drop(self.child.stdin.take());
    }

    /// Sends SIGTERM (SIGINT with `interrupt`) to this process and waits for
    /// it to exit; returns its exit code.
    pub(crate) async fn stop(&mut self, interrupt: bool) -> Option<i32> {
        let signal = if interrupt { "-INT" } else { "-TERM" };
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} {} failed", self.child.id());
        self.wait().await
    }

    /// Kills this process with SIGKILL, as a crash would, and waits for it.
    pub(crate) async fn kill_hard(&mut self) -> Option<i32> {
        let status = Command::new("kill")
            .args(["-KILL", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -KILL {} failed", self.child.id());
        self.wait().await
    }

    /// Waits for the process to exit by itself; returns its exit code.
    pub(crate) async fn wait(&mut self) -> Option<i32> {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let exited = self.child.try_wait().expect("try_wait");
            // Once it exited, its output is complete when the readers end.
            if let Some(status) = exited.filter(|_| self.readers.iter().all(|r| r.is_finished())) {
                return status.code();
            }
            // No child-exit event reaches a std::process::Child; poll it.
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} did not exit within {DEADLINE:?}; it printed:\n{}",
                self.name,
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            // SIGTERM first, so that a process can stop its own children;
            // SIGKILL if it has not exited within two seconds.
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            for _ in 0..200 {
                if !matches!(self.child.try_wait(), Ok(None)) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A process a component of the test started (the backplane it started on
/// demand), ended by its PID when dropped, if it still runs.
pub(crate) struct StartedBy(pub(crate) u32);

impl StartedBy {
    /// The process named in a line such as `... started one as process 123, ...`.
    pub(crate) fn from_line(line: &str) -> StartedBy {
        let pid = line
            .split("as process ")
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|pid| pid.parse().ok())
            .unwrap_or_else(|| panic!("no process id in {line:?}"));
        StartedBy(pid)
    }
}

impl Drop for StartedBy {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.to_string()])
            .stderr(Stdio::null())
            .status();
    }
}

/// A running `backplane` executable on free ports of 127.0.0.1.
pub(crate) struct BackplaneProc {
    pub(crate) proc: Proc,
    pub(crate) publisher_port: u16,
    pub(crate) subscriber_port: u16,
}

impl BackplaneProc {
    /// Starts `backplane -a 127.0.0.1 -p 0 -s 0` and reads its ports from the
    /// banner.
    pub(crate) async fn start() -> BackplaneProc {
        Self::start_with(&[]).await
    }

    /// Same, with extra flags.
    pub(crate) async fn start_with(extra: &[&str]) -> BackplaneProc {
        Self::start_on(0, 0, extra).await
    }

    /// Starts `backplane -a 127.0.0.1` on the given ports (0: a free one),
    /// with extra flags, and reads its ports from the banner.
    pub(crate) async fn start_on(
        publisher_port: u16,
        subscriber_port: u16,
        extra: &[&str],
    ) -> BackplaneProc {
        let proc = Proc::spawn(
            "backplane",
            Command::new(exe("backplane"))
                .args(["-a", "127.0.0.1"])
                .args(["-p", &publisher_port.to_string()])
                .args(["-s", &subscriber_port.to_string()])
                .args(extra),
        );
        Self::from_banner(proc).await
    }

    /// Reads the ports from the banner of a starting backplane.
    pub(crate) async fn from_banner(mut proc: Proc) -> BackplaneProc {
        let port = |line: String| -> u16 {
            line.rsplit(' ')
                .next()
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| panic!("no port in {line:?}"))
        };
        let subscriber_port = port(proc.wait_for_text("Subscriber Port = ").await);
        let publisher_port = port(proc.wait_for_text("Publisher  Port = ").await);
        BackplaneProc {
            proc,
            publisher_port,
            subscriber_port,
        }
    }

    /// A client configuration for this backplane.
    pub(crate) fn config(&self) -> ClientConfig {
        ClientConfig {
            publisher_port: self.publisher_port,
            subscriber_port: self.subscriber_port,
            ..ClientConfig::default()
        }
    }

    /// Connects a client.
    pub(crate) async fn connect(&self) -> (Client, Messages) {
        within("a client to connect", Client::connect(&self.config()))
            .await
            .expect("client connects")
    }

    /// The common flags `-b 127.0.0.1 -p P -s S` for a component.
    pub(crate) fn flags(&self) -> Vec<String> {
        vec![
            "-b".into(),
            "127.0.0.1".into(),
            "-p".into(),
            self.publisher_port.to_string(),
            "-s".into(),
            self.subscriber_port.to_string(),
        ]
    }
}

/// Receives the next message within [`DEADLINE`].
pub(crate) async fn recv(messages: &mut Messages, what: &str) -> banyan_core::Message {
    within(what, messages.recv())
        .await
        .unwrap_or_else(|| panic!("the stream ended while waiting for {what}"))
}

/// Asserts that no message arrives while a marker message published after
/// `publish_nothing` travels the same path: the marker proves the path is
/// flowing, so "nothing before it" is a fact, not a timeout guess.
pub(crate) async fn assert_nothing_before_marker(
    publisher: &Client,
    messages: &mut Messages,
    marker_topic: &str,
) {
    publisher
        .publish(marker_topic, &banyan_core::rmpv::Value::from("marker"))
        .await
        .expect("marker published");
    let next = recv(messages, "the marker").await;
    assert_eq!(
        next.topic(),
        marker_topic,
        "unexpected message before the marker: {next:?}"
    );
}

/// The number after `name=` in a log line (`dropped=3`), panicking with
/// the line when there is none.
pub(crate) fn count(line: &str, name: &str) -> u64 {
    line.split(&format!("{name}="))
        .nth(1)
        .map(|rest| {
            rest.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .and_then(|digits| digits.parse().ok())
        .unwrap_or_else(|| panic!("no {name}=N in {line:?}"))
}

/// The end of a stall, as every gateway reports it: once its peer has taken
/// everything, the gateway says it caught up and how many messages the peer
/// missed; stopped now, its final count of drops is exactly those.
pub(crate) async fn assert_stall_ended_with_every_drop_counted(gateway: &mut Proc) -> u64 {
    let caught_up = gateway.wait_for_text("caught up; it missed").await;
    let missed = count(&caught_up, "missed");
    assert!(missed > 0, "a stall without drops: {caught_up:?}");
    assert_eq!(gateway.stop(false).await, Some(0));
    let stopped = gateway.wait_for_text("stopped: ").await;
    assert_eq!(
        count(&stopped, "dropped_stalled"),
        missed,
        "drops outside the stall: {stopped:?}"
    );
    missed
}

/// A WebSocket client connected to `ws://{address}/` (`address` is
/// `host:port`), as a page opens it.
pub(crate) async fn ws_connect(
    address: &str,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    tokio_tungstenite::tungstenite::Error,
> {
    let tcp = tokio::net::TcpStream::connect(address).await?;
    let (ws, _) = tokio_tungstenite::client_async(format!("ws://{address}/"), tcp).await?;
    Ok(ws)
}

/// A process's peak resident memory (`VmHWM`), in KiB.
pub(crate) fn peak_memory_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM")
}

/// A process's resident memory now (`VmRSS`), in KiB.
pub(crate) fn memory_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS")
}

/// A `... kB` field of `/proc/PID/status`.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|kib| kib.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}
