//! The two ways of driving a [`Target`]: a closed loop (C reporters, each sending as soon
//! as its previous request is answered) and an open loop (every group of services on a fixed
//! schedule, latency counted from the scheduled send time).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;

use crate::procs::{sample_all, NodeProc, NodeSample};
use crate::report::{NodeDelta, RunResult, TimelineRow};
use crate::stats::{Failure, Stats};
use crate::target::Target;

/// Pause after a failed request in the closed loop, so that a dead endpoint is not hammered.
const ERROR_PAUSE: Duration = Duration::from_millis(5);
/// How far past the end of its schedule the open loop's dispatcher may run.
const DISPATCH_GRACE: Duration = Duration::from_secs(1);
/// How long in-flight requests may take to finish after the run.
const DRAIN: Duration = Duration::from_secs(30);

/// A closed-loop run.
#[derive(Debug, Clone)]
pub struct ClosedSpec {
    /// Concurrent reporters.
    pub concurrency: usize,
    /// Measured time.
    pub duration: Duration,
    /// Unmeasured time before it.
    pub warmup: Duration,
    /// Bound on each request.
    pub timeout: Duration,
}

/// An open-loop run.
#[derive(Debug, Clone)]
pub struct OpenSpec {
    /// Each group's period.
    pub interval: Duration,
    /// Measured time.
    pub duration: Duration,
    /// Unmeasured time before it.
    pub warmup: Duration,
    /// Most requests in flight.
    pub max_in_flight: usize,
    /// Timeline period.
    pub sample_every: Duration,
    /// Bound on each request.
    pub timeout: Duration,
    /// `None`: with `max_in_flight` requests outstanding, the schedule waits for one to end
    /// (the wait counts as latency). `Some`: it does not wait, so every later send still
    /// goes out on time; the send that found no slot is skipped and counted as `not sent`;
    /// the log records, per group, when its last send went out and when one was last
    /// skipped.
    pub skip_when_full: Option<Arc<SendLog>>,
}

/// Per group of an open loop: when its last request was dispatched, and when its last send
/// was skipped (`max_in_flight` requests outstanding). Times are kept as nanoseconds from a
/// base, plus one (0: never).
#[derive(Debug)]
pub struct SendLog {
    base: Instant,
    sent: Vec<AtomicU64>,
    skipped: Vec<AtomicU64>,
    skips: AtomicU64,
}

impl SendLog {
    /// For `groups` groups whose schedule starts after `base`.
    pub fn new(groups: usize, base: Instant) -> Self {
        let zeros = || (0..groups).map(|_| AtomicU64::new(0)).collect();
        Self {
            base,
            sent: zeros(),
            skipped: zeros(),
            skips: AtomicU64::new(0),
        }
    }

    fn stamp(&self, at: Instant) -> u64 {
        let ns = at.saturating_duration_since(self.base).as_nanos();
        u64::try_from(ns).unwrap_or(u64::MAX - 1) + 1
    }

    /// Records that group `group`'s request was dispatched at `at`.
    pub fn record_sent(&self, group: usize, at: Instant) {
        if let Some(slot) = self.sent.get(group) {
            slot.fetch_max(self.stamp(at), Ordering::Relaxed);
        }
    }

    /// Records that group `group`'s send scheduled at `at` was skipped.
    pub fn record_skipped(&self, group: usize, at: Instant) {
        self.skips.fetch_add(1, Ordering::Relaxed);
        if let Some(slot) = self.skipped.get(group) {
            slot.fetch_max(self.stamp(at), Ordering::Relaxed);
        }
    }

    /// Sends skipped, every group.
    pub fn skips(&self) -> u64 {
        self.skips.load(Ordering::Relaxed)
    }

    /// The log as it is now.
    pub fn snapshot(&self) -> SendLogAt {
        let read = |v: &[AtomicU64]| v.iter().map(|a| a.load(Ordering::Relaxed)).collect();
        SendLogAt {
            base: self.base,
            sent: read(&self.sent),
            skipped: read(&self.skipped),
        }
    }
}

/// A [`SendLog`] at one time.
#[derive(Debug, Clone)]
pub struct SendLogAt {
    base: Instant,
    sent: Vec<u64>,
    skipped: Vec<u64>,
}

impl SendLogAt {
    fn at(&self, v: &[u64], group: usize) -> Option<Instant> {
        let ns = *v.get(group)?;
        (ns > 0).then(|| self.base + Duration::from_nanos(ns - 1))
    }

    /// When group `group`'s last request was dispatched.
    pub fn last_sent(&self, group: usize) -> Option<Instant> {
        self.at(&self.sent, group)
    }

    /// The scheduled time of group `group`'s last skipped send.
    pub fn last_skipped(&self, group: usize) -> Option<Instant> {
        self.at(&self.skipped, group)
    }
}

async fn send_bounded<T: Target>(
    target: &T,
    timeout: Duration,
    lane: usize,
    endpoint: usize,
    group: usize,
) -> Result<(), Failure> {
    match tokio::time::timeout(timeout, target.send(lane, endpoint, group)).await {
        Ok(res) => res,
        Err(_) => Err(Failure::new(
            "timeout",
            format!("no answer within {timeout:?}"),
        )),
    }
}

fn own_cpu() -> Option<u64> {
    crate::procs::cpu_ticks(std::process::id())
}

fn cpu_delta(before: Option<u64>, after: Option<u64>) -> Option<u64> {
    Some(after?.saturating_sub(before?))
}

fn deltas(nodes: &[NodeProc], before: &[NodeSample], after: &[NodeSample]) -> Vec<NodeDelta> {
    nodes
        .iter()
        .zip(before.iter().zip(after))
        .map(|(n, (b, a))| NodeDelta {
            name: n.name.clone(),
            before: *b,
            after: *a,
        })
        .collect()
}

/// Runs `spec.concurrency` reporters against `target` for `spec.warmup + spec.duration`.
/// Reporter `r` sends through endpoint `r` (modulo the endpoints) the groups `r`, `r + C`,
/// `r + 2C`, ... in turn; a request counts when it started after the warm-up and was
/// answered before the end.
pub async fn closed<T: Target>(
    target: Arc<T>,
    spec: &ClosedSpec,
    nodes: &[NodeProc],
    mode: String,
) -> RunResult {
    let before = sample_all(nodes);
    let client_before = own_cpu();
    let groups = target.groups().max(1);
    let endpoints = target.endpoints().max(1);
    let start = Instant::now();
    let measure_from = start + spec.warmup;
    let end = measure_from + spec.duration;
    let window_cpu = tokio::spawn(window_cpu(nodes.to_vec(), measure_from, end));
    let terms = tokio::spawn(terms_at(target.clone(), measure_from, end));
    let reporters: Vec<_> = (0..spec.concurrency.max(1))
        .map(|r| {
            let target = target.clone();
            let timeout = spec.timeout;
            let concurrency = spec.concurrency.max(1);
            tokio::spawn(async move {
                let mut stats = Stats::new();
                let mut group = r % groups;
                while Instant::now() < end {
                    let t0 = Instant::now();
                    let res = send_bounded(&*target, timeout, r, r % endpoints, group).await;
                    let t1 = Instant::now();
                    let counted = t0 >= measure_from && t1 <= end;
                    match res {
                        Ok(()) if counted => stats.record_ok(t1 - t0, target.beats_in(group)),
                        Ok(()) => {}
                        Err(f) => {
                            if counted {
                                stats.record_err(f);
                            }
                            tokio::time::sleep(ERROR_PAUSE).await;
                        }
                    }
                    group = (group + concurrency) % groups;
                }
                stats
            })
        })
        .collect();
    let mut stats = Stats::new();
    for r in reporters {
        match r.await {
            Ok(s) => stats.merge(&s),
            Err(e) => stats.record_err(Failure::new("reporter task", e)),
        }
    }
    let after = sample_all(nodes);
    let (term_at_start, term_at_end) = terms.await.unwrap_or_default();
    RunResult {
        target: target.label(),
        mode,
        window: spec.duration,
        stats,
        nodes: deltas(nodes, &before, &after),
        timeline: Vec::new(),
        term_at_start,
        term_at_end,
        max_dispatch_lag: None,
        wall: start.elapsed(),
        client_cpu_ticks: cpu_delta(client_before, own_cpu()),
        window_cpu_ticks: window_cpu.await.ok().flatten(),
    }
}

/// The CPU time (user + system, clock ticks) the processes `nodes` used together from `from`
/// to `to`: the measured window, warm-up excluded. `None` when a process could not be read.
async fn window_cpu(nodes: Vec<NodeProc>, from: Instant, to: Instant) -> Option<u64> {
    if nodes.is_empty() {
        return None;
    }
    tokio::time::sleep_until(from).await;
    let ns = nodes.clone();
    let first = tokio::task::spawn_blocking(move || sample_all(&ns))
        .await
        .ok()?;
    tokio::time::sleep_until(to).await;
    let last = tokio::task::spawn_blocking(move || sample_all(&nodes))
        .await
        .ok()?;
    first
        .iter()
        .zip(&last)
        .map(|(a, b)| Some(b.cpu_ticks?.saturating_sub(a.cpu_ticks?)))
        .sum()
}

/// The target's Raft term at `from` and at `to` (the measured window).
async fn terms_at<T: Target>(
    target: Arc<T>,
    from: Instant,
    to: Instant,
) -> (Option<u64>, Option<u64>) {
    tokio::time::sleep_until(from).await;
    let first = target.raft_term().await;
    tokio::time::sleep_until(to).await;
    (first, target.raft_term().await)
}

/// One answered (or failed) request of the open loop.
struct Sample {
    scheduled: Instant,
    latency: Duration,
    beats: usize,
    result: Result<(), Failure>,
}

/// Runs the open loop: group `g` of the target's `G` groups is sent first at
/// `g × interval / G` and then every `interval`, through endpoint `g` (modulo the
/// endpoints), each send in its own task; a send scheduled during the warm-up is not
/// counted. Latency runs from the scheduled time, so a late send (the schedule waiting for
/// `max_in_flight`) counts as latency; with [`OpenSpec::skip_when_full`], the schedule never
/// waits for a slot, and a send that finds none is skipped instead.
pub async fn open<T: Target>(
    target: Arc<T>,
    spec: &OpenSpec,
    nodes: &[NodeProc],
    mode: String,
) -> RunResult {
    let before = sample_all(nodes);
    let client_before = own_cpu();
    let t0 = Instant::now();
    let groups = target.groups().max(1) as u64;
    let endpoints = target.endpoints().max(1);
    let step_ns = (spec.interval.as_nanos() / u128::from(groups)).max(1) as u64;
    let start = Instant::now() + Duration::from_millis(50);
    let measure_from = start + spec.warmup;
    let end = measure_from + spec.duration;
    let window_cpu = tokio::spawn(window_cpu(nodes.to_vec(), measure_from, end));
    let window = spec.sample_every.max(Duration::from_millis(100));
    let windows = spec.duration.as_nanos().div_ceil(window.as_nanos()).max(1) as usize;

    // Collector: total and per-window stats, by scheduled time.
    let (tx, mut rx) = mpsc::unbounded_channel::<Sample>();
    let collector = tokio::spawn(async move {
        let mut total = Stats::new();
        let mut per_window: Vec<Stats> = (0..windows).map(|_| Stats::new()).collect();
        while let Some(s) = rx.recv().await {
            if s.scheduled < measure_from {
                continue;
            }
            let w = ((s.scheduled - measure_from).as_nanos() / window.as_nanos()) as usize;
            let w = w.min(windows - 1);
            match s.result {
                Ok(()) => {
                    total.record_ok(s.latency, s.beats);
                    per_window[w].record_ok(s.latency, s.beats);
                }
                Err(f) => {
                    total.record_err(f.clone());
                    per_window[w].record_err(f);
                }
            }
        }
        (total, per_window)
    });

    // Sampler: memory and disk at the end of every window, and the Raft term at the start
    // of the measured time and at the end of every window.
    let sampler_nodes = nodes.to_vec();
    let sampler_target = target.clone();
    let sampler = tokio::spawn(async move {
        let mut samples = Vec::with_capacity(windows);
        tokio::time::sleep_until(measure_from).await;
        let first_term = sampler_target.raft_term().await;
        for w in 1..=windows {
            let at = (measure_from + window * w as u32).min(end);
            tokio::time::sleep_until(at).await;
            let ns = sampler_nodes.clone();
            let (s, term) = tokio::join!(
                async {
                    tokio::task::spawn_blocking(move || sample_all(&ns))
                        .await
                        .unwrap_or_default()
                },
                sampler_target.raft_term()
            );
            samples.push((s, term));
        }
        (first_term, samples)
    });

    // Dispatcher. It never runs past the end of the schedule (plus a second): what it could
    // not send by then (every request slot busy) is counted as failed, not sent late.
    let permits = Arc::new(Semaphore::new(spec.max_in_flight.max(1)));
    let stop_at = end + DISPATCH_GRACE;
    let mut max_lag = Duration::ZERO;
    let mut k: u64 = 0;
    loop {
        let scheduled = start + Duration::from_nanos(k.saturating_mul(step_ns));
        if scheduled >= end {
            break;
        }
        let now = Instant::now();
        if scheduled > now {
            tokio::time::sleep_until(scheduled).await;
        }
        let group = (k % groups) as usize;
        let permit = if let Some(log) = &spec.skip_when_full {
            match permits.clone().try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => {
                    if Instant::now() >= stop_at {
                        break;
                    }
                    log.record_skipped(group, scheduled);
                    target.skipped(group);
                    let _ = tx.send(Sample {
                        scheduled,
                        latency: Duration::ZERO,
                        beats: target.beats_in(group),
                        result: Err(Failure::new(
                            "not sent",
                            format!(
                                "skipped: {} requests already in flight (--max-in-flight)",
                                spec.max_in_flight
                            ),
                        )),
                    });
                    k += 1;
                    continue;
                }
            }
        } else {
            match tokio::time::timeout_at(stop_at, permits.clone().acquire_owned()).await {
                Ok(Ok(permit)) => permit,
                _ => break,
            }
        };
        if Instant::now() >= stop_at {
            break;
        }
        let now = Instant::now();
        max_lag = max_lag.max(now.saturating_duration_since(scheduled));
        if let Some(log) = &spec.skip_when_full {
            log.record_sent(group, now);
        }
        let target = target.clone();
        let tx = tx.clone();
        let timeout = spec.timeout;
        tokio::spawn(async move {
            let result = send_bounded(&*target, timeout, group, group % endpoints, group).await;
            let latency = Instant::now().saturating_duration_since(scheduled);
            drop(permit);
            let _ = tx.send(Sample {
                scheduled,
                latency,
                beats: target.beats_in(group),
                result,
            });
        });
        k += 1;
    }
    // The sends of the schedule that were never dispatched.
    let mut unsent = 0u64;
    loop {
        let scheduled = start + Duration::from_nanos(k.saturating_mul(step_ns));
        if scheduled >= end {
            break;
        }
        if scheduled >= measure_from {
            unsent += 1;
        }
        k += 1;
    }
    drop(tx);
    let (stats, per_window) = match tokio::time::timeout(DRAIN, collector).await {
        Ok(Ok(c)) => c,
        _ => {
            let mut s = Stats::new();
            s.record_err(Failure::new(
                "not drained",
                "requests still in flight 30 s after the run",
            ));
            (s, Vec::new())
        }
    };
    let (mut stats, per_window) = (stats, per_window);
    if unsent > 0 {
        stats.record_errors(
            Failure::new(
                "not sent",
                format!(
                    "the schedule fell behind: {} requests already in flight (--max-in-flight)",
                    spec.max_in_flight
                ),
            ),
            unsent,
        );
    }
    let (term_at_start, samples) = sampler.await.unwrap_or_default();
    let term_at_end = samples.last().and_then(|(_, term)| *term);
    let after = sample_all(nodes);
    let timeline = per_window
        .into_iter()
        .zip(samples)
        .enumerate()
        .map(|(w, (stats, (nodes, term)))| TimelineRow {
            at: (window * (w as u32 + 1)).min(spec.duration),
            window: window.min(spec.duration.saturating_sub(window * w as u32)),
            stats,
            nodes,
            term,
        })
        .collect();
    RunResult {
        target: target.label(),
        mode,
        window: spec.duration,
        stats,
        nodes: deltas(nodes, &before, &after),
        timeline,
        term_at_start,
        term_at_end,
        max_dispatch_lag: Some(max_lag),
        wall: t0.elapsed(),
        client_cpu_ticks: cpu_delta(client_before, own_cpu()),
        window_cpu_ticks: window_cpu.await.ok().flatten(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_and_skips_are_kept_per_group() {
        let base = Instant::now();
        let log = SendLog::new(3, base);
        let at = |s: u64| base + Duration::from_secs(s);
        assert_eq!(log.snapshot().last_sent(0), None);
        log.record_sent(1, at(2));
        log.record_sent(1, at(1));
        log.record_skipped(2, at(3));
        log.record_skipped(7, at(3));
        let snap = log.snapshot();
        log.record_sent(0, at(5));
        assert_eq!(snap.last_sent(1), Some(at(2)));
        assert_eq!(snap.last_skipped(2), Some(at(3)));
        assert_eq!((snap.last_sent(0), snap.last_skipped(1)), (None, None));
        assert_eq!((snap.last_sent(7), log.skips()), (None, 2));
    }
}
