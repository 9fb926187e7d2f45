//! The plain HTTP side of the gateway's port: what arrives before a
//! WebSocket upgrade is read here first, so that one port serves the pages'
//! WebSockets, the bus view (`GET /`, its WebSocket at `/view`) and the
//! metrics (`GET /metrics`).
//!
//! The request head is parsed by httparse (which tungstenite uses for the
//! upgrade itself), bounded in size; the bytes read are replayed to
//! tungstenite when the request is an upgrade.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest request head read: a browser's upgrade request with its
/// cookies for `localhost` fits well.
pub(crate) const MAX_HEAD: usize = 16 * 1024;
/// Headers parsed at most.
const MAX_HEADERS: usize = 64;

/// What a connection asks for, from its request head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Asked {
    /// A WebSocket upgrade of `path`.
    Upgrade {
        /// The request path, without the query.
        path: String,
    },
    /// A plain `GET` of `path`.
    Get {
        /// The request path, without the query.
        path: String,
    },
    /// Another method: refused.
    Other(String),
}

/// Why a request head cannot be served.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BadHead {
    /// Not HTTP.
    #[error("not an HTTP request: {0}")]
    Malformed(String),
    /// Over [`MAX_HEAD`].
    #[error("the request head is over {MAX_HEAD} bytes")]
    TooLarge,
    /// The connection ended first.
    #[error("the connection ended before the request head")]
    Ended,
}

/// Reads `bytes` as a request head: `Ok(None)` while it is incomplete.
pub(crate) fn parse(bytes: &[u8]) -> Result<Option<Asked>, BadHead> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(bytes) {
        Ok(httparse::Status::Partial) => {
            if bytes.len() >= MAX_HEAD {
                Err(BadHead::TooLarge)
            } else {
                Ok(None)
            }
        }
        Ok(httparse::Status::Complete(_)) => {
            let method = request.method.unwrap_or_default();
            let path = request
                .path
                .unwrap_or("/")
                .split('?')
                .next()
                .unwrap_or("/")
                .to_owned();
            let has = |name: &str, token: &str| {
                request.headers.iter().any(|h| {
                    h.name.eq_ignore_ascii_case(name)
                        && std::str::from_utf8(h.value).is_ok_and(|v| {
                            v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token))
                        })
                })
            };
            Ok(Some(if method != "GET" {
                Asked::Other(method.to_owned())
            } else if has("upgrade", "websocket") {
                Asked::Upgrade { path }
            } else {
                Asked::Get { path }
            }))
        }
        Err(e) => Err(BadHead::Malformed(e.to_string())),
    }
}

/// Reads a request head from `stream`: what it asks for, and every byte
/// read (to replay to tungstenite).
pub(crate) async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<(Asked, Vec<u8>), BadHead> {
    let mut bytes = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    loop {
        // Parsing from the start each time is cheap for heads this small.
        if let Some(asked) = parse(&bytes)? {
            return Ok((asked, bytes));
        }
        let room = (MAX_HEAD - bytes.len()).min(buf.len());
        let n = stream
            .read(&mut buf[..room])
            .await
            .map_err(|_| BadHead::Ended)?;
        if n == 0 {
            return Err(BadHead::Ended);
        }
        bytes.extend_from_slice(&buf[..n]);
    }
}

/// Writes a whole HTTP/1.1 response and closes the connection's write side.
pub(crate) async fn respond<S: AsyncWrite + Unpin>(
    stream: &mut S,
    status: &str,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\
         cache-control: no-store\r\nx-content-type-options: nosniff\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.flush().await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrades_gets_and_the_rest() {
        let upgrade = b"GET /view?x=1 HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: WebSocket\r\n\r\n";
        assert_eq!(
            parse(upgrade),
            Ok(Some(Asked::Upgrade {
                path: "/view".into()
            }))
        );
        assert_eq!(
            parse(b"GET /metrics HTTP/1.1\r\nHost: h\r\n\r\n"),
            Ok(Some(Asked::Get {
                path: "/metrics".into()
            }))
        );
        assert_eq!(
            parse(b"POST / HTTP/1.1\r\n\r\n"),
            Ok(Some(Asked::Other("POST".into())))
        );
        assert_eq!(parse(b"GET / HTTP/1.1\r\nHost"), Ok(None));
        assert!(matches!(
            parse(b"\x16\x03\x01 hello"),
            Err(BadHead::Malformed(_))
        ));
        let huge = [b"GET / HTTP/1.1\r\nX: ".as_slice(), &[b'a'; MAX_HEAD]].concat();
        assert_eq!(parse(&huge), Err(BadHead::TooLarge));
    }

    #[tokio::test]
    async fn heads_split_over_reads_are_read_whole() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:9000\r\nUser-Agent: test\r\n\r\nrest";
        let writer = tokio::spawn(async move {
            for chunk in request.chunks(7) {
                client.write_all(chunk).await.expect("write");
            }
            client
        });
        let (asked, bytes) = read_head(&mut server).await.expect("a head");
        assert_eq!(asked, Asked::Get { path: "/".into() });
        assert!(bytes.starts_with(b"GET / HTTP/1.1\r\n"));
        drop(writer.await.expect("writer"));
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Whatever a connection sends first, reading its head never panics
        /// and never accepts more than the bound.
        #[test]
        fn any_bytes_are_read_or_refused(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
            match parse(&bytes) {
                Ok(_) | Err(BadHead::Malformed(_)) => {}
                Err(BadHead::TooLarge) => prop_assert!(bytes.len() >= MAX_HEAD),
                Err(BadHead::Ended) => prop_assert!(false, "parse never says ended"),
            }
        }

        /// Requests of any method, path and headers are classified by their
        /// method and Upgrade header alone.
        #[test]
        fn requests_are_classified(
            method in "[A-Z]{1,8}",
            path in "/[a-zA-Z0-9/._-]{0,40}",
            upgrade in any::<bool>(),
            extra in prop::collection::vec(("[A-Za-z-]{1,16}", "[ -~]{0,40}"), 0..6),
        ) {
            let mut head = format!("{method} {path}?q=1 HTTP/1.1\r\nHost: 127.0.0.1:9000\r\n");
            if upgrade {
                head.push_str("Connection: Upgrade\r\nUpgrade: websocket\r\n");
            }
            for (name, value) in &extra {
                if !name.eq_ignore_ascii_case("upgrade") {
                    head.push_str(&format!("{name}: {}\r\n", value.trim()));
                }
            }
            head.push_str("\r\n");
            let asked = parse(head.as_bytes());
            let expected = if method != "GET" {
                Asked::Other(method.clone())
            } else if upgrade {
                Asked::Upgrade { path: path.clone() }
            } else {
                Asked::Get { path: path.clone() }
            };
            // A header block over the parser's 64 slots is refused, not
            // misread.
            if let Ok(Some(asked)) = asked {
                prop_assert_eq!(asked, expected);
            }
        }
    }
}
