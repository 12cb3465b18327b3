//! The Raft type configuration shared by every layer.

use std::io::Cursor;

use crate::model::{Command, CommandResponse};

/// A registry node's id in the Raft group.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// Raft types of the registry: log entries carry [`Command`]s, and applying one yields a
    /// [`CommandResponse`]. Members are addressed by their HTTP address ([`openraft::BasicNode`]).
    pub TypeConfig:
        D = Command,
        R = CommandResponse,
        NodeId = NodeId,
        Node = openraft::BasicNode,
);

/// Log id of this registry's Raft group.
pub type LogId = openraft::LogId<NodeId>;
/// A log entry of this registry's Raft group.
pub type Entry = openraft::Entry<TypeConfig>;
/// Membership as stored by the state machine.
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
/// Metadata of a snapshot.
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;
/// Vote of this registry's Raft group.
pub type Vote = openraft::Vote<NodeId>;
/// The error openraft expects from a storage implementation.
pub type StorageError = openraft::StorageError<NodeId>;
