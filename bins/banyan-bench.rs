//! `banyan-bench`: benchmarks of the bus and the gateways (see
//! docs/benchmarks.md).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use argh::FromArgs;
use banyan_bench::{chart, read_records, report, scenarios, soak, Config, Scenario};
use banyan_rs::cli::{self, Spec};

/// Benchmarks of the Banyan bus and gateways, next to bare ZeroMQ, mosquitto
/// and python-banyan.
#[derive(FromArgs)]
#[argh(help_triggers("-h", "--help"))]
struct Args {
    #[argh(subcommand)]
    command: Sub,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Sub {
    Run(RunArgs),
    Soak(SoakArgs),
    Chart(ChartArgs),
    Worker(WorkerArgs),
}

/// Run scenarios: bus raw latency ws tcp mqtt (default: all).
#[derive(FromArgs)]
#[argh(subcommand, name = "run", help_triggers("-h", "--help"))]
struct RunArgs {
    /// scenarios to run (bus, raw, latency, ws, tcp, mqtt; default all)
    #[argh(positional)]
    scenarios: Vec<String>,
    /// messages per publisher or direction (default 100000)
    #[argh(option, short = 'n', default = "100_000")]
    messages: u64,
    /// payload size in bytes; 0 is {'msg': i} alone (default 0)
    #[argh(option, default = "0")]
    payload: usize,
    /// publisher processes for bus and raw (default 1)
    #[argh(option, default = "1")]
    publishers: usize,
    /// subscriber processes for bus and raw (default 1)
    #[argh(option, default = "1")]
    subscribers: usize,
    /// pages of the many-pages ws case, 0 to skip it (default 100)
    #[argh(option, default = "100")]
    ws_clients: usize,
    /// pages of the idle-pages ws case, which measures wsgw's memory per
    /// idle page; needs `ulimit -n` above it; 0 to skip it (default 2000)
    #[argh(option, default = "2000")]
    ws_idle_pages: usize,
    /// subscribers of the bus case that subscribe to everything published
    /// and never read, to measure what they cost the backplane (default 0)
    #[argh(option, default = "0")]
    stalled_subscribers: usize,
    /// round trips measured by latency (default 10000)
    #[argh(option, default = "10_000")]
    round_trips: u64,
    /// measured runs per case; figures are medians (default 5)
    #[argh(option, default = "5")]
    runs: usize,
    /// discarded runs per case before measuring (default 1)
    #[argh(option, default = "1")]
    warmup: usize,
    /// silence after which a receiver's count is final, in ms (default 2000)
    #[argh(option, default = "2000")]
    idle_ms: u64,
    /// queue bound passed to the gateways as --queue (default: theirs)
    #[argh(option)]
    gateway_queue: Option<usize>,
    /// the mosquitto executable (default /usr/sbin/mosquitto)
    #[argh(option, default = "PathBuf::from(\"/usr/sbin/mosquitto\")")]
    mosquitto: PathBuf,
    /// print one JSON object per result instead of the table
    #[argh(switch)]
    json: bool,
}

/// Soak every gateway under steady traffic while peers misbehave (minutes).
#[derive(FromArgs)]
#[argh(subcommand, name = "soak", help_triggers("-h", "--help"))]
struct SoakArgs {
    /// how long, in minutes (default 5)
    #[argh(option)]
    minutes: Option<u64>,
    /// how long, in seconds (instead of --minutes)
    #[argh(option)]
    seconds: Option<u64>,
    /// messages a second on each path (default 500)
    #[argh(option, default = "500")]
    rate: u32,
    /// payload size in bytes, at most 200 (default 100)
    #[argh(option, default = "100")]
    payload: usize,
    /// the mosquitto executable (default /usr/sbin/mosquitto)
    #[argh(option, default = "PathBuf::from(\"/usr/sbin/mosquitto\")")]
    mosquitto: PathBuf,
    /// print JSON lines instead of the tables
    #[argh(switch)]
    json: bool,
}

/// Draw the SVG chart from JSON-line results.
#[derive(FromArgs)]
#[argh(subcommand, name = "chart", help_triggers("-h", "--help"))]
struct ChartArgs {
    /// JSON lines written by `run --json` (and scripts/bench-python --json)
    #[argh(option)]
    input: Vec<PathBuf>,
    /// the SVG file to write
    #[argh(option)]
    output: PathBuf,
    /// the chart's title
    #[argh(option, default = "String::from(\"Banyan throughput (messages/s)\")")]
    title: String,
}

/// Run one worker role (used by `run` itself).
#[derive(FromArgs)]
#[argh(subcommand, name = "worker", help_triggers("-h", "--help"))]
struct WorkerArgs {
    /// the role, as JSON
    #[argh(positional)]
    role: String,
}

impl cli::Flags for Args {}

fn main() -> ExitCode {
    let args: Args = cli::parse(&Spec::default());
    cli::init_logging();
    let result = match args.command {
        Sub::Worker(worker) => banyan_bench::worker::run(&worker.role),
        Sub::Chart(args) => draw(&args),
        Sub::Run(args) => run(args),
        Sub::Soak(args) => soak(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => cli::fail(e),
    }
}

fn run(args: RunArgs) -> banyan_bench::Result<()> {
    let scenarios = args
        .scenarios
        .iter()
        .map(|s| s.parse::<Scenario>())
        .collect::<Result<Vec<_>, _>>()?;
    let config = Config {
        scenarios,
        messages: args.messages,
        payload: args.payload,
        publishers: args.publishers,
        subscribers: args.subscribers,
        ws_clients: args.ws_clients,
        ws_idle_pages: args.ws_idle_pages,
        stalled_subscribers: args.stalled_subscribers,
        round_trips: args.round_trips,
        runs: args.runs,
        warmup: args.warmup,
        idle: Duration::from_millis(args.idle_ms),
        gateway_queue: args.gateway_queue,
        mosquitto: args.mosquitto,
        bin_dir: banyan_bench::procs::bin_dir()?,
    };
    let json = args.json;
    let records = scenarios::run(&config, |record| {
        if json {
            println!("{}", record.to_json());
        } else {
            eprintln!(
                "done: {} {} ({})",
                record.scenario, record.case, record.system
            );
        }
        let _ = std::io::stdout().flush();
    })?;
    if !json {
        print!("{}", report::table(&records));
    }
    Ok(())
}

fn soak(args: SoakArgs) -> banyan_bench::Result<()> {
    let duration = match (args.minutes, args.seconds) {
        (Some(_), Some(_)) => {
            return Err(banyan_bench::Error::Invalid(
                "give --minutes or --seconds, not both".to_owned(),
            ))
        }
        (_, Some(seconds)) => Duration::from_secs(seconds),
        (minutes, None) => Duration::from_secs(minutes.unwrap_or(5).saturating_mul(60)),
    };
    let config = soak::Config {
        duration,
        rate: args.rate,
        payload: args.payload,
        mosquitto: args.mosquitto,
        bin_dir: banyan_bench::procs::bin_dir()?,
    };
    let report = soak::run(&config, |step| eprintln!("{step}"))?;
    if args.json {
        for line in report.json_lines() {
            println!("{line}");
        }
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

fn draw(args: &ChartArgs) -> banyan_bench::Result<()> {
    let mut records = Vec::new();
    for input in &args.input {
        records.extend(read_records(&std::fs::read_to_string(input)?));
    }
    std::fs::write(&args.output, chart::svg(&records, &args.title))?;
    Ok(())
}
