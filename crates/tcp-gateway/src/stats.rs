//! What the gateway counts, for the log and for its caller.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters, updated from the gateway's parts.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    connections: AtomicU64,
    to_device: AtomicU64,
    from_device: AtomicU64,
    dropped: AtomicU64,
    too_large: AtomicU64,
    invalid: AtomicU64,
}

macro_rules! adders {
    ($($name:ident => $field:ident),*) => {
        impl Stats {
            $(pub(crate) fn $name(&self) {
                self.$field.fetch_add(1, Ordering::Relaxed);
            })*
        }
    };
}
adders!(
    add_connection => connections,
    add_from_device => from_device,
    add_dropped => dropped,
    add_too_large => too_large,
    add_invalid => invalid
);

impl Stats {
    pub(crate) fn add_to_device(&self, n: u64) {
        self.to_device.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn report(&self) -> Report {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Report {
            connections: get(&self.connections),
            to_device: get(&self.to_device),
            from_device: get(&self.from_device),
            dropped: get(&self.dropped),
            too_large: get(&self.too_large),
            invalid: get(&self.invalid),
        }
    }
}

/// What a gateway did, returned by [`crate::run`] when it stops.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Connections made to the device.
    pub connections: u64,
    /// Bus messages written to the device.
    pub to_device: u64,
    /// Frames from the device published on the bus.
    pub from_device: u64,
    /// Bus messages dropped because the queue toward the device was full.
    pub dropped: u64,
    /// Bus messages not sent because they do not fit the length prefix.
    pub too_large: u64,
    /// Frames from the device not published because they are not valid
    /// MessagePack (only with validation on).
    pub invalid: u64,
}
