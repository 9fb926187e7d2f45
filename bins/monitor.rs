//! `monitor`: prints every message on the bus (python-banyan's `monitor`).

mod common;

use std::process::ExitCode;

use argh::FromArgs;
use banyan_core::monitor::{self, MonitorConfig, MonitorFormat};

/// Prints every message on the Banyan bus as `topic payload`.
#[derive(FromArgs)]
#[argh(help_triggers("-h", "--help"))]
struct Args {
    /// backplane address (default None: this machine, hosting a backplane if
    /// none runs)
    #[argh(option, short = 'b')]
    backplane: Option<String>,
    /// "True" to show msgpack-numpy arrays as arrays (default False)
    #[argh(option, short = 'm', default = "String::from(\"False\")")]
    numpy: String,
    /// name shown in the banner (default Monitor)
    #[argh(option, short = 'n', default = "String::from(\"Monitor\")")]
    name: String,
    /// publisher port (default 43124)
    #[argh(option, short = 'p', default = "43124")]
    publisher_port: u16,
    /// subscriber port (default 43125)
    #[argh(option, short = 's', default = "43125")]
    subscriber_port: u16,
    /// show only topics starting with this prefix; repeat or separate with
    /// commas for several (default: every topic)
    #[argh(option, short = 'f')]
    filter: Vec<String>,
    /// payload format: python (python-banyan's monitor: python's repr) or
    /// json (what the gateways send) (default python)
    #[argh(option, default = "MonitorFormat::Python")]
    format: MonitorFormat,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Args = common::parse(&["-f"]);
    common::init_logging();
    let numpy = match args.numpy.as_str() {
        "True" | "true" => true,
        "False" | "false" => false,
        other => {
            eprintln!("monitor: -m takes True or False, not {other:?} (see monitor --help)");
            return ExitCode::from(2);
        }
    };
    let mut bus =
        match common::attach(&args.backplane, args.publisher_port, args.subscriber_port).await {
            Ok(bus) => bus,
            Err(code) => return code,
        };
    let mut filters = common::split_list(&args.filter);
    if filters.is_empty() {
        filters.push(String::new());
    }
    for filter in &filters {
        if let Err(e) = bus.client.subscribe(filter).await {
            return common::fail(e);
        }
    }
    let shutdown = common::shutdown_signal();
    println!("{}", bus.banner(&args.name));
    let shown = monitor::run(
        &mut bus.messages,
        &MonitorConfig {
            numpy,
            format: args.format,
        },
        std::io::stdout().lock(),
        shutdown,
    )
    .await;
    bus.close().await;
    match shown {
        Ok(count) => {
            tracing::debug!(count, "monitor stopped");
            ExitCode::SUCCESS
        }
        Err(e) => common::fail(format!("writing to stdout failed: {e}")),
    }
}
