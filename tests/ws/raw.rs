//! A WebSocket client written by hand over TCP, for what a library client
//! refuses to send: unmasked frames, reserved bits and opcodes, oversized or
//! fragmented control frames, invalid UTF-8, and a client that never reads.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::util::within;

/// Opcodes of RFC 6455, section 5.2.
pub(crate) const TEXT: u8 = 0x1;
pub(crate) const BINARY: u8 = 0x2;
pub(crate) const CONTINUATION: u8 = 0x0;
pub(crate) const CLOSE: u8 = 0x8;
pub(crate) const PING: u8 = 0x9;

/// The mask every client frame of these tests uses (any mask will do).
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// One frame's bytes, as a client would send it (`masked`) or must not.
pub(crate) fn frame(fin: bool, rsv1: bool, opcode: u8, masked: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(u8::from(fin) << 7 | u8::from(rsv1) << 6 | opcode);
    let mask_bit = u8::from(masked) << 7;
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= 0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        out.extend_from_slice(&MASK);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// A correct, masked, final frame.
pub(crate) fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    frame(true, false, opcode, true, payload)
}

/// The upgrade request of a page at 127.0.0.1:`port`, with an `Origin`
/// header when given.
pub(crate) fn upgrade_request(port: u16, origin: Option<&str>) -> String {
    let origin = origin.map_or(String::new(), |o| format!("Origin: {o}\r\n"));
    format!(
        "GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n{origin}\r\n"
    )
}

/// A frame the gateway sent.
#[derive(Debug)]
pub(crate) struct Frame {
    pub(crate) opcode: u8,
    pub(crate) payload: Vec<u8>,
}

/// The reading side of a raw connection, with what it read but did not use.
pub(crate) struct Reader {
    read: OwnedReadHalf,
    buffer: Vec<u8>,
}

/// A raw connection to the gateway.
pub(crate) struct Raw {
    pub(crate) reader: Reader,
    pub(crate) writer: OwnedWriteHalf,
}

impl Raw {
    /// Connects and sends the upgrade request; returns the connection and
    /// the gateway's HTTP response head (status line and headers).
    pub(crate) async fn upgrade(port: u16, origin: Option<&str>) -> (Raw, String) {
        let stream = within(
            "a TCP connection to wsgw",
            TcpStream::connect(("127.0.0.1", port)),
        )
        .await
        .expect("wsgw accepts TCP");
        let (read, mut writer) = stream.into_split();
        within(
            "sending the upgrade request",
            writer.write_all(upgrade_request(port, origin).as_bytes()),
        )
        .await
        .expect("request sent");
        let mut reader = Reader {
            read,
            buffer: Vec::new(),
        };
        let head = reader.response_head().await;
        (Raw { reader, writer }, head)
    }

    /// Connects, upgrades, and checks the upgrade was accepted.
    pub(crate) async fn open(port: u16) -> Raw {
        let (raw, head) = Raw::upgrade(port, None).await;
        assert!(head.starts_with("HTTP/1.1 101"), "upgrade refused: {head}");
        raw
    }

    /// Sends bytes as they are.
    pub(crate) async fn send(&mut self, bytes: &[u8]) {
        within("sending raw bytes to wsgw", self.writer.write_all(bytes))
            .await
            .expect("bytes sent");
    }
}

impl Reader {
    async fn fill(&mut self, what: &str) -> bool {
        let mut chunk = [0u8; 4096];
        let n = within(what, self.read.read(&mut chunk))
            .await
            .unwrap_or_else(|e| panic!("reading {what}: {e}"));
        self.buffer.extend_from_slice(&chunk[..n]);
        n > 0
    }

    /// The HTTP response head, up to the blank line.
    pub(crate) async fn response_head(&mut self) -> String {
        loop {
            if let Some(end) = self.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buffer[..end]).into_owned();
                self.buffer.drain(..end + 4);
                return head;
            }
            assert!(
                self.fill("the HTTP response").await,
                "connection closed before an HTTP response; read {:?}",
                String::from_utf8_lossy(&self.buffer)
            );
        }
    }

    /// Everything until the gateway closes the connection.
    pub(crate) async fn rest(&mut self) -> Vec<u8> {
        while self.fill("the end of the response").await {}
        std::mem::take(&mut self.buffer)
    }

    /// The next frame from the gateway; `None` when the connection ends.
    pub(crate) async fn next_frame(&mut self) -> Option<Frame> {
        loop {
            if let Some((frame, used)) = parse(&self.buffer) {
                self.buffer.drain(..used);
                return Some(frame);
            }
            if !self.fill("a frame from wsgw").await {
                return None;
            }
        }
    }

    /// The close frame's code and reason, skipping frames before it. A
    /// connection that ends without one fails the test: a browser would
    /// report 1006 (abnormal closure) and the page would not know why.
    pub(crate) async fn close_frame(&mut self) -> (u16, String) {
        loop {
            let Some(frame) = self.next_frame().await else {
                panic!("wsgw closed the TCP connection without a close frame (a page sees 1006)");
            };
            if frame.opcode != CLOSE {
                continue;
            }
            assert!(frame.payload.len() >= 2, "a close frame without a code");
            let code = u16::from_be_bytes([frame.payload[0], frame.payload[1]]);
            let reason = String::from_utf8(frame.payload[2..].to_vec()).expect("a UTF-8 reason");
            return (code, reason);
        }
    }
}

/// A server frame (never masked) at the start of `bytes`, and its length.
fn parse(bytes: &[u8]) -> Option<(Frame, usize)> {
    let (&first, &second) = (bytes.first()?, bytes.get(1)?);
    assert_eq!(second & 0x80, 0, "the gateway masked a frame");
    let (length, start) = match second & 0x7f {
        126 => (
            u16::from_be_bytes([*bytes.get(2)?, *bytes.get(3)?]) as usize,
            4,
        ),
        127 => {
            let raw: [u8; 8] = bytes.get(2..10)?.try_into().ok()?;
            (u64::from_be_bytes(raw) as usize, 10)
        }
        n => (n as usize, 2),
    };
    let payload = bytes.get(start..start + length)?.to_vec();
    Some((
        Frame {
            opcode: first & 0x0f,
            payload,
        },
        start + length,
    ))
}
