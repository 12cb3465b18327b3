//! The current snapshot, in a file of its own beside the sled database.
//!
//! A snapshot of a large table is tens of megabytes: stored as a sled value it went through
//! sled's log, and the flush that made it durable held up every log append flushed at the
//! same time. As a file it is written once, from a blocking thread: to a temporary file,
//! synced, then renamed over the current one and the directory synced, so the file is
//! always a whole snapshot, the old one or the new one.
//!
//! Layout: the magic [`MAGIC`], the metadata's length (u64, little endian), the metadata
//! (bincode), the data's length (u64, little endian), the data.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::codec::{decode, encode};
use crate::error::StoreError;
use crate::types::SnapshotMeta;

/// The file's first bytes (and its format's version).
const MAGIC: &[u8; 8] = b"RGSNAP01";
/// The snapshot's file name in the node's data directory.
const FILE_NAME: &str = "raft-snapshot";
/// Where a new snapshot is written before it replaces the current one.
const TMP_NAME: &str = "raft-snapshot.tmp";
/// Largest metadata accepted when reading (it is a few hundred bytes).
const MAX_META: u64 = 1024 * 1024;

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

    /// Makes `meta` and `data` the current snapshot, durably (blocking).
    pub(crate) fn write(&self, meta: &SnapshotMeta, data: &[u8]) -> Result<(), StoreError> {
        let meta = encode(meta)?;
        let tmp = self.dir.join(TMP_NAME);
        let written = write_synced(&tmp, &meta, data);
        if written.is_err() {
            // A snapshot cut short by a full disk would go on holding tens of megabytes.
            if let Err(e) = fs::remove_file(&tmp) {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(error = %e, path = %tmp.display(), "removing an unfinished snapshot file failed");
                }
            }
        }
        written?;
        let path = self.dir.join(FILE_NAME);
        fs::rename(&tmp, &path).map_err(io_err("rename", &path))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("sync", &self.dir))?;
        Ok(())
    }

    /// The current snapshot, if there is one (blocking).
    pub(crate) fn read(&self) -> Result<Option<(SnapshotMeta, Vec<u8>)>, StoreError> {
        let path = self.dir.join(FILE_NAME);
        let mut f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("open", &path)(e)),
        };
        let size = f.metadata().map_err(io_err("stat", &path))?.len();
        let corrupt = |why: &str| StoreError::Corrupt(format!("{}: {why}", path.display()));
        let mut magic = [0u8; 8];
        f.read_exact(&mut magic).map_err(|_| corrupt("too short"))?;
        if &magic != MAGIC {
            return Err(corrupt("not a snapshot file"));
        }
        let read_len = |f: &mut File, limit: u64| -> Result<usize, StoreError> {
            let mut b = [0u8; 8];
            f.read_exact(&mut b).map_err(|_| corrupt("truncated"))?;
            let n = u64::from_le_bytes(b);
            if n > limit {
                return Err(corrupt("a length runs past the end of the file"));
            }
            usize::try_from(n).map_err(|_| corrupt("a length does not fit in memory"))
        };
        let meta_len = read_len(&mut f, MAX_META.min(size))?;
        let mut meta = vec![0u8; meta_len];
        f.read_exact(&mut meta).map_err(|_| corrupt("truncated"))?;
        let data_len = read_len(&mut f, size)?;
        let mut data = vec![0u8; data_len];
        f.read_exact(&mut data).map_err(|_| corrupt("truncated"))?;
        Ok(Some((decode(&meta)?, data)))
    }
}

/// Writes a snapshot file at `path` and syncs it.
fn write_synced(path: &Path, meta: &[u8], data: &[u8]) -> Result<(), StoreError> {
    let mut f = File::create(path).map_err(io_err("create", path))?;
    let len = |n: usize| (n as u64).to_le_bytes();
    for part in [&MAGIC[..], &len(meta.len()), meta, &len(data.len()), data] {
        f.write_all(part).map_err(io_err("write", path))?;
    }
    f.sync_all().map_err(io_err("sync", path))
}

/// Wraps an I/O error with what was done to which file.
fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |e| StoreError::Io(format!("{what} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, LogId, StoredMembership};

    use super::*;

    fn meta(index: u64) -> SnapshotMeta {
        SnapshotMeta {
            last_log_id: Some(LogId::new(CommittedLeaderId::new(2, 1), index)),
            last_membership: StoredMembership::default(),
            snapshot_id: format!("2-{index}-0"),
        }
    }

    #[test]
    fn the_last_snapshot_written_is_read_back() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Io(e.to_string()))?;
        let file = SnapshotFile::new(dir.path());
        assert!(file.read()?.is_none(), "no snapshot yet");
        file.write(&meta(10), b"first")?;
        file.write(&meta(20), &[7u8; 100_000])?;
        let (m, data) = file.read()?.expect("a snapshot");
        assert_eq!(m, meta(20));
        assert_eq!(data, vec![7u8; 100_000]);
        Ok(())
    }

    #[test]
    fn damaged_files_are_refused() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Io(e.to_string()))?;
        let file = SnapshotFile::new(dir.path());
        file.write(&meta(10), b"some data")?;
        let path = dir.path().join(FILE_NAME);
        let whole = fs::read(&path).map_err(|e| StoreError::Io(e.to_string()))?;
        for cut in [3, 12, whole.len() - 1] {
            fs::write(&path, &whole[..cut]).map_err(|e| StoreError::Io(e.to_string()))?;
            assert!(file.read().is_err(), "a file cut at {cut} bytes is refused");
        }
        let mut wrong = whole.clone();
        wrong[0] = b'X';
        fs::write(&path, &wrong).map_err(|e| StoreError::Io(e.to_string()))?;
        assert!(file.read().is_err(), "a file without the magic is refused");
        let mut huge = whole;
        huge[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        fs::write(&path, &huge).map_err(|e| StoreError::Io(e.to_string()))?;
        assert!(
            file.read().is_err(),
            "a length past the end is refused, not allocated"
        );
        Ok(())
    }
}
