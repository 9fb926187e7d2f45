//! The monitor in the shape of the gateways ([`banyan_gateway::Gateway`]),
//! so that the one skeleton ([`crate::cli::serve`]) runs it too.

use banyan_core::monitor::{self, MonitorConfig};
use banyan_core::Client;
use banyan_gateway::{Bus, CancellationToken};

banyan_gateway::stats! {
    /// What the monitor did.
    pub struct MonitorStats;
    /// Its counters.
    pub struct MonitorCounters {
        /// Messages printed.
        shown,
    }
}

/// `monitor`: prints every message of the topics it subscribes to on stdout.
#[derive(Debug)]
pub struct Monitor {
    config: MonitorConfig,
    /// Topic prefixes shown (`""`: every topic).
    filters: Vec<String>,
}

impl Monitor {
    /// A monitor showing the topics starting with one of `filters` (none:
    /// every topic).
    pub fn new(config: MonitorConfig, filters: Vec<String>) -> Monitor {
        let filters = if filters.is_empty() {
            vec![String::new()]
        } else {
            filters
        };
        Monitor { config, filters }
    }
}

/// Writing to stdout failed (a closed pipe, usually).
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// The bus failed.
    #[error("bus: {0}")]
    Bus(#[from] banyan_core::Error),
    /// Writing failed.
    #[error("writing to stdout failed: {0}")]
    Output(#[from] std::io::Error),
}

impl banyan_gateway::Gateway for Monitor {
    type Stats = MonitorStats;
    type Error = MonitorError;

    async fn subscribe(&self, bus: &Client) -> Result<(), MonitorError> {
        for filter in &self.filters {
            bus.subscribe(filter).await?;
        }
        Ok(())
    }

    async fn run(
        self,
        mut bus: Bus,
        token: CancellationToken,
    ) -> Result<MonitorStats, MonitorError> {
        let counters = MonitorCounters::default();
        let shown = monitor::run(
            &mut bus.messages,
            &self.config,
            std::io::stdout().lock(),
            token.cancelled(),
        )
        .await?;
        counters.shown.add(shown);
        Ok(counters.snapshot())
    }
}
