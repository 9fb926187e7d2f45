//! The scenarios: which processes each starts, in which order, and how their
//! reports become one figure.
//!
//! Every case starts fresh processes (backplane, gateway, proxy, broker and
//! workers), so runs do not share queues or warm caches. Throughput is
//! measured end to end: messages counted by the receivers divided by the
//! time from the senders' first message to the receivers' last one.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::procs::{executable, Memory, Proc};
use crate::report::{Record, Sample, ViewSeen};
use crate::worker::{BusAddr, Role};

/// The ZeroMQ high-water mark of the raw scenario: 0, no limit. A bare
/// proxy has no back-pressure (its sockets drop when full), so only
/// unbounded queues make it lossless like the backplane; it is the ceiling
/// of ZeroMQ itself, memory aside.
pub const RAW_HIGH_WATER_MARK: i32 = 0;

/// How long a process may take to start.
const START: Duration = Duration::from_secs(30);

/// A scenario of the bench.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Scenario {
    /// Publishers to subscribers through the `backplane`.
    Bus,
    /// The same through a bare ZeroMQ proxy.
    Raw,
    /// Echo round trips through the backplane and a bare proxy.
    Latency,
    /// Through `wsgw`, each direction, one page and many; and the memory
    /// of idle pages.
    Ws,
    /// Through `tgw`, each direction.
    Tcp,
    /// Through `mqttgw`, each direction, and mosquitto alone.
    Mqtt,
    /// The bus as in [`Scenario::Bus`], with `wsgw` attached to the
    /// backplane, without and then with its bus view open (`/view`): the
    /// bus's rate both ways, and what the view got meanwhile (snapshots,
    /// the longest wait for one, the messages it counted). Run only when
    /// named: a snapshot comes every 250 ms, so the runs must last seconds
    /// (`-n 2000000` or more), not the default's tenth of a second.
    View,
}

impl Scenario {
    /// The scenarios run when none is named, in the order they run: every
    /// one but [`Scenario::View`].
    pub const ALL: [Scenario; 6] = [
        Scenario::Bus,
        Scenario::Raw,
        Scenario::Latency,
        Scenario::Ws,
        Scenario::Tcp,
        Scenario::Mqtt,
    ];

    /// The scenario's name on the command line and in results.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Bus => "bus",
            Scenario::Raw => "raw",
            Scenario::Latency => "latency",
            Scenario::Ws => "ws",
            Scenario::Tcp => "tcp",
            Scenario::Mqtt => "mqtt",
            Scenario::View => "view",
        }
    }
}

impl std::str::FromStr for Scenario {
    type Err = Error;

    fn from_str(s: &str) -> Result<Scenario> {
        Scenario::ALL
            .into_iter()
            .chain([Scenario::View])
            .find(|scenario| scenario.name() == s)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "unknown scenario {s:?} (bus, raw, latency, ws, tcp, mqtt, view)"
                ))
            })
    }
}

/// What to measure and how.
#[derive(Clone, Debug)]
pub struct Config {
    /// Scenarios to run (empty: all).
    pub scenarios: Vec<Scenario>,
    /// Messages per publisher (bus, raw) or per direction (gateways).
    pub messages: u64,
    /// Payload size in bytes; 0 is `{'msg': i}` alone (about 10 bytes).
    pub payload: usize,
    /// Publisher processes (bus, raw).
    pub publishers: usize,
    /// Subscriber processes (bus, raw).
    pub subscribers: usize,
    /// Pages of the many-pages WebSocket case (0 or 1: no such case).
    pub ws_clients: usize,
    /// Pages of the idle-pages WebSocket case, which measures the memory
    /// `wsgw` holds per connected page that does nothing (0: no such case).
    /// Each page is a socket in the page worker and in `wsgw`: `ulimit -n`
    /// must allow it.
    pub ws_idle_pages: usize,
    /// Subscribers of the bus case that subscribe to what is published and
    /// never read a message (bare ZeroMQ sockets with small queues of their
    /// own), so that the backplane's memory shows what a stalled subscriber
    /// costs it (with `payload` of 64 KiB, say).
    pub stalled_subscribers: usize,
    /// Round trips measured by `latency`.
    pub round_trips: u64,
    /// Measured runs of each case; figures are their medians.
    pub runs: usize,
    /// Runs of each case before measuring, discarded.
    pub warmup: usize,
    /// Silence after which a receiver's count is final.
    pub idle: Duration,
    /// `--queue` given to the gateways (None: their default).
    pub gateway_queue: Option<usize>,
    /// The mosquitto executable.
    pub mosquitto: PathBuf,
    /// Where the `backplane` and gateway executables are.
    pub bin_dir: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            scenarios: Vec::new(),
            messages: 100_000,
            payload: 0,
            publishers: 1,
            subscribers: 1,
            ws_clients: 100,
            ws_idle_pages: 2000,
            stalled_subscribers: 0,
            round_trips: 10_000,
            runs: 5,
            warmup: 1,
            idle: Duration::from_secs(2),
            gateway_queue: None,
            mosquitto: PathBuf::from("/usr/sbin/mosquitto"),
            bin_dir: PathBuf::from("."),
        }
    }
}

/// One case of a scenario.
#[derive(Clone, Debug)]
pub(crate) struct Case {
    scenario: Scenario,
    kind: Kind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Bus,
    Raw,
    EchoBus,
    EchoRaw,
    WsIn,
    WsOut {
        clients: usize,
    },
    WsIdle {
        pages: usize,
    },
    TcpIn,
    TcpOut,
    MqttAlone,
    MqttIn,
    MqttOut,
    /// The bus with `wsgw` attached, its view `open` or not.
    ViewBus {
        open: bool,
    },
}

impl Case {
    fn label(&self, config: &Config) -> (String, &'static str) {
        let pubsub = format!("{} pub -> {} sub", config.publishers, config.subscribers);
        match self.kind {
            Kind::Bus => (pubsub, "banyan"),
            Kind::Raw => (pubsub, "raw zmq"),
            Kind::EchoBus => ("echo round trip".to_owned(), "banyan"),
            Kind::EchoRaw => ("echo round trip".to_owned(), "raw zmq"),
            Kind::WsIn => ("page -> bus".to_owned(), "banyan"),
            Kind::WsOut { clients: 1 } => ("bus -> page".to_owned(), "banyan"),
            Kind::WsOut { clients } => (format!("bus -> {clients} pages"), "banyan"),
            Kind::WsIdle { pages } => (format!("{pages} idle pages"), "banyan"),
            Kind::TcpIn => ("device -> bus".to_owned(), "banyan"),
            Kind::TcpOut => ("bus -> device".to_owned(), "banyan"),
            Kind::MqttAlone => ("mqtt -> mqtt".to_owned(), "mosquitto"),
            Kind::MqttIn => ("mqtt -> bus".to_owned(), "banyan"),
            Kind::MqttOut => ("bus -> mqtt".to_owned(), "banyan"),
            Kind::ViewBus { open: false } => (format!("{pubsub}, no view"), "banyan"),
            Kind::ViewBus { open: true } => (format!("{pubsub}, view open"), "banyan"),
        }
    }
}

/// The cases of the configured scenarios, in order.
pub(crate) fn cases(config: &Config) -> Vec<Case> {
    let scenarios = if config.scenarios.is_empty() {
        Scenario::ALL.to_vec()
    } else {
        config.scenarios.clone()
    };
    let mut cases = Vec::new();
    for scenario in scenarios {
        let kinds: Vec<Kind> = match scenario {
            Scenario::Bus => vec![Kind::Bus],
            Scenario::Raw => vec![Kind::Raw],
            Scenario::Latency => vec![Kind::EchoBus, Kind::EchoRaw],
            Scenario::Ws => {
                let mut kinds = vec![Kind::WsIn, Kind::WsOut { clients: 1 }];
                if config.ws_clients > 1 {
                    kinds.push(Kind::WsOut {
                        clients: config.ws_clients,
                    });
                }
                if config.ws_idle_pages > 0 {
                    kinds.push(Kind::WsIdle {
                        pages: config.ws_idle_pages,
                    });
                }
                kinds
            }
            Scenario::Tcp => vec![Kind::TcpIn, Kind::TcpOut],
            Scenario::Mqtt => vec![Kind::MqttAlone, Kind::MqttIn, Kind::MqttOut],
            Scenario::View => vec![Kind::ViewBus { open: false }, Kind::ViewBus { open: true }],
        };
        cases.extend(kinds.into_iter().map(|kind| Case { scenario, kind }));
    }
    cases
}

/// Runs every configured case `warmup + runs` times and returns one record
/// per case; `each` sees each record as soon as it is complete.
pub fn run(config: &Config, mut each: impl FnMut(&Record)) -> Result<Vec<Record>> {
    if config.runs == 0 {
        return Err(Error::Invalid("--runs must be at least 1".to_owned()));
    }
    let mut records = Vec::new();
    for case in cases(config) {
        for _ in 0..config.warmup {
            run_case(config, &case)?;
        }
        let mut samples = Vec::with_capacity(config.runs);
        for _ in 0..config.runs {
            samples.push(run_case(config, &case)?);
        }
        let (label, system) = case.label(config);
        let messages = match case.kind {
            Kind::EchoBus | Kind::EchoRaw => config.round_trips,
            Kind::WsIdle { .. } => 0,
            _ => config.messages,
        };
        let record = Record::from_samples(
            case.scenario.name(),
            &label,
            system,
            messages,
            config.payload,
            &samples,
        );
        each(&record);
        records.push(record);
    }
    Ok(records)
}

/// How long to wait for a worker's result.
fn result_deadline(config: &Config) -> Duration {
    Duration::from_secs(60) + Duration::from_micros(config.messages * 50) + config.idle * 2
}

fn idle_ms(config: &Config) -> u64 {
    config.idle.as_millis() as u64
}

/// A process whose memory is reported: idle after start, peak at the end.
struct Watched {
    name: &'static str,
    idle: Memory,
}

fn watch(name: &'static str, proc: &Proc) -> Watched {
    Watched {
        name,
        idle: proc.memory(),
    }
}

fn memory(watched: &Watched, proc: &Proc) -> (String, Memory, Memory) {
    (watched.name.to_owned(), watched.idle, proc.memory())
}

fn start_backplane(config: &Config) -> Result<(Proc, BusAddr)> {
    start_backplane_on(config, 0, 0)
}

/// A backplane on 127.0.0.1 with these ports (0: it picks), and the ports
/// its banner shows.
pub(crate) fn start_backplane_on(
    config: &Config,
    publisher_port: u16,
    subscriber_port: u16,
) -> Result<(Proc, BusAddr)> {
    let exe = executable(&config.bin_dir, "backplane")?;
    let (publisher, subscriber) = (publisher_port.to_string(), subscriber_port.to_string());
    let mut proc = Proc::spawn(
        "backplane",
        Command::new(exe).args(["-a", "127.0.0.1", "-p", &publisher, "-s", &subscriber]),
    )?;
    let port = |line: String| -> Result<u16> {
        line.rsplit(' ')
            .next()
            .and_then(|p| p.trim().parse().ok())
            .ok_or_else(|| Error::Protocol(format!("no port in the banner line {line:?}")))
    };
    let subscriber_port = port(proc.wait_line("its subscriber port", START, |l| {
        l.starts_with("Subscriber Port")
    })?)?;
    let publisher_port = port(proc.wait_line("its publisher port", START, |l| {
        l.starts_with("Publisher  Port")
    })?)?;
    Ok((
        proc,
        BusAddr {
            publisher_port,
            subscriber_port,
        },
    ))
}

pub(crate) fn bus_flags(bus: &BusAddr) -> Vec<String> {
    vec![
        "-b".into(),
        "127.0.0.1".into(),
        "-p".into(),
        bus.publisher_port.to_string(),
        "-s".into(),
        bus.subscriber_port.to_string(),
    ]
}

pub(crate) fn start_gateway(
    config: &Config,
    name: &str,
    bus: &BusAddr,
    flags: &[String],
    ready: &str,
) -> Result<Proc> {
    let exe = executable(&config.bin_dir, name)?;
    let mut command = Command::new(exe);
    command.args(bus_flags(bus)).args(flags);
    if let Some(queue) = config.gateway_queue {
        command.args(["--queue", &queue.to_string()]);
    }
    let mut proc = Proc::spawn(name, &mut command)?;
    proc.wait_line("its banner", START, |l| l.contains(ready))?;
    Ok(proc)
}

/// A free port on 127.0.0.1 (for mosquitto, which cannot pick its own).
fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A mosquitto broker on a free port of 127.0.0.1, with its own config
/// directory (removed on drop).
pub(crate) struct Mosquitto {
    pub(crate) proc: Proc,
    pub(crate) port: u16,
    dir: PathBuf,
}

impl Mosquitto {
    pub(crate) fn start(config: &Config) -> Result<Mosquitto> {
        if !config.mosquitto.is_file() {
            return Err(Error::MissingExecutable(config.mosquitto.clone()));
        }
        let port = free_port()?;
        let dir = std::env::temp_dir().join(format!("banyan-bench-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let user = Command::new("id").arg("-un").output()?;
        let user = String::from_utf8_lossy(&user.stdout).trim().to_owned();
        std::fs::write(
            dir.join("mosquitto.conf"),
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                 log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\n\
                 log_type information\nuser {user}\n"
            ),
        )?;
        let mut proc = Proc::spawn(
            "mosquitto",
            Command::new(&config.mosquitto)
                .arg("-c")
                .arg(dir.join("mosquitto.conf")),
        )?;
        proc.wait_line("that it runs", START, |l| l.contains(" running"))?;
        Ok(Mosquitto { proc, port, dir })
    }

    /// Starts the broker again on the same port and configuration. The
    /// previous process must have ended (the caller killed it): it holds
    /// the port until then. It is reaped here.
    pub(crate) fn restart(&mut self, config: &Config) -> Result<()> {
        let mut proc = Proc::spawn(
            "mosquitto",
            Command::new(&config.mosquitto)
                .arg("-c")
                .arg(self.dir.join("mosquitto.conf")),
        )?;
        proc.wait_line("that it runs again", START, |l| l.contains(" running"))?;
        self.proc = proc;
        Ok(())
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Results of senders and receivers, as one sample.
fn throughput(
    config: &Config,
    senders: &mut [Proc],
    receivers: &mut [Proc],
    expected: u64,
) -> Result<Sample> {
    Ok(throughput_window(config, senders, receivers, expected)?.0)
}

/// [`throughput`], and the time it was measured over: from the senders'
/// first message to the receivers' last, in ns since the epoch.
fn throughput_window(
    config: &Config,
    senders: &mut [Proc],
    receivers: &mut [Proc],
    expected: u64,
) -> Result<(Sample, (u64, u64))> {
    let deadline = result_deadline(config);
    let mut start_ns = u64::MAX;
    for sender in senders.iter_mut() {
        let result = sender.event("result", deadline)?;
        start_ns = start_ns.min(field(&result, "start_ns")?);
    }
    let (mut received, mut out_of_order, mut last_ns) = (0, 0, 0);
    let mut min_per_client = None;
    for receiver in receivers.iter_mut() {
        let result = receiver.event("result", deadline)?;
        received += field(&result, "received")?;
        out_of_order += field(&result, "out_of_order")?;
        last_ns = last_ns.max(field(&result, "last_ns")?);
        if let Some(min) = result["min_per_client"].as_u64() {
            min_per_client = Some(min);
        }
    }
    for sender in senders.iter_mut() {
        // Senders that stay connected may now leave; the others are gone.
        let _ = sender.signal();
    }
    let seconds = last_ns.saturating_sub(start_ns) as f64 / 1e9;
    let sample = Sample {
        rate: if seconds > 0.0 {
            received as f64 / seconds
        } else {
            0.0
        },
        lost: expected.saturating_sub(received),
        out_of_order,
        min_per_client,
        ..Sample::default()
    };
    Ok((sample, (start_ns, last_ns)))
}

/// What a view worker's report says of the time from `start` to `end`
/// (ns): the snapshots that arrived then, the longest wait for one
/// (counting from `start` and up to `end`), and its last total.
fn view_seen(report: &Value, (start, end): (u64, u64), published: u64) -> Result<ViewSeen> {
    let numbers = |key: &str| -> Result<Vec<u64>> {
        report[key]
            .as_array()
            .and_then(|values| values.iter().map(Value::as_u64).collect())
            .ok_or_else(|| Error::Protocol(format!("no {key} in {report}")))
    };
    let during: Vec<u64> = numbers("at_ns")?
        .into_iter()
        .filter(|at| (start..=end).contains(at))
        .collect();
    let edges: Vec<u64> = std::iter::once(start)
        .chain(during.iter().copied())
        .chain(std::iter::once(end))
        .collect();
    let longest = edges
        .windows(2)
        .map(|pair| pair[1].saturating_sub(pair[0]))
        .max()
        .unwrap_or(0);
    Ok(ViewSeen {
        snapshots: during.len() as u64,
        longest_gap_ms: longest as f64 / 1e6,
        counted: numbers("totals")?.last().copied().unwrap_or(0),
        published,
    })
}

/// The subscribers, then the publishers, of a bus case (publishing on
/// `bench/K`, counting under `bench`); and the messages all subscribers
/// should receive together.
fn bus_peers(config: &Config, bus: &BusAddr) -> Result<(Vec<Proc>, Vec<Proc>, u64)> {
    let expected = config.messages * config.publishers as u64;
    let mut subs = Vec::new();
    for k in 0..config.subscribers {
        let mut sub = Proc::worker(
            &format!("subscriber {k}"),
            &Role::BusSubscribe {
                bus: bus.clone(),
                prefix: "bench".into(),
                expected,
                idle_ms: idle_ms(config),
            },
        )?;
        sub.event("ready", START)?;
        subs.push(sub);
    }
    let mut pubs = Vec::new();
    for k in 0..config.publishers {
        pubs.push(Proc::worker(
            &format!("publisher {k}"),
            &Role::BusPublish {
                bus: bus.clone(),
                topic: format!("bench/{k}"),
                messages: config.messages,
                payload: config.payload,
                wait_for: None,
                probe: false,
            },
        )?);
    }
    Ok((subs, pubs, expected * config.subscribers as u64))
}

fn field(value: &Value, name: &str) -> Result<u64> {
    value[name]
        .as_u64()
        .ok_or_else(|| Error::Protocol(format!("no {name} in {value}")))
}

fn run_case(config: &Config, case: &Case) -> Result<Sample> {
    let n = config.messages;
    let idle_ms = idle_ms(config);
    match case.kind {
        Kind::Bus => {
            let (backplane, bus) = start_backplane(config)?;
            let watched = watch("backplane", &backplane);
            // Held until the sample is taken: they stall for the whole run.
            let mut stalled = Vec::new();
            for index in 0..config.stalled_subscribers {
                let mut sub = Proc::worker(
                    &format!("stalled subscriber {index}"),
                    &Role::StalledSubscribe {
                        port: bus.subscriber_port,
                        prefix: "bench".into(),
                    },
                )?;
                sub.event("ready", START)?;
                stalled.push(sub);
            }
            let (mut subs, mut pubs, total) = bus_peers(config, &bus)?;
            let mut sample = throughput(config, &mut pubs, &mut subs, total)?;
            sample.memory.push(memory(&watched, &backplane));
            drop(stalled);
            Ok(sample)
        }
        Kind::ViewBus { open } => {
            let (backplane, bus) = start_backplane(config)?;
            let (gateway, url) = start_wsgw(config, &bus, &[])?;
            let watched = (watch("backplane", &backplane), watch("wsgw", &gateway));
            // Open before the bus peers, and ready once its first snapshot
            // came: the view then subscribes to everything.
            let mut view = if open {
                let mut view = Proc::worker("view", &Role::ViewWatch { url })?;
                view.event("ready", START)?;
                Some(view)
            } else {
                None
            };
            let (mut subs, mut pubs, total) = bus_peers(config, &bus)?;
            let (mut sample, window) = throughput_window(config, &mut pubs, &mut subs, total)?;
            if let Some(view) = view.as_mut() {
                view.signal()?;
                let report = view.event("result", START)?;
                let published = n * config.publishers as u64;
                sample.view = Some(view_seen(&report, window, published)?);
            }
            sample.memory = vec![memory(&watched.0, &backplane), memory(&watched.1, &gateway)];
            Ok(sample)
        }
        Kind::Raw => {
            let mut proxy = Proc::worker(
                "raw proxy",
                &Role::RawProxy {
                    high_water_mark: RAW_HIGH_WATER_MARK,
                },
            )?;
            let ports = proxy.event("ready", START)?;
            let watched = watch("raw proxy", &proxy);
            let expected = n * config.publishers as u64;
            let mut subs = Vec::new();
            for index in 0..config.subscribers {
                let mut sub = Proc::worker(
                    &format!("raw subscriber {index}"),
                    &Role::RawSubscribe {
                        port: field(&ports, "subscriber_port")? as u16,
                        prefix: "bench".into(),
                        index,
                        expected,
                        idle_ms,
                        high_water_mark: RAW_HIGH_WATER_MARK,
                    },
                )?;
                sub.event("ready", START)?;
                subs.push(sub);
            }
            let mut pubs = Vec::new();
            for k in 0..config.publishers {
                pubs.push(Proc::worker(
                    &format!("raw publisher {k}"),
                    &Role::RawPublish {
                        port: field(&ports, "publisher_port")? as u16,
                        topic: format!("bench/{k}"),
                        messages: n,
                        payload: config.payload,
                        subscribers: config.subscribers,
                        high_water_mark: RAW_HIGH_WATER_MARK,
                    },
                )?);
            }
            let total = expected * config.subscribers as u64;
            let mut sample = throughput(config, &mut pubs, &mut subs, total)?;
            sample.memory.push(memory(&watched, &proxy));
            Ok(sample)
        }
        Kind::EchoBus => {
            let (backplane, bus) = start_backplane(config)?;
            let watched = watch("backplane", &backplane);
            let mut echo = Proc::worker("echo", &Role::BusEcho { bus: bus.clone() })?;
            echo.event("ready", START)?;
            let mut ping = Proc::worker(
                "ping",
                &Role::BusPing {
                    bus,
                    round_trips: config.round_trips,
                    warmup: config.round_trips / 10,
                },
            )?;
            let result = ping.event("result", result_deadline(config))?;
            Ok(Sample::latency(result, vec![memory(&watched, &backplane)]))
        }
        Kind::EchoRaw => {
            let mut proxy = Proc::worker(
                "raw proxy",
                &Role::RawProxy {
                    high_water_mark: RAW_HIGH_WATER_MARK,
                },
            )?;
            let ports = proxy.event("ready", START)?;
            let watched = watch("raw proxy", &proxy);
            let (publisher_port, subscriber_port) = (
                field(&ports, "publisher_port")? as u16,
                field(&ports, "subscriber_port")? as u16,
            );
            let mut echo = Proc::worker(
                "raw echo",
                &Role::RawEcho {
                    publisher_port,
                    subscriber_port,
                },
            )?;
            echo.event("ready", START)?;
            let mut ping = Proc::worker(
                "raw ping",
                &Role::RawPing {
                    publisher_port,
                    subscriber_port,
                    round_trips: config.round_trips,
                    warmup: config.round_trips / 10,
                },
            )?;
            let result = ping.event("result", result_deadline(config))?;
            Ok(Sample::latency(result, vec![memory(&watched, &proxy)]))
        }
        Kind::WsIn => {
            let (backplane, bus) = start_backplane(config)?;
            let mut sub = bus_subscriber(&bus, "to_bench", n, idle_ms)?;
            let (gateway, url) = start_wsgw(config, &bus, &[])?;
            let watched = (watch("backplane", &backplane), watch("wsgw", &gateway));
            let mut page = Proc::worker(
                "page",
                &Role::WsPeer {
                    url,
                    id: "to_bench".into(),
                    clients: 1,
                    send: n,
                    expected: 0,
                    idle_ms,
                },
            )?;
            page.event("ready", START)?;
            go_when_probed(&mut sub, &mut page)?;
            let mut sample = throughput(config, &mut [page], &mut [sub], n)?;
            sample.memory = vec![memory(&watched.0, &backplane), memory(&watched.1, &gateway)];
            Ok(sample)
        }
        Kind::WsOut { clients } => {
            let (backplane, bus) = start_backplane(config)?;
            let (gateway, url) = start_wsgw(config, &bus, &[])?;
            let watched = (watch("backplane", &backplane), watch("wsgw", &gateway));
            let mut pages = Proc::worker(
                "pages",
                &Role::WsPeer {
                    url,
                    id: "to_bench".into(),
                    clients,
                    send: 0,
                    expected: n,
                    idle_ms,
                },
            )?;
            pages.event("ready", START)?;
            let mut publisher = bus_prober(&bus, "from_bench", n, config.payload)?;
            go_when_probed(&mut pages, &mut publisher)?;
            let total = n * clients as u64;
            let mut sample = throughput(config, &mut [publisher], &mut [pages], total)?;
            if clients == 1 {
                sample.min_per_client = None;
            }
            sample.memory = vec![memory(&watched.0, &backplane), memory(&watched.1, &gateway)];
            Ok(sample)
        }
        Kind::WsIdle { pages } => {
            // A socket per page in wsgw and in the page worker, and some.
            let files = pages + 256;
            let (backplane, bus) = start_backplane(config)?;
            let mut flags = bus_flags(&bus);
            flags.extend(["-w", "0", "-a", "127.0.0.1", "--max-clients"].map(String::from));
            flags.push(pages.to_string());
            let exe = executable(&config.bin_dir, "wsgw")?;
            let mut gateway = Proc::spawn("wsgw", &mut with_file_limit(files, &exe, &flags))?;
            let line = gateway.wait_line("its WebSocket address", START, |l| {
                l.starts_with("WebSocket server on ")
            })?;
            let url = line
                .trim_start_matches("WebSocket server on ")
                .trim()
                .to_owned();
            let before = gateway.memory();
            let role = Role::WsIdle {
                url,
                bus,
                id: "to_idle".into(),
                pages,
            };
            let worker_args = ["worker".to_owned(), serde_json::to_string(&role)?];
            let mut worker = Proc::spawn(
                "idle pages",
                &mut with_file_limit(files, &std::env::current_exe()?, &worker_args),
            )?;
            worker.event("ready", result_deadline(config))?;
            let after = gateway.memory();
            worker.signal()?;
            worker.event("result", START)?;
            let grown = after.rss_kib.saturating_sub(before.rss_kib);
            Ok(Sample {
                kib_per_page: Some(grown as f64 / pages as f64),
                memory: vec![
                    (
                        "backplane".to_owned(),
                        backplane.memory(),
                        backplane.memory(),
                    ),
                    ("wsgw".to_owned(), before, after),
                ],
                ..Sample::default()
            })
        }
        Kind::TcpIn => {
            let (backplane, bus) = start_backplane(config)?;
            let mut sub = bus_subscriber(&bus, "from_dev", n, idle_ms)?;
            let mut device = Proc::worker(
                "device",
                &Role::TcpDevice {
                    send: n,
                    payload: config.payload,
                    expected: 0,
                    idle_ms,
                },
            )?;
            let port = field(&device.event("ready", START)?, "port")?;
            let gateway = start_tgw(config, &bus, port)?;
            let watched = (watch("backplane", &backplane), watch("tgw", &gateway));
            go_when_probed(&mut sub, &mut device)?;
            let mut sample = throughput(config, &mut [device], &mut [sub], n)?;
            sample.memory = vec![memory(&watched.0, &backplane), memory(&watched.1, &gateway)];
            Ok(sample)
        }
        Kind::TcpOut => {
            let (backplane, bus) = start_backplane(config)?;
            let mut device = Proc::worker(
                "device",
                &Role::TcpDevice {
                    send: 0,
                    payload: config.payload,
                    expected: n,
                    idle_ms,
                },
            )?;
            let port = field(&device.event("ready", START)?, "port")?;
            let gateway = start_tgw(config, &bus, port)?;
            let watched = (watch("backplane", &backplane), watch("tgw", &gateway));
            let mut publisher = bus_prober(&bus, "to_dev", n, config.payload)?;
            go_when_probed(&mut device, &mut publisher)?;
            let mut sample = throughput(config, &mut [publisher], &mut [device], n)?;
            sample.memory = vec![memory(&watched.0, &backplane), memory(&watched.1, &gateway)];
            Ok(sample)
        }
        Kind::MqttAlone => {
            let broker = Mosquitto::start(config)?;
            let watched = watch("mosquitto", &broker.proc);
            let mut receiver = mqtt_peer(broker.port, "bench/alone", 0, n, idle_ms)?;
            let mut sender = mqtt_peer(broker.port, "bench/alone", n, 0, idle_ms)?;
            go_when_probed(&mut receiver, &mut sender)?;
            let mut sample = throughput(config, &mut [sender], &mut [receiver], n)?;
            sample.memory = vec![memory(&watched, &broker.proc)];
            Ok(sample)
        }
        Kind::MqttIn => {
            let broker = Mosquitto::start(config)?;
            let (backplane, bus) = start_backplane(config)?;
            let mut sub = bus_subscriber(&bus, "from_mqtt", n, idle_ms)?;
            let gateway = start_mqttgw(config, &bus, broker.port)?;
            let watched = (
                watch("backplane", &backplane),
                watch("mqttgw", &gateway),
                watch("mosquitto", &broker.proc),
            );
            let mut sender = mqtt_peer(broker.port, "bench_in", n, 0, idle_ms)?;
            go_when_probed(&mut sub, &mut sender)?;
            let mut sample = throughput(config, &mut [sender], &mut [sub], n)?;
            sample.memory = vec![
                memory(&watched.0, &backplane),
                memory(&watched.1, &gateway),
                memory(&watched.2, &broker.proc),
            ];
            Ok(sample)
        }
        Kind::MqttOut => {
            let broker = Mosquitto::start(config)?;
            let (backplane, bus) = start_backplane(config)?;
            let mut receiver = mqtt_peer(broker.port, "from_banyan", 0, n, idle_ms)?;
            let gateway = start_mqttgw(config, &bus, broker.port)?;
            let watched = (
                watch("backplane", &backplane),
                watch("mqttgw", &gateway),
                watch("mosquitto", &broker.proc),
            );
            let mut publisher = bus_prober(&bus, "to_mqtt", n, config.payload)?;
            go_when_probed(&mut receiver, &mut publisher)?;
            let mut sample = throughput(config, &mut [publisher], &mut [receiver], n)?;
            sample.memory = vec![
                memory(&watched.0, &backplane),
                memory(&watched.1, &gateway),
                memory(&watched.2, &broker.proc),
            ];
            Ok(sample)
        }
    }
}

fn bus_subscriber(bus: &BusAddr, prefix: &str, expected: u64, idle_ms: u64) -> Result<Proc> {
    let mut sub = Proc::worker(
        "bus subscriber",
        &Role::BusSubscribe {
            bus: bus.clone(),
            prefix: prefix.into(),
            expected,
            idle_ms,
        },
    )?;
    sub.event("ready", START)?;
    Ok(sub)
}

/// A bus publisher that waits for a subscriber of `topic`, then probes.
fn bus_prober(bus: &BusAddr, topic: &str, messages: u64, payload: usize) -> Result<Proc> {
    let mut publisher = Proc::worker(
        "bus publisher",
        &Role::BusPublish {
            bus: bus.clone(),
            topic: topic.into(),
            messages,
            payload,
            wait_for: Some(topic.into()),
            probe: true,
        },
    )?;
    publisher.event("ready", START)?;
    Ok(publisher)
}

fn mqtt_peer(port: u16, topic: &str, send: u64, expected: u64, idle_ms: u64) -> Result<Proc> {
    let mut peer = Proc::worker(
        if send > 0 {
            "mqtt publisher"
        } else {
            "mqtt subscriber"
        },
        &Role::MqttPeer {
            port,
            topic: topic.into(),
            send,
            expected,
            idle_ms,
        },
    )?;
    peer.event("ready", START)?;
    Ok(peer)
}

/// Once `receiver` has seen a probe of `sender`, the path is open: go.
fn go_when_probed(receiver: &mut Proc, sender: &mut Proc) -> Result<()> {
    receiver.event("probed", START)?;
    sender.signal()
}

/// `program args...` run with the soft limit of open files raised to
/// `files` (through `sh -c 'ulimit -n'`, which may raise it up to the hard
/// limit; above that, sh says so and exits).
fn with_file_limit(files: usize, program: &std::path::Path, args: &[String]) -> Command {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg("ulimit -n \"$0\" && exec \"$@\"")
        .arg(files.to_string())
        .arg(program)
        .args(args);
    command
}

fn start_wsgw(config: &Config, bus: &BusAddr, extra: &[String]) -> Result<(Proc, String)> {
    let mut flags: Vec<String> = ["-w", "0", "-a", "127.0.0.1"].map(String::from).to_vec();
    flags.extend_from_slice(extra);
    let mut gateway = start_gateway(config, "wsgw", bus, &flags, "Publisher  Port")?;
    let line = gateway.wait_line("its WebSocket address", START, |l| {
        l.starts_with("WebSocket server on ")
    })?;
    let url = line
        .trim_start_matches("WebSocket server on ")
        .trim()
        .to_owned();
    Ok((gateway, url))
}

fn start_tgw(config: &Config, bus: &BusAddr, port: u64) -> Result<Proc> {
    let flags: Vec<String> = vec![
        "-a".into(),
        "127.0.0.1".into(),
        "-n".into(),
        port.to_string(),
        "-g".into(),
        "to_dev".into(),
        "-e".into(),
        "from_dev".into(),
    ];
    start_gateway(config, "tgw", bus, &flags, "Publisher  Port")
}

fn start_mqttgw(config: &Config, bus: &BusAddr, port: u16) -> Result<Proc> {
    let flags: Vec<String> = vec![
        "-a".into(),
        "127.0.0.1".into(),
        "-d".into(),
        port.to_string(),
        "-g".into(),
        "to_mqtt".into(),
        "-i".into(),
        "from_banyan".into(),
        "-j".into(),
        "bench_in".into(),
        "-e".into(),
        "from_mqtt".into(),
    ];
    start_gateway(config, "mqttgw", bus, &flags, "Publisher  Port")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_views_snapshots_are_counted_over_the_run_only() {
        let ms = 1_000_000;
        let report = json!({
            "at_ns": [0, 100 * ms, 350 * ms, 600 * ms, 1300 * ms, 1600 * ms],
            "totals": [0, 10, 500, 900, 1000, 1000],
        });
        // The run: from 200 to 1400 ms; the longest wait, 600 to 1300 ms.
        let seen = view_seen(&report, (200 * ms, 1400 * ms), 1000).expect("a report");
        assert_eq!(
            seen,
            ViewSeen {
                snapshots: 3,
                longest_gap_ms: 700.0,
                counted: 1000,
                published: 1000,
            }
        );
        assert!(view_seen(&json!({"at_ns": []}), (0, 1), 0).is_err());
    }

    #[test]
    fn the_view_scenario_runs_only_when_named() {
        assert!(!Scenario::ALL.contains(&Scenario::View));
        assert_eq!("view".parse::<Scenario>().ok(), Some(Scenario::View));
        let config = Config {
            scenarios: vec![Scenario::View],
            ..Config::default()
        };
        let labels: Vec<String> = cases(&config)
            .iter()
            .map(|case| case.label(&config).0)
            .collect();
        assert_eq!(
            labels,
            ["1 pub -> 1 sub, no view", "1 pub -> 1 sub, view open"]
        );
    }
}
