//! JSON <-> MessagePack conversion, byte for byte as python's `json` module.
//!
//! The WebSocket and MQTT gateways speak JSON on one side and MessagePack on
//! the bus; they both convert here so that a value looks the same through
//! either, and the same as through python-banyan's gateways: [`to_json`] is
//! python's `json.dumps(value)` (default arguments) of the value
//! `msgpack.unpackb(raw=False)` makes, and [`from_json`] reads what
//! `json.loads` reads. The rules (also in `docs/protocol.md`):
//!
//! | MessagePack | JSON |
//! |---|---|
//! | nil, bool | `null`, `true`/`false` |
//! | str | string, ASCII only: `\"`, `\\`, `\n`, `\r`, `\t`, `\b`, `\f`, other characters below U+0020 and from U+007F as `\u00e9`, beyond U+FFFF as a surrogate pair `\ud83c\udf89` (lower-case hex) |
//! | int (any, i64/u64 range) | number, every digit kept (JavaScript reads beyond 2^53 as a double) |
//! | float32, float64 | python's `repr` of the double (float32 widened): `1.0`, `1e-07`, `1e+16`, `100000000000000.0`, `-0.0`, `0.10000000149011612` |
//! | NaN, +inf, -inf | `NaN`, `Infinity`, `-Infinity`, as python writes them ([`to_json_strict`] refuses them: [`Error::NonFiniteFloat`]) |
//! | bin | `{"$bin": "<base64>"}` (ours: python has no JSON form for bytes) |
//! | ext | `{"$ext": [type, "<base64>"]}` (ours, likewise) |
//! | array | array |
//! | map with str keys | object, key order kept; a key repeated keeps its first place and its last value, as python's dict does |
//! | int, float, bool, nil keys | as python writes them: `"1"`, `"1.5"`, `"NaN"`, `"true"`, `"null"` |
//! | bin keys | the bytes as the key when UTF-8 (msgpack-numpy's `b'shape'` → `"shape"`; ours), else **error** [`Error::UnsupportedKey`] |
//! | array, map, ext keys | **error** [`Error::UnsupportedKey`] |
//! | str that is not UTF-8 | **error** [`Error::InvalidUtf8`] |
//!
//! And back, JSON → MessagePack:
//!
//! | JSON | MessagePack |
//! |---|---|
//! | integer within i64/u64 | int (smallest form); `-0` is int 0, as in python |
//! | integer beyond i64/u64 | float64, as JavaScript reads it (python's int would not pack) |
//! | any other number | float64; beyond the double range `1e400` is +inf, as python's `float` reads it |
//! | `NaN`, `Infinity`, `-Infinity` | float64 NaN, +inf, -inf, as `json.loads` reads them |
//! | object | map with str keys, order kept; a key repeated keeps its first place and its last value |
//! | `{"$bin": "<base64>"}` (that one key only) | bin |
//! | `{"$ext": [type, "<base64>"]}` (that one key only) | ext |
//! | a string with a lone surrogate (`"\ud800"`) | **error**: no MessagePack str holds it (python's gateway fails to pack it) |
//! | nesting deeper than [`MAX_DEPTH`] | **error** |
//! | anything else `json.loads` refuses | **error** [`Error::JsonSyntax`] with python's message (`Expecting value: line 1 column 1 (char 0)`) |
//!
//! So bin and ext survive a round trip through JSON; non-string keys come back
//! as strings.

use std::collections::HashMap;
use std::fmt::{self, Write as _};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use rmpv::Value;

use crate::envelope::MAX_DEPTH;
use crate::error::{Error, Result};
use crate::pyrepr;

/// The key of the object that stands for a MessagePack bin.
pub const BIN_TAG: &str = "$bin";
/// The key of the object that stands for a MessagePack ext.
pub const EXT_TAG: &str = "$ext";

/// Converts a MessagePack value to JSON text by the rules above: python's
/// `json.dumps(value)`, byte for byte.
pub fn to_json(value: &Value) -> Result<String> {
    let mut out = String::with_capacity(64);
    write_value(
        value,
        &mut out,
        &mut Path::default(),
        Mode::Python { allow_nan: true },
    )?;
    Ok(out)
}

/// [`to_json`] that refuses NaN and the infinities, as python's
/// `json.dumps(value, allow_nan=False)` does, for peers that read standard
/// JSON only (a browser's `JSON.parse` fails on `NaN`).
pub fn to_json_strict(value: &Value) -> Result<String> {
    let mut out = String::with_capacity(64);
    write_value(
        value,
        &mut out,
        &mut Path::default(),
        Mode::Python { allow_nan: false },
    )?;
    Ok(out)
}

/// Converts a MessagePack value to JSON-like text for people to read.
///
/// The same text as [`to_json`] wherever that has one, and total: what JSON
/// cannot carry is shown rather than refused (a composite key as its own
/// text, a bin key that is not UTF-8 as its `$bin` form, an invalid str as
/// `<invalid utf-8: hex>`). The monitor's `--format json` prints payloads
/// this way.
pub fn to_display(value: &Value) -> String {
    let mut out = String::with_capacity(64);
    // Lenient mode has no error path.
    let _ = write_value(value, &mut out, &mut Path::default(), Mode::Lenient);
    out
}

/// Parses JSON text into a MessagePack value by the rules above.
pub fn from_json(text: &str) -> Result<Value> {
    let value = Parser::new(text).document()?;
    untag(value, &mut Path::default())
}

/// Parses JSON bytes (which must be UTF-8, as python's gateway decodes them
/// before `json.loads`) into a MessagePack value.
pub fn from_json_slice(bytes: &[u8]) -> Result<Value> {
    match std::str::from_utf8(bytes) {
        Ok(text) => from_json(text),
        Err(e) => {
            // Positions count the characters of the valid part, as python
            // counts characters.
            let valid = std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default();
            Err(syntax_error(valid, valid.len(), "the text is not UTF-8"))
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// python's `json.dumps`.
    Python { allow_nan: bool },
    /// For people: never fails.
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
        Value::F32(f) => write_float(f64::from(*f), out, path, mode)?,
        Value::F64(f) => write_float(*f, out, path, mode)?,
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
            for (i, (k, v)) in pyrepr::dict_entries(entries).enumerate() {
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

/// python's `float.__repr__`, and `NaN`, `Infinity`, `-Infinity` for what
/// has no JSON number (python's `allow_nan=True` spelling).
fn write_float(f: f64, out: &mut String, path: &Path, mode: Mode) -> Result<()> {
    if f.is_finite() {
        pyrepr::write_float_repr(f, out);
        return Ok(());
    }
    let text = if f.is_nan() {
        "NaN"
    } else if f > 0.0 {
        "Infinity"
    } else {
        "-Infinity"
    };
    if mode == (Mode::Python { allow_nan: false }) {
        return Err(Error::NonFiniteFloat {
            path: path.to_string(),
            value: text.to_owned(),
        });
    }
    out.push_str(text);
    Ok(())
}

/// A JSON string as python writes it with `ensure_ascii=True`.
fn write_str(s: &str, out: &mut String) {
    out.reserve(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push('"');
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
        // python's json.dumps writes these keys as it writes the values.
        Value::Nil | Value::Boolean(_) | Value::Integer(_) | Value::F32(_) | Value::F64(_) => {
            let mut text = String::new();
            write_value(key, &mut text, &mut Path(Vec::new()), mode).map_err(|_| {
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
                let tag = match entries.first().and_then(|(k, _)| k.as_str()) {
                    Some(BIN_TAG) => Some(BIN_TAG),
                    Some(EXT_TAG) => Some(EXT_TAG),
                    _ => None,
                };
                if let Some(tag) = tag {
                    if let Some((_, content)) = entries.pop() {
                        return decode_tag(tag, content, path);
                    }
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

/// A syntax error at byte `at` of `text`, placed as python places it: line,
/// column and offset in characters.
fn syntax_error(text: &str, at: usize, reason: &'static str) -> Error {
    let before = text.get(..at).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    Error::JsonSyntax {
        reason,
        line,
        column,
        offset: before.chars().count(),
    }
}

/// A JSON reader that accepts what python's `json.loads` accepts (strict
/// mode: no control characters in strings), building the value directly.
struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    depth: usize,
}

/// Maps with more entries than this find repeated keys through a hash map.
const SCAN_MAX: usize = 16;

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Parser<'a> {
        Parser {
            text,
            bytes: text.as_bytes(),
            pos: 0,
            depth: 0,
        }
    }

    fn error(&self, at: usize, reason: &'static str) -> Error {
        syntax_error(self.text, at, reason)
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn document(&mut self) -> Result<Value> {
        if self.text.starts_with('\u{feff}') {
            return Err(self.error(0, "Unexpected UTF-8 BOM (decode using utf-8-sig)"));
        }
        self.skip_whitespace();
        let value = self.value()?;
        self.skip_whitespace();
        if self.pos != self.bytes.len() {
            return Err(self.error(self.pos, "Extra data"));
        }
        Ok(value)
    }

    fn literal(&mut self, word: &str, value: Value) -> Option<Value> {
        let end = self.pos + word.len();
        (self.bytes.get(self.pos..end) == Some(word.as_bytes())).then(|| {
            self.pos = end;
            value
        })
    }

    fn value(&mut self) -> Result<Value> {
        let found = match self.peek() {
            Some(b'"') => return self.string().map(Value::from),
            Some(b'{') => return self.nested(Self::object),
            Some(b'[') => return self.nested(Self::array),
            Some(b'n') => self.literal("null", Value::Nil),
            Some(b't') => self.literal("true", Value::Boolean(true)),
            Some(b'f') => self.literal("false", Value::Boolean(false)),
            Some(b'N') => self.literal("NaN", Value::F64(f64::NAN)),
            Some(b'I') => self.literal("Infinity", Value::F64(f64::INFINITY)),
            Some(b'-') if self.bytes.get(self.pos + 1) == Some(&b'I') => {
                self.literal("-Infinity", Value::F64(f64::NEG_INFINITY))
            }
            _ => self.number(),
        };
        found.ok_or_else(|| self.error(self.pos, "Expecting value"))
    }

    fn nested(&mut self, read: fn(&mut Self) -> Result<Value>) -> Result<Value> {
        if self.depth >= MAX_DEPTH {
            return Err(self.error(self.pos, "nesting deeper than MessagePack payloads may"));
        }
        self.depth += 1;
        let value = read(self);
        self.depth -= 1;
        value
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
        self.pos - start
    }

    /// python's number: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?`.
    fn number(&mut self) -> Option<Value> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => {
                self.pos = start;
                return None;
            }
        }
        let mut float = false;
        if self.peek() == Some(b'.') && matches!(self.bytes.get(self.pos + 1), Some(b'0'..=b'9')) {
            self.pos += 1;
            self.digits();
            float = true;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            let mark = self.pos;
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if self.digits() == 0 {
                // Not an exponent: the number ends before the `e`.
                self.pos = mark;
            } else {
                float = true;
            }
        }
        let text = self.text.get(start..self.pos)?;
        let integer = if float {
            None
        } else if text.starts_with('-') {
            text.parse::<i64>().ok().map(Value::from)
        } else {
            text.parse::<u64>().ok().map(Value::from)
        };
        // Beyond i64/u64, and every non-integer: a double, correctly
        // rounded (`1e400` is +inf, as python's float reads it).
        integer.or_else(|| text.parse::<f64>().ok().map(Value::F64))
    }

    fn hex4(&self, at: usize) -> Option<u32> {
        let digits = self.text.get(at..at + 4)?;
        if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u32::from_str_radix(digits, 16).ok()
    }

    fn string(&mut self) -> Result<String> {
        let quote = self.pos;
        self.pos += 1;
        let mut out = String::new();
        loop {
            let run_start = self.pos;
            while let Some(b) = self.peek() {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            out.push_str(self.text.get(run_start..self.pos).unwrap_or_default());
            match self.peek() {
                None => return Err(self.error(quote, "Unterminated string starting at")),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => self.escape(&mut out, quote)?,
                Some(_) => return Err(self.error(self.pos, "Invalid control character at")),
            }
        }
    }

    fn escape(&mut self, out: &mut String, quote: usize) -> Result<()> {
        let backslash = self.pos;
        let Some(kind) = self.bytes.get(backslash + 1).copied() else {
            return Err(self.error(quote, "Unterminated string starting at"));
        };
        self.pos += 2;
        let simple = match kind {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let unit = self
                    .hex4(self.pos)
                    .ok_or_else(|| self.error(backslash + 1, "Invalid \\uXXXX escape"))?;
                self.pos += 4;
                let code = if (0xd800..0xdc00).contains(&unit)
                    && self.bytes.get(self.pos..self.pos + 2) == Some(b"\\u")
                {
                    match self.hex4(self.pos + 2) {
                        Some(low @ 0xdc00..0xe000) => {
                            self.pos += 6;
                            0x10000 + ((unit - 0xd800) << 10) + (low - 0xdc00)
                        }
                        _ => unit,
                    }
                } else {
                    unit
                };
                let c = char::from_u32(code).ok_or_else(|| {
                    self.error(
                        backslash,
                        "a lone surrogate escape cannot be sent as MessagePack",
                    )
                })?;
                out.push(c);
                return Ok(());
            }
            _ => return Err(self.error(backslash, "Invalid \\escape")),
        };
        out.push(simple);
        Ok(())
    }

    fn array(&mut self) -> Result<Value> {
        self.pos += 1;
        let mut items = Vec::new();
        self.skip_whitespace();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Value::Array(items));
        }
        loop {
            items.push(self.value()?);
            self.skip_whitespace();
            match self.peek() {
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Value::Array(items));
                }
                Some(b',') => {
                    self.pos += 1;
                    self.skip_whitespace();
                }
                _ => return Err(self.error(self.pos, "Expecting ',' delimiter")),
            }
        }
    }

    fn object(&mut self) -> Result<Value> {
        self.pos += 1;
        let mut entries: Vec<(Value, Value)> = Vec::new();
        // Filled once the object outgrows a linear scan for repeated keys.
        let mut index: HashMap<String, usize> = HashMap::new();
        self.skip_whitespace();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Value::Map(entries));
        }
        loop {
            if self.peek() != Some(b'"') {
                return Err(self.error(
                    self.pos,
                    "Expecting property name enclosed in double quotes",
                ));
            }
            let key = self.string()?;
            self.skip_whitespace();
            if self.peek() != Some(b':') {
                return Err(self.error(self.pos, "Expecting ':' delimiter"));
            }
            self.pos += 1;
            self.skip_whitespace();
            let value = self.value()?;
            // python's dict: a repeated key keeps its place, takes the value.
            let earlier = if entries.len() < SCAN_MAX {
                entries.iter().position(|(k, _)| k.as_str() == Some(&key))
            } else {
                if index.is_empty() {
                    for (i, (k, _)) in entries.iter().enumerate() {
                        index.insert(k.as_str().unwrap_or_default().to_owned(), i);
                    }
                }
                index.get(&key).copied()
            };
            match earlier.and_then(|i| entries.get_mut(i)) {
                Some(entry) => entry.1 = value,
                None => {
                    if !index.is_empty() {
                        index.insert(key.clone(), entries.len());
                    }
                    entries.push((Value::from(key), value));
                }
            }
            self.skip_whitespace();
            match self.peek() {
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Value::Map(entries));
                }
                Some(b',') => {
                    self.pos += 1;
                    self.skip_whitespace();
                }
                _ => return Err(self.error(self.pos, "Expecting ',' delimiter")),
            }
        }
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
        // python's json.loads reads "-0" as the int 0; "-0.0" keeps its sign
        assert_eq!(from_json("-0").expect("-0"), Value::from(0));
        assert_eq!(from_json("-0.0").expect("-0.0"), Value::F64(-0.0));
    }

    #[test]
    fn floats_as_python_writes_them() {
        for (f, text) in [
            (1.0, "1.0"),
            (1e300, "1e+300"),
            (1e-7, "1e-07"),
            (1e16, "1e+16"),
            (100000000000000.0, "100000000000000.0"),
            (-0.0, "-0.0"),
            (5e-324, "5e-324"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (123456789012345680.0, "1.2345678901234568e+17"),
        ] {
            assert_eq!(to_json(&Value::F64(f)).expect("finite"), text);
        }
        // python sees a float32 widened to double
        assert_eq!(
            to_json(&Value::F32(0.1)).expect("f32"),
            "0.10000000149011612"
        );
        assert_eq!(from_json("1.0").expect("1.0"), Value::F64(1.0));
        assert_eq!(from_json("2.5e3").expect("2.5e3"), Value::F64(2500.0));
        assert_eq!(from_json("1E-2").expect("1E-2"), Value::F64(0.01));
        assert_eq!(
            from_json("1e400").expect("1e400"),
            Value::F64(f64::INFINITY)
        );
        let back = from_json(&to_json(&Value::F64(0.1 + 0.2)).expect("f64")).expect("parses");
        assert_eq!(back, Value::F64(0.1 + 0.2));
    }

    #[test]
    fn non_finite_floats_as_python_writes_them_and_strict_refuses() {
        let v = map(vec![(
            Value::from("reading"),
            Value::Array(vec![
                Value::F64(1.0),
                Value::F64(f64::NAN),
                Value::F32(f32::INFINITY),
                Value::F64(f64::NEG_INFINITY),
            ]),
        )]);
        assert_eq!(
            to_json(&v).expect("python writes them"),
            r#"{"reading": [1.0, NaN, Infinity, -Infinity]}"#
        );
        match to_json_strict(&v) {
            Err(Error::NonFiniteFloat { path, value }) => {
                assert_eq!(path, "$.reading[1]");
                assert_eq!(value, "NaN");
            }
            other => panic!("expected NonFiniteFloat, got {other:?}"),
        }
        assert!(matches!(
            to_json_strict(&Value::F64(f64::NEG_INFINITY)),
            Err(Error::NonFiniteFloat { value, .. }) if value == "-Infinity"
        ));
        // and read back as python's json.loads reads them
        let back = from_json(r#"[NaN, Infinity, -Infinity]"#).expect("python reads them");
        let floats: Vec<f64> = back
            .as_array()
            .expect("array")
            .iter()
            .filter_map(Value::as_f64)
            .collect();
        assert!(floats[0].is_nan());
        assert_eq!(floats[1..], [f64::INFINITY, f64::NEG_INFINITY]);
        for bad in ["nan", "-NaN", "+Infinity", "Inf", "-Inf", "infinity"] {
            assert!(
                matches!(from_json(bad), Err(Error::JsonSyntax { .. })),
                "{bad}"
            );
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
            (Value::Boolean(false), Value::from("bool")),
            (Value::Nil, Value::from("nil")),
            (Value::Binary(b"shape".to_vec()), Value::from("bin")),
            (Value::F64(f64::NAN), Value::from("nan")),
            (Value::F64(f64::NEG_INFINITY), Value::from("-inf")),
        ]);
        assert_eq!(
            to_json(&v).expect("converts"),
            r#"{"1": "int", "1.5": "float", "false": "bool", "null": "nil", "shape": "bin", "NaN": "nan", "-Infinity": "-inf"}"#
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
            to_json_strict(&map(vec![(Value::F64(f64::NAN), Value::Nil)])),
            Err(Error::NonFiniteFloat { .. })
        ));
    }

    #[test]
    fn repeated_keys_keep_their_first_place_and_last_value() {
        // python: {1: 'a', True: 'b', 1.0: 'c'} is {1: 'c'}; "x" twice is one key
        let v = map(vec![
            (Value::from(1), Value::from("a")),
            (Value::from("x"), Value::from(1)),
            (Value::Boolean(true), Value::from("b")),
            (Value::F64(1.0), Value::from("c")),
            (Value::from("x"), Value::from(2)),
        ]);
        assert_eq!(to_json(&v).expect("converts"), r#"{"1": "c", "x": 2}"#);
        assert_eq!(
            from_json(r#"{"a": 1, "b": 2, "a": 3}"#).expect("parses"),
            map(vec![
                (Value::from("a"), Value::from(3)),
                (Value::from("b"), Value::from(2)),
            ])
        );
        // past the linear scan too
        let text = format!(
            "{{{}, \"k3\": \"again\"}}",
            (0..40)
                .map(|i| format!("\"k{i}\": {i}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let parsed = from_json(&text).expect("parses");
        let entries = parsed.as_map().expect("map");
        assert_eq!(entries.len(), 40);
        assert_eq!(entries[3], (Value::from("k3"), Value::from("again")));
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
    fn strings_are_escaped_as_python_with_ensure_ascii() {
        let v = Value::from("quote \" backslash \\ slash / newline \n tab \t nul \u{0} é ✓ 🎉 \u{7f}\u{8}\u{c}\r\u{1f}");
        let text = to_json(&v).expect("converts");
        assert_eq!(
            text,
            r#""quote \" backslash \\ slash / newline \n tab \t nul \u0000 \u00e9 \u2713 \ud83c\udf89 \u007f\b\f\r\u001f""#
        );
        assert_eq!(from_json(&text).expect("parses"), v);
        // escapes python reads: \/ and upper-case hex; raw non-ASCII too
        assert_eq!(
            from_json(r#""\/\u00E9é\uD83C\uDF89""#).expect("parses"),
            Value::from("/éé🎉")
        );
    }

    #[test]
    fn syntax_errors_are_worded_and_placed_as_python() {
        for (bad, message) in [
            ("", "Expecting value: line 1 column 1 (char 0)"),
            (
                "{",
                "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
            ),
            (
                "{\"id\"}",
                "Expecting ':' delimiter: line 1 column 6 (char 5)",
            ),
            ("[1,]", "Expecting value: line 1 column 4 (char 3)"),
            ("[1 2]", "Expecting ',' delimiter: line 1 column 4 (char 3)"),
            ("'x'", "Expecting value: line 1 column 1 (char 0)"),
            ("{\"a\":1} trailing", "Extra data: line 1 column 9 (char 8)"),
            (
                "[\n  1.]",
                "Expecting ',' delimiter: line 2 column 4 (char 5)",
            ),
            ("01", "Extra data: line 1 column 2 (char 1)"),
            (
                "\"é\tx\"",
                "Invalid control character at: line 1 column 3 (char 2)",
            ),
            (
                "\"abc",
                "Unterminated string starting at: line 1 column 1 (char 0)",
            ),
            ("\"\\x\"", "Invalid \\escape: line 1 column 2 (char 1)"),
            (
                "\"\\u12\"",
                "Invalid \\uXXXX escape: line 1 column 3 (char 2)",
            ),
            (
                "\u{feff}1",
                "Unexpected UTF-8 BOM (decode using utf-8-sig): line 1 column 1 (char 0)",
            ),
        ] {
            match from_json(bad) {
                Err(e @ Error::JsonSyntax { .. }) => {
                    assert_eq!(e.to_string(), format!("invalid JSON: {message}"), "{bad:?}")
                }
                other => panic!("{bad:?}: expected JsonSyntax, got {other:?}"),
            }
        }
        // python keeps a lone surrogate, which no MessagePack str can hold
        assert!(matches!(
            from_json(r#""\ud800""#),
            Err(Error::JsonSyntax { .. })
        ));
        assert!(matches!(
            from_json(r#""\udc00\ud800x""#),
            Err(Error::JsonSyntax { .. })
        ));
        let deep = "[".repeat(10_000) + &"]".repeat(10_000);
        assert!(matches!(from_json(&deep), Err(Error::JsonSyntax { .. })));
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(from_json(&ok).is_ok());
        assert!(matches!(
            from_json_slice(b"\"\xff\""),
            Err(Error::JsonSyntax { offset: 1, .. })
        ));
        assert_eq!(
            from_json(" \t\r\n 1 \n").expect("whitespace"),
            Value::from(1)
        );
    }

    #[test]
    fn display_is_json_where_json_has_a_form_and_shows_the_rest() {
        let v = map(vec![(
            Value::Array(vec![Value::from(1)]),
            Value::F64(f64::INFINITY),
        )]);
        assert_eq!(to_display(&v), r#"{"[1]": Infinity}"#);
        assert_eq!(to_display(&Value::from(5)), "5");
        let plain = map(vec![(Value::from("é"), Value::F32(0.5))]);
        assert_eq!(to_display(&plain), to_json(&plain).expect("json"));
    }
}
