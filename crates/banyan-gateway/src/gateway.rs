//! The shape every gateway has, so that one skeleton runs them all: built
//! from a validated config (each gateway's own `Gateway::new(config)?`), then
//! [`subscribe`](Gateway::subscribe) before its banner, then
//! [`run`](Gateway::run) until its token is cancelled.

use std::future::Future;

use banyan_core::{Client, Messages};
use tokio_util::sync::CancellationToken;

use crate::metrics::Registry;
use crate::stats::Report;

/// What a gateway runs with: its one connection to the bus (the client it
/// publishes and subscribes with, and the messages its subscriptions
/// receive), and where it reports its metrics.
#[derive(Debug)]
pub struct Bus {
    /// The connection.
    pub client: Client,
    /// What its subscriptions receive.
    pub messages: Messages,
    /// Where the gateway registers its counters and gauges (scraped by
    /// `--metrics`; unread otherwise).
    pub metrics: Registry,
}

impl Bus {
    /// A bus connection whose metrics nobody reads.
    pub fn new(client: Client, messages: Messages) -> Bus {
        Bus {
            client,
            messages,
            metrics: Registry::default(),
        }
    }
}

/// Subscribes `bus` to each of `topics`, in order; returns once the
/// backplane routes them all (what a gateway's [`Gateway::subscribe`]
/// usually is).
pub async fn subscribe_all<T: AsRef<str>>(
    bus: &Client,
    topics: impl IntoIterator<Item = T>,
) -> banyan_core::Result<()> {
    for topic in topics {
        bus.subscribe(topic.as_ref()).await?;
    }
    Ok(())
}

/// A configured gateway, ready to join the bus.
pub trait Gateway {
    /// What it counted, returned by [`Gateway::run`].
    type Stats: Report + std::fmt::Display;
    /// Its error type.
    type Error: std::error::Error;

    /// Subscribes `bus` to what the gateway forwards from the bus; returns
    /// once the backplane routes it, so that nothing published after the
    /// banner is missed.
    fn subscribe(&self, bus: &Client) -> impl Future<Output = Result<(), Self::Error>>;

    /// Lines for the start-up banner beyond the bus's own (where the
    /// gateway listens or which peer it dials).
    fn banner(&self) -> Vec<String> {
        Vec::new()
    }

    /// Forwards until `token` is cancelled, tells its peers goodbye, and
    /// returns once every task of the gateway has ended; or ends early with
    /// the error that stopped it.
    fn run(
        self,
        bus: Bus,
        token: CancellationToken,
    ) -> impl Future<Output = Result<Self::Stats, Self::Error>>;
}
