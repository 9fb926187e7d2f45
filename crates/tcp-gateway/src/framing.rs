//! The wire framing between the gateway and the device: each frame is a
//! big-endian length of 1, 2 or 4 bytes followed by that many bytes.
//!
//! The 1-byte prefix is python-banyan's `tgw` framing (and so what existing
//! MicroPython scripts speak); it cannot carry a payload over 255 bytes. The
//! wider prefixes are for devices that need more.
//!
//! Decoding is tokio-util's [`LengthDelimitedCodec`], so a frame split over
//! several TCP segments, or many frames in one segment, come out whole.

use std::fmt;
use std::str::FromStr;

use bytes::{BufMut, BytesMut};
use tokio_util::codec::LengthDelimitedCodec;

use crate::error::Error;

/// The width of the length prefix in front of every frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum PrefixWidth {
    /// One byte: payloads of at most 255 bytes (python-banyan's framing).
    #[default]
    One,
    /// Two bytes, big-endian: at most 65,535 bytes.
    Two,
    /// Four bytes, big-endian: up to [`Framing::max_payload`].
    Four,
}

impl PrefixWidth {
    /// The prefix length in bytes.
    pub fn bytes(self) -> usize {
        match self {
            PrefixWidth::One => 1,
            PrefixWidth::Two => 2,
            PrefixWidth::Four => 4,
        }
    }

    /// The largest length the prefix can express.
    pub fn max_len(self) -> usize {
        match self {
            PrefixWidth::One => u8::MAX as usize,
            PrefixWidth::Two => u16::MAX as usize,
            // Also bounded by the address space on 32-bit targets.
            PrefixWidth::Four => usize::try_from(u32::MAX).unwrap_or(usize::MAX),
        }
    }
}

impl fmt::Display for PrefixWidth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.bytes())
    }
}

impl FromStr for PrefixWidth {
    type Err = Error;

    /// Parses `1`, `2` or `4`.
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.trim() {
            "1" => Ok(PrefixWidth::One),
            "2" => Ok(PrefixWidth::Two),
            "4" => Ok(PrefixWidth::Four),
            other => Err(Error::PrefixWidth(other.to_owned())),
        }
    }
}

/// The framing of one gateway: the prefix width and the largest frame
/// accepted in either direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Framing {
    width: PrefixWidth,
    max_payload: usize,
}

impl Framing {
    /// The framing with `width`, accepting payloads up to `limit` bytes (or
    /// what the prefix can express, if less). The limit protects the gateway
    /// from a device announcing a 4 GB frame.
    pub fn new(width: PrefixWidth, limit: usize) -> Framing {
        Framing {
            width,
            max_payload: limit.min(width.max_len()),
        }
    }

    /// The prefix width.
    pub fn width(&self) -> PrefixWidth {
        self.width
    }

    /// The largest payload that is sent or accepted.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// The decoder of frames from the device. An empty frame decodes as an
    /// empty buffer (the gateway ignores it); a length over
    /// [`Framing::max_payload`] is a decoding error, after which the stream
    /// cannot be trusted.
    pub fn decoder(&self) -> LengthDelimitedCodec {
        LengthDelimitedCodec::builder()
            .length_field_length(self.width.bytes())
            .big_endian()
            .max_frame_length(self.max_payload)
            .new_codec()
    }

    /// Appends `payload` with its length prefix to `out`, or fails with
    /// [`Error::FrameTooLarge`] (leaving `out` as it was) when the payload
    /// does not fit.
    pub fn encode(&self, payload: &[u8], out: &mut BytesMut) -> Result<(), Error> {
        let size = payload.len();
        if size > self.max_payload {
            return Err(Error::FrameTooLarge {
                size,
                max: self.max_payload,
            });
        }
        out.reserve(self.width.bytes() + size);
        // `size` fits the prefix: it is at most `max_payload`.
        match self.width {
            PrefixWidth::One => out.put_u8(size as u8),
            PrefixWidth::Two => out.put_u16(size as u16),
            PrefixWidth::Four => out.put_u32(size as u32),
        }
        out.put_slice(payload);
        Ok(())
    }
}

impl Default for Framing {
    /// python-banyan's framing: a 1-byte prefix.
    fn default() -> Self {
        Framing::new(PrefixWidth::One, usize::MAX)
    }
}

#[cfg(test)]
mod tests {
    use tokio_util::codec::Decoder;

    use super::*;

    fn decode_all(framing: &Framing, wire: &mut BytesMut) -> Vec<Vec<u8>> {
        let mut codec = framing.decoder();
        let mut frames = Vec::new();
        while let Some(frame) = codec.decode(wire).expect("valid frames") {
            frames.push(frame.to_vec());
        }
        frames
    }

    #[test]
    fn one_byte_prefix_is_pythons_framing() {
        // {"pico_data": 0} as python-banyan's byte_play.py frames it.
        let payload = b"\x81\xa9pico_data\x00";
        let mut out = BytesMut::new();
        Framing::default().encode(payload, &mut out).expect("fits");
        assert_eq!(&out[..], b"\x0c\x81\xa9pico_data\x00");
    }

    #[test]
    fn wider_prefixes_are_big_endian() {
        let payload = vec![0xa5; 300];
        let mut out = BytesMut::new();
        Framing::new(PrefixWidth::Two, usize::MAX)
            .encode(&payload, &mut out)
            .expect("fits");
        assert_eq!(&out[..2], &[0x01, 0x2c]);
        assert_eq!(out.len(), 302);
        let mut out = BytesMut::new();
        Framing::new(PrefixWidth::Four, usize::MAX)
            .encode(&payload, &mut out)
            .expect("fits");
        assert_eq!(&out[..4], &[0, 0, 0x01, 0x2c]);
    }

    #[test]
    fn boundaries_of_each_width() {
        let one = Framing::new(PrefixWidth::One, usize::MAX);
        let mut out = BytesMut::new();
        one.encode(&[0; 255], &mut out).expect("255 fits one byte");
        assert!(matches!(
            one.encode(&[0; 256], &mut out),
            Err(Error::FrameTooLarge {
                size: 256,
                max: 255
            })
        ));
        assert_eq!(out.len(), 256, "a refused frame leaves the buffer alone");
        let two = Framing::new(PrefixWidth::Two, usize::MAX);
        two.encode(&[0; 65_535], &mut out).expect("fits two bytes");
        assert!(two.encode(&[0; 65_536], &mut out).is_err());
        let limited = Framing::new(PrefixWidth::Four, 1000);
        assert_eq!(limited.max_payload(), 1000);
        assert!(limited.encode(&[0; 1001], &mut out).is_err());
    }

    #[test]
    fn split_and_coalesced_frames_decode_whole() {
        let framing = Framing::new(PrefixWidth::Two, usize::MAX);
        let mut wire = BytesMut::new();
        for n in 0..3u8 {
            framing.encode(&vec![n; 256], &mut wire).expect("fits");
        }
        let whole = wire.clone();
        // All three in one segment.
        let frames = decode_all(&framing, &mut wire);
        assert_eq!(frames, vec![vec![0; 256], vec![1; 256], vec![2; 256]]);
        // One byte at a time.
        let mut codec = framing.decoder();
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        for byte in whole.iter() {
            buf.put_u8(*byte);
            if let Some(frame) = codec.decode(&mut buf).expect("valid") {
                frames.push(frame.to_vec());
            }
        }
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[2], vec![2; 256]);
    }

    #[test]
    fn empty_frames_decode_empty() {
        let mut wire = BytesMut::from(&b"\x00\x01\xc0"[..]);
        let frames = decode_all(&Framing::default(), &mut wire);
        assert_eq!(frames, vec![vec![], vec![0xc0]]);
    }

    #[test]
    fn an_announced_frame_over_the_limit_is_an_error() {
        let framing = Framing::new(PrefixWidth::Four, 1024);
        let mut wire = BytesMut::from(&[0u8, 0, 0x10, 0][..]);
        assert!(framing.decoder().decode(&mut wire).is_err());
    }

    #[test]
    fn widths_parse() {
        assert_eq!("1".parse::<PrefixWidth>().ok(), Some(PrefixWidth::One));
        assert_eq!("2".parse::<PrefixWidth>().ok(), Some(PrefixWidth::Two));
        assert_eq!("4".parse::<PrefixWidth>().ok(), Some(PrefixWidth::Four));
        assert!("3".parse::<PrefixWidth>().is_err());
    }
}

/// Property tests of the decoder: whatever a device sends, it never panics
/// and never yields a frame over the limit, and frames come out whole
/// however TCP cuts or joins them. Each property runs proptest's default 256
/// cases in the normal test run; `PROPTEST_CASES` runs more (e.g.
/// `PROPTEST_CASES=100000 cargo test -p tcp-gateway framing`).
#[cfg(test)]
mod properties {
    use proptest::prelude::*;
    use tokio_util::codec::Decoder;

    use super::*;

    fn width() -> impl Strategy<Value = PrefixWidth> {
        prop_oneof![
            Just(PrefixWidth::One),
            Just(PrefixWidth::Two),
            Just(PrefixWidth::Four)
        ]
    }

    /// A framing, and payloads that fit it.
    fn framing_and_payloads() -> impl Strategy<Value = (Framing, Vec<Vec<u8>>)> {
        (width(), 0..600usize).prop_flat_map(|(width, limit)| {
            let framing = Framing::new(width, limit);
            let payload = prop::collection::vec(any::<u8>(), 0..=framing.max_payload().min(300));
            (Just(framing), prop::collection::vec(payload, 0..12))
        })
    }

    /// Feeds `wire` to a decoder in chunks of the given sizes (cycled), as
    /// reads from a socket would, and then ends the stream. Returns the
    /// frames, and whether decoding failed (after which a session stops
    /// reading).
    fn feed(framing: &Framing, wire: &[u8], chunks: &[usize]) -> (Vec<Vec<u8>>, bool) {
        let mut codec = framing.decoder();
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        let mut rest = wire;
        let mut sizes = chunks.iter().copied().cycle();
        while !rest.is_empty() {
            let n = sizes.next().unwrap_or(rest.len()).clamp(1, rest.len());
            buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            loop {
                match codec.decode(&mut buf) {
                    Ok(Some(frame)) => frames.push(frame.to_vec()),
                    Ok(None) => break,
                    Err(_) => return (frames, true),
                }
            }
        }
        loop {
            match codec.decode_eof(&mut buf) {
                Ok(Some(frame)) => frames.push(frame.to_vec()),
                Ok(None) => return (frames, false),
                Err(_) => return (frames, true),
            }
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_nor_yield_a_frame_over_the_limit(
            width in width(),
            limit in 0..70_000usize,
            wire in prop::collection::vec(any::<u8>(), 0..2048),
            chunks in prop::collection::vec(1..64usize, 1..8),
        ) {
            let framing = Framing::new(width, limit);
            let (frames, _) = feed(&framing, &wire, &chunks);
            for frame in &frames {
                prop_assert!(frame.len() <= framing.max_payload());
            }
            // What came out was in the input, in order, each behind its
            // prefix: the decoder invents no byte.
            let taken: usize = frames.iter().map(|f| f.len() + width.bytes()).sum();
            prop_assert!(taken <= wire.len());
        }

        #[test]
        fn frames_cut_or_joined_anyhow_decode_to_the_same_frames(
            (framing, payloads) in framing_and_payloads(),
            chunks in prop::collection::vec(1..40usize, 1..8),
        ) {
            let mut wire = BytesMut::new();
            for payload in &payloads {
                framing.encode(payload, &mut wire).expect("fits");
            }
            let (frames, failed) = feed(&framing, &wire, &chunks);
            prop_assert!(!failed);
            prop_assert_eq!(frames, payloads);
        }

        #[test]
        fn a_payload_over_the_limit_is_refused_and_leaves_the_buffer(
            width in width(),
            limit in 0..300usize,
            extra in 1..40usize,
        ) {
            let framing = Framing::new(width, limit);
            let mut out = BytesMut::from(&b"kept"[..]);
            let payload = vec![0; framing.max_payload() + extra];
            prop_assert!(
                matches!(
                    framing.encode(&payload, &mut out),
                    Err(Error::FrameTooLarge { .. })
                ),
                "a payload over the limit is refused"
            );
            prop_assert_eq!(&out[..], b"kept");
        }

        #[test]
        fn an_announced_length_over_the_limit_is_an_error_not_a_frame(
            width in width(),
            limit in 0..250usize,
            over in 1..5usize,
        ) {
            let framing = Framing::new(width, limit);
            let announced = framing.max_payload() + over;
            prop_assume!(announced <= width.max_len());
            let mut wire = BytesMut::new();
            let be = (announced as u32).to_be_bytes();
            wire.extend_from_slice(&be[4 - width.bytes()..]);
            wire.extend_from_slice(&vec![0; announced]);
            let (frames, failed) = feed(&framing, &wire, &[7]);
            prop_assert!(failed && frames.is_empty());
        }
    }
}
