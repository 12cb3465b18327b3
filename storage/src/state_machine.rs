//! The state machine: the services table in memory, persisted to sled in the background.
//!
//! An apply changes the table in memory ([`StateView`]) and notes which records changed; it
//! writes nothing to disk. The changed records and the applied log id are written together by
//! [`StateMachineStore::persist`]: every [`PERSIST_INTERVAL`] from a background thread, and on
//! shutdown (a last one as the thread is stopped, [`StateMachineStore::stop_persister`]). A
//! service that heartbeats many times between two persists is written once. Up to
//! `sm_disk::RECORDS_PER_BATCH` records go in one atomic sled batch; more go in several,
//! under a marker (see `sm_disk`), so that no batch holds sled's lock, and with it the log's
//! appends, for long. The disk therefore holds the table exactly as of the log id stored with
//! it, possibly behind memory, or records marked unfinished; after a crash openraft applies
//! the log again from that log id, or from the snapshot file's when the records are
//! unfinished, each entry once. Nothing acknowledged depends on it: acknowledged entries are
//! in the flushed log, and the log is purged only up to a point the snapshot file covers (a
//! purge beyond it writes a snapshot file first).
//!
//! A snapshot copies the table under the lock that applies take, so records and log id
//! always belong together even when applies continue while the snapshot is written.
//!
//! Snapshots check themselves ([`crate::snapshot`]): one whose bytes changed is never
//! installed, served or loaded. A start needs the snapshot file when the records on disk are
//! older than the log's purge point (for at most one [`PERSIST_INTERVAL`] after a purge) or
//! unfinished: only then can a damaged one not be done without (the store then refuses to
//! open and says so).

use std::collections::HashSet;
use std::io::{Seek, SeekFrom, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{RaftSnapshotBuilder, StorageIOError};

use crate::disk::Disk;
use crate::error::{NeededSnapshotDamaged, StoreError, UnknownCluster};
use crate::identity::StoreIdentity;
use crate::model::{CommandResponse, ServiceKey, ServiceRecord};
use crate::persister::{Persist, Persister, PersisterWatch};
use crate::sm_disk;
use crate::snapshot::{self, decode_state, SnapshotSource};
use crate::snapshot_file::{self, SnapshotFile};
use crate::snapshot_policy::SnapshotPolicy;
use crate::state::{lock, ServicesState, StateView};
use crate::trees::TREE_SERVICES;
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
    /// The database, written and flushed as a whole (see [`crate::disk`]).
    disk: Disk,
    /// Records and the state machine's metadata (see [`sm_disk`]).
    services: sled::Tree,
    /// The current snapshot (a file beside the database).
    snapshot: SnapshotFile,
    /// The store's cluster, written into every snapshot and checked in every one installed.
    identity: StoreIdentity,
    /// The same state in memory.
    view: StateView,
    /// Records changed in memory since the last persist; only changed with the view's write
    /// lock held, and taken with its read lock held, so a persist's records and log id match.
    dirty: Mutex<HashSet<ServiceKey>>,
    /// Held by a persist or an install from start to end, so their writes never interleave.
    persisting: Mutex<()>,
    /// Why the last background persist failed, if it did: the next apply fails with it, so
    /// a node that cannot write its state stops instead of drifting from its disk.
    failed: Mutex<Option<Arc<StoreError>>>,
    /// Makes snapshot ids unique within this process.
    snapshot_seq: AtomicU64,
    /// The last log id the snapshot file covers (durably written).
    snapshot_last: Mutex<Option<LogId>>,
    /// Held while the snapshot file is written (see [`write_snapshot_file`]).
    snapshot_writes: Mutex<()>,
    /// A damaged snapshot file was moved aside: the next one asked for is built fresh.
    needs_fresh: std::sync::atomic::AtomicBool,
    /// The background persist thread, until it is stopped.
    persister: Mutex<Option<Persister>>,
    /// A watch on that thread, kept after it is stopped.
    persister_watch: Mutex<PersisterWatch>,
    /// What tells when the next snapshot is due.
    policy: SnapshotPolicy,
    /// How often the background thread persists (`None`: it does not run).
    persist_interval: Option<Duration>,
}

impl StateMachineStore {
    /// Loads the state machine from `db`: the records on disk, or the stored snapshot when
    /// it is newer than them (a crash before they were persisted), which then replaces
    /// them on disk. `last_purged` is the log's purge point: a damaged snapshot file is moved
    /// aside when the records do not need it, and refused when they do. Starts the background
    /// persist thread.
    pub(crate) fn open(
        disk: &Disk,
        dir: &std::path::Path,
        identity: StoreIdentity,
        last_purged: Option<LogId>,
        persist_interval: Option<std::time::Duration>,
        events_kept: usize,
    ) -> Result<Self, StoreError> {
        let services = disk.db().open_tree(TREE_SERVICES)?;
        let file = SnapshotFile::new(dir);
        let mut state = sm_disk::load(&services)?;
        // Records of a write in several batches that did not finish are of two log ids: the
        // state comes from the snapshot file (or is the empty one) and the log after it.
        let incomplete = sm_disk::is_incomplete(&services)?;
        let records_at = state.last_applied;
        if incomplete {
            tracing::warn!(
                records_at = ?records_at,
                "the records on disk are of a write that did not finish: the state is loaded \
                 from the snapshot file, and the log after it is applied again"
            );
            state = ServicesState::default();
        }
        let mut rewrite = incomplete;
        let mut snapshot_last = None;
        let mut needs_fresh = false;
        let policy = SnapshotPolicy::default();
        if let Some(bytes) = file.read()? {
            policy.sized(bytes.len() as u64);
            match snapshot::decode(&bytes) {
                Ok((info, records)) => {
                    snapshot_last = info.header.last_log_id;
                    if incomplete || info.header.last_log_id > state.last_applied {
                        state = snapshot::into_state(info.header, records);
                        rewrite = true;
                    }
                }
                // The store itself is of this build's format (checked before): a snapshot file
                // that claims a newer one is damaged too.
                Err(e @ (StoreError::Damaged { .. } | StoreError::NewerFormat { .. }))
                    if !incomplete && state.last_applied >= last_purged =>
                {
                    needs_fresh = true;
                    let moved = file.quarantine()?;
                    tracing::error!(
                        error = %e,
                        moved_to = %moved.display(),
                        "the snapshot file is damaged; it was moved aside, and a fresh one is \
                         built from this node's records, which do not need it"
                    );
                }
                Err(e @ (StoreError::Damaged { .. } | StoreError::NewerFormat { .. })) => {
                    return Err(StoreError::NeededSnapshotDamaged(Box::new(
                        NeededSnapshotDamaged {
                            path: file.path(),
                            records_at: (!incomplete).then_some(records_at).flatten(),
                            purged_to: last_purged,
                            source: e,
                        },
                    )))
                }
                Err(e) => return Err(e),
            }
        }
        if incomplete && state.last_applied < last_purged {
            return Err(StoreError::RecordsIncomplete {
                snapshot_at: snapshot_last,
                purged_to: last_purged,
            });
        }
        if rewrite {
            sm_disk::replace(disk, &services, &state)?;
            disk.flush_blocking()?;
        }
        let seq = chrono::Utc::now().timestamp_millis().unsigned_abs();
        let store = Self {
            inner: Arc::new(Inner {
                disk: disk.clone(),
                services,
                snapshot: file,
                identity,
                view: StateView::new(state, events_kept),
                dirty: Mutex::new(HashSet::new()),
                persisting: Mutex::new(()),
                failed: Mutex::new(None),
                snapshot_seq: AtomicU64::new(seq),
                snapshot_last: Mutex::new(snapshot_last),
                snapshot_writes: Mutex::new(()),
                needs_fresh: std::sync::atomic::AtomicBool::new(needs_fresh),
                persister: Mutex::new(None),
                persister_watch: Mutex::new(PersisterWatch::default()),
                policy,
                persist_interval,
            }),
        };
        if let Some(every) = persist_interval {
            match Persister::spawn(Arc::downgrade(&store.inner), every) {
                Ok(persister) => {
                    *lock(&store.inner.persister_watch) = persister.watch();
                    *lock(&store.inner.persister) = Some(persister);
                }
                Err(e) => tracing::warn!(
                    error = %e,
                    "no background persist thread: the state machine is written on purge and \
                     shutdown only"
                ),
            }
        }
        Ok(store)
    }

    /// Stops the background persist thread: it writes the records changed since its last
    /// persist, flushes the database and ends, and this waits up to `within` for it (then
    /// joins it). From then on the records are written only before a purge and by
    /// [`LogStore::flush`](crate::LogStore::flush). Without a thread (none was started, or it
    /// was stopped already) the records are persisted and flushed here.
    pub async fn stop_persister(&self, within: Duration) -> Result<(), StoreError> {
        let persister = lock(&self.inner.persister).take();
        match persister {
            Some(persister) => persister.stop(within).await,
            None => {
                self.persist()?;
                self.inner.disk.flush().await
            }
        }
    }

    /// A watch on the background persist thread, which holds nothing of the store: it still
    /// answers after the store is closed.
    pub fn persister_watch(&self) -> PersisterWatch {
        lock(&self.inner.persister_watch).clone()
    }

    /// Whether this node (`node_id`) should build a snapshot now (see [`SnapshotPolicy`]).
    pub fn snapshot_due(&self, node_id: u64) -> bool {
        self.inner.policy.due_for(node_id)
    }

    /// A read handle on the in-memory services table, for the API.
    pub fn view(&self) -> StateView {
        self.inner.view.clone()
    }

    /// Tells `observer` the time of every later flush of the node's database (the log's and
    /// the state machine's: they share it); false when one is already set.
    pub fn observe_flushes(&self, observer: crate::disk::FlushObserver) -> bool {
        self.inner.disk.observe_flushes(observer)
    }

    /// Writes the records changed since the last persist, with the applied log id, in one
    /// atomic batch (not flushed: sled flushes on its own within half a second, and the
    /// log purge and shutdown flush). On failure the records stay due for the next one.
    pub fn persist(&self) -> Result<(), StoreError> {
        persist(&self.inner)
    }

    /// Whether the log up to `log_id` may go: the snapshot file covers it (a start loads the
    /// snapshot when it is newer than the records, or the records are unfinished).
    pub(crate) fn snapshot_covers(&self, log_id: &LogId) -> bool {
        lock(&self.inner.snapshot_last).is_some_and(|s| s >= *log_id)
    }

    /// Writes a snapshot file of the state now, so that the log up to `log_id` may go (see
    /// [`Self::snapshot_covers`]). A `log_id` not applied yet (openraft purges only applied
    /// entries; its storage test suite purges a log without a state machine) cannot be
    /// covered: the records are persisted, as the most there is to keep.
    pub(crate) async fn cover_with_snapshot(&self, log_id: &LogId) -> Result<(), StoreError> {
        self.build().await?;
        if !self.snapshot_covers(log_id) {
            tracing::warn!(
                purge = %log_id,
                "the log is purged past what the state machine applied"
            );
            self.persist()?;
        }
        Ok(())
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
            let mut events = Vec::new();
            let responses = entries
                .iter()
                .map(|e| state.apply_entry_with_events(e, &mut *dirty, &mut events))
                .collect();
            if let Some(last) = state.last_applied {
                inner.view.events().append(last.index, events);
            }
            inner.policy.applied(&entries);
            responses
        }))
    }

    /// Copies the state's records (shared) with its applied log id and encodes them straight
    /// into the snapshot file (flushed); the snapshot's data is that file, never a copy of
    /// it in memory.
    async fn build(&self) -> Result<Snapshot<TypeConfig>, StoreError> {
        let source = self.inner.view.read(|s| {
            self.inner.policy.taken();
            SnapshotSource::of(s)
        });
        let seq = self.inner.snapshot_seq.fetch_add(1, Ordering::Relaxed);
        let snapshot_id = match source.last_applied() {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, seq),
            None => format!("0-0-{seq}"),
        };
        let meta = SnapshotMeta {
            last_log_id: source.last_applied(),
            last_membership: source.membership().clone(),
            snapshot_id: snapshot_id.clone(),
        };
        // Encoding and writing tens of megabytes: off the async workers.
        let inner = Arc::clone(&self.inner);
        let cluster_id = self.inner.identity.cluster_id();
        let last = meta.last_log_id;
        let file = self
            .inner
            .disk
            .spawn_blocking(move || {
                let (file, size) = store_snapshot(&inner, last, |out| {
                    source.encode_to(out, cluster_id, snapshot_id)
                })?;
                inner.policy.sized(size);
                Ok::<_, StoreError>(file)
            })
            .await??;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(tokio::fs::File::from_std(file)),
        })
    }

    /// The current state as a backup: a snapshot blob of it, encoded now (not stored), and
    /// the index of the last entry it reflects.
    pub async fn backup(&self) -> Result<(Vec<u8>, Option<u64>), StoreError> {
        let source = self.inner.view.read(SnapshotSource::of);
        let cluster_id = self.inner.identity.cluster_id();
        let snapshot_id = match source.last_applied() {
            Some(l) => format!("backup-{}-{}", l.leader_id.term, l.index),
            None => "backup-0-0".into(),
        };
        let index = source.last_applied().map(|l| l.index);
        let blob = self
            .inner
            .disk
            .spawn_blocking(move || source.encode(cluster_id, snapshot_id))
            .await??;
        Ok((blob, index))
    }

    /// Makes a snapshot received from the leader the snapshot file, durably, before it is
    /// handed to Raft to install; the file never goes back to an older snapshot than it holds.
    ///
    /// openraft 0.9 starts installing a received snapshot in the state machine's task and, at
    /// once, purges the log up to it: without the file first, a crash during the install
    /// (tens of megabytes to decode and write) left a log purged past both the records and
    /// the snapshot file, and the node could never start again. With it, the purge is covered
    /// by the file, and a start after such a crash loads it. `data` must be a whole snapshot
    /// of this store's cluster (checked again here). Returns the snapshot's file, for the
    /// install, so that `data` can be dropped before it.
    pub async fn stage_snapshot(&self, data: Vec<u8>) -> Result<tokio::fs::File, StoreError> {
        let inner = Arc::clone(&self.inner);
        let file = self
            .inner
            .disk
            .spawn_blocking(move || {
                let header = snapshot::check(&data)?.header;
                check_cluster(&inner, header.cluster_id, &header.snapshot_id)?;
                let (file, _) =
                    store_snapshot(&inner, header.last_log_id, snapshot_file::bytes(&data))?;
                Ok::<_, StoreError>(file)
            })
            .await??;
        Ok(tokio::fs::File::from_std(file))
    }

    /// Replaces the whole state with a snapshot's: the snapshot file first (unless it was
    /// staged), then the records on disk (flushed), then memory. A crash between the first
    /// two leaves the snapshot file newer than the records, or the records unfinished: the
    /// next start loads the file either way. A snapshot that is damaged, or of another
    /// cluster, is refused before anything is written.
    async fn install(&self, meta: &SnapshotMeta, data: Vec<u8>) -> Result<(), StoreError> {
        // Decoding, writing and syncing tens of megabytes: off the async workers, like build.
        let inner = Arc::clone(&self.inner);
        let meta = meta.clone();
        self.inner
            .disk
            .spawn_blocking(move || {
                let (state, theirs) = decode_state(&meta, &data)?;
                check_cluster(&inner, theirs, &meta.snapshot_id)?;
                // The file first: the records are written in several batches, and a start
                // that finds them unfinished loads the file (see `sm_disk`).
                write_snapshot_file(&inner, &data, meta.last_log_id)?;
                let _persisting = lock(&inner.persisting);
                sm_disk::replace(&inner.disk, &inner.services, &state)?;
                inner.disk.flush_blocking()?;
                inner.policy.taken();
                inner.policy.sized(data.len() as u64);
                inner.view.install(state);
                lock(&inner.dirty).clear();
                Ok::<(), StoreError>(())
            })
            .await??;
        Ok(())
    }

    /// The current snapshot, checked: a damaged file is moved aside and a fresh snapshot
    /// built in its place, so a damaged one is never served.
    async fn current_snapshot(&self) -> Result<Option<Snapshot<TypeConfig>>, StoreError> {
        let inner = Arc::clone(&self.inner);
        let read = self
            .inner
            .disk
            .spawn_blocking(move || {
                let Some(mut file) = inner.snapshot.open()? else {
                    return Ok(None);
                };
                // Checked whole before it is served, read in pieces: only the file is
                // handed on.
                match snapshot::check_file(&mut file) {
                    Ok(info) => {
                        file.seek(SeekFrom::Start(0))
                            .map_err(StoreError::io("seek", inner.snapshot.path()))?;
                        Ok(Some(Ok((info.header.meta(), file))))
                    }
                    Err(e @ (StoreError::Damaged { .. } | StoreError::NewerFormat { .. })) => {
                        let _writes = lock(&inner.snapshot_writes);
                        let moved = inner.snapshot.quarantine()?;
                        *lock(&inner.snapshot_last) = None;
                        Ok(Some(Err((e, moved))))
                    }
                    Err(e) => Err(e),
                }
            })
            .await??;
        match read {
            None if self.inner.needs_fresh.swap(false, Ordering::Relaxed) => {
                tracing::info!("building a fresh snapshot in place of the damaged one");
                self.build().await.map(Some)
            }
            None => Ok(None),
            Some(Ok((meta, file))) => Ok(Some(Snapshot {
                meta,
                snapshot: Box::new(tokio::fs::File::from_std(file)),
            })),
            Some(Err((e, moved))) => {
                tracing::error!(
                    error = %e,
                    moved_to = %moved.display(),
                    "the snapshot file is damaged; moved aside, building a fresh one"
                );
                self.build().await.map(Some)
            }
        }
    }

    /// Whether a snapshot file exists (for a store's emptiness check).
    pub(crate) fn has_snapshot_file(dir: &std::path::Path) -> bool {
        SnapshotFile::new(dir).exists()
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

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        let file = self.inner.snapshot.clone();
        let file = self
            .inner
            .disk
            .spawn_blocking(move || file.receiving())
            .await
            .map_err(StoreError::from)
            .and_then(|made| made)
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        Ok(Box::new(tokio::fs::File::from_std(file)))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        let signature = meta.signature();
        let data = read_snapshot_data(*snapshot)
            .await
            .map_err(|e| StorageIOError::read_snapshot(Some(signature.clone()), &e))?;
        self.install(meta, data)
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(signature), &e).into())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        self.current_snapshot()
            .await
            .map_err(|e| StorageIOError::read_snapshot(None, &e).into())
    }
}

/// Refuses a snapshot of another cluster than the store's (or of none).
fn check_cluster(
    inner: &Inner,
    theirs: Option<crate::identity::ClusterId>,
    snapshot_id: &str,
) -> Result<(), StoreError> {
    match (inner.identity.cluster_id(), theirs) {
        (Some(ours), Some(theirs)) if ours == theirs => Ok(()),
        (Some(ours), Some(theirs)) => Err(StoreError::ClusterMismatch { ours, theirs }),
        (ours, theirs) => Err(StoreError::UnknownCluster(Box::new(UnknownCluster {
            snapshot_id: snapshot_id.to_string(),
            ours,
            theirs,
        }))),
    }
}

/// Every byte of a snapshot's data (its file), from its start, whatever was read of it
/// before.
pub async fn read_snapshot_data(mut file: tokio::fs::File) -> Result<Vec<u8>, StoreError> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    file.seek(SeekFrom::Start(0))
        .await
        .map_err(StoreError::snapshot_data("reading"))?;
    let mut data = Vec::new();
    file.read_to_end(&mut data)
        .await
        .map_err(StoreError::snapshot_data("reading"))?;
    Ok(data)
}

/// Writes a snapshot ending at `last` with `write` (which returns its size) and makes it the
/// snapshot file, durably (blocking), unless the file already covers `last`: then it is
/// written all the same, for the caller to read, but under no name. Returns the snapshot's
/// file, open at its start, and its size. Snapshots are written one at a time, and the file
/// never goes back to an older snapshot than it holds: what covers a purge of the log stays
/// covered.
fn store_snapshot(
    inner: &Inner,
    last: Option<LogId>,
    write: impl FnOnce(&mut dyn Write) -> Result<u64, StoreError>,
) -> Result<(std::fs::File, u64), StoreError> {
    let _writes = lock(&inner.snapshot_writes);
    let staged = inner.snapshot.stage(write)?;
    if file_covers(inner, last) {
        inner.snapshot.discard();
        return Ok(staged);
    }
    if let Err(e) = inner.snapshot.commit() {
        inner.snapshot.discard();
        return Err(e);
    }
    *lock(&inner.snapshot_last) = last;
    Ok(staged)
}

/// Makes `data`, a snapshot ending at `last`, the snapshot file (durably, blocking), unless
/// the file already covers `last`. Builds, installs and staged snapshots write one at a
/// time, and the file never goes back to an older snapshot than it holds: what covers a
/// purge of the log stays covered.
fn write_snapshot_file(inner: &Inner, data: &[u8], last: Option<LogId>) -> Result<(), StoreError> {
    let _writes = lock(&inner.snapshot_writes);
    if file_covers(inner, last) {
        return Ok(());
    }
    inner.snapshot.write(data)?;
    *lock(&inner.snapshot_last) = last;
    Ok(())
}

/// Whether the snapshot file exists and covers `last` (the caller holds the snapshot
/// writes' lock).
fn file_covers(inner: &Inner, last: Option<LogId>) -> bool {
    *lock(&inner.snapshot_last) >= last && inner.snapshot.exists()
}

/// See [`StateMachineStore::persist`].
fn persist(inner: &Inner) -> Result<(), StoreError> {
    let _persisting = lock(&inner.persisting);
    let started = std::time::Instant::now();
    let (keys, records, meta) = inner.view.read(|state| {
        let keys = std::mem::take(&mut *lock(&inner.dirty));
        let records: Vec<Arc<ServiceRecord>> = keys
            .iter()
            .filter_map(|k| state.get_shared(k))
            .cloned()
            .collect();
        (keys, records, sm_disk::Meta::of(state))
    });
    let records: Vec<&ServiceRecord> = records.iter().map(|r| &**r).collect();
    let written = sm_disk::write(&inner.disk, &inner.services, &meta, &records, false);
    if written.is_err() {
        // Due again: the next persist writes them (with whatever changed since).
        lock(&inner.dirty).extend(keys);
    }
    let took = started.elapsed();
    if inner.persist_interval.is_some_and(|every| took > every) {
        // The records changed meanwhile wait for the next one: the persists fall behind,
        // and a shutdown's last one takes as long.
        tracing::warn!(
            records = records.len(),
            took_ms = took.as_millis() as u64,
            "writing the changed records to disk took longer than the persist interval"
        );
    }
    written.map(|_| ())
}

impl Persist for Inner {
    fn persist_now(&self) {
        if let Err(e) = persist(self) {
            tracing::error!(error = %e, "writing the state machine to disk failed");
            *lock(&self.failed) = Some(Arc::new(e));
        }
    }

    fn persist_last(&self) -> Result<(), StoreError> {
        persist(self)?;
        self.disk.flush_blocking()
    }
}
