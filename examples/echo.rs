//! A Banyan component in a few lines: echoes every message it receives on
//! one topic to another, payload untouched.
//!
//! ```text
//! cargo run --example echo -- [-b ADDRESS] [-p PORT] [-s PORT] IN_TOPIC OUT_TOPIC [COUNT]
//! ```
//! It prints `READY` once subscribed, and exits after COUNT messages if given.

use banyan_core::{attach, ClientConfig, Message};

const USAGE: &str = "usage: echo [-b ADDRESS] [-p PORT] [-s PORT] IN OUT [COUNT]";

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).collect::<Vec<_>>();
    let mut config = ClientConfig::default();
    let mut backplane = None;
    while args.len() > 1 && args[0].starts_with('-') {
        let value = args.remove(1);
        match args.remove(0).as_str() {
            "-b" => backplane = Some(value),
            "-p" => config.publisher_port = value.parse()?,
            "-s" => config.subscriber_port = value.parse()?,
            other => return Err(format!("unknown flag {other}; {USAGE}").into()),
        }
    }
    let (Some(input), Some(output)) = (args.first().cloned(), args.get(1).cloned()) else {
        return Err(USAGE.into());
    };
    let count: Option<u64> = args.get(2).map(|c| c.parse()).transpose()?;

    let mut bus = attach(backplane.as_deref(), config).await?;
    bus.client.subscribe(&input).await?;
    println!("READY");
    let mut echoed = 0;
    while count.is_none_or(|c| echoed < c) {
        let Some(message) = bus.messages.recv().await else {
            break;
        };
        if message.topic() == input {
            let (_, payload) = message.into_parts();
            bus.client
                .send(Message::from_raw(output.as_str(), payload))
                .await?;
            echoed += 1;
        }
    }
    bus.close().await;
    Ok(())
}
