//! A Banyan component in a few lines: echoes every message it receives on
//! one topic to another, payload untouched.
//!
//! ```text
//! cargo run --example echo -- [-b ADDRESS] [-p PORT] [-s PORT] IN_TOPIC OUT_TOPIC
//! ```
//! It prints `READY` once subscribed.

use banyan_core::{attach, ClientConfig, Message};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).collect::<Vec<_>>();
    let mut config = ClientConfig::default();
    let mut backplane = None;
    while args.len() > 2 {
        let value = args.remove(1);
        match args.remove(0).as_str() {
            "-b" => backplane = Some(value),
            "-p" => config.publisher_port = value.parse()?,
            "-s" => config.subscriber_port = value.parse()?,
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    let [input, output] = <[String; 2]>::try_from(args)
        .map_err(|_| "usage: echo [-b ADDRESS] [-p PORT] [-s PORT] IN OUT")?;

    let mut bus = attach(backplane.as_deref(), config).await?;
    bus.client.subscribe(&input).await?;
    println!("READY");
    while let Some(message) = bus.messages.recv().await {
        if message.topic() == input {
            let (_, payload) = message.into_parts();
            bus.client
                .send(Message::from_raw(output.as_str(), payload))
                .await?;
        }
    }
    Ok(())
}
