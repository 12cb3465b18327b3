//! Errors of the storage layer.

use std::path::PathBuf;
use std::sync::Arc;

use crate::identity::ClusterId;

/// What can go wrong in the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled failed (I/O error, corruption detected by sled, ...).
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    /// A value could not be encoded.
    #[error("encode: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    /// A stored value could not be decoded.
    #[error("decode: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    /// The state machine could not be written to disk (by the background persist); every
    /// later apply fails with it.
    #[error("persisting the state machine: {0}")]
    Persist(#[source] Arc<StoreError>),
    /// A file of the store (the snapshot file) could not be read or written.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done (`create`, `write`, `sync`, ...).
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A blocking task of the store (encoding a snapshot) panicked or was cancelled.
    #[error("store task: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// Stored data is inconsistent.
    #[error("corrupt store: {0}")]
    Corrupt(String),
    /// Bytes that were written whole no longer match their checksum (or are cut short): a
    /// damaged disk, file or transfer. Never decoded.
    #[error("damaged: {0}")]
    Damaged(String),
    /// Written by a newer format than this build reads.
    #[error(
        "{what} was written in format version {found}, newer than this build reads \
         (up to {supported}): run a newer registry-node"
    )]
    NewerFormat {
        /// What was read.
        what: String,
        /// Its format version.
        found: u8,
        /// The newest version this build reads.
        supported: u8,
    },
    /// The store holds data but no format version: written before versions were recorded.
    #[error(
        "the store in {} holds data but no format version (written by a build older than \
         format version 1); this build cannot read it",
        .0.display()
    )]
    Unversioned(PathBuf),
    /// The store (or a snapshot) belongs to another cluster.
    #[error("cluster mismatch: this store belongs to cluster {ours}, not {theirs}")]
    ClusterMismatch {
        /// The store's cluster.
        ours: ClusterId,
        /// The other one.
        theirs: ClusterId,
    },
    /// An operation that needs an empty store (a restore) found data.
    #[error("{0}")]
    NotEmpty(String),
}

impl StoreError {
    /// Wraps an I/O error with what was done to which path.
    pub fn io(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| StoreError::Io { what, path, source }
    }

    /// Whether the error comes from a full disk (ENOSPC), directly or through sled.
    pub fn is_no_space(&self) -> bool {
        match self {
            StoreError::Io { source, .. } => source.raw_os_error() == Some(ENOSPC),
            StoreError::Sled(sled::Error::Io(e)) => e.raw_os_error() == Some(ENOSPC),
            StoreError::Persist(inner) => inner.is_no_space(),
            _ => false,
        }
    }
}

/// `ENOSPC` on every Unix the project runs on.
const ENOSPC: i32 = 28;

impl From<sled::transaction::TransactionError<StoreError>> for StoreError {
    fn from(e: sled::transaction::TransactionError<StoreError>) -> Self {
        match e {
            sled::transaction::TransactionError::Abort(e) => e,
            sled::transaction::TransactionError::Storage(e) => StoreError::Sled(e),
        }
    }
}
