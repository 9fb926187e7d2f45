//! `tgw`: the TCP gateway (python-banyan's `tgw`), joining one TCP device
//! such as a MicroPython board to the bus.

mod common;

use std::process::ExitCode;
use std::time::Duration;

use argh::FromArgs;
use tcp_gateway::{Config, PrefixWidth};

/// Joins a TCP device (a microcontroller running a TCP server) to the Banyan
/// bus: bus messages on the -g topics go to the device as length-prefixed
/// MessagePack, frames from the device are published on the -e topic.
/// Several -g topics: repeat -g, separate with commas, or list them after one
/// -g as python-banyan does.
#[derive(FromArgs)]
#[argh(help_triggers("-h", "--help"))]
struct Args {
    /// the device's (TCP server's) IP address or host name (required)
    #[argh(option, short = 'a')]
    address: String,
    /// backplane address (default None: this machine, hosting a backplane if
    /// none runs)
    #[argh(option, short = 'b')]
    backplane: Option<String>,
    /// bus topic on which what the device sends is published (default
    /// from_pico)
    #[argh(
        option,
        short = 'e',
        default = "String::from(tcp_gateway::config::DEFAULT_PUBLISH_TOPIC)"
    )]
    publish_topic: String,
    /// bus topic forwarded to the device; repeatable (default figura)
    #[argh(option, short = 'g')]
    topics: Vec<String>,
    /// accepted for python-banyan compatibility and ignored
    #[argh(option, short = 'l')]
    event_loop: Option<String>,
    /// the device's TCP port (default 31335)
    #[argh(option, short = 'n', default = "tcp_gateway::config::DEFAULT_PORT")]
    port: u16,
    /// publisher port (default 43124)
    #[argh(option, short = 'p', default = "43124")]
    publisher_port: u16,
    /// subscriber port (default 43125)
    #[argh(option, short = 's', default = "43125")]
    subscriber_port: u16,
    /// name shown in the banner (default TcpGateway)
    #[argh(
        option,
        short = 'z',
        default = "String::from(tcp_gateway::config::DEFAULT_NAME)"
    )]
    name: String,
    /// length prefix width in bytes: 1 (python-banyan's, payloads up to 255
    /// bytes), 2 or 4, big-endian (default 1)
    #[argh(option, default = "PrefixWidth::One", from_str_fn(prefix_width))]
    prefix: PrefixWidth,
    /// largest payload in bytes in either direction, within what the prefix
    /// allows (default 1048576)
    #[argh(option, default = "1 << 20")]
    max_payload: usize,
    /// bus messages held for the device while it is away or slow; when
    /// full, a device that is away or stalled loses the oldest, one that
    /// reads makes the bus wait (default 1000)
    #[argh(option, default = "1000")]
    queue: usize,
    /// seconds a connected device with a full queue may take no byte before
    /// it counts as stalled and its oldest messages are dropped (default 1)
    #[argh(option, default = "Duration::from_secs(1)", from_str_fn(seconds))]
    slow_device_grace: Duration,
    /// seconds without a frame from the device, or without it taking any
    /// byte, after which it counts as gone and is reconnected (default: off)
    #[argh(option, from_str_fn(seconds))]
    idle_timeout: Option<Duration>,
    /// TCP keepalive idle time in seconds, 0 for off (default 30)
    #[argh(option, default = "Duration::from_secs(30)", from_str_fn(seconds))]
    keepalive: Duration,
    /// longest delay in seconds between connection attempts (default 5)
    #[argh(option, default = "Duration::from_secs(5)", from_str_fn(seconds))]
    retry_max: Duration,
    /// publish only frames from the device that are one valid MessagePack
    /// value; log and drop the others (default: pass bytes through)
    #[argh(switch)]
    validate: bool,
}

fn prefix_width(value: &str) -> Result<PrefixWidth, String> {
    value.parse().map_err(|e: tcp_gateway::Error| e.to_string())
}

fn seconds(value: &str) -> Result<Duration, String> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| format!("{value:?} is not a number of seconds"))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Args = common::parse(&["-g"]);
    common::init_logging();
    let _ = args.event_loop;
    let mut topics = common::split_list(&args.topics);
    if topics.is_empty() {
        topics.push(tcp_gateway::config::DEFAULT_TOPIC.to_owned());
    }
    let config = Config {
        server: args.address,
        port: args.port,
        topics,
        publish_topic: args.publish_topic,
        prefix: args.prefix,
        max_payload: args.max_payload,
        queue_capacity: args.queue,
        slow_device_grace: args.slow_device_grace,
        idle_timeout: args.idle_timeout.filter(|t| !t.is_zero()),
        keepalive: Some(args.keepalive).filter(|t| !t.is_zero()),
        validate: args.validate,
        retry_max: args.retry_max,
        ..Config::default()
    };
    let mut bus =
        match common::attach(&args.backplane, args.publisher_port, args.subscriber_port).await {
            Ok(bus) => bus,
            Err(code) => return code,
        };
    if let Err(e) = tcp_gateway::subscribe(&bus.client, &config).await {
        return common::fail(e);
    }
    let shutdown = common::shutdown_signal();
    println!("{}", bus.banner(&args.name));
    let result = tcp_gateway::run(&config, &bus.client, &mut bus.messages, shutdown).await;
    bus.close().await;
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => common::fail(e),
    }
}
