//! The gateway: its listener (accepting connections, one task each, spawned
//! before any handshake), the bus intake that hands every bus message to the
//! pages of its topic, and the shutdown of both.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use banyan_core::Client;
use banyan_gateway::{intake, Bus, CancellationToken, Tasks};
use tokio::net::TcpListener;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::hub::{Hub, ToPages};
use crate::origin::{OriginPolicy, KNOWN_EDITORS};
use crate::routes::ClientId;
use crate::session;
use crate::stats::{Counters, Stats};

/// Pause after a failed `accept` (out of file descriptors, usually), so the
/// loop does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A configured gateway with its listening socket, ready to run.
#[derive(Debug)]
pub struct Gateway {
    config: Config,
    listener: std::net::TcpListener,
    local: SocketAddr,
}

impl Gateway {
    /// Validates `config` and binds its address, so that a port in use is
    /// reported before the gateway joins the bus.
    pub fn new(config: Config) -> Result<Gateway> {
        let address = format!("{}:{}", config.address, config.port);
        let listener = std::net::TcpListener::bind((config.address.as_str(), config.port))
            .map_err(|source| Error::Listen {
                address: address.clone(),
                source,
            })?;
        Gateway::with_listener(config, listener)
    }

    /// Validates `config` and uses `listener`, bound already, instead of
    /// its address.
    pub fn with_listener(config: Config, listener: std::net::TcpListener) -> Result<Gateway> {
        config.queue.validate()?;
        if config.max_clients == 0 {
            return Err(Error::ZeroLimit("--max-clients"));
        }
        if config.max_pending == 0 {
            return Err(Error::ZeroLimit("--max-pending"));
        }
        if config.handshake_timeout.is_zero() {
            return Err(Error::ZeroTimeout("--handshake-timeout"));
        }
        if config.max_message_size == 0 {
            return Err(Error::ZeroLimit("--max-message-size"));
        }
        let local_address = || format!("{}:{}", config.address, config.port);
        let listen = |source| Error::Listen {
            address: local_address(),
            source,
        };
        listener.set_nonblocking(true).map_err(listen)?;
        let local = listener.local_addr().map_err(listen)?;
        Ok(Gateway {
            config,
            listener,
            local,
        })
    }

    /// The address the WebSocket server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl banyan_gateway::Gateway for Gateway {
    type Stats = Stats;
    type Error = Error;

    /// Subscribes the [`Config::held_topics`]; the reply topics are
    /// subscribed while pages use them.
    async fn subscribe(&self, bus: &Client) -> Result<()> {
        Ok(banyan_gateway::subscribe_all(bus, &self.config.held_topics).await?)
    }

    fn banner(&self) -> Vec<String> {
        let policy = OriginPolicy::new(&self.config.allowed_origins, self.config.known_editors);
        let mut origins = String::from("Pages allowed: from disk and this machine");
        for origin in policy.extra() {
            origins.push_str(", ");
            origins.push_str(origin);
            if self.config.known_editors && KNOWN_EDITORS.contains(&origin.as_str()) {
                origins.push_str(" (Scratch 3 OneGPIO; --no-default-origins removes it)");
            }
        }
        vec![format!("WebSocket server on ws://{}", self.local), origins]
    }

    /// Serves pages until `token` is cancelled: every page then gets a
    /// close frame (within [`Config::close_timeout`]), and `run` returns once
    /// every session has ended.
    async fn run(self, bus: Bus, token: CancellationToken) -> Result<Stats> {
        let Bus {
            client,
            mut messages,
            metrics,
        } = bus;
        let listener = TcpListener::from_std(self.listener).map_err(|source| Error::Listen {
            address: self.local.to_string(),
            source,
        })?;
        let counters = Counters::default();
        let grace = self.config.queue.stall_grace;
        let hub = Arc::new(Hub::new(client, self.config, counters.clone()));
        metrics.register({
            let hub = hub.clone();
            move |out| out.extend(hub.metrics())
        });
        let tasks = Tasks::new(&token);
        tasks.spawn("bus intake", {
            let mut route = ToPages(hub.clone());
            let token = tasks.token().clone();
            async move { Ok(intake::run(&mut messages, &mut route, grace, &token).await?) }
        });
        accept(&listener, &hub, &tasks).await;
        tracing::info!("shutting down");
        tasks.wait().await?;
        Ok(counters.snapshot())
    }
}

/// Accepts connections until the gateway stops, a task each.
async fn accept(listener: &TcpListener, hub: &Arc<Hub>, tasks: &Tasks<Error>) {
    let token = tasks.token();
    let mut next_client: ClientId = 0;
    loop {
        let accepted = tokio::select! {
            () = token.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                next_client += 1;
                // The handshake happens in the session's task, never here.
                // Tasks are bounded all the same: connections waiting for
                // their upgrade by --max-pending (the longest waiting is
                // closed when one more arrives), pages by --max-clients.
                tasks.spawn_detached(session::serve(
                    hub.clone(),
                    stream,
                    peer,
                    next_client,
                    token.clone(),
                ));
            }
            Err(e) => {
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::select! {
                    () = token.cancelled() => return,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                }
            }
        }
    }
}
