//! What a node says about itself: `/health`, `/ready`, the cluster view (`/v1/cluster`), its
//! identity for peers (`/raft/identity`) and its metrics ([`prometheus`]).

pub mod prometheus;

use std::collections::BTreeSet;
use std::sync::Arc;

use registry_storage::snapshot::SnapshotSource;
use registry_storage::NodeId;
use serde::Serialize;

use crate::error::ApiError;
use crate::shared::{leader_of, Shared, LEADER_CONTACT_BOUND};
use crate::wire::{ClusterOut, IdentityOut, MemberIdentity, MemberOut};

/// How many entries of the leader's commit index (as this node knows it) a node may have
/// left to apply and still answer `/ready` with 200: a few batches of heartbeats (applying
/// them takes milliseconds), far fewer than a node that restarted or was cut off has to
/// catch up on.
pub const READY_MAX_LAG: u64 = 100;

/// What `GET /ready` answers when the node is ready.
#[derive(Debug, Clone, Serialize)]
pub struct Readiness {
    /// This node's id.
    pub node_id: NodeId,
    /// The leader it heard from recently.
    pub leader_id: NodeId,
    /// The last index applied here.
    pub applied_index: u64,
    /// The leader's commit index as this node knows it.
    pub leader_commit_index: u64,
    /// Committed entries not yet applied here.
    pub lag_entries: u64,
    /// The most that may be: [`READY_MAX_LAG`].
    pub max_lag_entries: u64,
}

/// A node's status views. Cheap to clone.
#[derive(Clone)]
pub struct Status {
    shared: Arc<Shared>,
}

impl Status {
    /// The status of the node `shared` is part of.
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// Whether this node is a member of a group with a leader it heard from recently (or,
    /// when it leads, whose quorum acknowledged it recently): a leader id remembered from
    /// before a restart does not count.
    pub fn healthy(&self) -> Result<NodeId, String> {
        let m = self.shared.raft.metrics().borrow().clone();
        if let Err(e) = &m.running_state {
            return Err(format!("raft stopped: {e}"));
        }
        if m.current_leader.is_some() && leader_of(&m).is_none() {
            return Err("no leader known since this node restarted".into());
        }
        if !m
            .membership_config
            .membership()
            .nodes()
            .any(|(id, _)| *id == m.id)
        {
            return Err("this node is not a member of a cluster yet".into());
        }
        let leader = m
            .current_leader
            .ok_or("no leader known: the cluster has no quorum or is electing")?;
        let bound = u64::try_from(LEADER_CONTACT_BOUND.as_millis()).unwrap_or(u64::MAX);
        match self.shared.millis_since_leader_contact() {
            Some(ms) if ms <= bound => Ok(leader),
            Some(ms) => Err(format!(
                "no contact with leader {leader} for {ms} ms: the cluster may have no quorum"
            )),
            None if leader == m.id => {
                Err("this node leads, but no quorum has acknowledged it since it started".into())
            }
            None => Err(format!(
                "no contact with leader {leader} since this node started"
            )),
        }
    }

    /// Whether this node can serve reads that reflect the group's recent writes: it is
    /// [`healthy`](Self::healthy) (in a cluster, with a leader heard from within
    /// [`LEADER_CONTACT_BOUND`]) and it has applied all but at most [`READY_MAX_LAG`]
    /// entries of the leader's commit index as it knows it (the `leader_commit` of the last
    /// AppendEntries it accepted; on the leader, its own commit index). Since that is what
    /// the leader said at most [`LEADER_CONTACT_BOUND`] ago, a ready follower is at most
    /// [`READY_MAX_LAG`] entries plus that much time behind the leader. Else says why not.
    pub async fn ready(&self) -> Result<Readiness, String> {
        let leader = self.healthy()?;
        let applied = self
            .shared
            .raft
            .metrics()
            .borrow()
            .last_applied
            .map_or(0, |l| l.index);
        let Some(commit) = self.shared.leader_commit_index().await else {
            return Err(format!(
                "no commit index heard from leader {leader} yet: this node is catching up"
            ));
        };
        let lag = commit.saturating_sub(applied);
        if lag > READY_MAX_LAG {
            return Err(format!(
                "catching up: applied index {applied} is {lag} entries behind the leader's \
                 commit index {commit} (at most {READY_MAX_LAG} allowed)"
            ));
        }
        Ok(Readiness {
            node_id: self.shared.id,
            leader_id: leader,
            applied_index: applied,
            leader_commit_index: commit,
            lag_entries: lag,
            max_lag_entries: READY_MAX_LAG,
        })
    }

    /// The group as this node sees it, without the digest of its state machine.
    pub fn cluster(&self) -> ClusterOut {
        let (applied, records) = self
            .shared
            .view
            .read(|s| (s.last_applied.map(|l| l.index), s.len()));
        self.cluster_view(applied, records, String::new())
    }

    /// The group as this node sees it, with the digest of its state machine. The digest
    /// walks every record: the lock is held only to take a pointer to each
    /// ([`SnapshotSource`]), and the walk runs on a blocking thread, so that neither the
    /// applies (which wait for the lock) nor the runtime's workers wait for it.
    pub async fn cluster_with_digest(&self) -> Result<ClusterOut, ApiError> {
        let source = self.shared.view.read(SnapshotSource::of);
        let (applied, records, digest) = tokio::task::spawn_blocking(move || {
            (
                source.last_applied().map(|l| l.index),
                source.len(),
                source.digest(),
            )
        })
        .await
        .map_err(|e| ApiError::Internal(format!("the digest's task failed: {e}")))?;
        Ok(self.cluster_view(applied, records, format!("{digest:016x}")))
    }

    /// The cluster view of this node, around the state machine's applied index, size and
    /// digest (read together, from the state machine itself: Raft's metrics can lag it by an
    /// apply).
    fn cluster_view(&self, sm_applied: Option<u64>, records: usize, digest: String) -> ClusterOut {
        let mut m = self.shared.raft.metrics().borrow().clone();
        m.current_leader = leader_of(&m);
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let matched = m.replication.clone().unwrap_or_default();
        let members = membership
            .nodes()
            .map(|(id, node)| MemberOut {
                id: *id,
                addr: node.addr.clone(),
                voter: voters.contains(id),
                incarnation: node.incarnation.to_string(),
                matched_index: if *id == m.id {
                    m.last_log_index
                } else {
                    matched.get(id).copied().flatten().map(|l| l.index)
                },
            })
            .collect();
        let leader_addr = m
            .current_leader
            .and_then(|l| membership.get_node(&l).map(|n| n.addr.clone()));
        let store = self.shared.identity.store();
        ClusterOut {
            cluster_id: store.cluster_id().map(|c| c.to_string()),
            node_id: m.id,
            incarnation: store.incarnation().to_string(),
            role: format!("{:?}", m.state),
            leader_id: m.current_leader,
            leader_addr,
            term: m.current_term,
            last_log_index: m.last_log_index,
            applied_index: sm_applied,
            snapshot_index: m.snapshot.map(|l| l.index),
            purged_index: m.purged.map(|l| l.index),
            members,
            records,
            digest,
        }
    }

    /// This node's identity as its peers ask for it (`GET /raft/identity`).
    pub async fn identity_out(&self) -> IdentityOut {
        let raft = &self.shared.raft;
        let initialized = raft.is_initialized().await.unwrap_or(true);
        let m = raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let store = self.shared.identity.store();
        IdentityOut {
            format: registry_storage::codec::FORMAT_VERSION,
            node_id: self.shared.id,
            incarnation: store.incarnation().to_string(),
            cluster_id: store.cluster_id().map(|c| c.to_string()),
            initialized,
            restored_from: store.restored_from().map(|r| r.backup_id()),
            leader_id: leader_of(&m),
            members: membership
                .nodes()
                .map(|(id, node)| MemberIdentity {
                    id: *id,
                    addr: node.addr.clone(),
                    incarnation: node.incarnation.to_string(),
                    voter: voters.contains(id),
                })
                .collect(),
        }
    }
}
