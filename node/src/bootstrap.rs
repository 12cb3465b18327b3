//! Forming a new group: the one-time act of `registry-node --bootstrap` (or the first start of
//! a store prepared by `registry-node restore`).
//!
//! A node that bootstraps waits until every peer of its config answers who it is
//! (`GET /raft/identity`), then forms the group with all of them, each recorded with the
//! incarnation of its store. The cluster id is derived from that membership (and, for a
//! restore, from the backup), so every founding node that bootstraps at the same time derives
//! the same one and proposes the same first entry: bootstrapping all of them at once is safe,
//! and so is bootstrapping one of them (the others are brought in by its first RPCs).
//!
//! It refuses, and the node stops with an error, when any peer already belongs to a cluster
//! that is not the one it derives (a group exists: a node with an empty store must join it,
//! never form a new one), or when peers were restored from another backup (or not restored
//! while this one was). A node that already holds Raft state ignores `--bootstrap`.
//!
//! A node that stops while it bootstraps stops while it waits for or asks its peers, never
//! between recording the cluster id and initialising Raft.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use openraft::error::{InitializeError, RaftError};
use openraft::Raft;
use registry_api::transport::peer::Peer;
use registry_api::wire::IdentityOut;
use registry_storage::{ClusterId, Incarnation, NodeId, RegistryNode, StoreIdentity, TypeConfig};
use tokio_util::sync::CancellationToken;

use crate::config::NodeConfig;
use crate::error::NodeError;

/// How often peers are asked again while some do not answer.
const RETRY: Duration = Duration::from_millis(200);
/// How often the wait for silent peers is logged.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// The cluster id of a group formed with `members`, restored from backup `restored` (its
/// [`registry_storage::RestoredFrom::backup_id`]) or new.
pub fn cluster_id_of(
    members: &BTreeMap<NodeId, RegistryNode>,
    restored: Option<&str>,
) -> ClusterId {
    let kind = match restored {
        Some(b) => format!("restore:{b}"),
        None => "bootstrap".to_string(),
    };
    let list: String = members
        .iter()
        .map(|(id, n)| format!("{id}={}#{};", n.addr, n.incarnation))
        .collect();
    ClusterId::derive(&[kind.as_bytes(), list.as_bytes()])
}

/// Forms the group (see the module's documentation). Returns once this node is initialised,
/// or with why it must not be, or when `stop` is cancelled.
pub async fn run(
    raft: &Raft<TypeConfig>,
    peer: &Peer,
    store: &StoreIdentity,
    config: &NodeConfig,
    stop: &CancellationToken,
) -> Result<(), NodeError> {
    let refuse = |why: String| Err(NodeError::Bootstrap(why));
    let restored = store.restored_from().map(|r| r.backup_id());
    let what = match &restored {
        Some(b) => format!("a new cluster restored from backup {b}"),
        None => "a new cluster".to_string(),
    };
    tracing::info!(
        peers = config.peers.len(),
        "bootstrapping {what}: asking every peer who it is"
    );
    let mut logged: Option<Instant> = None;
    loop {
        let mut members = BTreeMap::new();
        let mut silent = Vec::new();
        let mut answers: Vec<(NodeId, IdentityOut)> = Vec::new();
        let asks = config
            .peers
            .iter()
            .filter(|p| p.id != config.node_id)
            .map(|p| async move { (p, peer.identity(&p.addr).await) });
        let Some(asked) = stop
            .run_until_cancelled(futures::future::join_all(asks))
            .await
        else {
            return Ok(());
        };
        for (p, res) in asked {
            match res {
                Ok(who) => answers.push((p.id, who)),
                Err(e) => silent.push(format!("node {} ({e})", p.id)),
            }
        }
        for (id, who) in &answers {
            let addr = config
                .peers
                .iter()
                .find(|p| p.id == *id)
                .map_or("", |p| &p.addr);
            if who.node_id != *id {
                return refuse(format!(
                    "the node at {addr} says it is node {}, but the config lists node {id} there",
                    who.node_id
                ));
            }
            if who.restored_from != restored {
                return refuse(format!(
                    "node {id} was restored from {:?} but this node from {:?}: every member of \
                     a restored cluster is restored from the same backup",
                    who.restored_from, restored
                ));
            }
            let incarnation: Incarnation = match who.incarnation.parse() {
                Ok(i) => i,
                Err(why) => return refuse(format!("node {id}: {why}")),
            };
            members.insert(*id, RegistryNode::new(addr, incarnation));
        }
        if !silent.is_empty() {
            if logged.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
                logged = Some(Instant::now());
                tracing::info!(
                    "bootstrapping {what}: waiting for every peer to answer (no answer yet from {})",
                    silent.join(", ")
                );
            }
            tokio::select! {
                () = tokio::time::sleep(RETRY) => continue,
                () = stop.cancelled() => return Ok(()),
            }
        }
        members.insert(
            config.node_id,
            RegistryNode::new(config.advertised_addr(), store.incarnation()),
        );
        let cluster = cluster_id_of(&members, restored.as_deref());
        for (id, who) in &answers {
            match &who.cluster_id {
                Some(c) if *c != cluster.to_string() => {
                    return refuse(format!(
                        "node {id} already belongs to cluster {c}: a group exists, and a node \
                         with an empty data directory must not form a new one. Start this node \
                         without --bootstrap: it then rejoins the group as a new incarnation"
                    ))
                }
                None if who.initialized => {
                    return refuse(format!(
                        "node {id} holds Raft state but belongs to no cluster: refusing to \
                         bootstrap next to it"
                    ))
                }
                _ => {}
            }
        }
        store
            .adopt(cluster)
            .await
            .map_err(|source| NodeError::RecordCluster { cluster, source })?;
        return match raft.initialize(members).await {
            Ok(()) => {
                tracing::info!(cluster_id = %cluster, "formed {what} with {} members", config.peers.len());
                Ok(())
            }
            Err(RaftError::APIError(InitializeError::NotAllowed(e))) => {
                // A peer that bootstrapped first reached this node already.
                tracing::info!(cluster_id = %cluster, reason = %e, "the group was formed by a peer");
                Ok(())
            }
            Err(e) => Err(NodeError::Initialize(Box::new(e))),
        };
    }
}
