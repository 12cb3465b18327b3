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

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::StoreError;

/// The snapshot's file name in the node's data directory.
const FILE_NAME: &str = "raft-snapshot";
/// Where a new snapshot is written before it replaces the current one.
const TMP_NAME: &str = "raft-snapshot.tmp";
/// Where a damaged snapshot file is moved.
const DAMAGED_NAME: &str = "raft-snapshot.damaged";
/// Where a snapshot received in chunks is gathered (unlinked at once: only its handle is used).
const RECEIVING_NAME: &str = "raft-snapshot.receiving";

/// Bytes buffered between a snapshot's encoder and its file.
const WRITE_BUFFER: usize = 256 * 1024;

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
        self.stage(bytes(blob))?;
        self.commit()
    }

    /// Writes a new snapshot with `write` (which returns its size) to the temporary file and
    /// syncs it, without making it current: [`Self::commit`] or [`Self::discard`] does one
    /// or the other. Returns the file, open at its start for reading, and its size. The
    /// caller writes one snapshot at a time.
    pub(crate) fn stage(
        &self,
        write: impl FnOnce(&mut dyn Write) -> Result<u64, StoreError>,
    ) -> Result<(File, u64), StoreError> {
        let tmp = self.dir.join(TMP_NAME);
        let written = write_staged(&tmp, write);
        if written.is_err() {
            // A snapshot cut short by a full disk would go on holding tens of megabytes.
            self.discard();
        }
        written
    }

    /// Makes the staged snapshot the current one, durably.
    pub(crate) fn commit(&self) -> Result<(), StoreError> {
        let tmp = self.dir.join(TMP_NAME);
        let path = self.path();
        fs::rename(&tmp, &path).map_err(StoreError::io("rename", &path))?;
        self.sync_dir()
    }

    /// Removes the staged snapshot's name (a handle to it still reads it).
    pub(crate) fn discard(&self) {
        let tmp = self.dir.join(TMP_NAME);
        if let Err(e) = fs::remove_file(&tmp) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(error = %e, path = %tmp.display(), "removing a staged snapshot file failed");
            }
        }
    }

    /// A new, empty file without a name, for a snapshot received in chunks.
    pub(crate) fn receiving(&self) -> Result<File, StoreError> {
        let path = self.dir.join(RECEIVING_NAME);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(StoreError::io("create", &path))?;
        fs::remove_file(&path).map_err(StoreError::io("remove", &path))?;
        Ok(file)
    }

    /// The current snapshot's file, open at its start, if there is one (blocking).
    pub(crate) fn open(&self) -> Result<Option<File>, StoreError> {
        let path = self.path();
        match File::open(&path) {
            Ok(file) => Ok(Some(file)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io("open", path)(e)),
        }
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

/// Writes a new file at `path` with `write`, syncs it, and rewinds it.
fn write_staged(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> Result<u64, StoreError>,
) -> Result<(File, u64), StoreError> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(StoreError::io("create", path))?;
    let mut out = Recorded {
        inner: BufWriter::with_capacity(WRITE_BUFFER, &file),
        error: None,
    };
    let written = write(&mut out).and_then(|size| {
        out.flush().map_err(StoreError::snapshot_data("writing"))?;
        Ok(size)
    });
    let size = match written {
        Ok(size) => size,
        // The file's own error, with its path (a full disk is told apart by it).
        Err(e) => return Err(out.error.take().map_or(e, StoreError::io("write", path))),
    };
    drop(out);
    file.sync_all().map_err(StoreError::io("sync", path))?;
    file.seek(SeekFrom::Start(0))
        .map_err(StoreError::io("seek", path))?;
    Ok((file, size))
}

/// A writer that keeps the first error its inner writer gave, for the caller to report with
/// the file's path whatever the encoder made of it.
struct Recorded<W> {
    inner: W,
    error: Option<io::Error>,
}

impl<W: Write> Write for Recorded<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf).map_err(|e| self.record(e))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush().map_err(|e| self.record(e))
    }
}

impl<W> Recorded<W> {
    /// Keeps `e` (the first one) and gives the encoder one of the same kind.
    fn record(&mut self, e: io::Error) -> io::Error {
        let kind = e.kind();
        self.error.get_or_insert(e);
        io::Error::from(kind)
    }
}

/// A writer of [`SnapshotFile::stage`] that writes `blob` as it is.
pub(crate) fn bytes(blob: &[u8]) -> impl FnOnce(&mut dyn Write) -> Result<u64, StoreError> + '_ {
    move |out| {
        out.write_all(blob)
            .map_err(StoreError::snapshot_data("writing"))?;
        Ok(blob.len() as u64)
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
