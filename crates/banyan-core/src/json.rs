//! JSON <-> MessagePack conversion, with written rules for what JSON lacks.
//!
//! The WebSocket and MQTT gateways speak JSON on one side and MessagePack on
//! the bus; they both convert here so that a value looks the same through
//! either. The rules (also in `docs/protocol.md`):
//!
//! | MessagePack | JSON |
//! |---|---|
//! | nil, bool, str | `null`, `true`/`false`, string |
//! | int (any, i64/u64 range) | number, every digit kept (JavaScript reads beyond 2^53 as a double) |
//! | float32, float64 | number, shortest form that reads back to the same float |
//! | NaN, +inf, -inf | **error** [`Error::NonFiniteFloat`]: JSON has no such number |
//! | bin | `{"$bin": "<base64>"}` |
//! | ext | `{"$ext": [type, "<base64>"]}` |
//! | array | array |
//! | map with str keys | object, key order kept |
//! | int, float, bool, nil keys | their JSON text as the key (`1` → `"1"`), as Python's `json.dumps` does |
//! | bin keys | the bytes as the key when UTF-8 (msgpack-numpy's `b'shape'` → `"shape"`), else **error** |
//! | array, map, ext keys | **error** [`Error::UnsupportedKey`] |
//! | str that is not UTF-8 | **error** [`Error::InvalidUtf8`] |
//!
//! And back, JSON → MessagePack:
//!
//! | JSON | MessagePack |
//! |---|---|
//! | integer within i64/u64 | int (smallest form) |
//! | integer beyond i64/u64 | float64, as JavaScript reads it |
//! | any other number | float64 |
//! | object | map with str keys, order kept |
//! | `{"$bin": "<base64>"}` (that one key only) | bin |
//! | `{"$ext": [type, "<base64>"]}` (that one key only) | ext |
//! | `NaN`, `Infinity` | not JSON: [`Error::JsonSyntax`] |
//!
//! So bin and ext survive a round trip through JSON; non-string keys come back
//! as strings. The text is laid out as Python's `json.dumps` lays it out
//! (`", "` and `": "` between items), so peers see what python-banyan's
//! gateways sent them.

use std::fmt::{self, Write as _};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use rmpv::Value;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::error::{Error, Result};

/// The key of the object that stands for a MessagePack bin.
pub const BIN_TAG: &str = "$bin";
/// The key of the object that stands for a MessagePack ext.
pub const EXT_TAG: &str = "$ext";

/// Converts a MessagePack value to JSON text by the rules above.
pub fn to_json(value: &Value) -> Result<String> {
    let mut out = String::with_capacity(64);
    write_value(value, &mut out, &mut Path::default(), Mode::Strict)?;
    Ok(out)
}

/// Converts a MessagePack value to JSON-like text for people to read.
///
/// Like [`to_json`] but total: what JSON cannot carry is shown rather than
/// refused (`NaN`, `Infinity`, a composite key as its own text, an invalid
/// str as `<invalid utf-8: hex>`). The monitor prints payloads this way.
pub fn to_display(value: &Value) -> String {
    let mut out = String::with_capacity(64);
    // Lenient mode has no error path.
    let _ = write_value(value, &mut out, &mut Path::default(), Mode::Lenient);
    out
}

/// Parses JSON text into a MessagePack value by the rules above.
pub fn from_json(text: &str) -> Result<Value> {
    parse(serde_json::Deserializer::from_str(text))
}

/// Parses JSON bytes (which must be UTF-8) into a MessagePack value.
pub fn from_json_slice(bytes: &[u8]) -> Result<Value> {
    parse(serde_json::Deserializer::from_slice(bytes))
}

fn parse<'de, R: serde_json::de::Read<'de>>(mut de: serde_json::Deserializer<R>) -> Result<Value> {
    let value = ValueSeed.deserialize(&mut de).map_err(Error::JsonSyntax)?;
    de.end().map_err(Error::JsonSyntax)?;
    untag(value, &mut Path::default())
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Strict,
    Lenient,
}

/// Where we are in a value, for error messages (`$.a[2].b`). Built only as
/// deep as the walk goes; rendered only when an error needs it.
#[derive(Default)]
struct Path(Vec<Step>);

enum Step {
    Index(usize),
    Key(String),
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_char('$')?;
        for step in &self.0 {
            match step {
                Step::Index(i) => write!(f, "[{i}]")?,
                Step::Key(k) => write!(f, ".{k}")?,
            }
        }
        Ok(())
    }
}

fn write_value(value: &Value, out: &mut String, path: &mut Path, mode: Mode) -> Result<()> {
    match value {
        Value::Nil => out.push_str("null"),
        Value::Boolean(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Integer(i) => {
            let _ = write!(out, "{i}");
        }
        Value::F32(f) => write_float(f64::from(*f), &float_text(f), out, path, mode)?,
        Value::F64(f) => write_float(*f, &float_text(f), out, path, mode)?,
        Value::String(s) => match s.as_str() {
            Some(s) => write_str(s, out),
            None if mode == Mode::Lenient => {
                let _ = write!(out, "\"<invalid utf-8: {}>\"", hex(s.as_bytes()));
            }
            None => {
                return Err(Error::InvalidUtf8 {
                    path: path.to_string(),
                })
            }
        },
        Value::Binary(b) => {
            out.push_str("{\"$bin\": \"");
            out.push_str(&BASE64.encode(b));
            out.push_str("\"}");
        }
        Value::Ext(ty, data) => {
            let _ = write!(out, "{{\"$ext\": [{ty}, \"{}\"]}}", BASE64.encode(data));
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                path.0.push(Step::Index(i));
                write_value(item, out, path, mode)?;
                path.0.pop();
            }
            out.push(']');
        }
        Value::Map(entries) => {
            out.push('{');
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                let key = key_text(k, path, mode)?;
                write_str(&key, out);
                out.push_str(": ");
                path.0.push(Step::Key(key));
                write_value(v, out, path, mode)?;
                path.0.pop();
            }
            out.push('}');
        }
    }
    Ok(())
}

/// The shortest text that reads back as the same float (`1.0`, `1e300`),
/// from serde_json; NaN and infinities get Rust's spelling, for messages.
fn float_text<F: serde::Serialize + ToString>(f: &F) -> String {
    serde_json::to_string(f)
        .ok()
        .filter(|t| t != "null")
        .unwrap_or_else(|| f.to_string())
}

fn write_float(f: f64, shortest: &str, out: &mut String, path: &Path, mode: Mode) -> Result<()> {
    if f.is_finite() {
        out.push_str(shortest);
        Ok(())
    } else if mode == Mode::Lenient {
        out.push_str(if f.is_nan() {
            "NaN"
        } else if f > 0.0 {
            "Infinity"
        } else {
            "-Infinity"
        });
        Ok(())
    } else {
        Err(Error::NonFiniteFloat {
            path: path.to_string(),
            value: shortest.to_owned(),
        })
    }
}

fn write_str(s: &str, out: &mut String) {
    // serde_json's escaping is the reference; writing into a String cannot fail.
    if let Ok(quoted) = serde_json::to_string(s) {
        out.push_str(&quoted);
    }
}

fn key_text(key: &Value, path: &Path, mode: Mode) -> Result<String> {
    let unsupported = |kind| -> Result<String> {
        if mode == Mode::Lenient {
            Ok(to_display(key))
        } else {
            Err(Error::UnsupportedKey {
                path: path.to_string(),
                kind,
            })
        }
    };
    match key {
        Value::String(s) => match s.as_str() {
            Some(s) => Ok(s.to_owned()),
            None if mode == Mode::Lenient => Ok(format!("<invalid utf-8: {}>", hex(s.as_bytes()))),
            None => Err(Error::InvalidUtf8 {
                path: path.to_string(),
            }),
        },
        Value::Binary(b) => match std::str::from_utf8(b) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => unsupported("bin"),
        },
        Value::Nil | Value::Boolean(_) | Value::Integer(_) | Value::F32(_) | Value::F64(_) => {
            let mut text = String::new();
            write_value(key, &mut text, &mut Path::default(), mode).map_err(|_| {
                Error::NonFiniteFloat {
                    path: path.to_string(),
                    value: to_display(key),
                }
            })?;
            Ok(text)
        }
        Value::Array(_) => unsupported("array"),
        Value::Map(_) => unsupported("map"),
        Value::Ext(..) => unsupported("ext"),
    }
}

/// Bytes as lower-case hex, for showing what is not text.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Turns `{"$bin": ...}` and `{"$ext": ...}` objects back into bin and ext.
fn untag(value: Value, path: &mut Path) -> Result<Value> {
    match value {
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                path.0.push(Step::Index(i));
                out.push(untag(item, path)?);
                path.0.pop();
            }
            Ok(Value::Array(out))
        }
        Value::Map(mut entries) => {
            if entries.len() == 1 {
                let tag = match entries[0].0.as_str() {
                    Some(BIN_TAG) => Some(BIN_TAG),
                    Some(EXT_TAG) => Some(EXT_TAG),
                    _ => None,
                };
                if let Some(tag) = tag {
                    let (_, content) = entries.remove(0);
                    return decode_tag(tag, content, path);
                }
            }
            let mut out = Vec::with_capacity(entries.len());
            for (k, v) in entries {
                path.0
                    .push(Step::Key(k.as_str().unwrap_or_default().to_owned()));
                let v = untag(v, path)?;
                path.0.pop();
                out.push((k, v));
            }
            Ok(Value::Map(out))
        }
        other => Ok(other),
    }
}

fn decode_tag(tag: &'static str, content: Value, path: &Path) -> Result<Value> {
    let bad = |tag: &'static str, reason: &str| Error::BadTag {
        path: path.to_string(),
        tag,
        reason: reason.to_owned(),
    };
    let base64 = |tag: &'static str, v: &Value| -> Result<Vec<u8>> {
        let text = v
            .as_str()
            .ok_or_else(|| bad(tag, "the data must be a base64 string"))?;
        BASE64
            .decode(text)
            .map_err(|e| bad(tag, &format!("invalid base64: {e}")))
    };
    if tag == BIN_TAG {
        return Ok(Value::Binary(base64(BIN_TAG, &content)?));
    }
    match content {
        Value::Array(parts) if parts.len() == 2 => {
            let ty = parts[0]
                .as_i64()
                .and_then(|t| i8::try_from(t).ok())
                .ok_or_else(|| bad(EXT_TAG, "the type must be an integer from -128 to 127"))?;
            Ok(Value::Ext(ty, base64(EXT_TAG, &parts[1])?))
        }
        _ => Err(bad(EXT_TAG, "expected [type, \"base64\"]")),
    }
}

/// Deserializes any JSON value straight into an [`rmpv::Value`], keeping
/// object key order (no intermediate `serde_json::Value`, whose map sorts).
struct ValueSeed;

impl<'de> DeserializeSeed<'de> for ValueSeed {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Nil)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Boolean(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    // serde_json hands integers beyond u64/i64 over as f64, which is the rule.
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::F64(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(item) = seq.next_element_seed(ValueSeed)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(ValueSeed)?;
            entries.push((Value::from(key), value));
        }
        Ok(Value::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(entries: Vec<(Value, Value)>) -> Value {
        Value::Map(entries)
    }

    #[test]
    fn plain_values_convert_both_ways() {
        let text = r#"{"command": "digital_write", "pin": 4, "value": 1, "ratio": 0.5, "on": true, "none": null, "list": [1, -2, "x"]}"#;
        let v = from_json(text).expect("parses");
        assert_eq!(
            v,
            map(vec![
                (Value::from("command"), Value::from("digital_write")),
                (Value::from("pin"), Value::from(4)),
                (Value::from("value"), Value::from(1)),
                (Value::from("ratio"), Value::F64(0.5)),
                (Value::from("on"), Value::Boolean(true)),
                (Value::from("none"), Value::Nil),
                (
                    Value::from("list"),
                    Value::Array(vec![Value::from(1), Value::from(-2), Value::from("x")])
                ),
            ])
        );
        // key order is kept both ways
        assert_eq!(to_json(&v).expect("converts"), text);
    }

    #[test]
    fn integers_at_the_edges() {
        assert_eq!(
            to_json(&Value::from(u64::MAX)).expect("u64"),
            "18446744073709551615"
        );
        assert_eq!(
            to_json(&Value::from(i64::MIN)).expect("i64"),
            "-9223372036854775808"
        );
        assert_eq!(
            from_json("18446744073709551615").expect("u64"),
            Value::from(u64::MAX)
        );
        assert_eq!(
            from_json("-9223372036854775808").expect("i64"),
            Value::from(i64::MIN)
        );
        // beyond u64 and i64: a float, as JavaScript reads it
        assert_eq!(
            from_json("18446744073709551616").expect("big"),
            Value::F64(18446744073709551616.0)
        );
        assert_eq!(
            from_json("-9223372036854775809").expect("small"),
            Value::F64(-9223372036854775809.0)
        );
        // serde_json reads "-0" as a float, which keeps its sign
        assert_eq!(from_json("-0").expect("-0"), Value::F64(-0.0));
    }

    #[test]
    fn floats_stay_floats() {
        assert_eq!(to_json(&Value::F64(1.0)).expect("1.0"), "1.0");
        assert_eq!(to_json(&Value::F64(1e300)).expect("1e300"), "1e+300");
        assert_eq!(to_json(&Value::F32(0.1)).expect("f32"), "0.1");
        assert_eq!(from_json("1.0").expect("1.0"), Value::F64(1.0));
        assert_eq!(from_json("2.5e3").expect("2.5e3"), Value::F64(2500.0));
        let back = from_json(&to_json(&Value::F64(0.1 + 0.2)).expect("f64")).expect("parses");
        assert_eq!(back, Value::F64(0.1 + 0.2));
    }

    #[test]
    fn non_finite_floats_are_refused_with_their_place() {
        let v = map(vec![(
            Value::from("reading"),
            Value::Array(vec![Value::F64(1.0), Value::F64(f64::NAN)]),
        )]);
        match to_json(&v) {
            Err(Error::NonFiniteFloat { path, value }) => {
                assert_eq!(path, "$.reading[1]");
                assert_eq!(value, "NaN");
            }
            other => panic!("expected NonFiniteFloat, got {other:?}"),
        }
        assert!(matches!(
            to_json(&Value::F32(f32::INFINITY)),
            Err(Error::NonFiniteFloat { .. })
        ));
        assert!(matches!(
            to_json(&Value::F64(f64::NEG_INFINITY)),
            Err(Error::NonFiniteFloat { .. })
        ));
        // and JSON's non-standard spellings are not accepted
        for bad in ["NaN", "Infinity", "-Infinity", "[NaN]"] {
            assert!(matches!(from_json(bad), Err(Error::JsonSyntax(_))), "{bad}");
        }
        assert_eq!(to_display(&Value::F64(f64::NAN)), "NaN");
        assert_eq!(to_display(&Value::F64(f64::NEG_INFINITY)), "-Infinity");
    }

    #[test]
    fn bin_and_ext_round_trip_through_tags() {
        let v = Value::Array(vec![
            Value::Binary(vec![0, 1, 254, 255]),
            Value::Ext(-3, vec![9]),
        ]);
        let text = to_json(&v).expect("converts");
        assert_eq!(text, r#"[{"$bin": "AAH+/w=="}, {"$ext": [-3, "CQ=="]}]"#);
        assert_eq!(from_json(&text).expect("parses"), v);
        assert_eq!(
            to_json(&Value::Binary(vec![])).expect("empty"),
            r#"{"$bin": ""}"#
        );
    }

    #[test]
    fn malformed_tags_are_errors_but_other_dollar_keys_are_data() {
        for (bad, tag) in [
            (r#"{"$bin": 5}"#, "$bin"),
            (r#"{"$bin": "***"}"#, "$bin"),
            (r#"{"$ext": [300, ""]}"#, "$ext"),
            (r#"{"$ext": "AA=="}"#, "$ext"),
        ] {
            match from_json(bad) {
                Err(Error::BadTag { tag: t, .. }) => assert_eq!(t, tag),
                other => panic!("{bad}: expected BadTag, got {other:?}"),
            }
        }
        // a second key makes it an ordinary object
        let v = from_json(r#"{"$bin": "AA==", "x": 1}"#).expect("parses");
        assert_eq!(v.as_map().map(Vec::len), Some(2));
        let nested = from_json(r#"{"a": [{"$bin": "AQ=="}]}"#).expect("parses");
        assert_eq!(
            nested,
            map(vec![(
                Value::from("a"),
                Value::Array(vec![Value::Binary(vec![1])])
            )])
        );
        assert!(matches!(
            from_json(r#"{"a": [{"$bin": 1}]}"#),
            Err(Error::BadTag { path, .. }) if path == "$.a[0]"
        ));
    }

    #[test]
    fn non_string_keys() {
        let v = map(vec![
            (Value::from(1), Value::from("int")),
            (Value::F64(1.5), Value::from("float")),
            (Value::Boolean(true), Value::from("bool")),
            (Value::Nil, Value::from("nil")),
            (Value::Binary(b"shape".to_vec()), Value::from("bin")),
        ]);
        assert_eq!(
            to_json(&v).expect("converts"),
            r#"{"1": "int", "1.5": "float", "true": "bool", "null": "nil", "shape": "bin"}"#
        );
        for (key, kind) in [
            (Value::Array(vec![]), "array"),
            (map(vec![]), "map"),
            (Value::Ext(1, vec![]), "ext"),
            (Value::Binary(vec![0xff]), "bin"),
        ] {
            match to_json(&map(vec![(key, Value::Nil)])) {
                Err(Error::UnsupportedKey { kind: k, path }) => {
                    assert_eq!(k, kind);
                    assert_eq!(path, "$");
                }
                other => panic!("expected UnsupportedKey, got {other:?}"),
            }
        }
        assert!(matches!(
            to_json(&map(vec![(Value::F64(f64::NAN), Value::Nil)])),
            Err(Error::NonFiniteFloat { .. })
        ));
    }

    #[test]
    fn msgpack_numpy_arrays_become_readable_objects() {
        let v = map(vec![
            (Value::Binary(b"nd".to_vec()), Value::Boolean(true)),
            (Value::Binary(b"type".to_vec()), Value::from("<i8")),
            (Value::Binary(b"kind".to_vec()), Value::Binary(vec![])),
            (
                Value::Binary(b"shape".to_vec()),
                Value::Array(vec![Value::from(1)]),
            ),
            (
                Value::Binary(b"data".to_vec()),
                Value::Binary(vec![1, 0, 0, 0, 0, 0, 0, 0]),
            ),
        ]);
        assert_eq!(
            to_json(&v).expect("converts"),
            r#"{"nd": true, "type": "<i8", "kind": {"$bin": ""}, "shape": [1], "data": {"$bin": "AQAAAAAAAAA="}}"#
        );
    }

    #[test]
    fn invalid_utf8_str_is_an_error_and_shown_in_display() {
        let bytes = [0xa2, 0xff, 0xfe];
        let v = crate::envelope::decode(&bytes).expect("rmpv keeps invalid str");
        assert!(matches!(to_json(&v), Err(Error::InvalidUtf8 { .. })));
        assert_eq!(to_display(&v), "\"<invalid utf-8: fffe>\"");
    }

    #[test]
    fn strings_are_escaped() {
        let v = Value::from("quote \" backslash \\ newline \n tab \t nul \u{0} é ✓");
        let text = to_json(&v).expect("converts");
        assert_eq!(
            text,
            r#""quote \" backslash \\ newline \n tab \t nul \u0000 é ✓""#
        );
        assert_eq!(from_json(&text).expect("parses"), v);
    }

    #[test]
    fn syntax_errors_and_depth() {
        for bad in ["", "{", "{\"id\"}", "[1,]", "'x'", "{\"a\":1} trailing"] {
            assert!(
                matches!(from_json(bad), Err(Error::JsonSyntax(_))),
                "{bad:?}"
            );
        }
        let deep = "[".repeat(10_000) + &"]".repeat(10_000);
        assert!(matches!(from_json(&deep), Err(Error::JsonSyntax(_))));
        assert!(matches!(
            from_json_slice(b"\"\xff\""),
            Err(Error::JsonSyntax(_))
        ));
    }

    #[test]
    fn display_shows_what_json_cannot() {
        let v = map(vec![(
            Value::Array(vec![Value::from(1)]),
            Value::F64(f64::INFINITY),
        )]);
        assert_eq!(to_display(&v), r#"{"[1]": Infinity}"#);
        assert_eq!(to_display(&Value::from(5)), "5");
    }
}
