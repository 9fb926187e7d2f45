//! The SVG bar chart of `docs/benchmarks.md`: throughput per case, ours
//! next to the baselines (raw ZeroMQ, mosquitto, python-banyan). Written by
//! hand: it is a few rectangles and labels.

use crate::report::Record;

const WIDTH: f64 = 900.0;
const LABEL: f64 = 340.0;
const BAR: f64 = 20.0;
const GAP: f64 = 8.0;
const TOP: f64 = 40.0;

fn colour(system: &str) -> &'static str {
    match system {
        "banyan" => "#2b7bb9",
        "raw zmq" => "#9a9a9a",
        "mosquitto" => "#c9a227",
        _ => "#d1495b",
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Renders the throughput of `records` (latency records are left out) as a
/// horizontal bar chart.
pub fn svg(records: &[Record], title: &str) -> String {
    let bars: Vec<(&Record, f64)> = records
        .iter()
        .filter_map(|r| Some((r, r.msgs_per_s?)))
        .collect();
    let max = bars.iter().map(|(_, v)| *v).fold(1.0, f64::max);
    let height = TOP + bars.len() as f64 * (BAR + GAP) + 50.0;
    let plot = WIDTH - LABEL - 110.0;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" \
         viewBox=\"0 0 {WIDTH} {height}\" font-family=\"sans-serif\" font-size=\"13\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"24\" font-size=\"16\" font-weight=\"bold\">{}</text>\n",
        escape(title)
    );
    for (i, (record, value)) in bars.iter().enumerate() {
        let y = TOP + i as f64 * (BAR + GAP);
        let width = (value / max * plot).max(1.0);
        let lost = if record.lost > 0 {
            format!(", {} lost", record.lost)
        } else {
            String::new()
        };
        out.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{} {}, {} msgs ({})</text>\n\
             <rect x=\"{LABEL}\" y=\"{y}\" width=\"{width:.1}\" height=\"{BAR}\" fill=\"{}\"/>\n\
             <text x=\"{:.1}\" y=\"{}\">{}{}</text>\n",
            LABEL - 8.0,
            y + BAR * 0.75,
            escape(&record.scenario),
            escape(&record.case),
            thousands(record.messages as f64),
            escape(&record.system),
            colour(&record.system),
            LABEL + width + 6.0,
            y + BAR * 0.75,
            thousands(*value),
            escape(&lost),
        ));
    }
    let y = height - 20.0;
    let mut x = 10.0;
    for system in ["banyan", "raw zmq", "mosquitto", "python-banyan"] {
        out.push_str(&format!(
            "<rect x=\"{x}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{}\"/>\
             <text x=\"{}\" y=\"{y}\">{system}</text>\n",
            y - 11.0,
            colour(system),
            x + 16.0
        ));
        x += 150.0;
    }
    out.push_str(&format!(
        "<text x=\"{}\" y=\"{y}\" text-anchor=\"end\">messages per second</text>\n</svg>\n",
        WIDTH - 10.0
    ));
    out
}

/// `1234567.8` as `1,234,568`.
fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Sample;

    #[test]
    fn one_bar_per_throughput_record() {
        let sample = Sample {
            rate: 1_234_567.0,
            ..Sample::default()
        };
        let records = vec![
            Record::from_samples(
                "bus",
                "1 pub -> 1 sub",
                "banyan",
                1,
                0,
                std::slice::from_ref(&sample),
            ),
            Record::from_samples("raw", "1 pub -> 1 sub", "raw zmq", 1, 0, &[sample]),
        ];
        let svg = svg(&records, "a <title>");
        assert_eq!(svg.matches("<rect x=\"340\"").count(), 2);
        assert!(svg.contains("1,234,567"));
        assert!(svg.contains("a &lt;title&gt;"));
        assert!(svg.contains("1 pub -&gt; 1 sub"));
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(1_000_000.4), "1,000,000");
    }
}
