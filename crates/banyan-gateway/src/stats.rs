//! What a gateway counts, and how it reports it: one pattern for all.
//!
//! A gateway declares its counters once with [`stats!`](crate::stats!): that
//! gives a live, shareable counters type (its parts bump [`Counter`]s) and a
//! plain `Stats` snapshot that `run` returns, shown the same way by every
//! gateway (`name=value ...`, see [`Report`]).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A counter shared by the parts of a gateway: clones count into the same
/// value.
#[derive(Clone, Debug, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    /// Adds one; returns the new total.
    pub fn inc(&self) -> u64 {
        self.add(1)
    }

    /// Adds `n`; returns the new total.
    pub fn add(&self, n: u64) -> u64 {
        self.0.fetch_add(n, Ordering::Relaxed) + n
    }

    /// The total so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A snapshot of a gateway's counters, by name, in declaration order.
pub trait Report {
    /// Each counter's name and value.
    fn fields(&self) -> Vec<(&'static str, u64)>;

    /// Each counter as a metric: its metric name (optionally with labels,
    /// `dropped_messages_total{reason="away"}`), help text and value.
    fn metric_fields(&self) -> Vec<(&'static str, &'static str, u64)>;
}

/// Writes a report as every gateway shows it: `name=value name=value ...`.
pub fn write_report(report: &impl Report, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    for (i, (name, value)) in report.fields().into_iter().enumerate() {
        if i > 0 {
            f.write_str(" ")?;
        }
        write!(f, "{name}={value}")?;
    }
    Ok(())
}

/// Declares a gateway's counters: a `Stats` snapshot struct (public `u64`
/// fields, [`Report`], `Display` as `name=value ...`) and a live counters
/// struct of [`Counter`]s with a `snapshot()`.
///
/// Each counter is also a Prometheus counter (see [`crate::metrics`]): its
/// doc comment is the help text, and `#[metric = "..."]` names it (the part
/// after the gateway's prefix, labels allowed); without one the name is the
/// field's, with `_total`.
///
/// ```
/// banyan_gateway::stats! {
///     /// What the echo gateway did.
///     pub struct Stats;
///     /// Its live counters.
///     pub struct Counters {
///         /// Messages echoed.
///         echoed,
///         /// Messages refused.
///         refused,
///     }
/// }
///
/// let counters = Counters::default();
/// counters.echoed.inc();
/// counters.echoed.add(2);
/// let stats = counters.snapshot();
/// assert_eq!(stats.echoed, 3);
/// assert_eq!(stats.to_string(), "echoed=3 refused=0");
/// ```
#[macro_export]
macro_rules! stats {
    (
        $(#[$stats_meta:meta])*
        $vis:vis struct $stats:ident;
        $(#[$counters_meta:meta])*
        $cvis:vis struct $counters:ident {
            $( $(#[doc = $doc:literal])* $(#[metric = $metric:literal])? $field:ident ),* $(,)?
        }
    ) => {
        $(#[$stats_meta])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        $vis struct $stats {
            $( $(#[doc = $doc])* $vis $field: u64, )*
        }

        $(#[$counters_meta])*
        #[derive(Clone, Debug, Default)]
        $cvis struct $counters {
            $( $(#[doc = $doc])* $cvis $field: $crate::Counter, )*
        }

        impl $counters {
            /// The counts so far.
            $cvis fn snapshot(&self) -> $stats {
                $stats { $( $field: self.$field.get(), )* }
            }
        }

        impl $crate::Report for $stats {
            fn fields(&self) -> ::std::vec::Vec<(&'static str, u64)> {
                ::std::vec![ $( (::std::stringify!($field), self.$field), )* ]
            }

            fn metric_fields(&self) -> ::std::vec::Vec<(&'static str, &'static str, u64)> {
                ::std::vec![ $( (
                    $crate::__metric_name!($field $(, $metric)?),
                    ::std::concat!($($doc),*),
                    self.$field,
                ), )* ]
            }
        }

        impl ::std::fmt::Display for $stats {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                $crate::stats::write_report(self, f)
            }
        }
    };
}

/// The metric name of a `stats!` field: its `#[metric = "..."]`, or the
/// field's name with `_total`.
#[doc(hidden)]
#[macro_export]
macro_rules! __metric_name {
    ($field:ident) => {
        ::std::concat!(::std::stringify!($field), "_total")
    };
    ($field:ident, $metric:literal) => {
        $metric
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::stats! {
        /// Test stats.
        pub(crate) struct Stats;
        /// Test counters.
        pub(crate) struct Counters {
            /// One.
            one,
            /// Two
            /// lines.
            #[metric = "dropped_messages_total{reason=\"two\"}"]
            two,
        }
    }

    #[test]
    fn clones_share_and_snapshots_show_names_in_order() {
        let counters = Counters::default();
        let shared = counters.clone();
        assert_eq!(shared.one.inc(), 1);
        assert_eq!(counters.two.add(5), 5);
        let stats = counters.snapshot();
        assert_eq!((stats.one, stats.two), (1, 5));
        assert_eq!(stats.fields(), vec![("one", 1), ("two", 5)]);
        assert_eq!(stats.to_string(), "one=1 two=5");
        assert_eq!(
            stats.metric_fields(),
            vec![
                ("one_total", " One.", 1),
                ("dropped_messages_total{reason=\"two\"}", " Two lines.", 5)
            ]
        );
    }
}
