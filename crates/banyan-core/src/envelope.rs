//! Banyan messages and their two ZeroMQ frames.
//!
//! A Banyan message is a ZeroMQ multipart message of exactly two frames: the
//! topic as UTF-8 bytes and the payload as one MessagePack value (python-banyan
//! packs with `use_bin_type=True`). [`Message`] keeps the payload as the raw
//! bytes of frame 2 and decodes it only when asked, so a gateway can forward
//! frame 2 untouched.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use rmpv::Value;

use crate::error::{Error, Result};

/// Deepest nesting accepted when decoding a payload; deeper input is an
/// error rather than a stack overflow.
pub const MAX_DEPTH: usize = 512;

/// One Banyan message: a topic and the MessagePack bytes of its payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Shared, so that consecutive messages on one topic share one string.
    topic: Arc<str>,
    payload: Bytes,
}

impl Message {
    /// A message whose payload is `value`, MessagePack-encoded the way
    /// python-banyan encodes (str as str, bin as bin, smallest integer form).
    pub fn new(topic: impl Into<Arc<str>>, value: &Value) -> Message {
        thread_local! {
            // Encoding into a reused buffer and copying out gives a payload of
            // exactly its size in one allocation.
            static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let payload = SCRATCH.with(|scratch| {
            let mut buf = scratch.take();
            buf.clear();
            encode_into(value, &mut buf);
            let payload = Bytes::copy_from_slice(&buf);
            // Keep a modest buffer for the next message, not a huge one.
            if buf.capacity() <= 64 * 1024 {
                scratch.replace(buf);
            }
            payload
        });
        Message {
            topic: topic.into(),
            payload,
        }
    }

    /// A message whose payload is already-encoded MessagePack, sent as is.
    ///
    /// The bytes are not checked: this is the pass-through path of gateways
    /// that forward frame 2 without decoding it.
    pub fn from_raw(topic: impl Into<Arc<str>>, payload: impl Into<Bytes>) -> Message {
        Message {
            topic: topic.into(),
            payload: payload.into(),
        }
    }

    /// Builds a message from the frames of a ZeroMQ multipart message.
    ///
    /// Only the frame count and the topic's UTF-8 are checked; the payload is
    /// decoded later by [`Message::value`].
    pub fn from_frames<F: std::ops::Deref<Target = [u8]>>(frames: &[F]) -> Result<Message> {
        FrameReader::default().read(frames)
    }
    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The raw MessagePack bytes of the payload (frame 2).
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// Decodes the payload.
    pub fn value(&self) -> Result<Value> {
        decode(&self.payload)
    }

    /// Splits the message into its topic and payload bytes.
    pub fn into_parts(self) -> (Arc<str>, Bytes) {
        (self.topic, self.payload)
    }
}

/// Payloads up to this size are copied into a shared slab.
const SLAB_ITEM_MAX: usize = 512;
/// The size of a slab.
const SLAB_SIZE: usize = 32 * 1024;

/// Turns received frames into [`Message`]s with few allocations: a topic
/// equal to the previous one shares its string, and small payloads are
/// copied side by side into one slab (a slab is freed when the last message
/// in it is dropped).
#[derive(Debug, Default)]
pub(crate) struct FrameReader {
    last_topic: Option<Arc<str>>,
    slab: BytesMut,
}

impl FrameReader {
    pub(crate) fn read<F: std::ops::Deref<Target = [u8]>>(
        &mut self,
        frames: &[F],
    ) -> Result<Message> {
        let [topic, payload] = frames else {
            return Err(Error::FrameCount(frames.len()));
        };
        let topic = match &self.last_topic {
            Some(last) if last.as_bytes() == &topic[..] => last.clone(),
            _ => {
                let text: Arc<str> = std::str::from_utf8(topic)
                    .map_err(|_| Error::TopicNotUtf8)?
                    .into();
                self.last_topic = Some(text.clone());
                text
            }
        };
        let payload = if payload.len() <= SLAB_ITEM_MAX {
            if self.slab.capacity() < payload.len() {
                self.slab = BytesMut::with_capacity(SLAB_SIZE);
            }
            self.slab.extend_from_slice(payload);
            self.slab.split().freeze()
        } else {
            Bytes::copy_from_slice(payload)
        };
        Ok(Message { topic, payload })
    }
}

/// Encodes one value as MessagePack.
pub fn encode(value: &Value) -> Vec<u8> {
    let mut buf = Vec::with_capacity(64);
    encode_into(value, &mut buf);
    buf
}

fn encode_into(value: &Value, buf: &mut Vec<u8>) {
    // Writing into a Vec cannot fail.
    let _ = rmpv::encode::write_value(buf, value);
}

/// Decodes bytes that must hold exactly one MessagePack value.
pub fn decode(bytes: &[u8]) -> Result<Value> {
    validate(bytes)?;
    let mut rest = bytes;
    rmpv::decode::read_value_with_max_depth(&mut rest, MAX_DEPTH).map_err(Error::Decode)
}

/// Checks, without decoding or allocating, that `bytes` hold exactly one
/// well-formed MessagePack value (no truncation, no reserved marker `0xc1`,
/// nothing after it).
pub fn validate(bytes: &[u8]) -> Result<()> {
    let malformed = |offset, reason| Error::Malformed { offset, reason };
    let mut pos = 0usize;
    // Values still to read; every value takes at least one byte, so a count
    // beyond the bytes left is truncation, found without reading on.
    let mut pending: u64 = 1;
    let read_len = |pos: &mut usize, width: usize| -> Result<u64> {
        let field = bytes
            .get(*pos..*pos + width)
            .ok_or_else(|| malformed(*pos, "truncated length"))?;
        *pos += width;
        Ok(field.iter().fold(0u64, |n, b| (n << 8) | u64::from(*b)))
    };
    while pending > 0 {
        let marker = *bytes
            .get(pos)
            .ok_or_else(|| malformed(pos, "truncated value"))?;
        let at = pos;
        pos += 1;
        pending -= 1;
        // (bytes of data to skip, values it contains)
        let (skip, items): (u64, u64) = match marker {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0),
            0x80..=0x8f => (0, 2 * u64::from(marker & 0x0f)),
            0x90..=0x9f => (0, u64::from(marker & 0x0f)),
            0xa0..=0xbf => (u64::from(marker & 0x1f), 0),
            0xc1 => return Err(malformed(at, "reserved marker 0xc1")),
            0xc4 | 0xd9 => (read_len(&mut pos, 1)?, 0),
            0xc5 | 0xda => (read_len(&mut pos, 2)?, 0),
            0xc6 | 0xdb => (read_len(&mut pos, 4)?, 0),
            0xc7 => (read_len(&mut pos, 1)? + 1, 0),
            0xc8 => (read_len(&mut pos, 2)? + 1, 0),
            0xc9 => (read_len(&mut pos, 4)? + 1, 0),
            0xca | 0xce | 0xd2 => (4, 0),
            0xcb | 0xcf | 0xd3 => (8, 0),
            0xcc | 0xd0 => (1, 0),
            0xcd | 0xd1 => (2, 0),
            0xd4 => (2, 0),
            0xd5 => (3, 0),
            0xd6 => (5, 0),
            0xd7 => (9, 0),
            0xd8 => (17, 0),
            0xdc => (0, read_len(&mut pos, 2)?),
            0xdd => (0, read_len(&mut pos, 4)?),
            0xde => (0, 2 * read_len(&mut pos, 2)?),
            0xdf => (0, 2 * read_len(&mut pos, 4)?),
        };
        let left = (bytes.len() - pos) as u64;
        if skip > left {
            return Err(malformed(at, "truncated data"));
        }
        pos += skip as usize;
        pending += items;
        if pending > (bytes.len() - pos) as u64 {
            return Err(malformed(at, "more items declared than bytes left"));
        }
    }
    match bytes.len() - pos {
        0 => Ok(()),
        extra => Err(Error::TrailingBytes(extra)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn encodes_like_python_msgpack_with_bin_type() {
        // msgpack.packb({'msg': 1}, use_bin_type=True) == b'\x81\xa3msg\x01'
        let v = Value::Map(vec![(Value::from("msg"), Value::from(1))]);
        assert_eq!(hex(&encode(&v)), "81a36d736701");
        // bytes are bin8, str of 32 chars is str8 (python's use_bin_type=True)
        assert_eq!(hex(&encode(&Value::Binary(vec![1, 2]))), "c4020102");
        assert_eq!(&encode(&Value::from("a".repeat(32)))[..2], &[0xd9, 32]);
        // float is float64, ints take the smallest form
        assert_eq!(hex(&encode(&Value::F64(1.5))), "cb3ff8000000000000");
        assert_eq!(hex(&encode(&Value::from(-1))), "ff");
        assert_eq!(hex(&encode(&Value::from(u64::MAX))), "cfffffffffffffffff");
        assert_eq!(hex(&encode(&Value::from(i64::MIN))), "d38000000000000000");
    }

    #[test]
    fn round_trips_every_kind() {
        let v = Value::Array(vec![
            Value::Nil,
            Value::Boolean(true),
            Value::from(i64::MIN),
            Value::from(u64::MAX),
            Value::F32(0.5),
            Value::F64(-2.25),
            Value::from("héllo ✓"),
            Value::Binary(vec![0, 255]),
            Value::Ext(5, vec![1, 2, 3]),
            Value::Map(vec![(Value::from(1), Value::Array(vec![]))]),
        ]);
        let bytes = encode(&v);
        assert!(validate(&bytes).is_ok());
        assert_eq!(decode(&bytes).expect("decodes"), v);
        // every strict prefix is truncated
        for cut in 0..bytes.len() {
            assert!(validate(&bytes[..cut]).is_err(), "prefix of {cut} bytes");
        }
    }

    #[test]
    fn from_frames_checks_count_and_topic() {
        let m = Message::from_frames(&[b"to_x".as_slice(), b"\xc0"]).expect("two frames");
        assert_eq!(m.topic(), "to_x");
        assert_eq!(m.value().expect("nil"), Value::Nil);
        assert!(matches!(
            Message::from_frames(&[b"only".as_slice()]),
            Err(Error::FrameCount(1))
        ));
        assert!(matches!(
            Message::from_frames(&[b"a".as_slice(), b"b", b"c"]),
            Err(Error::FrameCount(3))
        ));
        assert!(matches!(
            Message::from_frames(&[b"\xff\xfe".as_slice(), b"\xc0"]),
            Err(Error::TopicNotUtf8)
        ));
    }

    #[test]
    fn malformed_payloads_are_typed_errors() {
        // empty, truncated str, truncated map, reserved marker, truncated
        // length, truncated ext, truncated float
        for bad in [
            &b""[..],
            b"\xa5ab",
            b"\x82\xa1a",
            b"\xc1",
            b"\x91\xc1",
            b"\xdb\xff\xff",
            b"\xd6\x01\x02",
            b"\xcb\x00",
        ] {
            assert!(
                matches!(decode(bad), Err(Error::Malformed { .. })),
                "{bad:?}"
            );
        }
        assert!(matches!(decode(b"\x01\x02"), Err(Error::TrailingBytes(1))));
        // a huge declared length is refused without allocating or reading on
        assert!(matches!(
            decode(b"\xdd\xff\xff\xff\xff"),
            Err(Error::Malformed { offset: 0, .. })
        ));
        assert!(matches!(
            decode(b"\xdb\xff\xff\xff\xff"),
            Err(Error::Malformed { .. })
        ));
        // nesting beyond MAX_DEPTH is refused, not a stack overflow
        let mut deep = vec![0x91u8; 100_000];
        deep.push(0xc0);
        assert!(validate(&deep).is_ok());
        assert!(matches!(decode(&deep), Err(Error::Decode(_))));
    }

    #[test]
    fn raw_payload_is_kept_byte_for_byte() {
        let m = Message::from_raw("t", Bytes::from_static(b"\xc1not msgpack"));
        assert_eq!(m.payload().as_ref(), b"\xc1not msgpack");
        assert!(m.value().is_err());
    }
}
