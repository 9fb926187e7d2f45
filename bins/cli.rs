//! What every executable shares: flag parsing with python-banyan's habits,
//! the bus flags, logging, signals, exit codes, and the skeleton of a
//! component's life (attach → subscribe → banner → run → close).
//!
//! The libraries never see argh: a binary maps its flags to a library
//! config, and all validation happens in the library.

use std::fmt::Display;
use std::process::ExitCode;
use std::time::Duration;

use argh::{EarlyExit, TopLevelCommand};
use banyan_gateway::{metrics, Bus, CancellationToken, Gateway, Registry};

/// python-banyan's default publisher port.
pub const DEFAULT_PUBLISHER_PORT: u16 = banyan_core::backplane::DEFAULT_PUBLISHER_PORT;
/// python-banyan's default subscriber port.
pub const DEFAULT_SUBSCRIBER_PORT: u16 = banyan_core::backplane::DEFAULT_SUBSCRIBER_PORT;

/// An older spelling of a flag that stays accepted, so that no script breaks:
/// `old VALUE` is read as `new VALUE<unit>`.
#[derive(Clone, Copy, Debug)]
pub struct Alias {
    /// The old flag, e.g. `--stall-grace-ms`.
    pub old: &'static str,
    /// The flag it means now, e.g. `--stall-grace`.
    pub new: &'static str,
    /// The unit the old flag's number was in, appended to it (`ms`; `""`
    /// for seconds, which the new flags take bare).
    pub unit: &'static str,
}

/// How an executable's command line differs from argh's defaults.
#[derive(Clone, Copy, Debug, Default)]
pub struct Spec {
    /// Flags that take several values after them, python style (`-g a b c`).
    pub multi: &'static [&'static str],
    /// Older flag spellings still accepted.
    pub aliases: &'static [Alias],
}

/// Parses the command line into `T`.
///
/// python-banyan's argparse takes several values after one flag (`-g a b
/// c`); argh takes one. The flags in [`Spec::multi`] are rewritten from `-g
/// a b c` into `-g a -g b -g c` first, and [`Spec::aliases`] into the flags
/// they stand for. `--help` prints (with the aliases) and exits 0; a bad
/// flag is a one-line error and exit code 2.
pub fn parse<T: Flags>(spec: &Spec) -> T {
    let mut args = std::env::args();
    let command = command_name(args.next().unwrap_or_default());
    let args = rewrite_aliases(expand_multi(args.collect(), spec.multi), spec.aliases);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    match T::from_args(&[&command], &refs) {
        Ok(parsed) => parsed,
        Err(EarlyExit {
            output,
            status: Ok(()),
        }) => {
            let mut help = output.trim_end().to_owned();
            for (placeholder, value) in T::help_defaults() {
                help = help.replace(placeholder, &value);
            }
            println!("{help}{}", alias_help(spec.aliases));
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
            usage_error(&command, message)
        }
    }
}

/// The name the executable was started as (for messages).
fn command_name(argv0: String) -> String {
    std::path::Path::new(&argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or(argv0)
}

/// This process's command name, as messages show it.
pub fn command() -> String {
    command_name(std::env::args().next().unwrap_or_default())
}

/// Prints `message` as a usage error and exits with code 2.
pub fn usage_error(command: &str, message: impl Display) -> ! {
    eprintln!("{command}: {message} (see {command} --help)");
    std::process::exit(2)
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

fn rewrite_aliases(args: Vec<String>, aliases: &[Alias]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_owned(), Some(value.to_owned()))
            }
            _ => (arg.clone(), None),
        };
        let Some(alias) = aliases.iter().find(|a| a.old == flag) else {
            out.push(arg);
            continue;
        };
        out.push(alias.new.to_owned());
        if let Some(value) = inline.or_else(|| args.next()) {
            out.push(format!("{value}{}", alias.unit));
        }
    }
    out
}

fn alias_help(aliases: &[Alias]) -> String {
    if aliases.is_empty() {
        return String::new();
    }
    let value = |alias: &Alias| {
        if alias.unit.is_empty() {
            "SECONDS".to_owned()
        } else {
            alias.unit.to_uppercase()
        }
    };
    let left: Vec<String> = aliases
        .iter()
        .map(|a| format!("{} {}", a.old, value(a)))
        .collect();
    let width = left.iter().map(String::len).max().unwrap_or(0);
    let mut text = String::from("\n\nOlder spellings, still accepted:");
    for (alias, left) in aliases.iter().zip(&left) {
        text.push_str(&format!(
            "\n  {left:<width$}  same as {} {}{}",
            alias.new,
            value(alias),
            alias.unit
        ));
    }
    text
}

/// Splits repeated and comma-separated values into one list
/// (`-g a,b -g c` and `-g "a, b" c` are `[a, b, c]`), dropping empties.
pub fn split_list(values: &[String]) -> Vec<String> {
    values
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A duration flag: seconds, or a number with a unit (`250ms`, `1.5s`).
pub fn duration(value: &str) -> Result<Duration, String> {
    banyan_gateway::parse_duration(value).map_err(|e| e.to_string())
}

/// A `--match exact|prefix` flag.
pub fn topic_match(value: &str) -> Result<banyan_gateway::TopicMatch, String> {
    value
        .parse()
        .map_err(|e: banyan_gateway::topics::UnknownTopicMatch| e.to_string())
}

/// A python-style boolean flag value: `True` or `False` (any case).
pub fn python_bool(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("{value:?} is not True or False")),
    }
}

/// The bus flags every component takes, python-banyan's `-b`, `-p`, `-s`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BusFlags {
    /// `-b`: the backplane's address; `None` (or the text `None`) means this
    /// machine, hosting a backplane when none runs.
    pub backplane: Option<String>,
    /// `-p`: the publisher port.
    pub publisher_port: u16,
    /// `-s`: the subscriber port.
    pub subscriber_port: u16,
}

impl BusFlags {
    /// python-banyan's `-b`: `None` (the default) means "find it".
    pub fn backplane_address(&self) -> Option<&str> {
        self.backplane
            .as_deref()
            .filter(|b| !b.eq_ignore_ascii_case("none"))
    }
}

/// What the skeleton ([`serve`]) reads from a component's flags.
pub trait Component {
    /// The bus flags.
    fn bus_flags(&self) -> BusFlags;

    /// `--metrics ADDR:PORT`, where Prometheus scrapes the component.
    fn metrics_address(&self) -> Option<&str> {
        None
    }
}

/// A command line: argh's, plus the values `--help` shows in place of
/// `{placeholders}` (the defaults of the flags that
/// [`component_args!`](crate::component_args) declares for every gateway).
pub trait Flags: TopLevelCommand {
    /// `{name}` placeholders of the help text and what they stand for.
    fn help_defaults() -> Vec<(&'static str, String)> {
        Vec::new()
    }
}

/// How `--help` shows a default duration: `250ms`, `1s`, `1.5s`.
pub fn show_duration(duration: Duration) -> String {
    if duration.subsec_millis() == 0 && duration.as_secs() > 0 {
        format!("{}s", duration.as_secs())
    } else if duration < Duration::from_secs(1) {
        format!("{}ms", duration.as_millis())
    } else {
        format!("{}s", duration.as_secs_f64())
    }
}

/// Declares a component's argh flags struct: its own flags after the bus
/// flags (`-b`, `-p`, `-s`), then, when asked for, the gateway kit's flags
/// with one name, unit and meaning in every executable:
///
/// * `queue: DEFAULT;` adds `--queue`, `--queue-bytes` and `--stall-grace`,
///   read with `args.queue_policy()` (a [`banyan_gateway::QueuePolicy`],
///   `DEFAULT` filling what is not given);
/// * `reconnect: DEFAULT;` adds `--reconnect-min` and `--reconnect-max`,
///   read with `args.reconnect()` (a [`banyan_gateway::Reconnect`]);
/// * `metrics;` adds `--metrics ADDR:PORT`, served by [`serve`].
///
/// ```text
/// banyan_rs::component_args! {
///     queue: banyan_tcp_gateway::config::DEFAULT_QUEUE;
///     reconnect: banyan_gateway::Reconnect::default();
///     /// What the executable does.
///     struct Args {
///         /// its own flag
///         #[argh(option, short = 'a')]
///         address: String,
///     }
/// }
/// ```
#[macro_export]
macro_rules! component_args {
    // Gathers the kit's flags ([...]) and what to implement for them ({...}),
    // then declares the struct.
    (@gather [$($flags:tt)*] {$($impls:tt)*} queue: $default:expr; $($rest:tt)*) => {
        $crate::component_args!(@gather [$($flags)*
            /// messages queued for the peer (a page, the device, the broker):
            /// while it is connected and reading, a full queue makes the bus
            /// wait; while it is away or stalled, the oldest are dropped
            /// (default {queue})
            #[argh(option)]
            queue: Option<usize>,
            /// bytes of payload queued for the peer at most (default
            /// {queue-bytes})
            #[argh(option)]
            queue_bytes: Option<usize>,
            /// how long a connected peer with a full queue may take nothing
            /// before it counts as stalled and loses its oldest messages
            /// (default {stall-grace})
            #[argh(option, from_str_fn($crate::cli::duration))]
            stall_grace: Option<::std::time::Duration>,
        ] {$($impls)* queue($default)} $($rest)*);
    };
    (@gather [$($flags:tt)*] {$($impls:tt)*} reconnect: $default:expr; $($rest:tt)*) => {
        $crate::component_args!(@gather [$($flags)*
            /// first wait before dialling the peer again; it doubles on each
            /// failure (default {reconnect-min})
            #[argh(option, from_str_fn($crate::cli::duration))]
            reconnect_min: Option<::std::time::Duration>,
            /// longest wait between attempts; a connection that lasted this
            /// long is dialled again at once (default {reconnect-max})
            #[argh(option, from_str_fn($crate::cli::duration))]
            reconnect_max: Option<::std::time::Duration>,
        ] {$($impls)* reconnect($default)} $($rest)*);
    };
    (@gather [$($flags:tt)*] {$($impls:tt)*} metrics; $($rest:tt)*) => {
        $crate::component_args!(@gather [$($flags)*
            /// serve Prometheus metrics at http://ADDR:PORT/metrics, e.g.
            /// 127.0.0.1:9464 (port 0: any free port, shown at start; default:
            /// off)
            #[argh(option)]
            metrics: Option<String>,
        ] {$($impls)* metrics} $($rest)*);
    };
    (@gather [$($flags:tt)*] {$($impls:tt)*}
        $(#[$meta:meta])* struct $name:ident { $($fields:tt)* }
    ) => {
        $(#[$meta])*
        #[derive(::argh::FromArgs)]
        #[argh(help_triggers("-h", "--help"))]
        struct $name {
            /// backplane address (default None: this machine, hosting a
            /// backplane if none runs)
            #[argh(option, short = 'b')]
            backplane: Option<String>,
            /// publisher port (default 43124)
            #[argh(option, short = 'p', default = "43124")]
            publisher_port: u16,
            /// subscriber port (default 43125)
            #[argh(option, short = 's', default = "43125")]
            subscriber_port: u16,
            $($fields)*
            $($flags)*
        }

        impl $crate::cli::Component for $name {
            fn bus_flags(&self) -> $crate::cli::BusFlags {
                $crate::cli::BusFlags {
                    backplane: self.backplane.clone(),
                    publisher_port: self.publisher_port,
                    subscriber_port: self.subscriber_port,
                }
            }

            $crate::component_args!(@metrics_address $($impls)*);
        }

        impl $crate::cli::Flags for $name {
            fn help_defaults() -> ::std::vec::Vec<(&'static str, String)> {
                #[allow(unused_mut)]
                let mut values = ::std::vec::Vec::new();
                $crate::component_args!(@defaults values $($impls)*);
                values
            }
        }

        $crate::component_args!(@impls $name $($impls)*);
    };
    (@metrics_address) => {};
    (@metrics_address metrics $($rest:tt)*) => {
        fn metrics_address(&self) -> Option<&str> {
            self.metrics.as_deref()
        }
    };
    (@metrics_address $other:ident($default:expr) $($rest:tt)*) => {
        $crate::component_args!(@metrics_address $($rest)*);
    };
    (@defaults $values:ident) => {};
    (@defaults $values:ident metrics $($rest:tt)*) => {
        $crate::component_args!(@defaults $values $($rest)*);
    };
    (@defaults $values:ident queue($default:expr) $($rest:tt)*) => {
        let default: ::banyan_gateway::QueuePolicy = $default;
        $values.push(("{queue}", default.messages.to_string()));
        $values.push(("{queue-bytes}", default.bytes.to_string()));
        $values.push(("{stall-grace}", $crate::cli::show_duration(default.stall_grace)));
        $crate::component_args!(@defaults $values $($rest)*);
    };
    (@defaults $values:ident reconnect($default:expr) $($rest:tt)*) => {
        let default: ::banyan_gateway::Reconnect = $default;
        $values.push(("{reconnect-min}", $crate::cli::show_duration(default.min)));
        $values.push(("{reconnect-max}", $crate::cli::show_duration(default.max)));
        $crate::component_args!(@defaults $values $($rest)*);
    };
    (@impls $name:ident) => {};
    (@impls $name:ident metrics $($rest:tt)*) => {
        $crate::component_args!(@impls $name $($rest)*);
    };
    (@impls $name:ident queue($default:expr) $($rest:tt)*) => {
        impl $name {
            /// `--queue`, `--queue-bytes`, `--stall-grace`, defaults filled in.
            fn queue_policy(&self) -> ::banyan_gateway::QueuePolicy {
                let default: ::banyan_gateway::QueuePolicy = $default;
                ::banyan_gateway::QueuePolicy {
                    messages: self.queue.unwrap_or(default.messages),
                    bytes: self.queue_bytes.unwrap_or(default.bytes),
                    stall_grace: self.stall_grace.unwrap_or(default.stall_grace),
                }
            }
        }
        $crate::component_args!(@impls $name $($rest)*);
    };
    (@impls $name:ident reconnect($default:expr) $($rest:tt)*) => {
        impl $name {
            /// `--reconnect-min`, `--reconnect-max`, defaults filled in.
            fn reconnect(&self) -> ::banyan_gateway::Reconnect {
                let default: ::banyan_gateway::Reconnect = $default;
                ::banyan_gateway::Reconnect {
                    min: self.reconnect_min.unwrap_or(default.min),
                    max: self.reconnect_max.unwrap_or(default.max),
                }
            }
        }
        $crate::component_args!(@impls $name $($rest)*);
    };
    ($($rest:tt)*) => {
        $crate::component_args!(@gather [] {} $($rest)*);
    };
}

/// Installs the log output: short human lines on stderr, level from
/// `BANYAN_LOG` (or `RUST_LOG`), e.g. `debug` or `info,banyan_core=debug`.
/// The lines go through [`crate::log::Lossless`]: a stderr that nobody reads
/// (s3-extend's launchers pipe it and never read the pipe) never stops the
/// process.
pub fn init_logging() {
    use std::io::IsTerminal;
    let ansi = std::io::stderr().is_terminal();
    match crate::log::Lossless::new(std::io::stderr()) {
        Ok(writer) => install(writer, ansi, tracing::Level::INFO),
        // No thread for the writer: write directly.
        Err(_) => install(std::io::stderr, ansi, tracing::Level::INFO),
    }
}

/// Installs the log output into the file at `path` (created, or emptied),
/// at debug level unless `BANYAN_LOG` says otherwise.
pub fn init_logging_to_file(path: &std::path::Path) -> std::io::Result<()> {
    let file = std::fs::File::create(path)?;
    install(
        crate::log::Lossless::new(file)?,
        false,
        tracing::Level::DEBUG,
    );
    Ok(())
}

fn install<W>(writer: W, ansi: bool, default: tracing::Level)
where
    W: for<'a> tracing_subscriber::fmt::MakeWriter<'a> + Send + Sync + 'static,
{
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::prelude::*;

    let spec = std::env::var("BANYAN_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_default();
    let filter = spec
        .parse::<Targets>()
        .ok()
        .filter(|_| !spec.is_empty())
        .unwrap_or_else(|| Targets::new().with_default(LevelFilter::from_level(default)));
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(writer)
                .with_ansi(ansi)
                .with_target(false)
                .compact(),
        )
        .with(filter)
        .init();
}

/// How long an executable waits for a backplane that is starting.
pub const STARTING_BACKPLANE: Duration = Duration::from_secs(3);

/// Without `-b`, when a process named `backplane` runs on this machine but
/// its ports do not both answer on 127.0.0.1 yet, waits until they do, for
/// at most [`STARTING_BACKPLANE`]; then [`banyan_core::attach`] decides as
/// usual.
///
/// s3-extend's launchers start `backplane` and, at once, `wsgw`. Without
/// the wait, `wsgw` could find the ports still free and host a backplane of
/// its own, and the launcher's `backplane`, finding them taken, would exit
/// (and the launcher with it); or find one port bound and not yet the other,
/// and refuse to start. python's components look for a process named
/// `backplane` too (and fail without one).
async fn wait_for_starting_backplane(bus: &BusFlags) {
    if bus.backplane_address().is_some() || !backplane_process_runs() {
        return;
    }
    let answers = |port: u16| async move {
        let connect = tokio::net::TcpStream::connect((std::net::Ipv4Addr::LOCALHOST, port));
        matches!(
            tokio::time::timeout(Duration::from_millis(200), connect).await,
            Ok(Ok(_))
        )
    };
    let deadline = tokio::time::Instant::now() + STARTING_BACKPLANE;
    while tokio::time::Instant::now() < deadline {
        if answers(bus.publisher_port).await && answers(bus.subscriber_port).await {
            return;
        }
        // Another process beginning to listen sends no event: look again.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tracing::debug!("a process named backplane runs but does not answer on 127.0.0.1");
}

/// Whether a process other than this one is named `backplane`.
fn backplane_process_runs() -> bool {
    let own = std::process::id().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|entry| {
        let name = entry.file_name();
        let pid = name.to_string_lossy();
        pid.bytes().all(|b| b.is_ascii_digit())
            && pid != own
            && std::fs::read_to_string(entry.path().join("comm"))
                .is_ok_and(|comm| comm.trim_end() == "backplane")
    })
}

/// A token cancelled on the first SIGINT (Ctrl-C) or SIGTERM.
///
/// The handlers are installed when this is called: call it before printing
/// the banner, so that a signal sent as soon as the banner appears is not
/// fatal.
pub fn cancel_on_signal() -> CancellationToken {
    use tokio::signal::unix::{signal, SignalKind};
    let token = CancellationToken::new();
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    let cancel = token.clone();
    tokio::spawn(async move {
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
        cancel.cancel();
    });
    token
}

/// Reports a fatal error on stderr and returns the exit code 1.
pub fn fail(error: impl Display) -> ExitCode {
    tracing::error!("{error}");
    ExitCode::from(1)
}

/// The life of a component, the same for every executable that joins the
/// bus: a configuration error is a usage error (exit code 2); then it joins
/// the bus (`-b`, `-p`, `-s`; hosting a backplane when none runs), subscribes,
/// prints the banner named `name` (and where its metrics are served, with
/// `--metrics`), runs until SIGINT or SIGTERM, closes the bus and logs what
/// it counted as `stopped: name=value ...`. A failure on the way is logged
/// and exits with code 1.
pub async fn serve<G: Gateway>(
    name: &str,
    flags: &impl Component,
    gateway: Result<G, impl Display>,
) -> ExitCode {
    let gateway = match gateway {
        Ok(gateway) => gateway,
        Err(e) => usage_error(&command(), e),
    };
    let metrics_listener = match flags.metrics_address() {
        Some(address) => match tokio::net::TcpListener::bind(address).await {
            Ok(listener) => Some(listener),
            Err(e) => usage_error(&command(), format!("--metrics {address}: {e}")),
        },
        None => None,
    };
    let bus = flags.bus_flags();
    // Launchers (s3-extend's) start `backplane` and a component at once.
    wait_for_starting_backplane(&bus).await;
    let config = banyan_core::ClientConfig {
        publisher_port: bus.publisher_port,
        subscriber_port: bus.subscriber_port,
        ..banyan_core::ClientConfig::default()
    };
    // A backplane started on demand runs as the `backplane` beside us, so
    // that python components find it.
    let hosting = banyan_core::Hosting::sibling();
    let attached = match banyan_core::attach_with(bus.backplane_address(), config, &hosting).await {
        Ok(attached) => attached,
        Err(e) => return fail(e),
    };
    if let Err(e) = gateway.subscribe(&attached.client).await {
        attached.close().await;
        return fail(e);
    }
    let token = cancel_on_signal();
    let registry = Registry::default();
    println!("{}", attached.banner(name));
    for line in gateway.banner() {
        println!("{line}");
    }
    if let Some(listener) = metrics_listener {
        match listener.local_addr() {
            Ok(address) => println!("Metrics on http://{address}/metrics"),
            Err(e) => tracing::warn!("the metrics address: {e}"),
        }
        tokio::spawn(metrics::serve(listener, registry.clone(), token.clone()));
    }
    let banyan_core::Attached {
        client,
        messages,
        embedded,
        ..
    } = attached;
    let closer = client.clone();
    let bus = Bus {
        client,
        messages,
        metrics: registry,
    };
    let outcome = gateway.run(bus, token).await;
    let _ = closer.close().await;
    if let Some(backplane) = embedded {
        let _ = tokio::task::spawn_blocking(move || backplane.shutdown()).await;
    }
    match outcome {
        Ok(stats) => {
            tracing::info!("stopped: {stats}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
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
    fn aliases_become_the_flags_they_stand_for() {
        let aliases = [
            Alias {
                old: "--stall-grace-ms",
                new: "--stall-grace",
                unit: "ms",
            },
            Alias {
                old: "--retry-max",
                new: "--reconnect-max",
                unit: "",
            },
        ];
        let out = rewrite_aliases(
            strings(&["--stall-grace-ms", "200", "--retry-max=2", "--queue", "5"]),
            &aliases,
        );
        assert_eq!(
            out,
            strings(&[
                "--stall-grace",
                "200ms",
                "--reconnect-max",
                "2",
                "--queue",
                "5"
            ])
        );
        let help = alias_help(&aliases);
        assert!(help.contains("--stall-grace-ms MS"), "{help}");
        assert!(help.contains("same as --stall-grace MSms"), "{help}");
        assert!(help.contains("--retry-max SECONDS"), "{help}");
    }

    #[test]
    fn lists_split_on_commas() {
        assert_eq!(
            split_list(&strings(&["a, b", "c", ",", " d "])),
            strings(&["a", "b", "c", "d"])
        );
    }

    #[test]
    fn python_booleans() {
        assert_eq!(python_bool("True"), Ok(true));
        assert_eq!(python_bool("false"), Ok(false));
        assert!(python_bool("yes").is_err());
    }
}
