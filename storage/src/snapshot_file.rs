//! The current snapshot, in a file of its own beside the sled database.
//!
//! A snapshot of a large table is tens of megabytes: stored as a sled value it went through
//! sled's log, and the flush that made it durable held up every log append flushed at the
//! same time. As a file it is written once, from a blocking thread: to a temporary file,
//! synced, then renamed over the current one and the directory synced, so the file is
//! always a whole snapshot, the old one or the new one.
//!
//! The file holds exactly a snapshot blob ([`crate::snapshot`]), which checks itself: a file
//! whose bytes changed is refused when read, and moved aside ([`SnapshotFile::quarantine`]).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::error::StoreError;

/// The snapshot's file name in the node's data directory.
const FILE_NAME: &str = "raft-snapshot";
/// Where a new snapshot is written before it replaces the current one.
const TMP_NAME: &str = "raft-snapshot.tmp";
/// Where a damaged snapshot file is moved.
const DAMAGED_NAME: &str = "raft-snapshot.damaged";

/// The snapshot file of one node.
#[derive(Debug, Clone)]
pub(crate) struct SnapshotFile {
    dir: PathBuf,
}

impl SnapshotFile {
    /// The snapshot file in `dir`.
    pub(crate) fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    /// The file's path.
    pub(crate) fn path(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }

    /// Makes `blob` the current snapshot, durably (blocking).
    pub(crate) fn write(&self, blob: &[u8]) -> Result<(), StoreError> {
        let tmp = self.dir.join(TMP_NAME);
        let mut f = File::create(&tmp).map_err(StoreError::io("create", &tmp))?;
        f.write_all(blob).map_err(StoreError::io("write", &tmp))?;
        f.sync_all().map_err(StoreError::io("sync", &tmp))?;
        drop(f);
        let path = self.path();
        fs::rename(&tmp, &path).map_err(StoreError::io("rename", &path))?;
        self.sync_dir()
    }

    /// The current snapshot's bytes, if there is one (blocking); not checked here.
    pub(crate) fn read(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.path();
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io("read", path)(e)),
        }
    }

    /// Whether a snapshot file exists.
    pub(crate) fn exists(&self) -> bool {
        self.path().exists()
    }

    /// Moves a damaged snapshot file aside (replacing an older damaged one), so that it is
    /// neither read nor served again and can still be looked at; returns where it went.
    pub(crate) fn quarantine(&self) -> Result<PathBuf, StoreError> {
        let to = self.dir.join(DAMAGED_NAME);
        let from = self.path();
        fs::rename(&from, &to).map_err(StoreError::io("rename", &from))?;
        self.sync_dir()?;
        Ok(to)
    }

    fn sync_dir(&self) -> Result<(), StoreError> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(StoreError::io("sync", &self.dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_snapshot_written_is_read_back_and_a_damaged_one_moved_aside(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let file = SnapshotFile::new(dir.path());
        assert!(file.read()?.is_none(), "no snapshot yet");
        file.write(b"first")?;
        file.write(&[7u8; 100_000])?;
        assert_eq!(file.read()?, Some(vec![7u8; 100_000]));
        let moved = file.quarantine()?;
        assert!(
            file.read()?.is_none(),
            "a quarantined file is not read again"
        );
        assert_eq!(fs::read(moved)?, vec![7u8; 100_000], "kept for inspection");
        Ok(())
    }
}
