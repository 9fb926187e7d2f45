//! The Banyan bus for Rust.
//!
//! Banyan is a publish/subscribe framework: components publish MessagePack
//! messages on topics through a ZeroMQ forwarder, the *backplane*, and receive
//! what matches their topic-prefix subscriptions. This crate is wire-compatible
//! with python-banyan 3.17: a python component and a Rust component share one
//! bus, through either one's backplane.
//!
//! * [`Message`] ([`envelope`]): a topic and a MessagePack payload, the two
//!   ZeroMQ frames of the wire format; the payload is decoded only on demand.
//! * [`Backplane`] ([`backplane`]): the forwarder, in-process or as the
//!   `backplane` executable.
//! * [`Client`] and [`Messages`] ([`client`]): a tokio component's connection.
//! * [`attach()`] ([`mod@attach`]): what every executable calls to get a bus,
//!   hosting a backplane when none runs.
//! * [`json`]: the JSON <-> MessagePack rules the gateways share.
//!
//! # Example: an echo component
//!
//! ```
//! use banyan_core::rmpv::Value;
//! use banyan_core::{Backplane, BackplaneConfig, Client, ClientConfig, Message};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), banyan_core::Error> {
//! // A backplane on free ports of this machine (components usually connect
//! // to one already running, as `ClientConfig::default()` does).
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
//!
//! // The echo component answers every "ping" with its payload on "pong".
//! let (echo, mut pings) = Client::connect(&config).await?;
//! echo.subscribe("ping").await?;
//! tokio::spawn(async move {
//!     while let Some(ping) = pings.recv().await {
//!         let (_, payload) = ping.into_parts();
//!         if echo.send(Message::from_raw("pong", payload)).await.is_err() {
//!             break;
//!         }
//!     }
//! });
//!
//! // Another component uses it.
//! let (user, mut pongs) = Client::connect(&config).await?;
//! user.subscribe("pong").await?;
//! user.publish("ping", &Value::from("hello")).await?;
//! let pong = pongs.recv().await.expect("the echo answers");
//! assert_eq!(pong.value()?, Value::from("hello"));
//! # Ok(())
//! # }
//! ```

// The README's example is compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExample;

pub mod attach;
pub mod backplane;
pub mod client;
mod config;
mod driver;
pub mod envelope;
pub mod error;
pub mod handover;
pub mod json;
mod marks;
pub mod monitor;
mod numpy;
pub mod pyrepr;
mod topic;
mod wake;
mod zmq_ext;

pub use attach::{attach, attach_with, Attached, Hosting};
pub use backplane::{Backplane, BackplaneConfig, BackplaneStats, Ending};
pub use client::{Client, ClientConfig, Messages};
pub use envelope::Message;
pub use error::{Error, Result};
/// The MessagePack value type of payloads, re-exported.
pub use rmpv;
