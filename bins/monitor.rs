//! `monitor`: prints every message on the bus (python-banyan's `monitor`).

use std::process::ExitCode;

use banyan_core::monitor::{MonitorConfig, MonitorFormat};
use banyan_rs::cli::{self, Spec};
use banyan_rs::component::Monitor;

banyan_rs::component_args! {
    /// Prints every message on the Banyan bus as `topic payload`.
    struct Args {
        /// "True" to show msgpack-numpy arrays as arrays (default False)
        #[argh(option, short = 'm', default = "false", from_str_fn(cli::python_bool))]
        numpy: bool,
        /// name shown in the banner (default Monitor)
        #[argh(option, short = 'n', default = "String::from(\"Monitor\")")]
        name: String,
        /// show only topics starting with this prefix; repeat or separate with
        /// commas for several (default: every topic)
        #[argh(option, short = 'f')]
        filter: Vec<String>,
        /// payload format: python (python-banyan's monitor: python's repr) or
        /// json (what the gateways send) (default python)
        #[argh(option, default = "MonitorFormat::Python")]
        format: MonitorFormat,
    }
}

const SPEC: Spec = Spec {
    multi: &["-f"],
    aliases: &[],
};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Args = cli::parse(&SPEC);
    cli::init_logging();
    let monitor = Monitor::new(
        MonitorConfig {
            numpy: args.numpy,
            format: args.format,
        },
        cli::split_list(&args.filter),
    );
    cli::serve(&args.name, &args, Ok::<_, String>(monitor)).await
}
