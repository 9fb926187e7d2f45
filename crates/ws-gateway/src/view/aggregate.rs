//! What the bus view shows, aggregated: per topic its count, rate, time and
//! payload of its last message, and a sample of the recent messages. Pure
//! bookkeeping (the caller passes the time), so the view's numbers are unit
//! tested.
//!
//! Observing a message costs a hash lookup and two reference counts (the
//! topic and the payload are shared with the message, never copied), so the
//! view keeps up with the bus at full speed; the JSON a view is sent is made
//! only at each snapshot, a few times a second, and a topic's payload is
//! converted again only when it changed.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use banyan_core::monitor::{format_message, MonitorConfig, MonitorFormat};
use banyan_core::Message;
use serde_json::{json, Value as Json};

/// Recent messages kept for the stream (the newest win).
pub(crate) const RECENT: usize = 200;
/// Recent messages sent per snapshot at most; the rest are counted as
/// skipped.
pub(crate) const RECENT_PER_SNAPSHOT: usize = 50;
/// Topics shown at most (the busiest first when there are more).
pub(crate) const MAX_TOPICS: usize = 500;

#[derive(Debug)]
struct Topic {
    count: u64,
    /// The count at the previous snapshot, for the rate.
    count_then: u64,
    /// Messages per second, smoothed over snapshots.
    rate: f64,
    last_ms: u64,
    last: Message,
    /// The last payload as the view shows it; `None` when it changed since.
    shown: Option<Json>,
}

/// The view's running totals.
#[derive(Debug, Default)]
pub(crate) struct Aggregate {
    topics: HashMap<Arc<str>, Topic>,
    recent: VecDeque<(u64, Message)>,
    /// Observed since the previous snapshot (some may have left `recent`).
    unsent: u64,
    snapshot_ms: Option<u64>,
    total: u64,
}

impl Aggregate {
    /// Counts one bus message seen at `now_ms` (milliseconds since the
    /// epoch).
    pub(crate) fn observe(&mut self, message: Message, now_ms: u64) {
        self.total += 1;
        self.unsent += 1;
        match self.topics.get_mut(message.topic()) {
            Some(topic) => {
                topic.count += 1;
                topic.last_ms = now_ms;
                topic.last = message.clone();
                topic.shown = None;
            }
            None => {
                let (name, _) = message.clone().into_parts();
                self.topics.insert(
                    name,
                    Topic {
                        count: 1,
                        count_then: 0,
                        rate: 0.0,
                        last_ms: now_ms,
                        last: message.clone(),
                        shown: None,
                    },
                );
            }
        }
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back((now_ms, message));
    }

    /// The view's state now, as the JSON sent to views: `{"t": ms,
    /// "total": n, "topics": [...], "recent": [...], "skipped": n}`; the
    /// recent messages are those since the previous snapshot.
    pub(crate) fn snapshot(&mut self, now_ms: u64) -> Json {
        let elapsed_s = self
            .snapshot_ms
            .map(|then| now_ms.saturating_sub(then) as f64 / 1000.0);
        self.snapshot_ms = Some(now_ms);
        let mut topics: Vec<(&Arc<str>, &mut Topic)> = self.topics.iter_mut().collect();
        if topics.len() > MAX_TOPICS {
            topics.sort_by_key(|(_, topic)| std::cmp::Reverse(topic.count));
            topics.truncate(MAX_TOPICS);
        }
        let topics: Vec<Json> = topics
            .into_iter()
            .map(|(name, topic)| {
                if let Some(dt) = elapsed_s.filter(|dt| *dt > 0.0) {
                    let instant = (topic.count - topic.count_then) as f64 / dt;
                    // Smoothed, so that a bursty topic reads steadily.
                    topic.rate = 0.5 * topic.rate + 0.5 * instant;
                }
                topic.count_then = topic.count;
                let payload = topic
                    .shown
                    .get_or_insert_with(|| payload_json(&topic.last))
                    .clone();
                json!({
                    "topic": &**name,
                    "count": topic.count,
                    "rate": (topic.rate * 10.0).round() / 10.0,
                    "last": topic.last_ms,
                    "payload": payload,
                })
            })
            .collect();
        let fresh = usize::try_from(self.unsent)
            .unwrap_or(usize::MAX)
            .min(self.recent.len());
        let sent = fresh.min(RECENT_PER_SNAPSHOT);
        let recent: Vec<Json> = self
            .recent
            .iter()
            .skip(self.recent.len() - sent)
            .map(|(at, message)| {
                json!({
                    "topic": message.topic(),
                    "at": at,
                    "text": payload_text(message),
                })
            })
            .collect();
        let skipped = self.unsent - sent as u64;
        self.unsent = 0;
        json!({
            "t": now_ms,
            "total": self.total,
            "topics": topics,
            "recent": recent,
            "skipped": skipped,
        })
    }
}

/// A payload for the view: `json` (for the plot: the value by the core's
/// JSON rules, or null when it has none) and `text` (as `monitor --format
/// json` shows it, msgpack-numpy arrays readable).
fn payload_json(message: &Message) -> Json {
    let json = message
        .value()
        .ok()
        .and_then(|value| banyan_core::json::to_json_strict(&value).ok())
        .and_then(|text| serde_json::from_str::<Json>(&text).ok())
        .unwrap_or(Json::Null);
    json!({"json": json, "text": payload_text(message)})
}

fn payload_text(message: &Message) -> String {
    let config = MonitorConfig {
        numpy: true,
        format: MonitorFormat::Json,
    };
    // The monitor's line is `topic payload`: the view shows the topic apart.
    let line = format_message(message, &config);
    line.strip_prefix(message.topic())
        .map(|rest| rest.trim_start().to_owned())
        .unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use banyan_core::rmpv::Value;

    use super::*;

    fn report(value: i64) -> Message {
        let value = banyan_core::json::from_json(&format!(
            r#"{{"report": "analog_input", "pin": 2, "value": {value}}}"#
        ))
        .expect("json");
        Message::new("from_arduino_gateway", &value)
    }

    fn topic<'a>(snapshot: &'a Json, name: &str) -> &'a Json {
        snapshot["topics"]
            .as_array()
            .and_then(|topics| topics.iter().find(|t| t["topic"] == name))
            .unwrap_or_else(|| panic!("no {name} in {snapshot}"))
    }

    #[test]
    fn counts_rates_and_last_payloads_per_topic() {
        let mut view = Aggregate::default();
        view.snapshot(0);
        for n in 0..10 {
            view.observe(report(n), 100 + n as u64);
        }
        view.observe(Message::new("other", &Value::Binary(vec![1, 2])), 150);
        let snapshot = view.snapshot(1000);
        let arduino = topic(&snapshot, "from_arduino_gateway");
        assert_eq!(arduino["count"], 10);
        assert_eq!(arduino["last"], 109);
        assert_eq!(arduino["rate"], 5.0, "10 in 1 s, smoothed from 0");
        assert_eq!(arduino["payload"]["json"]["value"], 9);
        assert_eq!(
            topic(&snapshot, "other")["payload"]["json"],
            json!({"$bin": "AQI="})
        );
        assert_eq!(snapshot["total"], 11);
        assert_eq!(snapshot["recent"].as_array().map(Vec::len), Some(11));
        assert_eq!(snapshot["skipped"], 0);
        // Nothing new: the same topics, no recent messages, the rate decays.
        let quiet = view.snapshot(2000);
        assert_eq!(topic(&quiet, "from_arduino_gateway")["rate"], 2.5);
        assert_eq!(quiet["recent"].as_array().map(Vec::len), Some(0));
    }

    #[test]
    fn the_stream_is_sampled_newest_first_kept() {
        let mut view = Aggregate::default();
        for n in 0..1000 {
            view.observe(report(n), 22_000);
        }
        let busy = view.snapshot(23_000);
        let recent = busy["recent"].as_array().expect("recent");
        assert_eq!(recent.len(), RECENT_PER_SNAPSHOT);
        assert_eq!(busy["skipped"], 1000 - RECENT_PER_SNAPSHOT as u64);
        let last = &recent[RECENT_PER_SNAPSHOT - 1]["text"];
        assert!(
            last.as_str().is_some_and(|t| t.contains("999")),
            "the newest are kept: {last}"
        );
    }

    #[test]
    fn payloads_without_json_are_shown_not_plotted() {
        let mut view = Aggregate::default();
        view.observe(Message::from_raw("bad", vec![0xc1]), 5);
        view.observe(Message::new("nan", &Value::F64(f64::NAN)), 5);
        let snapshot = view.snapshot(10);
        let bad = &topic(&snapshot, "bad")["payload"];
        assert_eq!(bad["json"], Json::Null);
        assert!(
            bad["text"].as_str().is_some_and(|t| t.contains("c1")),
            "{bad}"
        );
        assert_eq!(topic(&snapshot, "nan")["payload"]["json"], Json::Null);
    }
}
