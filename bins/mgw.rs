//! `mgw`: python-banyan's name for its MQTT gateway. Launch files and
//! scripts written for python call `mgw`; this is `mqttgw` under that name
//! (the same flags, defaults, banner and help).

use std::process::ExitCode;

#[path = "mqttgw.rs"]
mod mqttgw;

fn main() -> ExitCode {
    mqttgw::main()
}
