//! Opening a node's storage: one sled database (one tree per concern), the snapshot file and
//! the disk reserve beside it (see [`headroom`](crate::headroom)); and preparing an empty store
//! from a backup ([`restore`]).

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::disk::Disk;
use crate::error::StoreError;
use crate::headroom::Headroom;
use crate::identity::{Incarnation, RestoredFrom, StoreIdentity};
use crate::legacy_records;
use crate::log_store::{self, LogStore};
use crate::snapshot::{self, SnapshotInfo, SnapshotSource};
use crate::snapshot_file::SnapshotFile;
use crate::state::ServicesState;
use crate::state_machine::StateMachineStore;
use crate::trees::{TREE_LOG, TREE_LOG_META};
use crate::types::StoredMembership;

/// sled's page cache per node (its default is 1 GiB). Reads never go to sled (the table is
/// in memory, recent log entries too), so the cache only speeds up the log's writes and a
/// lagging follower's log reads.
const CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// A node's opened storage.
#[derive(Debug, Clone)]
pub struct Store {
    /// The Raft log.
    pub log: LogStore,
    /// The state machine.
    pub sm: StateMachineStore,
    /// Which cluster the store belongs to, and its incarnation.
    pub identity: StoreIdentity,
    /// The data directory it is kept in.
    pub dir: std::path::PathBuf,
}

/// Opens sled on `dir`, keeping the disk's headroom: the reserve is claimed (a disk that
/// cannot hold it, or without room to run beside it, refuses the start before sled is
/// touched), released just while sled opens, and claimed again.
fn open_db(dir: &Path) -> Result<Disk, StoreError> {
    fs::create_dir_all(dir).map_err(StoreError::io("create", dir))?;
    let headroom = Headroom::new(dir);
    headroom.claim()?;
    headroom.check_start()?;
    remove_unfinished_sled_snapshots(dir)?;
    // Whatever sled writes while it opens fits in the reserve's room.
    headroom.release()?;
    let db = open_sled(dir)?;
    headroom.claim()?;
    Ok(Disk::new(db))
}

/// How long an open waits for the lock on a data directory that is in use.
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// Opens sled on `dir`, waiting up to [`LOCK_WAIT`] while another holder has its lock.
///
/// sled takes an exclusive lock on its database file, released when the last of its
/// threads lets go of the file. After a store of this process is dropped, sled's background
/// writers still hold it for a moment, so that reopening the directory at once (a restore
/// followed by a start, a node restarted in place) can find it taken. A lock still held
/// after the wait is another process using the directory: [`StoreError::InUse`].
fn open_sled(dir: &Path) -> Result<sled::Db, StoreError> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_BYTES)
            .open()
        {
            Err(sled::Error::Io(e)) if is_lock_taken(&e) => {
                if Instant::now() >= deadline {
                    return Err(StoreError::InUse {
                        dir: dir.to_path_buf(),
                        waited: LOCK_WAIT,
                    });
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return Ok(other?),
        }
    }
}

/// Whether sled's open failed because its lock file is held (sled reports it as an
/// `Other` I/O error with this text, see its `Config::open`).
fn is_lock_taken(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::Other && e.to_string().starts_with("could not acquire lock")
}

/// Removes the snapshot files sled was still writing when one of its opens stopped short (a
/// kill, or a full disk before the disk reserve was kept): `snap.<lsn>.generating`.
///
/// sled 0.34 writes such a file, syncs it and renames it to `snap.<lsn>`, and only then
/// removes older snapshots; but when it opens it takes every `snap.*` file (skipping only
/// `*.in___motion`), keeps the last by name, which a leftover `.generating` is, and refuses the
/// whole database as corrupt when that file is partial (`empty/corrupt snapshot file found`).
/// Without the leftover, sled opens from the snapshot it had before that open (or from none)
/// and reads its log from there, exactly as that open began: nothing is lost. Runs before sled
/// opens; a directory without leftovers is untouched.
fn remove_unfinished_sled_snapshots(dir: &Path) -> Result<(), StoreError> {
    for entry in fs::read_dir(dir).map_err(StoreError::io("list", dir))? {
        let entry = entry.map_err(StoreError::io("list", dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            let path = entry.path();
            tracing::warn!(path = %path.display(), "removing a snapshot file sled did not finish writing");
            fs::remove_file(&path).map_err(StoreError::io("remove", &path))?;
        }
    }
    Ok(())
}

/// How a store runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// How many derived events the node keeps for watchers (see [`crate::event_log`]).
    pub events_kept: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            events_kept: crate::event_log::DEFAULT_EVENTS_KEPT,
        }
    }
}

/// Opens (or creates) the store under `dir` and loads the state machine into memory. A new
/// store gets a new incarnation; a store of a newer format is refused.
pub fn open_store(dir: &Path) -> Result<Store, StoreError> {
    open_store_with(dir, &StoreOptions::default())
}

/// [`open_store`] with `options`.
pub fn open_store_with(dir: &Path, options: &StoreOptions) -> Result<Store, StoreError> {
    let disk = open_db(dir)?;
    let db = disk.db();
    let meta = db.open_tree(TREE_LOG_META)?;
    let fresh = meta.is_empty()
        && db.open_tree(TREE_LOG)?.is_empty()
        && legacy_records::open(&disk)?.is_none_or(|t| t.is_empty())
        && !StateMachineStore::has_snapshot_file(dir);
    let identity = StoreIdentity::open(&disk, &meta, dir, fresh)?;
    let last_purged = log_store::read_last_purged(&meta)?;
    let sm = StateMachineStore::open(
        &disk,
        dir,
        identity.clone(),
        last_purged,
        options.events_kept,
    )?;
    let log = LogStore::open(&disk, sm.clone())?;
    Ok(Store {
        log,
        sm,
        identity,
        dir: dir.to_path_buf(),
    })
}

/// What [`restore`] prepared.
#[derive(Debug, Clone)]
pub struct RestoreSummary {
    /// The backup it was prepared from.
    pub backup: SnapshotInfo,
    /// The new store's incarnation.
    pub incarnation: Incarnation,
}

/// Prepares a new store in `dir` (which must not exist or be empty) from the backup `bytes`:
/// every record, the registry clock and the id counter, with no log and no membership. A
/// node started on it bootstraps a **new** cluster (a new cluster id) together with the
/// other members restored from the same backup. A damaged backup is refused before `dir` is
/// touched.
pub fn restore(dir: &Path, bytes: &[u8]) -> Result<RestoreSummary, StoreError> {
    let (info, records) = snapshot::decode(bytes)?;
    if let Ok(mut entries) = std::fs::read_dir(dir) {
        if entries.next().is_some() {
            return Err(StoreError::NotEmpty {
                dir: dir.to_path_buf(),
            });
        }
    }
    let disk = open_db(dir)?;
    let meta = disk.db().open_tree(TREE_LOG_META)?;
    let identity = StoreIdentity::open(&disk, &meta, dir, true)?;
    let h = &info.header;
    let state = ServicesState::from_parts(
        None,
        StoredMembership::default(),
        h.next_id,
        h.clock,
        h.settings,
        records,
    );
    // The state is the snapshot file's, of no cluster yet: it is served once it is rebuilt as
    // a snapshot of the cluster the restored members bootstrap.
    let source = SnapshotSource::of(&state);
    let file = SnapshotFile::new(dir);
    file.stage(|out| source.encode_to(out, None, format!("restored-{}", info.checksum)))?;
    file.commit()?;
    let from = RestoredFrom {
        cluster_id: h.cluster_id,
        last_log_id: h.last_log_id,
        checksum: info.checksum,
    };
    StoreIdentity::set_restored_from(&disk, &meta, &from)?;
    Ok(RestoreSummary {
        incarnation: identity.incarnation(),
        backup: info,
    })
}

#[cfg(test)]
mod tests {
    use openraft::storage::RaftLogStorage;
    use openraft::Vote;

    use super::*;

    fn io(e: std::io::Error) -> StoreError {
        StoreError::io("test", "")(e)
    }

    /// Writes a vote, closes the store and leaves the leftover a sled open cut short by a full
    /// disk leaves: an empty `snap.<lsn>.generating`, named after sled's next snapshot.
    async fn store_with_a_leftover(dir: &Path) -> anyhow::Result<Vote<u64>> {
        let vote = Vote::new_committed(3, 2);
        {
            let mut log = open_store(dir)?.log;
            log.save_vote(&vote).await?;
        }
        fs::write(dir.join("snap.00000000FFFFFFFF.generating"), b"")?;
        Ok(vote)
    }

    /// Why the leftovers are removed: sled alone refuses such a directory.
    #[tokio::test]
    async fn sled_alone_refuses_a_leftover_snapshot() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        store_with_a_leftover(dir.path()).await?;
        let opened = super::open_sled(dir.path());
        assert!(
            matches!(
                opened,
                Err(StoreError::Sled(sled::Error::Corruption { .. }))
            ),
            "sled 0.34 takes a leftover .generating file for its snapshot and refuses the \
             database; if it no longer does, remove_unfinished_sled_snapshots can go"
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_store_with_a_leftover_snapshot_opens_as_it_was() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let vote = store_with_a_leftover(dir.path()).await?;
        let mut log = open_store(dir.path())?.log;
        let read = log.read_vote().await?;
        assert_eq!(read, Some(vote), "the vote survived");
        assert!(
            !dir.path().join("snap.00000000FFFFFFFF.generating").exists(),
            "the leftover is gone"
        );
        Ok(())
    }

    /// A directory whose store is open stays refused, with a typed error naming it, once
    /// the wait is over; dropped, it opens again at once.
    #[tokio::test]
    async fn a_store_in_use_is_refused_after_the_wait() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(io)?;
        let first = open_store(dir.path())?;
        let started = std::time::Instant::now();
        let second = open_store(dir.path());
        assert!(
            matches!(&second, Err(StoreError::InUse { dir: d, .. }) if d == dir.path()),
            "a second open of a directory in use: {second:?}"
        );
        assert!(started.elapsed() >= super::LOCK_WAIT, "it waited first");
        drop(first);
        open_store(dir.path())?;
        Ok(())
    }
}
