//! What the TCP gateway counts.

banyan_gateway::stats! {
    /// What a gateway did, returned by [`crate::Gateway`]'s `run`.
    pub struct Stats;
    /// The live counters the gateway's tasks share.
    pub(crate) struct Counters {
        /// Connections made to the device.
        connections,
        /// Bus messages written to the device.
        to_device,
        /// Frames from the device published on the bus.
        from_device,
        /// Bus messages dropped because the queue toward the device was full
        /// while the device was away or stalled.
        dropped,
        /// Bus messages not sent because they do not fit the length prefix.
        too_large,
        /// Frames from the device not published because they are not valid
        /// MessagePack (only with validation on).
        invalid,
    }
}
