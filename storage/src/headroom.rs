//! Room kept on the node's disk for opening its store: a reserve file in the data directory,
//! and free space beside it that a start needs.
//!
//! Why: sled 0.34 writes a snapshot of its page table every time it opens a database that
//! changed, to `snap.<lsn>.generating`, renamed to `snap.<lsn>` once whole. When that write
//! fails (a full disk) the partial file stays behind, and the next open takes it for the
//! newest snapshot and refuses the whole database as corrupt: a node restarted on a full disk
//! tore its store.
//!
//! How: [`open_store`](crate::open_store) claims the reserve of [`RESERVE_BYTES`] before it
//! touches sled (writing it when it is missing or short: a disk that cannot hold it refuses the
//! start with [`StoreError::DiskFull`]), and refuses the start with
//! [`StoreError::LowDiskSpace`] unless [`START_FREE_BYTES`] more are free
//! (checked before sled is touched): a node is not started on a disk that is still full only to
//! stop again at its first write. Then it releases the reserve just before sled opens, so that
//! whatever sled writes while it opens fits, and claims it again once sled is open. The room is
//! held while the node runs: when the disk fills, the node stops on its fatal storage error
//! with the reserve in place (see [`disk`](crate::disk) for what a failed write does), and the
//! next start has that room for sled's open once the disk has room for the node to run. Free
//! space is counted as the filesystem reports it to unprivileged users; a quota is not seen.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::error::StoreError;

/// Size of the reserve: room for sled's writes while opening (its snapshot, 200 KiB at
/// 100,000 services, and the zeroed tail of its last log segment, 512 KiB at most) with a
/// wide margin.
pub const RESERVE_BYTES: u64 = 4 * 1024 * 1024;
/// Free space, beside the reserve, that a start needs: room to run for a while.
pub const START_FREE_BYTES: u64 = 4 * 1024 * 1024;
/// The reserve's file name in the node's data directory.
const FILE_NAME: &str = "disk-reserve";
/// Bytes written per `write` call while claiming.
const CHUNK: usize = 64 * 1024;

/// The headroom of one data directory: its reserve file and the free space beside it.
#[derive(Debug, Clone)]
pub(crate) struct Headroom {
    /// The data directory (named in errors; its filesystem is the one measured).
    dir: PathBuf,
    /// The reserve file in it.
    reserve: PathBuf,
}

impl Headroom {
    /// The headroom of the data directory `dir`.
    pub(crate) fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            reserve: dir.join(FILE_NAME),
        }
    }

    /// Refuses a start with less than [`START_FREE_BYTES`] free (beside the reserve, once it
    /// is claimed).
    pub(crate) fn check_start(&self) -> Result<(), StoreError> {
        self.ensure_free(START_FREE_BYTES)
    }

    /// Fails with [`StoreError::LowDiskSpace`] unless `needed` bytes are free.
    fn ensure_free(&self, needed: u64) -> Result<(), StoreError> {
        let free = fs2::available_space(&self.dir).map_err(|e| self.error("statvfs", e))?;
        if free < needed {
            return Err(StoreError::LowDiskSpace {
                dir: self.dir.clone(),
                free,
                needed,
            });
        }
        Ok(())
    }

    /// Makes sure the reserve holds its [`RESERVE_BYTES`] on disk: writes it (and syncs it)
    /// unless the file already has that size. When the disk cannot hold it, what was written
    /// is removed again (a refused start holds no space) and the error is
    /// [`StoreError::DiskFull`].
    pub(crate) fn claim(&self) -> Result<(), StoreError> {
        match fs::metadata(&self.reserve) {
            Ok(m) if m.len() == RESERVE_BYTES => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(self.error("stat", e)),
        }
        self.write_reserve().map_err(|e| {
            if let Err(rm) = fs::remove_file(&self.reserve) {
                if rm.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(error = %rm, path = %self.reserve.display(), "removing a partly written disk reserve failed");
                }
            }
            self.error("write", e)
        })
    }

    /// Frees the reserve's room for the writes that follow (sled's open).
    pub(crate) fn release(&self) -> Result<(), StoreError> {
        match fs::remove_file(&self.reserve) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.error("remove", e)),
        }
    }

    /// Writes the whole reserve. Its bytes are pseudo-random, so that no filesystem stores it
    /// as a hole (zeros) or compresses it to less than its size.
    fn write_reserve(&self) -> io::Result<()> {
        let mut f = File::create(&self.reserve)?;
        let mut buf = vec![0u8; CHUNK];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut left = RESERVE_BYTES;
        while left > 0 {
            for word in buf.chunks_exact_mut(8) {
                // xorshift64
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                word.copy_from_slice(&x.to_le_bytes());
            }
            let n = left.min(CHUNK as u64) as usize;
            f.write_all(&buf[..n])?;
            left -= n as u64;
        }
        f.sync_all()
    }

    /// `e`, from doing `what` to the reserve or the directory, as the store's error.
    fn error(&self, what: &'static str, e: io::Error) -> StoreError {
        if is_disk_full(&e) {
            StoreError::DiskFull {
                dir: self.dir.clone(),
                needed: RESERVE_BYTES,
                error: e,
            }
        } else {
            StoreError::io(what, &self.reserve)(e)
        }
    }
}

/// The size of the filesystem holding a data directory and the room left on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskSpace {
    /// Bytes free to unprivileged users (what the node may still write; the reserve file is
    /// not counted as free).
    pub available: u64,
    /// Size of the filesystem, in bytes.
    pub total: u64,
}

/// The [`DiskSpace`] of the filesystem that holds `dir` (statvfs), for `/metrics`.
pub fn disk_space(dir: &Path) -> io::Result<DiskSpace> {
    Ok(DiskSpace {
        available: fs2::available_space(dir)?,
        total: fs2::total_space(dir)?,
    })
}

/// Whether `e` says the disk (or the user's quota on it) is full.
fn is_disk_full(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(e: io::Error) -> StoreError {
        StoreError::io("test", "")(e)
    }

    #[test]
    fn a_claim_writes_the_whole_reserve_once_and_a_release_frees_it() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(io)?;
        let headroom = Headroom::new(dir.path());
        let path = dir.path().join(FILE_NAME);
        headroom.claim()?;
        let meta = fs::metadata(&path).map_err(io)?;
        assert_eq!(meta.len(), RESERVE_BYTES, "the reserve has its size");
        let bytes = fs::read(&path).map_err(io)?;
        assert!(
            bytes.iter().filter(|b| **b == 0).count() < bytes.len() / 100,
            "the reserve is not zeros (which a filesystem may store as a hole)"
        );
        let modified = meta.modified().map_err(io)?;
        headroom.claim()?;
        assert_eq!(
            fs::metadata(&path).map_err(io)?.modified().map_err(io)?,
            modified,
            "a whole reserve is not written again"
        );
        headroom.release()?;
        assert!(!path.exists(), "released");
        headroom.release()?;

        // A reserve cut short (a kill while it was written) is written whole again.
        fs::write(&path, b"short").map_err(io)?;
        headroom.claim()?;
        assert_eq!(fs::metadata(&path).map_err(io)?.len(), RESERVE_BYTES);
        Ok(())
    }

    #[test]
    fn a_start_needs_room_beside_the_reserve() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(io)?;
        let headroom = Headroom::new(dir.path());
        let free = fs2::available_space(dir.path()).map_err(io)?;
        assert!(
            free > START_FREE_BYTES + 1024 * 1024,
            "this test needs a disk with room"
        );
        headroom.check_start()?;
        let refused = headroom.ensure_free(free + 1024 * 1024);
        assert!(
            matches!(refused, Err(StoreError::LowDiskSpace { .. })),
            "more than is free is refused: {refused:?}"
        );
        let text = refused.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            text.contains(&dir.path().display().to_string()) && text.contains("is full"),
            "the message says which disk is full: {text}"
        );
        Ok(())
    }

    #[test]
    fn only_a_full_disk_or_quota_is_disk_full() {
        assert!(is_disk_full(&io::Error::from_raw_os_error(28))); // ENOSPC
        assert!(is_disk_full(&io::ErrorKind::QuotaExceeded.into()));
        assert!(!is_disk_full(&io::Error::other("an I/O error")));
        let e = Headroom::new(Path::new("/data")).error("write", io::Error::from_raw_os_error(28));
        let text = e.to_string();
        assert!(matches!(e, StoreError::DiskFull { .. }), "{e:?}");
        assert!(
            text.contains("/data") && text.contains("No space left on device"),
            "the message says which disk is full and why: {text}"
        );
    }
}
