//! The Banyan gateway kit: what every gateway between the Banyan bus and
//! its peers (web pages, TCP devices, MQTT brokers) shares, written once.
//!
//! * [`Outbox`] ([`outbox`]): a peer's queue, bounded in messages and bytes,
//!   with the one policy when full: hold the bus back while the peer is
//!   connected, drop the oldest (counted) once it is stalled or away;
//! * [`intake::run`] ([`intake`]): the loop from the bus into the outboxes,
//!   with the stall grace, through a [`Route`];
//! * [`Backoff`] ([`backoff`]): waits between connection attempts, capped,
//!   with jitter, reset only by a connection that stayed up;
//! * [`Tasks`] ([`tasks`]): one cancellation token and task tracker, so that
//!   every task ends on one signal and `run` returns when all have;
//! * [`stats!`] ([`mod@stats`]): counters and the `Stats` a gateway returns,
//!   shown the same way by all;
//! * [`QueuePolicy`], [`Reconnect`] and [`parse_duration`] ([`config`]): the
//!   shared settings, one name and one unit per knob;
//! * [`Gateway`] ([`gateway`]): the shape the executables run.
//!
//! Each gateway crate adds only what is its own: WebSocket fan-out and
//! protocol, TCP framing, MQTT packets and topic routes.
//!
//! # Example: a gateway to an in-memory peer
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use banyan_core::rmpv::Value;
//! use banyan_core::{Backplane, BackplaneConfig, Client, ClientConfig, Message};
//! use banyan_gateway::outbox::{Limit, Peer};
//! use banyan_gateway::{intake, CancellationToken, Drops, Outbox, QueuePolicy, ToOne};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let backplane = Backplane::bind(&BackplaneConfig {
//!     bind_address: "127.0.0.1".into(),
//!     publisher_port: 0,
//!     subscriber_port: 0,
//!     ..BackplaneConfig::default()
//! })?;
//! let config = ClientConfig {
//!     publisher_port: backplane.publisher_port(),
//!     subscriber_port: backplane.subscriber_port(),
//!     ..ClientConfig::default()
//! };
//! let (gateway, mut messages) = Client::connect(&config).await?;
//! gateway.subscribe("to_peer").await?;
//!
//! // The peer's queue: 100 messages, 1 MiB; the intake fills it.
//! let outbox = Arc::new(Outbox::new(
//!     QueuePolicy::new(100, 1 << 20),
//!     Peer::Connected,
//!     Drops::default(),
//! ));
//! let token = CancellationToken::new();
//! let intake = tokio::spawn({
//!     let (outbox, token) = (outbox.clone(), token.clone());
//!     async move {
//!         let mut route = ToOne::new(outbox, |message: Message| Some(message));
//!         intake::run(&mut messages, &mut route, Duration::from_secs(1), &token).await
//!     }
//! });
//!
//! let (app, _) = Client::connect(&config).await?;
//! app.publish("to_peer", &Value::from(42)).await?;
//!
//! // The peer's writer takes what is queued, writes it, says so.
//! let mut batch = Vec::new();
//! outbox.take_wait(Limit::ALL, &mut batch).await;
//! assert_eq!(batch[0].value()?, Value::from(42));
//! outbox.written();
//!
//! token.cancel();
//! intake.await??;
//! # Ok(())
//! # }
//! ```

// The README's example is compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExample;

pub mod backoff;
pub mod config;
pub mod error;
pub mod gateway;
pub mod intake;
pub mod metrics;
pub mod outbox;
pub mod stats;
pub mod sync;
pub mod tasks;
pub mod topics;

pub use backoff::Backoff;
pub use config::{parse_duration, QueuePolicy, Reconnect};
pub use error::{Error, Result};
pub use gateway::{subscribe_all, Bus, Gateway};
pub use intake::{Route, ToOne};
pub use metrics::Registry;
pub use outbox::{Drops, Outbox, Pushed, Weigh};
pub use stats::{Counter, Report};
pub use tasks::Tasks;
/// The cancellation token every gateway's `run` takes, re-exported.
pub use tokio_util::sync::CancellationToken;
pub use topics::TopicMatch;
