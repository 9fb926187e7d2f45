//! `banyan-bench`: how fast the Banyan bus and its gateways are on this
//! machine, next to what bare ZeroMQ, mosquitto and python-banyan do here.
//!
//! The orchestrator ([`scenarios::run`]) starts the real `backplane` and
//! gateway executables found beside its own, and runs itself again for each
//! worker role ([`worker::run`]: publishers, subscribers, a bare ZeroMQ
//! proxy, WebSocket pages, a TCP device, MQTT clients), so every part is a
//! process of its own. Workers report in JSON lines; the orchestrator turns
//! them into [`report::Record`]s (medians over runs), a table, JSON lines and
//! an SVG chart ([`chart::svg`]). [`soak::run`] keeps every gateway under
//! steady traffic for minutes while peers misbehave, and accounts for every
//! message. See `docs/benchmarks.md`.
//!
//! ```
//! use banyan_bench::report::{median, table, Record, Sample};
//!
//! let runs = [1.0e6, 1.2e6, 0.9e6].map(|rate| Sample { rate, ..Sample::default() });
//! let record = Record::from_samples("bus", "1 pub -> 1 sub", "banyan", 100_000, 0, &runs);
//! assert_eq!(record.msgs_per_s, Some(median(&[1.0e6, 1.2e6, 0.9e6])));
//! assert!(table(&[record.clone()]).contains("1000000"));
//! assert!(banyan_bench::chart::svg(&[record], "bus").starts_with("<svg"));
//! ```

// The README's example is compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExample;

pub mod chart;
pub mod codec;
mod error;
mod peers;
pub mod procs;
mod protocol;
pub mod report;
pub mod scenarios;
pub mod soak;
mod soak_peers;
pub mod worker;

pub use error::{Error, Result};
pub use scenarios::{Config, Scenario};

/// Reads JSON-line records (as printed by `--json`), ignoring lines that are
/// not records.
pub fn read_records(text: &str) -> Vec<report::Record> {
    text.lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}
