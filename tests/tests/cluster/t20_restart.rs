//! Stopping and restarting nodes in-process.

use std::time::Duration;

use registry_api::wire::{Consistency, HeartbeatIn};
use registry_tests::init_test_tracing;
use registry_tests::inproc::{ClusterSpec, InProcCluster};

/// A whole-cluster restart keeps every record: report counts, ids and times are the same
/// after every node was stopped and started again on its data directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn whole_cluster_restart_keeps_every_record() -> anyhow::Result<()> {
    init_test_tracing();
    let mut c = InProcCluster::start(ClusterSpec::default()).await?;
    c.wait_for_leader(Duration::from_secs(10)).await?;
    let client = c.client_of(0);
    for i in 0..30 {
        client
            .heartbeat(&[HeartbeatIn::new(format!("host-{}", i % 7), "cinder-volume")])
            .await?;
    }
    let before = client
        .services(None, None, Consistency::Linearizable)
        .await?;
    assert_eq!(before.services.len(), 7);

    c.shutdown().await?;
    for i in 0..3 {
        c.start_node(i).await?;
    }
    c.wait_for_leader(Duration::from_secs(10)).await?;
    let after = c
        .client_of(2)
        .services(None, None, Consistency::Linearizable)
        .await?;
    let key = |s: &registry_api::wire::ServiceOut| {
        (
            s.id,
            s.host.clone(),
            s.binary.clone(),
            s.report_count,
            s.created_at,
            s.updated_at,
        )
    };
    assert_eq!(
        before.services.iter().map(key).collect::<Vec<_>>(),
        after.services.iter().map(key).collect::<Vec<_>>(),
        "every record survives a whole-cluster restart unchanged"
    );
    // And the restarted cluster takes writes again, continuing the counts.
    let out = c
        .client_of(1)
        .heartbeat(&[HeartbeatIn::new("host-0", "cinder-volume")])
        .await?;
    let was = before
        .services
        .iter()
        .find(|s| s.host == "host-0")
        .map(|s| s.report_count);
    assert_eq!(Some(out.services[0].report_count), was.map(|c| c + 1));
    c.shutdown().await
}

/// When the leader stops, the other two elect a new one and keep taking writes; the old
/// leader, restarted, catches up to the same records.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stopped_leader_is_replaced_and_catches_up() -> anyhow::Result<()> {
    init_test_tracing();
    let mut c = InProcCluster::start(ClusterSpec::default()).await?;
    let old = c.wait_for_leader(Duration::from_secs(10)).await?;
    c.client_of(old)
        .heartbeat(&[HeartbeatIn::new("h", "cinder-volume")])
        .await?;
    c.stop_node(old).await?;

    let new = c.wait_for_leader(Duration::from_secs(10)).await?;
    assert_ne!(new, old, "a stopped node cannot stay leader");
    let other = (0..3)
        .find(|i| *i != old && *i != new)
        .expect("a third node");
    for _ in 0..5 {
        c.client_of(other)
            .heartbeat(&[HeartbeatIn::new("h", "cinder-volume")])
            .await?;
    }
    c.start_node(old).await?;
    c.wait_for_leader(Duration::from_secs(10)).await?;
    let applied = c.last_applied(new);
    c.wait_applied(applied.unwrap_or(0), Duration::from_secs(10))
        .await?;
    let list = c
        .client_of(old)
        .services(None, None, Consistency::Stale)
        .await?;
    assert_eq!(list.services.len(), 1);
    assert_eq!(
        list.services[0].report_count, 6,
        "the restarted node caught up to every write"
    );
    c.shutdown().await
}
