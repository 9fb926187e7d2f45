//! End-to-end tests: the real executables against real peers.

mod util;

// The benchmark executable is behind the `bench` feature (`cargo install`
// leaves it out); scripts/test enables every feature, so this always runs
// there.
#[cfg(feature = "bench")]
mod bench;
mod bus;
mod docs;
mod kit;
mod metrics;
mod mqtt;
mod s3extend;
mod tcp;
mod view;
mod ws;
