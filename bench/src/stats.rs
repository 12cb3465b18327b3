//! Latency histograms (HdrHistogram, microseconds) and counts of what was acknowledged and
//! what failed, by kind.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;

/// Longest latency the histograms hold (longer ones are clamped to it).
const MAX_MICROS: u64 = 300_000_000;

/// Why a request failed: a short kind to group by, and one example of the detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Grouping key, e.g. `HTTP 503`, `timeout`, `connect`, `grpc Unavailable`.
    pub kind: String,
    /// The error's text.
    pub detail: String,
}

impl Failure {
    /// A failure of `kind` with `detail`.
    pub fn new(kind: impl Into<String>, detail: impl std::fmt::Display) -> Self {
        Self {
            kind: kind.into(),
            detail: detail.to_string(),
        }
    }
}

/// How often one kind of error happened, with the first example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorCount {
    /// Occurrences.
    pub count: u64,
    /// The detail of the first one.
    pub example: String,
}

/// What a run (or a window of it) measured.
#[derive(Debug, Clone)]
pub struct Stats {
    /// Latency of the acknowledged requests, in microseconds.
    pub hist: Histogram<u64>,
    /// Acknowledged requests.
    pub requests: u64,
    /// Acknowledged heartbeats (requests × heartbeats per request).
    pub beats: u64,
    /// Failed requests by kind.
    pub errors: BTreeMap<String, ErrorCount>,
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

impl Stats {
    /// Empty.
    pub fn new() -> Self {
        Self {
            hist: Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid histogram bounds"),
            requests: 0,
            beats: 0,
            errors: BTreeMap::new(),
        }
    }

    /// Counts an acknowledged request of `beats` heartbeats that took `latency`.
    pub fn record_ok(&mut self, latency: Duration, beats: usize) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.hist.saturating_record(us.clamp(1, MAX_MICROS));
        self.requests += 1;
        self.beats += beats as u64;
    }

    /// Counts a failed request.
    pub fn record_err(&mut self, failure: Failure) {
        self.errors
            .entry(failure.kind)
            .and_modify(|e| e.count += 1)
            .or_insert(ErrorCount {
                count: 1,
                example: failure.detail,
            });
    }

    /// Counts `n` failed requests of one kind.
    pub fn record_errors(&mut self, failure: Failure, n: u64) {
        if n == 0 {
            return;
        }
        self.errors
            .entry(failure.kind)
            .and_modify(|e| e.count += n)
            .or_insert(ErrorCount {
                count: n,
                example: failure.detail,
            });
    }

    /// Adds `other` into this.
    pub fn merge(&mut self, other: &Stats) {
        // Both have the same bounds, so adding cannot fail.
        let _ = self.hist.add(&other.hist);
        self.requests += other.requests;
        self.beats += other.beats;
        for (kind, e) in &other.errors {
            self.errors
                .entry(kind.clone())
                .and_modify(|mine| mine.count += e.count)
                .or_insert_with(|| e.clone());
        }
    }

    /// Failed requests, every kind.
    pub fn error_count(&self) -> u64 {
        self.errors.values().map(|e| e.count).sum()
    }

    /// The latency at quantile `q` (0.5, 0.99, 0.999, 1.0), or `None` with no sample.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        (!self.hist.is_empty()).then(|| Duration::from_micros(self.hist.value_at_quantile(q)))
    }

    /// The longest latency.
    pub fn max(&self) -> Option<Duration> {
        (!self.hist.is_empty()).then(|| Duration::from_micros(self.hist.max()))
    }
}
