//! A real mosquitto broker for the tests, and a rumqttc peer that asserts
//! what crosses it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS, SubscribeFilter};
use tokio::sync::mpsc;

use crate::util::*;

/// A mosquitto process on 127.0.0.1 with its own config in a temp dir.
pub(crate) struct Mosquitto {
    pub(crate) proc: Proc,
    pub(crate) port: u16,
    pub(crate) dir: PathBuf,
}

pub(crate) fn mosquitto_exe() -> PathBuf {
    for candidate in ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"] {
        if Path::new(candidate).exists() {
            return candidate.into();
        }
    }
    panic!("mosquitto is not installed (Debian: apt-get install mosquitto); the MQTT tests need a real broker");
}

/// A fresh directory for one broker's files.
pub(crate) fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "mqttgw-test-{}-{tag}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// The user the tests run as, which mosquitto must stay when started as
/// root (its `user` setting), to read the tests' files.
pub(crate) fn user_name() -> String {
    let id = Command::new("id").arg("-un").output().expect("id runs");
    String::from_utf8(id.stdout)
        .expect("a user name")
        .trim()
        .to_owned()
}

impl Mosquitto {
    /// Starts mosquitto on a free port; `extra` is appended to its config
    /// (`listener`, `persistence false` and logging to stderr are set).
    pub(crate) async fn start(tag: &str, extra: &str) -> Mosquitto {
        let dir = temp_dir(tag);
        let port = free_port();
        let user = user_name();
        let config = format!(
            "listener {port} 127.0.0.1\npersistence false\nlog_dest stderr\nlog_type all\n\
             user {user}\n{extra}\n"
        );
        std::fs::write(dir.join("mosquitto.conf"), config).expect("config written");
        let proc = Self::spawn(&dir).await;
        Mosquitto { proc, port, dir }
    }

    async fn spawn(dir: &Path) -> Proc {
        let mut proc = Proc::spawn(
            "mosquitto",
            Command::new(mosquitto_exe())
                .arg("-c")
                .arg(dir.join("mosquitto.conf")),
        );
        proc.wait_for_text(" running").await;
        proc
    }

    /// Kills the broker (SIGKILL to its own PID) and waits for it to end.
    pub(crate) async fn kill(&mut self) {
        let status = Command::new("kill")
            .args(["-KILL", &self.proc.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        self.proc.wait().await;
    }

    /// Stops the broker without ending it (SIGSTOP to its own PID): its
    /// connections stay open and it reads nothing, like a hung broker.
    pub(crate) fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused broker run again (SIGCONT).
    pub(crate) fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.proc.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} failed");
    }

    /// Starts the broker again with the same config, on the same port.
    pub(crate) async fn restart(&mut self) {
        self.proc = Self::spawn(&self.dir).await;
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An MQTT client on the broker, for assertions.
pub(crate) struct Peer {
    pub(crate) client: AsyncClient,
    received: mpsc::UnboundedReceiver<Publish>,
    task: tokio::task::JoinHandle<()>,
}

impl Peer {
    /// Connects to `port` and subscribes to `filters` at `qos`; returns once
    /// the broker acknowledged the subscription.
    pub(crate) async fn connect(port: u16, filters: &[&str], qos: QoS) -> Peer {
        let id = format!("test-peer-{}", free_port());
        let mut options = MqttOptions::new(id, "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(30));
        // Beyond the gateway's default limit (1 MiB), so that the tests can
        // send it more; not rumqttc's default of 10 KiB.
        options.set_max_packet_size(16 << 20, 16 << 20);
        let (client, mut eventloop) = AsyncClient::new(options, 100);
        let (tx, received) = mpsc::unbounded_channel();
        let (ready_tx, mut ready) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = tx.send(p);
                    }
                    Ok(Event::Incoming(Packet::SubAck(_) | Packet::ConnAck(_))) => {
                        let _ = ready_tx.send(());
                    }
                    Ok(_) => {}
                    // Ends `recv` with a message naming the cause.
                    Err(_) => break,
                }
            }
        });
        within("the test peer to connect", ready.recv()).await;
        if !filters.is_empty() {
            let filters = filters
                .iter()
                .map(|f| SubscribeFilter::new(f.to_string(), qos));
            client.subscribe_many(filters).await.expect("subscribe");
            within("the test peer's subscription", ready.recv()).await;
        }
        Peer {
            client,
            received,
            task,
        }
    }

    /// Publishes `payload` on `topic`.
    pub(crate) async fn publish(&self, topic: &str, qos: QoS, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, qos, false, payload)
            .await
            .expect("publish");
    }

    /// Publishes `payload` on `topic`, retained by the broker.
    pub(crate) async fn publish_retained(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, true, payload)
            .await
            .expect("publish");
    }

    /// The next message, within the deadline.
    pub(crate) async fn recv(&mut self, what: &str) -> Publish {
        within(what, self.received.recv())
            .await
            .unwrap_or_else(|| panic!("the peer stopped while waiting for {what}"))
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
