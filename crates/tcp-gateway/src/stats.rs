//! What the TCP gateway counts (its `stopped:` line and its metrics,
//! `banyan_tgw_*`).

banyan_gateway::stats! {
    /// What a gateway did, returned by [`crate::Gateway`]'s `run`.
    pub struct Stats;
    /// The live counters the gateway's tasks share.
    pub(crate) struct Counters {
        /// Connections made to the device.
        connections,
        /// Bus messages written to the device.
        #[metric = "to_device_messages_total"]
        to_device,
        /// Bytes of payload written to the device.
        #[metric = "to_device_bytes_total"]
        to_device_bytes,
        /// Frames from the device published on the bus.
        #[metric = "from_device_messages_total"]
        from_device,
        /// Bytes of payload from the device published on the bus.
        #[metric = "from_device_bytes_total"]
        from_device_bytes,
        /// Messages dropped, by reason: the queue was full while the device
        /// was away, or while it was stalled; too large for the prefix; not
        /// MessagePack (with validation on).
        #[metric = "dropped_messages_total{reason=\"away\"}"]
        dropped_away,
        /// Bus messages dropped because the device was stalled.
        #[metric = "dropped_messages_total{reason=\"stalled\"}"]
        dropped_stalled,
        /// Bus messages not sent because they do not fit the length prefix.
        #[metric = "dropped_messages_total{reason=\"too_large\"}"]
        too_large,
        /// Frames from the device not published because they are not valid
        /// MessagePack (only with validation on).
        #[metric = "dropped_messages_total{reason=\"invalid\"}"]
        invalid,
    }
}

impl Counters {
    /// The counters the device's queue drops into.
    pub(crate) fn drops(&self) -> banyan_gateway::Drops {
        banyan_gateway::Drops {
            away: self.dropped_away.clone(),
            stalled: self.dropped_stalled.clone(),
        }
    }
}
