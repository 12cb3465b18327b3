//! Forming a group is a one-time, explicit act (`registry-node --bootstrap`).
//!
//! Invariants: nodes with empty data directories started without `--bootstrap` never form a
//! group, and say why; the founding nodes bootstrapped all at once agree on one cluster id;
//! a node with an empty data directory started with `--bootstrap` next to an existing group
//! refuses to form another (it exits non-zero, saying so), and the same node started without
//! the flag takes its old place back.

use std::time::Duration;

use registry_tests::init_test_tracing;
use registry_tests::procs::{with_logs, ProcCluster, ProcSpec};

fn spec() -> ProcSpec {
    ProcSpec {
        service_down_time: Duration::from_secs(5),
        report_interval: Duration::from_secs(1),
        ..ProcSpec::default()
    }
}

/// `GET /health` of node index `i`: its status and body.
async fn health(c: &ProcCluster, i: usize) -> anyhow::Result<(u16, String)> {
    let resp = reqwest::get(format!("http://{}/health", c.nodes[i].addr)).await?;
    Ok((resp.status().as_u16(), resp.text().await?))
}

/// Empty nodes without `--bootstrap`: alone, then all three, they form no group.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn empty_nodes_without_bootstrap_form_no_group() -> anyhow::Result<()> {
    init_test_tracing();
    let mut c = ProcCluster::create(spec())?;
    for n in &mut c.nodes {
        n.bootstrap = false;
    }
    with_logs(&mut c, async |c| {
        c.start_node(0)?;
        let said = c
            .wait_log(0, "no peer answers", Duration::from_secs(20))
            .await?;
        eprintln!("RESULT alone and empty, node 1 says: {said}");
        let view = c.client_of(0).cluster().await?;
        anyhow::ensure!(
            view.cluster_id.is_none() && view.members.is_empty(),
            "a lone empty node formed a group: {view:?}"
        );
        let (status, body) = health(c, 0).await?;
        anyhow::ensure!(
            status == 503 && body.contains("not a member"),
            "/health of a node in no group: {status} {body}"
        );

        c.start_node(1)?;
        c.start_node(2)?;
        let said = c
            .wait_log(0, "every peer is empty too", Duration::from_secs(20))
            .await?;
        eprintln!("RESULT all empty, node 1 says: {said}");
        for i in 0..3 {
            let view = c.client_of(i).cluster().await?;
            anyhow::ensure!(
                view.cluster_id.is_none() && view.members.is_empty(),
                "node {} formed a group without --bootstrap: {view:?}",
                i + 1
            );
        }
        Ok(())
    })
    .await
}

/// Three founding nodes bootstrapped at once form one cluster; a node emptied and started
/// with `--bootstrap` next to it refuses and exits; started without the flag, it rejoins.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bootstrap_next_to_a_group_is_refused_and_a_plain_start_rejoins() -> anyhow::Result<()> {
    init_test_tracing();
    let mut c = ProcCluster::start(spec())?;
    with_logs(&mut c, async |c| {
        let leader = c.wait_for_leader(Duration::from_secs(30)).await?;
        let mut ids = Vec::new();
        for i in 0..3 {
            ids.push(c.client_of(i).cluster().await?.cluster_id);
        }
        let cluster = ids[0]
            .clone()
            .ok_or_else(|| anyhow::anyhow!("the leader's node belongs to no cluster"))?;
        anyhow::ensure!(
            ids.iter().all(|id| id.as_deref() == Some(cluster.as_str())),
            "the founding nodes disagree on the cluster id: {ids:?}"
        );
        let metrics = reqwest::get(format!("http://{}/metrics", c.nodes[leader].addr))
            .await?
            .text()
            .await?;
        anyhow::ensure!(
            metrics.contains(&format!("registry_cluster_info{{cluster_id=\"{cluster}\"")),
            "/metrics names the cluster"
        );

        let victim = (leader + 1) % 3;
        c.kill_node(victim)?;
        c.wipe(victim)?;
        c.nodes[victim].bootstrap = true;
        c.start_node(victim)?;
        let status = c.wait_exit(victim, Duration::from_secs(30)).await?;
        let said = c
            .wait_log(victim, "already belongs to cluster", Duration::from_secs(1))
            .await?;
        eprintln!("RESULT --bootstrap next to a group: exit {status}; {said}");
        anyhow::ensure!(
            status.code() == Some(1),
            "a refused bootstrap exits 1, not {status}"
        );
        anyhow::ensure!(
            c.client_of(leader).cluster().await?.cluster_id.as_deref() == Some(cluster.as_str()),
            "the group kept its cluster"
        );

        c.start_node(victim)?;
        let took = c.wait_voter(victim, Duration::from_secs(60)).await?;
        eprintln!("RESULT started without --bootstrap, it is a voter again after {took:?}");
        Ok(())
    })
    .await
}
