//! The gateway's protocol, as pure functions: the id message, reply topics,
//! bus payloads to JSON text, and error messages.
//!
//! JSON conversion is banyan-core's ([`banyan_core::json`]), so a value looks
//! the same through every gateway.

use banyan_core::json;
use banyan_core::rmpv::Value;
use chrono::TimeZone;

use crate::error::{Error, Result};

/// The `strftime` layout of a report's `timestamp`, as python's gateway
/// writes it.
pub const TIMESTAMP_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

/// Reads a client's first message, `{"id": "to_X"}`, and returns the id.
pub fn parse_hello(text: &str) -> Result<String> {
    let value = json::from_json(text).map_err(Error::NotJson)?;
    let Value::Map(entries) = value else {
        return Err(Error::HelloNotObject);
    };
    let id = entries
        .into_iter()
        .find(|(k, _)| k.as_str() == Some("id"))
        .and_then(|(_, v)| match v {
            Value::String(s) => s.into_str(),
            _ => None,
        })
        .ok_or(Error::HelloWithoutId)?;
    if id.is_empty() {
        return Err(Error::EmptyId);
    }
    Ok(id)
}

/// The topic a client with this id receives: the id with its leading `to`
/// replaced by `from` (`to_motor` → `from_motor`). Only the leading one:
/// python's `str.replace` also turned `to_motor` into `from_mofromr`. An id
/// without a leading `to` is its own reply topic, as in python.
pub fn reply_topic(id: &str) -> String {
    match id.strip_prefix("to") {
        Some(rest) => format!("from{rest}"),
        None => id.to_owned(),
    }
}

/// Reads a later message of a client: any JSON value, to be published.
pub fn parse_command(text: &str) -> Result<Value> {
    json::from_json(text).map_err(Error::NotJson)
}

/// A bus message as its pages receive it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToPage {
    /// The JSON text sent.
    pub text: String,
    /// Whether it is a panic report, `{"report": "panic", ...}`, after which
    /// its pages are closed (see [`is_panic`]).
    pub closes: bool,
}

/// Turns a bus payload into the JSON text sent to clients: a map's numeric
/// `timestamp` becomes local time ([`TIMESTAMP_FORMAT`]).
pub fn bus_to_json(payload: &[u8]) -> Result<String> {
    bus_to_json_in(payload, &chrono::Local)
}

/// [`bus_to_json`] with the timestamp shown in time zone `zone`.
pub fn bus_to_json_in<Z: TimeZone>(payload: &[u8], zone: &Z) -> Result<String>
where
    Z::Offset: std::fmt::Display,
{
    Ok(bus_to_page_in(payload, zone)?.text)
}

/// Turns a bus payload into what its pages receive: the JSON text of
/// [`bus_to_json`], and whether it closes them.
pub fn bus_to_page(payload: &[u8]) -> Result<ToPage> {
    bus_to_page_in(payload, &chrono::Local)
}

/// [`bus_to_page`] with the timestamp shown in time zone `zone`.
pub fn bus_to_page_in<Z: TimeZone>(payload: &[u8], zone: &Z) -> Result<ToPage>
where
    Z::Offset: std::fmt::Display,
{
    let mut value = banyan_core::envelope::decode(payload)?;
    let closes = is_panic(&value);
    if let Value::Map(entries) = &mut value {
        for (key, v) in entries.iter_mut() {
            if key.as_str() == Some("timestamp") {
                if let Some(text) = format_timestamp(v, zone) {
                    *v = Value::from(text);
                }
            }
        }
    }
    Ok(ToPage {
        text: json::to_json(&value)?,
        closes,
    })
}

/// Whether a bus payload is a panic report, `{"report": "panic", ...}`: what
/// s3-extend's hardware gateways publish when their board is lost, and on
/// which s3-extend's `wsgw` closes the pages of that reply topic (close code
/// 1000). Here those pages first receive the report, then the close.
pub fn is_panic(value: &Value) -> bool {
    let Value::Map(entries) = value else {
        return false;
    };
    entries
        .iter()
        .any(|(k, v)| k.as_str() == Some("report") && v.as_str() == Some("panic"))
}

/// A number of seconds since the epoch as local time; `None` for what is
/// not a number or is out of the calendar's range (then left as it is).
fn format_timestamp<Z: TimeZone>(value: &Value, zone: &Z) -> Option<String>
where
    Z::Offset: std::fmt::Display,
{
    let seconds = match value {
        Value::Integer(i) => i.as_i64()?,
        Value::F32(f) => floor_seconds(f64::from(*f))?,
        Value::F64(f) => floor_seconds(*f)?,
        _ => return None,
    };
    let utc = chrono::DateTime::from_timestamp(seconds, 0)?;
    Some(utc.with_timezone(zone).format(TIMESTAMP_FORMAT).to_string())
}

/// Whole seconds, rounded down as python's `fromtimestamp` + `%S` shows them.
fn floor_seconds(f: f64) -> Option<i64> {
    let floor = f.floor();
    // i64's range as f64; NaN fails both comparisons.
    (-9.2e18..=9.2e18).contains(&floor).then_some(floor as i64)
}

/// The message a client gets about its bad input: `{"error": "..."}`.
pub fn error_message(error: &Error) -> String {
    let value = Value::Map(vec![(Value::from("error"), Value::from(error.to_string()))]);
    // A map of one str to a str always has a JSON form.
    json::to_json(&value).unwrap_or_else(|_| String::from("{\"error\": \"bad input\"}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use banyan_core::envelope::encode;

    fn map(entries: Vec<(&str, Value)>) -> Value {
        Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| (Value::from(k), v))
                .collect(),
        )
    }

    #[test]
    fn hello_gives_the_id() {
        assert_eq!(
            parse_hello(r#"{"id": "to_arduino_gateway"}"#).expect("hello"),
            "to_arduino_gateway"
        );
        assert_eq!(
            parse_hello(r#"{"x": 1, "id": "to_rpi"}"#).expect("hello"),
            "to_rpi"
        );
    }

    #[test]
    fn bad_hellos_are_named() {
        assert!(matches!(parse_hello("hello"), Err(Error::NotJson(_))));
        assert!(matches!(
            parse_hello(r#"["id"]"#),
            Err(Error::HelloNotObject)
        ));
        assert!(matches!(parse_hello("{}"), Err(Error::HelloWithoutId)));
        assert!(matches!(
            parse_hello(r#"{"id": 5}"#),
            Err(Error::HelloWithoutId)
        ));
        assert!(matches!(parse_hello(r#"{"id": ""}"#), Err(Error::EmptyId)));
    }

    #[test]
    fn only_the_leading_to_is_replaced() {
        assert_eq!(reply_topic("to_arduino_gateway"), "from_arduino_gateway");
        assert_eq!(reply_topic("to_motor"), "from_motor");
        assert_eq!(reply_topic("to"), "from");
        assert_eq!(reply_topic("arduino_to_x"), "arduino_to_x");
    }

    #[test]
    fn numeric_timestamps_become_local_time() {
        let payload = encode(&map(vec![
            ("report", Value::from("digital_input")),
            ("pin", Value::from(2)),
            ("timestamp", Value::F64(1_700_000_000.9)),
        ]));
        assert_eq!(
            bus_to_json_in(&payload, &chrono::Utc).expect("json"),
            r#"{"report": "digital_input", "pin": 2, "timestamp": "2023-11-14 22:13:20"}"#
        );
        let int = encode(&map(vec![("timestamp", Value::from(0))]));
        assert_eq!(
            bus_to_json_in(&int, &chrono::Utc).expect("json"),
            r#"{"timestamp": "1970-01-01 00:00:00"}"#
        );
        let offset = chrono::FixedOffset::east_opt(3600).expect("offset");
        assert_eq!(
            bus_to_json_in(&int, &offset).expect("json"),
            r#"{"timestamp": "1970-01-01 01:00:00"}"#
        );
    }

    #[test]
    fn other_timestamps_and_payloads_pass_unchanged() {
        for (value, json) in [
            (
                map(vec![("timestamp", Value::from("noon"))]),
                r#"{"timestamp": "noon"}"#,
            ),
            (
                map(vec![("timestamp", Value::F64(1e300))]),
                r#"{"timestamp": 1e+300}"#,
            ),
            (Value::from(7), "7"),
            (
                Value::Array(vec![Value::from("timestamp"), Value::from(1)]),
                r#"["timestamp", 1]"#,
            ),
            (
                map(vec![("data", Value::Binary(vec![1, 2]))]),
                r#"{"data": {"$bin": "AQI="}}"#,
            ),
        ] {
            assert_eq!(
                bus_to_json_in(&encode(&value), &chrono::Utc).expect("json"),
                json
            );
        }
    }

    #[test]
    fn panic_reports_close_their_pages() {
        let panic = encode(&map(vec![
            ("report", Value::from("panic")),
            ("timestamp", Value::from(0)),
        ]));
        assert_eq!(
            bus_to_page_in(&panic, &chrono::Utc).expect("json"),
            ToPage {
                text: r#"{"report": "panic", "timestamp": "1970-01-01 00:00:00"}"#.to_owned(),
                closes: true
            }
        );
        for other in [
            map(vec![("report", Value::from("digital_input"))]),
            map(vec![("panic", Value::from("report"))]),
            map(vec![("report", Value::Array(vec![Value::from("panic")]))]),
            Value::from("panic"),
            Value::Array(vec![Value::from("report"), Value::from("panic")]),
        ] {
            assert!(
                !bus_to_page(&encode(&other)).expect("json").closes,
                "{other}"
            );
        }
    }

    #[test]
    fn payloads_without_json_form_are_errors() {
        assert!(bus_to_json(&[0xc1]).is_err());
        // NaN has python's json.dumps form.
        assert_eq!(
            bus_to_json(&encode(&map(vec![("x", Value::F64(f64::NAN))]))).expect("json"),
            r#"{"x": NaN}"#
        );
    }

    #[test]
    fn errors_are_json_objects() {
        let text = error_message(&Error::BinaryFrame);
        let value = banyan_core::json::from_json(&text).expect("json");
        assert_eq!(
            value,
            map(vec![("error", Value::from(Error::BinaryFrame.to_string()))])
        );
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// A page's first message and its commands, whatever their text:
        /// parsed or refused with a typed error, never a panic; an id that
        /// parses gives a reply topic.
        #[test]
        fn any_text_from_a_page_is_parsed_or_refused(text in any::<String>()) {
            if let Ok(id) = parse_hello(&text) {
                prop_assert!(!id.is_empty());
                let reply = reply_topic(&id);
                prop_assert!(reply == id || reply.starts_with("from"));
            }
            let _ = parse_command(&text);
        }

        /// Texts made of JSON's own characters reach the parsers' deeper
        /// paths.
        #[test]
        fn json_like_texts_are_parsed_or_refused(text in r#"[\[\]{}:,"0-9a-z.eE+\- \\]{0,64}"#) {
            let _ = parse_hello(&text);
            let _ = parse_command(&text);
            let wrapped = format!(r#"{{"id": {text}}}"#);
            let _ = parse_hello(&wrapped);
        }

        /// Any bus payload becomes JSON text for pages or a typed error.
        #[test]
        fn any_bus_payload_converts_or_is_refused(payload in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = bus_to_json_in(&payload, &chrono::Utc);
        }
    }
}
