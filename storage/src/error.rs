//! Errors of the storage layer.

use std::path::PathBuf;
use std::sync::Arc;

use crate::ids::ClusterId;

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
    /// The disk holding the data directory has no room for the node to start: it cannot
    /// hold the reserve that keeps room for opening the store (see [`crate::headroom`]).
    /// Nothing in the store was changed; the node starts once that much space is free.
    #[error(
        "the disk holding {} is full: the node needs {} KiB free there to open its store, \
         which is left as it was; free some space and start it again ({error})",
        dir.display(),
        needed / 1024
    )]
    DiskFull {
        /// The data directory.
        dir: PathBuf,
        /// Bytes that must be free.
        needed: u64,
        /// What the filesystem said.
        error: std::io::Error,
    },
    /// The disk holding the data directory has too little free space for the node to start
    /// (see [`crate::headroom`]): the start was refused before the database was opened.
    #[error(
        "the disk holding {} is full: {} KiB free, and the node needs {} KiB free there beside \
         its reserve to start; its store is left as it was: free some space and start it again",
        dir.display(),
        free / 1024,
        needed / 1024
    )]
    LowDiskSpace {
        /// The data directory.
        dir: PathBuf,
        /// Bytes free there.
        free: u64,
        /// Bytes that had to be free.
        needed: u64,
    },
    /// A thread of the store could not be started.
    #[error("starting a thread: {0}")]
    Spawn(#[source] std::io::Error),
    /// A thread of the store did not stop within the time it was given (a write or a flush
    /// that does not return, see [`crate::disk`]); it is left running.
    #[error("the {thread} thread did not stop within {waited:?}")]
    NotStopped {
        /// The thread's name.
        thread: &'static str,
        /// How long it was waited for.
        waited: std::time::Duration,
    },
    /// A thread of the store ended without finishing its work (it panicked).
    #[error("the {thread} thread ended without finishing its work")]
    ThreadEnded {
        /// The thread's name.
        thread: &'static str,
    },
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
    /// The data directory is locked by another process (another node started on it) for
    /// longer than a store of this process that was just closed would hold it.
    #[error(
        "{} is in use: its database stayed locked for {waited:?}; another registry-node (or \
         another process) has it open",
        dir.display()
    )]
    InUse {
        /// The data directory.
        dir: PathBuf,
        /// How long the open waited.
        waited: std::time::Duration,
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
            StoreError::DiskFull { .. } | StoreError::LowDiskSpace { .. } => true,
            _ => false,
        }
    }
}

/// `ENOSPC` on every Unix the project runs on.
const ENOSPC: i32 = 28;
