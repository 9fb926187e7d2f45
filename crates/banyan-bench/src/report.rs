//! Results: one [`Record`] per case (medians over its runs), printed as a
//! table or as JSON lines.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::procs::Memory;

/// One run of one case.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    /// Messages per second delivered (0 for latency cases).
    pub rate: f64,
    /// Messages expected but not received.
    pub lost: u64,
    /// Messages received after a later one of the same stream.
    pub out_of_order: u64,
    /// The fewest messages a page received (many-pages case).
    pub min_per_client: Option<u64>,
    /// Round-trip percentiles (latency cases).
    pub latency: Option<Value>,
    /// Memory of the processes under test: name, after start-up, at the end.
    pub memory: Vec<(String, Memory, Memory)>,
    /// Resident memory the gateway gained per idle page, in KiB (idle-pages
    /// case).
    pub kib_per_page: Option<f64>,
    /// What a bus view open during the run saw (view cases).
    pub view: Option<ViewSeen>,
}

/// What a bus view (`wsgw`'s `/view`) open during a run saw: whether it
/// stayed responsive, and whether it counted the whole bus.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ViewSeen {
    /// Snapshots the view received while the run's messages flowed.
    pub snapshots: u64,
    /// The longest wait for a snapshot while they flowed, in ms (one is
    /// due every 250 ms).
    pub longest_gap_ms: f64,
    /// Messages the view counted in all (the total of its last snapshot).
    pub counted: u64,
    /// Messages published during the run: what a view that keeps up counts.
    pub published: u64,
}

impl Sample {
    pub(crate) fn latency(result: Value, memory: Vec<(String, Memory, Memory)>) -> Sample {
        Sample {
            latency: Some(result),
            memory,
            ..Sample::default()
        }
    }
}

/// Memory of one process under test.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ProcessMemory {
    /// The process (`backplane`, `wsgw`, ...).
    pub process: String,
    /// Resident set after start-up, before load, in KiB (largest of the runs).
    pub idle_kib: u64,
    /// Peak resident set (VmHWM) at the end of the case, in KiB (largest of
    /// the runs).
    pub peak_kib: u64,
}

/// The figures of one case.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Record {
    /// `bus`, `raw`, `latency`, `ws`, `tcp`, `mqtt`, or `python`.
    pub scenario: String,
    /// What crosses what, e.g. `bus -> page`.
    pub case: String,
    /// What carries it: `banyan`, `raw zmq`, `mosquitto`, `python-banyan`.
    pub system: String,
    /// Messages per publisher or direction (round trips for latency).
    pub messages: u64,
    /// Payload size option (0: `{'msg': i}` alone).
    pub payload: usize,
    /// Measured runs.
    pub runs: usize,
    /// Median messages per second delivered (none for latency).
    pub msgs_per_s: Option<f64>,
    /// Messages per second of each run.
    pub samples: Vec<f64>,
    /// Most messages lost in a run.
    pub lost: u64,
    /// Most order violations in a run.
    pub out_of_order: u64,
    /// Fewest messages one page received in a run (many pages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_per_client: Option<u64>,
    /// Median of each round-trip percentile over the runs, in µs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_us: Option<Latency>,
    /// Memory of the processes under test.
    pub memory: Vec<ProcessMemory>,
    /// Median over the runs of the resident memory the gateway gained per
    /// idle page, in KiB (idle-pages case).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kib_per_page: Option<f64>,
    /// What the bus view saw (view cases): the fewest snapshots and the
    /// fewest messages counted in a run, the longest gap of any run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub view: Option<ViewSeen>,
}

/// Round-trip percentiles in microseconds.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Slowest.
    pub max: f64,
}

/// The median (mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

impl Record {
    /// Combines the runs of a case.
    pub fn from_samples(
        scenario: &str,
        case: &str,
        system: &str,
        messages: u64,
        payload: usize,
        samples: &[Sample],
    ) -> Record {
        let is_latency = samples.iter().any(|s| s.latency.is_some());
        let per_page: Vec<f64> = samples.iter().filter_map(|s| s.kib_per_page).collect();
        let is_memory = !per_page.is_empty();
        let rates: Vec<f64> = samples.iter().map(|s| s.rate).collect();
        let percentile = |key: &str| {
            let values: Vec<f64> = samples
                .iter()
                .filter_map(|s| s.latency.as_ref()?[key].as_f64())
                .collect();
            median(&values)
        };
        let mut memory: Vec<ProcessMemory> = Vec::new();
        for (process, idle, end) in samples.iter().flat_map(|s| s.memory.iter()) {
            match memory.iter_mut().find(|m| &m.process == process) {
                Some(m) => {
                    m.idle_kib = m.idle_kib.max(idle.rss_kib);
                    m.peak_kib = m.peak_kib.max(end.peak_kib);
                }
                None => memory.push(ProcessMemory {
                    process: process.clone(),
                    idle_kib: idle.rss_kib,
                    peak_kib: end.peak_kib,
                }),
            }
        }
        Record {
            scenario: scenario.to_owned(),
            case: case.to_owned(),
            system: system.to_owned(),
            messages,
            payload,
            runs: samples.len(),
            msgs_per_s: (!is_latency && !is_memory).then(|| median(&rates)),
            samples: if is_latency || is_memory {
                Vec::new()
            } else {
                rates
            },
            lost: samples.iter().map(|s| s.lost).max().unwrap_or(0),
            out_of_order: samples.iter().map(|s| s.out_of_order).max().unwrap_or(0),
            min_per_client: samples.iter().filter_map(|s| s.min_per_client).min(),
            latency_us: is_latency.then(|| Latency {
                p50: percentile("p50_us"),
                p90: percentile("p90_us"),
                p99: percentile("p99_us"),
                p999: percentile("p999_us"),
                max: percentile("max_us"),
            }),
            memory,
            kib_per_page: is_memory.then(|| median(&per_page)),
            view: samples
                .iter()
                .filter_map(|s| s.view)
                .reduce(|worst, run| ViewSeen {
                    snapshots: worst.snapshots.min(run.snapshots),
                    longest_gap_ms: worst.longest_gap_ms.max(run.longest_gap_ms),
                    counted: worst.counted.min(run.counted),
                    published: worst.published.max(run.published),
                }),
        }
    }

    /// The record as one JSON line.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// The human table of `records`, with the ratios that compare a case with
/// its baseline measured in the same invocation.
pub fn table(records: &[Record]) -> String {
    let mut out = format!(
        "{:<8} {:<18} {:<10} {:>12} {:>8} {:>6}  {}\n",
        "scenario", "case", "system", "msg/s", "lost", "order", "memory, MiB idle/peak"
    );
    for r in records {
        let figure = match (&r.msgs_per_s, &r.latency_us, &r.kib_per_page) {
            (Some(rate), _, _) => format!("{rate:.0}"),
            (None, Some(l), _) => format!("p50 {:.0} µs", l.p50),
            (None, None, Some(kib)) => format!("{kib:.1} KiB/page"),
            _ => String::new(),
        };
        let memory: Vec<String> = r
            .memory
            .iter()
            .map(|m| format!("{} {}/{}", m.process, mib(m.idle_kib), mib(m.peak_kib)))
            .collect();
        out.push_str(&format!(
            "{:<8} {:<18} {:<10} {:>12} {:>8} {:>6}  {}\n",
            r.scenario,
            r.case,
            r.system,
            figure,
            r.lost,
            r.out_of_order,
            memory.join(", ")
        ));
        if let Some(min) = r.min_per_client {
            out.push_str(&format!("{:<39} fewest to one page: {min}\n", ""));
        }
        if let Some(view) = &r.view {
            out.push_str(&format!(
                "{:<39} view: {} snapshots during the run, longest gap {:.0} ms, counted {} of {}\n",
                "", view.snapshots, view.longest_gap_ms, view.counted, view.published
            ));
        }
        if let Some(l) = &r.latency_us {
            out.push_str(&format!(
                "{:<39} µs: p50 {:.0}  p90 {:.0}  p99 {:.0}  p99.9 {:.0}  max {:.0}\n",
                "", l.p50, l.p90, l.p99, l.p999, l.max
            ));
        }
    }
    let find = |scenario: &str, case: &str, system: &str| {
        records
            .iter()
            .find(|r| r.scenario == scenario && r.case.contains(case) && r.system == system)
    };
    let rate = |r: Option<&Record>| r.and_then(|r| r.msgs_per_s);
    let mut ratios = Vec::new();
    if let (Some(bus), Some(raw)) = (
        rate(find("bus", "", "banyan")),
        rate(find("raw", "", "raw zmq")),
    ) {
        ratios.push(format!("bus / raw: {:.0}%", 100.0 * bus / raw));
    }
    let p50 = |system| {
        find("latency", "", system)
            .and_then(|r| r.latency_us)
            .map(|l| l.p50)
    };
    if let (Some(bus), Some(raw)) = (p50("banyan"), p50("raw zmq")) {
        ratios.push(format!("latency p50 bus / raw: {:.2}x", bus / raw));
    }
    if let (Some(open), Some(none)) = (
        rate(find("view", "view open", "banyan")),
        rate(find("view", "no view", "banyan")),
    ) {
        ratios.push(format!(
            "bus with a view open / without: {:.0}%",
            100.0 * open / none
        ));
    }
    if let Some(alone) = rate(find("mqtt", "mqtt -> mqtt", "mosquitto")) {
        for case in ["mqtt -> bus", "bus -> mqtt"] {
            if let Some(gw) = rate(find("mqtt", case, "banyan")) {
                ratios.push(format!(
                    "{case} / mosquitto alone: {:.0}%",
                    100.0 * gw / alone
                ));
            }
        }
    }
    for ratio in ratios {
        out.push_str(&ratio);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn records_take_medians_and_worst_cases() {
        let sample = |rate, lost| Sample {
            rate,
            lost,
            ..Sample::default()
        };
        let record = Record::from_samples(
            "bus",
            "1 pub -> 1 sub",
            "banyan",
            10,
            0,
            &[sample(3.0, 0), sample(1.0, 2), sample(2.0, 0)],
        );
        assert_eq!(record.msgs_per_s, Some(2.0));
        assert_eq!(record.lost, 2);
        let back: Record = serde_json::from_str(&record.to_json()).expect("parses");
        assert_eq!(back, record);
        assert!(table(&[record]).contains("1 pub -> 1 sub"));
    }
}
