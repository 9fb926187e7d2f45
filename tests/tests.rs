//! End-to-end tests: the real executables against real peers.

mod util;

mod bench;
mod bus;
mod kit;
mod mqtt;
mod s3extend;
mod tcp;
mod ws;
