//! Python's text forms of a payload: what `repr` and `print` show.
//!
//! python-banyan's `monitor` prints every message with `print(topic,
//! payload)`, the payload being what `msgpack.unpackb(raw=False)` made of
//! frame 2. This module writes the same text from an [`rmpv::Value`], so our
//! monitor prints what python's prints:
//!
//! | MessagePack | python value | shown |
//! |---|---|---|
//! | nil, bool | `None`, `True`/`False` | `None`, `True` |
//! | int | `int` | `-5`, `18446744073709551615` |
//! | float32, float64 | `float` (float32 widened to double) | `repr`: `1.0`, `1e-05`, `1e+16`, `nan`, `-inf`, `0.10000000149011612` |
//! | str | `str` | `repr`: `'pin'`, `"it's"`, `'\x00'`, `'é'` (printable characters kept, others escaped); a top-level str bare |
//! | bin | `bytes` | `b'\x00ab'` |
//! | array | `list` | `[1, 2.5]` |
//! | map | `dict` | `{'pin': 4}`: a key repeated keeps its first place and its last value, as a dict does |
//! | ext -1 of 4, 8 or 12 bytes | `msgpack.Timestamp` | `Timestamp(seconds=1, nanoseconds=0)` |
//! | other ext | `msgpack.ExtType` | `ExtType(code=5, data=b'\x01')` |
//!
//! python-banyan refuses some payloads that MessagePack allows, and its
//! monitor dies on them; these are shown as python would show them if it
//! had decoded them:
//!
//! * map keys other than str and bin (msgpack's `strict_map_key`): as
//!   `strict_map_key=False` shows them (`{1: 'one'}`); an array key, which
//!   python cannot hash, as a list;
//! * a str that is not UTF-8: decoded with python's `surrogateescape`, so
//!   each bad byte shows as `\udcXX` (`'ok\udcff'`);
//! * an ext -1 that is not a valid timestamp, and an ext with another
//!   negative type (msgpack's `ExtType` takes 0 to 127 only): as an
//!   `ExtType` (`ExtType(code=-5, data=b'')`).
//!
//! Which characters `repr` keeps is python's `str.isprintable()` of Unicode
//! [`UNICODE_VERSION`] (Python 3.11's); a newer python also keeps the
//! characters assigned since then, which we escape.

mod printable;

use std::fmt::Write as _;

use rmpv::Value;

pub use printable::UNICODE_VERSION;

/// The text python's `repr` gives for the value `msgpack.unpackb` makes of
/// `value`, on one line.
pub fn repr(value: &Value) -> String {
    let mut out = String::with_capacity(64);
    write_repr(value, &mut out);
    out
}

/// [`repr`] of what msgpack-numpy's decoding (python-banyan's
/// `numpy=True`) makes of `value`: its msgpack-numpy arrays and scalars as
/// numpy's `repr` shows them (`array([1, 2, 3])`, `np.float32(0.5)`), for the
/// dtypes the monitor's docs list; other values as [`repr`].
pub fn repr_numpy(value: &Value) -> String {
    let mut out = String::with_capacity(64);
    write_repr_numpy(value, &mut out);
    out
}

/// The text `print(value)` shows: [`repr`], except that a top-level str is
/// its text itself.
pub fn print_text(value: &Value) -> String {
    match value {
        Value::String(s) => {
            let mut out = String::with_capacity(s.as_bytes().len());
            for code in code_points(s.as_bytes()) {
                match char::from_u32(code) {
                    Some(c) => out.push(c),
                    // A bad byte: python's print would fail on the lone
                    // surrogate, so show it the way repr spells it.
                    None => push_escape(code, &mut out),
                }
            }
            out
        }
        other => repr(other),
    }
}

/// Writes python's `repr` of `value` to `out`.
pub(crate) fn write_repr(value: &Value, out: &mut String) {
    write_any(value, out, false);
}

/// Writes python's `repr` of what msgpack-numpy's decoding makes of `value`
/// (python-banyan's `numpy=True`): msgpack-numpy arrays and scalars as numpy
/// shows them, anywhere in the value.
pub(crate) fn write_repr_numpy(value: &Value, out: &mut String) {
    write_any(value, out, true);
}

fn write_any(value: &Value, out: &mut String, numpy: bool) {
    if numpy && crate::numpy::write_numpy(value, out) {
        return;
    }
    match value {
        Value::Nil => out.push_str("None"),
        Value::Boolean(b) => out.push_str(if *b { "True" } else { "False" }),
        Value::Integer(i) => {
            let _ = write!(out, "{i}");
        }
        Value::F32(f) => write_float_repr(f64::from(*f), out),
        Value::F64(f) => write_float_repr(*f, out),
        Value::String(s) => write_str_repr(code_points(s.as_bytes()), out),
        Value::Binary(b) => write_bytes_repr(b, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_any(item, out, numpy);
            }
            out.push(']');
        }
        Value::Map(entries) => {
            out.push('{');
            for (i, (k, v)) in dict_entries(entries).enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_any(k, out, numpy);
                out.push_str(": ");
                write_any(v, out, numpy);
            }
            out.push('}');
        }
        Value::Ext(code, data) => match timestamp(*code, data) {
            Some((seconds, nanoseconds)) => {
                let _ = write!(
                    out,
                    "Timestamp(seconds={seconds}, nanoseconds={nanoseconds})"
                );
            }
            None => {
                let _ = write!(out, "ExtType(code={code}, data=");
                write_bytes_repr(data, out);
                out.push(')');
            }
        },
    }
}

/// Writes the `repr` of the str python decodes from `bytes` (UTF-8, bad
/// bytes escaped as [`repr`] escapes them in a str).
pub(crate) fn write_utf8_repr(bytes: &[u8], out: &mut String) {
    write_str_repr(code_points(bytes), out);
}

/// python's `repr` of a float: the shortest digits that read back as the
/// same double, in fixed notation from 1e-4 up to 1e16 (`0.0001`,
/// `1000000000000000.0`) and in exponent notation outside it (`1e-05`,
/// `1e+16`); `nan`, `inf`, `-inf`.
pub fn float_repr(f: f64) -> String {
    let mut out = String::with_capacity(24);
    write_float_repr(f, &mut out);
    out
}

/// Writes [`float_repr`] of `f` to `out`.
pub(crate) fn write_float_repr(f: f64, out: &mut String) {
    if f.is_nan() {
        out.push_str("nan");
    } else if f.is_infinite() {
        out.push_str(if f > 0.0 { "inf" } else { "-inf" });
    } else {
        write_finite(f, out);
    }
}

/// The shortest round-trip digits of a finite `f` and its decimal exponent:
/// `f = 0.DIGITS × 10^point`, as David Gay's `dtoa` (python's) reports them.
pub(crate) fn shortest_digits(f: f64) -> (bool, String, i32) {
    // Rust's `{:e}` prints the shortest digits that read back as `f`, like
    // python's repr: `-1.2345e-7`, `0e0`. When two such digit strings are
    // equally close to `f` (a float32 widened, -174.135284423828125), Rust
    // takes the upper and python the even one: the correctly rounded digits
    // of the same length (Rust's precision formatting rounds half to even)
    // are python's whenever they read back as `f`.
    let mut text = format!("{f:e}");
    let length = text.find('e').unwrap_or(text.len()) - usize::from(f.is_sign_negative());
    let significant = length.saturating_sub(1).max(1);
    let rounded = format!("{f:.*e}", significant - 1);
    if rounded != text && rounded.parse::<f64>() == Ok(f) {
        text = rounded;
    }
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.as_str()),
    };
    let (mantissa, exponent) = text.split_once('e').unwrap_or((text, "0"));
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let exponent: i32 = exponent.parse().unwrap_or(0);
    (negative, digits, exponent + 1)
}

fn write_finite(f: f64, out: &mut String) {
    let (negative, digits, point) = shortest_digits(f);
    write_layout(negative, &digits, point, out);
}

/// Lays out `digits` with the decimal point `point` places from their
/// start as python's float repr does (`float_repr_style` 'short'):
/// exponent notation when the point is more than 4 places left of the
/// digits or 16 places right, else fixed with at least one decimal
/// (`1.0`). numpy's repr of its floats lays out the same way.
pub(crate) fn write_layout(negative: bool, digits: &str, point: i32, out: &mut String) {
    if negative {
        out.push('-');
    }
    if point <= -4 || point > 16 {
        let (first, rest) = digits.split_at(1.min(digits.len()));
        out.push_str(first);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        let exponent = point - 1;
        let sign = if exponent < 0 { '-' } else { '+' };
        let _ = write!(out, "e{sign}{:02}", exponent.unsigned_abs());
    } else if point <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', point.unsigned_abs() as usize));
        out.push_str(digits);
    } else {
        let point = point.unsigned_abs() as usize;
        if point >= digits.len() {
            out.push_str(digits);
            out.extend(std::iter::repeat_n('0', point - digits.len()));
            out.push_str(".0");
        } else {
            let (int, frac) = digits.split_at(point);
            out.push_str(int);
            out.push('.');
            out.push_str(frac);
        }
    }
}

/// The code points python's `bytes.decode('utf-8', 'surrogateescape')`
/// gives: those of the valid UTF-8, and U+DC80..U+DCFF for each bad byte.
pub(crate) fn code_points(bytes: &[u8]) -> impl Iterator<Item = u32> + Clone + '_ {
    bytes.utf8_chunks().flat_map(|chunk| {
        chunk
            .valid()
            .chars()
            .map(u32::from)
            .chain(chunk.invalid().iter().map(|b| 0xdc00 | u32::from(*b)))
    })
}

/// Whether python's `str.isprintable()` holds for this code point.
pub(crate) fn is_printable(code: u32) -> bool {
    let table = printable::NOT_PRINTABLE;
    let i = table.partition_point(|&(_, last)| last < code);
    table.get(i).is_none_or(|&(first, _)| first > code)
}

/// python's escape of a character `repr` does not keep: `\xHH`, `\uHHHH`
/// or `\UHHHHHHHH`, in lower-case hex.
fn push_escape(code: u32, out: &mut String) {
    let _ = if code <= 0xff {
        write!(out, "\\x{code:02x}")
    } else if code <= 0xffff {
        write!(out, "\\u{code:04x}")
    } else {
        write!(out, "\\U{code:08x}")
    };
}

/// python's `repr` of a str (CPython's `unicode_repr`): single quotes unless
/// the text has `'` and no `"`; `\\`, the quote, `\t`, `\n`, `\r` escaped;
/// other characters kept when printable, else `\x`, `\u` or `\U` escapes.
pub fn str_repr(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    write_str_repr(s.chars().map(u32::from), &mut out);
    out
}

fn write_str_repr<I: Iterator<Item = u32> + Clone>(codes: I, out: &mut String) {
    let (single, double) = codes.clone().fold((false, false), |(s, d), c| {
        (s || c == u32::from('\''), d || c == u32::from('"'))
    });
    let quote = if single && !double { '"' } else { '\'' };
    out.push(quote);
    for code in codes {
        match char::from_u32(code) {
            Some(c) if c == quote || c == '\\' => {
                out.push('\\');
                out.push(c);
            }
            Some('\t') => out.push_str("\\t"),
            Some('\n') => out.push_str("\\n"),
            Some('\r') => out.push_str("\\r"),
            Some(c) if c.is_ascii() && !c.is_ascii_control() => out.push(c),
            Some(c) if !c.is_ascii() && is_printable(code) => out.push(c),
            _ => push_escape(code, out),
        }
    }
    out.push(quote);
}

/// python's `repr` of bytes: `b'...'` with the quoting of [`str_repr`],
/// printable ASCII kept and every other byte as `\xHH`.
pub fn bytes_repr(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 3);
    write_bytes_repr(bytes, &mut out);
    out
}

fn write_bytes_repr(bytes: &[u8], out: &mut String) {
    let quote = if bytes.contains(&b'\'') && !bytes.contains(&b'"') {
        b'"'
    } else {
        b'\''
    };
    out.push('b');
    out.push(char::from(quote));
    for &b in bytes {
        match b {
            b'\\' => out.push_str("\\\\"),
            _ if b == quote => {
                out.push('\\');
                out.push(char::from(b));
            }
            b'\t' => out.push_str("\\t"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            0x20..=0x7e => out.push(char::from(b)),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    out.push(char::from(quote));
}

/// The seconds and nanoseconds of a MessagePack timestamp (ext -1), or
/// `None` when msgpack would refuse it (wrong length, nanoseconds beyond
/// 999,999,999).
fn timestamp(code: i8, data: &[u8]) -> Option<(i64, u32)> {
    if code != -1 {
        return None;
    }
    let (seconds, nanoseconds) = match data.len() {
        4 => (i64::from(u32::from_be_bytes(data.try_into().ok()?)), 0),
        8 => {
            let both = u64::from_be_bytes(data.try_into().ok()?);
            let nanoseconds = u32::try_from(both >> 34).ok()?;
            let seconds = i64::try_from(both & 0x3_ffff_ffff).ok()?;
            (seconds, nanoseconds)
        }
        12 => {
            let (nanoseconds, seconds) = data.split_at(4);
            (
                i64::from_be_bytes(seconds.try_into().ok()?),
                u32::from_be_bytes(nanoseconds.try_into().ok()?),
            )
        }
        _ => return None,
    };
    (nanoseconds <= 999_999_999).then_some((seconds, nanoseconds))
}

/// How python tells dict keys apart: equal keys are one entry.
#[derive(PartialEq, Eq, Hash)]
enum KeyId<'a> {
    /// None.
    Nil,
    /// An int, a bool (`True == 1`) or a float equal to an integer
    /// (`1.0 == 1`, `-0.0 == 0`).
    Int(i128),
    /// Any other float but NaN, by its bits.
    Float(u64),
    /// A str, by its bytes.
    Str(&'a [u8]),
    /// bytes.
    Bytes(&'a [u8]),
    /// An ext (`ExtType` and `Timestamp` compare by their contents).
    Ext(i8, &'a [u8]),
    /// A NaN: every decoded NaN is a distinct object, and a dict tells them
    /// apart. Also an array or map key, which python cannot hash at all.
    Unique(usize),
}

fn key_id(key: &Value, index: usize) -> KeyId<'_> {
    match key {
        Value::Nil => KeyId::Nil,
        Value::Boolean(b) => KeyId::Int(i128::from(*b)),
        Value::Integer(i) => match (i.as_i64(), i.as_u64()) {
            (Some(n), _) => KeyId::Int(i128::from(n)),
            (None, Some(n)) => KeyId::Int(i128::from(n)),
            (None, None) => KeyId::Unique(index),
        },
        Value::F32(f) => float_key(f64::from(*f), index),
        Value::F64(f) => float_key(*f, index),
        Value::String(s) => KeyId::Str(s.as_bytes()),
        Value::Binary(b) => KeyId::Bytes(b),
        Value::Ext(code, data) => KeyId::Ext(*code, data),
        Value::Array(_) | Value::Map(_) => KeyId::Unique(index),
    }
}

fn float_key(f: f64, index: usize) -> KeyId<'static> {
    // Every int that MessagePack carries lies in [-2^63, 2^64).
    if f.is_nan() {
        KeyId::Unique(index)
    } else if f.fract() == 0.0
        && (-9.223_372_036_854_776e18..1.844_674_407_370_955_2e19).contains(&f)
    {
        // Exact: an integral double in this range is an integer below 2^64.
        KeyId::Int(f as i128)
    } else {
        KeyId::Float(f.to_bits())
    }
}

/// The entries of a MessagePack map as the python dict made of it holds
/// them: a key seen again keeps its first place and takes the later value.
pub(crate) fn dict_entries(
    entries: &[(Value, Value)],
) -> impl Iterator<Item = (&Value, &Value)> + '_ {
    let merged = merge_repeated_keys(entries);
    let mut i = 0;
    std::iter::from_fn(move || {
        let out = match &merged {
            None => entries.get(i).map(|(k, v)| (k, v)),
            Some(pairs) => pairs
                .get(i)
                .and_then(|&(k, v)| Some((&entries.get(k)?.0, &entries.get(v)?.1))),
        };
        i += 1;
        out
    })
}

/// `None` when no key repeats (the usual case, found without allocating
/// for small maps); else (key index, value index) in dict order.
fn merge_repeated_keys(entries: &[(Value, Value)]) -> Option<Vec<(usize, usize)>> {
    const SCAN_MAX: usize = 16;
    let ids: Vec<KeyId<'_>>;
    let repeated = if entries.len() <= SCAN_MAX {
        entries.iter().enumerate().any(|(i, (k, _))| {
            let id = key_id(k, i);
            entries[..i]
                .iter()
                .enumerate()
                .any(|(j, (earlier, _))| key_id(earlier, j) == id)
        })
    } else {
        ids = entries
            .iter()
            .enumerate()
            .map(|(i, (k, _))| key_id(k, i))
            .collect();
        let mut seen = std::collections::HashSet::with_capacity(ids.len());
        !ids.iter().all(|id| seen.insert(id))
    };
    if !repeated {
        return None;
    }
    let mut order: Vec<(usize, usize)> = Vec::new();
    let mut place: std::collections::HashMap<KeyId<'_>, usize> = std::collections::HashMap::new();
    for (i, (k, _)) in entries.iter().enumerate() {
        match place.entry(key_id(k, i)) {
            std::collections::hash_map::Entry::Occupied(slot) => {
                if let Some(pair) = order.get_mut(*slot.get()) {
                    pair.1 = i;
                }
            }
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(order.len());
                order.push((i, i));
            }
        }
    }
    Some(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(entries: Vec<(Value, Value)>) -> Value {
        Value::Map(entries)
    }

    #[test]
    fn floats_as_python_repr() {
        for (f, text) in [
            (1.0, "1.0"),
            (-0.0, "-0.0"),
            (0.0, "0.0"),
            (1e-7, "1e-07"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (100000000000000.0, "100000000000000.0"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (0.1, "0.1"),
            (5e-324, "5e-324"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (123456789012345680.0, "1.2345678901234568e+17"),
            (1.5e300, "1.5e+300"),
            (f64::NAN, "nan"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
        ] {
            assert_eq!(float_repr(f), text, "{f:e}");
        }
        assert_eq!(repr(&Value::F32(0.1)), "0.10000000149011612");
    }

    #[test]
    fn str_quoting_and_escapes() {
        assert_eq!(str_repr("pin"), "'pin'");
        assert_eq!(str_repr("it's"), "\"it's\"");
        assert_eq!(str_repr("'\""), "'\\'\"'");
        assert_eq!(
            str_repr("a\\b\t\n\r\x00\x1f\x7f"),
            "'a\\\\b\\t\\n\\r\\x00\\x1f\\x7f'"
        );
        // printable non-ASCII kept; other characters escaped by size
        assert_eq!(str_repr("é日🎉"), "'é日🎉'");
        assert_eq!(
            str_repr("\u{a0}\u{ad}\u{378}\u{200b}\u{e0001}"),
            "'\\xa0\\xad\\u0378\\u200b\\U000e0001'"
        );
        assert_eq!(str_repr(" "), "' '");
        assert_eq!(print_text(&Value::from("bare 'text'\n")), "bare 'text'\n");
    }

    #[test]
    fn invalid_utf8_is_surrogate_escaped() {
        let v = crate::envelope::decode(b"\xa4ok\xff\xe9").expect("rmpv keeps it");
        assert_eq!(repr(&v), "'ok\\udcff\\udce9'");
        assert_eq!(print_text(&v), "ok\\udcff\\udce9");
    }

    #[test]
    fn bytes_and_ext() {
        assert_eq!(bytes_repr(b"\x00ab'"), "b\"\\x00ab'\"");
        assert_eq!(bytes_repr(b"\\\xff\t"), "b'\\\\\\xff\\t'");
        assert_eq!(
            repr(&Value::Ext(5, vec![1])),
            "ExtType(code=5, data=b'\\x01')"
        );
        assert_eq!(
            repr(&Value::Ext(-1, vec![0, 0, 0, 1])),
            "Timestamp(seconds=1, nanoseconds=0)"
        );
        let mut twelve = vec![0x3b, 0x9a, 0xc9, 0xff];
        twelve.extend([0xff; 8]);
        assert_eq!(
            repr(&Value::Ext(-1, twelve)),
            "Timestamp(seconds=-1, nanoseconds=999999999)"
        );
        // not a timestamp msgpack accepts
        assert_eq!(
            repr(&Value::Ext(-1, vec![1])),
            "ExtType(code=-1, data=b'\\x01')"
        );
        assert_eq!(
            repr(&Value::Ext(-1, vec![0xff; 8])),
            "ExtType(code=-1, data=b'\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff')"
        );
    }

    #[test]
    fn containers_and_repeated_keys() {
        let v = map(vec![
            (Value::from("pin"), Value::from(4)),
            (
                Value::from("list"),
                Value::Array(vec![Value::from(1), Value::F64(2.5), Value::Nil]),
            ),
            (Value::Binary(b"k".to_vec()), Value::Boolean(true)),
        ]);
        assert_eq!(repr(&v), "{'pin': 4, 'list': [1, 2.5, None], b'k': True}");
        let repeated = map(vec![
            (Value::from("a"), Value::from(1)),
            (Value::from(1), Value::from("int")),
            (Value::from("a"), Value::from(2)),
            (Value::F64(1.0), Value::from("float")),
            (Value::Boolean(true), Value::from("bool")),
            (Value::Binary(b"a".to_vec()), Value::from(3)),
            (Value::F64(f64::NAN), Value::from(4)),
            (Value::F64(f64::NAN), Value::from(5)),
        ]);
        assert_eq!(
            repr(&repeated),
            "{'a': 2, 1: 'bool', b'a': 3, nan: 4, nan: 5}"
        );
        let many: Vec<(Value, Value)> = (0..40)
            .map(|i| (Value::from(i % 20), Value::from(i)))
            .collect();
        let shown = repr(&map(many));
        assert!(shown.starts_with("{0: 20, 1: 21, "), "{shown}");
        assert!(shown.ends_with(", 19: 39}"), "{shown}");
        assert_eq!(print_text(&map(vec![])), "{}");
    }

    #[test]
    fn printable_table_edges() {
        for (code, printable) in [
            (0x20, true),
            (0x7e, true),
            (0x7f, false),
            (0xa0, false),
            (0xa1, true),
            (0x10ffff, false),
            (0x1f389, true),
        ] {
            assert_eq!(is_printable(code), printable, "{code:#x}");
        }
    }
}
