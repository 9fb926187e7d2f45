//! `mqttgw`.
fn main() {}
