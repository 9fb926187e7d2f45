//! Topic mapping between the bus and MQTT: pure code, no I/O.
//!
//! Which bus messages go to MQTT ([`TopicMatch`]): the bus subscription
//! beneath the gateway is a ZeroMQ prefix (`-g to_mqtt` also delivers
//! `to_mqtt_other`), but python's `mgw` forwards a bus message only when its
//! topic *equals* `to_mqtt`. So by default ([`TopicMatch::Exact`]) a bus
//! message is forwarded only when its topic is one of the `-g` topics;
//! [`TopicMatch::Prefix`] (`--match prefix`) forwards every topic that starts
//! with one. See `docs/topics.md` for the rule of every gateway.
//!
//! Two mappings:
//! * **fixed** (python's `mgw`): every forwarded bus message goes to the one
//!   MQTT topic `-i`; every MQTT message on a `-j` filter goes to the one bus
//!   topic `-e`.
//! * **prefix** (`--prefix P`): bus topic `T` is MQTT topic `P/T`, both ways,
//!   so several bus topics stay distinct on MQTT. The `-j` filters are then
//!   relative to the prefix (`-j '#'` subscribes `P/#`).
//!
//! MQTT 3.1.1 has no "no local" subscription option, so a broker sends the
//! gateway its own publications back when a `-j` filter matches them. An MQTT
//! topic that maps to a bus topic the gateway forwards to MQTT is therefore
//! refused ([`Error::WouldLoop`]) rather than published on the bus.
//!
//! Every MQTT topic the gateway publishes on is checked before it reaches the
//! MQTT client ([`publishable`]): a topic the broker would answer by closing
//! the connection (a NUL, a control character, more than 65,535 bytes) is
//! refused for that one message instead.

use rumqttc::valid_filter;

use crate::error::{Error, Result};
pub use banyan_gateway::topics::{TopicMatch, UnknownTopicMatch};

/// The longest MQTT topic or filter: its length is a 16-bit number on the
/// wire (rumqttc would silently cut a longer one's length, corrupting the
/// packet).
pub const MAX_TOPIC_LEN: usize = u16::MAX as usize;

/// Whether MQTT lets a client publish on `topic`: not empty, at most
/// [`MAX_TOPIC_LEN`] bytes, no wildcard, and none of the characters MQTT
/// 3.1.1 forbids (NUL) or lets a broker close the connection for (the
/// control characters U+0001..U+001F and U+007F..U+009F, and the
/// noncharacters; mosquitto does close it).
pub fn publishable(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= MAX_TOPIC_LEN
        && !topic.contains(['+', '#'])
        && topic.chars().all(allowed_char)
}

/// Whether `filter` is a topic filter MQTT accepts in a subscription.
fn subscribable(filter: &str) -> bool {
    filter.len() <= MAX_TOPIC_LEN && valid_filter(filter) && filter.chars().all(allowed_char)
}

/// A character a broker accepts in a topic (MQTT 3.1.1, 1.5.3).
fn allowed_char(c: char) -> bool {
    let code = u32::from(c);
    let control = code <= 0x1f || (0x7f..=0x9f).contains(&code);
    let nonchar = (0xfdd0..=0xfdef).contains(&code) || (code & 0xfffe) == 0xfffe;
    !control && !nonchar
}

/// The validated topic mapping of one gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Routes {
    bus_topics: Vec<String>,
    matching: TopicMatch,
    bus_publish_topic: String,
    mqtt_publish_topic: String,
    mqtt_filters: Vec<String>,
    prefix: Option<String>,
}

impl Routes {
    /// Validates a mapping.
    ///
    /// `bus_topics` (`-g`) are the bus topics forwarded to MQTT, matched by
    /// `matching`; `bus_publish_topic` (`-e`) and `mqtt_publish_topic` (`-i`)
    /// are the fixed topics; `mqtt_filters` (`-j`) are subscribed on MQTT;
    /// `prefix` switches to one-to-one mapping.
    pub fn new(
        bus_topics: &[String],
        matching: TopicMatch,
        bus_publish_topic: &str,
        mqtt_publish_topic: &str,
        mqtt_filters: &[String],
        prefix: Option<&str>,
    ) -> Result<Routes> {
        let prefix = match prefix.map(|p| p.trim_end_matches('/')) {
            None => None,
            Some("") => return Err(Error::EmptyTopic { what: "--prefix" }),
            Some(p) if !publishable(p) => {
                return Err(Error::InvalidMqttTopic {
                    what: "--prefix",
                    topic: p.to_owned(),
                })
            }
            Some(p) => Some(p.to_owned()),
        };
        let mut filters = Vec::with_capacity(mqtt_filters.len());
        for filter in mqtt_filters {
            let full = match &prefix {
                Some(p) => format!("{p}/{filter}"),
                None => filter.clone(),
            };
            if filter.is_empty() || !subscribable(&full) {
                return Err(Error::InvalidMqttFilter {
                    filter: filter.clone(),
                });
            }
            filters.push(full);
        }
        let routes = Routes {
            bus_topics: bus_topics.to_vec(),
            matching,
            bus_publish_topic: bus_publish_topic.to_owned(),
            mqtt_publish_topic: mqtt_publish_topic.to_owned(),
            mqtt_filters: filters,
            prefix,
        };
        if routes.prefix.is_none() {
            if bus_publish_topic.is_empty() {
                return Err(Error::EmptyTopic { what: "-e" });
            }
            if mqtt_publish_topic.is_empty() {
                return Err(Error::EmptyTopic { what: "-i" });
            }
            if !publishable(mqtt_publish_topic) {
                return Err(Error::InvalidMqttTopic {
                    what: "-i",
                    topic: mqtt_publish_topic.to_owned(),
                });
            }
            if let Some(forwarded) = routes.forwarded_by(bus_publish_topic) {
                return Err(Error::EchoLoop {
                    bus_topic: bus_publish_topic.to_owned(),
                    forwarded: forwarded.to_owned(),
                    matching,
                });
            }
        }
        Ok(routes)
    }

    /// The bus prefixes to subscribe to (ZeroMQ subscriptions are prefixes
    /// whatever [`Routes::matching`] says; [`Routes::forwards`] sorts out
    /// what they deliver).
    pub fn bus_subscriptions(&self) -> &[String] {
        &self.bus_topics
    }

    /// How bus topics are matched against the `-g` topics.
    pub fn matching(&self) -> TopicMatch {
        self.matching
    }

    /// Whether a bus message on `bus_topic` goes to MQTT.
    pub fn forwards(&self, bus_topic: &str) -> bool {
        self.forwarded_by(bus_topic).is_some()
    }

    /// The `-g` topic that makes `bus_topic` go to MQTT, if any.
    fn forwarded_by(&self, bus_topic: &str) -> Option<&str> {
        self.bus_topics
            .iter()
            .map(String::as_str)
            .find(|wanted| self.matching.matches(wanted, bus_topic))
    }

    /// The MQTT filters to subscribe to (with the prefix applied).
    pub fn mqtt_subscriptions(&self) -> &[String] {
        &self.mqtt_filters
    }

    /// The prefix, in prefix mode.
    pub fn prefix(&self) -> Option<&str> {
        self.prefix.as_deref()
    }

    /// The MQTT topic a bus message on `bus_topic` is published on. Whether
    /// it is forwarded at all is [`Routes::forwards`].
    pub fn to_mqtt(&self, bus_topic: &str) -> Result<String> {
        match &self.prefix {
            None => Ok(self.mqtt_publish_topic.clone()),
            Some(p) => {
                let topic = format!("{p}/{bus_topic}");
                if bus_topic.is_empty() || !publishable(&topic) {
                    return Err(Error::InvalidMqttTopic {
                        what: "bus topic",
                        topic: bus_topic.to_owned(),
                    });
                }
                Ok(topic)
            }
        }
    }

    /// The bus topic an MQTT message on `mqtt_topic` is published on.
    pub fn to_bus(&self, mqtt_topic: &str) -> Result<String> {
        let Some(p) = &self.prefix else {
            return Ok(self.bus_publish_topic.clone());
        };
        let bus_topic = mqtt_topic
            .strip_prefix(p.as_str())
            .and_then(|rest| rest.strip_prefix('/'))
            .filter(|rest| !rest.is_empty())
            .ok_or_else(|| Error::OutsidePrefix(mqtt_topic.to_owned()))?;
        if self.forwards(bus_topic) {
            return Err(Error::WouldLoop {
                mqtt_topic: mqtt_topic.to_owned(),
                bus_topic: bus_topic.to_owned(),
            });
        }
        Ok(bus_topic.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn fixed(matching: TopicMatch) -> Routes {
        Routes::new(
            &strings(&["to_mqtt", "sensors"]),
            matching,
            "from_mqtt",
            "from_banyan",
            &strings(&["mqtt_network", "a/+/c", "b/#"]),
            None,
        )
        .expect("valid")
    }

    #[test]
    fn fixed_mode_sends_every_forwarded_bus_topic_to_one_mqtt_topic() {
        let routes = fixed(TopicMatch::Exact);
        assert_eq!(routes.to_mqtt("to_mqtt").expect("maps"), "from_banyan");
        assert_eq!(routes.to_mqtt("sensors").expect("maps"), "from_banyan");
        assert_eq!(routes.to_bus("a/b/c").expect("maps"), "from_mqtt");
        assert_eq!(
            routes.mqtt_subscriptions(),
            strings(&["mqtt_network", "a/+/c", "b/#"])
        );
        assert_eq!(routes.bus_subscriptions(), strings(&["to_mqtt", "sensors"]));
    }

    #[test]
    fn exact_matching_is_pythons_and_prefix_matching_is_the_subscriptions() {
        // python's mgw: `if topic == 'to_mqtt'`.
        let exact = fixed(TopicMatch::Exact);
        assert_eq!(exact.matching(), TopicMatch::Exact);
        assert!(exact.forwards("to_mqtt"));
        assert!(exact.forwards("sensors"));
        assert!(!exact.forwards("to_mqtt_other"));
        assert!(!exact.forwards("sensors_7"));
        assert!(!exact.forwards("to_mqt"));
        assert!(!exact.forwards(""));
        // What the ZeroMQ subscription beneath delivers.
        let prefix = fixed(TopicMatch::Prefix);
        assert!(prefix.forwards("to_mqtt"));
        assert!(prefix.forwards("to_mqtt_other"));
        assert!(prefix.forwards("sensors_7"));
        assert!(!prefix.forwards("to_mqt"));
        assert!(!prefix.forwards("other"));
    }

    #[test]
    fn prefix_mode_maps_one_to_one_both_ways() {
        let routes = Routes::new(
            &strings(&["to_"]),
            TopicMatch::Prefix,
            "from_mqtt",
            "from_banyan",
            &strings(&["#"]),
            Some("banyan/"),
        )
        .expect("valid");
        assert_eq!(routes.prefix(), Some("banyan"));
        assert_eq!(routes.mqtt_subscriptions(), strings(&["banyan/#"]));
        assert_eq!(routes.to_mqtt("to_motor").expect("maps"), "banyan/to_motor");
        assert_eq!(routes.to_bus("banyan/from_pin").expect("maps"), "from_pin");
        assert_eq!(routes.to_bus("banyan/a/b").expect("maps"), "a/b");
        assert!(matches!(
            routes.to_bus("banyanx/y"),
            Err(Error::OutsidePrefix(_))
        ));
        assert!(matches!(
            routes.to_bus("banyan/"),
            Err(Error::OutsidePrefix(_))
        ));
        // Our own publication, echoed by the broker, is not sent round again.
        assert!(matches!(
            routes.to_bus("banyan/to_motor"),
            Err(Error::WouldLoop { .. })
        ));
        // A bus topic MQTT cannot carry.
        assert!(matches!(
            routes.to_mqtt("to_#"),
            Err(Error::InvalidMqttTopic { .. })
        ));
    }

    #[test]
    fn the_loop_guard_follows_the_matching() {
        // Exact: `to_motor` is not forwarded, so publishing it on the bus
        // cannot come back to MQTT.
        let routes = Routes::new(
            &strings(&["to_"]),
            TopicMatch::Exact,
            "from_mqtt",
            "from_banyan",
            &strings(&["#"]),
            Some("banyan"),
        )
        .expect("valid");
        assert_eq!(routes.to_bus("banyan/to_motor").expect("maps"), "to_motor");
        assert!(matches!(
            routes.to_bus("banyan/to_"),
            Err(Error::WouldLoop { .. })
        ));
        // Fixed mapping: `-e from_mqtt` under `-g from_` loops only with
        // prefix matching.
        let g = strings(&["from_"]);
        let j = strings(&["x"]);
        assert!(Routes::new(&g, TopicMatch::Exact, "from_mqtt", "out", &j, None).is_ok());
        assert!(matches!(
            Routes::new(&g, TopicMatch::Prefix, "from_mqtt", "out", &j, None),
            Err(Error::EchoLoop { .. })
        ));
        assert!(matches!(
            Routes::new(&g, TopicMatch::Exact, "from_", "out", &j, None),
            Err(Error::EchoLoop { .. })
        ));
    }

    #[test]
    fn topics_a_broker_would_close_the_connection_for_are_refused() {
        assert!(publishable("a/b c/ü"));
        for bad in [
            "",
            "a+",
            "a/#",
            "nul\0",
            "line\n",
            "del\u{7f}",
            "c1\u{85}",
            "\u{fffe}",
            "\u{1ffff}",
            "\u{fdd0}",
        ] {
            assert!(!publishable(bad), "{bad:?}");
        }
        assert!(publishable(&"t".repeat(MAX_TOPIC_LEN)));
        assert!(!publishable(&"t".repeat(MAX_TOPIC_LEN + 1)));
        let routes = Routes::new(
            &strings(&["to_"]),
            TopicMatch::Prefix,
            "e",
            "i",
            &strings(&["#"]),
            Some("p"),
        )
        .expect("valid");
        // "p/" and the topic: one byte too many.
        let long = "t".repeat(MAX_TOPIC_LEN - 1);
        assert!(matches!(
            routes.to_mqtt(&long),
            Err(Error::InvalidMqttTopic { .. })
        ));
        assert!(routes.to_mqtt(&long[2..]).is_ok());
        assert!(matches!(
            routes.to_mqtt("to_\0x"),
            Err(Error::InvalidMqttTopic { .. })
        ));
    }

    #[test]
    fn bad_settings_are_refused() {
        let g = strings(&["to_mqtt"]);
        let j = strings(&["x"]);
        let exact = TopicMatch::Exact;
        assert!(matches!(
            Routes::new(&g, exact, "from", "out/#", &j, None),
            Err(Error::InvalidMqttTopic { what: "-i", .. })
        ));
        assert!(matches!(
            Routes::new(&g, exact, "from", "out\0", &j, None),
            Err(Error::InvalidMqttTopic { what: "-i", .. })
        ));
        assert!(matches!(
            Routes::new(&g, exact, "from", "out", &strings(&["a/#/b"]), None),
            Err(Error::InvalidMqttFilter { .. })
        ));
        assert!(matches!(
            Routes::new(&g, exact, "from", "out", &strings(&["a+"]), None),
            Err(Error::InvalidMqttFilter { .. })
        ));
        assert!(matches!(
            Routes::new(&g, exact, "from", "out", &strings(&["a\u{1}"]), None),
            Err(Error::InvalidMqttFilter { .. })
        ));
        assert!(matches!(
            Routes::new(&g, TopicMatch::Prefix, "to_mqtt_back", "out", &j, None),
            Err(Error::EchoLoop { .. })
        ));
        assert!(matches!(
            Routes::new(&g, exact, "to_mqtt", "out", &j, None),
            Err(Error::EchoLoop { .. })
        ));
        assert!(matches!(
            Routes::new(&g, exact, "from", "out", &j, Some("a/+")),
            Err(Error::InvalidMqttTopic { .. })
        ));
        assert!(matches!(
            Routes::new(&g, exact, "", "out", &j, None),
            Err(Error::EmptyTopic { what: "-e" })
        ));
    }
}
