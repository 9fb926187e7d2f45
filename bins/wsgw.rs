//! `wsgw`: the WebSocket gateway (python-banyan's `wsgw`, and s3-extend's).

use std::process::ExitCode;
use std::time::Duration;

use banyan_rs::cli::{self, Alias, Spec};
use banyan_ws_gateway::config::{
    DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_MAX_CLIENTS, DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_MAX_PENDING,
    DEFAULT_PORT, DEFAULT_QUEUE,
};

banyan_rs::component_args! {
    queue: DEFAULT_QUEUE;
    /// Connects web pages (such as the OneGPIO pages and the Scratch 3
    /// OneGPIO editor) to the Banyan bus over WebSocket: a page's first
    /// message {"id": "to_X"} names the topic it publishes on; it receives
    /// what is published on from_X. Durations are seconds, or a number with
    /// a unit (250ms, 1.5s).
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
        #[argh(option, short = 'w')]
        port: Option<u16>,
        /// the same as -w, as s3-extend's wsgw names it (its launchers give
        /// 9000 to 9007)
        #[argh(option, short = 'i')]
        server_port: Option<u16>,
        /// log to a file: True writes the log to ~/wsgw.log (emptied at
        /// start, debug level), as s3-extend's wsgw -l True meant to; False
        /// logs to stderr (default False)
        #[argh(option, short = 'l', from_str_fn(cli::python_bool), default = "false")]
        log: bool,
        /// a web origin allowed to connect besides pages from disk and localhost,
        /// e.g. <https://example.org>; repeat or separate with commas; * allows
        /// every site (unsafe)
        #[argh(option, short = 'o')]
        allow_origin: Vec<String>,
        /// do not allow the Scratch 3 OneGPIO editor's origin,
        /// <https://mryslab.github.io>, which is allowed by default
        #[argh(switch)]
        no_default_origins: bool,
        /// largest message accepted from a page, in bytes (default 65536)
        #[argh(option, default = "DEFAULT_MAX_MESSAGE_SIZE")]
        max_message_size: usize,
        /// pages connected at once; an upgrade beyond it is answered with
        /// HTTP 503 (default 256)
        #[argh(option, default = "DEFAULT_MAX_CLIENTS")]
        max_clients: usize,
        /// connections waiting for their WebSocket upgrade at once; one more
        /// closes the one waiting longest (default 64)
        #[argh(option, default = "DEFAULT_MAX_PENDING")]
        max_pending: usize,
        /// time a connection has to send its WebSocket upgrade request
        /// (default 3s)
        #[argh(option, from_str_fn(cli::duration), default = "DEFAULT_HANDSHAKE_TIMEOUT")]
        handshake_timeout: Duration,
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

fn config(args: &Args) -> banyan_ws_gateway::Config {
    let port = match (args.port, args.server_port) {
        (Some(w), Some(i)) if w != i => cli::usage_error(
            &cli::command(),
            format!("-w {w} and -i {i} name two ports for the one server"),
        ),
        (w, i) => w.or(i).unwrap_or(DEFAULT_PORT),
    };
    banyan_ws_gateway::Config {
        address: args.address.clone(),
        port,
        allowed_origins: cli::split_list(&args.allow_origin),
        known_editors: !args.no_default_origins,
        max_message_size: args.max_message_size,
        queue: args.queue_policy(),
        max_clients: args.max_clients,
        max_pending: args.max_pending,
        handshake_timeout: args.handshake_timeout,
        held_topics: cli::split_list(&args.subscription_list),
        ..banyan_ws_gateway::Config::default()
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Args = cli::parse(&SPEC);
    if args.log {
        // s3-extend's wsgw wrote ~/wsgw.log, anew at each start.
        let Some(home) = std::env::var_os("HOME") else {
            cli::usage_error(
                &cli::command(),
                "-l True writes ~/wsgw.log, and HOME is not set",
            );
        };
        let path = std::path::Path::new(&home).join("wsgw.log");
        if let Err(e) = cli::init_logging_to_file(&path) {
            cli::usage_error(
                &cli::command(),
                format!("-l True: cannot write {}: {e}", path.display()),
            );
        }
    } else {
        cli::init_logging();
    }
    let gateway = match banyan_ws_gateway::Gateway::new(config(&args)) {
        // A port in use is the machine's state, not a bad flag: exit code 1,
        // as the backplane's.
        Err(e @ banyan_ws_gateway::Error::Listen { .. }) => return cli::fail(e),
        gateway => gateway,
    };
    cli::serve(&args.name, &args, gateway).await
}
