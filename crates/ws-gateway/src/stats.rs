//! What the WebSocket gateway counts (its `stopped:` line and its metrics,
//! `banyan_wsgw_*`).

banyan_gateway::stats! {
    /// What the gateway did, returned by its `run`.
    pub struct Stats;
    /// The live counters the sessions and the bus intake share.
    pub(crate) struct Counters {
        /// Pages that sent a valid id message and joined.
        pages,
        /// Messages from pages published on the bus.
        #[metric = "to_bus_messages_total"]
        to_bus,
        /// Bus messages written to pages (one per page reached).
        #[metric = "to_pages_messages_total"]
        to_pages,
        /// Bytes of JSON text written to pages.
        #[metric = "to_pages_bytes_total"]
        to_pages_bytes,
        /// Messages dropped, by reason: from pages, refused as bad input
        /// (answered with an error).
        #[metric = "dropped_messages_total{reason=\"refused\"}"]
        refused,
        /// Bus messages not forwarded because they have no JSON form.
        #[metric = "dropped_messages_total{reason=\"not_json\"}"]
        not_json,
        /// Bus messages dropped for pages that were stalled.
        #[metric = "dropped_messages_total{reason=\"stalled\"}"]
        dropped_stalled,
        /// Connections failed for breaking the WebSocket protocol (closed
        /// with 1002 or 1007).
        protocol_errors,
        /// Pages closed after a panic report on their reply topic.
        panics,
    }
}

impl Counters {
    /// The counters a page's queue drops into (pages are never away: a
    /// page that leaves takes its queue with it).
    pub(crate) fn drops(&self) -> banyan_gateway::Drops {
        banyan_gateway::Drops {
            away: banyan_gateway::Counter::default(),
            stalled: self.dropped_stalled.clone(),
        }
    }
}
