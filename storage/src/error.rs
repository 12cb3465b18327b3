//! Errors of the storage layer.

use std::fmt;
use std::path::PathBuf;

use crate::ids::ClusterId;
use crate::types::{LogId, SnapshotMeta};

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
    /// Bytes that were written whole no longer match their checksum or their layout (or are
    /// cut short): a damaged disk, file or transfer. Never decoded.
    #[error("damaged: {what}: {kind}")]
    Damaged {
        /// What was read.
        what: Stored,
        /// What is wrong with it.
        kind: DamageKind,
    },
    /// A value decoded whole, with bytes left over: it was not written as the type it is read
    /// as (its checksum, where it has one, held).
    #[error("corrupt store: {extra} trailing bytes after a stored value of {len} bytes")]
    TrailingBytes {
        /// Bytes left over.
        extra: usize,
        /// Bytes of the value, those included.
        len: usize,
    },
    /// A snapshot header too long for the 4-byte length in front of it (it is a few hundred
    /// bytes); nothing was written.
    #[error("a snapshot header of {len} bytes is too long for its 4-byte length")]
    SnapshotHeaderTooLarge {
        /// The encoded header's length.
        len: usize,
    },
    /// A snapshot's records encoded to another size than was measured just before and
    /// written in front of them; the snapshot is not used.
    #[error("a snapshot's records measured {measured} bytes but encoded to {written}")]
    SnapshotSizeChanged {
        /// The size measured first.
        measured: usize,
        /// The size written.
        written: usize,
    },
    /// Writing or reading a snapshot's data failed where it has no path of its own (an
    /// encoder's output, a received snapshot's unnamed file); a named file's error is
    /// [`StoreError::Io`].
    #[error("{what} a snapshot's data failed: {source}")]
    SnapshotData {
        /// `writing`, `reading`.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
    /// Snapshot data whose header describes another snapshot than the metadata it was stored
    /// or received with.
    #[error(
        "snapshot data {} reflects log id {:?} but its metadata says {} at {:?}{}",
        found.snapshot_id,
        found.last_log_id,
        expected.snapshot_id,
        expected.last_log_id,
        membership_note(found, expected)
    )]
    SnapshotMetaMismatch {
        /// What the data's header says.
        found: Box<SnapshotMeta>,
        /// The metadata it came with.
        expected: Box<SnapshotMeta>,
    },
    /// A snapshot that is of no cluster, or offered to a store of none; only a snapshot of
    /// the store's own cluster is installed (another one is [`StoreError::ClusterMismatch`]).
    #[error(transparent)]
    UnknownCluster(Box<UnknownCluster>),
    /// A store of a known format lacks part of its identity (see [`crate::identity`]).
    #[error("corrupt store: the store's metadata has no {field}")]
    MissingIdentity {
        /// What is missing.
        field: IdentityField,
    },
    /// The node's snapshot file is damaged, and the state cannot be rebuilt without it: the
    /// log is purged, or the store was restored from a backup (see
    /// [`crate::state_machine`]).
    #[error(transparent)]
    NeededSnapshotDamaged(Box<NeededSnapshotDamaged>),
    /// The node's snapshot file is missing (nor can a store of format 4 or older make one of
    /// its records), and the state cannot be rebuilt without it.
    #[error(
        "corrupt store: {} is missing, and this node's state cannot be rebuilt without it: \
         {needed_for}. Move the data directory aside and start the node again: it returns as \
         a new incarnation and gets the state from the leader",
        path.display()
    )]
    NeededSnapshotMissing {
        /// Where the snapshot file should be.
        path: PathBuf,
        /// Why the state needs it.
        needed_for: NeededFor,
    },
    /// The records tree of a store of format 4 or older is of a write that did not finish,
    /// and the snapshot file (or the empty state, without one) is older than the log's purge
    /// point: the state cannot be rebuilt here (see `legacy_records`).
    #[error(
        "corrupt store: the records on disk are of a write that did not finish, and the \
         snapshot file reflects {snapshot_at:?} while the log is purged up to {purged_to:?}. \
         Move the data directory aside and start the node again: it returns as a new \
         incarnation and gets the state from the leader"
    )]
    RecordsIncomplete {
        /// Log id the snapshot file reflects (`None`: no snapshot file).
        snapshot_at: Option<crate::types::LogId>,
        /// Log id the log is purged up to.
        purged_to: Option<crate::types::LogId>,
    },
    /// Written by a newer format than this build reads.
    #[error(
        "{what} was written in format version {found}, newer than this build reads \
         (up to {supported}): run a newer registry-node"
    )]
    NewerFormat {
        /// What was read.
        what: Stored,
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
    /// A restore, which needs an empty data directory, found it holding something.
    #[error(
        "{} is not empty: a backup is restored into an empty data directory only (move the \
         old one aside first)",
        dir.display()
    )]
    NotEmpty {
        /// The data directory.
        dir: PathBuf,
    },
}

/// A snapshot refused because it is of no cluster, or the store is of none
/// ([`StoreError::UnknownCluster`]).
#[derive(Debug, thiserror::Error)]
#[error(
    "refusing snapshot {snapshot_id} of {} on a store of {}",
    cluster_name(theirs),
    cluster_name(ours)
)]
pub struct UnknownCluster {
    /// The snapshot's id.
    pub snapshot_id: String,
    /// The store's cluster.
    pub ours: Option<ClusterId>,
    /// The snapshot's cluster.
    pub theirs: Option<ClusterId>,
}

/// A damaged snapshot file the node's state cannot be rebuilt without
/// ([`StoreError::NeededSnapshotDamaged`]).
#[derive(Debug, thiserror::Error)]
#[error(
    "corrupt store: {} is damaged ({source}), and this node's state cannot be rebuilt \
     without it: {needed_for}. Move the data directory aside and start the node again: it \
     returns as a new incarnation and gets the state from the leader",
    path.display()
)]
pub struct NeededSnapshotDamaged {
    /// The snapshot file.
    pub path: PathBuf,
    /// Why the state needs it.
    pub needed_for: NeededFor,
    /// How the file is damaged ([`StoreError::Damaged`] or [`StoreError::NewerFormat`]).
    #[source]
    pub source: StoreError,
}

/// Why a node's state cannot be rebuilt without its snapshot file: the state machine's
/// state on disk is that file and the log after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NeededFor {
    /// The log is purged up to this log id: what it held is only in the file.
    Purged(LogId),
    /// The store was restored from a backup: the records restored are only in the file.
    Restored,
}

impl fmt::Display for NeededFor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NeededFor::Purged(to) => write!(f, "the log is purged up to {to}"),
            NeededFor::Restored => f.write_str("the store was restored from a backup"),
        }
    }
}

/// What was read when it was found damaged or of a newer format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// A value stored in sled, in its envelope (see [`crate::codec`]).
    Value,
    /// A snapshot: the node's snapshot file, one received from the leader, or a backup (see
    /// [`crate::snapshot`]).
    Snapshot,
    /// The format version of the store in this data directory.
    Store(PathBuf),
}

impl fmt::Display for Stored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stored::Value => f.write_str("a stored value"),
            Stored::Snapshot => f.write_str("the snapshot"),
            Stored::Store(dir) => write!(f, "the store in {}", dir.display()),
        }
    }
}

/// How bytes that were written whole are damaged ([`StoreError::Damaged`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DamageKind {
    /// No bytes at all.
    Empty,
    /// Fewer bytes than the fixed parts of the layout.
    TooShort {
        /// Bytes there are.
        len: usize,
        /// Bytes of the fixed parts.
        min: usize,
    },
    /// Not starting with the snapshot magic ([`crate::snapshot::MAGIC`]).
    WrongMagic,
    /// Format version 0, which no build writes.
    VersionZero,
    /// The checksum stored with the bytes is not theirs.
    ChecksumMismatch {
        /// Bytes checked, the checksum included.
        len: usize,
        /// The checksum stored.
        stored: u32,
        /// The checksum of the bytes.
        computed: u32,
    },
    /// A length in the layout runs past the end of the bytes.
    LengthPastEnd,
    /// A snapshot header longer than any this build writes.
    HeaderTooLarge {
        /// The length it claims.
        len: usize,
        /// The longest accepted.
        max: usize,
    },
    /// A records length this machine cannot address.
    RecordsTooLarge {
        /// The length it claims.
        len: u64,
    },
    /// Bytes after the snapshot's records, before its checksum.
    BytesAfterRecords {
        /// How many.
        extra: usize,
    },
    /// A snapshot holding another number of records than its header counts.
    RecordCount {
        /// What the header counts.
        header: u64,
        /// What the snapshot holds.
        found: u64,
    },
}

impl fmt::Display for DamageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DamageKind::Empty => f.write_str("no bytes at all"),
            DamageKind::TooShort { len, min } => {
                write!(
                    f,
                    "{len} bytes, shorter than the {min} bytes of its fixed parts"
                )
            }
            DamageKind::WrongMagic => f.write_str("not a registry snapshot (wrong magic)"),
            DamageKind::VersionZero => f.write_str("format version 0, which no build writes"),
            DamageKind::ChecksumMismatch {
                len,
                stored,
                computed,
            } => write!(
                f,
                "checksum mismatch over {len} bytes (stored {stored:08x}, computed {computed:08x})"
            ),
            DamageKind::LengthPastEnd => f.write_str("a length runs past the end"),
            DamageKind::HeaderTooLarge { len, max } => {
                write!(f, "a {len}-byte header (at most {max} accepted)")
            }
            DamageKind::RecordsTooLarge { len } => {
                write!(
                    f,
                    "{len} bytes of records, more than this machine addresses"
                )
            }
            DamageKind::BytesAfterRecords { extra } => write!(f, "{extra} bytes after the records"),
            DamageKind::RecordCount { header, found } => write!(
                f,
                "the header counts {header} records, the snapshot holds {found}"
            ),
        }
    }
}

/// A part of a store's identity (see [`crate::identity`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityField {
    /// Its incarnation, written with its format version when the store was created.
    Incarnation,
    /// Its cluster id, once adopted.
    ClusterId,
}

impl fmt::Display for IdentityField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentityField::Incarnation => f.write_str("incarnation"),
            IdentityField::ClusterId => f.write_str("cluster id"),
        }
    }
}

/// What a [`StoreError::SnapshotMetaMismatch`] adds when the two differ in membership too.
fn membership_note(found: &SnapshotMeta, expected: &SnapshotMeta) -> &'static str {
    if found.last_membership == expected.last_membership {
        ""
    } else {
        ", with another membership"
    }
}

/// `cluster <id>`, or `no cluster`.
fn cluster_name(id: &Option<ClusterId>) -> String {
    match id {
        Some(id) => format!("cluster {id}"),
        None => "no cluster".to_string(),
    }
}

impl StoreError {
    /// Wraps an I/O error with what was done to which path.
    pub fn io(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| StoreError::Io { what, path, source }
    }

    /// [`StoreError::SnapshotData`] of `what`.
    pub fn snapshot_data(what: &'static str) -> impl FnOnce(std::io::Error) -> Self {
        move |source| StoreError::SnapshotData { what, source }
    }

    /// Whether the error comes from a full disk (ENOSPC), directly or through sled.
    pub fn is_no_space(&self) -> bool {
        match self {
            StoreError::Io { source, .. } => source.raw_os_error() == Some(ENOSPC),
            StoreError::Sled(sled::Error::Io(e)) => e.raw_os_error() == Some(ENOSPC),
            StoreError::DiskFull { .. } | StoreError::LowDiskSpace { .. } => true,
            _ => false,
        }
    }
}

/// `ENOSPC` on every Unix the project runs on.
const ENOSPC: i32 = 28;

#[cfg(test)]
mod tests {
    use super::*;

    /// A `StoreError` is in every result of the apply path, and the node's error embeds it
    /// beside more fields: large payloads go behind a `Box` so that both stay small (clippy's
    /// `result_large_err` refuses errors of 128 bytes and more).
    #[test]
    fn a_store_error_stays_small() {
        let size = std::mem::size_of::<StoreError>();
        assert!(
            size <= 64,
            "StoreError is {size} bytes: box the new large variant"
        );
    }
}
