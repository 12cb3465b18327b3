//! Encoding of the internal Raft RPCs, shared by the routes that serve them and the network
//! client that sends them: one byte of version ([`RPC_VERSION`]), then the message in
//! bincode. A message of a newer version is refused with a message saying so.
//!
//! The version is that of the messages' own encoding, not the storage format of what they
//! carry: log entries inside an AppendEntries are commands of the format the leader writes,
//! which it keeps to one every member reads ([`super::formats`]); snapshot data is a snapshot
//! file, whose header carries its format.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Upper bound on what decoding one RPC message may build in memory (bincode's limit, which
/// counts decoded sizes). Bodies themselves are bounded far lower, before they are read
/// ([`RpcLimits`]).
pub const RPC_DECODE_LIMIT: u64 = 64 * 1024 * 1024;

/// The largest log entry, encoded: an entry of heartbeats holds at most
/// [`crate::group_commit::ENTRY_MAX_BYTES`] of them, or the heartbeats of one request alone
/// when that is more, and a request's body is at most [`crate::routes::MAX_BODY_BYTES`] of
/// JSON, which its heartbeats encode smaller than (checked in this module's tests); the
/// rest is the entry's log id, time and framing. Administrative and membership entries
/// are far smaller.
pub const MAX_ENTRY_BYTES: u64 = crate::routes::MAX_BODY_BYTES + 4 * 1024;

/// What an RPC carries besides its entries or its snapshot chunk: vote, log ids, the
/// snapshot's meta (its membership).
pub const RPC_OVERHEAD_BYTES: u64 = 64 * 1024;

/// Largest RequestVote body accepted.
pub const VOTE_MAX_BYTES: u64 = RPC_OVERHEAD_BYTES;

/// Largest Raft RPC bodies a node accepts, from what its own Raft settings let a leader
/// send: every node of a group must have the same `max_payload_entries` and snapshot chunk
/// size (a leader with larger ones would be refused with 413).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RpcLimits {
    /// AppendEntries: `max_payload_entries` of the largest entries.
    pub append: u64,
    /// InstallSnapshot: one chunk of `snapshot_max_chunk_size`.
    pub snapshot: u64,
}

impl RpcLimits {
    /// The limits for a leader that sends up to `max_payload_entries` entries per
    /// AppendEntries and snapshot chunks of `snapshot_chunk` bytes.
    pub fn new(max_payload_entries: u64, snapshot_chunk: u64) -> Self {
        Self {
            append: max_payload_entries
                .saturating_mul(MAX_ENTRY_BYTES)
                .saturating_add(RPC_OVERHEAD_BYTES),
            snapshot: snapshot_chunk.saturating_add(RPC_OVERHEAD_BYTES),
        }
    }
}

/// Content type of RPC bodies.
pub const CONTENT_TYPE: &str = "application/x-bincode";

/// Paths of the three Raft RPCs.
pub mod path {
    /// AppendEntries.
    pub const APPEND: &str = "append";
    /// RequestVote.
    pub const VOTE: &str = "vote";
    /// InstallSnapshot (one chunk).
    pub const SNAPSHOT: &str = "snapshot";
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<{ RPC_DECODE_LIMIT as usize }>()
}

/// The version of the RPC messages' encoding this build writes and the newest it reads.
/// Unchanged since storage format 1: nodes of storage formats 1 and 2 talk to each other.
pub const RPC_VERSION: u8 = 1;

/// Why an RPC body could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum RpcCodecError {
    /// The body is empty: no format version.
    #[error("an empty message")]
    Empty,
    /// The message was written in a format this node does not read.
    #[error("the message has RPC version {0}; this node reads 1 to {RPC_VERSION}: upgrade it")]
    Version(u8),
    /// Encoding failed.
    #[error("encode: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    /// The bytes are not a valid message of the expected type.
    #[error("decode: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    /// The message was followed by unexpected bytes.
    #[error("{0} trailing bytes after the message")]
    Trailing(usize),
}

/// Encodes an RPC message.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, RpcCodecError> {
    let mut out = vec![RPC_VERSION];
    bincode::serde::encode_into_std_write(value, &mut out, config())?;
    Ok(out)
}

/// Decodes an RPC message of exactly type `T`. A length prefix larger than what the body holds
/// is an error before anything is allocated (see [`registry_storage::codec::decode_from_slice`]).
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, RpcCodecError> {
    let (&version, bytes) = bytes.split_first().ok_or(RpcCodecError::Empty)?;
    if version == 0 || version > RPC_VERSION {
        return Err(RpcCodecError::Version(version));
    }
    let (value, read) = registry_storage::codec::decode_from_slice(bytes, config())?;
    if read != bytes.len() {
        return Err(RpcCodecError::Trailing(bytes.len() - read));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use openraft::raft::AppendEntriesRequest;
    use openraft::{CommittedLeaderId, EntryPayload, LogId, Vote};
    use registry_storage::types::Entry;
    use registry_storage::{Command, TypeConfig};

    use super::*;
    use crate::routes::MAX_BODY_BYTES;
    use crate::wire::{to_heartbeat, HeartbeatIn, MAX_BATCH};

    /// The most heartbeats of one `shape` whose JSON array fits a request body.
    fn largest_request(shape: &HeartbeatIn) -> (usize, Vec<HeartbeatIn>) {
        let one = serde_json::to_vec(shape).map(|v| v.len() + 1).unwrap_or(1);
        let n = (MAX_BODY_BYTES as usize / one).min(MAX_BATCH);
        let beats: Vec<HeartbeatIn> = (0..n).map(|_| shape.clone()).collect();
        let json = serde_json::to_vec(&beats).map(|v| v.len()).unwrap_or(0);
        (json, beats)
    }

    /// The entry of a request's heartbeats is within [`MAX_ENTRY_BYTES`], from the heartbeats
    /// with the longest fields (255 four-byte characters each) to the shortest, and an
    /// AppendEntries of `max_payload_entries` such entries within [`RpcLimits::append`].
    #[test]
    fn the_largest_requests_make_entries_and_appends_within_the_limits() {
        let long = "𝄞".repeat(255);
        let full = HeartbeatIn {
            topic: Some(long.clone()),
            availability_zone: Some(long.clone()),
            cluster_name: Some(long.clone()),
            rpc_current_version: Some(long.clone()),
            object_current_version: Some(long.clone()),
            ..HeartbeatIn::new(long.clone(), long.clone())
        };
        let limits = RpcLimits::new(8, 3 * 1024 * 1024);
        for shape in [
            full,
            HeartbeatIn::new("a", "b"),
            HeartbeatIn::new(&long, "b"),
        ] {
            let (json, beats) = largest_request(&shape);
            assert!(json as u64 <= MAX_BODY_BYTES, "the request fits a body");
            let beats: Vec<_> = beats
                .into_iter()
                .map(|b| to_heartbeat(b).expect("valid"))
                .collect();
            let entry = Entry {
                log_id: LogId::new(CommittedLeaderId::new(u64::MAX, u64::MAX), u64::MAX),
                payload: EntryPayload::Normal(Command::Heartbeats {
                    at: Utc::now(),
                    beats: beats.into(),
                }),
            };
            let entry_bytes = encode(&entry).map(|v| v.len()).unwrap_or(usize::MAX);
            assert!(
                entry_bytes <= json + 64 && entry_bytes as u64 <= MAX_ENTRY_BYTES,
                "an entry of {entry_bytes} bytes from a body of {json}"
            );
            let append = AppendEntriesRequest::<TypeConfig> {
                vote: Vote::new_committed(u64::MAX, u64::MAX),
                prev_log_id: Some(entry.log_id),
                entries: vec![entry; 8],
                leader_commit: Some(LogId::new(
                    CommittedLeaderId::new(u64::MAX, u64::MAX),
                    u64::MAX,
                )),
            };
            let bytes = encode(&append).map(|v| v.len() as u64).unwrap_or(u64::MAX);
            assert!(bytes <= limits.append, "{bytes} > {}", limits.append);
        }
    }
}
