//! The monitor: prints every message on the bus as `topic payload`.
//!
//! Two formats ([`MonitorFormat`]):
//!
//! * **python** (the default): what python-banyan's `monitor` prints, which
//!   is `print(topic, payload)`: python's `repr` of the decoded payload
//!   (`{'pin': 4}`, `None`, `True`, `b'\x00'`, `[1, 2.5]`), a top-level
//!   string bare; see [`crate::pyrepr`] for the rules. With numpy decoding
//!   on, msgpack-numpy arrays are shown as numpy's `repr`
//!   (`array([1, 2, 3])`) and a map's bin keys as python-banyan's monitor
//!   shows them: decoded to str, its str keys then left out (python-banyan's
//!   own rule for msgpack-numpy maps).
//! * **json**: the JSON the gateways would send ([`crate::json::to_display`]:
//!   `{"pin": 4}`, `null`, `{"$bin": "AA=="}`), total for what JSON cannot
//!   carry; numpy arrays as `ndarray(<i8, shape [3]) [1, 2, 3]`.
//!
//! Where python's monitor dies (a payload that is not MessagePack, a map key
//! that is not str or bin, a str that is not UTF-8, a non-map payload with
//! numpy decoding on), ours prints a line and goes on: a payload that is not
//! MessagePack as hex with the decode error, in both formats.

use std::io::Write;

use rmpv::Value;

use crate::client::Messages;
use crate::envelope::Message;
use crate::error::Error;
use crate::json::{hex, to_display};
use crate::numpy::Numpy;
use crate::pyrepr;

/// How the monitor writes payloads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum MonitorFormat {
    /// What python-banyan's `monitor` prints: python's `repr` of the payload.
    #[default]
    Python,
    /// The JSON the WebSocket and MQTT gateways send.
    Json,
}

impl std::str::FromStr for MonitorFormat {
    type Err = Error;

    /// `python` or `json`.
    fn from_str(text: &str) -> Result<MonitorFormat, Error> {
        match text {
            "python" => Ok(MonitorFormat::Python),
            "json" => Ok(MonitorFormat::Json),
            other => Err(Error::UnknownMonitorFormat(other.to_owned())),
        }
    }
}

/// How the monitor shows messages.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MonitorConfig {
    /// Decode msgpack-numpy arrays (python's `-m True`).
    pub numpy: bool,
    /// How payloads are written.
    pub format: MonitorFormat,
}

/// Prints messages from `messages` to `out` until the stream ends or
/// `shutdown` completes. Returns how many were printed.
pub async fn run(
    messages: &mut Messages,
    config: &MonitorConfig,
    mut out: impl Write,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<u64> {
    tokio::pin!(shutdown);
    let mut count = 0;
    loop {
        let message = tokio::select! {
            message = messages.recv() => message,
            () = &mut shutdown => None,
        };
        let Some(message) = message else {
            return Ok(count);
        };
        writeln!(out, "{}", format_message(&message, config))?;
        // One message at a time, visible at once even through a pipe.
        out.flush()?;
        count += 1;
    }
}

/// One message as the monitor prints it, without the final newline (the
/// python format may hold newlines, where python prints them: a string's
/// own, numpy's rows).
pub fn format_message(message: &Message, config: &MonitorConfig) -> String {
    let topic = message.topic();
    let value = match message.value() {
        Ok(value) => value,
        Err(e) => return format!("{topic} <not MessagePack: {e}> {}", hex(message.payload())),
    };
    let shown = match (config.format, config.numpy) {
        (MonitorFormat::Python, false) => pyrepr::print_text(&value),
        (MonitorFormat::Python, true) => python_numpy_text(&value),
        (MonitorFormat::Json, false) => to_display(&value),
        (MonitorFormat::Json, true) => match Numpy::parse(&value) {
            Some(numpy) => {
                let mut out = String::new();
                numpy.write_display(&mut out);
                out
            }
            None => to_display(&value),
        },
    };
    format!("{topic} {shown}")
}

/// What python-banyan's monitor prints with `numpy=True`: msgpack-numpy's
/// decoding everywhere, then, for a map, its keys that are not str decoded
/// to str and, if there are any, only those kept (`BanyanBase.receive_loop`
/// compensating for msgpack-numpy 0.4.2).
fn python_numpy_text(value: &Value) -> String {
    let mut out = String::new();
    let Value::Map(entries) = value else {
        // python's loop dies here (`payload.items()` of a non-map); the
        // value is shown as print would show it.
        if let Value::String(_) = value {
            return pyrepr::print_text(value);
        }
        pyrepr::write_repr_numpy(value, &mut out);
        return out;
    };
    if Numpy::parse(value).is_some() {
        // Also where python dies: the array itself has no `items()`.
        pyrepr::write_repr_numpy(value, &mut out);
        return out;
    }
    let entries: Vec<(&Value, &Value)> = pyrepr::dict_entries(entries).collect();
    let not_str: Vec<&(&Value, &Value)> = entries
        .iter()
        .filter(|(k, _)| !matches!(k, Value::String(_)))
        .collect();
    out.push('{');
    let shown: Vec<&(&Value, &Value)> = if not_str.is_empty() {
        entries.iter().collect()
    } else {
        not_str
    };
    for (i, (k, v)) in shown.into_iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        match k {
            // `key.decode('utf-8')`
            Value::Binary(b) => pyrepr::write_utf8_repr(b, &mut out),
            other => pyrepr::write_repr(other, &mut out),
        }
        out.push_str(": ");
        pyrepr::write_repr_numpy(v, &mut out);
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::numpy::test_array as numpy_map;

    const JSON: MonitorConfig = MonitorConfig {
        numpy: false,
        format: MonitorFormat::Json,
    };
    const JSON_NUMPY: MonitorConfig = MonitorConfig {
        numpy: true,
        format: MonitorFormat::Json,
    };
    const PYTHON_NUMPY: MonitorConfig = MonitorConfig {
        numpy: true,
        format: MonitorFormat::Python,
    };

    #[test]
    fn prints_topic_and_payload_as_python_or_as_json() {
        let m = Message::new(
            "to_x",
            &Value::Map(vec![(Value::from("msg"), Value::from(1))]),
        );
        assert_eq!(MonitorConfig::default().format, MonitorFormat::Python);
        assert_eq!(
            format_message(&m, &MonitorConfig::default()),
            "to_x {'msg': 1}"
        );
        assert_eq!(format_message(&m, &JSON), r#"to_x {"msg": 1}"#);
        // print() shows a top-level str bare
        let m = Message::new("s", &Value::from("it's\nhere"));
        assert_eq!(
            format_message(&m, &MonitorConfig::default()),
            "s it's\nhere"
        );
        assert_eq!(format_message(&m, &JSON), r#"s "it's\nhere""#);
        assert_eq!(
            "json".parse::<MonitorFormat>().ok(),
            Some(MonitorFormat::Json)
        );
        assert_eq!(
            "python".parse::<MonitorFormat>().ok(),
            Some(MonitorFormat::Python)
        );
        assert!(matches!(
            "yaml".parse::<MonitorFormat>(),
            Err(Error::UnknownMonitorFormat(f)) if f == "yaml"
        ));
    }

    #[test]
    fn bad_payload_is_hex_with_the_error() {
        let m = Message::from_raw("t", &b"\xc1\x01"[..]);
        for config in [MonitorConfig::default(), JSON, PYTHON_NUMPY] {
            let line = format_message(&m, &config);
            assert!(line.starts_with("t <not MessagePack: "), "{line}");
            assert!(line.ends_with(" c101"), "{line}");
        }
    }

    #[test]
    fn numpy_arrays() {
        let ints: Vec<u8> = [1i64, -2, 3].iter().flat_map(|v| v.to_le_bytes()).collect();
        let m = Message::new("a", &numpy_map("<i8", &[3], ints));
        assert_eq!(
            format_message(&m, &JSON_NUMPY),
            "a ndarray(<i8, shape [3]) [1, -2, 3]"
        );
        assert_eq!(format_message(&m, &PYTHON_NUMPY), "a array([ 1, -2,  3])");
        let floats: Vec<u8> = [1.5f64, 2.5, 3.5, 4.5]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let m = Message::new("b", &numpy_map("<f8", &[2, 2], floats));
        assert_eq!(
            format_message(&m, &JSON_NUMPY),
            "b ndarray(<f8, shape [2, 2]) [[1.5, 2.5], [3.5, 4.5]]"
        );
        // without -m True the map is shown as it is
        assert!(format_message(&m, &JSON).starts_with(r#"b {"nd": true"#));
        assert!(format_message(&m, &MonitorConfig::default()).starts_with("b {b'nd': True"));
        // a shape that does not fit the data falls back to the map
        let m = Message::new("c", &numpy_map("<i8", &[2], vec![0; 8]));
        assert!(format_message(&m, &JSON_NUMPY).starts_with(r#"c {"nd""#));
        assert!(format_message(&m, &PYTHON_NUMPY).starts_with("c {'nd': True"));
    }

    #[test]
    fn python_numpy_maps_as_python_banyan_shows_them() {
        let ints: Vec<u8> = [1i64, 2].iter().flat_map(|v| v.to_le_bytes()).collect();
        let nested = Value::Map(vec![
            (Value::from("data"), numpy_map("<i8", &[2], ints)),
            (Value::from("n"), Value::from(1)),
        ]);
        assert_eq!(
            format_message(&Message::new("n", &nested), &PYTHON_NUMPY),
            "n {'data': array([1, 2]), 'n': 1}"
        );
        // bin keys decoded to str, and then the str keys left out
        let mixed = Value::Map(vec![
            (Value::Binary(b"x".to_vec()), Value::from(1)),
            (Value::from("y"), Value::from(2)),
        ]);
        assert_eq!(
            format_message(&Message::new("m", &mixed), &PYTHON_NUMPY),
            "m {'x': 1}"
        );
    }

    /// The deepest payload the decoder accepts is formatted on a thread with
    /// the stack of a tokio worker (2 MiB), in a debug build: no overflow.
    #[test]
    fn the_deepest_payload_fits_a_worker_stack() {
        // one-item arrays, or arrays and one-entry maps by turns
        let nested = |depth: usize, maps: bool| {
            let mut bytes = Vec::new();
            for i in 0..depth {
                let map = maps && i % 2 == 1;
                bytes.extend_from_slice(if map { b"\x81\xa1k" } else { b"\x91" });
            }
            bytes.push(0xc0);
            bytes
        };
        let deepest = |maps: bool| {
            (0..crate::envelope::MAX_DEPTH)
                .rev()
                .map(|d| nested(d, maps))
                .find(|bytes| crate::envelope::decode(bytes).is_ok())
                .expect("some depth decodes")
        };
        let messages = [deepest(false), deepest(true)].map(|b| Message::from_raw("deep", b));
        let worker = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                for m in &messages {
                    let value = m.value().expect("within MAX_DEPTH");
                    let json = crate::json::to_json(&value).expect("JSON");
                    assert!(crate::json::from_json(&json).is_ok());
                    for config in [MonitorConfig::default(), JSON, JSON_NUMPY, PYTHON_NUMPY] {
                        assert!(format_message(m, &config).starts_with("deep "));
                    }
                }
            })
            .expect("thread");
        worker.join().expect("no stack overflow");
    }

    /// A peer's dtype that is empty or starts with a multi-byte character
    /// once made `split_at(1)` panic and the monitor die.
    #[test]
    fn any_dtype_text_is_shown_without_panic() {
        for dtype in [
            "",
            "é",
            "éi8",
            "<",
            "<é",
            "<i",
            "<i99999999999999999999",
            "<i0",
            "\u{10ffff}",
        ] {
            let m = Message::new("t", &numpy_map(dtype, &[1], vec![0; 8]));
            for config in [JSON_NUMPY, PYTHON_NUMPY] {
                let line = format_message(&m, &config);
                assert!(line.starts_with("t {"), "{dtype:?}: {line}");
            }
        }
    }
}
