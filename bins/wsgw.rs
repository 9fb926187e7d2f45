//! `wsgw`: the WebSocket gateway (python-banyan's `wsgw`).

use std::process::ExitCode;

use banyan::cli::{self, Alias, Spec};
use ws_gateway::config::{
    DEFAULT_MAX_CLIENTS, DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_PORT, DEFAULT_QUEUE,
};

banyan::component_args! {
    queue: DEFAULT_QUEUE;
    /// Connects web pages (such as the OneGPIO pages) to the Banyan bus over
    /// WebSocket: a page's first message {"id": "to_X"} names the topic it
    /// publishes on; it receives what is published on from_X. Durations are
    /// seconds, or a number with a unit (250ms, 1.5s).
    struct Args {
        /// topics kept subscribed for the gateway's life, besides the reply
        /// topics subscribed while pages use them; python's `-m a b`, repeated
        /// flags and comma lists all work (default: none)
        #[argh(option, short = 'm')]
        subscription_list: Vec<String>,
        /// name shown in the banner (default WebSocket Gateway)
        #[argh(option, short = 'n', default = "String::from(\"WebSocket Gateway\")")]
        name: String,
        /// address the WebSocket server listens on (default 127.0.0.1: this
        /// machine only)
        #[argh(option, short = 'a', default = "String::from(\"127.0.0.1\")")]
        address: String,
        /// port of the WebSocket server, 0 for any free port (default 9000)
        #[argh(option, short = 'w', default = "DEFAULT_PORT")]
        port: u16,
        /// a web origin allowed to connect besides pages from disk and localhost,
        /// e.g. <https://example.org>; repeat or separate with commas; * allows
        /// every site (unsafe)
        #[argh(option, short = 'o')]
        allow_origin: Vec<String>,
        /// largest message accepted from a page, in bytes (default 65536)
        #[argh(option, default = "DEFAULT_MAX_MESSAGE_SIZE")]
        max_message_size: usize,
        /// pages connected at once (default 256)
        #[argh(option, default = "DEFAULT_MAX_CLIENTS")]
        max_clients: usize,
    }
}

const SPEC: Spec = Spec {
    multi: &["-m"],
    aliases: &[Alias {
        old: "--stall-grace-ms",
        new: "--stall-grace",
        unit: "ms",
    }],
};

fn config(args: &Args) -> ws_gateway::Config {
    ws_gateway::Config {
        address: args.address.clone(),
        port: args.port,
        allowed_origins: cli::split_list(&args.allow_origin),
        max_message_size: args.max_message_size,
        queue: args.queue_policy(),
        max_clients: args.max_clients,
        held_topics: cli::split_list(&args.subscription_list),
        ..ws_gateway::Config::default()
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Args = cli::parse(&SPEC);
    cli::init_logging();
    let gateway = ws_gateway::Gateway::new(config(&args));
    cli::serve(&args.name, &args, gateway).await
}
