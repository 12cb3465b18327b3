//! The `watch` scenario (registry only): how many events a node streams to W watchers at N
//! services, and what watching costs the heartbeat write path.
//!
//! 1. N services are registered with batched heartbeats (as the list scenario does).
//! 2. The write path's cost: a closed loop of single heartbeats of registered services
//!    (which make no event), with no watcher and then with W watchers on one follower;
//!    each without events and with the event maker creating services at a fixed rate
//!    beside it, so that each case with watchers has a baseline without.
//! 3. Streaming: the event maker creates new services as fast as they are acknowledged
//!    (each first heartbeat is one `created` event), through the leader; the W watchers
//!    count what reaches them. Lag runs from a request's acknowledgement (and from its
//!    send) to the arrival of its first event at each watcher.
//!
//! etcd is left out: its watch streams key changes of a revision, not liveness derived from
//! a log, so neither the events nor their cost would compare.

mod frames;
mod maker;
mod table;
mod watchers;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::driver::{self, ClosedSpec};
use crate::list::{leader_and_follower, register, wait_applied};
use crate::opts::{ClusterArgs, WatchArgs};
use crate::procs::{cpu_ticks, sample_all, NodeProc, NodeSample, TICKS_PER_SEC};
use crate::report::{Report, RunResult};
use crate::stats::Stats;
use crate::target::registry::{base_url, http_client, RegistryTarget};
use crate::workload::Groups;
use maker::{Maker, MakerRun};
use watchers::Watchers;

/// How long the watchers may take to open.
const OPEN_WITHIN: Duration = Duration::from_secs(30);

/// One write-path run.
#[derive(Debug, Clone)]
pub struct CostRow {
    /// Watchers attached.
    pub watchers: usize,
    /// Events per second the maker was asked for meanwhile (0: none).
    pub event_rate: f64,
    /// Acknowledged heartbeats per second.
    pub beats_per_sec: f64,
    /// Median latency.
    pub p50: Option<Duration>,
    /// 99th percentile latency.
    pub p99: Option<Duration>,
    /// CPU of the server processes together per acknowledged heartbeat, µs.
    pub cpu_per_beat_us: Option<f64>,
    /// Events the watchers received together during the run.
    pub delivered: u64,
    /// Events acknowledged to the maker during the run.
    pub made: u64,
}

/// The streaming run.
#[derive(Debug, Clone, Default)]
pub struct StreamRow {
    /// Watchers.
    pub watchers: usize,
    /// The node they watched.
    pub served_by: String,
    /// Services registered before it (the event maker's not counted).
    pub services: usize,
    /// Concurrent event-making requests.
    pub writers: usize,
    /// New services per request.
    pub batch: usize,
    /// Measured time.
    pub window: Duration,
    /// Events acknowledged to the maker within the window.
    pub committed: u64,
    /// Events received by the watchers together within the window.
    pub delivered: u64,
    /// Bytes received by the watchers together within the window.
    pub bytes: u64,
    /// From a request's acknowledgement to its first event at a watcher (0 when earlier).
    pub lag_from_ack: Stats,
    /// From a request's send to its first event at a watcher.
    pub lag_from_send: Stats,
    /// Lag samples whose event came before the acknowledgement.
    pub before_ack: u64,
    /// Streams the node ended with a cut-off.
    pub cut_off: usize,
    /// The first cut-off notice.
    pub cut_off_example: Option<String>,
    /// Streams ended by the node without a cut-off.
    pub ended: usize,
    /// Streams that failed, with the first failure.
    pub failed: usize,
    /// The first failure of a stream.
    pub failure_example: Option<String>,
    /// When, after the window, every running watcher had every acknowledged event.
    pub caught_up: Option<Duration>,
    /// Failed event-making requests.
    pub maker_failures: Stats,
    /// CPU % of a core of every server process over the window, with its role.
    pub node_cpu: Vec<(String, Option<f64>)>,
    /// CPU % of a core of registry-bench itself over the window.
    pub client_cpu: Option<f64>,
}

/// What the watch scenario measured (the write-path runs are also in [`Report::runs`]).
#[derive(Debug, Clone, Default)]
pub struct WatchOutcome {
    /// The write-path runs, in order: no watcher, no watcher with events, watchers idle,
    /// watchers with events.
    pub costs: Vec<CostRow>,
    /// The streaming run.
    pub stream: StreamRow,
}

impl WatchOutcome {
    /// Failed requests and failed streams (cut-offs are counted apart).
    pub fn error_count(&self) -> u64 {
        self.stream.maker_failures.error_count() + self.stream.failed as u64
    }
}

/// Runs the scenario against the registry of `c`; its tables go into `report`.
pub async fn registry(c: &ClusterArgs, a: &WatchArgs, report: &mut Report) -> anyhow::Result<()> {
    anyhow::ensure!(!c.registry.is_empty(), "no registry endpoint (--registry)");
    let nodes = NodeProc::list(
        "registry",
        c.registry.len(),
        &c.registry_pids,
        &c.registry_pid_files,
        &c.registry_data_dirs,
    );
    let token = c.registry_token.as_deref();
    let ca = c.registry_cacert.as_deref();
    let http = http_client(c.timeout.max(Duration::from_secs(60)), token, ca)?;
    // A stream lasts the whole scenario: no total timeout.
    let streams = http_client(Duration::from_secs(24 * 3600), token, ca)?;
    let bases: Vec<String> = c.registry.iter().map(|e| base_url(e)).collect();
    let (leader, follower) = leader_and_follower(&http, &bases).await?;
    let role = |i: usize, b: &str| {
        let name = nodes
            .get(i)
            .map_or_else(|| format!("registry-{}", i + 1), |n| n.name.clone());
        match (b == leader, b == follower) {
            (true, _) => format!("{name} (leader)"),
            (_, true) => format!("{name} (watched)"),
            _ => name,
        }
    };
    let roles: Vec<String> = bases.iter().enumerate().map(|(i, b)| role(i, b)).collect();
    let watched = bases
        .iter()
        .position(|b| *b == follower)
        .map_or_else(|| follower.clone(), |i| roles[i].clone());

    register(
        &http,
        &leader,
        &c.prefix,
        0..a.services,
        a.register_batch,
        a.register_concurrency,
    )
    .await?;
    wait_applied(&http, &bases, a.services).await?;
    let maker = Arc::new(Maker::new(
        http.clone(),
        &leader,
        format!("{}-ev", c.prefix),
        a.event_batch,
    ));
    let rate = (a.cost_event_rate > 0.0).then_some(a.cost_event_rate);

    let mut outcome = WatchOutcome::default();
    let cost = CostRun {
        c,
        a,
        nodes: &nodes,
        maker: &maker,
    };
    outcome.costs.push(cost.run(None, None, report).await);
    if let Some(r) = rate {
        outcome.costs.push(cost.run(None, Some(r), report).await);
    }
    let watchers = Watchers::open(
        &streams,
        &follower,
        a.watchers,
        &maker.host_prefix(),
        maker.batch(),
        OPEN_WITHIN,
    )
    .await?;
    outcome
        .costs
        .push(cost.run(Some(&watchers), None, report).await);
    let mut expected = 0;
    if let Some(r) = rate {
        let row = cost.run(Some(&watchers), Some(r), report).await;
        // Every watcher is to receive what that run acknowledged.
        expected = row.made;
        outcome.costs.push(row);
    }

    let stream = stream_run(a, &maker, watchers, &nodes, &roles, expected).await;
    outcome.stream = StreamRow {
        served_by: watched,
        services: a.services,
        ..stream
    };
    report.notes.push(format!(
        "watch: watchers on {}; the write path's closed loop spreads its requests over {} \
         node(s), the event maker sends to the leader",
        outcome.stream.served_by,
        c.registry.len()
    ));
    report.watch = Some(outcome);
    Ok(())
}

/// The closed single-heartbeat loop of the write-path runs.
struct CostRun<'a> {
    c: &'a ClusterArgs,
    a: &'a WatchArgs,
    nodes: &'a [NodeProc],
    maker: &'a Arc<Maker>,
}

impl CostRun<'_> {
    /// One run with `watchers` attached (or none) and the maker at `rate` beside it (or
    /// not); its [`RunResult`] goes into `report`.
    async fn run(
        &self,
        watchers: Option<&Watchers>,
        rate: Option<f64>,
        report: &mut Report,
    ) -> CostRow {
        let (c, a) = (self.c, self.a);
        let reporters = a.cost_concurrency.max(1);
        let groups = Groups::new(reporters.min(a.services.max(1)), 1);
        let spec = ClosedSpec {
            concurrency: reporters,
            duration: a.cost_duration,
            warmup: a.cost_warmup,
            timeout: c.timeout,
        };
        let n = watchers.map_or(0, |w| w.tallies.len());
        let label = match rate {
            Some(r) => format!("registry, {n} watchers, {r:.0} events/s"),
            None => format!("registry, {n} watchers, no events"),
        };
        let mode = format!("closed c={reporters} b=1");
        let delivered_before = watchers.map_or(0, Watchers::events);
        let target = RegistryTarget::of_cluster(c, groups);
        let mut made = 0;
        let mut run = match target {
            Ok(t) => {
                let closed = driver::closed(Arc::new(t), &spec, self.nodes, mode.clone());
                match rate {
                    Some(r) => {
                        let end = Instant::now() + a.cost_warmup + a.cost_duration;
                        let (run, m) = tokio::join!(closed, self.maker.run(1, Some(r), end));
                        made = (m.acks.len() * self.maker.batch()) as u64;
                        with_maker_errors(run, &m)
                    }
                    None => closed.await,
                }
            }
            Err(e) => failed_run(&mode, &e),
        };
        run.target = label;
        let cpu_per_beat_us = run.window_cpu_ticks.and_then(|t| {
            (run.stats.beats > 0)
                .then(|| 1e6 * t as f64 / TICKS_PER_SEC as f64 / run.stats.beats as f64)
        });
        let row = CostRow {
            watchers: n,
            event_rate: rate.unwrap_or(0.0),
            beats_per_sec: run.beats_per_sec(),
            p50: run.stats.quantile(0.5),
            p99: run.stats.quantile(0.99),
            cpu_per_beat_us,
            delivered: watchers.map_or(0, Watchers::events) - delivered_before,
            made,
        };
        report.runs.push(run);
        row
    }
}

/// `run` with the event maker's failures among its errors.
fn with_maker_errors(mut run: RunResult, made: &MakerRun) -> RunResult {
    for (kind, e) in &made.failures.errors {
        run.stats
            .errors
            .insert(format!("event maker: {kind}"), e.clone());
    }
    run
}

/// A run that could not start.
fn failed_run(mode: &str, e: &anyhow::Error) -> RunResult {
    let mut stats = Stats::new();
    stats.record_err(crate::stats::Failure::new("set-up", format!("{e:#}")));
    RunResult {
        target: String::new(),
        mode: mode.to_string(),
        window: Duration::from_secs(1),
        stats,
        nodes: Vec::new(),
        timeline: Vec::new(),
        term_at_start: None,
        term_at_end: None,
        max_dispatch_lag: None,
        wall: Duration::from_secs(1),
        client_cpu_ticks: None,
        window_cpu_ticks: None,
    }
}

/// The streaming run: the maker at full speed for `a.duration`, then a wait for every
/// watcher to catch up (`expected`: `created` events each had to receive before it), then the
/// watchers are stopped.
async fn stream_run(
    a: &WatchArgs,
    maker: &Arc<Maker>,
    watchers: Watchers,
    nodes: &[NodeProc],
    roles: &[String],
    expected: u64,
) -> StreamRow {
    let me = std::process::id();
    let nodes_before = sample_all(nodes);
    let client_before = cpu_ticks(me);
    let (events_before, bytes_before) = (watchers.events(), watchers.bytes());
    let t0 = Instant::now();
    let end = t0 + a.duration;
    let made = {
        let maker = Arc::clone(maker);
        let writers = a.writers;
        tokio::spawn(async move { maker.run(writers, None, end).await })
    };
    tokio::time::sleep_until(end).await;
    let (events_after, bytes_after) = (watchers.events(), watchers.bytes());
    let ns = nodes.to_vec();
    let nodes_after = tokio::task::spawn_blocking(move || sample_all(&ns))
        .await
        .unwrap_or_default();
    let client_after = cpu_ticks(me);
    let window = t0.elapsed();
    let made = made.await.unwrap_or_default();

    let expected = expected + (made.acks.len() * maker.batch()) as u64;
    let deadline = Instant::now() + a.catch_up;
    let caught_up = loop {
        if watchers.min_created_running() >= expected {
            break Some(end.elapsed());
        }
        if Instant::now() >= deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let ends = watchers.stop().await;

    let acks: HashMap<usize, maker::Ack> = made.acks.iter().map(|k| (k.batch, *k)).collect();
    let mut row = StreamRow {
        watchers: ends.len(),
        writers: a.writers,
        batch: maker.batch(),
        window,
        committed: (made.acks.iter().filter(|k| k.acked <= end).count() * maker.batch()) as u64,
        delivered: events_after - events_before,
        bytes: bytes_after - bytes_before,
        caught_up,
        maker_failures: made.failures,
        node_cpu: cpu_pcts(&nodes_before, &nodes_after, window, roles),
        client_cpu: pct(client_before, client_after, window),
        ..StreamRow::default()
    };
    for e in &ends {
        for (batch, at) in &e.marks {
            let Some(k) = acks.get(batch) else { continue };
            let (acked, sent) = (k.acked.into_std(), k.sent.into_std());
            if *at < acked {
                row.before_ack += 1;
            }
            row.lag_from_ack
                .record_ok(at.saturating_duration_since(acked), 0);
            row.lag_from_send
                .record_ok(at.saturating_duration_since(sent), 0);
        }
        if let Some(f) = &e.failure {
            row.failed += 1;
            row.failure_example
                .get_or_insert_with(|| format!("{}: {}", f.kind, f.detail));
        } else if let Some(cut) = &e.cut_off {
            row.cut_off += 1;
            row.cut_off_example.get_or_insert_with(|| cut.clone());
        } else if e.ended_by_node {
            row.ended += 1;
        }
    }
    row
}

/// CPU % of a core of each process between two samples `window` apart, named by `roles`.
fn cpu_pcts(
    before: &[NodeSample],
    after: &[NodeSample],
    window: Duration,
    roles: &[String],
) -> Vec<(String, Option<f64>)> {
    before
        .iter()
        .zip(after)
        .enumerate()
        .map(|(i, (b, a))| {
            let name = roles
                .get(i)
                .cloned()
                .unwrap_or_else(|| format!("registry-{}", i + 1));
            (name, pct(b.cpu_ticks, a.cpu_ticks, window))
        })
        .collect()
}

/// CPU % of a core between two tick counts `window` apart.
fn pct(before: Option<u64>, after: Option<u64>, window: Duration) -> Option<f64> {
    let ticks = after?.saturating_sub(before?);
    Some(100.0 * ticks as f64 / TICKS_PER_SEC as f64 / window.as_secs_f64().max(1e-9))
}
