//! Topic mapping between the bus and MQTT: pure code, no I/O.
//!
//! Two modes:
//! * **fixed** (python's `mgw`): every bus message on a `-g` topic goes to the
//!   one MQTT topic `-i`; every MQTT message on a `-j` filter goes to the one
//!   bus topic `-e`.
//! * **prefix** (`--prefix P`): bus topic `T` is MQTT topic `P/T`, both ways,
//!   so several bus topics stay distinct on MQTT. The `-j` filters are then
//!   relative to the prefix (`-j '#'` subscribes `P/#`).
//!
//! MQTT 3.1.1 has no "no local" subscription option, so a broker sends the
//! gateway its own publications back when a `-j` filter matches them. An MQTT
//! topic that maps to a bus topic the gateway forwards to MQTT is therefore
//! refused ([`Error::WouldLoop`]) rather than published on the bus.

use rumqttc::{valid_filter, valid_topic};

use crate::error::{Error, Result};

/// The validated topic mapping of one gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Routes {
    bus_topics: Vec<String>,
    bus_publish_topic: String,
    mqtt_publish_topic: String,
    mqtt_filters: Vec<String>,
    prefix: Option<String>,
}

impl Routes {
    /// Validates a mapping.
    ///
    /// `bus_topics` (`-g`) are bus prefixes forwarded to MQTT;
    /// `bus_publish_topic` (`-e`) and `mqtt_publish_topic` (`-i`) are the
    /// fixed topics; `mqtt_filters` (`-j`) are subscribed on MQTT; `prefix`
    /// switches to one-to-one mapping.
    pub fn new(
        bus_topics: &[String],
        bus_publish_topic: &str,
        mqtt_publish_topic: &str,
        mqtt_filters: &[String],
        prefix: Option<&str>,
    ) -> Result<Routes> {
        let prefix = match prefix.map(|p| p.trim_end_matches('/')) {
            None => None,
            Some("") => return Err(Error::EmptyTopic { what: "--prefix" }),
            Some(p) if !valid_topic(p) => {
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
            if filter.is_empty() || !valid_filter(&full) {
                return Err(Error::InvalidMqttFilter {
                    filter: filter.clone(),
                });
            }
            filters.push(full);
        }
        if prefix.is_none() {
            if bus_publish_topic.is_empty() {
                return Err(Error::EmptyTopic { what: "-e" });
            }
            if mqtt_publish_topic.is_empty() {
                return Err(Error::EmptyTopic { what: "-i" });
            }
            if !valid_topic(mqtt_publish_topic) {
                return Err(Error::InvalidMqttTopic {
                    what: "-i",
                    topic: mqtt_publish_topic.to_owned(),
                });
            }
            if let Some(forwarded) = bus_topics
                .iter()
                .find(|g| bus_publish_topic.starts_with(g.as_str()))
            {
                return Err(Error::EchoLoop {
                    bus_topic: bus_publish_topic.to_owned(),
                    forwarded: forwarded.clone(),
                });
            }
        }
        Ok(Routes {
            bus_topics: bus_topics.to_vec(),
            bus_publish_topic: bus_publish_topic.to_owned(),
            mqtt_publish_topic: mqtt_publish_topic.to_owned(),
            mqtt_filters: filters,
            prefix,
        })
    }

    /// The bus prefixes to subscribe to.
    pub fn bus_subscriptions(&self) -> &[String] {
        &self.bus_topics
    }

    /// The MQTT filters to subscribe to (with the prefix applied).
    pub fn mqtt_subscriptions(&self) -> &[String] {
        &self.mqtt_filters
    }

    /// The prefix, in prefix mode.
    pub fn prefix(&self) -> Option<&str> {
        self.prefix.as_deref()
    }

    /// The MQTT topic a bus message on `bus_topic` is published on.
    pub fn to_mqtt(&self, bus_topic: &str) -> Result<String> {
        match &self.prefix {
            None => Ok(self.mqtt_publish_topic.clone()),
            Some(p) => {
                let topic = format!("{p}/{bus_topic}");
                if bus_topic.is_empty() || !valid_topic(&topic) {
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
        if self
            .bus_topics
            .iter()
            .any(|g| bus_topic.starts_with(g.as_str()))
        {
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

    fn fixed() -> Routes {
        Routes::new(
            &strings(&["to_mqtt", "sensors"]),
            "from_mqtt",
            "from_banyan",
            &strings(&["mqtt_network", "a/+/c", "b/#"]),
            None,
        )
        .expect("valid")
    }

    #[test]
    fn fixed_mode_sends_every_bus_topic_to_one_mqtt_topic() {
        let routes = fixed();
        assert_eq!(routes.to_mqtt("to_mqtt").expect("maps"), "from_banyan");
        assert_eq!(routes.to_mqtt("sensors_7").expect("maps"), "from_banyan");
        assert_eq!(routes.to_bus("a/b/c").expect("maps"), "from_mqtt");
        assert_eq!(
            routes.mqtt_subscriptions(),
            strings(&["mqtt_network", "a/+/c", "b/#"])
        );
        assert_eq!(routes.bus_subscriptions(), strings(&["to_mqtt", "sensors"]));
    }

    #[test]
    fn prefix_mode_maps_one_to_one_both_ways() {
        let routes = Routes::new(
            &strings(&["to_"]),
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
    fn bad_settings_are_refused() {
        let g = strings(&["to_mqtt"]);
        let j = strings(&["x"]);
        assert!(matches!(
            Routes::new(&g, "from", "out/#", &j, None),
            Err(Error::InvalidMqttTopic { what: "-i", .. })
        ));
        assert!(matches!(
            Routes::new(&g, "from", "out", &strings(&["a/#/b"]), None),
            Err(Error::InvalidMqttFilter { .. })
        ));
        assert!(matches!(
            Routes::new(&g, "from", "out", &strings(&["a+"]), None),
            Err(Error::InvalidMqttFilter { .. })
        ));
        assert!(matches!(
            Routes::new(&g, "to_mqtt_back", "out", &j, None),
            Err(Error::EchoLoop { .. })
        ));
        assert!(matches!(
            Routes::new(&g, "from", "out", &j, Some("a/+")),
            Err(Error::InvalidMqttTopic { .. })
        ));
        assert!(matches!(
            Routes::new(&g, "", "out", &j, None),
            Err(Error::EmptyTopic { what: "-e" })
        ));
    }
}
