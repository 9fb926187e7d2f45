//! `backplane`: the Banyan message forwarder (python-banyan's `backplane`).

use std::process::ExitCode;
use std::time::Duration;

use argh::FromArgs;
use banyan_core::backplane::{
    BackplaneConfig, DEFAULT_HIGH_WATER_MARK, DEFAULT_QUEUE_BYTES, DEFAULT_SLOW_SUBSCRIBER_GRACE,
    DEFAULT_SUBSCRIBER_HIGH_WATER_MARK,
};
use banyan_core::{Backplane, BackplaneStats};
use banyan_gateway::metrics::{self, Kind, Metric};
use banyan_gateway::Registry;
use banyan_rs::cli::{self, Alias, Spec};

/// The Banyan backplane: every component publishes to its publisher port and
/// subscribes from its subscriber port.
#[derive(FromArgs)]
#[argh(help_triggers("-h", "--help"))]
struct Args {
    /// name shown in the banner (default: none)
    #[argh(option, short = 'n', default = "String::new()")]
    name: String,
    /// publisher port, 0 for any free port (default 43124)
    #[argh(option, short = 'p', default = "43124")]
    publisher_port: u16,
    /// subscriber port, 0 for any free port (default 43125)
    #[argh(option, short = 's', default = "43125")]
    subscriber_port: u16,
    /// address to listen on (default 0.0.0.0: every interface, reachable from
    /// the LAN; 127.0.0.1 keeps the bus on this machine)
    #[argh(option, short = 'a', default = "String::from(\"0.0.0.0\")")]
    address: String,
    /// queue bound per publisher in messages (default 200000)
    #[argh(option, default = "DEFAULT_HIGH_WATER_MARK")]
    high_water_mark: i32,
    /// queue bound per subscriber in messages (default 16384)
    #[argh(option, default = "DEFAULT_SUBSCRIBER_HIGH_WATER_MARK")]
    subscriber_high_water_mark: i32,
    /// bytes each publisher's and each subscriber's queue holds at most: both
    /// marks are lowered while messages are large (default 67108864, 64 MiB)
    #[argh(option, default = "DEFAULT_QUEUE_BYTES")]
    queue_bytes: u64,
    /// how long a subscriber whose queue is full may take to make room
    /// before it misses messages: seconds, or a number with a unit (default
    /// 250ms)
    #[argh(
        option,
        default = "DEFAULT_SLOW_SUBSCRIBER_GRACE",
        from_str_fn(cli::duration)
    )]
    stall_grace: Duration,
    /// accepted for python-banyan compatibility and ignored (default 0.001)
    #[argh(option, short = 't', default = "0.001")]
    loop_time: f64,
    /// started by a component that found no backplane: hand the ports to a
    /// backplane started later, and stop once no component has been
    /// connected for 5 s
    #[argh(switch)]
    on_demand: bool,
    /// serve Prometheus metrics at http://ADDR:PORT/metrics, e.g.
    /// 127.0.0.1:9464 (port 0: any free port, shown at start; default: off)
    #[argh(option)]
    metrics: Option<String>,
}

impl cli::Flags for Args {}

const SPEC: Spec = Spec {
    multi: &[],
    aliases: &[Alias {
        old: "--slow-subscriber-grace-ms",
        new: "--stall-grace",
        unit: "ms",
    }],
};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Args = cli::parse(&SPEC);
    cli::init_logging();
    let _ = args.loop_time;
    if args.queue_bytes == 0 {
        cli::usage_error(&cli::command(), "--queue-bytes must be at least 1 byte");
    }
    let config = BackplaneConfig {
        bind_address: args.address,
        publisher_port: args.publisher_port,
        subscriber_port: args.subscriber_port,
        high_water_mark: args.high_water_mark,
        subscriber_high_water_mark: args.subscriber_high_water_mark,
        queue_bytes: args.queue_bytes,
        slow_subscriber_grace: args.stall_grace,
        ..if args.on_demand {
            banyan_core::backplane::on_demand(args.publisher_port, args.subscriber_port)
        } else {
            BackplaneConfig::default()
        }
    };
    // Bound first, so that an address in use is a usage error before the
    // bus ports are taken.
    let metrics_listener = match &args.metrics {
        Some(address) => match tokio::net::TcpListener::bind(address).await {
            Ok(listener) => Some(listener),
            Err(e) => cli::usage_error(&cli::command(), format!("--metrics {address}: {e}")),
        },
        None => None,
    };
    let shutdown = cli::cancel_on_signal();
    // Ports held by a backplane a component started on demand are taken over.
    let backplane = match Backplane::bind_or_take_over(&config) {
        Ok((backplane, _)) => backplane,
        Err(e) => return cli::fail(e),
    };
    println!("{}", backplane.banner(&args.name));
    if let Some(listener) = metrics_listener {
        match listener.local_addr() {
            Ok(address) => println!("Metrics on http://{address}/metrics"),
            Err(e) => tracing::warn!("the metrics address: {e}"),
        }
        let registry = Registry::default();
        let stats = backplane.stats_handle();
        registry.register(move |out| out.extend(backplane_metrics(&stats.stats())));
        tokio::spawn(metrics::serve(listener, registry, shutdown.clone()));
    }
    let (_, stats) = backplane.serve(shutdown.cancelled_owned()).await;
    tracing::info!(
        forwarded = stats.forwarded,
        forwarded_bytes = stats.forwarded_bytes,
        overflows = stats.overflows,
        "backplane stopped"
    );
    ExitCode::SUCCESS
}

/// The backplane's counters as metrics (docs/metrics.md): what the
/// forwarding thread counts anyway, read at each scrape.
fn backplane_metrics(stats: &BackplaneStats) -> Vec<Metric> {
    vec![
        Metric::single(
            "banyan_backplane_forwarded_messages_total",
            "Messages received from publishers and forwarded to subscribers.",
            Kind::Counter,
            stats.forwarded as f64,
        ),
        Metric::single(
            "banyan_backplane_forwarded_bytes_total",
            "Bytes of the messages forwarded (topic and payload frames), once per message.",
            Kind::Counter,
            stats.forwarded_bytes as f64,
        ),
        Metric::single(
            "banyan_backplane_overflows_total",
            "Times a subscriber's queue stayed full past the stall grace, so that it missed messages.",
            Kind::Counter,
            stats.overflows as f64,
        ),
        Metric::single(
            "banyan_backplane_subscribed_topics",
            "Distinct topic prefixes subscribed now.",
            Kind::Gauge,
            stats.topics as f64,
        ),
    ]
}
