//! Putting a node whose store was created anew back in its place: the leader's side of
//! `POST /raft/join`.
//!
//! A node that lost its disk comes back with a new incarnation, which its peers refuse as the
//! member it was ([`crate::transport::identity`]). It asks the leader to put it back; the leader, after
//! checking that the node at the member's address is that new incarnation, changes the
//! membership one safe step at a time, each a Raft membership change:
//!
//! 1. a voter with the old incarnation is made a learner (`RemoveVoters`, kept as a learner):
//!    from here on, quorums are counted without it;
//! 2. the learner's record is set to the new incarnation (`SetNodes`): the leader now
//!    replicates to the new store, by snapshot and log;
//! 3. once the new incarnation has everything up to that change, it is made a voter again
//!    (`AddVoterIds`). A member that was a learner stays one.
//!
//! Every step reads the membership first and does only what is left, so a request that comes
//! again (the node asks every second until it is told it is done), or one that reaches a new
//! leader after a failover, carries on where the last stopped. A new leader cannot tell a
//! replaced learner from a replaced voter caught between steps 2 and 3: it then finishes the
//! replacement as a voter.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, ServerState};
use registry_storage::{Incarnation, NodeId, RegistryNode};

use crate::error::ApiError;
use crate::shared::Shared;
use crate::transport::peer::Peer;
use crate::wire::{JoinIn, JoinOut};

/// How long one replacement may take, snapshot transfer included.
pub const REPLACE_DEADLINE: Duration = Duration::from_secs(600);

/// Replacements the leader is running or has finished, by node id.
#[derive(Debug, Default)]
pub struct Replacements {
    by_node: Mutex<HashMap<NodeId, Replacement>>,
}

#[derive(Debug, Clone)]
struct Replacement {
    /// The new incarnation being put in place.
    incarnation: Incarnation,
    /// Where it stands, in words.
    phase: Arc<Mutex<String>>,
    /// Finished (successfully or not).
    over: Arc<Mutex<Option<Result<(), String>>>>,
}

fn get<T: Clone>(m: &Mutex<T>) -> T {
    m.lock().unwrap_or_else(PoisonError::into_inner).clone()
}

fn set<T>(m: &Mutex<T>, v: T) {
    *m.lock().unwrap_or_else(PoisonError::into_inner) = v;
}

impl Replacements {
    /// Starts putting `join`'s node back (or reports on the replacement under way, or done).
    pub fn request(
        &self,
        shared: &Arc<Shared>,
        peer: &Peer,
        join: JoinIn,
    ) -> Result<JoinOut, ApiError> {
        let incarnation: Incarnation = join
            .incarnation
            .parse()
            .map_err(|e| ApiError::BadRequest(format!("incarnation: {e}")))?;
        crate::wire::check_field("addr", &join.addr)?;
        if shared.raft.metrics().borrow().state != ServerState::Leader {
            return Err(ApiError::Unavailable(format!(
                "node {} is not the leader: ask the leader",
                shared.id
            )));
        }
        let mut by_node = self.by_node.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(r) = by_node.get(&join.node_id) {
            if r.incarnation == incarnation {
                match get(&r.over) {
                    None => {
                        return Ok(JoinOut {
                            done: false,
                            phase: get(&r.phase),
                        })
                    }
                    Some(Ok(())) => {
                        return Ok(JoinOut {
                            done: true,
                            phase: get(&r.phase),
                        })
                    }
                    // Failed: start again below.
                    Some(Err(_)) => {}
                }
            }
        }
        let r = Replacement {
            incarnation,
            phase: Arc::new(Mutex::new("starting".into())),
            over: Arc::new(Mutex::new(None)),
        };
        by_node.insert(join.node_id, r.clone());
        drop(by_node);
        let node = RegistryNode::new(join.addr, incarnation);
        let tasks = shared.tasks.clone();
        let (shared, peer, id) = (Arc::clone(shared), peer.clone(), join.node_id);
        tasks.spawn(async move {
            let res =
                tokio::time::timeout(REPLACE_DEADLINE, run(&shared, &peer, id, &node, &r.phase))
                    .await
                    .unwrap_or_else(|_| Err(format!("not done within {REPLACE_DEADLINE:?}")));
            match &res {
                Ok(()) => tracing::info!(node = id, %node, "node is back in its place"),
                Err(e) => {
                    tracing::warn!(node = id, %node, error = %e, "putting the node back failed");
                    set(&r.phase, format!("failed: {e}"));
                }
            }
            set(&r.over, Some(res));
        });
        Ok(JoinOut {
            done: false,
            phase: "starting".into(),
        })
    }
}

/// Runs the replacement of node `id` by `node` to its end (see the module's documentation).
async fn run(
    shared: &Shared,
    peer: &Peer,
    id: NodeId,
    node: &RegistryNode,
    phase: &Mutex<String>,
) -> Result<(), String> {
    let step = |what: String| {
        tracing::info!(node = id, incarnation = %node.incarnation, "replacing: {what}");
        set(phase, what);
    };
    // The process at the member's address must be the new incarnation: then the old one
    // cannot be running there.
    let who = peer
        .identity(&node.addr)
        .await
        .map_err(|e| format!("asking {} who it is: {e}", node.addr))?;
    if who.node_id != id || who.incarnation != node.incarnation.to_string() {
        return Err(format!(
            "{} is node {} incarnation {}, not node {id} incarnation {}",
            node.addr, who.node_id, who.incarnation, node.incarnation
        ));
    }
    let ours = shared.identity.cluster_id().map(|c| c.to_string());
    if who.cluster_id.is_some() && who.cluster_id != ours {
        return Err(format!(
            "{} belongs to cluster {:?}, not {ours:?}",
            node.addr, who.cluster_id
        ));
    }
    let mut promote = None;
    loop {
        let m = shared.raft.metrics().borrow().clone();
        if m.state != ServerState::Leader {
            return Err("this node is no longer the leader".into());
        }
        let membership = m.membership_config.membership();
        let voter = membership.voter_ids().any(|v| v == id);
        let change = match membership.get_node(&id) {
            None => {
                return Err(format!(
                    "node {id} is not a member: add it with `registryctl cluster add {id} {}`",
                    node.addr
                ))
            }
            Some(old) if old.addr != node.addr => {
                return Err(format!(
                    "node {id} is a member at {}, not {}: remove it and add it anew",
                    old.addr, node.addr
                ))
            }
            Some(old) if old.incarnation != node.incarnation && voter => {
                promote.get_or_insert(true);
                step(format!(
                    "incarnation {} no longer votes (made a learner)",
                    old.incarnation
                ));
                ChangeMembers::RemoveVoters(BTreeSet::from([id]))
            }
            Some(old) if old.incarnation != node.incarnation => {
                promote.get_or_insert(false);
                step(format!(
                    "the learner's record moves from incarnation {} to {}",
                    old.incarnation, node.incarnation
                ));
                ChangeMembers::SetNodes([(id, node.clone())].into())
            }
            Some(_) if voter => {
                step("a voter again".into());
                return Ok(());
            }
            Some(_) if !*promote.get_or_insert(true) => {
                step("the learner it was".into());
                return Ok(());
            }
            Some(_) => {
                step("catching up (snapshot and log)".into());
                caught_up(shared, id).await?;
                step("caught up; made a voter".into());
                ChangeMembers::AddVoterIds(BTreeSet::from([id]))
            }
        };
        match shared.raft.change_membership(change, true).await {
            Ok(_) => {}
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                // Another change is in progress: try again shortly.
                tracing::debug!(node = id, error = %e, "membership change refused; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(format!("membership change failed: {e}")),
        }
    }
}

/// Waits until node `id` has every entry up to the latest membership change.
async fn caught_up(shared: &Shared, id: NodeId) -> Result<(), String> {
    let start = Instant::now();
    let mut rx = shared.raft.metrics();
    rx.wait_for(|m| {
        let target = m.membership_config.log_id();
        let matched = m
            .replication
            .as_ref()
            .and_then(|r| r.get(&id).copied().flatten());
        m.state != ServerState::Leader || (matched.is_some() && matched >= *target)
    })
    .await
    .map_err(|_| "raft stopped".to_string())?;
    if shared.raft.metrics().borrow().state != ServerState::Leader {
        return Err("this node is no longer the leader".into());
    }
    tracing::info!(node = id, elapsed = ?start.elapsed(), "new incarnation caught up");
    Ok(())
}
