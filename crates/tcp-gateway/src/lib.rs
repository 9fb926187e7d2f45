//! The Banyan TCP gateway: joins one TCP device to the Banyan bus.
//!
//! A microcontroller that cannot run ZeroMQ (a Pico W or an ESP32 with
//! MicroPython, an Arduino core) runs a small TCP server; the gateway is its
//! client. Every bus message on the configured topics goes to the device as
//! its raw MessagePack payload behind a length prefix; every frame the device
//! sends is published unchanged on one bus topic. The framing is
//! python-banyan's `tgw` framing (a 1-byte length) by default, so existing
//! device scripts keep working, or a 2- or 4-byte big-endian length for
//! larger payloads ([`framing`]).
//!
//! The gateway reconnects by itself, with capped backoff, when the device
//! closes, resets or goes silent; bus messages wait meanwhile in a bounded
//! queue that drops its oldest when full. While the device is connected and
//! reading, a full queue holds the bus back instead, so a slow device loses
//! nothing; one that takes nothing for the stall grace loses its oldest
//! messages until it catches up. The queue, the intake from the bus, the
//! backoff, shutdown and counters are the gateway kit's
//! ([`banyan_gateway`]); this crate adds the framing and the device
//! connection.
//!
//! The `tgw` executable parses python-banyan's flags into a [`Config`] and
//! runs a [`Gateway`].
//!
//! # Example
//!
//! A "device" on a local port receives one bus message and answers with one
//! frame, which comes back on the bus:
//!
//! ```
//! use banyan_core::rmpv::Value;
//! use banyan_core::{Backplane, BackplaneConfig, Client, ClientConfig};
//! use banyan_gateway::{Bus, CancellationToken, Gateway as _};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let backplane = Backplane::bind(&BackplaneConfig {
//!     bind_address: "127.0.0.1".into(),
//!     publisher_port: 0,
//!     subscriber_port: 0,
//!     ..BackplaneConfig::default()
//! })?;
//! let bus = ClientConfig {
//!     publisher_port: backplane.publisher_port(),
//!     subscriber_port: backplane.subscriber_port(),
//!     ..ClientConfig::default()
//! };
//! let device = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let config = banyan_tcp_gateway::Config {
//!     server: "127.0.0.1".into(),
//!     port: device.local_addr()?.port(),
//!     topics: vec!["to_pico".into()],
//!     publish_topic: "from_pico".into(),
//!     ..banyan_tcp_gateway::Config::default()
//! };
//!
//! let gateway = banyan_tcp_gateway::Gateway::new(config)?;
//! let (client, messages) = Client::connect(&bus).await?;
//! gateway.subscribe(&client).await?;
//! let token = CancellationToken::new();
//! let running = tokio::spawn(gateway.run(Bus::new(client, messages), token.clone()));
//!
//! let (app, mut replies) = Client::connect(&bus).await?;
//! app.subscribe("from_pico").await?;
//! let (mut socket, _) = device.accept().await?;
//! app.publish("to_pico", &Value::from(7)).await?;
//! let mut frame = [0u8; 2];
//! socket.read_exact(&mut frame).await?;
//! assert_eq!(frame, [1, 0x07]); // length 1, then MessagePack 7
//! socket.write_all(&[1, 0x2a]).await?; // the device answers 42
//! let reply = replies.recv().await.expect("the reply");
//! assert_eq!(reply.value()?, Value::from(42));
//!
//! token.cancel();
//! let stats = running.await??;
//! assert_eq!((stats.to_device, stats.from_device), (1, 1));
//! # Ok(())
//! # }
//! ```

// The README's example is compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExample;

pub mod config;
pub mod error;
pub mod framing;
mod gateway;
mod session;
mod stats;

pub use config::Config;
pub use error::{Error, Result};
pub use framing::{Framing, PrefixWidth};
pub use gateway::Gateway;
pub use stats::Stats;
