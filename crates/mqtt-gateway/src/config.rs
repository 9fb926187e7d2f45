//! The gateway's settings, validated before anything connects.

use std::fmt;
use std::time::Duration;

use banyan_gateway::{QueuePolicy, Reconnect};
use rumqttc::{MqttOptions, TlsConfiguration, Transport};

pub use rumqttc::QoS;

use crate::codec::{Codec, PayloadFormat, DEFAULT_MAX_PAYLOAD};
use crate::connection;
use crate::error::{Error, Result};
use crate::routes::{Routes, TopicMatch};
use crate::tls::{self, TlsConfig};

/// A user name and password for the broker. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password (may be empty).
    pub password: String,
    /// Why the password is empty, when it is because of the environment
    /// variable it was read from. A broker that refuses the credentials
    /// then gets that variable named in the error ([`Error::Refused`]):
    /// "not authorized" alone does not tell a user that the variable was
    /// never exported.
    pub empty_password: Option<EmptyPassword>,
}

impl Credentials {
    /// `username` with `password`, as a program gives them.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Credentials {
        Credentials {
            username: username.into(),
            password: password.into(),
            empty_password: None,
        }
    }

    /// `username` with the password read from the environment variable
    /// `var`, whose value is `value` (`None`: not set). An unset or empty
    /// variable gives an empty password, and says so in
    /// [`Credentials::empty_password`].
    pub fn from_env_value(
        username: impl Into<String>,
        var: &str,
        value: Option<String>,
    ) -> Credentials {
        let empty_password = match &value {
            None => Some(EmptyPassword::Unset(var.to_owned())),
            Some(password) if password.is_empty() => Some(EmptyPassword::Empty(var.to_owned())),
            Some(_) => None,
        };
        Credentials {
            username: username.into(),
            password: value.unwrap_or_default(),
            empty_password,
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .field("empty_password", &self.empty_password)
            .finish()
    }
}

/// Why a password read from the environment is empty.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EmptyPassword {
    /// The variable of this name is not set.
    Unset(String),
    /// The variable of this name is set to the empty string.
    Empty(String),
}

impl fmt::Display for EmptyPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EmptyPassword::Unset(var) => {
                write!(f, "the password was empty: {var} is not set")
            }
            EmptyPassword::Empty(var) => {
                write!(
                    f,
                    "the password was empty: {var} is set to the empty string"
                )
            }
        }
    }
}

/// Everything the gateway needs to know; `Default` is python's `mgw`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The broker's host name or address (`-a`, "localhost").
    pub broker_address: String,
    /// The broker's port (`-d`, 1883).
    pub broker_port: u16,
    /// Bus topics forwarded to MQTT (`-g`, "to_mqtt"), matched by
    /// [`Config::matching`].
    pub bus_topics: Vec<String>,
    /// How bus topics are matched against [`Config::bus_topics`]
    /// (`--match`): exactly by default, as python's `mgw` does.
    pub matching: TopicMatch,
    /// Bus topic for what comes from MQTT (`-e`, "from_mqtt").
    pub bus_publish_topic: String,
    /// MQTT topic for what comes from the bus (`-i`, "from_banyan").
    pub mqtt_publish_topic: String,
    /// MQTT filters subscribed (`-j`, "mqtt_network").
    pub mqtt_topics: Vec<String>,
    /// Map bus `T` to MQTT `PREFIX/T` both ways instead of `-e`/`-i`.
    pub prefix: Option<String>,
    /// What MQTT payloads are.
    pub format: PayloadFormat,
    /// The largest MQTT payload passed either way, in bytes
    /// (`--max-payload`, 1 MiB). A larger one is refused, logged and
    /// counted, and the connection stays up.
    pub max_payload: usize,
    /// QoS of what the gateway publishes and subscribes to (0, as python).
    pub qos: QoS,
    /// Whether what the gateway publishes is retained by the broker.
    pub retain: bool,
    /// The MQTT client id (default `mqttgw-<process id>`).
    pub client_id: String,
    /// MQTT keepalive (60 s; `None` turns it off, `--keepalive 0`). At least
    /// one second.
    pub keep_alive: Option<Duration>,
    /// Broker credentials.
    pub credentials: Option<Credentials>,
    /// TLS, when the broker needs it.
    pub tls: Option<TlsConfig>,
    /// The queue of messages for MQTT (`--queue`, `--queue-bytes`,
    /// `--stall-grace`). When full while the broker is connected, the
    /// gateway stops taking from the bus (losing nothing) for up to the
    /// stall grace; while the broker is away or stalled, the oldest message
    /// is dropped and counted (see [`banyan_gateway::outbox`]).
    pub queue: QueuePolicy,
    /// Waits between connection attempts (`--reconnect-min`,
    /// `--reconnect-max`).
    pub reconnect: Reconnect,
}

/// Default of [`Config::queue`]: 1,000 messages, 8 MiB.
pub const DEFAULT_QUEUE: QueuePolicy = QueuePolicy::new(1000, 8 << 20);
/// Default of [`Config::keep_alive`]: 60 s, as python's `mgw`.
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(60);

impl Default for Config {
    fn default() -> Self {
        Config {
            broker_address: "localhost".into(),
            broker_port: 1883,
            bus_topics: vec!["to_mqtt".into()],
            matching: TopicMatch::Exact,
            bus_publish_topic: "from_mqtt".into(),
            mqtt_publish_topic: "from_banyan".into(),
            mqtt_topics: vec!["mqtt_network".into()],
            prefix: None,
            format: PayloadFormat::Json,
            max_payload: DEFAULT_MAX_PAYLOAD,
            qos: QoS::AtMostOnce,
            retain: false,
            client_id: format!("mqttgw-{}", std::process::id()),
            keep_alive: Some(DEFAULT_KEEP_ALIVE),
            credentials: None,
            tls: None,
            queue: DEFAULT_QUEUE,
            reconnect: Reconnect::default(),
        }
    }
}

impl Config {
    /// The validated topic mapping.
    pub fn routes(&self) -> Result<Routes> {
        Routes::new(
            &self.bus_topics,
            self.matching,
            &self.bus_publish_topic,
            &self.mqtt_publish_topic,
            &self.mqtt_topics,
            self.prefix.as_deref(),
        )
    }

    /// The validated payload conversion.
    pub fn codec(&self) -> Result<Codec> {
        Codec::new(self.format, self.max_payload)
    }

    /// The MQTT client settings (reads the CA file when TLS is on).
    pub fn mqtt_options(&self) -> Result<MqttOptions> {
        if self.keep_alive.is_some_and(|k| k < Duration::from_secs(1)) {
            return Err(Error::KeepAlive);
        }
        let mut options = MqttOptions::new(
            self.client_id.clone(),
            self.broker_address.clone(),
            self.broker_port,
        );
        options
            // rumqttc takes zero for "no keepalive".
            .set_keep_alive(self.keep_alive.unwrap_or(Duration::ZERO))
            // A new session each time: the gateway resubscribes and resends
            // from its own outage queue, which survives any broker restart.
            .set_clean_session(true);
        connection::set_packet_limits(&mut options, self.max_payload);
        if let Some(credentials) = &self.credentials {
            options.set_credentials(credentials.username.clone(), credentials.password.clone());
        }
        if let Some(tls) = &self.tls {
            let config = tls::client_config(tls)?;
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(config)));
        }
        Ok(options)
    }

    /// `address:port` of the broker, for messages.
    pub fn broker(&self) -> String {
        format!("{}:{}", self.broker_address, self.broker_port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_pythons() {
        let config = Config::default();
        assert_eq!(config.broker(), "localhost:1883");
        assert_eq!(config.bus_topics, vec!["to_mqtt"]);
        assert_eq!(config.mqtt_topics, vec!["mqtt_network"]);
        assert_eq!(config.qos, QoS::AtMostOnce);
        assert_eq!(config.matching, TopicMatch::Exact);
        assert_eq!(config.max_payload, 1 << 20);
        assert!(config.codec().is_ok());
        let options = config.mqtt_options().expect("valid");
        assert_eq!(options.keep_alive(), Duration::from_secs(60));
        assert!(config.routes().is_ok());
    }

    #[test]
    fn the_password_is_never_shown() {
        let config = Config {
            credentials: Some(Credentials::new("user", "s3cret")),
            ..Config::default()
        };
        let shown = format!("{config:?}");
        assert!(
            shown.contains("user") && !shown.contains("s3cret"),
            "{shown}"
        );
    }

    #[test]
    fn bad_numbers_are_refused() {
        let config = Config {
            keep_alive: Some(Duration::from_millis(500)),
            ..Config::default()
        };
        assert!(matches!(config.mqtt_options(), Err(Error::KeepAlive)));
        let config = Config {
            max_payload: 0,
            ..Config::default()
        };
        assert!(matches!(config.codec(), Err(Error::MaxPayload { .. })));
    }

    #[test]
    fn an_empty_password_knows_its_variable() {
        let unset = Credentials::from_env_value("gw", "GW_PASS", None);
        assert_eq!(unset.password, "");
        assert_eq!(
            unset.empty_password,
            Some(EmptyPassword::Unset("GW_PASS".into()))
        );
        let empty = Credentials::from_env_value("gw", "GW_PASS", Some(String::new()));
        assert_eq!(
            empty.empty_password,
            Some(EmptyPassword::Empty("GW_PASS".into()))
        );
        let set = Credentials::from_env_value("gw", "GW_PASS", Some("s3cret".into()));
        assert_eq!(
            (set.password.as_str(), set.empty_password),
            ("s3cret", None)
        );
        assert_eq!(Credentials::new("gw", "").empty_password, None);
    }
}
