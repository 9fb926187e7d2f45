//! `backplane`: the Banyan message forwarder (python-banyan's `backplane`).

use std::process::ExitCode;
use std::time::Duration;

use argh::FromArgs;
use banyan_core::backplane::{
    BackplaneConfig, DEFAULT_HIGH_WATER_MARK, DEFAULT_SLOW_SUBSCRIBER_GRACE,
    DEFAULT_SUBSCRIBER_HIGH_WATER_MARK,
};
use banyan_core::Backplane;
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
    let config = BackplaneConfig {
        bind_address: args.address,
        publisher_port: args.publisher_port,
        subscriber_port: args.subscriber_port,
        high_water_mark: args.high_water_mark,
        subscriber_high_water_mark: args.subscriber_high_water_mark,
        slow_subscriber_grace: args.stall_grace,
        ..if args.on_demand {
            banyan_core::backplane::on_demand(args.publisher_port, args.subscriber_port)
        } else {
            BackplaneConfig::default()
        }
    };
    let shutdown = cli::cancel_on_signal();
    // Ports held by a backplane a component started on demand are taken over.
    let backplane = match Backplane::bind_or_take_over(&config) {
        Ok((backplane, _)) => backplane,
        Err(e) => return cli::fail(e),
    };
    println!("{}", backplane.banner(&args.name));
    let (_, stats) = backplane.serve(shutdown.cancelled_owned()).await;
    tracing::info!(
        forwarded = stats.forwarded,
        overflows = stats.overflows,
        "backplane stopped"
    );
    ExitCode::SUCCESS
}
