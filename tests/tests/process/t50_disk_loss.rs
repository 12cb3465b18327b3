//! A node that lost its disk (its data directory deleted) comes back as a new incarnation of
//! its store: it never votes or counts toward a quorum as the member it was, and returns as a
//! learner caught up by snapshot and log, then a voter again, the old incarnation gone.
//!
//! Invariants: no acknowledged heartbeat is lost, even when the node that lost its disk is
//! the only other holder of the latest entries and the leader goes down meanwhile (a voter
//! that forgot its log would elect a leader without them); the returned node ends as a voter
//! with its new incarnation and the same state as the others.

use std::time::{Duration, Instant};

use registry_tests::history::Reporters;
use registry_tests::init_test_tracing;
use registry_tests::observer::Observer;
use registry_tests::procs::{with_logs, ProcCluster, ProcSpec};
use registry_tests::scenario::finish;

fn spec() -> ProcSpec {
    ProcSpec {
        service_down_time: Duration::from_secs(5),
        report_interval: Duration::from_secs(1),
        ..ProcSpec::default()
    }
}

/// A follower loses its disk while reporters keep going through every node: it comes back
/// by itself, as a new incarnation, and is a voter again with the same state.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wiped_follower_returns_as_a_new_incarnation() -> anyhow::Result<()> {
    init_test_tracing();
    let mut c = ProcCluster::start(spec())?;
    with_logs(&mut c, async |c| {
        let leader = c.wait_for_leader(Duration::from_secs(30)).await?;
        let reporters = Reporters::start_spread(c.clients_rotated(), 6, Duration::from_millis(100));
        let observer = Observer::start(c.addrs(), "host-", Duration::from_millis(200)).await?;
        reporters.wait_acked(30, Duration::from_secs(30)).await?;

        let victim = (leader + 1) % 3;
        let id = c.nodes[victim].id;
        let before = c.client_of(victim).cluster().await?;
        c.kill_node(victim)?;
        c.wipe(victim)?;
        c.start_node(victim)?;
        let took = c.wait_voter(victim, Duration::from_secs(60)).await?;
        let after = c.client_of(victim).cluster().await?;
        anyhow::ensure!(
            after.incarnation != before.incarnation,
            "the emptied node has a new incarnation ({} both times)",
            before.incarnation
        );
        anyhow::ensure!(
            after.cluster_id == before.cluster_id,
            "the emptied node rejoined its own cluster"
        );
        eprintln!(
            "RESULT wiped follower {id} voting again {took:?} after its restart (incarnation \
             {} -> {})",
            before.incarnation, after.incarnation
        );
        let acked = reporters.history.acked();
        reporters
            .wait_acked(acked + 30, Duration::from_secs(30))
            .await?;
        anyhow::ensure!(c.running().len() == c.nodes.len(), "every node runs");
        finish(c, reporters, observer).await.map(|_| ())
    })
    .await
}

/// The scenario that broke the registry before stores had incarnations: follower B is
/// down; heartbeats are acknowledged by the leader L and follower A; A loses its disk and
/// comes back empty; L goes down and B comes back. B and the new A must not elect a leader
/// (A refuses to vote as the member it was), so nothing acknowledged is lost; once L is back,
/// A is put back in place and every node ends with the same state.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn disk_loss_while_the_leader_changes_loses_nothing() -> anyhow::Result<()> {
    init_test_tracing();
    let mut c = ProcCluster::start(spec())?;
    with_logs(&mut c, async |c| {
        let l = c.wait_for_leader(Duration::from_secs(30)).await?;
        let (a, b) = ((l + 1) % 3, (l + 2) % 3);
        let reporters = Reporters::start_spread(c.clients_rotated(), 6, Duration::from_millis(100));
        let observer = Observer::start(c.addrs(), "host-", Duration::from_millis(200)).await?;
        reporters.wait_acked(30, Duration::from_secs(30)).await?;

        // B down: what is acknowledged now is on L and A only.
        c.kill_node(b)?;
        let acked = reporters.history.acked();
        reporters
            .wait_acked(acked + 30, Duration::from_secs(30))
            .await?;

        // A loses its disk and comes back empty; then L goes down and B comes back.
        let old_a = c.client_of(a).cluster().await?;
        c.kill_node(a)?;
        c.wipe(a)?;
        c.start_node(a)?;
        c.kill_node(l)?;
        c.start_node(b)?;

        // B cannot be elected: A refuses its vote requests as not meant for it. Watched for
        // well over ten election timeouts.
        let watched = Instant::now();
        let mut looks = 0;
        while watched.elapsed() < Duration::from_secs(3) {
            let (vb, va) = (
                c.client_of(b).cluster().await,
                c.client_of(a).cluster().await,
            );
            if let Ok(vb) = &vb {
                looks += 1;
                anyhow::ensure!(
                    vb.role != "Leader",
                    "node {} was elected leader without the leader's latest entries",
                    vb.node_id
                );
            }
            if let Ok(va) = &va {
                anyhow::ensure!(
                    va.cluster_id.is_none() && va.members.is_empty(),
                    "the emptied node joined a group while only B could lead: {va:?}"
                );
                anyhow::ensure!(
                    va.incarnation != old_a.incarnation,
                    "the emptied node kept its incarnation"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::ensure!(looks >= 10, "B answered only {looks} times in 3 s");
        // The refusal is logged by the node refusing: A.
        c.wait_log(
            a,
            "is not the member the sender knows",
            Duration::from_secs(10),
        )
        .await?;
        eprintln!("RESULT no leader elected without L in 3 s ({looks} looks at B)");

        // L is back: the group has a quorum again and puts A back in place.
        let restarted = Instant::now();
        c.start_node(l)?;
        let took = c.wait_voter(a, Duration::from_secs(60)).await?;
        eprintln!(
            "RESULT emptied node voting again {took:?} after the leader's return ({:?} in all)",
            restarted.elapsed()
        );
        let acked = reporters.history.acked();
        reporters
            .wait_acked(acked + 30, Duration::from_secs(30))
            .await?;
        anyhow::ensure!(c.running().len() == c.nodes.len(), "every node runs");
        finish(c, reporters, observer).await.map(|_| ())
    })
    .await
}
