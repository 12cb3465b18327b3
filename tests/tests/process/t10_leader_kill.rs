//! SIGKILL of the leader, and of the whole cluster, while reporters keep heartbeating.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use registry_api::client::{ClientError, RegistryClient};
use registry_api::wire::{Consistency, HeartbeatIn, ServicesOut};
use registry_tests::history::{Event, History, Outcome};
use registry_tests::procs::{ProcCluster, ProcSpec};
use registry_tests::{init_test_tracing, wait};

/// Reporters, one task per service, each waiting for an answer before its next heartbeat.
struct Reporters {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    history: History,
}

impl Reporters {
    fn start(client: RegistryClient, services: usize, pace: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let history = History::default();
        let tasks = (0..services)
            .map(|i| {
                let (client, stop, history) = (client.clone(), stop.clone(), history.clone());
                tokio::spawn(async move {
                    let host = format!("host-{i}");
                    let binary = "cinder-volume".to_string();
                    while !stop.load(Ordering::Relaxed) {
                        let sent = Instant::now();
                        let res = client.heartbeat(&[HeartbeatIn::new(&host, &binary)]).await;
                        let outcome = match res {
                            Ok(out) => Outcome::Acked(out.services[0].report_count),
                            Err(e @ ClientError::Api { .. }) => Outcome::Failed(e.to_string()),
                            Err(e) => Outcome::Unknown(e.to_string()),
                        };
                        history.record(Event {
                            service: (host.clone(), binary.clone()),
                            sent,
                            done: Instant::now(),
                            outcome,
                        });
                        tokio::time::sleep(pace).await;
                    }
                })
            })
            .collect();
        Self {
            stop,
            tasks,
            history,
        }
    }

    async fn wait_acked(&self, n: usize, timeout: Duration) -> anyhow::Result<()> {
        let what = format!("{n} acknowledged heartbeats");
        wait::until(&what, timeout, || async {
            (self.history.acked() >= n).then_some(())
        })
        .await
    }

    async fn stop(self) -> History {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        self.history
    }
}

/// Waits until every running node applied what the leader applied, then returns each
/// running node's own (stale) list.
async fn converged_lists(c: &ProcCluster) -> anyhow::Result<Vec<ServicesOut>> {
    let leader = c.wait_for_leader(Duration::from_secs(20)).await?;
    let target = c.client_of(leader).cluster().await?.applied_index;
    wait::until(
        "every running node applied the leader's entries",
        Duration::from_secs(20),
        || async {
            for i in c.running() {
                let applied = c.client_of(i).cluster().await.ok()?.applied_index;
                if applied < target {
                    return None;
                }
            }
            Some(())
        },
    )
    .await?;
    let mut lists = Vec::new();
    for i in c.running() {
        lists.push(
            c.client_of(i)
                .services(None, None, Consistency::Stale)
                .await?,
        );
    }
    Ok(lists)
}

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
