//! SIGKILL of the leader, and of the whole cluster, while reporters keep heartbeating.

use std::time::{Duration, Instant};

use anyhow::Context;
use registry_api::wire::ServicesOut;
use registry_tests::history::{Outcome, Reporters};
use registry_tests::init_test_tracing;
use registry_tests::procs::{converged_lists, ProcCluster, ProcSpec};

fn counts(list: &ServicesOut) -> Vec<(String, u64, u64)> {
    list.services
        .iter()
        .map(|s| (s.host.clone(), s.id, s.report_count))
        .collect()
}

/// The leader is SIGKILLed while reporters heartbeat through every node: a new leader takes
/// over, heartbeats are accepted again through the surviving nodes, no acknowledged
/// heartbeat is lost, and the killed node, restarted, catches up to the same records.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_sigkill_loses_no_acknowledged_heartbeat() -> anyhow::Result<()> {
    init_test_tracing();
    let mut c = ProcCluster::start(ProcSpec::default())?;
    let result = async {
        let leader = c.wait_for_leader(Duration::from_secs(30)).await?;
        let reporters = Reporters::start(c.client_all(), 8, Duration::from_millis(10));
        reporters.wait_acked(100, Duration::from_secs(30)).await?;

        let killed_at = Instant::now();
        c.kill_node(leader)?;
        let new_leader = c.wait_for_leader(Duration::from_secs(10)).await?;
        assert_ne!(new_leader, leader, "a killed node cannot be leader");
        let acked_at_kill = reporters.history.acked();
        reporters
            .wait_acked(acked_at_kill + 100, Duration::from_secs(30))
            .await
            .context("heartbeats must be accepted again through the surviving nodes")?;
        let first_after = reporters
            .history
            .events()
            .iter()
            .filter(|e| e.sent >= killed_at && matches!(e.outcome, Outcome::Acked(_)))
            .map(|e| e.done)
            .min()
            .expect("acknowledgements after the kill");
        let gap = first_after.duration_since(killed_at);
        eprintln!("leader kill: first heartbeat sent after the kill acknowledged {gap:?} after it");

        c.start_node(leader)?;
        let history = reporters.stop().await;
        let lists = converged_lists(&c).await?;
        assert_eq!(lists.len(), 3);
        for (i, l) in lists.iter().enumerate() {
            assert_eq!(
                counts(l),
                counts(&lists[0]),
                "node {} must hold the same records as node 1 once caught up",
                i + 1
            );
        }
        history.check(&lists[0])?;
        let unknown = history
            .events()
            .iter()
            .filter(|e| matches!(e.outcome, Outcome::Unknown(_)))
            .count();
        eprintln!(
            "acknowledged {}, unknown outcome {unknown}, services {}",
            history.acked(),
            lists[0].services.len()
        );
        Ok::<(), anyhow::Error>(())
    }
    .await;
    result.map_err(|e| anyhow::anyhow!("{e:#}\n{}", c.log_tails(30)))
}

/// Every node is SIGKILLed at once and restarted: every acknowledged heartbeat is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn whole_cluster_sigkill_keeps_every_acknowledged_heartbeat() -> anyhow::Result<()> {
    init_test_tracing();
    let mut c = ProcCluster::start(ProcSpec::default())?;
    let result = async {
        c.wait_for_leader(Duration::from_secs(30)).await?;
        let reporters = Reporters::start(c.client_all(), 8, Duration::ZERO);
        reporters.wait_acked(300, Duration::from_secs(30)).await?;
        for i in 0..3 {
            c.kill_node(i)?;
        }
        let history = reporters.stop().await;
        for i in 0..3 {
            c.start_node(i)?;
        }
        let lists = converged_lists(&c).await?;
        for l in &lists {
            history.check(l)?;
        }
        eprintln!("acknowledged before the crash: {}", history.acked());
        Ok::<(), anyhow::Error>(())
    }
    .await;
    result.map_err(|e| anyhow::anyhow!("{e:#}\n{}", c.log_tails(30)))
}
