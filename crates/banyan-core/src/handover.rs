//! Handing a backplane's ports to another: how an on-demand backplane gives
//! way to one started on purpose.
//!
//! A component that finds no backplane starts one on demand (in-process, or
//! as a `backplane` process of its own). When somebody later starts the
//! `backplane` executable on the same ports, its bind fails; instead of
//! exiting "Address already in use" it asks the holder, over the bus itself:
//! it connects a SUB socket to the holder's subscriber port and subscribes to
//! a request topic, `\x01banyan-handover/<pid>/<nonce>`. Every one of our
//! backplanes sees that subscription on its XPUB socket (subscriptions are
//! not the hot path) and answers with one message on that very topic, a
//! MessagePack map `{"gives_way": bool, "pid": int, "name": str}`:
//!
//! * an on-demand backplane answers `gives_way: true`, then stops forwarding
//!   and closes its sockets, which frees the ports and drops every
//!   component's connection; the new backplane binds as soon as the ports
//!   are free, and the components' sockets reconnect to it by themselves
//!   (see the client's docs);
//! * a backplane started on purpose answers `gives_way: false`: the new one
//!   says another backplane runs there and exits, as before;
//! * anything else (python-banyan's backplane, another program) does not
//!   answer, and the bind error stands.
//!
//! The request is never forwarded to publishers. This module is the wire
//! format (pure) and the asking side; the answering side is in the
//! backplane's forwarding loop.

use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

use rmpv::Value;

use crate::backplane::endpoint;
use crate::error::Result;

/// The marker that starts every handover request topic.
const REQUEST_PREFIX: &[u8] = b"\x01banyan-handover/";

/// The request topic of process `pid`; `nonce` tells two requests apart.
pub(crate) fn request_topic(pid: u32, nonce: u32) -> Vec<u8> {
    let mut topic = REQUEST_PREFIX.to_vec();
    topic.extend_from_slice(format!("{pid}/{nonce}").as_bytes());
    topic
}

/// The requesting process of a subscription that is a handover request.
pub(crate) fn parse_request(topic: &[u8]) -> Option<u32> {
    let rest = topic.strip_prefix(REQUEST_PREFIX)?;
    let pid = rest.split(|&b| b == b'/').next()?;
    std::str::from_utf8(pid).ok()?.parse().ok()
}

/// Whether a subscription is a handover request (well-formed or not): such
/// subscriptions are never forwarded to publishers.
pub(crate) fn is_request(topic: &[u8]) -> bool {
    topic.starts_with(REQUEST_PREFIX)
}

/// What the holder of the ports answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// Whether it gives its ports away (an on-demand backplane) or keeps
    /// them (one started on purpose).
    pub gives_way: bool,
    /// Its process id.
    pub pid: u32,
    /// Its process's name (`monitor`, `backplane`, ...).
    pub name: String,
}

impl Answer {
    /// The answer of this process.
    pub(crate) fn of_this_process(gives_way: bool) -> Answer {
        let name = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "?".to_owned());
        Answer {
            gives_way,
            pid: std::process::id(),
            name,
        }
    }

    /// The payload frame.
    pub(crate) fn encode(&self) -> Vec<u8> {
        crate::envelope::encode(&Value::Map(vec![
            ("gives_way".into(), Value::Boolean(self.gives_way)),
            ("pid".into(), Value::from(self.pid)),
            ("name".into(), Value::from(self.name.as_str())),
        ]))
    }

    /// Reads a payload frame; `None` when it is not an answer.
    pub(crate) fn decode(payload: &[u8]) -> Option<Answer> {
        let value = crate::envelope::decode(payload).ok()?;
        let field = |name: &str| {
            value
                .as_map()?
                .iter()
                .find(|(k, _)| k.as_str() == Some(name))
                .map(|(_, v)| v.clone())
        };
        Some(Answer {
            gives_way: field("gives_way")?.as_bool()?,
            pid: u32::try_from(field("pid")?.as_u64()?).ok()?,
            name: field("name")?.as_str()?.to_owned(),
        })
    }
}

/// Where to ask the holder of ports this backplane could not bind: the bind
/// address itself, or this machine for every interface.
pub(crate) fn holder_address(bind_address: &str) -> &str {
    match bind_address {
        "0.0.0.0" | "" => "127.0.0.1",
        other if other.parse::<Ipv6Addr>().is_ok_and(|a| a.is_unspecified()) => "::1",
        other => other,
    }
}

/// Asks the backplane whose subscriber port is at `address`:`port` whether
/// it gives its ports away; `Ok(None)` when nothing answered within
/// `timeout`.
pub(crate) fn ask(address: &str, port: u16, timeout: Duration) -> Result<Option<Answer>> {
    let context = zmq::Context::new();
    let sub = context.socket(zmq::SUB)?;
    sub.set_linger(0)?;
    sub.set_ipv6(address.parse::<Ipv6Addr>().is_ok())?;
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let topic = request_topic(std::process::id(), nonce);
    sub.set_subscribe(&topic)?;
    sub.connect(&endpoint(address, port))?;
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        if sub.poll(zmq::POLLIN, left.as_millis() as i64 + 1)? == 0 {
            continue;
        }
        let frames = sub.recv_multipart(0)?;
        if let [got, payload] = &frames[..] {
            if got == &topic {
                if let Some(answer) = Answer::decode(payload) {
                    return Ok(Some(answer));
                }
            }
        }
        tracing::debug!("ignored a message that is not a handover answer");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_carry_the_pid() {
        let topic = request_topic(4321, 7);
        assert!(is_request(&topic));
        assert_eq!(parse_request(&topic), Some(4321));
        assert_eq!(parse_request(b"\x01banyan-handover/x/1"), None);
        assert!(is_request(b"\x01banyan-handover/x/1"));
        assert!(!is_request(b"\x01banyan-probe/1-0-0/1"));
        assert_eq!(parse_request(b"handover"), None);
    }

    #[test]
    fn answers_round_trip_and_strangers_are_refused() {
        let answer = Answer {
            gives_way: true,
            pid: 99,
            name: "monitor".into(),
        };
        assert_eq!(Answer::decode(&answer.encode()), Some(answer));
        assert_eq!(Answer::decode(b"\xc0"), None);
        assert_eq!(Answer::decode(b"\xc1"), None);
        let no_pid = crate::envelope::encode(&Value::Map(vec![(
            "gives_way".into(),
            Value::Boolean(true),
        )]));
        assert_eq!(Answer::decode(&no_pid), None);
    }

    #[test]
    fn the_holder_is_asked_where_it_can_be_reached() {
        assert_eq!(holder_address("0.0.0.0"), "127.0.0.1");
        assert_eq!(holder_address("::"), "::1");
        assert_eq!(holder_address("127.0.0.1"), "127.0.0.1");
        assert_eq!(holder_address("10.0.0.2"), "10.0.0.2");
    }
}
