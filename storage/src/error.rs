//! Errors of the storage layer.

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
    /// The state machine could not be written to disk (by the background persist).
    #[error("persisting the state machine: {0}")]
    Persist(String),
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
        dir: std::path::PathBuf,
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
        dir: std::path::PathBuf,
        /// Bytes free there.
        free: u64,
        /// Bytes that had to be free.
        needed: u64,
    },
    /// A file of the store (the snapshot file) could not be read or written.
    #[error("i/o: {0}")]
    Io(String),
    /// A blocking task of the store (encoding a snapshot) failed.
    #[error("store task: {0}")]
    Task(String),
    /// Stored data is inconsistent.
    #[error("corrupt store: {0}")]
    Corrupt(String),
}

impl From<sled::transaction::TransactionError<StoreError>> for StoreError {
    fn from(e: sled::transaction::TransactionError<StoreError>) -> Self {
        match e {
            sled::transaction::TransactionError::Abort(e) => e,
            sled::transaction::TransactionError::Storage(e) => StoreError::Sled(e),
        }
    }
}
