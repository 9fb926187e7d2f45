//! What every executable shares: flag parsing with python-banyan's habits,
//! logging, signals and exit codes. Included by each binary with `mod common;`.
#![allow(dead_code)] // each binary uses a different part

use std::process::ExitCode;

use argh::{EarlyExit, TopLevelCommand};

/// Parses the command line into `T`.
///
/// python-banyan's argparse takes several values after one flag (`-g a b c`);
/// argh takes one. The flags in `multi` are rewritten from `-g a b c` into
/// `-g a -g b -g c` first, so python command lines keep working. `--help`
/// prints and exits 0; a bad flag is a one-line error and exit code 2.
pub(crate) fn parse<T: TopLevelCommand>(multi: &[&str]) -> T {
    let mut args = std::env::args();
    let command = args.next().unwrap_or_default();
    let command = std::path::Path::new(&command)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or(command);
    let args = expand_multi(args.collect(), multi);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    match T::from_args(&[&command], &refs) {
        Ok(parsed) => parsed,
        Err(EarlyExit {
            output,
            status: Ok(()),
        }) => {
            println!("{output}");
            std::process::exit(0)
        }
        Err(EarlyExit {
            output,
            status: Err(()),
        }) => {
            // argh spreads "Required options not provided:" over lines.
            let message = output
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            eprintln!("{command}: {message} (see {command} --help)");
            std::process::exit(2)
        }
    }
}

fn expand_multi(args: Vec<String>, multi: &[&str]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut current: Option<String> = None;
    for arg in args {
        if multi.contains(&arg.as_str()) {
            current = Some(arg.clone());
            out.push(arg);
            continue;
        }
        match &current {
            // A value after a multi-value flag's first value: repeat the flag.
            Some(flag) if !arg.starts_with('-') && out.last() != Some(flag) => {
                out.push(flag.clone());
                out.push(arg);
            }
            _ => {
                if arg.starts_with('-') {
                    current = None;
                }
                out.push(arg);
            }
        }
    }
    out
}

/// Splits repeated and comma-separated values into one list
/// (`-g a,b -g c` and `-g "a, b" c` are `[a, b, c]`), dropping empties.
pub(crate) fn split_list(values: &[String]) -> Vec<String> {
    values
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .collect()
}

/// python-banyan's `-b`: `None` (the default) means "find it".
pub(crate) fn backplane_address(flag: &Option<String>) -> Option<&str> {
    flag.as_deref().filter(|b| !b.eq_ignore_ascii_case("none"))
}

/// Installs the log output: short human lines on stderr, level from
/// `BANYAN_LOG` (or `RUST_LOG`), e.g. `debug` or `info,banyan_core=debug`.
pub(crate) fn init_logging() {
    use std::io::IsTerminal;
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::prelude::*;

    let spec = std::env::var("BANYAN_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_default();
    let filter = spec
        .parse::<Targets>()
        .ok()
        .filter(|_| !spec.is_empty())
        .unwrap_or_else(|| Targets::new().with_default(LevelFilter::INFO));
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .with_target(false)
                .compact(),
        )
        .with(filter)
        .init();
}

/// A future that completes on the first SIGINT (Ctrl-C) or SIGTERM.
///
/// The handlers are installed when this is called, not when the future is
/// first polled: call it before printing the banner, so that a signal sent
/// as soon as the banner appears is not fatal.
pub(crate) fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

/// Joins the bus as every component does: python's `-b` (`None`: this
/// machine, hosting a backplane when none runs) and the two ports. A failure
/// is reported and becomes the exit code to return.
pub(crate) async fn attach(
    backplane: &Option<String>,
    publisher_port: u16,
    subscriber_port: u16,
) -> Result<banyan_core::Attached, ExitCode> {
    let config = banyan_core::ClientConfig {
        publisher_port,
        subscriber_port,
        ..banyan_core::ClientConfig::default()
    };
    banyan_core::attach(backplane_address(backplane), config)
        .await
        .map_err(fail)
}

/// Reports a fatal error on stderr and returns the exit code 1.
pub(crate) fn fail(error: impl std::fmt::Display) -> ExitCode {
    tracing::error!("{error}");
    ExitCode::from(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn python_multi_values_become_repeated_flags() {
        let out = expand_multi(
            strings(&["-a", "x", "-g", "t1", "t2", "t3", "-e", "e"]),
            &["-g"],
        );
        assert_eq!(
            out,
            strings(&["-a", "x", "-g", "t1", "-g", "t2", "-g", "t3", "-e", "e"])
        );
        let out = expand_multi(strings(&["-g", "t1", "-g", "t2"]), &["-g"]);
        assert_eq!(out, strings(&["-g", "t1", "-g", "t2"]));
    }

    #[test]
    fn lists_split_on_commas() {
        assert_eq!(
            split_list(&strings(&["a, b", "c", ",", " d "])),
            strings(&["a", "b", "c", "d"])
        );
    }
}
