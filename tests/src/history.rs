//! What reporters were told and what linearizable readers saw, and the checks run on it
//! afterwards.
//!
//! A heartbeat's outcome is classified by what it says about the state machine:
//! - **acknowledged**: committed and applied, with the `report_count` it produced;
//! - **refused**: certainly not applied: an answer with a 4xx status (the request was
//!   invalid), or no node accepted the connection (nothing was sent);
//! - **unknown**: may have been applied: a 5xx answer (a 503 "not committed within ...",
//!   "the write's outcome is unknown", a forward to the leader that failed, a node that lost
//!   its quorum with the write in its log), a 2xx whose body could not be read, or no answer.
//!
//! Every service in a history is created by the scenario, so its count starts at 0; a
//! service that existed before would show more heartbeats than were sent and fail the upper
//! bounds below. The checks, per service:
//! - acknowledged counts strictly increase in the order the acknowledgements arrived (one
//!   writer per service, waiting for each answer before the next request);
//! - every node's final count `c` holds all that was acknowledged, and nothing else but what
//!   may have been applied: `max acknowledged <= c` and `acks <= c <= acks + unknown` (a
//!   heartbeat applied twice fails);
//! - an acknowledged count is at most the number of heartbeats (not refused) sent before the
//!   acknowledgement arrived;
//! - a linearizable read lists a count at least every count acknowledged before the read
//!   began, and at most the number of heartbeats (not refused) sent before the read ended;
//!   counts never go backwards: not from a read to one that began after it ended, nor from a
//!   read to the final lists (taken after every read).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use registry_api::wire::{Consistency, HeartbeatIn, ServicesOut};
use registry_client::{ClientError, RegistryClient};

use crate::wait;

/// A service: (host, binary).
pub type Service = (String, String);

/// The binary every reporter's services run.
pub const BINARY: &str = "cinder-volume";

/// How often the reader of a [`Reporters`] set issues a linearizable read.
const READ_PACE: Duration = Duration::from_millis(100);

/// How long a linearizable read may take (the node's own `read_timeout` is 2 s).
const READ_TIMEOUT: Duration = Duration::from_secs(3);

/// The least a reporter waits after a heartbeat that was not acknowledged, so that a reporter
/// with no pause between requests does not spin on refused connections while every node is
/// down (a real reporter waits its `report_interval`).
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// The outcome of one heartbeat request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged: committed with this `report_count`.
    Acked(u64),
    /// Certainly not applied: a 4xx answer, or no node accepted the connection.
    Refused(String),
    /// May or may not have been applied: a 5xx answer, an unreadable success, or no answer.
    Unknown(String),
}

impl Outcome {
    /// The outcome of a request that failed with `e` (see the module doc).
    pub fn of_error(e: &ClientError) -> Self {
        match e {
            ClientError::Api { status, .. } if (400..500).contains(status) => {
                Outcome::Refused(e.to_string())
            }
            // Every endpoint refused the connection: the request was never sent.
            ClientError::Unreachable { .. } => Outcome::Refused(e.to_string()),
            // A 5xx, no answer, or anything else: it may have been applied.
            _ => Outcome::Unknown(e.to_string()),
        }
    }
}

/// One heartbeat request and what came of it.
#[derive(Debug, Clone)]
pub struct Event {
    /// The service (host, binary).
    pub service: Service,
    /// When the request was sent.
    pub sent: Instant,
    /// When its outcome was known.
    pub done: Instant,
    /// The outcome.
    pub outcome: Outcome,
}

/// One linearizable read of the services list and what it saw.
#[derive(Debug, Clone)]
pub struct Read {
    /// When the request was sent.
    pub start: Instant,
    /// When the whole answer had arrived (or the read failed).
    pub end: Instant,
    /// The `report_count` listed per service, or why the read failed.
    pub seen: Result<BTreeMap<Service, u64>, String>,
    /// The node that served it and its applied index then (`x-registry-served-by`,
    /// `x-registry-applied-index`), for failure messages.
    pub served: String,
}

/// A shared, append-only history of heartbeats and linearizable reads.
#[derive(Debug, Clone, Default)]
pub struct History {
    events: Arc<Mutex<Vec<Event>>>,
    reads: Arc<Mutex<Vec<Read>>>,
}

/// How much a check looked at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Checked {
    /// Final lists (one per node) the counts were checked against.
    pub lists: usize,
    /// Services in the history.
    pub services: usize,
    /// Acknowledged heartbeats.
    pub acks: usize,
    /// Heartbeats whose outcome is unknown (they widen the upper bound).
    pub unknown: usize,
    /// Heartbeats certainly not applied.
    pub refused: usize,
    /// Linearizable reads checked (those that answered).
    pub reads: usize,
    /// Linearizable reads that failed (not checked).
    pub failed_reads: usize,
    /// (read, service) pairs checked against both bounds.
    pub read_pairs: usize,
    /// Of those, pairs whose service had an acknowledgement before the read began (the
    /// lower bound had something to hold).
    pub bounded_below: usize,
}

impl fmt::Display for Checked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "services {}, acknowledged {}, unknown {}, refused {}, final lists {}; \
             linearizable reads checked {} (failed {}), (read, service) pairs {} \
             ({} with an earlier acknowledgement)",
            self.services,
            self.acks,
            self.unknown,
            self.refused,
            self.lists,
            self.reads,
            self.failed_reads,
            self.read_pairs,
            self.bounded_below
        )
    }
}

/// One service's heartbeats, ordered for the bounds.
#[derive(Debug, Default)]
struct Timeline {
    /// Acknowledgements: (arrival, count), by arrival.
    acks: Vec<(Instant, u64)>,
    /// Running maximum of the acknowledged counts, index for index with `acks`.
    max_so_far: Vec<u64>,
    /// When each heartbeat that may have been applied (acknowledged or unknown) was sent,
    /// in order.
    sent: Vec<Instant>,
    /// Number of heartbeats whose outcome is unknown.
    unknown: u64,
}

impl Timeline {
    /// The largest count acknowledged strictly before `t` (0 if none).
    fn acked_before(&self, t: Instant) -> Option<u64> {
        let n = self.acks.partition_point(|(done, _)| *done < t);
        n.checked_sub(1).map(|i| self.max_so_far[i])
    }

    /// How many heartbeats that may have been applied were sent at or before `t`.
    fn sent_by(&self, t: Instant) -> u64 {
        self.sent.partition_point(|s| *s <= t) as u64
    }
}

impl History {
    /// Records an event.
    pub fn record(&self, event: Event) {
        self.events.lock().expect("history lock").push(event);
    }

    /// Every event so far.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().expect("history lock").clone()
    }

    /// Records a linearizable read.
    pub fn record_read(&self, read: Read) {
        self.reads.lock().expect("history lock").push(read);
    }

    /// Every read so far.
    pub fn reads(&self) -> Vec<Read> {
        self.reads.lock().expect("history lock").clone()
    }

    /// Sends one heartbeat of `host`/`binary` through `client` and records it.
    pub async fn heartbeat(
        &self,
        client: &RegistryClient,
        host: &str,
        binary: &str,
    ) -> Result<ServicesOut, ClientError> {
        let sent = Instant::now();
        let res = client.heartbeat(&[HeartbeatIn::new(host, binary)]).await;
        let outcome = match &res {
            Ok(out) => match out.services.first() {
                Some(s) => Outcome::Acked(s.report_count),
                None => Outcome::Unknown("a success that lists no record".into()),
            },
            Err(e) => Outcome::of_error(e),
        };
        self.record(Event {
            service: (host.to_string(), binary.to_string()),
            sent,
            done: Instant::now(),
            outcome,
        });
        res
    }

    /// Reads the services of `binary` linearizably from the first of `endpoints` (base
    /// URLs) that accepts a connection, and records what it saw and who served it.
    pub async fn read_linearizable(
        &self,
        http: &reqwest::Client,
        endpoints: &[String],
        binary: &str,
    ) -> anyhow::Result<()> {
        let start = Instant::now();
        let res = read_list(http, endpoints, binary).await;
        let end = Instant::now();
        let (seen, served) = match res {
            Ok((list, served)) => (Ok(counts_of(&list)), served),
            Err(e) => (Err(format!("{e:#}")), String::new()),
        };
        let failed = seen.as_ref().err().cloned();
        self.record_read(Read {
            start,
            end,
            seen,
            served,
        });
        failed.map_or(Ok(()), |e| Err(anyhow::anyhow!(e)))
    }

    /// The largest acknowledged `report_count` per service.
    pub fn max_acked(&self) -> BTreeMap<Service, u64> {
        let mut out = BTreeMap::new();
        for e in self.events() {
            if let Outcome::Acked(c) = e.outcome {
                let m = out.entry(e.service.clone()).or_insert(0);
                *m = (*m).max(c);
            }
        }
        out
    }

    /// Number of acknowledged heartbeats.
    pub fn acked(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Acked(_)))
    }

    /// Number of heartbeats whose outcome is unknown.
    pub fn unknown(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Unknown(_)))
    }

    /// Number of heartbeats certainly not applied.
    pub fn refused(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Refused(_)))
    }

    fn count(&self, which: impl Fn(&Outcome) -> bool) -> usize {
        self.events
            .lock()
            .expect("history lock")
            .iter()
            .filter(|e| which(&e.outcome))
            .count()
    }

    /// The longest time any service waited between two acknowledgements (or from its first
    /// request to its first acknowledgement): how long its record could go without a
    /// heartbeat. For failure messages of the false-down observer.
    pub fn longest_ack_gap(&self) -> Option<(Service, Duration)> {
        let mut events = self.events();
        events.sort_by_key(|e| e.done);
        let mut last: BTreeMap<Service, Instant> = BTreeMap::new();
        let mut longest: Option<(Service, Duration)> = None;
        for e in &events {
            let since = *last.entry(e.service.clone()).or_insert(e.sent);
            if matches!(e.outcome, Outcome::Acked(_)) {
                let gap = e.done.duration_since(since);
                if longest.as_ref().is_none_or(|(_, g)| gap > *g) {
                    longest = Some((e.service.clone(), gap));
                }
                last.insert(e.service.clone(), e.done);
            }
        }
        longest
    }

    /// Each service's timeline, and the instant times are shown relative to.
    fn timelines(&self) -> (BTreeMap<Service, Timeline>, Option<Instant>) {
        let mut events = self.events();
        events.sort_by_key(|e| e.done);
        let origin = events.iter().map(|e| e.sent).min();
        let mut out: BTreeMap<Service, Timeline> = BTreeMap::new();
        for e in &events {
            let t = out.entry(e.service.clone()).or_default();
            match e.outcome {
                Outcome::Acked(c) => {
                    let max = t.max_so_far.last().copied().unwrap_or(0).max(c);
                    t.acks.push((e.done, c));
                    t.max_so_far.push(max);
                    t.sent.push(e.sent);
                }
                Outcome::Unknown(_) => {
                    t.unknown += 1;
                    t.sent.push(e.sent);
                }
                Outcome::Refused(_) => {}
            }
        }
        for t in out.values_mut() {
            t.sent.sort();
        }
        (out, origin)
    }

    /// Checks that acknowledged counts strictly increase, per service, in the order the
    /// acknowledgements arrived.
    fn check_increasing(&self) -> anyhow::Result<()> {
        let mut events = self.events();
        events.sort_by_key(|e| e.done);
        let mut last: BTreeMap<Service, u64> = BTreeMap::new();
        for e in events {
            if let Outcome::Acked(c) = e.outcome {
                if let Some(prev) = last.get(&e.service) {
                    anyhow::ensure!(
                        c > *prev,
                        "report_count went backwards for {:?}: acknowledged {c} after {prev}",
                        e.service
                    );
                }
                last.insert(e.service.clone(), c);
            }
        }
        Ok(())
    }

    /// Nothing acknowledged is lost from `list`: acknowledged counts strictly increase, and
    /// `list` holds a count at least as large as every acknowledged one. The only check that
    /// holds while reporters still run (a later heartbeat may land at any time).
    pub fn check_kept(&self, list: &ServicesOut) -> anyhow::Result<()> {
        self.check_increasing()?;
        let listed = counts_of(list);
        for (svc, acked) in self.max_acked() {
            let Some(count) = listed.get(&svc) else {
                anyhow::bail!("acknowledged heartbeats lost: {svc:?} is not listed at all");
            };
            anyhow::ensure!(
                *count >= acked,
                "acknowledged heartbeats lost for {svc:?}: report_count {count} < acknowledged \
                 {acked}"
            );
        }
        Ok(())
    }

    /// The count checks, once every request of the history has its outcome (the reporters
    /// stopped): acknowledged counts strictly increase; for every final list in `lists` (one
    /// per node) and every service, the listed count lies between the number of acknowledged
    /// heartbeats (and the largest acknowledged count) and that number plus the unknown ones;
    /// every acknowledged count is at most the heartbeats sent before it. Prints what it
    /// checked as a `RESULT` line; fails on a violation, or if there was nothing to check.
    pub fn check_counts(&self, lists: &[ServicesOut]) -> anyhow::Result<Checked> {
        verdict(self.examine(&finals(lists), false), false)
    }

    /// Every check: [`check_counts`](Self::check_counts), and every linearizable read against
    /// the heartbeats around it. Prints what it checked as a `RESULT` line; fails on a
    /// violation, or if no read answered or none had an acknowledgement before it to hold.
    pub fn check(&self, lists: &[ServicesOut]) -> anyhow::Result<Checked> {
        verdict(self.examine(&finals(lists), true), true)
    }

    /// Runs the checks; what was checked and every violation found.
    fn examine(&self, lists: &[BTreeMap<Service, u64>], reads: bool) -> (Checked, Vec<String>) {
        let mut bad = Vec::new();
        if let Err(e) = self.check_increasing() {
            bad.push(e.to_string());
        }
        let (timelines, origin) = self.timelines();
        let at = |t: Instant| origin.map_or(Duration::ZERO, |o| t.duration_since(o));
        for (svc, t) in &timelines {
            for (done, c) in &t.acks {
                let sent = t.sent_by(*done);
                if *c > sent {
                    bad.push(format!(
                        "an acknowledged count exceeds the heartbeats sent: {svc:?} acknowledged \
                         report_count {c} at {:?}, when only {sent} heartbeats had been sent",
                        at(*done)
                    ));
                }
            }
        }
        for (i, listed) in lists.iter().enumerate() {
            for (svc, t) in &timelines {
                let Some(&count) = listed.get(svc) else {
                    if !t.acks.is_empty() {
                        bad.push(format!(
                            "acknowledged heartbeats lost: {svc:?} is not in final list {i} at all"
                        ));
                    }
                    continue;
                };
                let acks = t.acks.len() as u64;
                let max = t.max_so_far.last().copied().unwrap_or(0);
                if count < acks.max(max) {
                    bad.push(format!(
                        "acknowledged heartbeats lost: final list {i} has report_count {count} \
                         for {svc:?}, below its {acks} acknowledged heartbeats or its largest \
                         acknowledged count {max}"
                    ));
                }
                if count > acks + t.unknown {
                    bad.push(format!(
                        "a heartbeat applied that was never sent (applied twice?): final list \
                         {i} has report_count {count} for {svc:?}, more than its {acks} \
                         acknowledged plus {} unknown heartbeats",
                        t.unknown
                    ));
                }
            }
        }
        let mut checked = Checked {
            lists: lists.len(),
            services: timelines.len(),
            acks: self.acked(),
            unknown: self.unknown(),
            refused: self.refused(),
            ..Checked::default()
        };
        if !reads {
            return (checked, bad);
        }
        let reads = self.reads();
        // Answered reads by end, each with the largest count per service any read ending
        // before it saw: a read that began after another ended must see at least as much.
        let mut by_end: Vec<(Instant, &BTreeMap<Service, u64>)> = reads
            .iter()
            .filter_map(|r| r.seen.as_ref().ok().map(|s| (r.end, s)))
            .collect();
        by_end.sort_by_key(|(end, _)| *end);
        let mut seen_by: Vec<BTreeMap<Service, u64>> = Vec::with_capacity(by_end.len());
        for (_, seen) in &by_end {
            let mut max = seen_by.last().cloned().unwrap_or_default();
            for (svc, c) in seen.iter() {
                let m = max.entry(svc.clone()).or_insert(0);
                *m = (*m).max(*c);
            }
            seen_by.push(max);
        }
        let finals_min: BTreeMap<&Service, u64> = timelines
            .keys()
            .map(|svc| {
                let min = lists.iter().map(|l| l.get(svc).copied().unwrap_or(0)).min();
                (svc, min.unwrap_or(u64::MAX))
            })
            .collect();
        for read in &reads {
            let Ok(seen) = &read.seen else {
                checked.failed_reads += 1;
                continue;
            };
            checked.reads += 1;
            let earlier = by_end
                .partition_point(|(end, _)| *end < read.start)
                .checked_sub(1)
                .map(|i| &seen_by[i]);
            for (svc, t) in &timelines {
                let count = seen.get(svc).copied().unwrap_or(0);
                checked.read_pairs += 1;
                if let Some(before) = earlier.and_then(|e| e.get(svc)).filter(|b| count < **b) {
                    bad.push(format!(
                        "report_count went backwards between linearizable reads: the read of \
                         {:?}..{:?} ({}) listed {count} for {svc:?}, a read that ended before it \
                         began listed {before}",
                        at(read.start),
                        at(read.end),
                        read.served
                    ));
                }
                if count > finals_min[svc] {
                    bad.push(format!(
                        "report_count went backwards after a linearizable read: the read of \
                         {:?}..{:?} ({}) listed {count} for {svc:?}, a final list has {}",
                        at(read.start),
                        at(read.end),
                        read.served,
                        finals_min[svc]
                    ));
                }
                if let Some(acked) = t.acked_before(read.start) {
                    checked.bounded_below += 1;
                    if count < acked {
                        bad.push(format!(
                            "a linearizable read missed an acknowledged heartbeat: the read of \
                             {:?}..{:?} ({}) listed report_count {count} for {svc:?}, but \
                             {acked} had been acknowledged before it began",
                            at(read.start),
                            at(read.end),
                            read.served
                        ));
                    }
                }
                let sent = t.sent_by(read.end);
                if count > sent {
                    bad.push(format!(
                        "a linearizable read saw heartbeats that were never sent: the read of \
                         {:?}..{:?} ({}) listed report_count {count} for {svc:?}, but only \
                         {sent} heartbeats had been sent when it ended",
                        at(read.start),
                        at(read.end),
                        read.served
                    ));
                }
            }
        }
        (checked, bad)
    }
}

/// Prints what a check looked at and fails on a violation, or when it looked at nothing
/// (with `reads`, no linearizable read that could have missed an acknowledgement).
fn verdict((checked, violations): (Checked, Vec<String>), reads: bool) -> anyhow::Result<Checked> {
    let scope = if reads { "" } else { " (counts only)" };
    eprintln!(
        "RESULT history{scope}: {checked}; violations {}",
        violations.len()
    );
    anyhow::ensure!(
        violations.is_empty(),
        "{} history violations, first: {}\n(checked {checked})",
        violations.len(),
        violations[..violations.len().min(5)].join("\n")
    );
    anyhow::ensure!(
        checked.lists > 0 && checked.services > 0 && checked.acks > 0,
        "history check looked at no final list, service or acknowledgement: {checked}"
    );
    anyhow::ensure!(
        !reads || (checked.reads > 0 && checked.bounded_below > 0),
        "history check looked at no linearizable read that could miss an acknowledged \
         heartbeat: {checked}"
    );
    Ok(checked)
}

/// `GET /v1/services?consistency=linearizable&binary=..` from the first endpoint that
/// accepts a connection: the list, and who served it at which applied index.
async fn read_list(
    http: &reqwest::Client,
    endpoints: &[String],
    binary: &str,
) -> anyhow::Result<(ServicesOut, String)> {
    let mut last = String::from("no endpoint");
    for base in endpoints {
        let req = http.get(format!("{base}/v1/services")).query(&[
            ("consistency", Consistency::Linearizable.as_str()),
            ("binary", binary),
        ]);
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) if e.is_connect() => {
                last = format!("{base}: {e}");
                continue;
            }
            Err(e) => anyhow::bail!("{base}: {e}"),
        };
        let served = format!("{} (asked {base})", served_by(resp.headers()));
        let status = resp.status();
        let body = resp.bytes().await?;
        anyhow::ensure!(
            status.is_success(),
            "{base}: HTTP {status}: {}",
            String::from_utf8_lossy(&body)
        );
        return Ok((serde_json::from_slice(&body)?, served));
    }
    anyhow::bail!("no endpoint reachable: {last}")
}

/// The counts of every final list.
fn finals(lists: &[ServicesOut]) -> Vec<BTreeMap<Service, u64>> {
    lists.iter().map(counts_of).collect()
}

fn counts_of(list: &ServicesOut) -> BTreeMap<Service, u64> {
    list.services
        .iter()
        .map(|s| ((s.host.clone(), s.binary.clone()), s.report_count))
        .collect()
}

/// Reporters, one task per service, each waiting for an answer before its next heartbeat,
/// and one reader issuing linearizable reads of their services meanwhile.
pub struct Reporters {
    /// Set to stop the reporters and the reader.
    stop: Arc<AtomicBool>,
    /// One task per service, and the reader's.
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// What the reporters were told and what the reader saw so far.
    pub history: History,
}

impl Reporters {
    /// Starts one reporter per service (`host-0`..), each pausing `pace` between requests.
    pub fn start(client: RegistryClient, services: usize, pace: Duration) -> Self {
        Self::start_named(vec![client], "host-", services, pace)
    }

    /// Like [`Reporters::start`], reporter `i` starting with `clients[i % clients.len()]`
    /// (so reporters are spread over every node) and moving on to the next client after a
    /// request that failed or got no answer, as a reporter that follows the cluster does.
    pub fn start_spread(clients: Vec<RegistryClient>, services: usize, pace: Duration) -> Self {
        Self::start_named(clients, "host-", services, pace)
    }

    /// Like [`Reporters::start_spread`], the services' hosts named `{prefix}0`.. (their
    /// binary is [`BINARY`]). The reader sends each read to the next client, so reads reach
    /// the leader through every node.
    pub fn start_named(
        clients: Vec<RegistryClient>,
        prefix: &str,
        services: usize,
        pace: Duration,
    ) -> Self {
        Self::start_full(clients, prefix, services, pace, None)
    }

    /// Like [`Reporters::start_spread`] against a cluster serving HTTPS: the reader trusts
    /// the CA in the PEM file `ca` (the clients were built trusting it).
    pub fn start_spread_tls(
        clients: Vec<RegistryClient>,
        services: usize,
        pace: Duration,
        ca: &std::path::Path,
    ) -> anyhow::Result<Self> {
        let pem = std::fs::read(ca)?;
        let roots = reqwest::Certificate::from_pem_bundle(&pem)?;
        Ok(Self::start_full(
            clients,
            "host-",
            services,
            pace,
            Some(roots),
        ))
    }

    fn start_full(
        clients: Vec<RegistryClient>,
        prefix: &str,
        services: usize,
        pace: Duration,
        roots: Option<Vec<reqwest::Certificate>>,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let history = History::default();
        let mut tasks: Vec<tokio::task::JoinHandle<()>> = (0..services)
            .map(|i| {
                let clients = clients.clone();
                let mut current = i % clients.len();
                let (stop, history) = (stop.clone(), history.clone());
                let host = format!("{prefix}{i}");
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let res = history.heartbeat(&clients[current], &host, BINARY).await;
                        let wait = if res.is_ok() {
                            pace
                        } else {
                            current = (current + 1) % clients.len();
                            pace.max(RETRY_PAUSE)
                        };
                        tokio::time::sleep(wait).await;
                    }
                })
            })
            .collect();
        let (flag, reads) = (stop.clone(), history.clone());
        let endpoints: Vec<Vec<String>> = clients.iter().map(|c| c.endpoints().to_vec()).collect();
        let mut builder = reqwest::Client::builder().timeout(READ_TIMEOUT);
        for root in roots.into_iter().flatten() {
            builder = builder.add_root_certificate(root);
        }
        let http = builder.build().unwrap_or_else(|_| reqwest::Client::new());
        tasks.push(tokio::spawn(async move {
            let mut next = 0;
            while !flag.load(Ordering::Relaxed) {
                let _ = reads
                    .read_linearizable(&http, &endpoints[next % endpoints.len()], BINARY)
                    .await;
                next += 1;
                tokio::time::sleep(READ_PACE).await;
            }
        }));
        Self {
            stop,
            tasks,
            history,
        }
    }

    /// Waits until at least `n` heartbeats were acknowledged in all.
    pub async fn wait_acked(&self, n: usize, timeout: Duration) -> anyhow::Result<()> {
        let what = format!("{n} acknowledged heartbeats");
        wait::until(&what, timeout, || async {
            (self.history.acked() >= n).then_some(())
        })
        .await
    }

    /// Stops every reporter and the reader, and returns the history once each has its
    /// last request's outcome.
    pub async fn stop(self) -> History {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        self.history
    }
}

/// Who served a read, and at which applied index, as its answer's headers say
/// (`x-registry-served-by`, `x-registry-applied-index`).
pub fn served_by(headers: &reqwest::header::HeaderMap) -> String {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("?")
            .to_string()
    };
    format!(
        "served by node {} at applied index {}",
        header(registry_api::read::SERVED_BY_HEADER),
        header(registry_api::read::APPLIED_INDEX_HEADER)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A history of one service, `a`, built from (sent ms, done ms, outcome).
    fn history(events: &[(u64, u64, Outcome)]) -> (History, Instant) {
        let h = History::default();
        let base = Instant::now();
        for (sent, done, outcome) in events {
            h.record(Event {
                service: svc(),
                sent: base + Duration::from_millis(*sent),
                done: base + Duration::from_millis(*done),
                outcome: outcome.clone(),
            });
        }
        (h, base)
    }

    fn svc() -> Service {
        ("a".to_string(), BINARY.to_string())
    }

    fn list(count: u64) -> BTreeMap<Service, u64> {
        BTreeMap::from([(svc(), count)])
    }

    fn read(h: &History, base: Instant, start: u64, end: u64, count: u64) {
        h.record_read(Read {
            start: base + Duration::from_millis(start),
            end: base + Duration::from_millis(end),
            seen: Ok(list(count)),
            served: "served by a test".into(),
        });
    }

    fn unknown() -> Outcome {
        Outcome::Unknown("HTTP 503: not committed".into())
    }

    /// Two acknowledged, one unknown: the final count may be 2 or 3, nothing else.
    #[test]
    fn final_counts_lie_between_acks_and_acks_plus_unknown() {
        let (h, _) = history(&[
            (0, 10, Outcome::Acked(1)),
            (20, 30, unknown()),
            (40, 50, Outcome::Acked(3)),
        ]);
        for (count, ok) in [(1, false), (2, false), (3, true), (4, false)] {
            let (checked, bad) = h.examine(&[list(count)], false);
            assert_eq!(
                bad.is_empty(),
                ok,
                "final count {count} with acks 1 and 3 and one unknown: {bad:?}"
            );
            assert_eq!((checked.acks, checked.unknown), (2, 1));
        }
        let (h, _) = history(&[(0, 10, Outcome::Acked(1)), (20, 30, Outcome::Acked(2))]);
        let (_, bad) = h.examine(&[list(3)], false);
        assert!(
            bad.iter().any(|b| b.contains("applied twice")),
            "a heartbeat applied twice fails: {bad:?}"
        );
    }

    /// Refused heartbeats widen no bound.
    #[test]
    fn refused_heartbeats_count_for_nothing() {
        let (h, _) = history(&[
            (0, 10, Outcome::Acked(1)),
            (20, 30, Outcome::Refused("HTTP 400".into())),
        ]);
        let (_, bad) = h.examine(&[list(2)], false);
        assert!(!bad.is_empty(), "a refused heartbeat was applied: {bad:?}");
        let (h, _) = history(&[
            (0, 10, Outcome::Refused("no endpoint reachable".into())),
            (20, 30, Outcome::Acked(2)),
        ]);
        let (_, bad) = h.examine(&[list(2)], false);
        assert!(
            bad.iter()
                .any(|b| b.contains("exceeds the heartbeats sent")),
            "an acknowledged count above the heartbeats that may have been applied: {bad:?}"
        );
    }

    /// A read must see what was acknowledged before it began and nothing not yet sent.
    #[test]
    fn linearizable_reads_are_bounded_by_the_heartbeats_around_them() {
        let (h, base) = history(&[
            (0, 10, Outcome::Acked(1)),
            (20, 30, Outcome::Acked(2)),
            (100, 110, unknown()),
        ]);
        read(&h, base, 15, 25, 1); // the second was not acknowledged yet: 1 or 2
        read(&h, base, 15, 25, 2);
        read(&h, base, 35, 120, 3); // the unknown one may have landed
        let (checked, bad) = h.examine(&[list(3)], true);
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(
            (checked.reads, checked.read_pairs, checked.bounded_below),
            (3, 3, 3)
        );

        read(&h, base, 31, 40, 1); // stale: 2 was acknowledged at 30
        let (_, bad) = h.examine(&[list(3)], true);
        assert!(
            bad.iter()
                .any(|b| b.contains("missed an acknowledged heartbeat")),
            "a stale read fails: {bad:?}"
        );

        let (h, base) = history(&[(0, 10, Outcome::Acked(1)), (100, 110, Outcome::Acked(2))]);
        read(&h, base, 20, 30, 2); // the second was sent only at 100
        let (_, bad) = h.examine(&[list(2)], true);
        assert!(
            bad.iter().any(|b| b.contains("never sent")),
            "a read ahead of the heartbeats sent fails: {bad:?}"
        );
    }

    /// Counts seen by reads never go backwards, from one read to a later one or to the end.
    #[test]
    fn reads_never_see_counts_go_backwards() {
        let (h, base) = history(&[(0, 10, Outcome::Acked(1)), (20, 30, unknown())]);
        read(&h, base, 25, 40, 2); // the unknown one landed
        read(&h, base, 50, 60, 2);
        let (_, bad) = h.examine(&[list(2)], true);
        assert!(bad.is_empty(), "{bad:?}");
        read(&h, base, 45, 70, 1); // began after the first read ended, saw less
        let (_, bad) = h.examine(&[list(2)], true);
        assert!(
            bad.iter().any(|b| b.contains("between linearizable reads")),
            "{bad:?}"
        );
        let (h, base) = history(&[(0, 10, Outcome::Acked(1)), (20, 30, unknown())]);
        read(&h, base, 25, 40, 2);
        let (_, bad) = h.examine(&[list(1)], true);
        assert!(
            bad.iter().any(|b| b.contains("after a linearizable read")),
            "the final lists lost what a read saw: {bad:?}"
        );
    }

    /// A check that looked at nothing fails.
    #[test]
    fn checks_of_nothing_fail() {
        let (h, base) = history(&[(0, 10, Outcome::Acked(1))]);
        assert!(
            verdict(h.examine(&[list(1)], true), true).is_err(),
            "no linearizable read"
        );
        read(&h, base, 5, 8, 0); // before any acknowledgement: nothing to miss
        assert!(
            verdict(h.examine(&[list(1)], true), true).is_err(),
            "no read after an acknowledgement"
        );
        read(&h, base, 20, 30, 1);
        assert!(verdict(h.examine(&[list(1)], true), true).is_ok());
        assert!(
            verdict(h.examine(&[], false), false).is_err(),
            "no final list"
        );
        let empty = History::default();
        assert!(
            verdict(empty.examine(&[list(1)], false), false).is_err(),
            "no acknowledgement"
        );
    }
}
