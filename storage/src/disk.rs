//! The node's sled database as the log and the state machine write to it, and what a failed
//! write does to it.
//!
//! sled 0.34 keeps an I/O error and refuses all I/O after it, but for one case: a value above
//! 128 KiB (a log entry holding a batch of heartbeats, or a tree node its segment cleaner
//! rewrites) goes to a blob file of its own after it has taken its place in sled's log buffer,
//! and when that blob write fails (a full disk) sled returns the error (its cleaner only logs
//! it) but neither keeps it nor gives the place back. That buffer is never written, so every
//! later flush waits forever, the one sled runs when the database is closed included: a node
//! whose disk filled during such a write hung instead of exiting on its fatal error.
//!
//! So the first write or flush that fails stops the store's I/O (later ones fail at once with
//! the same error); a flush that has not finished within [`FLUSH_DEADLINE`] fails; and a
//! database that failed is never closed in this process (its files stay locked until the
//! process exits: a node stops on a storage error, and starts again as a new process). Nothing
//! acknowledged needs a flush after the failure: it was flushed before it was acknowledged.
//!
//! Every flush is timed: the time goes to the observer the node sets
//! ([`crate::StateMachineStore::observe_flushes`]: its
//! `registry_disk_flush_duration_seconds`), and a flush slower than [`SLOW_FLUSH`] is logged
//! as a warning, as etcd warns of a slow fdatasync: an entry is acknowledged only once its
//! flush is done, so a slow disk (or a long hold of sled's write lock) is latency for every
//! write.
//!
//! Blocking work on the database (encoding and writing snapshots, removing purged log
//! entries) runs on tokio's blocking threads through `Disk::spawn_blocking`, which keeps
//! it in one set per database, so that a node's shutdown can wait for it
//! ([`crate::LogStore::finish_background`]): a removal started by a purge, or a snapshot write
//! whose caller gave up, must not go on writing to a database the node has let go of.

use std::sync::{mpsc, Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

use crate::error::StoreError;

/// Longest a flush may take: one that has not finished by then is taken for a database that
/// cannot write any more (see the module doc), or a disk that does not answer.
pub const FLUSH_DEADLINE: Duration = Duration::from_secs(30);

/// A flush that takes longer than this is logged as a warning (etcd's threshold for a slow
/// fdatasync).
pub const SLOW_FLUSH: Duration = Duration::from_secs(1);

/// What is told the time of each flush.
pub type FlushObserver = Box<dyn Fn(Duration) + Send + Sync>;

/// The database and its first failure. Cloning gives another handle on the same.
#[derive(Debug, Clone)]
pub(crate) struct Disk {
    inner: Arc<Inner>,
}

struct Inner {
    /// The database.
    db: sled::Db,
    /// The first write or flush that failed.
    failed: OnceLock<sled::Error>,
    /// The blocking work started on the database (see [`Disk::spawn_blocking`]).
    background: TaskTracker,
    /// Told the time of each flush, once set.
    flushes: OnceLock<FlushObserver>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("db", &self.db)
            .field("failed", &self.failed)
            .field("background", &self.background)
            .field("flushes", &self.flushes.get().map(|_| "set"))
            .finish()
    }
}

/// Whether anything still holds a store's database; holds nothing of it, so it answers after
/// the store is closed (a test checking that a shutdown let go of its data directory).
#[derive(Debug, Clone, Default)]
pub struct DatabaseWatch {
    /// The database's handles, while any is alive.
    disk: Weak<Inner>,
}

impl DatabaseWatch {
    /// Whether every handle on the database is gone: the store is closed (sled's flush
    /// thread joined), unless a failed write had it left open (see the module doc).
    pub fn is_closed(&self) -> bool {
        self.disk.strong_count() == 0
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if self.failed.get().is_some() {
            // Closing the database flushes it, which may wait forever (see the module doc):
            // one handle is leaked instead, and the process's exit closes its files.
            std::mem::forget(self.db.clone());
        }
    }
}

impl Disk {
    /// Writes to `db` go through the returned handle.
    pub(crate) fn new(db: sled::Db) -> Self {
        Self {
            inner: Arc::new(Inner {
                db,
                failed: OnceLock::new(),
                background: TaskTracker::new(),
                flushes: OnceLock::new(),
            }),
        }
    }

    /// The database, to open trees and read.
    pub(crate) fn db(&self) -> &sled::Db {
        &self.inner.db
    }

    /// A watch on whether the database is still held.
    pub(crate) fn watch(&self) -> DatabaseWatch {
        DatabaseWatch {
            disk: Arc::downgrade(&self.inner),
        }
    }

    /// Runs `work` on a blocking thread, in the database's set of background work (see the
    /// module doc). Must be called within a tokio runtime.
    pub(crate) fn spawn_blocking<T, F>(&self, work: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.inner.background.spawn_blocking(work)
    }

    /// The set of blocking work started on the database, to wait for or watch (it holds no
    /// handle on the database).
    pub(crate) fn background(&self) -> TaskTracker {
        self.inner.background.clone()
    }

    /// Runs `write` (writes to trees of this database) unless an earlier write or flush
    /// failed; its failure stops the store's I/O.
    pub(crate) fn write<T>(
        &self,
        write: impl FnOnce() -> sled::Result<T>,
    ) -> Result<T, StoreError> {
        self.check()?;
        write().map_err(|e| self.fail(e))
    }

    /// Tells `observer` the time of every later flush; false (and nothing changes) when an
    /// observer is already set.
    pub(crate) fn observe_flushes(&self, observer: FlushObserver) -> bool {
        self.inner.flushes.set(observer).is_ok()
    }

    /// Hands a flush's time to the observer, and warns when it was slow.
    fn flushed_in(&self, took: Duration) {
        if let Some(observe) = self.inner.flushes.get() {
            observe(took);
        }
        if took > SLOW_FLUSH {
            tracing::warn!(
                took_ms = took.as_millis() as u64,
                "a flush of the database took longer than {SLOW_FLUSH:?}: every write waits \
                 for its flush, so the disk is slow or overloaded (or a large batch held \
                 sled's write lock)"
            );
        }
    }

    /// Makes everything written durable, within [`FLUSH_DEADLINE`].
    pub(crate) async fn flush(&self) -> Result<(), StoreError> {
        self.check()?;
        let start = Instant::now();
        let flushed = tokio::time::timeout(FLUSH_DEADLINE, self.inner.db.flush_async()).await;
        self.flushed_in(start.elapsed());
        match flushed {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(self.fail(e)),
            Err(_) => Err(self.fail(deadline_passed())),
        }
    }

    /// The same, blocking the calling thread.
    pub(crate) fn flush_blocking(&self) -> Result<(), StoreError> {
        self.check()?;
        // What the caller waits: the thread's start included.
        let start = Instant::now();
        let (done, flushed) = mpsc::channel();
        let db = self.inner.db.clone();
        let thread = std::thread::Builder::new()
            .name("sled-flush".into())
            .spawn(move || {
                let _ = done.send(db.flush());
            })
            .map_err(StoreError::Spawn)?;
        let flushed = flushed.recv_timeout(FLUSH_DEADLINE);
        self.flushed_in(start.elapsed());
        if flushed.is_ok() {
            // It has sent its answer: joining it takes no longer than its return (a thread
            // that did not answer in time is left to the process's exit, see the module doc).
            let _ = thread.join();
        }
        match flushed {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(self.fail(e)),
            Err(_) => Err(self.fail(deadline_passed())),
        }
    }

    /// The first failure, if there was one.
    fn check(&self) -> Result<(), StoreError> {
        match self.inner.failed.get() {
            Some(e) => Err(StoreError::Sled(e.clone())),
            None => Ok(()),
        }
    }

    /// Records `e` as the store's failure (the first one stays) and returns it.
    fn fail(&self, e: sled::Error) -> StoreError {
        if self.inner.failed.set(e.clone()).is_ok() {
            tracing::error!(error = %e, "a write to the database failed: the store does no more I/O, and stays open until the process exits");
        }
        StoreError::Sled(e)
    }
}

/// The error of a flush that did not finish within [`FLUSH_DEADLINE`].
fn deadline_passed() -> sled::Error {
    sled::Error::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("a flush did not finish within {FLUSH_DEADLINE:?}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(e: std::io::Error) -> StoreError {
        StoreError::io("test", "")(e)
    }

    #[tokio::test]
    async fn writes_flush_until_one_fails_then_nothing_does() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(io)?;
        let disk = Disk::new(sled::Config::new().path(dir.path()).open()?);
        let tree = disk.db().open_tree("t")?;
        let times = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = Arc::clone(&times);
        assert!(disk.observe_flushes(Box::new(move |took| {
            seen.lock().unwrap_or_else(|e| e.into_inner()).push(took)
        })));
        assert!(
            !disk.observe_flushes(Box::new(|_| {})),
            "one observer, the first"
        );
        disk.write(|| tree.insert(b"a", b"1".to_vec()))?;
        disk.flush().await?;
        disk.flush_blocking()?;
        assert_eq!(
            times.lock().unwrap_or_else(|e| e.into_inner()).len(),
            2,
            "each flush is timed"
        );

        let failure = disk.write(|| -> sled::Result<()> {
            Err(sled::Error::Io(std::io::Error::from_raw_os_error(28)))
        });
        assert!(failure.is_err(), "a failed write is an error");
        let mut ran = false;
        let later = disk.write(|| {
            ran = true;
            tree.insert(b"b", b"2".to_vec())
        });
        assert!(!ran, "no write runs after a failure");
        assert!(
            later.is_err_and(|e| e.to_string().contains("No space left on device")),
            "later writes fail with the first failure"
        );
        assert!(disk.flush().await.is_err(), "so do flushes");
        assert!(disk.flush_blocking().is_err());
        assert_eq!(
            tree.get(b"a")?.as_deref(),
            Some(&b"1"[..]),
            "reads still work"
        );
        Ok(())
    }
}
