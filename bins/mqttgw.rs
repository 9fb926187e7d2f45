//! `mqttgw`: the MQTT gateway (python-banyan's `mgw`).

mod common;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use argh::FromArgs;
use mqtt_gateway::{Config, Credentials, Gateway, PayloadFormat, QoS, TlsConfig};

/// The environment variable read for the broker password when
/// `--password-env` is not given.
const DEFAULT_PASSWORD_ENV: &str = "MQTTGW_PASSWORD";

/// Forwards between the Banyan bus and an MQTT broker (python-banyan's mgw).
/// Several values after -g or -j, repeated flags and comma lists all work.
#[derive(FromArgs)]
#[argh(help_triggers("-h", "--help"))]
struct Args {
    /// broker address (default localhost)
    #[argh(option, short = 'a', default = "String::from(\"localhost\")")]
    broker_address: String,
    /// backplane address (default None: this machine, hosting a backplane if
    /// none runs)
    #[argh(option, short = 'b')]
    backplane: Option<String>,
    /// broker port (default 1883)
    #[argh(option, short = 'd', default = "1883")]
    broker_port: u16,
    /// bus topic for messages from MQTT (default from_mqtt)
    #[argh(option, short = 'e', default = "String::from(\"from_mqtt\")")]
    bus_publish_topic: String,
    /// bus topics forwarded to MQTT (prefix match; default to_mqtt)
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
    /// publisher port (default 43124)
    #[argh(option, short = 'p', default = "43124")]
    publisher_port: u16,
    /// subscriber port (default 43125)
    #[argh(option, short = 's', default = "43125")]
    subscriber_port: u16,
    /// accepted for python-banyan compatibility and ignored (default .1)
    #[argh(option, short = 't', default = "0.1")]
    loop_time: f64,
    /// map bus topic T to MQTT topic PREFIX/T both ways (instead of -e and
    /// -i); -j filters are then relative to PREFIX
    #[argh(option)]
    prefix: Option<String>,
    /// mqtt payloads: json (default) or msgpack (bus bytes unchanged)
    #[argh(option, default = "PayloadFormat::Json")]
    format: PayloadFormat,
    /// quality of service for publishing and subscribing: 0 (default), 1
    /// or 2
    #[argh(option, default = "0")]
    qos: u8,
    /// ask the broker to retain what the gateway publishes
    #[argh(switch)]
    retain: bool,
    /// mqtt client id (default mqttgw-PID)
    #[argh(option)]
    client_id: Option<String>,
    /// mqtt keepalive in seconds, 0 for none (default 60)
    #[argh(option, default = "60")]
    keepalive: u16,
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
    /// messages for MQTT held: while the broker is connected the gateway
    /// waits for room, while it is away the oldest is dropped (default 1000)
    #[argh(option, default = "1000")]
    queue: usize,
    /// how long a connected broker may take nothing before the oldest
    /// messages for it are dropped, in milliseconds (default 1000)
    #[argh(option, default = "1000")]
    stall_grace_ms: u64,
    /// longest wait between reconnection attempts, in seconds (default 5)
    #[argh(option, default = "5")]
    reconnect_max: u64,
}

fn config(args: &Args) -> Result<Config, String> {
    let qos = match args.qos {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        2 => QoS::ExactlyOnce,
        other => return Err(format!("--qos takes 0, 1 or 2, not {other}")),
    };
    let password_env = args.password_env.as_deref();
    let credentials = match &args.username {
        Some(username) => {
            let var = password_env.unwrap_or(DEFAULT_PASSWORD_ENV);
            let password = match std::env::var(var) {
                Ok(password) => password,
                Err(_) if password_env.is_none() => String::new(),
                Err(_) => return Err(format!("--password-env: {var} is not set")),
            };
            Some(Credentials {
                username: username.clone(),
                password,
            })
        }
        None if password_env.is_some() => {
            return Err("--password-env needs --username".into());
        }
        None => None,
    };
    let tls = (args.tls || args.ca_file.is_some()).then(|| TlsConfig {
        ca_file: args.ca_file.clone(),
    });
    let mut bus_topics = common::split_list(&args.bus_topics);
    if bus_topics.is_empty() {
        bus_topics.push("to_mqtt".into());
    }
    let mut mqtt_topics = common::split_list(&args.mqtt_topics);
    if mqtt_topics.is_empty() {
        mqtt_topics.push("mqtt_network".into());
    }
    let defaults = Config::default();
    Ok(Config {
        broker_address: args.broker_address.clone(),
        broker_port: args.broker_port,
        bus_topics,
        bus_publish_topic: args.bus_publish_topic.clone(),
        mqtt_publish_topic: args.mqtt_publish_topic.clone(),
        mqtt_topics,
        prefix: args.prefix.clone(),
        format: args.format,
        qos,
        retain: args.retain,
        client_id: args.client_id.clone().unwrap_or(defaults.client_id),
        keep_alive: Duration::from_secs(args.keepalive.into()),
        credentials,
        tls,
        queue_capacity: args.queue,
        stall_grace: Duration::from_millis(args.stall_grace_ms),
        reconnect_max: Duration::from_secs(args.reconnect_max.max(1)),
        ..defaults
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Args = common::parse(&["-g", "-j"]);
    common::init_logging();
    let _ = args.loop_time;
    let config = match config(&args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("mqttgw: {e} (see mqttgw --help)");
            return ExitCode::from(2);
        }
    };
    let gateway = match Gateway::new(config) {
        Ok(gateway) => gateway,
        Err(e) => return common::fail(e),
    };
    let mut bus =
        match common::attach(&args.backplane, args.publisher_port, args.subscriber_port).await {
            Ok(bus) => bus,
            Err(code) => return code,
        };
    if let Err(e) = gateway.subscribe(&bus.client).await {
        bus.close().await;
        return common::fail(e);
    }
    let shutdown = common::shutdown_signal();
    println!("{}", bus.banner(&args.name));
    let outcome = gateway
        .run(bus.client.clone(), &mut bus.messages, shutdown)
        .await;
    bus.close().await;
    match outcome {
        Ok(stats) => {
            tracing::info!(
                to_mqtt = stats.to_mqtt,
                to_bus = stats.to_bus,
                refused_from_bus = stats.refused_from_bus,
                refused_from_mqtt = stats.refused_from_mqtt,
                looped = stats.looped,
                dropped = stats.dropped,
                "stopped"
            );
            ExitCode::SUCCESS
        }
        Err(e) => common::fail(e),
    }
}
