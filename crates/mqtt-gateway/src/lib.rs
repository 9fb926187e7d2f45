//! The Banyan MQTT gateway: connects the Banyan bus to an MQTT broker.
//!
//! A drop-in for python-banyan's `mgw` (the `mqttgw` executable is a thin
//! shell around [`Gateway`]): every bus message on the `-g` topics is
//! published on MQTT, every MQTT message on the `-j` filters is published on
//! the bus. Payloads are JSON on MQTT by the shared rules of
//! [`banyan_core::json`], or MessagePack passed through ([`PayloadFormat`]).
//! Bus topics are matched exactly against the `-g` topics, as python's
//! `mgw` does, or as prefixes ([`TopicMatch`]); they map to one fixed topic
//! each way, or one to one under a prefix ([`Routes`]). A payload over the
//! size limit is refused alone, the connection kept ([`Codec`]). The gateway survives broker restarts: it reconnects with a
//! capped backoff, subscribes again, and sends what the bus published
//! meanwhile from a bounded queue; while the broker is connected and merely
//! slower than the bus, that queue holds the bus back instead of dropping.
//! The queue, the intake from the bus, the backoff, shutdown and counters
//! are the gateway kit's ([`banyan_gateway`]); this crate adds MQTT packets,
//! topic routes and payload conversion.
//!
//! * [`Config`] ([`config`]): the settings, python's defaults in `Default`;
//! * [`Routes`] ([`routes`]) and [`Codec`] ([`codec`]): pure topic and
//!   payload mapping;
//! * [`Gateway`] ([`gateway`]): the running gateway.
//!
//! # Example
//!
//! ```
//! use banyan_mqtt_gateway::{Config, Gateway, TopicMatch};
//!
//! // bus `to_motor` <-> MQTT `banyan/to_motor`, MQTT `banyan/#` subscribed:
//! // every bus topic starting with `to_` goes to MQTT.
//! let config = Config {
//!     broker_address: "127.0.0.1".into(),
//!     bus_topics: vec!["to_".into()],
//!     matching: TopicMatch::Prefix,
//!     mqtt_topics: vec!["#".into()],
//!     prefix: Some("banyan".into()),
//!     ..Config::default()
//! };
//! let gateway = Gateway::new(config)?;
//! let routes = gateway.routes();
//! assert!(routes.forwards("to_motor"));
//! assert_eq!(routes.to_mqtt("to_motor")?, "banyan/to_motor");
//! assert_eq!(routes.to_bus("banyan/from_sensor")?, "from_sensor");
//! assert_eq!(routes.mqtt_subscriptions(), ["banyan/#"]);
//! # Ok::<(), banyan_mqtt_gateway::Error>(())
//! ```
//!
//! Running it needs a bus and a broker:
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use banyan_gateway::{Bus, CancellationToken, Gateway as _};
//! use banyan_mqtt_gateway::{Config, Gateway};
//!
//! let bus = banyan_core::attach(None, banyan_core::ClientConfig::default()).await?;
//! let gateway = Gateway::new(Config::default())?;
//! gateway.subscribe(&bus.client).await?;
//! // Cancelling the token ends it; `mqttgw` cancels on SIGINT/SIGTERM.
//! let token = CancellationToken::new();
//! let closer = bus.client.clone();
//! let stats = gateway
//!     .run(Bus::new(bus.client, bus.messages), token)
//!     .await?;
//! println!("{} messages sent to MQTT", stats.to_mqtt);
//! closer.close().await?;
//! # Ok(())
//! # }
//! ```

pub mod codec;
// The README's example is compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExample;

pub mod config;
mod connection;
pub mod error;
pub mod gateway;
pub mod routes;
pub mod tls;

pub use codec::{Codec, Outgoing, PayloadFormat};
pub use config::{Config, Credentials, EmptyPassword, QoS};
pub use error::{Error, Result};
pub use gateway::{Gateway, Stats};
pub use routes::{Routes, TopicMatch};
pub use tls::TlsConfig;
