//! Smoke run of every `banyan-bench` scenario with a tiny load, so the bench
//! keeps working. Timings are never asserted: only that each case reports
//! its fields, and loses nothing and keeps order at this load (every queue
//! on the way holds more than the whole run). A five-second soak checks the
//! soak's report and that it loses nothing outside documented causes.

use std::process::Command;

use serde_json::Value;

use crate::mqtt::broker::mosquitto_exe;
use crate::util::*;

const MESSAGES: u64 = 200;

/// Runs `banyan-bench` with `args` (and the mosquitto it needs) within
/// `deadline`; it must succeed. Its stdout and stderr.
async fn run_bench(what: &str, args: &[&str], deadline: std::time::Duration) -> (String, String) {
    let mut command = Command::new(exe("banyan-bench"));
    command.args(args).arg("--mosquitto").arg(mosquitto_exe());
    let output = tokio::time::timeout(
        deadline,
        tokio::task::spawn_blocking(move || command.output()),
    )
    .await
    .unwrap_or_else(|_| panic!("banyan-bench {what} did not end within {deadline:?}"))
    .expect("join")
    .expect("banyan-bench runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "banyan-bench {what} failed: {stderr}\n{stdout}"
    );
    (stdout, stderr)
}

/// The JSON objects `banyan-bench --json` printed, one per line.
fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_scenario_reports_without_loss() {
    let messages = MESSAGES.to_string();
    let (stdout, _) = run_bench(
        "run",
        &[
            "run",
            "--json",
            "--runs",
            "1",
            "--warmup",
            "0",
            "-n",
            &messages,
            "--round-trips",
            "50",
            "--ws-clients",
            "3",
            "--idle-ms",
            "1000",
        ],
        DEADLINE,
    )
    .await;
    let records = json_lines(&stdout);
    let find = |scenario: &str, case: &str| {
        records
            .iter()
            .find(|r| r["scenario"] == scenario && r["case"] == case)
            .unwrap_or_else(|| panic!("no result for {scenario} {case} in:\n{stdout}"))
    };
    let throughput = [
        ("bus", "1 pub -> 1 sub", &["backplane"][..]),
        ("raw", "1 pub -> 1 sub", &["raw proxy"][..]),
        ("ws", "page -> bus", &["backplane", "wsgw"][..]),
        ("ws", "bus -> page", &["backplane", "wsgw"][..]),
        ("ws", "bus -> 3 pages", &["backplane", "wsgw"][..]),
        ("tcp", "device -> bus", &["backplane", "tgw"][..]),
        ("tcp", "bus -> device", &["backplane", "tgw"][..]),
        ("mqtt", "mqtt -> mqtt", &["mosquitto"][..]),
        (
            "mqtt",
            "mqtt -> bus",
            &["backplane", "mqttgw", "mosquitto"][..],
        ),
        (
            "mqtt",
            "bus -> mqtt",
            &["backplane", "mqttgw", "mosquitto"][..],
        ),
    ];
    for (scenario, case, processes) in throughput {
        let record = find(scenario, case);
        let what = format!("{scenario} {case}: {record}");
        assert!(
            record["msgs_per_s"].as_f64().is_some_and(|r| r > 0.0),
            "{what}"
        );
        assert_eq!(record["lost"], 0, "{what}");
        assert_eq!(record["out_of_order"], 0, "{what}");
        assert_eq!(record["runs"], 1, "{what}");
        for process in processes {
            let memory = record["memory"]
                .as_array()
                .and_then(|m| m.iter().find(|m| m["process"] == *process))
                .unwrap_or_else(|| panic!("no memory of {process}: {what}"));
            assert!(memory["idle_kib"].as_u64().is_some_and(|k| k > 0), "{what}");
            assert!(memory["peak_kib"].as_u64().is_some_and(|k| k > 0), "{what}");
        }
    }
    assert_eq!(find("ws", "bus -> 3 pages")["min_per_client"], MESSAGES);
    for system in ["banyan", "raw zmq"] {
        let record = records
            .iter()
            .find(|r| r["scenario"] == "latency" && r["system"] == system)
            .unwrap_or_else(|| panic!("no latency result for {system}:\n{stdout}"));
        for key in ["p50", "p90", "p99", "p999", "max"] {
            assert!(
                record["latency_us"][key].as_f64().is_some_and(|v| v > 0.0),
                "latency {system} {key}: {record}"
            );
        }
    }

    // The chart is drawn from the same lines.
    let dir = std::env::temp_dir().join(format!("banyan-bench-test-{}", free_port()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join("results.jsonl"), stdout.as_bytes()).expect("results written");
    let status = Command::new(exe("banyan-bench"))
        .args(["chart", "--input"])
        .arg(dir.join("results.jsonl"))
        .arg("--output")
        .arg(dir.join("chart.svg"))
        .status()
        .expect("banyan-bench chart runs");
    assert!(status.success());
    let svg = std::fs::read_to_string(dir.join("chart.svg")).expect("chart written");
    assert_eq!(svg.matches("<rect x=\"340\"").count(), throughput.len());
    let _ = std::fs::remove_dir_all(&dir);
}

/// How long the smoke soak may take: 5 s of traffic, start-up, the settling
/// after its backplane restart, the drain and the stops, on a debug build.
const SOAK_DEADLINE: std::time::Duration = std::time::Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread")]
async fn a_short_soak_survives_a_backplane_restart_and_explains_every_loss() {
    let (stdout, stderr) = run_bench(
        "soak",
        &["soak", "--seconds", "5", "--rate", "200", "--json"],
        SOAK_DEADLINE,
    )
    .await;
    let lines = json_lines(&stdout);
    let of = |kind: &str| -> Vec<&Value> { lines.iter().filter(|l| l["soak"] == kind).collect() };
    let summary = of("summary");
    let summary = summary
        .first()
        .unwrap_or_else(|| panic!("no summary in:\n{stdout}"));
    assert_eq!(summary["survived"], true, "{summary}\n{stderr}");
    assert_eq!(summary["unexplained"], 0, "{stdout}\n{stderr}");
    assert_eq!(
        summary["troubles"]["backplane restart"],
        serde_json::json!([1, 1]),
        "{summary}"
    );

    let paths = of("path");
    let names: Vec<&str> = paths.iter().filter_map(|p| p["path"].as_str()).collect();
    for name in [
        "bus -> page",
        "bus -> stalling page",
        "page -> bus",
        "bus -> device",
        "device -> bus",
        "bus -> mqtt",
        "mqtt -> bus",
    ] {
        assert!(names.contains(&name), "no path {name} in {names:?}");
    }
    for path in paths {
        let n = |key: &str| {
            path[key]
                .as_u64()
                .unwrap_or_else(|| panic!("no {key}: {path}"))
        };
        assert!(n("sent") > 0 && n("received") > 0, "{path}");
        assert_eq!(n("unexplained"), 0, "{path}\n{stderr}");
        assert_eq!((n("duplicates"), n("out_of_order")), (0, 0), "{path}");
        // Every loss has a cause, and the causes add up.
        assert_eq!(
            n("lost"),
            n("outage_down") + n("outage_resume") + n("broker") + n("dropped") + n("unexplained"),
            "{path}"
        );
        assert_eq!(n("sent") - n("received"), n("lost"), "{path}");
    }

    let processes = of("process");
    for name in ["backplane", "wsgw", "tgw", "mqttgw", "mosquitto"] {
        let process = processes
            .iter()
            .find(|p| p["process"] == name)
            .unwrap_or_else(|| panic!("no memory of {name}:\n{stdout}"));
        assert_eq!(process["alive"], true, "{process}");
        assert!(
            process["peak_kib"].as_u64().is_some_and(|k| k > 0),
            "{process}"
        );
    }
    let backplane = processes.iter().find(|p| p["process"] == "backplane");
    assert_eq!(backplane.map(|p| &p["instances"]), Some(&Value::from(2)));
    let counts = of("counts");
    for name in ["wsgw", "tgw", "mqttgw"] {
        let gateway = counts
            .iter()
            .find(|c| c["process"] == name)
            .unwrap_or_else(|| panic!("no counts of {name}:\n{stdout}"));
        assert!(gateway["counts"]["dropped_stalled"].is_u64(), "{gateway}");
    }
}
