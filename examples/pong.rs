//! README's component, compiled by `cargo test` as it is printed there
//! (`tests/docs.rs` checks that this file ends with README's block): answers
//! every message on `ping` with its payload on `pong`.
//!
//! ```text
//! cargo run --example pong
//! ```

use banyan_core::{attach, ClientConfig, Message};

#[tokio::main]
async fn main() -> Result<(), banyan_core::Error> {
    // This machine's backplane (hosted in-process if none runs), default ports.
    let mut bus = attach(None, ClientConfig::default()).await?;
    bus.client.subscribe("ping").await?;
    while let Some(ping) = bus.messages.recv().await {
        let (_, payload) = ping.into_parts();
        bus.client.send(Message::from_raw("pong", payload)).await?;
    }
    Ok(())
}
