//! What the WebSocket gateway counts.

banyan_gateway::stats! {
    /// What the gateway did, returned by its `run`.
    pub struct Stats;
    /// The live counters the sessions and the bus intake share.
    pub(crate) struct Counters {
        /// Pages that sent a valid id message and joined.
        pages,
        /// Messages from pages published on the bus.
        to_bus,
        /// Bus messages written to pages (one per page reached).
        to_pages,
        /// Messages from pages refused as bad input (answered with an error).
        refused,
        /// Bus messages not forwarded because they have no JSON form.
        not_json,
        /// Bus messages dropped for pages that were stalled.
        dropped,
        /// Connections failed for breaking the WebSocket protocol (closed
        /// with 1002 or 1007).
        protocol_errors,
        /// Pages closed after a panic report on their reply topic.
        panics,
    }
}
