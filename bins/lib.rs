//! The command-line layer of the Banyan executables (`backplane`,
//! `monitor`, `wsgw`, `tgw`, `mqttgw`): python-banyan's flag habits, the bus
//! flags, logging, signals, exit codes and the one skeleton every component
//! runs ([`cli::serve`]). Each executable is a flags struct and one call.

pub mod cli;
pub mod component;
pub mod log;
