//! Payload conversion between the bus (MessagePack) and MQTT: pure code.
//!
//! JSON goes through `banyan_core::json`, the rules every gateway shares
//! (bin as `{"$bin": base64}`, NaN refused, python's `json.dumps` layout).
//! MessagePack is passed through untouched in both directions, only checked
//! to be one well-formed value on the way to the bus.

use bytes::Bytes;

use banyan_core::{envelope, json};

use crate::error::{Error, Result};

/// The largest MQTT packet the gateway sends or accepts. A bigger bus
/// payload is refused before it reaches the MQTT client, whose connection
/// would otherwise fail on it.
pub const MAX_PACKET_SIZE: usize = 1024 * 1024;

/// Room kept in a packet for the fixed header, topic length and packet id.
const PACKET_OVERHEAD: usize = 16;

/// One MQTT publication waiting to be sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    /// The MQTT topic.
    pub topic: String,
    /// The MQTT payload.
    pub payload: Bytes,
}

impl banyan_gateway::Weigh for Outgoing {
    fn weight(&self) -> usize {
        self.topic.len() + self.payload.len()
    }
}

/// What MQTT payloads are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum PayloadFormat {
    /// UTF-8 JSON text (python's `mgw`).
    #[default]
    Json,
    /// The bus's MessagePack bytes, unchanged (frame 2).
    MessagePack,
}

impl std::str::FromStr for PayloadFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "json" => Ok(PayloadFormat::Json),
            "msgpack" | "messagepack" => Ok(PayloadFormat::MessagePack),
            other => Err(format!(
                "unknown payload format {other:?} (json or msgpack)"
            )),
        }
    }
}

/// The MQTT payload for a bus payload (frame 2) published on `mqtt_topic`.
pub fn bus_to_mqtt(format: PayloadFormat, mqtt_topic: &str, payload: &Bytes) -> Result<Bytes> {
    let out = match format {
        PayloadFormat::Json => {
            let value = envelope::decode(payload).map_err(Error::NotJsonable)?;
            Bytes::from(json::to_json(&value).map_err(Error::NotJsonable)?)
        }
        PayloadFormat::MessagePack => payload.clone(),
    };
    let limit = MAX_PACKET_SIZE - PACKET_OVERHEAD - mqtt_topic.len().min(MAX_PACKET_SIZE / 2);
    if out.len() > limit {
        return Err(Error::TooLarge {
            size: out.len(),
            limit,
        });
    }
    Ok(out)
}

/// The bus payload (frame 2) for an MQTT payload.
pub fn mqtt_to_bus(format: PayloadFormat, payload: &[u8]) -> Result<Bytes> {
    match format {
        PayloadFormat::Json => {
            let text = std::str::from_utf8(payload).map_err(|_| Error::NotUtf8)?;
            let value = json::from_json(text).map_err(Error::NotJson)?;
            Ok(Bytes::from(envelope::encode(&value)))
        }
        PayloadFormat::MessagePack => {
            envelope::validate(payload).map_err(Error::NotMessagePack)?;
            Ok(Bytes::copy_from_slice(payload))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use banyan_core::rmpv::Value;

    fn packed(value: &Value) -> Bytes {
        Bytes::from(envelope::encode(value))
    }

    #[test]
    fn json_both_ways_with_the_core_rules() {
        let value = Value::Map(vec![
            ("pin".into(), 4.into()),
            ("raw".into(), Value::Binary(vec![1, 2, 3])),
        ]);
        let text = bus_to_mqtt(PayloadFormat::Json, "t", &packed(&value)).expect("converts");
        assert_eq!(&text[..], br#"{"pin": 4, "raw": {"$bin": "AQID"}}"#);
        let back = mqtt_to_bus(PayloadFormat::Json, &text).expect("converts");
        assert_eq!(envelope::decode(&back).expect("converts"), value);
    }

    #[test]
    fn what_json_cannot_carry_is_refused() {
        let nan = packed(&Value::F64(f64::NAN));
        assert!(matches!(
            bus_to_mqtt(PayloadFormat::Json, "t", &nan),
            Err(Error::NotJsonable(_))
        ));
        assert!(matches!(
            bus_to_mqtt(PayloadFormat::Json, "t", &Bytes::from_static(b"\xc1")),
            Err(Error::NotJsonable(_))
        ));
        assert!(matches!(
            mqtt_to_bus(PayloadFormat::Json, b"{not json"),
            Err(Error::NotJson(_))
        ));
        assert!(matches!(
            mqtt_to_bus(PayloadFormat::Json, b"\"\xff\""),
            Err(Error::NotUtf8)
        ));
    }

    #[test]
    fn messagepack_passes_through_untouched() {
        // Not canonical (a fixint stored as uint 16): must stay as it is.
        let raw = Bytes::from_static(b"\xcd\x00\x07");
        assert_eq!(
            bus_to_mqtt(PayloadFormat::MessagePack, "t", &raw).expect("converts"),
            raw
        );
        assert_eq!(
            mqtt_to_bus(PayloadFormat::MessagePack, &raw).expect("converts"),
            raw
        );
        assert!(matches!(
            mqtt_to_bus(PayloadFormat::MessagePack, b"\x92\x01"),
            Err(Error::NotMessagePack(_))
        ));
    }

    #[test]
    fn oversized_payloads_are_refused() {
        let big = packed(&Value::Binary(vec![0; MAX_PACKET_SIZE]));
        assert!(matches!(
            bus_to_mqtt(PayloadFormat::MessagePack, "t", &big),
            Err(Error::TooLarge { .. })
        ));
    }

    #[test]
    fn formats_parse() {
        assert_eq!("json".parse(), Ok(PayloadFormat::Json));
        assert_eq!("msgpack".parse(), Ok(PayloadFormat::MessagePack));
        assert!("xml".parse::<PayloadFormat>().is_err());
    }
}
