//! How an executable finds its bus: the one function every gateway calls.
//!
//! With `-b ADDRESS` the executable connects there. Without it, it uses this
//! machine (127.0.0.1) and the given ports: when a backplane answers there it
//! connects; when the ports are free it hosts a backplane in-process, bound to
//! 127.0.0.1 only, so one command works on a fresh machine; when the ports are
//! held but nothing answers on 127.0.0.1 (python-banyan's backplane binds the
//! LAN address only) it says so and suggests `-b`.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::time::Duration;

use crate::backplane::{Backplane, BackplaneConfig};
use crate::client::{Client, ClientConfig, Messages};
use crate::error::{Error, Result};

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
pub async fn attach(backplane: Option<&str>, mut config: ClientConfig) -> Result<Attached> {
    let mut embedded = None;
    match backplane {
        Some(address) => config.address = address.to_owned(),
        None => {
            config.address = LOCALHOST.to_owned();
            embedded = local_backplane(&config).await?;
            // Port 0 asked for free ports: connect to those bound.
            if let Some(backplane) = &embedded {
                config.publisher_port = backplane.publisher_port();
                config.subscriber_port = backplane.subscriber_port();
            }
        }
    }
    let (client, messages) = Client::connect(&config).await?;
    Ok(Attached {
        client,
        messages,
        embedded,
        address: config.address,
        publisher_port: config.publisher_port,
        subscriber_port: config.subscriber_port,
    })
}

/// `Ok(None)` when a backplane answers on 127.0.0.1; `Ok(Some)` when one had
/// to be started.
async fn local_backplane(config: &ClientConfig) -> Result<Option<Backplane>> {
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
        (true, true) => return Ok(None),
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
        Ok(backplane) => Ok(Some(backplane)),
        // Another process started one in the meantime: use it.
        Err(Error::Bind { .. })
            if answers(publisher_port).await && answers(subscriber_port).await =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}
