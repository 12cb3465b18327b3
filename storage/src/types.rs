//! The Raft type configuration shared by every layer.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::Incarnation;
use crate::model::{Command, CommandResponse};

/// A registry node's id in the Raft group.
pub type NodeId = u64;

/// A member of the group as the membership records it: where it listens, and which
/// incarnation of its store was added. Peers address it by both, so a node that lost its
/// store (a new incarnation) is not taken for the member it was.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RegistryNode {
    /// The address its HTTP API and Raft RPCs listen on, `host:port`.
    pub addr: String,
    /// The incarnation of its store that is the member.
    pub incarnation: Incarnation,
}

impl RegistryNode {
    /// A member at `addr` with store incarnation `incarnation`.
    pub fn new(addr: impl Into<String>, incarnation: Incarnation) -> Self {
        Self {
            addr: addr.into(),
            incarnation,
        }
    }
}

impl fmt::Display for RegistryNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (incarnation {})", self.addr, self.incarnation)
    }
}

openraft::declare_raft_types!(
    /// Raft types of the registry: log entries carry [`Command`]s, and applying one yields a
    /// [`CommandResponse`]. Members are [`RegistryNode`]s. Its tasks run on tokio, in the set
    /// of the Raft they belong to ([`crate::raft_tasks`]). A snapshot's data is a file
    /// (the node's snapshot file, or an unnamed one), never a copy in memory.
    pub TypeConfig:
        D = Command,
        R = CommandResponse,
        NodeId = NodeId,
        Node = RegistryNode,
        AsyncRuntime = crate::raft_tasks::TrackedRuntime,
        SnapshotData = tokio::fs::File,
);

/// Log id of this registry's Raft group.
pub type LogId = openraft::LogId<NodeId>;
/// A log entry of this registry's Raft group.
pub type Entry = openraft::Entry<TypeConfig>;
/// Membership as stored by the state machine.
pub type StoredMembership = openraft::StoredMembership<NodeId, RegistryNode>;
/// The group's membership.
pub type Membership = openraft::Membership<NodeId, RegistryNode>;
/// Metadata of a snapshot.
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, RegistryNode>;
/// Vote of this registry's Raft group.
pub type Vote = openraft::Vote<NodeId>;
/// The error openraft expects from a storage implementation.
pub type StorageError = openraft::StorageError<NodeId>;
