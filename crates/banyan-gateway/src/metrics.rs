//! Metrics in Prometheus' text format, and the small HTTP endpoint that
//! serves them (`--metrics ADDR:PORT`, `GET /metrics`).
//!
//! A [`Registry`] holds sources: functions that, at each scrape, append the
//! current value of what they measure. A gateway registers its counters
//! (its `Stats`, see [`crate::stats!`]) and its gauges (queue depths, peers
//! connected) when it starts; the endpoint renders them on demand, so the
//! bus pays nothing between scrapes.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::outbox::{Outbox, Peer, Weigh};
use crate::sync::lock;

/// What a metric is, as Prometheus types it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only grows (names end in `_total`).
    Counter,
    /// Goes up and down.
    Gauge,
}

/// One metric family: a name, its help text, and its samples (one per set
/// of labels).
#[derive(Clone, Debug, PartialEq)]
pub struct Metric {
    /// The full name, e.g. `banyan_tgw_to_device_messages_total`.
    pub name: String,
    /// One line of help.
    pub help: String,
    /// Counter or gauge.
    pub kind: Kind,
    /// Label sets and values.
    pub samples: Vec<(Vec<(&'static str, String)>, f64)>,
}

impl Metric {
    /// A metric with one unlabelled sample.
    pub fn single(
        name: impl Into<String>,
        help: impl Into<String>,
        kind: Kind,
        value: f64,
    ) -> Metric {
        Metric {
            name: name.into(),
            help: help.into(),
            kind,
            samples: vec![(Vec::new(), value)],
        }
    }
}

/// Renders metrics in the Prometheus text exposition format (version
/// 0.0.4).
pub fn render(metrics: &[Metric]) -> String {
    let mut out = String::new();
    for metric in metrics {
        let kind = match metric.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let _ = writeln!(out, "# HELP {} {}", metric.name, escape_help(&metric.help));
        let _ = writeln!(out, "# TYPE {} {kind}", metric.name);
        for (labels, value) in &metric.samples {
            out.push_str(&metric.name);
            if !labels.is_empty() {
                out.push('{');
                for (i, (key, value)) in labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{key}=\"{}\"", escape_label(value));
                }
                out.push('}');
            }
            let _ = writeln!(out, " {}", number(*value));
        }
    }
    out
}

fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else {
        value.to_string()
    }
}

fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The counters of a gateway's `Stats` as metrics named
/// `<prefix>_<metric name>`; fields sharing a name (with different labels)
/// are one family.
pub fn from_report(prefix: &str, report: &impl crate::Report) -> Vec<Metric> {
    let mut metrics: Vec<Metric> = Vec::new();
    for (spec, help, value) in report.metric_fields() {
        let (name, labels) = match spec.split_once('{') {
            Some((name, labels)) => (name, parse_labels(labels.trim_end_matches('}'))),
            None => (spec, Vec::new()),
        };
        let name = format!("{prefix}_{name}");
        let sample = (labels, value as f64);
        match metrics.iter_mut().find(|m| m.name == name) {
            Some(metric) => metric.samples.push(sample),
            None => metrics.push(Metric {
                name,
                help: help.trim().to_owned(),
                kind: Kind::Counter,
                samples: vec![sample],
            }),
        }
    }
    metrics
}

/// `reason="away",peer="x"` as pairs (the names are the `stats!`
/// declarations', static).
fn parse_labels(text: &'static str) -> Vec<(&'static str, String)> {
    text.split(',')
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            Some((key.trim(), value.trim().trim_matches('"').to_owned()))
        })
        .collect()
}

/// The gauges of a gateway's queues: messages and bytes waiting, peers
/// connected and stalled, over `outboxes` (one per peer).
pub fn queue_gauges<'a, T: Weigh + 'a>(
    prefix: &str,
    outboxes: impl IntoIterator<Item = &'a Outbox<T>>,
) -> Vec<Metric> {
    let (mut messages, mut bytes, mut connected, mut stalled) = (0usize, 0usize, 0usize, 0usize);
    for outbox in outboxes {
        messages += outbox.len();
        bytes += outbox.bytes();
        if outbox.peer() == Peer::Connected && !outbox.is_closed() {
            connected += 1;
        }
        if outbox.is_stalled() {
            stalled += 1;
        }
    }
    let gauge = |name: &str, help: &str, value: usize| {
        Metric::single(format!("{prefix}_{name}"), help, Kind::Gauge, value as f64)
    };
    vec![
        gauge("queue_messages", "Messages queued for peers.", messages),
        gauge("queue_bytes", "Bytes of payload queued for peers.", bytes),
        gauge("peers_connected", "Peers connected.", connected),
        gauge(
            "peers_stalled",
            "Connected peers that take nothing: their oldest messages are dropped.",
            stalled,
        ),
    ]
}

type Source = Box<dyn Fn(&mut Vec<Metric>) + Send + Sync>;

/// Where a process's metrics come from; cheap to clone (shared).
#[derive(Clone, Default)]
pub struct Registry {
    sources: Arc<Mutex<Vec<Source>>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("sources", &lock(&self.sources).len())
            .finish()
    }
}

impl Registry {
    /// Adds a source, asked for its metrics at every scrape.
    pub fn register(&self, source: impl Fn(&mut Vec<Metric>) + Send + Sync + 'static) {
        lock(&self.sources).push(Box::new(source));
    }

    /// Every metric of every source, now.
    pub fn collect(&self) -> Vec<Metric> {
        let mut metrics = Vec::new();
        for source in lock(&self.sources).iter() {
            source(&mut metrics);
        }
        metrics
    }

    /// The metrics in Prometheus' text format.
    pub fn render(&self) -> String {
        render(&self.collect())
    }
}

/// Scrapes answered at once; more wait for a turn.
const CONCURRENT_SCRAPES: usize = 8;
/// How long a scraper has to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest request read: a scrape is one short line and a few headers.
const MAX_REQUEST: usize = 8 * 1024;

/// Serves `GET /metrics` on `listener` from `registry` until `token` is
/// cancelled. Other paths get 404, other methods 405, requests that are
/// too large or too slow are closed; nothing a scraper sends can stop it.
pub async fn serve(listener: TcpListener, registry: Registry, token: CancellationToken) {
    let permits = Arc::new(Semaphore::new(CONCURRENT_SCRAPES));
    loop {
        let accepted = tokio::select! {
            () = token.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::debug!("accepting a metrics scrape failed: {e}");
                continue;
            }
        };
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &registry).await {
                tracing::debug!(%peer, "metrics scrape: {e}");
            }
            drop(permit);
        });
    }
}

async fn answer(mut stream: TcpStream, registry: &Registry) -> std::io::Result<()> {
    let mut request = Vec::with_capacity(512);
    let read = tokio::time::timeout(REQUEST_TIMEOUT, async {
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < MAX_REQUEST {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            request.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
    if read.is_err() {
        return Ok(());
    }
    let line = request
        .split(|&b| b == b'\n')
        .next()
        .map(|l| String::from_utf8_lossy(l).trim().to_owned())
        .unwrap_or_default();
    let mut words = line.split(' ');
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, body) = match (method, path) {
        ("GET", "/metrics") => ("200 OK", registry.render()),
        ("GET", _) => (
            "404 Not Found",
            "not found: the metrics are at /metrics\n".into(),
        ),
        _ => ("405 Method Not Allowed", "only GET /metrics\n".into()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4; charset=utf-8\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_format() {
        let metrics = vec![
            Metric::single("banyan_x_sent_total", "Messages sent.", Kind::Counter, 3.0),
            Metric {
                name: "banyan_x_dropped_messages_total".into(),
                help: "Dropped, by reason.\nSecond line".into(),
                kind: Kind::Counter,
                samples: vec![
                    (vec![("reason", "away".into())], 1.0),
                    (vec![("reason", "a \"quoted\" one".into())], 2.5),
                ],
            },
        ];
        assert_eq!(
            render(&metrics),
            "# HELP banyan_x_sent_total Messages sent.\n\
             # TYPE banyan_x_sent_total counter\n\
             banyan_x_sent_total 3\n\
             # HELP banyan_x_dropped_messages_total Dropped, by reason.\\nSecond line\n\
             # TYPE banyan_x_dropped_messages_total counter\n\
             banyan_x_dropped_messages_total{reason=\"away\"} 1\n\
             banyan_x_dropped_messages_total{reason=\"a \\\"quoted\\\" one\"} 2.5\n"
        );
        assert_eq!(number(f64::INFINITY), "+Inf");
    }

    crate::stats! {
        /// Test stats.
        pub(crate) struct Stats;
        /// Test counters.
        pub(crate) struct Counters {
            /// Sent.
            #[metric = "sent_messages_total"]
            sent,
            /// Dropped, by reason.
            #[metric = "dropped_messages_total{reason=\"away\"}"]
            away,
            /// Dropped, by reason.
            #[metric = "dropped_messages_total{reason=\"stalled\"}"]
            stalled,
        }
    }

    #[test]
    fn stats_become_counter_families() {
        let counters = Counters::default();
        counters.sent.add(4);
        counters.stalled.inc();
        let text = render(&from_report("banyan_x", &counters.snapshot()));
        assert_eq!(
            text,
            "# HELP banyan_x_sent_messages_total Sent.\n\
             # TYPE banyan_x_sent_messages_total counter\n\
             banyan_x_sent_messages_total 4\n\
             # HELP banyan_x_dropped_messages_total Dropped, by reason.\n\
             # TYPE banyan_x_dropped_messages_total counter\n\
             banyan_x_dropped_messages_total{reason=\"away\"} 0\n\
             banyan_x_dropped_messages_total{reason=\"stalled\"} 1\n"
        );
    }

    #[tokio::test]
    async fn serves_metrics_and_refuses_the_rest() {
        let registry = Registry::default();
        registry.register(|out| out.push(Metric::single("m", "h", Kind::Gauge, 7.0)));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let token = CancellationToken::new();
        let server = tokio::spawn(serve(listener, registry, token.clone()));
        let get = |request: &'static str| async move {
            let mut stream = TcpStream::connect(address).await.expect("connect");
            stream.write_all(request.as_bytes()).await.expect("send");
            let mut response = String::new();
            stream.read_to_string(&mut response).await.expect("read");
            response
        };
        let ok = get("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.ends_with("\r\n\r\n# HELP m h\n# TYPE m gauge\nm 7\n"),
            "{ok}"
        );
        assert!(get("GET / HTTP/1.1\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 404"));
        assert!(get("POST /metrics HTTP/1.1\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 405"));
        token.cancel();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the server stops")
            .expect("task");
    }
}
