//! The `overload` scenario (registry only): does overload make a healthy service look dead?
//!
//! 1. Capacity: a short closed loop of single heartbeats (256 reporters, 10 s); its
//!    acknowledged heartbeats per second are what the registry can take.
//! 2. The `service_down_time` in force is read from every node (`GET /v1/settings`); the
//!    overload run lasts 4 of them unless told otherwise.
//! 3. The overload run: an open loop of `overload × capacity × interval` services, each
//!    sending one heartbeat per request every interval on a fixed schedule (the `open`
//!    workload's driver: latency from the scheduled send, requests round-robin over the
//!    nodes, at most `--max-in-flight` outstanding). Every load service keeps sending to the
//!    end.
//! 4. Beside it, the observer ([`observer`]) lists the services on the nodes every round,
//!    during the run and for a margin after, and counts every load service listed `down`:
//!    a false down.
//! 5. And a control group ([`control`]): K services heartbeating the same way for the first
//!    part of the run and then stopping; the observer's lists give each one's delay from
//!    its last acknowledged heartbeat to its first listing as `down`, reported next to the
//!    `service_down_time` in force. That shows that a service that really stopped still goes
//!    `down`.
//!
//! The services of each part have their own hosts (`{prefix}-cap`, `{prefix}-ovl`,
//! `{prefix}-ctl`), so the capacity run's services, silent after it, are never judged.

pub mod control;
pub mod observer;
mod table;

use std::sync::Arc;
use std::time::Duration;

use registry_api::wire::ClusterOut;
use registry_client::wire::SettingsOut;
use tokio::time::Instant;

use crate::driver::{self, ClosedSpec, OpenSpec, SendLog};
use crate::list::get_json;
use crate::opts::{ClusterArgs, OverloadArgs};
use crate::procs::NodeProc;
use crate::report::Report;
use crate::stats::Stats;
use crate::target::registry::{base_url, http_client, RegistryTarget, OVERLOADED};
use crate::workload::Groups;
use control::Control;
use observer::{Observed, Observer, Watched};

/// The counter of requests a node refused at its admission bound, in `/metrics`.
const OVERLOADED_METRIC: &str = "registry_http_requests_overloaded_total";

/// How many times slower than the leader's clock registry time runs at the slowest rate a
/// leader sets under overload (`ClockRate::SLOWEST`, an eighth): a stopped service goes
/// `down` within this many `service_down_time`s of wall time.
const SLOWEST_CLOCK_DIVISOR: u32 = 8;

/// Requests of the overload run that were not acknowledged, by kind.
#[derive(Debug, Clone, Default)]
pub struct Refusals {
    /// Answered 503 `overloaded` (a node's `max_concurrent_requests` in flight).
    pub overloaded: u64,
    /// The same, by the node that refused (from the answer's message).
    pub overloaded_by: Vec<(String, u64)>,
    /// Answered 503 otherwise (no leader, commit not in time, forwarding failed).
    pub unavailable: u64,
    /// Not answered within the request timeout.
    pub timeout: u64,
    /// Not sent: skipped by the load generator, `--max-in-flight` requests being
    /// outstanding at its scheduled time.
    pub not_sent: u64,
    /// Anything else (connections refused or broken, other statuses).
    pub other: u64,
}

impl Refusals {
    /// The refusals among `stats`' errors.
    pub fn of(stats: &Stats) -> Self {
        let mut r = Refusals::default();
        for (kind, e) in &stats.errors {
            if let Some(rest) = kind.strip_prefix(OVERLOADED) {
                r.overloaded += e.count;
                let by = rest.trim().trim_start_matches('(').trim_end_matches(')');
                let by = if by.is_empty() { "node ?" } else { by };
                r.overloaded_by.push((by.to_string(), e.count));
            } else if kind == "HTTP 503" {
                r.unavailable += e.count;
            } else if kind == "timeout" {
                r.timeout += e.count;
            } else if kind == "not sent" {
                r.not_sent += e.count;
            } else {
                r.other += e.count;
            }
        }
        r
    }

    /// Every request not acknowledged.
    pub fn total(&self) -> u64 {
        self.overloaded + self.unavailable + self.timeout + self.not_sent + self.other
    }
}

/// What the control group showed.
#[derive(Debug, Clone, Default)]
pub struct ControlOutcome {
    /// Its services.
    pub services: usize,
    /// When it stopped, from the start of the load.
    pub stop_after: Duration,
    /// Its requests: acknowledged and failed.
    pub stats: Stats,
    /// Per service that went `down` after its last acknowledged heartbeat: the delay from
    /// that acknowledgement to the answer of the first list showing it `down`, sorted.
    pub delays: Vec<Duration>,
    /// A lower bound of each delay: to the request of the last list (after that
    /// acknowledgement) that still listed it `up`, 0 when none did; sorted.
    pub delays_lower: Vec<Duration>,
    /// Services never listed `down` after their last acknowledged heartbeat, within the
    /// observation.
    pub never_down: usize,
    /// Services none of whose heartbeats was acknowledged.
    pub never_acked: usize,
    /// Services listed `down` before the group stopped (false downs of the control group).
    pub early: usize,
}

/// What the overload scenario measured.
#[derive(Debug, Clone, Default)]
pub struct OverloadOutcome {
    /// The `service_down_time` in force (the first node's).
    pub down_time: Duration,
    /// Each node's settings in force, as it said.
    pub settings: Vec<String>,
    /// Every service's heartbeat interval.
    pub interval: Duration,
    /// The overload run's time.
    pub duration: Duration,
    /// How long the observer went on after it.
    pub margin: Duration,
    /// Acknowledged heartbeats per second of the capacity run (`None`: not run).
    pub capacity: Option<f64>,
    /// Reporters of the capacity run.
    pub capacity_reporters: usize,
    /// The overload factor asked for.
    pub asked_factor: f64,
    /// Load services.
    pub services: usize,
    /// Requests per second the schedule offered.
    pub offered: f64,
    /// Requests per second sent (offered, less those the load generator skipped).
    pub sent: f64,
    /// Requests per second acknowledged.
    pub accepted: f64,
    /// Latency of the acknowledged requests from their scheduled send: p50, p99, p99.9, max.
    pub latency: [Option<Duration>; 4],
    /// The requests not acknowledged.
    pub refused: Refusals,
    /// The longest a send started after its scheduled time.
    pub max_dispatch_lag: Option<Duration>,
    /// Most load requests in flight (past it a send is skipped).
    pub max_in_flight: usize,
    /// Per node, the requests its admission bound refused during the run (its
    /// `/metrics` counter: the observer's refused reads and forwarded batches included).
    pub node_overloaded: Vec<(String, Option<u64>)>,
    /// The leader and term before and after the run, as the first node saw them.
    pub leadership: (String, String),
    /// The observer's counts.
    pub observed: Observed,
    /// The control group's.
    pub control: ControlOutcome,
}

impl OverloadOutcome {
    /// Offered ÷ capacity, when the capacity was measured.
    pub fn factor(&self) -> Option<f64> {
        self.capacity.filter(|c| *c > 0.0).map(|c| self.offered / c)
    }
}

/// Runs the scenario against the registry of `c`; its tables go into `report`.
pub async fn registry(
    c: &ClusterArgs,
    a: &OverloadArgs,
    report: &mut Report,
) -> anyhow::Result<()> {
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
    let http = http_client(c.timeout.max(Duration::from_secs(10)), token, ca)?;
    let bases: Vec<String> = c.registry.iter().map(|e| base_url(e)).collect();

    // Capacity.
    let mut capacity = None;
    if !a.capacity_duration.is_zero() {
        let reporters = a.capacity_concurrency.max(1);
        let target = RegistryTarget::new(
            &c.registry,
            &format!("{}-cap", c.prefix),
            Groups::new(reporters, 1),
            c.timeout,
            token,
            ca,
        )?;
        let spec = ClosedSpec {
            concurrency: reporters,
            duration: a.capacity_duration,
            warmup: a.capacity_warmup,
            timeout: c.timeout,
        };
        let run = driver::closed(
            Arc::new(target),
            &spec,
            &nodes,
            format!("capacity: closed c={reporters} b=1"),
        )
        .await;
        let rate = run.beats_per_sec();
        report.runs.push(run);
        anyhow::ensure!(
            rate > 0.0,
            "the capacity run acknowledged no heartbeat: nothing to overload"
        );
        capacity = Some(rate);
    }
    let services = match (a.services, capacity) {
        (Some(n), _) => n.max(1),
        (None, Some(rate)) => {
            ((a.overload * rate * a.interval.as_secs_f64()).round() as usize).max(1)
        }
        (None, None) => anyhow::bail!("no capacity run (--capacity-duration 0): give --services"),
    };

    // The settings in force (read after the capacity run: a young cluster's log may not
    // carry its settings yet, and its nodes then judge by their files).
    let mut settings = Vec::new();
    for (i, base) in bases.iter().enumerate() {
        let s: SettingsOut = get_json(&http, &format!("{base}/v1/settings")).await?;
        settings.push((node_name(&nodes, i), s));
    }
    let down_time = Duration::from_secs_f64(settings[0].1.service_down_time.max(0.0));
    anyhow::ensure!(
        a.interval < down_time,
        "the interval ({:?}) must be shorter than the service_down_time in force ({down_time:?})",
        a.interval
    );
    let duration = a.duration.unwrap_or(down_time * 4);
    let most_margin = down_time.saturating_sub(a.interval);
    let margin = a.margin.unwrap_or(down_time / 2).min(most_margin);
    let control_stop = a.control_stop.unwrap_or(duration / 4).min(duration);
    let sample_every = a
        .sample_every
        .unwrap_or(down_time / 2)
        .max(Duration::from_millis(100));
    let names = roles(&http, &bases, &nodes).await;
    let leader_before = leadership(&http, &bases).await;

    // The overload run, the control group and the observer, together.
    let load = RegistryTarget::new(
        &c.registry,
        &format!("{}-ovl", c.prefix),
        Groups::new(services, 1),
        c.timeout,
        token,
        ca,
    )?;
    let control = Arc::new(Control::new(c, &format!("{}-ctl", c.prefix), a.control)?);
    let reads = http_client(a.observe_timeout, token, ca)?;
    let observer = Observer {
        http: reads,
        bases: bases.clone(),
        names: names.clone(),
        pace: a.observe_every.max(Duration::from_millis(10)),
        all_per_round: a.observe_all,
        window: sample_every,
    };
    observer.check_nodes().await?;
    let overloaded_before = overloaded_counts(&http, &bases).await;
    // The driver starts its schedule 50 ms after it is called.
    let start = Instant::now() + Duration::from_millis(50);
    let sends = Arc::new(SendLog::new(services, Instant::now()));
    let spec = OpenSpec {
        interval: a.interval,
        duration,
        warmup: Duration::ZERO,
        max_in_flight: a.max_in_flight,
        sample_every,
        timeout: c.timeout,
        // Every load service keeps sending on schedule, whatever the registry's latency.
        skip_when_full: Some(Arc::clone(&sends)),
    };
    let watched = Watched {
        load_prefix: Arc::from(format!("{}-ovl-h", c.prefix)),
        load: services,
        control: Arc::clone(&control),
        control_stop: start + control_stop,
        start,
        sends,
        down_time,
    };
    // The control group is watched past the margin while one of its services is not yet
    // seen `down`, up to the bound a stopped service goes `down` within under overload
    // (the clock at its slowest: an eighth) and a round of the observer more.
    let control_until = start + control_stop + down_time * SLOWEST_CLOCK_DIVISOR + margin;
    let observing = tokio::spawn(observer.run(watched, start + duration + margin, control_until));
    let controlling =
        tokio::spawn(Arc::clone(&control).run(start, a.interval, start + control_stop));
    let mode = format!(
        "overload: open n={services} i={}s b=1",
        a.interval.as_secs_f64()
    );
    let run = driver::open(Arc::new(load), &spec, &nodes, mode).await;
    let overloaded_after = overloaded_counts(&http, &bases).await;
    let observed = observing
        .await
        .map_err(|e| anyhow::anyhow!("the observer task failed: {e}"))?;
    controlling
        .await
        .map_err(|e| anyhow::anyhow!("the control group's task failed: {e}"))?;
    let leader_after = leadership(&http, &bases).await;

    let control_outcome = control_outcome(&control, &observed, control_stop);
    let refused = Refusals::of(&run.stats);
    let outcome = OverloadOutcome {
        down_time,
        settings: settings
            .iter()
            .map(|(name, s)| {
                format!(
                    "{name}: service_down_time {} s ({})",
                    s.service_down_time, s.source
                )
            })
            .collect(),
        interval: a.interval,
        duration,
        margin,
        capacity,
        capacity_reporters: a.capacity_concurrency.max(1),
        asked_factor: a.overload,
        services,
        offered: services as f64 / a.interval.as_secs_f64().max(1e-9),
        sent: (run.stats.requests + run.stats.error_count()).saturating_sub(refused.not_sent)
            as f64
            / duration.as_secs_f64().max(1e-9),
        accepted: run.requests_per_sec(),
        latency: [
            run.stats.quantile(0.5),
            run.stats.quantile(0.99),
            run.stats.quantile(0.999),
            run.stats.max(),
        ],
        refused,
        max_dispatch_lag: run.max_dispatch_lag,
        max_in_flight: a.max_in_flight,
        node_overloaded: names
            .iter()
            .zip(overloaded_before.iter().zip(&overloaded_after))
            .map(|(name, (b, a))| (name.clone(), a.zip(*b).map(|(a, b)| a.saturating_sub(b))))
            .collect(),
        leadership: (leader_before, leader_after),
        observed,
        control: control_outcome,
    };
    if a.margin.is_some_and(|m| m > most_margin) {
        report.notes.push(format!(
            "overload: --margin cut to service_down_time − interval ({:.1} s): later, a load \
             service could rightly be down",
            most_margin.as_secs_f64()
        ));
    }
    report.runs.push(run);
    report.overload = Some(outcome);
    Ok(())
}

/// The control group's delays, from the observer's reads after its stop.
fn control_outcome(control: &Control, observed: &Observed, stop_after: Duration) -> ControlOutcome {
    let mut out = ControlOutcome {
        services: control.services(),
        stop_after,
        stats: control.stats(),
        early: observed.control_early,
        ..ControlOutcome::default()
    };
    for (j, last) in control.last_acks().into_iter().enumerate() {
        let Some(last) = last else {
            out.never_acked += 1;
            continue;
        };
        let first = observed
            .control_downs
            .get(j)
            .and_then(|downs| downs.iter().find(|(sent, _)| *sent > last));
        let Some((down_sent, answered)) = first else {
            out.never_down += 1;
            continue;
        };
        let last_up = observed.control_ups.get(j).and_then(|ups| {
            ups.iter()
                .filter(|u| **u > last && *u < down_sent)
                .max()
                .copied()
        });
        out.delays.push(answered.saturating_duration_since(last));
        out.delays_lower
            .push(last_up.map_or(Duration::ZERO, |u| u.saturating_duration_since(last)));
    }
    out.delays.sort();
    out.delays_lower.sort();
    out
}

/// `registry-N`, the name of node `i` in the tables.
fn node_name(nodes: &[NodeProc], i: usize) -> String {
    nodes
        .get(i)
        .map_or_else(|| format!("registry-{}", i + 1), |n| n.name.clone())
}

/// The names of the nodes with their ids and roles as they say (`registry-1 (node 1,
/// leader)`), or the bare name where a node did not answer.
async fn roles(http: &reqwest::Client, bases: &[String], nodes: &[NodeProc]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, base) in bases.iter().enumerate() {
        let name = node_name(nodes, i);
        out.push(
            match get_json::<ClusterOut>(http, &format!("{base}/v1/cluster")).await {
                Ok(c) => format!("{name} (node {}, {})", c.node_id, c.role.to_lowercase()),
                Err(_) => name,
            },
        );
    }
    out
}

/// The leader and term as the first node that answers sees them.
async fn leadership(http: &reqwest::Client, bases: &[String]) -> String {
    for base in bases {
        if let Ok(c) = get_json::<ClusterOut>(http, &format!("{base}/v1/cluster")).await {
            return match c.leader_id {
                Some(id) => format!("leader node {id}, term {}", c.term),
                None => format!("no leader, term {}", c.term),
            };
        }
    }
    "no node answered /v1/cluster".into()
}

/// Each node's count of requests refused at its admission bound (`None` where `/metrics`
/// did not answer or lacks it).
async fn overloaded_counts(http: &reqwest::Client, bases: &[String]) -> Vec<Option<u64>> {
    let mut out = Vec::new();
    for base in bases {
        let text = match http.get(format!("{base}/metrics")).send().await {
            Ok(resp) if resp.status().is_success() => resp.text().await.ok(),
            _ => None,
        };
        out.push(text.and_then(|t| metric(&t, OVERLOADED_METRIC)));
    }
    out
}

/// The value of the unlabelled metric `name` in a Prometheus text exposition.
fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let value = rest.strip_prefix(' ')?.split_whitespace().next()?;
        value.parse::<f64>().ok().map(|v| v as u64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Failure;

    #[test]
    fn refusals_are_grouped_by_kind() {
        let mut s = Stats::new();
        s.record_errors(Failure::new(format!("{OVERLOADED} (node 1)"), "x"), 5);
        s.record_errors(Failure::new(format!("{OVERLOADED} (node 2)"), "x"), 2);
        s.record_errors(Failure::new("HTTP 503", "no leader"), 3);
        s.record_errors(Failure::new("timeout", "t"), 4);
        s.record_errors(Failure::new("not sent", "n"), 6);
        s.record_errors(Failure::new("connect", "c"), 1);
        let r = Refusals::of(&s);
        assert_eq!(
            (r.overloaded, r.unavailable, r.timeout, r.not_sent, r.other),
            (7, 3, 4, 6, 1)
        );
        assert_eq!(
            r.overloaded_by,
            vec![("node 1".to_string(), 5), ("node 2".to_string(), 2)]
        );
        assert_eq!(r.total(), 21);
    }

    #[test]
    fn a_counter_is_read_from_the_exposition() {
        let text = "# HELP registry_http_requests_overloaded Requests...\n\
                    # TYPE registry_http_requests_overloaded counter\n\
                    registry_http_requests_overloaded_total 1234\n\
                    registry_http_requests_overloaded_totalx 9\n";
        assert_eq!(metric(text, OVERLOADED_METRIC), Some(1234));
        assert_eq!(metric("", OVERLOADED_METRIC), None);
    }
}
