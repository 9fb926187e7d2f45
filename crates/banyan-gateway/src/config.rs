//! The settings every gateway shares, with one name and one unit each:
//! the queue toward a peer ([`QueuePolicy`]), reconnection ([`Reconnect`]) and
//! durations as flags give them ([`parse_duration`]).

use std::time::Duration;

use crate::error::{Error, Result};

/// The bound of a peer's queue and how long a connected peer may leave it
/// full (see [`crate::outbox`] for what happens then).
///
/// Flags: `--queue N`, `--queue-bytes N`, `--stall-grace DURATION`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueuePolicy {
    /// Messages held at most (`--queue`); at least 1.
    pub messages: usize,
    /// Bytes of payload held at most (`--queue-bytes`); at least 1. A
    /// message larger than this is still queued when the queue is empty, so
    /// that it can be sent at all.
    pub bytes: usize,
    /// How long a connected peer whose queue is full may take nothing
    /// before it counts as stalled (`--stall-grace`).
    pub stall_grace: Duration,
}

/// Default of [`QueuePolicy::stall_grace`]: 1 s, longer than a TCP
/// retransmission timeout (200 ms at least on Linux), so that one lost
/// segment on a Wi-Fi link is no stall.
pub const DEFAULT_STALL_GRACE: Duration = Duration::from_secs(1);

impl QueuePolicy {
    /// A policy of `messages` and `bytes` with the default stall grace.
    pub const fn new(messages: usize, bytes: usize) -> QueuePolicy {
        QueuePolicy {
            messages,
            bytes,
            stall_grace: DEFAULT_STALL_GRACE,
        }
    }

    /// Refuses bounds of zero: a queue that can hold nothing would lose
    /// every message (python-banyan gateways and ours once quietly turned 0
    /// into 1; now every gateway says so).
    pub fn validate(&self) -> Result<()> {
        if self.messages == 0 {
            return Err(Error::ZeroQueue);
        }
        if self.bytes == 0 {
            return Err(Error::ZeroQueueBytes);
        }
        Ok(())
    }
}

/// How a gateway that dials its peer (`tgw` its device, `mqttgw` its broker)
/// waits between attempts: see [`crate::Backoff`].
///
/// Flags: `--reconnect-min DURATION`, `--reconnect-max DURATION`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reconnect {
    /// The first wait after a failure (`--reconnect-min`).
    pub min: Duration,
    /// The longest wait (`--reconnect-max`). A connection that stays up this
    /// long counts as stable: after it ends, the next attempt is at once.
    pub max: Duration,
}

impl Default for Reconnect {
    fn default() -> Self {
        Reconnect {
            min: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }
}

impl Reconnect {
    /// Refuses a first wait longer than the longest one.
    pub fn validate(&self) -> Result<()> {
        if self.min > self.max {
            return Err(Error::ReconnectRange {
                min: self.min,
                max: self.max,
            });
        }
        Ok(())
    }
}

/// Parses a duration as every executable's flags take it: a number of
/// seconds (`1`, `0.25`), or a number with a unit: `ms`, `s`, `m` or `h`
/// (`250ms`, `1.5s`, `2m`).
pub fn parse_duration(text: &str) -> Result<Duration> {
    let bad = || Error::Duration {
        value: text.to_owned(),
    };
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let scale = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 1e-3,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(bad()),
    };
    let value: f64 = number.trim().parse().map_err(|_| bad())?;
    Duration::try_from_secs_f64(value * scale).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_seconds_or_with_a_unit() {
        let ms = Duration::from_millis;
        assert_eq!(parse_duration("1").ok(), Some(ms(1000)));
        assert_eq!(parse_duration("0.25").ok(), Some(ms(250)));
        assert_eq!(parse_duration("250ms").ok(), Some(ms(250)));
        assert_eq!(parse_duration(" 1.5s ").ok(), Some(ms(1500)));
        assert_eq!(parse_duration("2m").ok(), Some(ms(120_000)));
        assert_eq!(parse_duration("1h").ok(), Some(ms(3_600_000)));
        assert_eq!(parse_duration("0").ok(), Some(Duration::ZERO));
        for bad in ["", "ms", "-1", "1x", "1 s s", "nan", "inf", "1e400"] {
            assert!(
                matches!(parse_duration(bad), Err(Error::Duration { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn zero_bounds_are_refused() {
        assert!(QueuePolicy::new(1, 1).validate().is_ok());
        assert!(matches!(
            QueuePolicy::new(0, 1).validate(),
            Err(Error::ZeroQueue)
        ));
        assert!(matches!(
            QueuePolicy::new(1, 0).validate(),
            Err(Error::ZeroQueueBytes)
        ));
    }

    #[test]
    fn reconnect_ranges() {
        assert!(Reconnect::default().validate().is_ok());
        let inverted = Reconnect {
            min: Duration::from_secs(2),
            max: Duration::from_secs(1),
        };
        assert!(matches!(
            inverted.validate(),
            Err(Error::ReconnectRange { .. })
        ));
    }
}
