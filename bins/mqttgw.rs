//! `mqttgw`: the MQTT gateway (python-banyan's `mgw`; `mgw` is this same
//! program under python's name, see `mgw.rs`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use banyan_gateway::Reconnect;
use banyan_mqtt_gateway::codec::DEFAULT_MAX_PAYLOAD;
use banyan_mqtt_gateway::config::{DEFAULT_KEEP_ALIVE, DEFAULT_QUEUE};
use banyan_mqtt_gateway::{
    Config, Credentials, Gateway, PayloadFormat, QoS, TlsConfig, TopicMatch,
};
use banyan_rs::cli::{self, Alias, Spec};

/// The environment variable read for the broker password when
/// `--password-env` is not given.
const DEFAULT_PASSWORD_ENV: &str = "MQTTGW_PASSWORD";

banyan_rs::component_args! {
    queue: DEFAULT_QUEUE;
    reconnect: Reconnect::default();
    metrics;
    /// Forwards between the Banyan bus and an MQTT broker (python-banyan's mgw).
    /// Several values after -g or -j, repeated flags and comma lists all work.
    /// Durations are seconds, or a number with a unit (250ms, 1.5s).
    struct Args {
        /// broker address (default localhost)
        #[argh(option, short = 'a', default = "String::from(\"localhost\")")]
        broker_address: String,
        /// broker port (default 1883)
        #[argh(option, short = 'd', default = "1883")]
        broker_port: u16,
        /// bus topic for messages from MQTT (default from_mqtt)
        #[argh(option, short = 'e', default = "String::from(\"from_mqtt\")")]
        bus_publish_topic: String,
        /// bus topics forwarded to MQTT, matched exactly unless --match prefix
        /// (default to_mqtt)
        #[argh(option, short = 'g')]
        bus_topics: Vec<String>,
        /// mqtt topic for messages from the bus (default from_banyan)
        #[argh(option, short = 'i', default = "String::from(\"from_banyan\")")]
        mqtt_publish_topic: String,
        /// mqtt topics subscribed, + and # wildcards allowed (default
        /// mqtt_network)
        #[argh(option, short = 'j')]
        mqtt_topics: Vec<String>,
        /// name shown in the banner (default MQTT Gateway)
        #[argh(option, short = 'n', default = "String::from(\"MQTT Gateway\")")]
        name: String,
        /// accepted for python-banyan compatibility and ignored (default .1)
        #[argh(option, short = 't', default = "0.1")]
        loop_time: f64,
        /// map bus topic T to MQTT topic PREFIX/T both ways (instead of -e and
        /// -i); -j filters are then relative to PREFIX
        #[argh(option)]
        prefix: Option<String>,
        /// how bus topics are matched against -g: exact (default, as python's
        /// mgw: -g to_mqtt forwards to_mqtt, not to_mqtt_2) or prefix (every
        /// topic starting with a -g topic)
        #[argh(option, default = "TopicMatch::Exact", from_str_fn(cli::topic_match))]
        r#match: TopicMatch,
        /// mqtt payloads: json (default) or msgpack (bus bytes unchanged)
        #[argh(option, default = "PayloadFormat::Json")]
        format: PayloadFormat,
        /// largest MQTT payload in bytes passed either way; a larger one is
        /// refused, logged and counted, the connection kept (default 1048576)
        #[argh(option, default = "DEFAULT_MAX_PAYLOAD")]
        max_payload: usize,
        /// quality of service for publishing and subscribing: 0 (default), 1
        /// or 2
        #[argh(option, default = "QoS::AtMostOnce", from_str_fn(qos))]
        qos: QoS,
        /// ask the broker to retain what the gateway publishes
        #[argh(switch)]
        retain: bool,
        /// mqtt client id (default mqttgw-PID)
        #[argh(option)]
        client_id: Option<String>,
        /// mqtt keepalive, 0 for none (default 60s)
        #[argh(option, default = "DEFAULT_KEEP_ALIVE", from_str_fn(cli::duration))]
        keepalive: Duration,
        /// user name for the broker
        #[argh(option)]
        username: Option<String>,
        /// name of the environment variable holding the password (default
        /// MQTTGW_PASSWORD)
        #[argh(option)]
        password_env: Option<String>,
        /// connect with TLS, trusting the system's root certificates
        #[argh(switch)]
        tls: bool,
        /// connect with TLS, trusting the CA certificates of this PEM file
        #[argh(option)]
        ca_file: Option<PathBuf>,
    }
}

const SPEC: Spec = Spec {
    multi: &["-g", "-j"],
    aliases: &[Alias {
        old: "--stall-grace-ms",
        new: "--stall-grace",
        unit: "ms",
    }],
};

fn qos(value: &str) -> Result<QoS, String> {
    match value.trim() {
        "0" => Ok(QoS::AtMostOnce),
        "1" => Ok(QoS::AtLeastOnce),
        "2" => Ok(QoS::ExactlyOnce),
        other => Err(format!("--qos takes 0, 1 or 2, not {other}")),
    }
}

/// The password comes from the environment, never from the command line
/// (where every user of the machine could read it).
fn credentials(args: &Args) -> Result<Option<Credentials>, String> {
    let password_env = args.password_env.as_deref();
    match &args.username {
        Some(username) => {
            let var = password_env.unwrap_or(DEFAULT_PASSWORD_ENV);
            let password = std::env::var(var).ok();
            if password.is_none() && password_env.is_some() {
                return Err(format!("--password-env: {var} is not set"));
            }
            // An unset MQTTGW_PASSWORD is an empty password, as for python's
            // mgw; a broker that refuses it gets the variable named.
            Ok(Some(Credentials::from_env_value(
                username.clone(),
                var,
                password,
            )))
        }
        None if password_env.is_some() => Err("--password-env needs --username".into()),
        None => Ok(None),
    }
}

fn config(args: &Args, credentials: Option<Credentials>) -> Config {
    let mut bus_topics = cli::split_list(&args.bus_topics);
    if bus_topics.is_empty() {
        bus_topics.push("to_mqtt".into());
    }
    let mut mqtt_topics = cli::split_list(&args.mqtt_topics);
    if mqtt_topics.is_empty() {
        mqtt_topics.push("mqtt_network".into());
    }
    let defaults = Config::default();
    Config {
        broker_address: args.broker_address.clone(),
        broker_port: args.broker_port,
        bus_topics,
        matching: args.r#match,
        bus_publish_topic: args.bus_publish_topic.clone(),
        mqtt_publish_topic: args.mqtt_publish_topic.clone(),
        mqtt_topics,
        prefix: args.prefix.clone(),
        format: args.format,
        max_payload: args.max_payload,
        qos: args.qos,
        retain: args.retain,
        client_id: args.client_id.clone().unwrap_or(defaults.client_id),
        keep_alive: Some(args.keepalive).filter(|k| !k.is_zero()),
        credentials,
        tls: (args.tls || args.ca_file.is_some()).then(|| TlsConfig {
            ca_file: args.ca_file.clone(),
        }),
        queue: args.queue_policy(),
        reconnect: args.reconnect(),
    }
}

/// The program, for `mqttgw` and `mgw` alike.
#[tokio::main(flavor = "current_thread")]
pub(crate) async fn main() -> ExitCode {
    let args: Args = cli::parse(&SPEC);
    cli::init_logging();
    let _ = args.loop_time;
    let credentials = match credentials(&args) {
        Ok(credentials) => credentials,
        Err(e) => cli::usage_error(&cli::command(), e),
    };
    let gateway = Gateway::new(config(&args, credentials));
    cli::serve(&args.name, &args, gateway).await
}
