//! Opening a node's storage: one sled database (one tree per concern), the snapshot file and
//! the disk reserve beside it (see [`headroom`](crate::headroom)).

use std::fs;
use std::path::Path;

use crate::disk::Disk;
use crate::error::StoreError;
use crate::headroom::Headroom;
use crate::log_store::LogStore;
use crate::state_machine::StateMachineStore;

/// Tree of log entries, keyed by big-endian index so sled's order is the log's order.
pub(crate) const TREE_LOG: &str = "raft_log";
/// Tree of the log's metadata: vote, last purged log id, committed log id.
pub(crate) const TREE_LOG_META: &str = "raft_log_meta";
/// Tree of the state machine: service records keyed by the encoded (host, binary), and its
/// metadata (applied log id, membership, next record id, clock).
pub(crate) const TREE_SERVICES: &str = "services";

/// sled's page cache per node (its default is 1 GiB). Reads never go to sled (the table is
/// in memory, recent log entries too), so the cache only speeds up writes to the trees and
/// a lagging follower's log reads.
const CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// Opens (or creates) the database under `dir` and loads the state machine into memory.
///
/// A disk without the room the store keeps (see [`headroom`](crate::headroom)) refuses the
/// start with [`StoreError::DiskFull`] or [`StoreError::LowDiskSpace`] before sled is opened,
/// and the store is left as it was.
pub fn open_store(dir: &Path) -> Result<(LogStore, StateMachineStore), StoreError> {
    fs::create_dir_all(dir)
        .map_err(|e| StoreError::Io(format!("creating {}: {e}", dir.display())))?;
    let headroom = Headroom::new(dir);
    headroom.claim()?;
    headroom.check_start()?;
    remove_unfinished_sled_snapshots(dir)?;
    // Whatever sled writes while it opens fits in the reserve's room.
    headroom.release()?;
    let disk = Disk::new(
        sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_BYTES)
            .open()?,
    );
    headroom.claim()?;
    let sm = StateMachineStore::open(&disk, dir)?;
    let log = LogStore::open(&disk, sm.clone())?;
    Ok((log, sm))
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
    let io = |what: &str, path: &Path, e: std::io::Error| {
        StoreError::Io(format!("{what} {}: {e}", path.display()))
    };
    for entry in fs::read_dir(dir).map_err(|e| io("listing", dir, e))? {
        let entry = entry.map_err(|e| io("listing", dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            let path = entry.path();
            tracing::warn!(path = %path.display(), "removing a snapshot file sled did not finish writing");
            fs::remove_file(&path).map_err(|e| io("removing", &path, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use openraft::storage::RaftLogStorage;
    use openraft::Vote;

    use super::*;

    fn io(e: std::io::Error) -> StoreError {
        StoreError::Io(e.to_string())
    }

    /// Writes a vote, closes the store and leaves the leftover a sled open cut short by a full
    /// disk leaves: an empty `snap.<lsn>.generating`, named after sled's next snapshot.
    async fn store_with_a_leftover(dir: &Path) -> Result<Vote<u64>, StoreError> {
        let vote = Vote::new_committed(3, 2);
        {
            let (mut log, _sm) = open_store(dir)?;
            log.save_vote(&vote)
                .await
                .map_err(|e| StoreError::Io(e.to_string()))?;
        }
        fs::write(dir.join("snap.00000000FFFFFFFF.generating"), b"").map_err(io)?;
        Ok(vote)
    }

    /// Why the leftovers are removed: sled alone refuses such a directory.
    #[tokio::test]
    async fn sled_alone_refuses_a_leftover_snapshot() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(io)?;
        store_with_a_leftover(dir.path()).await?;
        let opened = sled::Config::new().path(dir.path()).open();
        assert!(
            matches!(opened, Err(sled::Error::Corruption { .. })),
            "sled 0.34 takes a leftover .generating file for its snapshot and refuses the \
             database; if it no longer does, remove_unfinished_sled_snapshots can go"
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_store_with_a_leftover_snapshot_opens_as_it_was() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(io)?;
        let vote = store_with_a_leftover(dir.path()).await?;
        let (mut log, _sm) = open_store(dir.path())?;
        let read = log
            .read_vote()
            .await
            .map_err(|e| StoreError::Io(e.to_string()))?;
        assert_eq!(read, Some(vote), "the vote survived");
        assert!(
            !dir.path().join("snap.00000000FFFFFFFF.generating").exists(),
            "the leftover is gone"
        );
        Ok(())
    }
}
