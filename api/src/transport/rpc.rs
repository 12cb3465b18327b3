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

/// Largest Raft RPC body accepted (an append batch or a snapshot chunk).
pub const MAX_RPC_BYTES: u64 = 64 * 1024 * 1024;

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
    bincode::config::standard().with_limit::<{ MAX_RPC_BYTES as usize }>()
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
