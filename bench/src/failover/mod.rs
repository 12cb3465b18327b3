//! The `failover` scenario (registry only): how long the group takes to acknowledge writes
//! again after its leader is SIGKILLed, and how many elections that takes.
//!
//! A few closed-loop writers send single heartbeats to every endpoint for the whole run
//! (each request bounded by `--write-timeout`, so a request to the dead node or one held by a
//! node waiting for a leader gives up and is sent again). Then, `--kills` times:
//!
//! 1. the group must be whole: every node answers `GET /v1/cluster`, all name the same leader
//!    in the same term, and every applied index is within `--max-lag` of the leader's;
//! 2. the leader's PID (from its PID file, checked to be a running `registry-node`) gets
//!    SIGKILL; the failover time runs from just before the signal to the arrival of the first
//!    HTTP 200 of a write *sent* after it (whichever endpoint answered); meanwhile the
//!    survivors' `GET /v1/cluster` is polled for the first one that is `Leader` in a higher
//!    term (when the new leader became visible, and in which term), and for candidates that
//!    did not win (a round that failed: a split vote, or a candidate refused for a shorter
//!    log), and for the survivors' last log indexes (equal, or one survivor missing what
//!    the dead leader had sent the other);
//! 3. once the process has exited, `--restart-cmd` restarts it; the group must be whole again
//!    within `--recover-deadline`, and after `--settle` of steady writes (every node has
//!    heard the new leader for a while, so the next kill is a fair one) its term is read
//!    again: the term changes while the node rejoined.
//!
//! Term changes of one failover: the new leader's term minus the term before the kill; more
//! than 1 is a split vote or a round that failed. A failed round can leave it at 1: openraft
//! orders two candidates of one term by node id, so the second may win in the first one's
//! term. The candidates seen by the polls show such rounds: a candidate that loses stays one
//! until its next election timeout, a winner only for a vote's round trip.
//!
//! etcd is not killed: an etcd target is skipped.

mod cluster;
mod process;
mod table;
mod writers;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::opts::{ClusterArgs, FailoverArgs};
use crate::procs::NodeProc;
use crate::report::Report;
use crate::stats::Stats;
use crate::target::registry::{base_url, http_client, RegistryTarget};
use crate::workload::Groups;
use cluster::Whole;
use writers::Writers;

/// Services each writer heartbeats in turn.
const SERVICES_PER_WRITER: usize = 4;
/// Bound on each `GET /v1/cluster`.
const READ_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a SIGKILLed process may take to exit.
const EXIT_WITHIN: Duration = Duration::from_secs(10);
/// How long the restart command may take to return.
const RESTART_WITHIN: Duration = Duration::from_secs(30);
/// How long after a kill the survivors' last log indexes are read: what the dead leader sent
/// before it died has arrived by then, and no new leader can have appended anything yet
/// (no election starts before `election_timeout_max` has passed).
const LOGS_AFTER: Duration = Duration::from_millis(20);

/// One kill and what followed it.
#[derive(Debug, Clone)]
pub struct KillRow {
    /// The killed leader's node id.
    pub killed_id: u64,
    /// The killed leader's endpoint (1-based position in `--registry`).
    pub killed_endpoint: usize,
    /// The term before the kill.
    pub term_before: u64,
    /// From the kill to the first acknowledged write sent after it (`None`: none within
    /// `--failover-deadline`).
    pub failover: Option<Duration>,
    /// The endpoint (1-based) that acknowledged that write.
    pub acked_by: Option<usize>,
    /// From the kill to the first poll that saw a survivor `Leader` in a higher term.
    pub leader_seen: Option<Duration>,
    /// That leader's node id.
    pub new_leader_id: Option<u64>,
    /// That leader's term.
    pub term_elected: Option<u64>,
    /// Candidacies (node, term) the polls saw before the new leader, besides the winner's.
    pub failed_candidacies: usize,
    /// The survivors' last log indexes just after the kill (in endpoint order): a candidate
    /// with a shorter log than the other survivor's is refused.
    pub survivor_logs: Vec<Option<u64>>,
    /// From the restart command to the group being whole again.
    pub recovered: Option<Duration>,
    /// The group's term after the restarted node caught up and `--settle` passed.
    pub term_after: Option<u64>,
}

impl KillRow {
    /// Term changes from before the kill to the new leader's term.
    pub fn election_terms(&self) -> Option<u64> {
        Some(self.term_elected?.saturating_sub(self.term_before))
    }

    /// Term changes while the killed node restarted and caught up.
    pub fn rejoin_terms(&self) -> Option<u64> {
        Some(self.term_after?.saturating_sub(self.term_elected?))
    }

    /// Term changes from before the kill to after the rejoin.
    pub fn total_terms(&self) -> Option<u64> {
        Some(self.term_after?.saturating_sub(self.term_before))
    }
}

/// What the failover scenario measured.
#[derive(Debug, Clone, Default)]
pub struct FailoverOutcome {
    /// Kills asked for.
    pub kills_asked: usize,
    /// Every kill, in order.
    pub kills: Vec<KillRow>,
    /// Why the run stopped before `kills_asked` kills, if it did.
    pub stopped: Option<String>,
    /// The steady writers' requests over the whole run (failures around each kill are
    /// expected: a dead endpoint, a node waiting for a leader).
    pub writes: Stats,
    /// Writers, and each write's client timeout.
    pub writers: usize,
    /// Client timeout of each write.
    pub write_timeout: Duration,
    /// Steady writes before each kill.
    pub settle: Duration,
    /// Period of the polls for the new leader.
    pub poll_every: Duration,
    /// Wall time of the run.
    pub wall: Duration,
}

/// Runs the scenario against the registry of `c`; its tables go into `report`.
pub async fn registry(
    c: &ClusterArgs,
    a: &FailoverArgs,
    report: &mut Report,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        c.registry.len() >= 3,
        "failover needs a group of at least three nodes (--registry A,B,C)"
    );
    let nodes = NodeProc::list(
        "registry",
        c.registry.len(),
        &c.registry_pids,
        &c.registry_pid_files,
        &c.registry_data_dirs,
    );
    anyhow::ensure!(
        c.registry_pid_files.len() == c.registry.len(),
        "failover kills the leader by the PID in its PID file and follows the restarted \
         node's: give --registry-pid-file, one per endpoint, in endpoint order"
    );
    let token = c.registry_token.as_deref();
    let ca = c.registry_cacert.as_deref();
    let probe = http_client(READ_TIMEOUT, token, ca)?;
    let bases: Vec<String> = c.registry.iter().map(|e| base_url(e)).collect();
    let services = a.writers.max(1) * SERVICES_PER_WRITER;
    let target = Arc::new(RegistryTarget::new(
        &c.registry,
        &c.prefix,
        Groups::new(services, 1),
        a.write_timeout,
        token,
        ca,
    )?);

    let started = Instant::now();
    let writers = Writers::start(target, a.writers, a.write_timeout);
    let mut outcome = FailoverOutcome {
        kills_asked: a.kills,
        writers: a.writers.max(1),
        write_timeout: a.write_timeout,
        settle: a.settle,
        poll_every: a.poll_every,
        ..FailoverOutcome::default()
    };
    let run = kill_loop(a, &nodes, &probe, &bases, &writers, &mut outcome).await;
    outcome.writes = writers.stop().await;
    outcome.wall = started.elapsed();
    if let Err(e) = run {
        outcome.stopped = Some(format!("{e:#}"));
    }
    report.failover = Some(outcome);
    Ok(())
}

/// Waits for the group to be whole and settled, then kills its leader `a.kills` times.
async fn kill_loop(
    a: &FailoverArgs,
    nodes: &[NodeProc],
    probe: &reqwest::Client,
    bases: &[String],
    writers: &Writers,
    outcome: &mut FailoverOutcome,
) -> anyhow::Result<()> {
    let mut whole = settled(a, probe, bases).await?;
    for k in 1..=a.kills {
        let mut row = kill_and_measure(a, nodes, probe, bases, writers, whole)
            .await
            .map_err(|e| e.context(format!("kill {k}")))?;
        let after = rejoin(a, nodes, probe, bases, &mut row).await;
        outcome.kills.push(row);
        whole = after.map_err(|e| e.context(format!("kill {k}")))?;
    }
    Ok(())
}

/// The group once it is whole and `a.settle` of steady writes later whole still.
async fn settled(
    a: &FailoverArgs,
    probe: &reqwest::Client,
    bases: &[String],
) -> anyhow::Result<Whole> {
    whole_within(a, probe, bases, Instant::now(), "").await?;
    tokio::time::sleep(a.settle).await;
    whole_within(a, probe, bases, Instant::now(), " after settling").await
}

/// The group once it is whole, waiting up to `--recover-deadline` from `from`; the error
/// says how long it waited and since what (`since`).
async fn whole_within(
    a: &FailoverArgs,
    probe: &reqwest::Client,
    bases: &[String],
    from: Instant,
    since: &str,
) -> anyhow::Result<Whole> {
    cluster::wait_whole(probe, bases, a.max_lag, from + a.recover_deadline)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "the group is not whole within {:?}{since}: {e}",
                a.recover_deadline
            )
        })
}

/// SIGKILLs the leader of `before` and measures the failover: the first acknowledged write
/// sent after the kill, and the first survivor seen as `Leader` in a higher term.
async fn kill_and_measure(
    a: &FailoverArgs,
    nodes: &[NodeProc],
    probe: &reqwest::Client,
    bases: &[String],
    writers: &Writers,
    before: Whole,
) -> anyhow::Result<KillRow> {
    let pid = process::running_node_pid(&nodes[before.leader])?;
    let killed_at = Instant::now();
    writers.arm(killed_at);
    process::sigkill(pid)?;
    let deadline = killed_at + a.failover_deadline;
    let (ack, election) = tokio::join!(
        writers.first_ack(deadline),
        watch_for_leader(probe, bases, before, a.poll_every, killed_at, deadline)
    );
    let leader = election.leader;
    let winner = leader.map(|(_, id, term)| (id, term));
    let failed_candidacies = election
        .candidacies
        .iter()
        .filter(|c| Some(**c) != winner)
        .count();
    // The restart must not start before the killed process has let go of its port.
    process::wait_exited(pid, Instant::now() + EXIT_WITHIN).await?;
    Ok(KillRow {
        killed_id: before.leader_id,
        killed_endpoint: before.leader + 1,
        term_before: before.term,
        failover: ack.map(|ack| ack.acked.saturating_duration_since(killed_at)),
        acked_by: ack.map(|ack| ack.endpoint + 1),
        leader_seen: leader.map(|(seen, _, _)| seen.saturating_duration_since(killed_at)),
        new_leader_id: leader.map(|(_, id, _)| id),
        term_elected: leader.map(|(_, _, term)| term),
        failed_candidacies,
        survivor_logs: election.logs,
        recovered: None,
        term_after: None,
    })
}

/// Restarts the node `row` killed, waits for the group to be whole and settled again, and
/// records how long that took and the term then.
async fn rejoin(
    a: &FailoverArgs,
    nodes: &[NodeProc],
    probe: &reqwest::Client,
    bases: &[String],
    row: &mut KillRow,
) -> anyhow::Result<Whole> {
    let restart_at = Instant::now();
    process::restart(
        &a.restart_cmd,
        row.killed_endpoint,
        restart_at + RESTART_WITHIN,
    )
    .await?;
    whole_within(a, probe, bases, restart_at, " of the restart").await?;
    row.recovered = Some(restart_at.elapsed());
    let whole = settled(a, probe, bases).await?;
    row.term_after = Some(whole.term);
    // The node behind the endpoint is the restarted one of the PID file.
    process::running_node_pid(&nodes[row.killed_endpoint - 1])?;
    Ok(whole)
}

/// What the polls of the survivors saw after a kill.
#[derive(Debug, Default)]
struct Election {
    /// When a survivor was first seen `Leader` in a higher term, its node id and term.
    leader: Option<(Instant, u64, u64)>,
    /// Every (node, term) seen in the `Candidate` role.
    candidacies: BTreeSet<(u64, u64)>,
    /// The survivors' last log indexes at the first poll [`LOGS_AFTER`] the kill (what the
    /// candidates compare).
    logs: Vec<Option<u64>>,
}

/// Polls the survivors every `every` from `killed_at` until one is `Leader` in a term above
/// `before.term`, or `deadline`.
async fn watch_for_leader(
    probe: &reqwest::Client,
    bases: &[String],
    before: Whole,
    every: Duration,
    killed_at: Instant,
    deadline: Instant,
) -> Election {
    let survivors: Vec<String> = bases
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != before.leader)
        .map(|(_, b)| b.clone())
        .collect();
    let mut seen = Election::default();
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while Instant::now() < deadline {
        tick.tick().await;
        let polled_at = Instant::now();
        let view = cluster::read(probe, &survivors).await;
        seen.candidacies.extend(view.candidates());
        if seen.logs.is_empty() && polled_at >= killed_at + LOGS_AFTER {
            seen.logs = view.last_log_indexes();
        }
        // `usize::MAX`: no survivor is excluded (the killed leader is not among them).
        if let Some((_, id, term)) = view.new_leader(usize::MAX, before.term) {
            seen.leader = Some((Instant::now(), id, term));
            break;
        }
    }
    seen
}
