//! `tgw`: the TCP gateway (python-banyan's `tgw`), joining one TCP device
//! such as a MicroPython board to the bus.

use std::process::ExitCode;
use std::time::Duration;

use banyan_gateway::Reconnect;
use banyan_rs::cli::{self, Alias, Spec};
use banyan_tcp_gateway::config::{
    TopicMatch, DEFAULT_KEEPALIVE, DEFAULT_MAX_PAYLOAD, DEFAULT_NAME, DEFAULT_PORT,
    DEFAULT_PUBLISH_TOPIC, DEFAULT_QUEUE, DEFAULT_TOPIC,
};
use banyan_tcp_gateway::{Config, PrefixWidth};

banyan_rs::component_args! {
    queue: DEFAULT_QUEUE;
    reconnect: Reconnect::default();
    metrics;
    /// Joins a TCP device (a microcontroller running a TCP server) to the Banyan
    /// bus: bus messages on the -g topics go to the device as length-prefixed
    /// MessagePack, frames from the device are published on the -e topic.
    /// Several -g topics: repeat -g, separate with commas, or list them after one
    /// -g as python-banyan does. Durations are seconds, or a number with a unit
    /// (250ms, 1.5s).
    struct Args {
        /// the device's (TCP server's) IP address or host name (required)
        #[argh(option, short = 'a')]
        address: String,
        /// bus topic on which what the device sends is published (default
        /// from_pico)
        #[argh(option, short = 'e', default = "String::from(DEFAULT_PUBLISH_TOPIC)")]
        publish_topic: String,
        /// bus topic forwarded to the device, with every topic that starts
        /// with it unless --match exact; repeatable (default figura)
        #[argh(option, short = 'g')]
        topics: Vec<String>,
        /// accepted for python-banyan compatibility and ignored
        #[argh(option, short = 'l')]
        event_loop: Option<String>,
        /// the device's TCP port (default 31335)
        #[argh(option, short = 'n', default = "DEFAULT_PORT")]
        port: u16,
        /// name shown in the banner (default TcpGateway)
        #[argh(option, short = 'z', default = "String::from(DEFAULT_NAME)")]
        name: String,
        /// how bus topics are matched against -g: prefix (default, as
        /// python's tgw: -g figura forwards figura_2 too) or exact
        #[argh(option, default = "TopicMatch::Prefix", from_str_fn(cli::topic_match))]
        r#match: TopicMatch,
        /// length prefix width in bytes: 1 (python-banyan's, payloads up to 255
        /// bytes), 2 or 4, big-endian (default 1)
        #[argh(option, default = "PrefixWidth::One", from_str_fn(prefix_width))]
        prefix: PrefixWidth,
        /// largest payload in bytes in either direction, within what the prefix
        /// allows (default 1048576)
        #[argh(option, default = "DEFAULT_MAX_PAYLOAD")]
        max_payload: usize,
        /// time without a frame from the device, or without it taking any byte,
        /// after which it counts as gone and is reconnected (default: off)
        #[argh(option, from_str_fn(cli::duration))]
        idle_timeout: Option<Duration>,
        /// TCP keepalive idle time, 0 for off (default 30s)
        #[argh(option, default = "DEFAULT_KEEPALIVE", from_str_fn(cli::duration))]
        keepalive: Duration,
        /// publish only frames from the device that are one valid MessagePack
        /// value; log and drop the others (default: pass bytes through)
        #[argh(switch)]
        validate: bool,
    }
}

const SPEC: Spec = Spec {
    multi: &["-g"],
    aliases: &[
        Alias {
            old: "--slow-device-grace",
            new: "--stall-grace",
            unit: "",
        },
        Alias {
            old: "--retry-max",
            new: "--reconnect-max",
            unit: "",
        },
    ],
};

fn prefix_width(value: &str) -> Result<PrefixWidth, String> {
    value
        .parse()
        .map_err(|e: banyan_tcp_gateway::Error| e.to_string())
}

fn config(args: &Args) -> Config {
    let mut topics = cli::split_list(&args.topics);
    if topics.is_empty() {
        topics.push(DEFAULT_TOPIC.to_owned());
    }
    Config {
        server: args.address.clone(),
        port: args.port,
        topics,
        matching: args.r#match,
        publish_topic: args.publish_topic.clone(),
        prefix: args.prefix,
        max_payload: args.max_payload,
        queue: args.queue_policy(),
        reconnect: args.reconnect(),
        idle_timeout: args.idle_timeout.filter(|t| !t.is_zero()),
        keepalive: Some(args.keepalive).filter(|t| !t.is_zero()),
        validate: args.validate,
        ..Config::default()
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Args = cli::parse(&SPEC);
    cli::init_logging();
    let _ = &args.event_loop;
    let gateway = banyan_tcp_gateway::Gateway::new(config(&args));
    cli::serve(&args.name, &args, gateway).await
}
