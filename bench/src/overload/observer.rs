//! The false-down observer of the overload scenario: it lists the services on the nodes
//! (stale reads, `GET /v1/services?consistency=stale`) every round while the load runs and
//! for a margin after, and judges every load service in each list. Every load service's
//! sender keeps sending on schedule to the end of the run, so a load service listed `down`
//! is a **false down**, whatever the reason (its heartbeats refused, or a node behind).
//!
//! The load generator may itself skip sends (every request slot busy, see
//! [`crate::driver::SendLog`]), so the rule is made exact: a load service listed `down` in
//! a list answered at `t` is a false down when its sender dispatched a heartbeat after
//! `t − service_down_time` (and before the list was asked for): had the registry accepted
//! that heartbeat, the service would have been `up` at `t`. False downs are split by whether
//! every send of that window went out or some were skipped by the generator; a service
//! `down` with no heartbeat dispatched in the window is counted apart, as the generator's
//! doing, not as a false down.
//!
//! It counts what it looked at as well as what it found, so that a run cannot pass having
//! looked at nothing: per node the lists read, the reads refused by the node's admission
//! bound (retried within the round), the reads that failed otherwise, and the load
//! services judged.
//!
//! A full list at 100k services is tens of MiB of JSON: by default each round reads one
//! node, in rotation, and the lists are parsed (only host, binary and state of each row) on
//! a blocking thread, so that the load's dispatcher is not held up.
//!
//! It also records, for the control group, every read after the group's stop that listed a
//! control service `down`, from which the scenario takes each one's first `down` after its
//! last acknowledged heartbeat.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use registry_client::wire::State;
use serde::Deserialize;
use tokio::time::Instant;

use super::control::Control;
use crate::driver::{SendLog, SendLogAt};
use crate::stats::{Failure, Stats};
use crate::target::registry::{check_answer, transport_failure, OVERLOADED};
use crate::workload::{BINARIES, PER_HOST};

/// Pause before retrying a list refused by a node's admission bound.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// False downs quoted as examples.
const EXAMPLES: usize = 5;

/// What the reads of one node came to.
#[derive(Debug, Clone, Default)]
pub struct NodeReads {
    /// The node (`registry-1 (leader)`).
    pub name: String,
    /// Lists read and judged.
    pub lists: u64,
    /// Attempts answered 503 `overloaded` (each retried within its round).
    pub refused: u64,
    /// Rounds whose read of this node did not end in a list (refused to the end of the
    /// round, a timeout, an error, an answer that did not parse).
    pub failed: u64,
    /// The first failure.
    pub failure_example: Option<String>,
    /// Load services judged, over every list (a service counts once per list).
    pub judged: u64,
    /// Load services listed `down`, over every list.
    pub down: u64,
    /// Time of the successful reads, from sending to the parsed list.
    pub latency: Stats,
    /// Bytes of the last list read.
    pub last_bytes: usize,
}

/// One timeline window of the observer (by the time each read was sent).
#[derive(Debug, Clone, Copy, Default)]
pub struct WindowDowns {
    /// Lists read.
    pub lists: u64,
    /// Load services judged.
    pub judged: u64,
    /// False downs (occurrences).
    pub down: u64,
    /// Most load services `down` in one list.
    pub most_in_one_list: usize,
    /// Control services listed `down` in the window's last list.
    pub control_down: usize,
}

/// What the observer saw.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Per node, in endpoint order.
    pub nodes: Vec<NodeReads>,
    /// Whether every node was read at each round (else one per round, in rotation).
    pub all_per_round: bool,
    /// Period of the rounds.
    pub pace: Duration,
    /// Load services ever listed `down` (distinct).
    pub distinct: usize,
    /// (service, node, list) occurrences of a false down.
    pub occurrences: u64,
    /// False downs (distinct) by the node the service sends its heartbeats to (service `i`
    /// sends to endpoint `i` mod the endpoints), in endpoint order.
    pub distinct_by_endpoint: Vec<usize>,
    /// Of the false downs, those whose every send in the window went out (distinct).
    pub strict_distinct: usize,
    /// Their occurrences.
    pub strict_occurrences: u64,
    /// Load services listed `down` with no heartbeat dispatched in the window, all of its
    /// sends skipped by the load generator (distinct): not false downs.
    pub unsent_distinct: usize,
    /// Their occurrences.
    pub unsent_occurrences: u64,
    /// Most false downs in one list.
    pub most_in_one_list: usize,
    /// When the first false down was read, from the start of the load.
    pub first_at: Option<Duration>,
    /// The first false downs.
    pub examples: Vec<String>,
    /// The timeline, windows of `window` from the start of the load.
    pub windows: Vec<WindowDowns>,
    /// Length of a timeline window.
    pub window: Duration,
    /// Control services listed `down` before the group stopped (distinct): they were still
    /// heartbeating, so these are false downs too.
    pub control_early: usize,
    /// Per control service, the reads sent after the group's stop that listed it `down`:
    /// (sent, answered).
    pub control_downs: Vec<Vec<(Instant, Instant)>>,
    /// Per control service, when the reads sent after the group's stop that listed it `up`
    /// were sent.
    pub control_ups: Vec<Vec<Instant>>,
    /// How long, from the start of the load, the control group was watched (past the load
    /// services' margin while some control service was not yet seen `down`).
    pub control_watched_to: Duration,
    ever_down: Vec<bool>,
    ever_strict: Vec<bool>,
    ever_unsent: Vec<bool>,
    control_early_seen: Vec<bool>,
}

impl Observed {
    /// Lists read, every node.
    pub fn lists(&self) -> u64 {
        self.nodes.iter().map(|n| n.lists).sum()
    }

    /// Load services judged, every node.
    pub fn judged(&self) -> u64 {
        self.nodes.iter().map(|n| n.judged).sum()
    }

    /// Whether the observer looked at something: a list from every node, and load services
    /// judged in them.
    pub fn looked(&self) -> bool {
        !self.nodes.is_empty() && self.nodes.iter().all(|n| n.lists > 0) && self.judged() > 0
    }
}

/// What the observer watches for.
#[derive(Clone)]
pub struct Watched {
    /// Prefix of the load services' hosts (`{prefix}-h`).
    pub load_prefix: Arc<str>,
    /// Load services (their indices, from their host and binary, are below it).
    pub load: usize,
    /// The control group.
    pub control: Arc<Control>,
    /// When the control group stopped sending.
    pub control_stop: Instant,
    /// Start of the load (time zero of the timeline).
    pub start: Instant,
    /// The load's sends, dispatched and skipped.
    pub sends: Arc<SendLog>,
    /// The service_down_time in force.
    pub down_time: Duration,
}

/// The observer, configured.
pub struct Observer {
    /// The HTTP client of the reads (each bounded by its timeout).
    pub http: reqwest::Client,
    /// Base URLs of the nodes.
    pub bases: Vec<String>,
    /// Names of the nodes, in the same order.
    pub names: Vec<String>,
    /// Period of the rounds.
    pub pace: Duration,
    /// Read every node at each round.
    pub all_per_round: bool,
    /// Timeline window.
    pub window: Duration,
}

impl Observer {
    /// Reads every node once (before the load: the lists hold no load service yet) and fails
    /// when one does not answer a list: the observer must see every node from the start.
    pub async fn check_nodes(&self) -> anyhow::Result<()> {
        for (base, name) in self.bases.iter().zip(&self.names) {
            let until = Instant::now() + Duration::from_secs(10);
            let mut refused = 0;
            read_list(&self.http, base, until, &mut refused)
                .await
                .map_err(|f| {
                    anyhow::anyhow!(
                        "the observer could not list {name}: {}: {}",
                        f.kind,
                        f.detail
                    )
                })?;
        }
        Ok(())
    }

    /// Reads lists until `stop_at`, judging the load services in them, and then, for the
    /// control group alone, until every control service was listed `down` after its last
    /// acknowledged heartbeat or `control_until`; returns what was seen.
    pub async fn run(self, watched: Watched, stop_at: Instant, control_until: Instant) -> Observed {
        let windows = stop_at
            .saturating_duration_since(watched.start)
            .as_nanos()
            .div_ceil(self.window.as_nanos().max(1))
            .max(1) as usize;
        let mut seen = Observed::new(&self.names, watched.load, watched.control.services());
        seen.all_per_round = self.all_per_round;
        seen.pace = self.pace;
        seen.windows = vec![WindowDowns::default(); windows];
        seen.window = self.window;
        let n = self.bases.len().max(1);
        let mut round = 0usize;
        let mut next = Instant::now();
        let until = stop_at.max(control_until);
        loop {
            let now = Instant::now();
            if now >= until || (now >= stop_at && seen.control_all_down(&watched)) {
                break;
            }
            let round_end = (next + self.pace).min(until);
            let which: Vec<usize> = if self.all_per_round {
                (0..self.bases.len()).collect()
            } else {
                vec![round % n]
            };
            for i in which {
                let Some(base) = self.bases.get(i) else {
                    continue;
                };
                let sends = watched.sends.snapshot();
                let sent = Instant::now();
                let mut refused = 0;
                let read = match read_list(&self.http, base, round_end, &mut refused).await {
                    Ok(body) => judge_on_thread(body, &watched).await,
                    Err(f) => Err(f),
                };
                let answered = Instant::now();
                let node = &mut seen.nodes[i];
                node.refused += refused;
                match read {
                    Ok((judged, bytes)) => {
                        node.latency.record_ok(answered - sent, 0);
                        node.last_bytes = bytes;
                        seen.record(i, &judged, (sent, answered), &sends, &watched, stop_at);
                    }
                    Err(f) => {
                        node.failed += 1;
                        node.failure_example
                            .get_or_insert_with(|| format!("{}: {}", f.kind, f.detail));
                    }
                }
            }
            round += 1;
            next += self.pace;
            let now = Instant::now();
            if next < now {
                // Behind (a slow list): the next round starts now, not in a burst.
                next = now;
            }
            tokio::time::sleep_until(next.min(until)).await;
        }
        seen.control_watched_to = Instant::now().saturating_duration_since(watched.start);
        seen
    }
}

impl Observed {
    /// Nothing seen yet of the nodes `names`, `load` load services and `control` control
    /// services.
    fn new(names: &[String], load: usize, control: usize) -> Self {
        Observed {
            nodes: names
                .iter()
                .map(|n| NodeReads {
                    name: n.clone(),
                    ..NodeReads::default()
                })
                .collect(),
            control_downs: vec![Vec::new(); control],
            control_ups: vec![Vec::new(); control],
            distinct_by_endpoint: vec![0; names.len()],
            ever_down: vec![false; load],
            ever_strict: vec![false; load],
            ever_unsent: vec![false; load],
            control_early_seen: vec![false; control],
            ..Observed::default()
        }
    }

    /// Whether every control service with an acknowledged heartbeat was listed `down` by a
    /// read sent after that heartbeat's acknowledgement.
    fn control_all_down(&self, watched: &Watched) -> bool {
        self.control_downs.iter().enumerate().all(|(j, downs)| {
            watched
                .control
                .last_ack(j)
                .is_none_or(|last| downs.iter().any(|(sent, _)| *sent > last))
        })
    }

    /// Adds one list of node `i`, asked for at `sent` and parsed at `answered`; `sends` is
    /// the load's send log as it was at `sent`. A list sent after `stop_at` (the load's
    /// margin) counts for the control group only.
    fn record(
        &mut self,
        i: usize,
        judged: &Judged,
        (sent, answered): (Instant, Instant),
        sends: &SendLogAt,
        watched: &Watched,
        stop_at: Instant,
    ) {
        if sent >= stop_at {
            self.record_control(judged, sent, answered, watched);
            return;
        }
        let since_start = sent.saturating_duration_since(watched.start);
        let window_start = answered.checked_sub(watched.down_time);
        let in_window =
            |at: Option<Instant>| at.is_some_and(|at| window_start.is_none_or(|from| at > from));
        let node = &mut self.nodes[i];
        node.lists += 1;
        node.judged += judged.load_rows as u64;
        node.down += judged.load_down.len() as u64;
        let mut false_downs = 0;
        for &s in &judged.load_down {
            if !in_window(sends.last_sent(s)) {
                self.unsent_occurrences += 1;
                mark(&mut self.ever_unsent, s, &mut self.unsent_distinct);
                continue;
            }
            false_downs += 1;
            let before = self.distinct;
            mark(&mut self.ever_down, s, &mut self.distinct);
            let endpoints = self.distinct_by_endpoint.len();
            if self.distinct > before && endpoints > 0 {
                self.distinct_by_endpoint[s % endpoints] += 1;
            }
            if !in_window(sends.last_skipped(s)) {
                self.strict_occurrences += 1;
                mark(&mut self.ever_strict, s, &mut self.strict_distinct);
            }
            if self.examples.len() < EXAMPLES {
                self.examples.push(format!(
                    "{} listed load service {s} down at {:.1} s",
                    node.name,
                    since_start.as_secs_f64()
                ));
            }
        }
        self.occurrences += false_downs as u64;
        self.most_in_one_list = self.most_in_one_list.max(false_downs);
        if false_downs > 0 && self.first_at.is_none() {
            self.first_at = Some(since_start);
        }
        self.record_control(judged, sent, answered, watched);
        if !self.windows.is_empty() {
            let w = (since_start.as_nanos() / self.window.as_nanos().max(1)) as usize;
            let last = self.windows.len() - 1;
            let win = &mut self.windows[w.min(last)];
            win.lists += 1;
            win.judged += judged.load_rows as u64;
            win.down += false_downs as u64;
            win.most_in_one_list = win.most_in_one_list.max(false_downs);
            win.control_down = judged.control_down.len();
        }
    }

    /// Adds what one list showed of the control group.
    fn record_control(
        &mut self,
        judged: &Judged,
        sent: Instant,
        answered: Instant,
        watched: &Watched,
    ) {
        if sent >= watched.control_stop {
            for &j in &judged.control_up {
                if let Some(ups) = self.control_ups.get_mut(j) {
                    ups.push(sent);
                }
            }
        }
        for &j in &judged.control_down {
            if sent >= watched.control_stop {
                if let Some(downs) = self.control_downs.get_mut(j) {
                    downs.push((sent, answered));
                }
            } else if let Some(seen) = self.control_early_seen.get_mut(j) {
                if !*seen {
                    *seen = true;
                    self.control_early += 1;
                }
            }
        }
    }
}

/// Marks service `s` in `ever`, counting it in `distinct` the first time.
fn mark(ever: &mut [bool], s: usize, distinct: &mut usize) {
    if let Some(seen) = ever.get_mut(s) {
        if !*seen {
            *seen = true;
            *distinct += 1;
        }
    }
}

/// Lists node `base` (a stale read); an answer refused by the node's admission bound is
/// retried after a pause until `until` (each refusal counted in `refused`).
async fn read_list(
    http: &reqwest::Client,
    base: &str,
    until: Instant,
    refused: &mut u64,
) -> Result<Bytes, Failure> {
    let url = format!("{base}/v1/services?consistency=stale");
    loop {
        let res = match http.get(&url).send().await {
            Ok(resp) => check_answer(resp).await,
            Err(e) => Err(transport_failure(&e)),
        };
        match res {
            Err(f) if f.kind.starts_with(OVERLOADED) => {
                *refused += 1;
                if Instant::now() + RETRY_PAUSE >= until {
                    return Err(f);
                }
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            other => return other,
        }
    }
}

/// What one list says of the load and of the control group.
#[derive(Debug, Default)]
struct Judged {
    /// Load services in the list.
    load_rows: usize,
    /// Load services listed `down`, by index.
    load_down: Vec<usize>,
    /// Control services listed `down`, by index.
    control_down: Vec<usize>,
    /// Control services listed `up`, by index.
    control_up: Vec<usize>,
}

/// [`judge`] on a blocking thread; answers the judgement and the list's size in bytes.
async fn judge_on_thread(body: Bytes, watched: &Watched) -> Result<(Judged, usize), Failure> {
    let load_prefix = Arc::clone(&watched.load_prefix);
    let control_prefix: Arc<str> = Arc::from(watched.control.host_prefix());
    let (load, control) = (watched.load, watched.control.services());
    let bytes = body.len();
    tokio::task::spawn_blocking(move || {
        judge(&body, &load_prefix, load, &control_prefix, control).map(|j| (j, bytes))
    })
    .await
    .unwrap_or_else(|e| Err(Failure::new("observer task", e)))
}

/// A row of a list, as far as the observer reads it.
#[derive(Deserialize)]
struct Row<'a> {
    #[serde(borrow)]
    host: Cow<'a, str>,
    #[serde(borrow)]
    binary: Cow<'a, str>,
    state: State,
}

/// A list, as far as the observer reads it.
#[derive(Deserialize)]
struct Listed<'a> {
    #[serde(borrow)]
    services: Vec<Row<'a>>,
}

/// Judges the list `body`: which of the `load` services of hosts `load_prefix…` and of
/// the `control` services of hosts `control_prefix…` it lists, and which `down`.
fn judge(
    body: &[u8],
    load_prefix: &str,
    load: usize,
    control_prefix: &str,
    control: usize,
) -> Result<Judged, Failure> {
    let listed: Listed<'_> = serde_json::from_slice(body)
        .map_err(|e| Failure::new("unreadable list", format!("{e}")))?;
    let mut out = Judged::default();
    for row in &listed.services {
        if let Some(i) = index_of(&row.host, &row.binary, load_prefix).filter(|i| *i < load) {
            out.load_rows += 1;
            if row.state == State::Down {
                out.load_down.push(i);
            }
        } else if let Some(j) =
            index_of(&row.host, &row.binary, control_prefix).filter(|j| *j < control)
        {
            match row.state {
                State::Down => out.control_down.push(j),
                State::Up => out.control_up.push(j),
            }
        }
    }
    Ok(out)
}

/// The index of the simulated service on `host` as `binary`, when the host is one of
/// `host_prefix` ([`crate::workload::host`]: `{prefix}-h{i / 4}`, the binary `i mod 4`).
fn index_of(host: &str, binary: &str, host_prefix: &str) -> Option<usize> {
    let n: usize = host.strip_prefix(host_prefix)?.parse().ok()?;
    let b = BINARIES.iter().position(|x| *x == binary)?;
    n.checked_mul(PER_HOST)?.checked_add(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::{binary, host};

    #[test]
    fn services_are_known_by_host_and_binary() {
        for i in [0, 1, 3, 4, 99_999] {
            assert_eq!(index_of(&host("b-ovl", i), binary(i), "b-ovl-h"), Some(i));
        }
        assert_eq!(index_of(&host("b-ctl", 5), binary(5), "b-ovl-h"), None);
        assert_eq!(index_of("b-ovl-h0000001", "other", "b-ovl-h"), None);
    }

    /// A load service down is a false down when a heartbeat of it was dispatched within a
    /// service_down_time of the list's answer, strict when none of that window was skipped;
    /// with none dispatched in the window it is counted apart.
    #[test]
    fn downs_are_false_when_a_heartbeat_was_sent_in_the_window() -> anyhow::Result<()> {
        use clap::Parser;
        let opts = crate::Options::try_parse_from([
            "registry-bench",
            "--registry",
            "127.0.0.1:1",
            "overload",
        ])?;
        let control = Arc::new(Control::new(&opts.cluster, "b-ctl", 2)?);
        let base = Instant::now();
        let at = |s: u64| base + Duration::from_secs(s);
        let sends = Arc::new(SendLog::new(4, base));
        sends.record_sent(0, at(10));
        sends.record_sent(1, at(10));
        sends.record_skipped(1, at(12));
        sends.record_sent(2, at(5));
        let watched = Watched {
            load_prefix: Arc::from("b-ovl-h"),
            load: 4,
            control,
            control_stop: at(30),
            start: base,
            sends: Arc::clone(&sends),
            down_time: Duration::from_secs(12),
        };
        let mut seen = Observed::new(&["n1".to_string()], 4, 2);
        let judged = Judged {
            load_rows: 4,
            load_down: vec![0, 1, 2, 3],
            control_down: vec![1],
            control_up: vec![0],
        };
        // Answered at 20 s: the window starts at 8 s.
        let snap = sends.snapshot();
        let stop_at = at(60);
        seen.record(0, &judged, (at(19), at(20)), &snap, &watched, stop_at);
        seen.record(0, &judged, (at(19), at(20)), &snap, &watched, stop_at);
        assert_eq!((seen.distinct, seen.occurrences), (2, 4));
        assert_eq!(seen.distinct_by_endpoint, vec![2]);
        assert_eq!((seen.strict_distinct, seen.strict_occurrences), (1, 2));
        assert_eq!((seen.unsent_distinct, seen.unsent_occurrences), (2, 4));
        assert_eq!((seen.nodes[0].lists, seen.nodes[0].down), (2, 8));
        // Before the control group's stop: an early down, not a delay.
        assert_eq!(seen.control_early, 1);
        assert!(seen.control_downs.iter().all(Vec::is_empty));
        assert!(seen.control_ups.iter().all(Vec::is_empty));
        assert!(seen.looked());
        // After the load's margin a list counts for the control group only: a control
        // service down then is a delay, and no load service is judged.
        seen.record(0, &judged, (at(61), at(62)), &snap, &watched, stop_at);
        assert_eq!((seen.distinct, seen.occurrences), (2, 4));
        assert_eq!((seen.nodes[0].lists, seen.nodes[0].down), (2, 8));
        assert_eq!(seen.control_downs[1], vec![(at(61), at(62))]);
        assert_eq!(seen.control_ups[0], vec![at(61)]);
        Ok(())
    }

    #[test]
    fn a_list_is_judged_by_prefix_and_state() {
        let row = |h: String, b: &str, s: &str| {
            format!(r#"{{"host":"{h}","binary":"{b}","state":"{s}","report_count":3}}"#)
        };
        let rows = [
            row(host("b-ovl", 0), binary(0), "up"),
            row(host("b-ovl", 1), binary(1), "down"),
            row(host("b-ovl", 9), binary(9), "down"),
            row(host("b-ctl", 2), binary(2), "down"),
            row(host("b-cap", 1), binary(1), "down"),
        ];
        let body = format!(r#"{{"services":[{}],"applied_index":7}}"#, rows.join(","));
        let j = judge(body.as_bytes(), "b-ovl-h", 4, "b-ctl-h", 3).expect("parses");
        // Service 9 is past the 4 load services: not one of them.
        assert_eq!(
            (j.load_rows, j.load_down, j.control_down, j.control_up),
            (2, vec![1], vec![2], vec![])
        );
        assert!(judge(b"not json", "b-ovl-h", 4, "b-ctl-h", 3).is_err());
    }
}
