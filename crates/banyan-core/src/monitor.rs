//! The monitor: prints every message on the bus as `topic payload`.
//!
//! The payload is shown JSON-like ([`crate::json::to_display`]); a payload
//! that is not MessagePack is shown as hex with the decode error, and the
//! monitor goes on. With numpy decoding on, msgpack-numpy arrays are shown as
//! `ndarray(<dtype>, shape [..]) [values]`.

use std::io::Write;

use rmpv::Value;

use crate::client::Messages;
use crate::envelope::Message;
use crate::json::{hex, to_display};

/// How the monitor shows messages.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MonitorConfig {
    /// Decode msgpack-numpy arrays (python's `-m True`).
    pub numpy: bool,
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
        // One line per message, visible at once even through a pipe.
        out.flush()?;
        count += 1;
    }
}

/// One message as the monitor prints it, without the newline.
pub fn format_message(message: &Message, config: &MonitorConfig) -> String {
    match message.value() {
        Ok(value) => {
            let shown = if config.numpy {
                numpy_display(&value).unwrap_or_else(|| to_display(&value))
            } else {
                to_display(&value)
            };
            format!("{} {shown}", message.topic())
        }
        Err(e) => format!(
            "{} <not MessagePack: {e}> {}",
            message.topic(),
            hex(message.payload())
        ),
    }
}

/// Shows a msgpack-numpy array (`{b'nd': True, b'type': '<i8', b'shape':
/// [..], b'data': bin}`), or `None` if `value` is not one this understands.
fn numpy_display(value: &Value) -> Option<String> {
    let map = value.as_map()?;
    let field = |name: &[u8]| {
        map.iter()
            .find(|(k, _)| {
                matches!(k, Value::Binary(b) if b == name)
                    || k.as_str().map(str::as_bytes) == Some(name)
            })
            .map(|(_, v)| v)
    };
    if field(b"nd")?.as_bool() != Some(true) {
        return None;
    }
    let dtype = field(b"type")?.as_str()?;
    let shape: Vec<usize> = field(b"shape")?
        .as_array()?
        .iter()
        .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
        .collect::<Option<_>>()?;
    let data = match field(b"data")? {
        Value::Binary(b) => b.as_slice(),
        _ => return None,
    };
    let elements = decode_elements(dtype, data)?;
    if shape.iter().product::<usize>() != elements.len() {
        return None;
    }
    let mut out = format!("ndarray({dtype}, shape {shape:?}) ");
    nest(&elements, &shape, &mut out);
    Some(out)
}

fn decode_elements(dtype: &str, data: &[u8]) -> Option<Vec<String>> {
    let (order, kind) = dtype.split_at(1);
    let big = match order {
        "<" | "|" | "=" => false,
        ">" => true,
        _ => return None,
    };
    let size: usize = kind.get(1..)?.parse().ok()?;
    if size == 0 || data.len() % size != 0 {
        return None;
    }
    data.chunks(size)
        .map(|chunk| {
            let mut raw = [0u8; 8];
            if size > 8 {
                return None;
            }
            if big {
                raw[..size].copy_from_slice(chunk);
                raw[..size].reverse();
            } else {
                raw[..size].copy_from_slice(chunk);
            }
            let bits = u64::from_le_bytes(raw);
            let text = match (kind.as_bytes()[0], size) {
                (b'b', 1) => (bits != 0).to_string(),
                (b'u', _) => bits.to_string(),
                (b'i', _) => {
                    let shift = 64 - 8 * size as u32;
                    (((bits << shift) as i64) >> shift).to_string()
                }
                (b'f', 4) => format!("{:?}", f32::from_bits(bits as u32)),
                (b'f', 8) => format!("{:?}", f64::from_bits(bits)),
                _ => return None,
            };
            Some(text)
        })
        .collect()
}

fn nest(elements: &[String], shape: &[usize], out: &mut String) {
    match shape.split_first() {
        None => out.push_str(elements.first().map_or("", String::as_str)),
        Some((&n, rest)) => {
            let step = rest.iter().product::<usize>();
            out.push('[');
            for i in 0..n {
                if i > 0 {
                    out.push_str(", ");
                }
                nest(&elements[i * step..(i + 1) * step], rest, out);
            }
            out.push(']');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numpy_map(dtype: &str, shape: &[u64], data: Vec<u8>) -> Value {
        Value::Map(vec![
            (Value::Binary(b"nd".to_vec()), Value::Boolean(true)),
            (Value::Binary(b"type".to_vec()), Value::from(dtype)),
            (Value::Binary(b"kind".to_vec()), Value::Binary(vec![])),
            (
                Value::Binary(b"shape".to_vec()),
                Value::Array(shape.iter().map(|&d| Value::from(d)).collect()),
            ),
            (Value::Binary(b"data".to_vec()), Value::Binary(data)),
        ])
    }

    #[test]
    fn prints_topic_and_readable_payload() {
        let m = Message::new(
            "to_x",
            &Value::Map(vec![(Value::from("msg"), Value::from(1))]),
        );
        assert_eq!(
            format_message(&m, &MonitorConfig::default()),
            r#"to_x {"msg": 1}"#
        );
    }

    #[test]
    fn bad_payload_is_hex_with_the_error() {
        let m = Message::from_raw("t", &b"\xc1\x01"[..]);
        let line = format_message(&m, &MonitorConfig::default());
        assert!(line.starts_with("t <not MessagePack: "), "{line}");
        assert!(line.ends_with(" c101"), "{line}");
    }

    #[test]
    fn numpy_arrays() {
        let ints: Vec<u8> = [1i64, -2, 3].iter().flat_map(|v| v.to_le_bytes()).collect();
        let m = Message::new("a", &numpy_map("<i8", &[3], ints));
        let numpy = MonitorConfig { numpy: true };
        assert_eq!(
            format_message(&m, &numpy),
            "a ndarray(<i8, shape [3]) [1, -2, 3]"
        );
        let floats: Vec<u8> = [1.5f64, 2.5, 3.5, 4.5]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let m = Message::new("b", &numpy_map("<f8", &[2, 2], floats));
        assert_eq!(
            format_message(&m, &numpy),
            "b ndarray(<f8, shape [2, 2]) [[1.5, 2.5], [3.5, 4.5]]"
        );
        // without -m True the map is shown as it is
        assert!(format_message(&m, &MonitorConfig::default()).starts_with(r#"b {"nd": true"#));
        // a shape that does not fit the data falls back to the map
        let m = Message::new("c", &numpy_map("<i8", &[2], vec![0; 8]));
        assert!(format_message(&m, &numpy).starts_with(r#"c {"nd""#));
    }
}
