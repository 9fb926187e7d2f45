//! The benchmark's messages: `{'msg': i}` (python-banyan's benchmark
//! payload), optionally padded, and the probe used to learn that a path is
//! open. Encoded and decoded by hand because the bench's own clients must be
//! much faster than what they measure; the unit tests check the bytes
//! against rmpv.

/// The MessagePack of a probe: `{"probe": 1}`. Receivers do not count it.
pub const PROBE: &[u8] = b"\x81\xa5probe\x01";
/// The JSON text of a probe.
pub const PROBE_JSON: &str = "{\"probe\": 1}";

/// Appends the MessagePack of `{'msg': seq}`, plus `'pad': <bin>` when
/// `payload` asks for more bytes than that, to `out`.
pub fn encode(seq: u64, payload: usize, out: &mut Vec<u8>) {
    let start = out.len();
    let mut body = Vec::with_capacity(16);
    body.extend_from_slice(b"\xa3msg");
    write_uint(seq, &mut body);
    // {'msg': i} alone, or with a pad sized to reach `payload` bytes.
    let bare = 1 + body.len();
    if payload <= bare + 6 {
        out.push(0x81);
        out.extend_from_slice(&body);
        return;
    }
    out.push(0x82);
    out.extend_from_slice(&body);
    out.extend_from_slice(b"\xa3pad");
    let header = |n: usize| {
        if n < 256 {
            2
        } else if n < 65536 {
            3
        } else {
            5
        }
    };
    let used = out.len() - start;
    let mut n = payload.saturating_sub(used + 2);
    if header(n) == 3 {
        n = payload.saturating_sub(used + 3);
    } else if header(n) == 5 {
        n = payload.saturating_sub(used + 5);
    }
    if n < 256 {
        out.push(0xc4);
        out.push(n as u8);
    } else if n < 65536 {
        out.push(0xc5);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xc6);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
    out.resize(out.len() + n, 0);
}

fn write_uint(v: u64, out: &mut Vec<u8>) {
    if v < 128 {
        out.push(v as u8);
    } else if v < 256 {
        out.extend_from_slice(&[0xcc, v as u8]);
    } else if v < 65536 {
        out.push(0xcd);
        out.extend_from_slice(&(v as u16).to_be_bytes());
    } else if v < 1 << 32 {
        out.push(0xce);
        out.extend_from_slice(&(v as u32).to_be_bytes());
    } else {
        out.push(0xcf);
        out.extend_from_slice(&v.to_be_bytes());
    }
}

/// The sequence number of a `{'msg': i, ...}` MessagePack payload whose first
/// key is `msg`; `None` for anything else (probes included).
pub fn decode(bytes: &[u8]) -> Option<u64> {
    let (&map, rest) = bytes.split_first()?;
    if !(0x81..=0x8f).contains(&map) {
        return None;
    }
    let rest = rest.strip_prefix(b"\xa3msg")?;
    let (&tag, rest) = rest.split_first()?;
    let be = |n: usize| -> Option<u64> {
        let b = rest.get(..n)?;
        Some(b.iter().fold(0u64, |acc, &x| acc << 8 | u64::from(x)))
    };
    match tag {
        0x00..=0x7f => Some(u64::from(tag)),
        0xcc => be(1),
        0xcd => be(2),
        0xce => be(4),
        0xcf => be(8),
        // Non-negative signed integers, as some encoders write them.
        0xd0 => be(1).filter(|v| *v < 0x80),
        0xd1 => be(2).filter(|v| *v < 0x8000),
        0xd2 => be(4).filter(|v| *v < 0x8000_0000),
        0xd3 => be(8).filter(|v| *v < 1 << 63),
        _ => None,
    }
}

/// The JSON text of `{"msg": seq}`, laid out as python's `json.dumps`.
pub fn encode_json(seq: u64) -> String {
    format!("{{\"msg\": {seq}}}")
}

/// The sequence number of a JSON text `{"msg": i, ...}`; `None` otherwise.
pub fn decode_json(text: &str) -> Option<u64> {
    let rest = text.trim_start().strip_prefix('{')?.trim_start();
    let rest = rest.strip_prefix("\"msg\"")?.trim_start();
    let rest = rest.strip_prefix(':')?.trim_start();
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmpv::Value;

    fn reference(seq: u64) -> Vec<u8> {
        let value = Value::Map(vec![(Value::from("msg"), Value::from(seq))]);
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, &value).expect("encodes");
        out
    }

    #[test]
    fn encodes_like_rmpv_and_decodes_back() {
        for seq in [
            0,
            1,
            127,
            128,
            255,
            256,
            65535,
            65536,
            99_999,
            1 << 32,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            encode(seq, 0, &mut out);
            assert_eq!(out, reference(seq), "seq {seq}");
            assert_eq!(decode(&out), Some(seq));
        }
    }

    #[test]
    fn padded_payloads_have_the_asked_size_and_stay_valid() {
        for size in [16, 64, 100, 255, 256, 300, 1000, 70_000] {
            let mut out = Vec::new();
            encode(12345, size, &mut out);
            assert!(
                out.len().abs_diff(size) <= 3,
                "size {size}: got {}",
                out.len()
            );
            let value = rmpv::decode::read_value(&mut &out[..]).expect("valid MessagePack");
            assert_eq!(value["msg"], Value::from(12345));
            assert_eq!(decode(&out), Some(12345));
        }
    }

    #[test]
    fn probes_and_other_values_are_not_counted() {
        assert_eq!(decode(PROBE), None);
        assert_eq!(decode(b"\x90"), None);
        assert_eq!(decode(b""), None);
        assert_eq!(decode_json(PROBE_JSON), None);
        let probe = rmpv::decode::read_value(&mut &PROBE[..]).expect("valid");
        assert_eq!(probe["probe"], Value::from(1));
    }

    #[test]
    fn json_round_trip() {
        assert_eq!(encode_json(42), "{\"msg\": 42}");
        assert_eq!(decode_json(&encode_json(42)), Some(42));
        assert_eq!(decode_json("{\"msg\":7,\"x\":1}"), Some(7));
        assert_eq!(decode_json("{\"x\": 1}"), None);
    }
}
