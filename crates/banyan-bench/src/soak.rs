//! The soak: every gateway under steady traffic for minutes while peers
//! misbehave, and an account of every message.
//!
//! [`run`] starts the real `backplane` (on ports it picks, and again on the
//! same ports after each kill), `wsgw`, `tgw` (dialling a device the bench
//! serves), `mqttgw` with a real mosquitto, and the bench's own peers
//! (`soak_peers`): numbered traffic at a steady rate on seven paths (bus →
//! two pages, page → bus, bus → device, device → bus, bus → MQTT, MQTT →
//! bus), counted also on the bus itself. Then, in turn, with a quiet gap
//! after each ([`Trouble`]): the backplane is killed by PID and restarted,
//! mosquitto likewise, the device closes and comes back, a page stalls, the
//! device stops reading, a client floods `wsgw` with pings and never reads.
//!
//! Every message lost is put on a cause:
//!
//! * **outage**: the backplane was down (`down`), or back but the path not
//!   yet carrying again (`resume`): around each restart, the numbers after
//!   the last one a path received before the kill and before the first it
//!   received of those sent after the restart;
//! * **dropped**: the same around a misbehaving peer, on its own path, and
//!   around a broker restart on the MQTT paths, within what the gateway
//!   counted as `dropped` (its `stopped:` line on SIGTERM): the documented
//!   policy toward a stalled or away peer;
//! * **broker**: the rest around a broker restart: messages the broker lost
//!   while down, or dropped for a subscriber not yet back;
//! * **unexplained**: anything else (the goal is 0), with the hop: a
//!   message the bus-level subscriber saw was lost past the bus.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::procs::{Memory, Proc};
use crate::scenarios::{self, start_backplane_on, start_gateway, Mosquitto};
use crate::soak_peers::{
    Checkpoint, Endpoints, Finished, Seen, Snapshot, Traffic, MQTT_IN, MQTT_OUT, PATHS,
    TOPIC_DEVICE, TOPIC_DEVICE_IN, TOPIC_MQTT, TOPIC_MQTT_IN, T_DEVICE, T_MQTT, T_MQTT_IN,
    T_STALL_PAGE,
};
use crate::worker::BusAddr;

/// The largest payload: a device frame carries at most 255 bytes.
pub const MAX_PAYLOAD: usize = 200;
/// The highest rate per path.
pub const MAX_RATE: u32 = 10_000;

/// How long a process may take to start, or a path to open.
const START: Duration = Duration::from_secs(30);
/// How long a process may take to end after SIGTERM and log its counts.
const STOP: Duration = Duration::from_secs(10);
/// Steady traffic before the first trouble.
const WARMUP: Duration = Duration::from_secs(1);
/// Quiet time after every path carries again, before the next trouble.
const GAP: Duration = Duration::from_secs(2);
/// How long every path may take to carry again after a trouble.
const SETTLE: Duration = Duration::from_secs(30);
/// Silence after which the last messages have arrived, at the end.
const DRAIN_IDLE: Duration = Duration::from_secs(2);

/// How long and how hard to soak.
#[derive(Clone, Debug)]
pub struct Config {
    /// Steady traffic for this long, troubles included (start-up and the
    /// final drain are not).
    pub duration: Duration,
    /// Messages a second on each path.
    pub rate: u32,
    /// Payload size in bytes (at most [`MAX_PAYLOAD`]).
    pub payload: usize,
    /// The mosquitto executable.
    pub mosquitto: PathBuf,
    /// Where the `backplane` and gateway executables are.
    pub bin_dir: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            duration: Duration::from_secs(300),
            rate: 500,
            payload: 100,
            mosquitto: PathBuf::from("/usr/sbin/mosquitto"),
            bin_dir: PathBuf::from("."),
        }
    }
}

impl Config {
    fn validate(&self) -> Result<()> {
        if self.duration < Duration::from_secs(1) {
            return Err(Error::Invalid("a soak lasts at least a second".to_owned()));
        }
        if !(1..=MAX_RATE).contains(&self.rate) {
            return Err(Error::Invalid(format!(
                "--rate must be 1 to {MAX_RATE} messages a second"
            )));
        }
        if self.payload > MAX_PAYLOAD {
            return Err(Error::Invalid(format!(
                "--payload must be at most {MAX_PAYLOAD} bytes (a device frame carries 255)"
            )));
        }
        Ok(())
    }
}

/// A misbehaviour, in the order they come round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Trouble {
    /// The backplane is killed (SIGKILL) and, 2 s later, started again on
    /// the same ports.
    BackplaneRestart,
    /// mosquitto is killed (SIGKILL) and, 2 s later, started again.
    BrokerRestart,
    /// The device ends its connection and refuses the gateway for 3 s.
    DeviceClose,
    /// A page stops reading for 8 s.
    PageStall,
    /// The device stops reading for 8 s (and keeps sending).
    DeviceStall,
    /// A client floods `wsgw` with pings for 8 s and never reads.
    PingFlood,
}

impl Trouble {
    /// Every trouble, in order.
    pub const CYCLE: [Trouble; 6] = [
        Trouble::BackplaneRestart,
        Trouble::BrokerRestart,
        Trouble::DeviceClose,
        Trouble::PageStall,
        Trouble::DeviceStall,
        Trouble::PingFlood,
    ];

    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Trouble::BackplaneRestart => "backplane restart",
            Trouble::BrokerRestart => "broker restart",
            Trouble::DeviceClose => "device close",
            Trouble::PageStall => "page stall",
            Trouble::DeviceStall => "device stall",
            Trouble::PingFlood => "ping flood",
        }
    }

    /// How long the peer is down, away or misbehaving.
    pub fn duration(self) -> Duration {
        match self {
            Trouble::BackplaneRestart | Trouble::BrokerRestart => Duration::from_secs(2),
            Trouble::DeviceClose => Duration::from_secs(3),
            // Long enough to fill the socket buffers and the gateway's queue
            // at the default rate, and then outlast the stall grace (1 s).
            Trouble::PageStall | Trouble::DeviceStall | Trouble::PingFlood => {
                Duration::from_secs(8)
            }
        }
    }

    /// The paths on which it may cost messages, and as what.
    fn costs(self) -> Vec<(usize, Cause)> {
        match self {
            Trouble::BackplaneRestart => (0..PATHS.len()).map(|p| (p, Cause::Outage)).collect(),
            Trouble::BrokerRestart => vec![(T_MQTT, Cause::Broker), (T_MQTT_IN, Cause::Broker)],
            Trouble::DeviceClose | Trouble::DeviceStall => vec![(T_DEVICE, Cause::Peer)],
            Trouble::PageStall => vec![(T_STALL_PAGE, Cause::Peer)],
            // The flooder's topic carries nothing: it may cost memory, not
            // messages.
            Trouble::PingFlood => Vec::new(),
        }
    }
}

/// Why a message may be missing, in order of precedence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Cause {
    Outage,
    Broker,
    Peer,
}

/// One trouble as it happened.
#[derive(Clone, Debug)]
struct Happened {
    trouble: Trouble,
    /// Just before it began.
    start: Snapshot,
    /// When it ended (the peer back, or reading again).
    end: Snapshot,
    /// From `end` until every path had carried a message sent after it.
    settled: Option<Duration>,
}

/// Where a path's losses around one trouble may lie: after `lo` (the
/// highest number received before), before `hi` (the first received of
/// those sent from `back` on, when the trouble had ended).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Window {
    cause: Cause,
    lo: Option<u64>,
    back: u64,
    hi: u64,
}

impl Window {
    fn holds(&self, seq: u64) -> bool {
        self.lo.is_none_or(|lo| seq > lo) && seq < self.hi
    }
}

/// Where a path's losses went.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Losses {
    lost: u64,
    down: u64,
    resume: u64,
    broker: u64,
    peer: u64,
    other: u64,
    /// Of `other`: also missing on the bus.
    other_at_bus: u64,
    /// The first runs of `other` numbers.
    ranges: Vec<(u64, u64)>,
}

/// Unexplained runs kept per path.
const MAX_RANGES: usize = 20;

fn windows(path: usize, happened: &[Happened], seen: &Seen, sent: u64) -> Vec<Window> {
    let stream = PATHS[path].stream;
    let mut windows: Vec<Window> = happened
        .iter()
        .flat_map(|h| {
            h.trouble
                .costs()
                .into_iter()
                .filter(move |(p, _)| *p == path)
                .map(move |(_, cause)| {
                    let back = h.end.sent[stream];
                    Window {
                        cause,
                        lo: h.start.max_seen[path],
                        back,
                        hi: seen.first_from(back, sent).unwrap_or(sent),
                    }
                })
        })
        .collect();
    windows.sort_by_key(|w| w.cause);
    windows
}

fn classify(seen: &Seen, sent: u64, windows: &[Window], observer: Option<&Seen>) -> Losses {
    let mut losses = Losses::default();
    for seq in (0..sent).filter(|&seq| !seen.has(seq)) {
        losses.lost += 1;
        match windows.iter().find(|w| w.holds(seq)) {
            Some(w) => match w.cause {
                Cause::Outage if seq < w.back => losses.down += 1,
                Cause::Outage => losses.resume += 1,
                Cause::Broker => losses.broker += 1,
                Cause::Peer => losses.peer += 1,
            },
            None => {
                losses.other += 1;
                if observer.is_some_and(|o| !o.has(seq)) {
                    losses.other_at_bus += 1;
                }
                let len = losses.ranges.len();
                match losses.ranges.last_mut() {
                    Some((_, last)) if *last + 1 == seq => *last = seq,
                    _ if len < MAX_RANGES => losses.ranges.push((seq, seq)),
                    _ => {}
                }
            }
        }
    }
    losses
}

/// When message `seq` of `stream` was sent, in ms since the traffic
/// started (to the checkpoint interval).
fn sent_at(checkpoints: &[Checkpoint], stream: usize, seq: u64) -> Option<u64> {
    let i = checkpoints.partition_point(|c| c.sent[stream] <= seq);
    checkpoints.get(i).map(|c| c.at_ms)
}

/// The figures of one path.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PathReport {
    /// What crosses what, e.g. `bus -> page`.
    pub path: String,
    /// The gateway on the path.
    pub gateway: Option<String>,
    /// Messages sent.
    pub sent: u64,
    /// Distinct messages received.
    pub received: u64,
    /// `sent - received`: the sum of the next five.
    pub lost: u64,
    /// Lost while the backplane was down.
    pub outage_down: u64,
    /// Lost after the backplane was back, before the path carried again.
    pub outage_resume: u64,
    /// Lost around a broker restart, not counted by a gateway: the broker
    /// was down, or not yet routing to a subscriber that reconnected.
    pub broker: u64,
    /// Dropped by the gateway (within its `dropped` count) for a peer that
    /// misbehaved or was away: a stalled page or device, a closed device,
    /// a broker being restarted.
    pub dropped: u64,
    /// Lost for no documented reason (goal 0).
    pub unexplained: u64,
    /// Of `unexplained`: missing on the bus too (a path leaving the bus).
    pub unexplained_at_bus: u64,
    /// Messages received again.
    pub duplicates: u64,
    /// Messages received after a later one.
    pub out_of_order: u64,
    /// Longest time after a restart (backplane, broker) before the first
    /// message that made it, in ms; to the checkpoint interval (100 ms).
    pub resume_max_ms: Option<u64>,
    /// The first runs of unexplained losses.
    pub unexplained_runs: Vec<LossRun>,
}

/// A run of consecutive lost messages.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LossRun {
    /// Its first number.
    pub first: u64,
    /// Its last number.
    pub last: u64,
    /// When its first was sent, in ms since the traffic started.
    pub sent_at_ms: Option<u64>,
}

/// Memory of one of the processes under test, over all its instances.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProcessReport {
    /// `backplane`, `wsgw`, `tgw`, `mqttgw`, `mosquitto`.
    pub process: String,
    /// How many processes it took (restarts + 1).
    pub instances: u32,
    /// Resident set of the first after start-up, in KiB.
    pub idle_kib: u64,
    /// Largest peak resident set (VmHWM) of any instance, in KiB.
    pub peak_kib: u64,
    /// Resident set of the last at the end, in KiB.
    pub end_kib: u64,
    /// Whether the last was still running at the end.
    pub alive: bool,
}

/// What a process counted, from its last log line on SIGTERM.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CountsReport {
    /// The process.
    pub process: String,
    /// `name=value` of its `stopped` line (empty: it logged none).
    pub counts: BTreeMap<String, u64>,
}

/// One trouble.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TroubleReport {
    /// What happened.
    pub trouble: String,
    /// When it began, in ms since the traffic started.
    pub at_ms: u64,
    /// How long the peer was down or misbehaved, in ms.
    pub duration_ms: u64,
    /// From its end until every path had carried a message sent after it,
    /// in ms (none: not within 30 s).
    pub settled_ms: Option<u64>,
}

/// The totals.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Summary {
    /// Steady traffic, in seconds.
    pub seconds: u64,
    /// Messages a second on each path.
    pub rate: u32,
    /// Payload size in bytes.
    pub payload: usize,
    /// Totals over the seven end-to-end paths (the bus-level counts of the
    /// outgoing streams are not added in).
    pub sent: u64,
    /// Received over those paths.
    pub received: u64,
    /// Lost over those paths.
    pub lost: u64,
    /// Lost to backplane outages (down and resume).
    pub outage: u64,
    /// Lost around broker restarts, not counted by a gateway.
    pub broker: u64,
    /// Lost as documented drops of the gateways.
    pub dropped: u64,
    /// Lost for no documented reason, over every path (goal 0).
    pub unexplained: u64,
    /// Duplicates over every path.
    pub duplicates: u64,
    /// Order violations over every path.
    pub out_of_order: u64,
    /// How many of each trouble, and how many every path survived.
    pub troubles: BTreeMap<String, [u32; 2]>,
    /// What the peers counted about themselves (connections, pings).
    pub peers: BTreeMap<String, u64>,
    /// Every process alive at the end and every trouble survived.
    pub survived: bool,
    /// What went wrong on the way (peer errors, paths slow to resume).
    pub notes: Vec<String>,
}

/// Everything a soak found.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Report {
    /// The totals.
    pub summary: Summary,
    /// Per path.
    pub paths: Vec<PathReport>,
    /// Per process.
    pub processes: Vec<ProcessReport>,
    /// Per process, its own counts.
    pub counts: Vec<CountsReport>,
    /// Every trouble, in order.
    pub troubles: Vec<TroubleReport>,
}

/// One line of `--json` output.
#[derive(Serialize)]
#[serde(tag = "soak", rename_all = "snake_case")]
enum Line<'a> {
    Summary(&'a Summary),
    Path(&'a PathReport),
    Process(&'a ProcessReport),
    Counts(&'a CountsReport),
    Trouble(&'a TroubleReport),
}

impl Report {
    /// The report as JSON lines, each with a `"soak"` field saying what it
    /// is: `summary`, then `path`, `process`, `counts` and `trouble` lines.
    pub fn json_lines(&self) -> Vec<String> {
        let mut lines = vec![Line::Summary(&self.summary)];
        lines.extend(self.paths.iter().map(Line::Path));
        lines.extend(self.processes.iter().map(Line::Process));
        lines.extend(self.counts.iter().map(Line::Counts));
        lines.extend(self.troubles.iter().map(Line::Trouble));
        lines
            .iter()
            .filter_map(|line| serde_json::to_string(line).ok())
            .collect()
    }

    /// The human tables.
    pub fn table(&self) -> String {
        let s = &self.summary;
        let mut out = format!(
            "soak: {} s at {} msg/s per path, payload {} B\n\n",
            s.seconds, s.rate, s.payload
        );
        out.push_str(&format!(
            "{:<22} {:>9} {:>9} {:>7} {:>7} {:>7} {:>7} {:>7} {:>6} {:>5} {:>5} {:>8}\n",
            "path",
            "sent",
            "received",
            "lost",
            "down",
            "resume",
            "broker",
            "dropped",
            "unexpl",
            "dup",
            "order",
            "resume"
        ));
        for p in &self.paths {
            out.push_str(&format!(
                "{:<22} {:>9} {:>9} {:>7} {:>7} {:>7} {:>7} {:>7} {:>6} {:>5} {:>5} {:>8}\n",
                p.path,
                p.sent,
                p.received,
                p.lost,
                p.outage_down,
                p.outage_resume,
                p.broker,
                p.dropped,
                p.unexplained,
                p.duplicates,
                p.out_of_order,
                p.resume_max_ms
                    .map_or("-".to_owned(), |ms| format!("{ms} ms")),
            ));
        }
        out.push_str(&format!(
            "total (end to end)     {:>9} {:>9} {:>7}   outage {}, broker {}, dropped {}, unexplained {}\n\n",
            s.sent, s.received, s.lost, s.outage, s.broker, s.dropped, s.unexplained
        ));
        for p in self.paths.iter().filter(|p| p.unexplained > 0) {
            let runs: Vec<String> = p
                .unexplained_runs
                .iter()
                .map(|r| {
                    let at = r
                        .sent_at_ms
                        .map_or("?".to_owned(), |ms| format!("{:.1} s", ms as f64 / 1000.0));
                    format!("{}..={} (sent at {at})", r.first, r.last)
                })
                .collect();
            out.push_str(&format!(
                "unexplained on {}: {} ({} missing on the bus too): {}\n",
                p.path,
                p.unexplained,
                p.unexplained_at_bus,
                runs.join(", ")
            ));
        }
        out.push_str(&format!(
            "\n{:<10} {:>9} {:>10} {:>10} {:>10}  {}\n",
            "process", "instances", "idle MiB", "peak MiB", "end MiB", "alive"
        ));
        let mib = |kib: u64| format!("{:.1}", kib as f64 / 1024.0);
        for p in &self.processes {
            out.push_str(&format!(
                "{:<10} {:>9} {:>10} {:>10} {:>10}  {}\n",
                p.process,
                p.instances,
                mib(p.idle_kib),
                mib(p.peak_kib),
                mib(p.end_kib),
                if p.alive { "yes" } else { "NO" }
            ));
        }
        out.push('\n');
        for c in &self.counts {
            let counts: Vec<String> = c.counts.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push_str(&format!("{}: {}\n", c.process, counts.join(" ")));
        }
        out.push('\n');
        for (trouble, [count, survived]) in &s.troubles {
            out.push_str(&format!(
                "{trouble}: {count}, every path carried again after {survived}\n"
            ));
        }
        let peers: Vec<String> = s.peers.iter().map(|(k, v)| format!("{k} {v}")).collect();
        out.push_str(&format!("peers: {}\n", peers.join(", ")));
        for note in &s.notes {
            out.push_str(&format!("note: {note}\n"));
        }
        out.push_str(&format!(
            "survived: {}\n",
            if s.survived { "yes" } else { "NO" }
        ));
        out
    }
}

/// A process under test, over its instances.
struct Watched {
    name: &'static str,
    instances: u32,
    idle_kib: u64,
    peak_kib: u64,
}

impl Watched {
    fn new(name: &'static str, proc: &Proc) -> Watched {
        Watched {
            name,
            instances: 1,
            idle_kib: proc.memory().rss_kib,
            peak_kib: 0,
        }
    }

    /// Notes the peak of an instance about to go.
    fn retire(&mut self, memory: Memory) {
        self.peak_kib = self.peak_kib.max(memory.peak_kib);
    }

    fn report(&mut self, last: &Proc) -> ProcessReport {
        let memory = last.memory();
        self.retire(memory);
        ProcessReport {
            process: self.name.to_owned(),
            instances: self.instances,
            idle_kib: self.idle_kib,
            peak_kib: self.peak_kib,
            end_kib: memory.rss_kib,
            alive: memory.rss_kib > 0,
        }
    }
}

/// Sends `signal` to process `pid` (one we started).
fn signal(pid: u32, signal: &str) -> Result<()> {
    let status = Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .status()
        .map_err(|source| Error::Spawn {
            name: "kill".to_owned(),
            source,
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::Protocol(format!("kill -s {signal} {pid} failed")))
    }
}

/// Waits until process `pid` has ended (it then holds no port).
fn wait_gone(name: &str, pid: u32) -> Result<()> {
    let deadline = Instant::now() + STOP;
    // An ended child is a zombie until reaped: no resident set.
    while Memory::of(pid).rss_kib > 0 {
        if Instant::now() > deadline {
            return Err(Error::Timeout {
                name: name.to_owned(),
                what: "its end after SIGKILL".to_owned(),
                seconds: STOP.as_secs(),
                output: String::new(),
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// The `name=value` pairs of a log line.
fn counts(line: &str) -> BTreeMap<String, u64> {
    line.split_whitespace()
        .filter_map(|token| {
            let (name, value) = token.split_once('=')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// SIGTERM, then the counts of its `stopped` line (none if it logged none).
fn stop(name: &'static str, proc: &mut Proc, notes: &mut Vec<String>) -> CountsReport {
    // The gateways' skeleton logs `stopped: ...`; the backplane `backplane
    // stopped forwarded=... overflows=...`.
    let needle = if name == "backplane" {
        "backplane stopped"
    } else {
        "stopped: "
    };
    let mut counts_of = BTreeMap::new();
    match signal(proc.pid(), "TERM")
        .and_then(|()| proc.wait_line("its stopped line", STOP, |l| l.contains(needle)))
    {
        Ok(line) => counts_of = counts(&line),
        Err(e) => notes.push(format!("{name}: {e}")),
    }
    CountsReport {
        process: name.to_owned(),
        counts: counts_of,
    }
}

fn wsgw_url(gateway: &mut Proc) -> Result<String> {
    let line = gateway.wait_line("its WebSocket address", START, |l| {
        l.starts_with("WebSocket server on ")
    })?;
    Ok(line
        .trim_start_matches("WebSocket server on ")
        .trim()
        .to_owned())
}

/// The processes under test, and the bench's own peers.
struct Rig {
    bench: scenarios::Config,
    bus: BusAddr,
    backplane: Proc,
    broker: Mosquitto,
    /// `wsgw`, `tgw`, `mqttgw`, in that order.
    gateways: [(&'static str, Proc); 3],
    /// backplane, gateways, mosquitto.
    watched: [Watched; 5],
    traffic: Traffic,
}

impl Rig {
    /// Starts mosquitto, the backplane, the device's listener, the
    /// gateways and then the other peers, and waits until a probe crossed
    /// every path.
    fn start(config: &Config, progress: &mut impl FnMut(&str)) -> Result<Rig> {
        let bench = scenarios::Config {
            mosquitto: config.mosquitto.clone(),
            bin_dir: config.bin_dir.clone(),
            ..scenarios::Config::default()
        };
        let broker = Mosquitto::start(&bench)?;
        let (backplane, bus) = start_backplane_on(&bench, 0, 0)?;
        let mut traffic = Traffic::new(config.rate, config.payload)?;
        let ready = "Publisher  Port";
        let gateway = |name, flags: &[&str]| {
            let flags: Vec<String> = flags.iter().map(|f| (*f).to_owned()).collect();
            start_gateway(&bench, name, &bus, &flags, ready)
        };
        let mut wsgw = gateway("wsgw", &["-w", "0", "-a", "127.0.0.1"])?;
        let ws_url = wsgw_url(&mut wsgw)?;
        let device = traffic.device_port().to_string();
        let tgw = gateway(
            "tgw",
            &[
                "-a",
                "127.0.0.1",
                "-n",
                &device,
                "-g",
                TOPIC_DEVICE,
                "-e",
                TOPIC_DEVICE_IN,
            ],
        )?;
        let port = broker.port.to_string();
        let mqttgw = gateway(
            "mqttgw",
            &[
                "-a",
                "127.0.0.1",
                "-d",
                &port,
                "-g",
                TOPIC_MQTT,
                "-i",
                MQTT_OUT,
                "-j",
                MQTT_IN,
                "-e",
                TOPIC_MQTT_IN,
            ],
        )?;
        let watched = [
            Watched::new("backplane", &backplane),
            Watched::new("wsgw", &wsgw),
            Watched::new("tgw", &tgw),
            Watched::new("mqttgw", &mqttgw),
            Watched::new("mosquitto", &broker.proc),
        ];
        progress(&format!(
            "started: backplane {}/{}, wsgw {ws_url}, tgw -> device {device}, mqttgw -> mosquitto {port}",
            bus.publisher_port, bus.subscriber_port
        ));
        traffic.connect(&Endpoints {
            bus: bus.clone(),
            ws_url,
            mqtt_port: broker.port,
        })?;
        let deadline = Instant::now() + START;
        loop {
            let closed = traffic.unprobed();
            if closed.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout {
                    name: "soak".to_owned(),
                    what: format!("a probe on every path (none yet on: {})", closed.join(", ")),
                    seconds: START.as_secs(),
                    output: String::new(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Rig {
            bench,
            bus,
            backplane,
            broker,
            gateways: [("wsgw", wsgw), ("tgw", tgw), ("mqttgw", mqttgw)],
            watched,
            traffic,
        })
    }

    /// Makes `trouble` happen, for its duration.
    fn cause(&mut self, trouble: Trouble) -> Result<()> {
        let time = trouble.duration();
        match trouble {
            Trouble::BackplaneRestart => {
                self.watched[0].retire(self.backplane.memory());
                signal(self.backplane.pid(), "KILL")?;
                wait_gone("backplane", self.backplane.pid())?;
                std::thread::sleep(time);
                let (ports, bench) = (&self.bus, &self.bench);
                let (again, at) =
                    start_backplane_on(bench, ports.publisher_port, ports.subscriber_port)?;
                if (at.publisher_port, at.subscriber_port)
                    != (ports.publisher_port, ports.subscriber_port)
                {
                    return Err(Error::Protocol(format!(
                        "the backplane came back on other ports: {}/{}",
                        at.publisher_port, at.subscriber_port
                    )));
                }
                // The killed one is reaped as it is replaced.
                self.backplane = again;
                self.watched[0].instances += 1;
            }
            Trouble::BrokerRestart => {
                self.watched[4].retire(self.broker.proc.memory());
                signal(self.broker.proc.pid(), "KILL")?;
                wait_gone("mosquitto", self.broker.proc.pid())?;
                std::thread::sleep(time);
                self.broker.restart(&self.bench)?;
                self.watched[4].instances += 1;
            }
            Trouble::DeviceClose => {
                self.traffic.close_device(time)?;
                std::thread::sleep(time);
            }
            Trouble::PageStall => {
                self.traffic.stall_page(time)?;
                std::thread::sleep(time);
            }
            Trouble::DeviceStall => {
                self.traffic.stall_device(time)?;
                std::thread::sleep(time);
            }
            Trouble::PingFlood => {
                self.traffic.flood(time);
                std::thread::sleep(time);
            }
        }
        Ok(())
    }

    /// Stops the traffic, then every process (SIGTERM): their memory, and
    /// their counts.
    fn finish(self, notes: &mut Vec<String>) -> (Finished, Vec<ProcessReport>, Vec<CountsReport>) {
        let Rig {
            backplane,
            broker,
            gateways,
            mut watched,
            traffic,
            ..
        } = self;
        let finished = traffic.finish();
        let [(_, wsgw), (_, tgw), (_, mqttgw)] = &gateways;
        let processes = watched
            .iter_mut()
            .zip([&backplane, wsgw, tgw, mqttgw, &broker.proc])
            .map(|(watch, proc)| watch.report(proc))
            .collect();
        let mut counts = Vec::new();
        for (name, mut gateway) in gateways {
            counts.push(stop(name, &mut gateway, notes));
        }
        let mut backplane = backplane;
        counts.push(stop("backplane", &mut backplane, notes));
        (finished, processes, counts)
    }
}

/// Runs the soak; `progress` sees a line as each step happens.
pub fn run(config: &Config, mut progress: impl FnMut(&str)) -> Result<Report> {
    config.validate()?;
    let mut rig = Rig::start(config, &mut progress)?;
    rig.traffic.go();
    let started = Instant::now();
    progress(&format!(
        "every path open: {} msg/s on each for {} s",
        config.rate,
        config.duration.as_secs()
    ));
    std::thread::sleep(WARMUP);
    let mut happened = Vec::new();
    let mut notes = Vec::new();
    for trouble in Trouble::CYCLE.into_iter().cycle() {
        if started.elapsed() + trouble.duration() > config.duration {
            break;
        }
        let start = rig.traffic.snapshot();
        progress(&format!(
            "{:>7.1} s  {} for {} s",
            start.at_ms as f64 / 1000.0,
            trouble.name(),
            trouble.duration().as_secs()
        ));
        rig.cause(trouble)?;
        let end = rig.traffic.snapshot();
        let settled = settle(&rig.traffic, &end);
        match &settled {
            Ok(after) => progress(&format!(
                "{:>7.1} s  every path carries again, {} ms after",
                (end.at_ms + after.as_millis() as u64) as f64 / 1000.0,
                after.as_millis()
            )),
            Err(waiting) => {
                let note = format!(
                    "after the {} at {:.1} s, not carrying again within {} s: {}",
                    trouble.name(),
                    start.at_ms as f64 / 1000.0,
                    SETTLE.as_secs(),
                    waiting.join(", ")
                );
                progress(&note);
                notes.push(note);
            }
        }
        happened.push(Happened {
            trouble,
            start,
            end,
            settled: settled.ok(),
        });
        std::thread::sleep(GAP);
    }
    if let Some(rest) = config.duration.checked_sub(started.elapsed()) {
        std::thread::sleep(rest);
    }
    rig.traffic.stop_sending();
    drain(&rig.traffic);
    progress("traffic stopped and drained; stopping the processes");
    let (finished, processes, counts) = rig.finish(&mut notes);
    Ok(account(
        config, &finished, &happened, processes, counts, notes,
    ))
}

/// Waits until every path has received a message sent after `end`; the
/// time it took, or the paths still waiting at the deadline.
fn settle(traffic: &Traffic, end: &Snapshot) -> std::result::Result<Duration, Vec<&'static str>> {
    let begun = Instant::now();
    loop {
        let now = traffic.snapshot();
        let waiting: Vec<&'static str> = PATHS
            .iter()
            .enumerate()
            .filter(|(p, path)| now.max_seen[*p] < Some(end.sent[path.stream]))
            .map(|(_, path)| path.name)
            .collect();
        if waiting.is_empty() {
            return Ok(begun.elapsed());
        }
        if begun.elapsed() > SETTLE {
            return Err(waiting);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until nothing more arrives (the senders have stopped).
fn drain(traffic: &Traffic) {
    let deadline = Instant::now() + SETTLE;
    let (mut last, mut since) = (traffic.received(), Instant::now());
    while Instant::now() < deadline && since.elapsed() < DRAIN_IDLE {
        std::thread::sleep(Duration::from_millis(50));
        let now = traffic.received();
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
}

/// Puts every loss on its cause and builds the report.
fn account(
    config: &Config,
    finished: &Finished,
    happened: &[Happened],
    processes: Vec<ProcessReport>,
    counts: Vec<CountsReport>,
    mut notes: Vec<String>,
) -> Report {
    let losses: Vec<Losses> = PATHS
        .iter()
        .enumerate()
        .map(|(p, path)| {
            let (seen, sent) = (&finished.seen[p], finished.sent[path.stream]);
            let windows = windows(p, happened, seen, sent);
            classify(
                seen,
                sent,
                &windows,
                path.observer.map(|o| &finished.seen[o]),
            )
        })
        .collect();
    // A gateway's queue drops (`dropped_away`, `dropped_stalled`) explain
    // its peers' losses up to that count.
    let mut budget: BTreeMap<&str, u64> = counts
        .iter()
        .map(|c| {
            let count = |name| c.counts.get(name).copied().unwrap_or(0);
            (
                c.process.as_str(),
                count("dropped_away") + count("dropped_stalled"),
            )
        })
        .collect();
    let mut paths = Vec::new();
    for (p, (path, loss)) in PATHS.iter().zip(&losses).enumerate() {
        let seen = &finished.seen[p];
        // First the misbehaving peer's own losses, then those around a
        // broker restart that the gateway dropped from its away queue.
        let mut take = |wanted: u64| {
            path.gateway
                .and_then(|g| budget.get_mut(g))
                .map_or(0, |left| {
                    let taken = (*left).min(wanted);
                    *left -= taken;
                    taken
                })
        };
        let (peer_dropped, broker_dropped) = (take(loss.peer), take(loss.broker));
        let resume_max_ms = happened
            .iter()
            .filter(|h| {
                h.trouble
                    .costs()
                    .iter()
                    .any(|(q, cause)| *q == p && *cause != Cause::Peer)
            })
            .filter_map(|h| {
                let back = h.end.sent[path.stream];
                let first = seen.first_from(back, finished.sent[path.stream])?;
                let at = sent_at(&finished.checkpoints, path.stream, first)?;
                Some(at.saturating_sub(h.end.at_ms))
            })
            .max();
        paths.push(PathReport {
            path: path.name.to_owned(),
            gateway: path.gateway.map(str::to_owned),
            sent: finished.sent[path.stream],
            received: seen.received,
            lost: loss.lost,
            outage_down: loss.down,
            outage_resume: loss.resume,
            broker: loss.broker - broker_dropped,
            dropped: peer_dropped + broker_dropped,
            unexplained: loss.other + (loss.peer - peer_dropped),
            unexplained_at_bus: loss.other_at_bus,
            duplicates: seen.duplicates,
            out_of_order: seen.out_of_order,
            resume_max_ms,
            unexplained_runs: loss
                .ranges
                .iter()
                .map(|&(first, last)| LossRun {
                    first,
                    last,
                    sent_at_ms: sent_at(&finished.checkpoints, path.stream, first),
                })
                .collect(),
        });
    }
    let troubles: Vec<TroubleReport> = happened
        .iter()
        .map(|h| TroubleReport {
            trouble: h.trouble.name().to_owned(),
            at_ms: h.start.at_ms,
            duration_ms: h.end.at_ms.saturating_sub(h.start.at_ms),
            settled_ms: h.settled.map(|d| d.as_millis() as u64),
        })
        .collect();
    let mut trouble_counts = BTreeMap::new();
    for h in happened {
        let entry: &mut [u32; 2] = trouble_counts
            .entry(h.trouble.name().to_owned())
            .or_default();
        entry[0] += 1;
        entry[1] += u32::from(h.settled.is_some());
    }
    let end_to_end = &paths[..7];
    let sum = |of: fn(&PathReport) -> u64, over: &[PathReport]| over.iter().map(of).sum::<u64>();
    notes.extend(finished.notes.iter().cloned());
    let survived =
        processes.iter().all(|p| p.alive) && happened.iter().all(|h| h.settled.is_some());
    let summary = Summary {
        seconds: config.duration.as_secs(),
        rate: config.rate,
        payload: config.payload,
        sent: sum(|p| p.sent, end_to_end),
        received: sum(|p| p.received, end_to_end),
        lost: sum(|p| p.lost, end_to_end),
        outage: sum(|p| p.outage_down + p.outage_resume, end_to_end),
        broker: sum(|p| p.broker, end_to_end),
        dropped: sum(|p| p.dropped, end_to_end),
        unexplained: sum(|p| p.unexplained, &paths),
        duplicates: sum(|p| p.duplicates, &paths),
        out_of_order: sum(|p| p.out_of_order, &paths),
        troubles: trouble_counts,
        peers: finished
            .connects
            .iter()
            .map(|(name, n)| ((*name).to_owned(), *n))
            .collect(),
        survived,
        notes,
    };
    Report {
        summary,
        paths,
        processes,
        counts,
        troubles,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen_of(received: &[u64]) -> Seen {
        let mut seen = Seen::default();
        for &seq in received {
            seen.observe(Some(seq), 1000);
        }
        seen
    }

    #[test]
    fn losses_inside_a_window_have_its_cause_and_the_rest_are_unexplained() {
        // 0..=3 arrived, the backplane went at 3 and was back when 6 was
        // next; 8 is the first that made it. 11 went missing on its own.
        let received: Vec<u64> = (0..=3).chain(8..=10).chain(12..20).collect();
        let seen = seen_of(&received);
        let outage = Window {
            cause: Cause::Outage,
            lo: Some(3),
            back: 6,
            hi: seen.first_from(6, 20).expect("8 arrived"),
        };
        assert_eq!(outage.hi, 8);
        let observer = seen_of(&(0..20).filter(|&s| s != 11).collect::<Vec<_>>());
        let losses = classify(&seen, 20, &[outage], Some(&observer));
        assert_eq!(
            losses,
            Losses {
                lost: 5,
                down: 2,
                resume: 2,
                other: 1,
                other_at_bus: 1,
                ranges: vec![(11, 11)],
                ..Losses::default()
            }
        );
    }

    #[test]
    fn an_outage_takes_precedence_and_a_never_resumed_path_owns_the_rest() {
        let seen = seen_of(&[0, 1, 2]);
        let windows = [
            Window {
                cause: Cause::Outage,
                lo: Some(2),
                back: 5,
                hi: 10,
            },
            Window {
                cause: Cause::Peer,
                lo: Some(2),
                back: 4,
                hi: 10,
            },
        ];
        let losses = classify(&seen, 10, &windows, None);
        assert_eq!((losses.down, losses.resume, losses.peer), (2, 5, 0));
        // Nothing received yet when it began: the window starts at 0.
        let early = Window {
            cause: Cause::Broker,
            lo: None,
            back: 0,
            hi: 3,
        };
        assert!(early.holds(0) && !early.holds(3));
    }

    #[test]
    fn sequence_numbers_are_dated_by_checkpoints() {
        let checkpoints: Vec<Checkpoint> = [(100, 10), (200, 20), (300, 30)]
            .into_iter()
            .map(|(at_ms, sent)| Checkpoint {
                at_ms,
                sent: vec![sent],
            })
            .collect();
        assert_eq!(sent_at(&checkpoints, 0, 0), Some(100));
        assert_eq!(sent_at(&checkpoints, 0, 10), Some(200));
        assert_eq!(sent_at(&checkpoints, 0, 29), Some(300));
        assert_eq!(sent_at(&checkpoints, 0, 30), None);
    }

    #[test]
    fn counts_of_a_stopped_line() {
        let line = "2026-11-24T10:00:00Z  INFO stopped: connections=2 to_device=10 dropped=3 x=y";
        let counts = counts(line);
        assert_eq!(counts.get("dropped"), Some(&3));
        assert_eq!(counts.get("connections"), Some(&2));
        assert!(!counts.contains_key("x"));
    }

    #[test]
    fn config_is_checked_at_the_edge() {
        assert!(Config::default().validate().is_ok());
        let bad = [
            Config {
                rate: 0,
                ..Config::default()
            },
            Config {
                payload: 300,
                ..Config::default()
            },
            Config {
                duration: Duration::ZERO,
                ..Config::default()
            },
        ];
        for config in bad {
            assert!(matches!(config.validate(), Err(Error::Invalid(_))));
        }
    }
}
