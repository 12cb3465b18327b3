//! Storage faults on `registry-node` processes: one node's data directory is on a tmpfs of its
//! own, a few MiB large (mounted here; root needed), and heartbeats are driven until that disk
//! is full.
//!
//! Invariants: the node whose disk filled stops taking writes and says why (its Raft stops
//! with a fatal storage error; it logs the error and exits non-zero); it never acknowledges a
//! heartbeat it did not store (every acknowledged count is in the final state of the healthy
//! nodes); the other two carry on taking writes; restarted on the still-full disk it fails
//! again and says why; and once its disk is enlarged and it is restarted, it opens the store it
//! had (its data directory is never emptied: a voter must not forget its log or its vote),
//! catches up, and every node holds the same state. Run with the full node on the leader and
//! on a follower.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::{CommittedLeaderId, EntryPayload};
use registry_api::wire::HeartbeatIn;
use registry_client::RegistryClient;
use registry_storage::headroom::{RESERVE_BYTES, START_FREE_BYTES};
use registry_storage::types::{Entry, LogId, Vote};
use registry_storage::{open_store, Command as RaftCommand, Heartbeat};
use registry_tests::history::{Event, History, Outcome, Reporters};
use registry_tests::init_test_tracing;
use registry_tests::procs::{converged_digests, converged_lists, ProcCluster, ProcSpec};
use registry_tests::tmpfs::Tmpfs;

/// Size of the small disk (as `mount` takes it): room for the node's disk reserve and the free
/// space it needs to start (8 MiB), and 4 MiB for its start-up and the first heartbeats, full
/// after a few MiB of bulk writes.
fn small_disk() -> String {
    format!("{}k", (RESERVE_BYTES + START_FREE_BYTES) / 1024 + 4 * 1024)
}
/// Size it is grown to before the node is restarted.
const ENLARGED_DISK: &str = "512m";

fn spec(data_dir: PathBuf) -> ProcSpec {
    ProcSpec {
        service_down_time: Duration::from_secs(5),
        report_interval: Duration::from_secs(1),
        data_dirs: vec![(0, data_dir)],
        ..ProcSpec::default()
    }
}

/// Runs `body` and, when it fails, appends the nodes' logs to the error.
async fn with_logs<F>(c: &mut ProcCluster, body: F) -> anyhow::Result<()>
where
    F: AsyncFnOnce(&mut ProcCluster) -> anyhow::Result<()>,
{
    let res = body(c).await;
    res.map_err(|e| anyhow::anyhow!("{e:#}\n{}", c.log_tails(40)))
}

/// Kills leaders until node index `want` leads (`true`) or until a node other than `want`
/// does (`false`); every killed node is restarted.
async fn arrange_leader(c: &mut ProcCluster, want: usize, lead: bool) -> anyhow::Result<usize> {
    for _ in 0..16 {
        let leader = c.wait_for_leader(Duration::from_secs(30)).await?;
        if (leader == want) == lead {
            return Ok(leader);
        }
        c.kill_node(leader)?;
        c.wait_for_leader(Duration::from_secs(30)).await?;
        c.start_node(leader)?;
    }
    anyhow::bail!("could not arrange for node index {want} to lead: {lead}")
}

/// Heartbeats of new services with long names, in batches, through `client`, until node
/// index `node` exits; every acknowledged count is recorded in `history`. Returns the number
/// of batches acknowledged and the node's exit status.
async fn fill_until(
    c: &mut ProcCluster,
    client: &RegistryClient,
    history: &History,
    node: usize,
    timeout: Duration,
) -> anyhow::Result<(usize, ExitStatus)> {
    let deadline = Instant::now() + timeout;
    let pad = "x".repeat(200);
    let mut acked = 0;
    let mut batch = 0;
    loop {
        batch += 1;
        if let Some(status) = c.reap_exited(node)? {
            return Ok((acked, status));
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "node index {node} still running after {acked} batches of bulk writes ({timeout:?})"
        );
        let beats: Vec<HeartbeatIn> = (0..400)
            .map(|i| HeartbeatIn::new(format!("fill-{batch}-{i}-{pad}"), "cinder-volume"))
            .collect();
        let sent = Instant::now();
        let res = client.heartbeat(&beats).await;
        let done = Instant::now();
        match res {
            Ok(out) => {
                acked += 1;
                for s in out.services {
                    history.record(Event {
                        service: (s.host, s.binary),
                        sent,
                        done,
                        outcome: Outcome::Acked(s.report_count),
                    });
                }
            }
            Err(e) => {
                // Refused (a leader change) or unanswered: not acknowledged, nothing to check.
                tracing::info!(error = %e, batch, "bulk write not acknowledged");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Whether a node's log says its disk is full: the filesystem's ENOSPC, or the store's refusal
/// to start without the room it needs.
fn says_disk_full(log: &str) -> bool {
    log.contains("No space left on device")
        || log.contains("os error 28")
        || log.contains("is full")
}

/// Waits until node index `i` exits by itself; its exit status.
async fn exit_within(
    c: &mut ProcCluster,
    i: usize,
    timeout: Duration,
) -> anyhow::Result<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = c.reap_exited(i)? {
            return Ok(status);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "node index {i} still running after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until node index `i` answers requests (its store opened and its server is up); fails
/// at once, with the reason it logged, if it exits instead.
async fn serving_within(c: &mut ProcCluster, i: usize, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = c.reap_exited(i)? {
            let log = std::fs::read_to_string(&c.nodes[i].log)?;
            anyhow::bail!(
                "node index {i} exited with {status} instead of starting: {}",
                log.lines()
                    .rev()
                    .find(|l| l.contains("registry-node failed"))
                    .unwrap_or("(no failure line)")
            );
        }
        if c.client_of(i).cluster().await.is_ok() {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "node index {i} neither answers nor exited after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The scenario, with the small disk on the leader (`on_leader`) or on a follower.
async fn disk_full(on_leader: bool) -> anyhow::Result<()> {
    init_test_tracing();
    // Declared before the cluster so that it is unmounted after every node is killed.
    let disk = Tmpfs::mount(&small_disk())?;
    let mut c = ProcCluster::start(spec(disk.path().join("node1-data")))?;
    with_logs(&mut c, async |c| {
        let full = 0;
        let leader = arrange_leader(c, full, on_leader).await?;
        eprintln!(
            "RESULT small disk on node index {full} ({}), leader index {leader}, {} used",
            if on_leader { "leader" } else { "follower" },
            disk.used()
        );
        // Reporters go through every node, the full one included.
        let reporters = Reporters::start_spread(c.clients_rotated(), 6, Duration::from_millis(50));
        reporters.wait_acked(60, Duration::from_secs(30)).await?;

        // Bulk writes through the two healthy nodes fill the small disk.
        let healthy: Vec<usize> = (0..3).filter(|i| *i != full).collect();
        let bulk_client = registry_tests::client(
            healthy.iter().map(|i| c.nodes[*i].addr.to_string()),
            Duration::from_secs(10),
        );
        let bulk = History::default();
        let filling = Instant::now();
        let (batches, status) =
            fill_until(c, &bulk_client, &bulk, full, Duration::from_secs(120)).await?;
        let log = std::fs::read_to_string(&c.nodes[full].log)?;
        eprintln!(
            "RESULT disk full after {batches} acknowledged bulk batches in {:?} ({} used); \
             the node exited with {status}",
            filling.elapsed(),
            disk.used()
        );
        let fatal_line = log
            .lines()
            .find(|l| l.contains("fatal error"))
            .unwrap_or("(none)");
        eprintln!("RESULT its log says: {fatal_line}");
        // It says why, and stops as a failure.
        anyhow::ensure!(
            !status.success(),
            "the node whose disk filled exited with success: {status}"
        );
        anyhow::ensure!(
            status.code() == Some(1),
            "the node whose disk filled did not exit through its fatal-error path \
             (exit code 1) but with {status}"
        );
        anyhow::ensure!(
            log.contains("raft stopped with a fatal error")
                && (log.contains("No space left on device") || log.contains("os error 28")),
            "its log does not say that Raft stopped because the disk is full"
        );

        // The other two carry on: reporters are acknowledged again, and writes through
        // each healthy node succeed.
        c.wait_for_leader(Duration::from_secs(30)).await?;
        let acked = reporters.history.acked();
        reporters
            .wait_acked(acked + 60, Duration::from_secs(30))
            .await?;
        for i in &healthy {
            let out = c
                .client_of(*i)
                .heartbeat(&[HeartbeatIn::new(format!("after-full-{i}"), "cinder-volume")])
                .await?;
            assert_eq!(
                out.services[0].report_count, 1,
                "a write through node index {i} while the other's disk is full"
            );
        }
        // What was acknowledged so far is on both healthy nodes (the reporters go on, so
        // the check is of a copy of their history taken before the lists are read).
        let so_far = History::default();
        for e in reporters.history.events() {
            so_far.record(e);
        }
        let lists = converged_lists(c).await?;
        for l in &lists {
            so_far.check_kept(l)?;
            bulk.check_kept(l)?;
        }

        // Restarted on the disk that is still full, it fails again rather than run without
        // storage (a supervisor restarting it in a loop sees every failure).
        let log_len = std::fs::metadata(&c.nodes[full].log)?.len();
        c.start_node(full)?;
        let status = exit_within(c, full, Duration::from_secs(60)).await?;
        let log = std::fs::read_to_string(&c.nodes[full].log)?;
        let again = log.get(log_len as usize..).unwrap_or_default();
        eprintln!(
            "RESULT restarted on the full disk, it exited with {status}: {}",
            again
                .lines()
                .find(|l| l.contains("registry-node failed"))
                .unwrap_or("(no failure line)")
        );
        anyhow::ensure!(
            !status.success() && status.code().is_some(),
            "restarted on a full disk, the node exited with {status}"
        );
        anyhow::ensure!(
            says_disk_full(again),
            "restarted on a full disk, its log does not say the disk is full"
        );

        // The disk is enlarged and the node restarted on the store it had: it opens it (no
        // wipe: a voter never forgets its log or its vote) and catches up.
        disk.resize(ENLARGED_DISK)?;
        let log_len = std::fs::metadata(&c.nodes[full].log)?.len();
        c.start_node(full)?;
        let restarted = Instant::now();
        serving_within(c, full, Duration::from_secs(60)).await?;
        // The node answers HTTP before its formation task logs what it found in its store:
        // wait for that line (a start that found no state logs another within the deadline).
        let log_path = c.nodes[full].log.clone();
        registry_tests::wait::until(
            "on the enlarged disk the node starts from the Raft state it had \
             (\"existing Raft state found\" logged by this start)",
            Duration::from_secs(10),
            || async {
                let log = std::fs::read_to_string(&log_path).ok()?;
                log.get(log_len as usize..)?
                    .contains("existing Raft state found")
                    .then_some(())
            },
        )
        .await?;
        let index = converged_digests(c, Duration::from_secs(120)).await?;
        eprintln!(
            "RESULT restarted node caught up to index {index} in {:?}",
            restarted.elapsed()
        );
        let acked = reporters.history.acked();
        reporters
            .wait_acked(acked + 30, Duration::from_secs(30))
            .await?;
        let history = reporters.stop().await;
        let refused = history
            .events()
            .iter()
            .filter(|e| !matches!(e.outcome, Outcome::Acked(_)))
            .count();
        eprintln!(
            "RESULT reporters: {} acknowledged, {refused} refused or unanswered",
            history.acked()
        );
        let lists = converged_lists(c).await?;
        anyhow::ensure!(lists.len() == 3, "every node is running again");
        history.check(&lists)?;
        // Bulk batches not acknowledged are not recorded; their services are not in `bulk`.
        bulk.check_counts(&lists)?;
        converged_digests(c, Duration::from_secs(30)).await?;
        Ok(())
    })
    .await
}

/// The leader's disk fills: it stops and exits non-zero, a new leader takes over, nothing
/// acknowledged is lost, and the old leader catches up once its disk has room again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_disk_on_the_leader_stops_it_and_loses_nothing() -> anyhow::Result<()> {
    disk_full(true).await
}

/// A follower's disk fills: it stops and exits non-zero, the leader and the other follower
/// carry on, and the follower catches up once its disk has room again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_disk_on_a_follower_stops_it_and_the_rest_carry_on() -> anyhow::Result<()> {
    disk_full(false).await
}

/// A store whose disk fills during the write of a large entry (sled writes a value above
/// 128 KiB to a blob file of its own): that append fails, and so does every later write and
/// flush, at once; and the store can be dropped. Nothing waits: sled 0.34, left to itself,
/// waits forever in every flush after a failed blob write, the one it runs when closed
/// included (a node hung that way instead of exiting on its fatal error).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_whose_disk_fills_fails_fast_and_closes() -> anyhow::Result<()> {
    init_test_tracing();
    let disk = Tmpfs::mount(&small_disk())?;
    let store = open_store(&disk.path().join("store"))?;
    let (mut log, sm, identity) = (store.log, store.sm, store.identity);
    let limit = Duration::from_secs(10);
    let pad = "x".repeat(250);
    let entry = |index: u64| Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(RaftCommand::Heartbeats {
            at: chrono::Utc::now(),
            beats: (0..1000)
                .map(|i| Heartbeat::new(format!("{index}-{i}-{pad}"), "cinder-volume"))
                .collect::<Vec<_>>()
                .into(),
        }),
    };
    let mut index = 0;
    let failure = loop {
        index += 1;
        anyhow::ensure!(
            index < 200,
            "{index} entries of 260 KiB fitted on a disk of {}",
            small_disk()
        );
        match tokio::time::timeout(limit, log.blocking_append([entry(index)])).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => break e,
            Err(_) => anyhow::bail!("append {index} neither succeeded nor failed within {limit:?}"),
        }
    };
    eprintln!(
        "RESULT append {index} failed ({} used): {failure}",
        disk.used()
    );
    anyhow::ensure!(
        failure.to_string().contains("No space left on device"),
        "the append failed for another reason than a full disk: {failure}"
    );
    let later = tokio::time::timeout(limit, log.blocking_append([entry(index)])).await;
    anyhow::ensure!(
        matches!(later, Ok(Err(_))),
        "an append after the failure did not fail at once: {later:?}"
    );
    let vote = tokio::time::timeout(limit, log.save_vote(&Vote::new(2, 1))).await;
    anyhow::ensure!(
        matches!(vote, Ok(Err(_))),
        "saving a vote after the failure did not fail at once: {vote:?}"
    );
    let flush = tokio::time::timeout(limit, log.flush()).await;
    anyhow::ensure!(
        matches!(flush, Ok(Err(_))),
        "a flush after the failure did not fail at once: {flush:?}"
    );
    let (closed, wait) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        drop(log);
        drop(sm);
        drop(identity);
        let _ = closed.send(());
    });
    anyhow::ensure!(
        wait.recv_timeout(limit).is_ok(),
        "dropping the store after the failure did not return within {limit:?}"
    );
    Ok(())
}
