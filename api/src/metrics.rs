//! The node's metrics, served at `GET /metrics` in the Prometheus text exposition format
//! (version 0.0.4), every name starting with `registry_`.
//!
//! Two kinds:
//! - counters and histograms updated as things happen ([`Metrics`]): heartbeats accepted,
//!   forwarded and failed, heartbeats per proposed log entry, database flush times, request
//!   latency per route, requests refused for load;
//! - gauges computed at scrape time ([`crate::status::prometheus::render`]) from openraft's metrics, the node's Raft
//!   state and its in-memory services table, so they are never stale: term, leader, log
//!   indexes, replication lag per follower, services up/down/disabled/forced down/frozen
//!   and up/down per availability zone (judged on this node's registry time), the clock
//!   offset to the leader, requests in flight, health and readiness, the free space of the
//!   data directory's filesystem, resident memory, and seconds until the TLS certificate in
//!   use and the CA expire.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The `Content-Type` of the answer to `GET /metrics`.
pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The prefix of every metric name.
pub(crate) const PREFIX: &str = "registry";

/// Labels of a request's latency: the route's template (never the raw path), the method and
/// the status answered.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: &'static str,
    status: u16,
}

/// Why heartbeats failed: the kind of error answered ([`crate::ApiError::kind`]).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// Latency buckets: 0.5 ms to about 8 s, doubling (a write waits at most `write_timeout`).
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 15))
}

/// Counters and histograms of what a node did since it started. Cloning shares them.
#[derive(Clone)]
pub struct Metrics {
    /// The registry they are encoded from (shared: metrics are `Arc`s inside).
    pub(crate) registry: std::sync::Arc<Registry>,
    /// Heartbeats this node committed as leader.
    heartbeats_accepted: Counter,
    /// Heartbeats this node passed on to the leader.
    heartbeats_forwarded: Counter,
    /// Heartbeats answered with an error by this node, by reason.
    heartbeats_failed: Family<ReasonLabels, Counter>,
    /// Heartbeats reporters said they missed, told with heartbeats that landed here.
    heartbeats_missed: Counter,
    /// Heartbeats per log entry the batcher proposed.
    batch_sizes: Histogram,
    /// Time of each flush of the node's database.
    flush_durations: Histogram,
    /// Request latency by method, route and status.
    requests: Family<RequestLabels, Histogram, fn() -> Histogram>,
    /// Requests refused at once because the node had its maximum in flight.
    overloaded: Counter,
    /// Connections closed at once at the cap.
    connections_refused: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Zeroed metrics.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        let heartbeats_accepted = Counter::default();
        registry.register(
            "heartbeats_accepted",
            "Heartbeats this node committed as leader and acknowledged (whether a client or a \
             follower sent them); summed over the nodes, every acknowledged heartbeat once",
            heartbeats_accepted.clone(),
        );
        let heartbeats_forwarded = Counter::default();
        registry.register(
            "heartbeats_forwarded",
            "Heartbeats this node received while not the leader and forwarded to the leader \
             (their outcome is counted by the leader)",
            heartbeats_forwarded.clone(),
        );
        let heartbeats_failed = Family::<ReasonLabels, Counter>::default();
        // The usual reasons are shown at 0 from the start, so rates need no absent series.
        for reason in [
            "bad_request",
            "unauthorized",
            "forbidden",
            "unavailable",
            "internal",
        ] {
            heartbeats_failed
                .get_or_create(&ReasonLabels { reason })
                .inc_by(0);
        }
        registry.register(
            "heartbeats_failed",
            "Heartbeats this node answered with an error, by error kind (a request refused \
             before its body was read counts as one)",
            heartbeats_failed.clone(),
        );
        let heartbeats_missed = Counter::default();
        registry.register(
            "heartbeats_missed_reported",
            "Heartbeats reporters said they had missed since their last acknowledged one \
             (x-registry-missed-heartbeats, at most 8 per request), counted when a heartbeat \
             sent to this node landed: heartbeats lost before this node could read them, or \
             refused",
            heartbeats_missed.clone(),
        );
        let batch_sizes = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        registry.register(
            "heartbeat_batch_size",
            "Heartbeats carried by each log entry of heartbeats this node committed as leader \
             (group commit: requests that arrive while earlier entries commit share one)",
            batch_sizes.clone(),
        );
        let flush_durations = latency_histogram();
        registry.register(
            "disk_flush_duration_seconds",
            "Time of each flush of the node's database that a write waited for (log appends, \
             votes, purges): an entry is acknowledged once its flush is \
             done (etcd: disk_wal_fsync_duration_seconds)",
            flush_durations.clone(),
        );
        let requests = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "http_request_duration_seconds",
            "Time from receiving a request to answering it, by method, route template and \
             status",
            requests.clone(),
        );
        let overloaded = Counter::default();
        registry.register(
            "http_requests_overloaded",
            "Requests answered 503 with Retry-After at once because this node already had \
             max_concurrent_requests public requests in flight",
            overloaded.clone(),
        );
        let connections_refused = Counter::default();
        registry.register(
            "http_connections_refused",
            "Connections closed as soon as they were accepted because this node already had \
             max_connections open",
            connections_refused.clone(),
        );
        Self {
            registry: std::sync::Arc::new(registry),
            connections_refused,
            heartbeats_accepted,
            heartbeats_forwarded,
            heartbeats_failed,
            heartbeats_missed,
            batch_sizes,
            flush_durations,
            requests,
            overloaded,
        }
    }

    /// Counts `n` heartbeats committed here as leader.
    pub fn heartbeats_accepted(&self, n: usize) {
        self.heartbeats_accepted.inc_by(n as u64);
    }

    /// Counts `n` heartbeats forwarded to the leader.
    pub fn heartbeats_forwarded(&self, n: usize) {
        self.heartbeats_forwarded.inc_by(n as u64);
    }

    /// Counts `n` heartbeats answered with an error of kind `reason`.
    pub fn heartbeats_failed(&self, reason: &'static str, n: usize) {
        self.heartbeats_failed
            .get_or_create(&ReasonLabels { reason })
            .inc_by(n as u64);
    }

    /// Counts `n` heartbeats a reporter said it missed.
    pub fn heartbeats_missed(&self, n: u32) {
        self.heartbeats_missed.inc_by(u64::from(n));
    }

    /// The histogram of heartbeats per proposed entry, for the batcher to observe.
    pub fn batch_sizes(&self) -> Histogram {
        self.batch_sizes.clone()
    }

    /// The histogram of database flush times, for the store to observe.
    pub fn flush_durations(&self) -> Histogram {
        self.flush_durations.clone()
    }

    /// Records one answered request.
    pub fn observe_request(
        &self,
        method: &'static str,
        route: &'static str,
        status: u16,
        elapsed: Duration,
    ) {
        self.requests
            .get_or_create(&RequestLabels {
                method,
                route,
                status,
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts a connection closed at once at the cap.
    pub fn connection_refused(&self) {
        self.connections_refused.inc();
    }

    /// Counts a request refused for load.
    pub fn overloaded(&self) {
        self.overloaded.inc();
    }
}
