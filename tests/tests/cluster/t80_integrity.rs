//! A snapshot that arrives damaged is refused by the follower before Raft sees it, and the
//! leader is asked to send it again from the start; the follower's state is unchanged and it
//! goes on following. The undamaged snapshot is taken.

use std::time::Duration;

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{InstallSnapshotRequest, InstallSnapshotResponse};
use registry_api::auth::SECRET_HEADER;
use registry_api::transport::identity::{CLUSTER_ID_HEADER, TARGET_HEADER};
use registry_api::transport::rpc;
use registry_api::wire::HeartbeatIn;
use registry_storage::{NodeId, TypeConfig};
use registry_tests::inproc::{ClusterSpec, InProcCluster};

type Answer = Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_damaged_snapshot_is_asked_for_again_and_never_installed() -> anyhow::Result<()> {
    let mut c = InProcCluster::start(ClusterSpec::default()).await?;
    let leader = c.wait_for_leader(Duration::from_secs(10)).await?;
    let follower = (leader + 1) % 3;
    let beats: Vec<HeartbeatIn> = (0..50)
        .map(|i| HeartbeatIn::new(format!("host-{i}"), "cinder-volume"))
        .collect();
    c.client_of(leader).heartbeat(&beats).await?;
    let (blob, _) = c.node(leader).app.read().backup().await?;
    let header = registry_storage::snapshot::check(&blob)?.header;
    let vote = c.node(leader).raft.metrics().borrow().vote;
    let me = c.client_of(follower).cluster().await?;
    let secret = c.configs[follower]
        .auth
        .cluster_secret
        .clone()
        .unwrap_or_default();
    let http = reqwest::Client::new();
    let send = |data: Vec<u8>| {
        let chunk = InstallSnapshotRequest::<TypeConfig> {
            vote,
            meta: header.meta(),
            offset: 0,
            data,
            done: true,
        };
        let body = rpc::encode(&chunk);
        let req = http
            .post(format!(
                "http://{}/raft/snapshot",
                c.configs[follower].listen
            ))
            .header(SECRET_HEADER, &secret)
            .header(CLUSTER_ID_HEADER, me.cluster_id.clone().unwrap_or_default())
            .header(TARGET_HEADER, format!("{}/{}", me.node_id, me.incarnation));
        async move {
            let resp = req.body(body?).send().await?;
            anyhow::ensure!(resp.status().is_success(), "answered {}", resp.status());
            Ok::<Answer, anyhow::Error>(rpc::decode(&resp.bytes().await?)?)
        }
    };

    for at in [0, 8, 12, blob.len() / 2, blob.len() - 5, blob.len() - 1] {
        let before = c.client_of(follower).cluster().await?;
        let mut bad = blob.clone();
        bad[at] ^= 0x04;
        let answer = send(bad).await?;
        assert!(
            matches!(
                answer,
                Err(RaftError::APIError(InstallSnapshotError::SnapshotMismatch(
                    _
                )))
            ),
            "a snapshot with byte {at} flipped is asked for again: {answer:?}"
        );
        let after = c.client_of(follower).cluster().await?;
        assert!(
            after.snapshot_index == before.snapshot_index
                && after.applied_index >= before.applied_index,
            "a damaged snapshot changes nothing on the follower: {before:?} -> {after:?}"
        );
    }
    let answer = send(blob.clone()).await?;
    assert!(
        answer.is_ok(),
        "the undamaged snapshot is taken: {answer:?}"
    );

    // The follower goes on following.
    let out = c
        .client_of(leader)
        .heartbeat(&[HeartbeatIn::new("after", "cinder-volume")])
        .await?;
    let index = c
        .client_of(leader)
        .cluster()
        .await?
        .applied_index
        .unwrap_or(0);
    c.wait_applied(index, Duration::from_secs(10)).await?;
    assert_eq!(out.services[0].report_count, 1);
    c.shutdown().await
}
