//! The state machine: the services table in memory, persisted to sled in the background.
//!
//! An apply changes the table in memory ([`StateView`]) and notes which records changed; it
//! writes nothing to disk. The changed records and the applied log id are written together, in
//! one atomic sled batch, by [`StateMachineStore::persist`]: every [`PERSIST_INTERVAL`] from
//! a background thread, before the log is purged, and on shutdown. A service that
//! heartbeats many times between two persists is written once. The disk therefore always
//! holds the table exactly as of the log id stored with it, possibly behind memory; after a
//! crash openraft applies the log again from there, each entry once. Nothing acknowledged
//! depends on it: acknowledged entries are in the flushed log, and the log is purged only
//! up to a point the disk (records or the flushed snapshot) already covers.
//!
//! A snapshot copies the table under the lock that applies take, so records and log id
//! always belong together even when applies continue while the snapshot is written.

use std::collections::HashSet;
use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{RaftSnapshotBuilder, StorageIOError};

use crate::disk::Disk;
use crate::error::StoreError;
use crate::model::{CommandResponse, ServiceKey, ServiceRecord};
use crate::sm_disk;
use crate::snapshot::{decode_state, encode_state};
use crate::snapshot_file::SnapshotFile;
use crate::state::{lock, ServicesState, StateView};
use crate::store::TREE_SERVICES;
use crate::types::{Entry, LogId, SnapshotMeta, StorageError, StoredMembership, TypeConfig};

/// How often the background thread writes the changed records to disk.
pub const PERSIST_INTERVAL: Duration = Duration::from_secs(1);

/// The sled-backed state machine. Cloning gives another handle on the same state (the
/// snapshot builder is one).
#[derive(Debug, Clone)]
pub struct StateMachineStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The database, flushed as a whole.
    disk: Disk,
    /// Records and the state machine's metadata (see [`sm_disk`]).
    services: sled::Tree,
    /// The current snapshot (a file beside the database).
    snapshot: SnapshotFile,
    /// The same state in memory.
    view: StateView,
    /// Records changed in memory since the last persist; only changed with the view's write
    /// lock held, and taken with its read lock held, so a persist's records and log id match.
    dirty: Mutex<HashSet<ServiceKey>>,
    /// Held by a persist or an install from start to end, so their writes never interleave.
    persisting: Mutex<()>,
    /// Why the last background persist failed, if it did: the next apply fails with it, so
    /// a node that cannot write its state stops instead of drifting from its disk.
    failed: Mutex<Option<String>>,
    /// Makes snapshot ids unique within this process.
    snapshot_seq: AtomicU64,
    /// The last log id the snapshot file covers (durably written).
    snapshot_last: Mutex<Option<LogId>>,
}

impl StateMachineStore {
    /// Loads the state machine from `db`: the records on disk, or the stored snapshot when
    /// it is newer than them (a crash before they were persisted), which then replaces
    /// them on disk. Starts the background persist thread.
    pub(crate) fn open(disk: &Disk, dir: &std::path::Path) -> Result<Self, StoreError> {
        let services = disk.db().open_tree(TREE_SERVICES)?;
        let snapshot = SnapshotFile::new(dir);
        let mut state = sm_disk::load(&services)?;
        let mut snapshot_last = None;
        if let Some((meta, data)) = snapshot.read()? {
            snapshot_last = meta.last_log_id;
            if meta.last_log_id > state.last_applied {
                state = decode_state(&meta, &data)?;
                let replace = sm_disk::replace_batch(&services, &state)?;
                disk.write(|| services.apply_batch(replace))?;
                disk.flush_blocking()?;
            }
        }
        let seq = chrono::Utc::now().timestamp_millis().unsigned_abs();
        let store = Self {
            inner: Arc::new(Inner {
                disk: disk.clone(),
                services,
                snapshot,
                view: StateView::new(state),
                dirty: Mutex::new(HashSet::new()),
                persisting: Mutex::new(()),
                failed: Mutex::new(None),
                snapshot_seq: AtomicU64::new(seq),
                snapshot_last: Mutex::new(snapshot_last),
            }),
        };
        spawn_persister(Arc::downgrade(&store.inner));
        Ok(store)
    }

    /// A read handle on the in-memory services table, for the API.
    pub fn view(&self) -> StateView {
        self.inner.view.clone()
    }

    /// Writes the records changed since the last persist, with the applied log id, in one
    /// atomic batch (not flushed: sled flushes on its own within half a second, and the
    /// log purge and shutdown flush). On failure the records stay due for the next one.
    pub fn persist(&self) -> Result<(), StoreError> {
        persist(&self.inner)
    }

    /// Whether the log up to `log_id` may go without persisting the records first: the
    /// snapshot file covers it (a start loads the snapshot when it is newer than the records).
    pub(crate) fn snapshot_covers(&self, log_id: &LogId) -> bool {
        lock(&self.inner.snapshot_last).is_some_and(|s| s >= *log_id)
    }

    /// Applies a batch in memory and notes the records it changed (written by the next
    /// persist).
    fn apply_batch(&self, entries: Vec<Entry>) -> Result<Vec<CommandResponse>, StoreError> {
        if let Some(why) = lock(&self.inner.failed).clone() {
            return Err(StoreError::Persist(why));
        }
        let inner = &self.inner;
        Ok(inner.view.write(|state| {
            let mut dirty = lock(&inner.dirty);
            entries
                .iter()
                .map(|e| state.apply_entry(e, &mut *dirty))
                .collect()
        }))
    }

    /// Copies the state with its applied log id, encodes it, and stores it as the current
    /// snapshot (flushed).
    async fn build(&self) -> Result<Snapshot<TypeConfig>, StoreError> {
        let state = self.inner.view.read(ServicesState::clone);
        let seq = self.inner.snapshot_seq.fetch_add(1, Ordering::Relaxed);
        let snapshot_id = match state.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, seq),
            None => format!("0-0-{seq}"),
        };
        let meta = SnapshotMeta {
            last_log_id: state.last_applied,
            last_membership: state.membership.clone(),
            snapshot_id,
        };
        // Encoding and writing tens of megabytes: off the async workers.
        let file = self.inner.snapshot.clone();
        let file_meta = meta.clone();
        let data = tokio::task::spawn_blocking(move || {
            let data = encode_state(&state)?;
            file.write(&file_meta, &data)?;
            Ok::<_, StoreError>(data)
        })
        .await
        .map_err(|e| StoreError::Task(format!("writing the snapshot: {e}")))??;
        *lock(&self.inner.snapshot_last) = meta.last_log_id;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }

    /// Replaces the whole state with a snapshot's, on disk in one transaction, then in memory.
    /// Replaces the whole state with a snapshot's: the snapshot file first, then the
    /// records on disk (one batch, flushed), then memory. A crash between the first two
    /// leaves a snapshot newer than the records, which the next start loads.
    async fn install(&self, meta: &SnapshotMeta, data: Vec<u8>) -> Result<(), StoreError> {
        // Decoding, writing and syncing tens of megabytes: off the async workers, like build.
        let inner = Arc::clone(&self.inner);
        let meta = meta.clone();
        tokio::task::spawn_blocking(move || {
            let state = decode_state(&meta, &data)?;
            let _persisting = lock(&inner.persisting);
            inner.snapshot.write(&meta, &data)?;
            *lock(&inner.snapshot_last) = meta.last_log_id;
            let replace = sm_disk::replace_batch(&inner.services, &state)?;
            inner.disk.write(|| inner.services.apply_batch(replace))?;
            inner.view.install(state);
            lock(&inner.dirty).clear();
            Ok::<(), StoreError>(())
        })
        .await
        .map_err(|e| StoreError::Task(format!("installing the snapshot: {e}")))??;
        self.inner.disk.flush().await?;
        Ok(())
    }

    fn current_snapshot(&self) -> Result<Option<Snapshot<TypeConfig>>, StoreError> {
        Ok(self.inner.snapshot.read()?.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        self.build()
            .await
            .map_err(|e| StorageIOError::write_snapshot(None, &e).into())
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok(self
            .inner
            .view
            .read(|s| (s.last_applied, s.membership.clone())))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResponse>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        self.apply_batch(entries.into_iter().collect())
            .map_err(|e| StorageIOError::write_state_machine(&e).into())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        self.install(meta, snapshot.into_inner())
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e).into())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        self.current_snapshot()
            .map_err(|e| StorageIOError::read_snapshot(None, &e).into())
    }
}

/// See [`StateMachineStore::persist`].
fn persist(inner: &Inner) -> Result<(), StoreError> {
    let _persisting = lock(&inner.persisting);
    let (keys, records, meta) = inner.view.read(|state| {
        let keys = std::mem::take(&mut *lock(&inner.dirty));
        let records: Vec<Arc<ServiceRecord>> = keys
            .iter()
            .filter_map(|k| state.get_shared(k))
            .cloned()
            .collect();
        (keys, records, sm_disk::Meta::of(state))
    });
    let mut batch = sled::Batch::default();
    let written = sm_disk::add_to_batch(&mut batch, &meta, records.iter().map(|r| &**r))
        .and_then(|()| inner.disk.write(|| inner.services.apply_batch(batch)));
    if written.is_err() {
        // Due again: the next persist writes them (with whatever changed since).
        lock(&inner.dirty).extend(keys);
    }
    written
}

/// Persists `inner` every [`PERSIST_INTERVAL`] until the store is dropped; a failure is
/// logged and kept for the next apply to report.
fn spawn_persister(inner: Weak<Inner>) {
    let run = move || loop {
        std::thread::sleep(PERSIST_INTERVAL);
        let Some(inner) = inner.upgrade() else { return };
        if let Err(e) = persist(&inner) {
            tracing::error!(error = %e, "writing the state machine to disk failed");
            *lock(&inner.failed) = Some(e.to_string());
        }
    };
    if let Err(e) = std::thread::Builder::new()
        .name("sm-persist".into())
        .spawn(run)
    {
        tracing::warn!(error = %e, "no background persist thread: the state machine is written on purge and shutdown only");
    }
}
