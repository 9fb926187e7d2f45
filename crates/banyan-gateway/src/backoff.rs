//! How long a gateway waits before dialling its peer again.

use std::time::{Duration, Instant};

use crate::config::Reconnect;

/// Capped exponential backoff with jitter, reset only by a connection that
/// stayed up.
///
/// The first wait after a failure is [`Reconnect::min`], each next one twice
/// as long, never longer than [`Reconnect::max`]; each is shortened by up to
/// a fifth at random, so that gateways restarted together do not dial a
/// broker in step. A connection that the peer accepts and then drops at once
/// (a duplicate client id taking over, an ACL kick, a device crashing on
/// connect) does not reset it, so such a peer is not re-dialled in a tight
/// loop; one that stayed up for at least [`Reconnect::max`] does: the next
/// attempt after it is at once. Pure state: the caller sleeps.
#[derive(Clone, Debug)]
pub struct Backoff {
    reconnect: Reconnect,
    next: Duration,
    /// When the current connection came up, if one is up.
    up_since: Option<Instant>,
    /// xorshift state for the jitter: no need for a random-number crate.
    seed: u64,
}

impl Backoff {
    /// A backoff over `reconnect`.
    pub fn new(reconnect: Reconnect) -> Backoff {
        // A zero wait would make the retry loop spin.
        let min = reconnect.min.max(Duration::from_millis(1));
        let max = reconnect.max.max(min);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        Backoff {
            reconnect: Reconnect { min, max },
            next: min,
            up_since: None,
            seed: (u64::from(nanos) << 20 ^ u64::from(std::process::id())) | 1,
        }
    }

    /// A connection is up (for MQTT: the broker's CONNACK).
    pub fn connected(&mut self) {
        self.up_since = Some(Instant::now());
    }

    /// The wait before the next attempt, after a failed attempt or a lost
    /// connection.
    pub fn next_delay(&mut self) -> Duration {
        if let Some(since) = self.up_since.take() {
            if since.elapsed() >= self.reconnect.max {
                self.next = self.reconnect.min;
                return Duration::ZERO;
            }
        }
        let delay = self.next;
        self.next = (self.next * 2).min(self.reconnect.max);
        delay.mul_f64(1.0 - 0.2 * self.unit())
    }

    /// A number in [0, 1).
    fn unit(&mut self) -> f64 {
        let mut x = self.seed;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.seed = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reconnect(min: u64, max: u64) -> Reconnect {
        Reconnect {
            min: Duration::from_millis(min),
            max: Duration::from_millis(max),
        }
    }

    #[test]
    fn doubles_up_to_the_cap_with_at_most_a_fifth_off() {
        let mut backoff = Backoff::new(reconnect(100, 500));
        for nominal in [100, 200, 400, 500, 500, 500] {
            let delay = backoff.next_delay().as_millis();
            assert!(
                (nominal * 4 / 5..=nominal).contains(&delay),
                "{delay} ms for {nominal}"
            );
        }
    }

    #[test]
    fn only_a_connection_that_lasted_resets_it() {
        let mut backoff = Backoff::new(reconnect(100, 400));
        backoff.next_delay();
        backoff.next_delay();
        // Accepted, then dropped at once: the backoff keeps growing.
        backoff.connected();
        assert!(backoff.next_delay() >= Duration::from_millis(320));
        // Up for longer than the cap: the next attempt is at once.
        backoff.up_since = Some(Instant::now() - Duration::from_millis(400));
        assert_eq!(backoff.next_delay(), Duration::ZERO);
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn never_zero_without_a_stable_connection() {
        let mut backoff = Backoff::new(reconnect(0, 0));
        assert!(backoff.next_delay() > Duration::ZERO);
    }
}
