//! Payload conversion between the bus (MessagePack) and MQTT: pure code.
//!
//! JSON goes through `banyan_core::json`, the rules every gateway shares
//! (bin as `{"$bin": base64}`, NaN refused, python's `json.dumps` layout).
//! MessagePack is passed through untouched in both directions, only checked
//! to be one well-formed value on the way to the bus. One size limit
//! (`--max-payload`) applies to the MQTT payload either way: a larger one is
//! refused, that message only.

use bytes::Bytes;

use banyan_core::{envelope, json};

use crate::error::{Error, Result};

/// Default of [`Codec`]'s `max_payload` (`--max-payload`): 1 MiB.
pub const DEFAULT_MAX_PAYLOAD: usize = 1 << 20;

/// The largest body (variable header and payload) of an MQTT packet: its
/// "remaining length" is at most four 7-bit digits.
pub const MAX_REMAINING_LENGTH: usize = 268_435_455;

/// The largest `--max-payload`: an MQTT packet's body less the shortest
/// topic (its 2-byte length and one byte) and a packet id.
pub const MAX_PAYLOAD_LIMIT: usize = MAX_REMAINING_LENGTH - 5;

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

/// The payload conversion of one gateway: the format and the size limit,
/// the same in both directions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Codec {
    format: PayloadFormat,
    max_payload: usize,
}

impl Codec {
    /// The conversion to and from `format`, refusing MQTT payloads over
    /// `max_payload` bytes (1 to [`MAX_PAYLOAD_LIMIT`]).
    pub fn new(format: PayloadFormat, max_payload: usize) -> Result<Codec> {
        if !(1..=MAX_PAYLOAD_LIMIT).contains(&max_payload) {
            return Err(Error::MaxPayload {
                value: max_payload,
                max: MAX_PAYLOAD_LIMIT,
            });
        }
        Ok(Codec {
            format,
            max_payload,
        })
    }

    /// The MQTT payload format.
    pub fn format(&self) -> PayloadFormat {
        self.format
    }

    /// The largest MQTT payload passed either way, in bytes.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// The MQTT payload for a bus payload (frame 2) published on
    /// `mqtt_topic`: [`Error::TooLarge`] when it is over the limit, or when
    /// it and the topic do not fit one MQTT packet.
    pub fn to_mqtt(&self, mqtt_topic: &str, payload: &Bytes) -> Result<Bytes> {
        let out = match self.format {
            PayloadFormat::Json => {
                let value = envelope::decode(payload).map_err(Error::NotJsonable)?;
                Bytes::from(json::to_json(&value).map_err(Error::NotJsonable)?)
            }
            PayloadFormat::MessagePack => payload.clone(),
        };
        // The packet body: the topic with its 2-byte length, a packet id
        // (QoS 1 and 2), the payload.
        let room = MAX_REMAINING_LENGTH.saturating_sub(mqtt_topic.len() + 4);
        let limit = self.max_payload.min(room);
        if out.len() > limit {
            return Err(Error::TooLarge {
                size: out.len(),
                limit,
            });
        }
        Ok(out)
    }

    /// The bus payload (frame 2) for an MQTT payload; [`Error::TooLarge`]
    /// when it is over the limit (checked before anything is decoded).
    pub fn to_bus(&self, payload: &[u8]) -> Result<Bytes> {
        if payload.len() > self.max_payload {
            return Err(Error::TooLarge {
                size: payload.len(),
                limit: self.max_payload,
            });
        }
        match self.format {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use banyan_core::rmpv::Value;

    fn packed(value: &Value) -> Bytes {
        Bytes::from(envelope::encode(value))
    }

    fn json() -> Codec {
        Codec::new(PayloadFormat::Json, DEFAULT_MAX_PAYLOAD).expect("valid")
    }

    fn msgpack() -> Codec {
        Codec::new(PayloadFormat::MessagePack, DEFAULT_MAX_PAYLOAD).expect("valid")
    }

    #[test]
    fn json_both_ways_with_the_core_rules() {
        let value = Value::Map(vec![
            ("pin".into(), 4.into()),
            ("raw".into(), Value::Binary(vec![1, 2, 3])),
        ]);
        let text = json().to_mqtt("t", &packed(&value)).expect("converts");
        assert_eq!(&text[..], br#"{"pin": 4, "raw": {"$bin": "AQID"}}"#);
        let back = json().to_bus(&text).expect("converts");
        assert_eq!(envelope::decode(&back).expect("converts"), value);
    }

    #[test]
    fn a_float_comes_back_from_json_as_it_left() {
        // Found by the property test below: without serde_json's
        // `float_roundtrip`, parsing the shortest text of this float gave
        // back its neighbour (…021e-29).
        for f in [6.403916315010022e-29, 0.1 + 0.2, f64::MIN_POSITIVE, 1e300] {
            let value = Value::Array(vec![Value::F64(f)]);
            let text = json().to_mqtt("t", &packed(&value)).expect("converts");
            let back = json().to_bus(&text).expect("converts");
            assert_eq!(envelope::decode(&back).expect("decodes"), value, "{f:e}");
        }
    }

    #[test]
    fn what_json_cannot_carry_is_refused() {
        // NaN is written as python's json.dumps writes it.
        let nan = packed(&Value::F64(f64::NAN));
        assert_eq!(
            &json().to_mqtt("t", &nan).expect("python's form")[..],
            b"NaN"
        );
        assert!(matches!(
            json().to_mqtt("t", &Bytes::from_static(b"\xc1")),
            Err(Error::NotJsonable(_))
        ));
        assert!(matches!(
            json().to_bus(b"{not json"),
            Err(Error::NotJson(_))
        ));
        assert!(matches!(json().to_bus(b"\"\xff\""), Err(Error::NotUtf8)));
    }

    #[test]
    fn messagepack_passes_through_untouched() {
        // Not canonical (a fixint stored as uint 16): must stay as it is.
        let raw = Bytes::from_static(b"\xcd\x00\x07");
        assert_eq!(msgpack().to_mqtt("t", &raw).expect("converts"), raw);
        assert_eq!(msgpack().to_bus(&raw).expect("converts"), raw);
        assert!(matches!(
            msgpack().to_bus(b"\x92\x01"),
            Err(Error::NotMessagePack(_))
        ));
    }

    #[test]
    fn payloads_over_the_limit_are_refused_both_ways() {
        let codec = Codec::new(PayloadFormat::MessagePack, 10).expect("valid");
        let fits = packed(&Value::Binary(vec![0; 8]));
        assert_eq!(fits.len(), 10);
        assert_eq!(codec.to_mqtt("t", &fits).expect("fits"), fits);
        assert_eq!(codec.to_bus(&fits).expect("fits"), fits);
        let over = packed(&Value::Binary(vec![0; 9]));
        assert!(matches!(
            codec.to_mqtt("t", &over),
            Err(Error::TooLarge {
                size: 11,
                limit: 10
            })
        ));
        assert!(matches!(
            codec.to_bus(&over),
            Err(Error::TooLarge {
                size: 11,
                limit: 10
            })
        ));
        // Checked before decoding: not reported as bad JSON.
        let codec = Codec::new(PayloadFormat::Json, 3).expect("valid");
        assert!(matches!(
            codec.to_bus(b"{not json"),
            Err(Error::TooLarge { size: 9, limit: 3 })
        ));
        // The JSON text is what is measured on the way to MQTT.
        assert!(codec.to_mqtt("t", &packed(&Value::from(100))).is_ok());
        assert!(matches!(
            codec.to_mqtt("t", &packed(&Value::from(1000))),
            Err(Error::TooLarge { size: 4, limit: 3 })
        ));
    }

    #[test]
    fn the_limit_is_checked_at_start() {
        for bad in [0, MAX_PAYLOAD_LIMIT + 1, usize::MAX] {
            assert!(matches!(
                Codec::new(PayloadFormat::Json, bad),
                Err(Error::MaxPayload { .. })
            ));
        }
        let codec = Codec::new(PayloadFormat::Json, MAX_PAYLOAD_LIMIT).expect("valid");
        assert_eq!(codec.max_payload(), MAX_PAYLOAD_LIMIT);
        assert_eq!(codec.format(), PayloadFormat::Json);
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        // 100,000 nested one-element arrays.
        let mut deep = vec![0x91; 100_000];
        deep.push(0xc0);
        let deep = Bytes::from(deep);
        assert!(matches!(
            json().to_mqtt("t", &deep),
            Err(Error::NotJsonable(_))
        ));
        // Passed through as it is: it is well-formed MessagePack.
        assert_eq!(msgpack().to_mqtt("t", &deep).expect("passes"), deep);
        let text = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(matches!(
            json().to_bus(text.as_bytes()),
            Err(Error::NotJson(_))
        ));
    }

    #[test]
    fn formats_parse() {
        assert_eq!("json".parse(), Ok(PayloadFormat::Json));
        assert_eq!("msgpack".parse(), Ok(PayloadFormat::MessagePack));
        assert!("xml".parse::<PayloadFormat>().is_err());
    }
}

/// Property tests: the codec never panics, whatever the bytes, and JSON
/// carries every value it can carry there and back. Each property runs
/// proptest's default 256 cases in the normal test run; `PROPTEST_CASES`
/// runs more (e.g. `PROPTEST_CASES=100000 cargo test -p mqtt-gateway codec`).
#[cfg(test)]
mod properties {
    use banyan_core::rmpv::Value;
    use proptest::prelude::*;

    use super::*;

    fn codecs() -> [Codec; 2] {
        [PayloadFormat::Json, PayloadFormat::MessagePack]
            .map(|format| Codec::new(format, DEFAULT_MAX_PAYLOAD).expect("valid"))
    }

    /// Keys that are not the tags standing for bin and ext (a one-key map
    /// `{"$bin": ...}` comes back as a bin, by design).
    fn key() -> impl Strategy<Value = String> {
        any::<String>().prop_filter("not a tag", |k| !k.starts_with('$'))
    }

    /// Values JSON carries there and back unchanged: no NaN or infinity, no
    /// float32 (it comes back as float64), string keys only.
    fn jsonable() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Nil),
            any::<bool>().prop_map(Value::Boolean),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::F64),
            any::<String>().prop_map(Value::from),
            prop::collection::vec(any::<u8>(), 0..48).prop_map(Value::Binary),
            (any::<i8>(), prop::collection::vec(any::<u8>(), 0..16))
                .prop_map(|(kind, data)| Value::Ext(kind, data)),
        ];
        leaf.prop_recursive(4, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(key(), inner, 0..6).prop_map(|map| {
                    Value::Map(map.into_iter().map(|(k, v)| (Value::from(k), v)).collect())
                }),
            ]
        })
    }

    /// Any MessagePack value at all, JSON-carriable or not (NaN, float32,
    /// composite and binary keys).
    fn any_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            jsonable(),
            any::<f32>().prop_map(Value::F32),
            Just(Value::F64(f64::NAN)),
            Just(Value::F64(f64::NEG_INFINITY)),
        ];
        leaf.prop_recursive(3, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((inner.clone(), inner), 0..4).prop_map(Value::Map),
            ]
        })
    }

    /// Bytes near valid MessagePack: an encoded value cut short, with a byte
    /// changed, or with bytes after it.
    fn near_messagepack() -> impl Strategy<Value = Vec<u8>> {
        (
            any_value(),
            any::<prop::sample::Index>(),
            any::<u8>(),
            0..3u8,
        )
            .prop_map(|(value, at, byte, how)| {
                let mut bytes = envelope::encode(&value);
                let i = at.index(bytes.len());
                match how {
                    0 => bytes.truncate(i),
                    1 => bytes[i] = byte,
                    _ => bytes.push(byte),
                }
                bytes
            })
    }

    /// Text near valid JSON: JSON of a value with a character changed,
    /// removed or added.
    fn near_json() -> impl Strategy<Value = Vec<u8>> {
        (
            jsonable(),
            any::<prop::sample::Index>(),
            any::<char>(),
            0..3u8,
        )
            .prop_map(|(value, at, c, how)| {
                let mut text: Vec<char> =
                    json::to_json(&value).expect("jsonable").chars().collect();
                let i = at.index(text.len());
                match how {
                    0 => {
                        text.remove(i);
                    }
                    1 => text[i] = c,
                    _ => text.insert(i, c),
                }
                text.into_iter().collect::<String>().into_bytes()
            })
    }

    /// Arbitrary bytes, and bytes near each format.
    fn payload() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..256),
            near_messagepack(),
            near_json(),
        ]
    }

    proptest! {
        #[test]
        fn bus_to_mqtt_never_panics(payload in payload(), topic in any::<String>()) {
            let payload = Bytes::from(payload);
            for codec in codecs() {
                if let Ok(out) = codec.to_mqtt(&topic, &payload) {
                    prop_assert!(out.len() <= codec.max_payload());
                }
            }
        }

        #[test]
        fn mqtt_to_bus_never_panics_and_yields_one_value(payload in payload()) {
            for codec in codecs() {
                if let Ok(out) = codec.to_bus(&payload) {
                    // What reaches the bus is always one well-formed value.
                    prop_assert!(envelope::validate(&out).is_ok());
                }
            }
        }

        #[test]
        fn json_carries_what_it_can_there_and_back(value in jsonable()) {
            let codec = codecs()[0];
            let text = codec.to_mqtt("t", &Bytes::from(envelope::encode(&value)))?;
            prop_assert!(std::str::from_utf8(&text).is_ok());
            let back = codec.to_bus(&text)?;
            prop_assert_eq!(envelope::decode(&back)?, value);
        }

        #[test]
        fn messagepack_is_passed_through_byte_for_byte(value in any_value()) {
            let codec = codecs()[1];
            let bytes = Bytes::from(envelope::encode(&value));
            let out = codec.to_mqtt("t", &bytes)?;
            prop_assert_eq!(&out, &bytes);
            prop_assert_eq!(codec.to_bus(&out)?, bytes);
        }

        #[test]
        fn the_limit_is_exact(len in 0..64usize, limit in 1..64usize) {
            // A bin of `len` bytes in all: what is over the limit is refused,
            // the rest passes.
            let value = Value::Binary(vec![7; len.saturating_sub(2)]);
            let bytes = Bytes::from(envelope::encode(&value));
            let codec = Codec::new(PayloadFormat::MessagePack, limit).expect("valid");
            let size = bytes.len();
            for result in [codec.to_mqtt("t", &bytes), codec.to_bus(&bytes)] {
                match result {
                    Ok(out) => prop_assert!(size <= limit && out == bytes),
                    Err(Error::TooLarge { size: s, limit: l }) => {
                        prop_assert!(size > limit && s == size && l == limit)
                    }
                    Err(other) => prop_assert!(false, "unexpected {other}"),
                }
            }
        }
    }
}
