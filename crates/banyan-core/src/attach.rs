//! How an executable finds its bus: the one function every gateway calls.
//!
//! With `-b ADDRESS` the executable connects there. Without it, it uses this
//! machine (127.0.0.1) and the given ports: when a backplane answers there it
//! connects; when the ports are held but nothing answers on 127.0.0.1
//! (python-banyan's backplane binds the LAN address only) it says so and
//! suggests `-b`; when the ports are free it starts a backplane on demand, so
//! one command works on a fresh machine. How, [`Hosting`] says:
//!
//! * the executables start the `backplane` executable beside them as a
//!   process of its own (`backplane --on-demand`): it listens on every
//!   interface, as python-banyan's does, and its command line names it, so
//!   python components without `-b`, which look for a process called
//!   `backplane` and connect to the LAN address, find it. It outlives the
//!   component that started it while others use it, and stops once no
//!   component has been connected for
//!   [`ON_DEMAND_IDLE_EXIT`](crate::backplane::ON_DEMAND_IDLE_EXIT);
//! * a Rust program, which may have no `backplane` executable beside it,
//!   hosts one in-process by default, on 127.0.0.1 only, for as long as it
//!   runs.
//!
//! Either way the backplane started on demand gives its ports to a
//! `backplane` started later on purpose (see [`crate::handover`]), and the
//! components move to that one by themselves.

use std::io::BufRead;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::backplane::{Backplane, BackplaneConfig};
use crate::client::{Client, ClientConfig, Messages};
use crate::error::{Error, Result};

/// How [`attach_with`] starts a backplane when none runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Hosting {
    /// In this process, on 127.0.0.1 only, while this process runs.
    #[default]
    InProcess,
    /// As a process of its own: this `backplane` executable, run with
    /// `--on-demand` (every interface; gives way; stops when idle).
    Executable(PathBuf),
}

impl Hosting {
    /// The `backplane` executable beside the running one, if there is one
    /// (an installed set of executables); in-process otherwise.
    pub fn sibling() -> Hosting {
        std::env::current_exe()
            .ok()
            .map(|exe| exe.with_file_name("backplane"))
            .filter(|path| path.is_file())
            .map_or(Hosting::InProcess, Hosting::Executable)
    }
}

const LOCALHOST: &str = "127.0.0.1";
/// How long a TCP connect to a local port may take before we call it silent.
const LOCAL_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// A connected bus, and the backplane hosted for it if there was none.
#[derive(Debug)]
pub struct Attached {
    /// The connection.
    pub client: Client,
    /// What the connection's subscriptions receive.
    pub messages: Messages,
    /// The backplane this process hosts, when none was running. Keep it
    /// alive as long as the bus is needed; dropping it stops it.
    pub embedded: Option<Backplane>,
    /// The process id of the backplane process started on demand, when
    /// none was running ([`Hosting::Executable`]).
    pub started: Option<u32>,
    /// The backplane address connected to.
    pub address: String,
    /// Its publisher port.
    pub publisher_port: u16,
    /// Its subscriber port.
    pub subscriber_port: u16,
}

impl Attached {
    /// The start-up banner of a component, in python-banyan's layout, plus a
    /// line saying when the backplane is hosted in this process.
    pub fn banner(&self, name: &str) -> String {
        let rule = "*".repeat(60);
        let mut text = format!(
            "{rule}\n{name} using Back Plane IP address: {}\nSubscriber Port = {}\nPublisher  Port = {}\n",
            self.address, self.subscriber_port, self.publisher_port
        );
        if self.embedded.is_some() {
            text.push_str(
                "No backplane was running: hosting one in this process (127.0.0.1 only)\n",
            );
        }
        if let Some(pid) = self.started {
            text.push_str(&format!(
                "No backplane was running: started one as process {pid}, reachable from the LAN; \
                 it stops {} s after the last component leaves\n",
                crate::backplane::ON_DEMAND_IDLE_EXIT.as_secs()
            ));
        }
        text.push_str(&rule);
        text
    }

    /// Closes the connection, then stops the embedded backplane, if any.
    pub async fn close(self) {
        let _ = self.client.close().await;
        if let Some(backplane) = self.embedded {
            let _ = tokio::task::spawn_blocking(move || backplane.shutdown()).await;
        }
    }
}

/// Connects to the backplane at `backplane` (`-b`), or, when `None`, to this
/// machine's, hosting one in-process when none runs. Ports and timeouts come
/// from `config`; its `address` is replaced.
pub async fn attach(backplane: Option<&str>, config: ClientConfig) -> Result<Attached> {
    attach_with(backplane, config, &Hosting::InProcess).await
}

/// As [`attach`], starting a backplane as `hosting` says when none runs.
pub async fn attach_with(
    backplane: Option<&str>,
    mut config: ClientConfig,
    hosting: &Hosting,
) -> Result<Attached> {
    let (mut embedded, mut started) = (None, None);
    match backplane {
        Some(address) => config.address = address.to_owned(),
        None => {
            config.address = LOCALHOST.to_owned();
            match local_backplane(&config, hosting).await? {
                Local::Running => {}
                Local::Hosted(backplane) => embedded = Some(backplane),
                Local::Started(process) => started = Some(process),
            }
            // Port 0 asked for free ports: connect to those bound.
            if let Some(backplane) = &embedded {
                config.publisher_port = backplane.publisher_port();
                config.subscriber_port = backplane.subscriber_port();
            }
            if let Some(process) = &started {
                config.publisher_port = process.publisher_port;
                config.subscriber_port = process.subscriber_port;
            }
        }
    }
    let (client, messages) = Client::connect(&config).await?;
    Ok(Attached {
        client,
        messages,
        embedded,
        started: started.map(|p| p.pid),
        address: config.address,
        publisher_port: config.publisher_port,
        subscriber_port: config.subscriber_port,
    })
}

/// What [`local_backplane`] found or started.
enum Local {
    /// A backplane answers on 127.0.0.1.
    Running,
    /// One is hosted in this process.
    Hosted(Backplane),
    /// One was started as a process.
    Started(StartedProcess),
}

/// A backplane process started on demand, once its banner said it listens.
struct StartedProcess {
    pid: u32,
    publisher_port: u16,
    subscriber_port: u16,
}

async fn local_backplane(config: &ClientConfig, hosting: &Hosting) -> Result<Local> {
    let (publisher_port, subscriber_port) = (config.publisher_port, config.subscriber_port);
    let answers = |port| async move {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        matches!(
            tokio::time::timeout(LOCAL_CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr)).await,
            Ok(Ok(_))
        )
    };
    match (
        answers(publisher_port).await,
        answers(subscriber_port).await,
    ) {
        (true, true) => return Ok(Local::Running),
        (false, false) => {}
        _ => {
            return Err(Error::PortsTakenElsewhere {
                publisher_port,
                subscriber_port,
            })
        }
    }
    // Nothing answers on 127.0.0.1. A listener on another address of this
    // machine still holds the port for the wildcard address.
    let held = |port| matches!(TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)), Err(e) if e.kind() == std::io::ErrorKind::AddrInUse);
    if held(publisher_port) || held(subscriber_port) {
        return Err(Error::PortsTakenElsewhere {
            publisher_port,
            subscriber_port,
        });
    }
    if let Hosting::Executable(path) = hosting {
        let path = path.clone();
        let started = tokio::task::spawn_blocking(move || {
            start_process(path, publisher_port, subscriber_port)
        })
        .await
        .map_err(|_| Error::Closed)??;
        return Ok(match started {
            Some(process) => Local::Started(process),
            // It found a backplane that keeps its ports (started meanwhile).
            None => Local::Running,
        });
    }
    let bind = BackplaneConfig {
        bind_address: LOCALHOST.to_owned(),
        publisher_port,
        subscriber_port,
        high_water_mark: config.high_water_mark,
        subscriber_high_water_mark: config.receive_high_water_mark,
        // Hosted because none ran: a backplane started later takes over.
        gives_way: true,
        ..BackplaneConfig::default()
    };
    match Backplane::bind(&bind) {
        Ok(backplane) => Ok(Local::Hosted(backplane)),
        // Another process started one in the meantime: use it.
        Err(Error::Bind { .. })
            if answers(publisher_port).await && answers(subscriber_port).await =>
        {
            Ok(Local::Running)
        }
        Err(e) => Err(e),
    }
}

/// Starts `backplane --on-demand` and reads its ports from its banner;
/// `Ok(None)` when it exited at once because a backplane started on purpose
/// holds the ports (another process was quicker).
fn start_process(
    path: PathBuf,
    publisher_port: u16,
    subscriber_port: u16,
) -> Result<Option<StartedProcess>> {
    let failed = |reason: String| Error::BackplaneStart {
        path: path.clone(),
        reason,
    };
    let mut command = Command::new(&path);
    command
        .args(["--on-demand", "-p", &publisher_port.to_string()])
        .args(["-s", &subscriber_port.to_string()])
        .stdin(Stdio::null())
        // Its banner tells the ports; its log lines (the handover, its
        // stop) go where this component's go.
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    // A process group of its own: Ctrl-C in this terminal stops this
    // component, not the bus that others may use.
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = command.spawn().map_err(|e| failed(e.to_string()))?;
    let pid = child.id();
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| failed("no standard output".into()))?;
    let (mut publisher, mut subscriber) = (None, None);
    let mut lines = std::io::BufReader::new(stdout).lines();
    while let Some(Ok(line)) = lines.next() {
        let port = || line.rsplit(' ').next().and_then(|p| p.parse::<u16>().ok());
        if line.starts_with("Subscriber Port = ") {
            subscriber = port();
        } else if line.starts_with("Publisher  Port = ") {
            publisher = port();
        }
        if let (Some(publisher_port), Some(subscriber_port)) = (publisher, subscriber) {
            // A thread reads the rest of its standard output (a closed pipe
            // would fail its next print) and waits for it when it ends.
            std::thread::spawn(move || {
                lines.for_each(drop);
                child.wait()
            });
            return Ok(Some(StartedProcess {
                pid,
                publisher_port,
                subscriber_port,
            }));
        }
    }
    let status = child.wait().map_err(|e| failed(e.to_string()))?;
    if status.code() == Some(1) {
        // Its log said why; a backplane that keeps the ports is one to use.
        return Ok(None);
    }
    Err(failed(format!("it exited ({status}) before listening")))
}
