//! Snapshots by log bytes: with the default settings (no entry count reached), each node
//! builds a snapshot once the log it applied since the last one outgrew it, at an index of
//! its own.

use std::time::Duration;

use registry_api::wire::HeartbeatIn;
use registry_tests::init_test_tracing;
use registry_tests::inproc::{ClusterSpec, InProcCluster};

const WAIT: Duration = Duration::from_secs(30);

/// 1,000 services heartbeating in requests of 1,000 (one entry each, about 60 KB) until
/// every node has a snapshot: none is built before the log holds 4 MiB (the least that
/// makes one due, times the node's factor of 1¼ to 1¾), all three are built well before the
/// default entry count (1,000,000), and not all at the same index.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_node_snapshots_once_its_log_outgrows_the_last_snapshot() -> anyhow::Result<()> {
    init_test_tracing();
    let mut c = InProcCluster::start(ClusterSpec::default()).await?;
    let leader = c.wait_for_leader(WAIT).await?;
    let client = c.client_of(leader);
    let beats: Vec<HeartbeatIn> = (0..1000)
        .map(|i| HeartbeatIn {
            availability_zone: Some("az-with-a-longer-name-1".into()),
            topic: Some(format!("cinder-volume-topic-{i:04}")),
            ..HeartbeatIn::new(format!("storage-host-{i:05}.example.org"), "cinder-volume")
        })
        .collect();
    // The request count at which each node was first seen with a snapshot.
    let mut first: [Option<u64>; 3] = [None; 3];
    let mut requests = 0u64;
    let deadline = std::time::Instant::now() + WAIT;
    while !first.iter().all(Option::is_some) {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "no snapshot on every node within {WAIT:?} ({requests} requests): {first:?}"
        );
        client.heartbeat(&beats).await?;
        requests += 1;
        for (i, seen) in first.iter_mut().enumerate() {
            if seen.is_none() && c.client_of(i).cluster().await?.snapshot_index.is_some() {
                *seen = Some(requests);
            }
        }
    }
    let last = client.cluster().await?.applied_index.unwrap_or_default();
    let first: Vec<u64> = first.iter().flatten().copied().collect();
    tracing::info!(?first, requests, last, "snapshots");
    // A request of these 1,000 heartbeats counts about 114 KB.
    for (i, n) in first.iter().enumerate() {
        assert!(
            *n >= 36,
            "node {} had a snapshot after {n} requests, before 4 MiB of log",
            i + 1
        );
    }
    assert!(
        last < 1000,
        "every snapshot came from the byte count, not the entry count ({last} entries)"
    );
    assert!(
        first.iter().any(|n| *n != first[0]),
        "the nodes snapshotted at different points: {first:?}"
    );
    c.shutdown().await
}
