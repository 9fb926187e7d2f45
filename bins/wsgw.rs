//! `wsgw`: the WebSocket gateway (python-banyan's `wsgw`).

mod common;

use std::process::ExitCode;
use std::time::Duration;

use argh::FromArgs;
use ws_gateway::config::{
    DEFAULT_CLIENT_QUEUE, DEFAULT_MAX_CLIENTS, DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_STALL_GRACE,
};

/// Connects web pages (such as the OneGPIO pages) to the Banyan bus over
/// WebSocket: a page's first message {"id": "to_X"} names the topic it
/// publishes on; it receives what is published on from_X.
#[derive(FromArgs)]
#[argh(help_triggers("-h", "--help"))]
struct Args {
    /// backplane address (default None: this machine, hosting a backplane if
    /// none runs)
    #[argh(option, short = 'b')]
    backplane: Option<String>,
    /// topics kept subscribed for the gateway's life, besides the reply
    /// topics subscribed while pages use them; python's `-m a b`, repeated
    /// flags and comma lists all work (default: none)
    #[argh(option, short = 'm')]
    subscription_list: Vec<String>,
    /// name shown in the banner (default WebSocket Gateway)
    #[argh(option, short = 'n', default = "String::from(\"WebSocket Gateway\")")]
    name: String,
    /// publisher port (default 43124)
    #[argh(option, short = 'p', default = "43124")]
    publisher_port: u16,
    /// subscriber port (default 43125)
    #[argh(option, short = 's', default = "43125")]
    subscriber_port: u16,
    /// address the WebSocket server listens on (default 127.0.0.1: this
    /// machine only)
    #[argh(option, short = 'a', default = "String::from(\"127.0.0.1\")")]
    address: String,
    /// port of the WebSocket server, 0 for any free port (default 9000)
    #[argh(option, short = 'w', default = "9000")]
    port: u16,
    /// a web origin allowed to connect besides pages from disk and localhost,
    /// e.g. <https://example.org>; repeat or separate with commas; * allows
    /// every site (unsafe)
    #[argh(option, short = 'o')]
    allow_origin: Vec<String>,
    /// largest message accepted from a page, in bytes (default 65536)
    #[argh(option, default = "DEFAULT_MAX_MESSAGE_SIZE")]
    max_message_size: usize,
    /// messages queued for one page; when full, the gateway waits for the
    /// page (default 256)
    #[argh(option, default = "DEFAULT_CLIENT_QUEUE")]
    queue: usize,
    /// how long a page with a full queue may take to make room before it is
    /// stalled and loses its oldest messages, in milliseconds (default 1000)
    #[argh(option, default = "default_stall_grace_ms()")]
    stall_grace_ms: u64,
    /// pages connected at once (default 256)
    #[argh(option, default = "DEFAULT_MAX_CLIENTS")]
    max_clients: usize,
}

fn default_stall_grace_ms() -> u64 {
    DEFAULT_STALL_GRACE
        .as_millis()
        .try_into()
        .unwrap_or(u64::MAX)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Args = common::parse(&["-m"]);
    common::init_logging();
    let config = ws_gateway::Config {
        allowed_origins: common::split_list(&args.allow_origin),
        max_message_size: args.max_message_size.max(1),
        client_queue: args.queue.max(1),
        stall_grace: Duration::from_millis(args.stall_grace_ms),
        max_clients: args.max_clients.max(1),
        held_topics: common::split_list(&args.subscription_list),
        ..ws_gateway::Config::default()
    };
    let listener = match tokio::net::TcpListener::bind((args.address.as_str(), args.port)).await {
        Ok(listener) => listener,
        Err(e) => {
            return common::fail(format!(
                "cannot listen on {}:{}: {e}",
                args.address, args.port
            ))
        }
    };
    let local = match listener.local_addr() {
        Ok(local) => local,
        Err(e) => return common::fail(format!("cannot read the listening address: {e}")),
    };
    let mut bus =
        match common::attach(&args.backplane, args.publisher_port, args.subscriber_port).await {
            Ok(bus) => bus,
            Err(code) => return code,
        };
    let shutdown = common::shutdown_signal();
    println!("{}", bus.banner(&args.name));
    println!("WebSocket server on ws://{local}");
    let ran = ws_gateway::run(
        listener,
        bus.client.clone(),
        &mut bus.messages,
        config,
        shutdown,
    )
    .await;
    bus.close().await;
    match ran {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => common::fail(e),
    }
}
