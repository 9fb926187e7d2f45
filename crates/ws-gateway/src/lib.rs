//! The Banyan WebSocket gateway: web pages on one side, the Banyan bus on the
//! other.
//!
//! A page (such as the OneGPIO demo pages) connects, sends
//! `{"id": "to_arduino_gateway"}`, and from then on every JSON message it
//! sends is published on the bus topic `to_arduino_gateway` as MessagePack,
//! and every bus message on `from_arduino_gateway` reaches it as JSON (a
//! numeric `timestamp` shown as local time). The gateway uses one bus
//! connection for all its clients; a reply topic is subscribed while it has
//! clients. It refuses pages of other web sites ([`origin`]; the Scratch 3
//! OneGPIO editor's is known), answers bad input with `{"error": "..."}`,
//! fails a connection that breaks the WebSocket protocol with the RFC's close
//! code, and waits for a client that reads slowly (holding the bus back,
//! losing nothing) but not for long for one that does not read at all: that
//! one loses its own oldest messages, and is read no further until it takes
//! what it was sent (pongs included). Connections that have not upgraded yet
//! wait in a bounded line of their own ([`pending`]), so idle sockets cannot
//! lock pages out; a page beyond `--max-clients` gets HTTP 503. A panic
//! report (`{"report": "panic"}`, s3-extend's rule) is delivered and then
//! closes its pages. The queue
//! per page, the intake from the bus, shutdown and counters are the gateway
//! kit's ([`banyan_gateway`]); this crate adds the WebSocket protocol, the
//! origin check and the fan-out to pages. `docs/ws-gateway.md` describes the
//! protocol, flags and limits.
//!
//! # Example
//!
//! ```
//! use banyan_core::rmpv::Value;
//! use banyan_core::{Backplane, BackplaneConfig, Client, ClientConfig};
//! use banyan_gateway::{Bus, CancellationToken, Gateway as _};
//! use futures_util::{SinkExt, StreamExt};
//! use tokio_tungstenite::tungstenite::Message as WsMessage;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A bus (backplane on free ports) and the gateway on a free port.
//! let backplane = Backplane::bind(&BackplaneConfig {
//!     bind_address: "127.0.0.1".into(),
//!     publisher_port: 0,
//!     subscriber_port: 0,
//!     ..BackplaneConfig::default()
//! })?;
//! let bus_config = ClientConfig {
//!     publisher_port: backplane.publisher_port(),
//!     subscriber_port: backplane.subscriber_port(),
//!     ..ClientConfig::default()
//! };
//! let gateway = banyan_ws_gateway::Gateway::new(banyan_ws_gateway::Config {
//!     port: 0,
//!     ..banyan_ws_gateway::Config::default()
//! })?;
//! let address = gateway.local_addr();
//! let (client, messages) = Client::connect(&bus_config).await?;
//! gateway.subscribe(&client).await?;
//! let token = CancellationToken::new();
//! let running = tokio::spawn(gateway.run(Bus::new(client, messages), token.clone()));
//!
//! // A device component on the bus.
//! let (device, mut commands) = Client::connect(&bus_config).await?;
//! device.subscribe("to_demo").await?;
//!
//! // A page: its id, then a command.
//! let tcp = tokio::net::TcpStream::connect(address).await?;
//! let (mut page, _) = tokio_tungstenite::client_async(format!("ws://{address}"), tcp).await?;
//! page.send(WsMessage::text(r#"{"id": "to_demo"}"#)).await?;
//! page.send(WsMessage::text(r#"{"command": "digital_write", "pin": 4, "value": 1}"#)).await?;
//!
//! let command = commands.recv().await.expect("the command");
//! assert_eq!(command.topic(), "to_demo");
//! assert_eq!(banyan_core::json::to_json(&command.value()?)?,
//!            r#"{"command": "digital_write", "pin": 4, "value": 1}"#);
//!
//! // The device reports; the page gets JSON.
//! device.wait_for_subscriber("from_demo").await?;
//! let report = banyan_core::json::from_json(r#"{"report": "digital_input", "pin": 2, "value": 1}"#)?;
//! device.publish("from_demo", &report).await?;
//! let text = loop {
//!     if let Some(WsMessage::Text(text)) = page.next().await.transpose()? {
//!         break text;
//!     }
//! };
//! assert_eq!(text.as_str(), r#"{"report": "digital_input", "pin": 2, "value": 1}"#);
//!
//! token.cancel();
//! let stats = running.await??;
//! assert_eq!((stats.pages, stats.to_bus, stats.to_pages), (1, 1, 1));
//! # let _ = Value::Nil;
//! # Ok(())
//! # }
//! ```

// The README's example is compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExample;

pub mod config;
pub mod error;
mod http;
mod hub;
pub mod origin;
pub mod pending;
pub mod protocol;
pub mod routes;
mod server;
mod session;
mod stats;
mod view;

pub use config::Config;
pub use error::{Error, Result};
pub use server::Gateway;
pub use stats::Stats;
