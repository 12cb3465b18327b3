//! Receiving a snapshot from the leader, chunk by chunk (`POST /raft/snapshot`), and handing
//! it to Raft only once its bytes check out.
//!
//! openraft's own receiver passes every finished snapshot to the state machine, where a
//! damaged one can only fail as a storage error, which stops Raft on this node. This one
//! keeps the chunks itself, checks the whole snapshot when the last chunk arrives (its
//! checksum, that its header is the snapshot the leader announced, that it is of this node's
//! cluster: [`registry_storage::snapshot::check`]), and answers a damaged one with openraft's
//! `SnapshotMismatch`, on which the leader sends the snapshot again from the start. Only a
//! snapshot that checks out goes to `Raft::install_full_snapshot`, and only once it is this
//! node's snapshot file ([`StateMachineStore::stage_snapshot`]): openraft purges the log up to
//! it as soon as the install starts.

use openraft::error::{InstallSnapshotError, RaftError, SnapshotMismatch};
use openraft::raft::{InstallSnapshotRequest, InstallSnapshotResponse};
use openraft::{Raft, Snapshot, SnapshotSegmentId};
use registry_storage::{ClusterId, NodeId, StateMachineStore, TypeConfig};
use tokio::sync::Mutex;

use crate::shared::RequestTasks;

/// Largest snapshot accepted (a million services is a few hundred MiB).
pub const MAX_SNAPSHOT_BYTES: usize = 4 << 30;

/// What one chunk call answers.
pub type ChunkResult =
    Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>;

/// The snapshot being received, if any.
#[derive(Debug, Default)]
pub struct SnapshotReceiver {
    current: Mutex<Option<Receiving>>,
}

#[derive(Debug)]
struct Receiving {
    /// The snapshot's id.
    id: String,
    /// Its bytes so far.
    data: Vec<u8>,
}

/// A `SnapshotMismatch` that makes the leader start sending snapshot `id` again.
fn restart(id: &str, got: u64) -> RaftError<NodeId, InstallSnapshotError> {
    RaftError::APIError(InstallSnapshotError::SnapshotMismatch(SnapshotMismatch {
        expect: SnapshotSegmentId {
            id: id.to_string(),
            offset: 0,
        },
        got: SnapshotSegmentId {
            id: id.to_string(),
            offset: got,
        },
    }))
}

impl SnapshotReceiver {
    /// Takes one chunk for `raft`, a node of cluster `cluster` whose state machine is `sm`;
    /// installs the snapshot when it was the last one and the whole checks out (checked on a
    /// blocking thread of `tasks`, which the node's shutdown waits for even if the leader's
    /// request is cut meanwhile).
    pub async fn receive(
        &self,
        raft: &Raft<TypeConfig>,
        sm: &StateMachineStore,
        cluster: Option<ClusterId>,
        tasks: &RequestTasks,
        req: InstallSnapshotRequest<TypeConfig>,
    ) -> ChunkResult {
        let my_vote = raft
            .with_raft_state(|s| *s.vote_ref())
            .await
            .map_err(RaftError::Fatal)?;
        if req.vote < my_vote {
            // A deposed leader: it learns the newer vote from the answer.
            return Ok(InstallSnapshotResponse { vote: my_vote });
        }
        let id = req.meta.snapshot_id.clone();
        let mut current = self.current.lock().await;
        let fresh = match current.as_ref() {
            Some(r) if r.id == id => req.offset == 0,
            _ => true,
        };
        if fresh {
            if req.offset != 0 {
                return Err(restart(&id, req.offset));
            }
            *current = Some(Receiving {
                id: id.clone(),
                data: Vec::new(),
            });
        }
        let Some(receiving) = current.as_mut() else {
            return Err(restart(&id, req.offset));
        };
        if req.offset != receiving.data.len() as u64 {
            // A chunk out of order (a retried one, say): start over.
            *current = None;
            return Err(restart(&id, req.offset));
        }
        if receiving.data.len() + req.data.len() > MAX_SNAPSHOT_BYTES {
            *current = None;
            tracing::error!(snapshot = %id, "refused a snapshot larger than {MAX_SNAPSHOT_BYTES} bytes");
            return Err(restart(&id, req.offset));
        }
        receiving.data.extend_from_slice(&req.data);
        if !req.done {
            return Ok(InstallSnapshotResponse { vote: my_vote });
        }
        let Some(Receiving { data, .. }) = current.take() else {
            return Err(restart(&id, req.offset));
        };
        drop(current);
        let meta = req.meta.clone();
        let checked = tasks
            .spawn_blocking(move || {
                let res = check(&meta, cluster, &data);
                (res, data)
            })
            .await;
        let data = match checked {
            Ok((Ok(()), data)) => data,
            Ok((Err(why), _)) => {
                tracing::warn!(snapshot = %id, error = %why, "a received snapshot is damaged; the leader is asked to send it again");
                return Err(restart(&id, req.offset));
            }
            Err(e) => {
                tracing::error!(snapshot = %id, error = %e, "checking a received snapshot failed");
                return Err(restart(&id, req.offset));
            }
        };
        let bytes = data.len();
        let file = match sm.stage_snapshot(data).await {
            Ok(file) => file,
            Err(e) => {
                // It checked out, but this node cannot write its snapshot file (a full or
                // failing disk, which its next log write will also meet): not installed;
                // asked again.
                tracing::error!(snapshot = %id, error = %e, "storing a received snapshot failed; not installing it");
                return Err(restart(&id, req.offset));
            }
        };
        tracing::info!(snapshot = %id, bytes, "received a whole snapshot; installing it");
        let snapshot = Snapshot {
            meta: req.meta,
            snapshot: Box::new(file),
        };
        let resp = raft
            .install_full_snapshot(req.vote, snapshot)
            .await
            .map_err(RaftError::Fatal)?;
        Ok(InstallSnapshotResponse { vote: resp.vote })
    }
}

/// Whether `data` is a whole, undamaged snapshot of cluster `cluster` that `meta` describes.
fn check(
    meta: &registry_storage::types::SnapshotMeta,
    cluster: Option<ClusterId>,
    data: &[u8],
) -> Result<(), String> {
    let info = registry_storage::snapshot::check(data).map_err(|e| e.to_string())?;
    if info.header.meta() != *meta {
        return Err(format!(
            "its header describes {} at {:?}, the leader announced {} at {:?}",
            info.header.snapshot_id, info.header.last_log_id, meta.snapshot_id, meta.last_log_id
        ));
    }
    if cluster.is_none() || info.header.cluster_id != cluster {
        return Err(format!(
            "it is a snapshot of cluster {:?}, this node belongs to {cluster:?}",
            info.header.cluster_id
        ));
    }
    Ok(())
}
