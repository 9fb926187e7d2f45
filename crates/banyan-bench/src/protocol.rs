//! The worker side of the worker <-> orchestrator exchange: event lines on
//! stdout, the go signal on stdin, and what a receiver counts and reports.
//! Shared by the bus workers ([`crate::worker`]) and the gateway peers.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

/// How often a sender repeats its probe while waiting for the go signal.
pub(crate) const PROBE_INTERVAL: Duration = Duration::from_millis(5);
/// How long a receiver waits for its first counted message.
pub(crate) const FIRST_MESSAGE_DEADLINE: Duration = Duration::from_secs(120);

/// Prints one event line for the orchestrator.
pub(crate) fn emit(event: &str, mut fields: Value) {
    if let Value::Object(map) = &mut fields {
        map.insert("event".to_owned(), Value::from(event));
    }
    println!("{fields}");
}

/// Nanoseconds since the epoch: comparable across the bench's processes.
pub(crate) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// A future that completes when a line (or end of file) arrives on stdin.
pub(crate) fn go_signal() -> tokio::sync::oneshot::Receiver<()> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        let _ = tx.send(());
    });
    rx
}

/// What a receiver counted: messages, order violations per stream, times.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub(crate) received: u64,
    pub(crate) out_of_order: u64,
    pub(crate) other: u64,
    pub(crate) first_ns: u64,
    pub(crate) last_ns: u64,
    streams: Vec<(Vec<u8>, u64)>,
    pub(crate) probed: bool,
}

impl Tally {
    /// Counts one message of `stream` carrying `seq` (`None`: not a
    /// counted message). Returns true on the first probe seen.
    pub(crate) fn observe(&mut self, stream: &[u8], seq: Option<u64>) -> bool {
        let Some(seq) = seq else {
            self.other += 1;
            let first = !self.probed;
            self.probed = true;
            return first;
        };
        let now = now_ns();
        if self.received == 0 {
            self.first_ns = now;
        }
        self.last_ns = now;
        self.received += 1;
        match self.streams.iter_mut().find(|(s, _)| s == stream) {
            Some((_, next)) => {
                if seq < *next {
                    self.out_of_order += 1;
                } else {
                    *next = seq + 1;
                }
            }
            None => self.streams.push((stream.to_vec(), seq + 1)),
        }
        false
    }

    /// How long to wait for the next message before the count is final.
    pub(crate) fn patience(&self, idle_ms: u64) -> Duration {
        if self.received == 0 {
            FIRST_MESSAGE_DEADLINE
        } else {
            Duration::from_millis(idle_ms)
        }
    }

    pub(crate) fn report(&self) -> Value {
        json!({
            "received": self.received,
            "out_of_order": self.out_of_order,
            "first_ns": self.first_ns,
            "last_ns": self.last_ns,
        })
    }
}

/// Percentiles (nearest rank) of round-trip times, in microseconds.
pub(crate) fn latency_report(mut rtts_ns: Vec<u64>) -> Value {
    rtts_ns.sort_unstable();
    let at = |q: f64| -> f64 {
        if rtts_ns.is_empty() {
            return 0.0;
        }
        let rank = ((q * rtts_ns.len() as f64).ceil() as usize).clamp(1, rtts_ns.len());
        rtts_ns[rank - 1] as f64 / 1000.0
    };
    json!({
        "round_trips": rtts_ns.len(),
        "p50_us": at(0.50),
        "p90_us": at(0.90),
        "p99_us": at(0.99),
        "p999_us": at(0.999),
        "max_us": at(1.0),
    })
}
