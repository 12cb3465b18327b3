//! The state machine: the services table in memory; on disk, the snapshot file and the log
//! after it.
//!
//! An apply changes the table in memory only ([`StateView`]). What reaches disk is the
//! snapshot file, the whole table as of the log id it names (written to a temporary file,
//! synced, renamed into place), and the log, which keeps every entry after that log id: it is
//! purged only up to a point the file covers, and a purge beyond it builds a snapshot first
//! (`StateMachineStore::cover_with_snapshot`). A start loads the file, and openraft applies
//! the log after it again, up to the committed log id, each entry once. Nothing acknowledged
//! depends on the state machine's own writes: an acknowledged entry is in the flushed log of
//! a majority. How often a snapshot is built, hence how much log a start applies again, is
//! [`SnapshotPolicy`]'s: about as many bytes of log as the snapshot holds.
//!
//! So the state machine is written once per snapshot, never per heartbeat. Up to format 4 it
//! also wrote every changed record to a sled tree every second, for a start to load instead of
//! the file: at 100k services that took about a sixth of the leader's CPU, at a million half
//! of it, and a shutdown waited for the last such write. A store of an older format is moved
//! over when it opens (see `legacy_records`).
//!
//! A snapshot copies the table under the lock that applies take, so records and log id
//! always belong together even when applies continue while the snapshot is written.
//!
//! Snapshots check themselves ([`crate::snapshot`]): one whose bytes changed is never
//! installed, served or loaded. A start needs the snapshot file once the log is purged, or
//! when the store was restored from a backup: a damaged or missing one is then refused, with
//! a message saying what to do (see [`NeededFor`]). Otherwise the log is whole from its first
//! entry, and a damaged file is moved aside: the state is the log's, applied again.

use std::io::{Seek, SeekFrom, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{RaftSnapshotBuilder, StorageIOError};

use crate::disk::Disk;
use crate::error::{NeededFor, NeededSnapshotDamaged, StoreError, UnknownCluster};
use crate::identity::StoreIdentity;
use crate::legacy_records;
use crate::model::CommandResponse;
use crate::snapshot::{self, decode_state, SnapshotSource};
use crate::snapshot_file::{self, SnapshotFile};
use crate::snapshot_policy::SnapshotPolicy;
use crate::state::{lock, ServicesState, StateView};
use crate::types::{Entry, LogId, SnapshotMeta, StorageError, StoredMembership, TypeConfig};

/// The state machine: in memory, with its snapshot file. Cloning gives another handle on the
/// same state (the snapshot builder is one).
#[derive(Debug, Clone)]
pub struct StateMachineStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The database (of the log), through which the blocking work of snapshots runs (see
    /// [`crate::disk`]).
    disk: Disk,
    /// The current snapshot (a file beside the database).
    snapshot: SnapshotFile,
    /// The store's cluster, written into every snapshot and checked in every one installed.
    identity: StoreIdentity,
    /// The state in memory.
    view: StateView,
    /// Makes snapshot ids unique within this process.
    snapshot_seq: AtomicU64,
    /// The last log id the snapshot file covers (durably written).
    snapshot_last: Mutex<Option<LogId>>,
    /// Held while the snapshot file is written (see [`store_snapshot`]).
    snapshot_writes: Mutex<()>,
    /// A damaged snapshot file was moved aside: the next one asked for is built fresh.
    needs_fresh: AtomicBool,
    /// What tells when the next snapshot is due.
    policy: SnapshotPolicy,
}

impl StateMachineStore {
    /// Loads the state machine: the snapshot file's state, or the empty one without a file
    /// (openraft applies the log after it again). `last_purged` is the log's purge point:
    /// with it, or in a store restored from a backup, the file is needed, and a damaged or
    /// missing one is refused; else a damaged one is moved aside. A store of format 4 or
    /// older has its records tree moved into the snapshot file here (see
    /// [`crate::legacy_records`]).
    pub(crate) fn open(
        disk: &Disk,
        dir: &std::path::Path,
        identity: StoreIdentity,
        last_purged: Option<LogId>,
        events_kept: usize,
    ) -> Result<Self, StoreError> {
        let file = SnapshotFile::new(dir);
        let needed_for = match (last_purged, identity.restored_from()) {
            (Some(to), _) => Some(NeededFor::Purged(to)),
            (None, Some(_)) => Some(NeededFor::Restored),
            (None, None) => None,
        };
        let legacy = legacy_records::open(disk)?;
        // Records of a write in several batches that did not finish are of two log ids: the
        // state comes from the snapshot file (or is the empty one) and the log after it.
        let incomplete = match &legacy {
            Some(tree) => legacy_records::is_incomplete(tree)?,
            None => false,
        };
        let records = match &legacy {
            Some(tree) if !incomplete && !tree.is_empty() => Some(legacy_records::load(tree)?),
            _ => None,
        };
        if incomplete {
            tracing::warn!(
                "the records tree of this older store is of a write that did not finish: the \
                 state is loaded from the snapshot file, and the log after it is applied again"
            );
        }
        let policy = SnapshotPolicy::default();
        let mut needs_fresh = false;
        let from_file = match file.read()? {
            None => None,
            Some(bytes) => {
                policy.sized(bytes.len() as u64);
                match snapshot::decode(&bytes) {
                    Ok((info, held)) => Some(snapshot::into_state(info.header, held)),
                    // The store itself is of this build's format (checked before): a snapshot
                    // file that claims a newer one is damaged too.
                    Err(e @ (StoreError::Damaged { .. } | StoreError::NewerFormat { .. })) => {
                        let records_do = records
                            .as_ref()
                            .is_some_and(|r| r.last_applied >= last_purged);
                        if let (Some(needed_for), false) = (needed_for, records_do) {
                            return Err(StoreError::NeededSnapshotDamaged(Box::new(
                                NeededSnapshotDamaged {
                                    path: file.path(),
                                    needed_for,
                                    source: e,
                                },
                            )));
                        }
                        needs_fresh = true;
                        let moved = file.quarantine()?;
                        tracing::error!(
                            error = %e,
                            moved_to = %moved.display(),
                            "the snapshot file is damaged; it was moved aside, and the state is \
                             rebuilt without it"
                        );
                        None
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        let file_at = from_file.as_ref().map(|s| s.last_applied);
        if incomplete && file_at.flatten() < last_purged {
            return Err(StoreError::RecordsIncomplete {
                snapshot_at: file_at.flatten(),
                purged_to: last_purged,
            });
        }
        let (state, write_file) = match (from_file, records) {
            (Some(f), Some(r)) if r.last_applied > f.last_applied => (r, true),
            (Some(f), _) => (f, false),
            (None, Some(r)) => (r, true),
            (None, None) => match needed_for {
                Some(needed_for) if !needs_fresh => {
                    return Err(StoreError::NeededSnapshotMissing {
                        path: file.path(),
                        needed_for,
                    })
                }
                _ => (ServicesState::default(), false),
            },
        };
        let mut snapshot_last = file_at.flatten();
        if write_file {
            // The records of an older store are newer than its file: they become the file,
            // durably, before their tree goes.
            let source = SnapshotSource::of(&state);
            let id = format!("moved-{}", chrono::Utc::now().timestamp_millis());
            let (_, size) = file.stage(|out| source.encode_to(out, identity.cluster_id(), id))?;
            file.commit()?;
            policy.sized(size);
            snapshot_last = state.last_applied;
        }
        if legacy.is_some() {
            legacy_records::drop_tree(disk)?;
            tracing::info!(
                at = ?state.last_applied,
                records = state.len(),
                "moved the records of an older store into its snapshot file"
            );
        }
        let seq = chrono::Utc::now().timestamp_millis().unsigned_abs();
        Ok(Self {
            inner: Arc::new(Inner {
                disk: disk.clone(),
                snapshot: file,
                identity,
                view: StateView::new(state, events_kept),
                snapshot_seq: AtomicU64::new(seq),
                snapshot_last: Mutex::new(snapshot_last),
                snapshot_writes: Mutex::new(()),
                needs_fresh: AtomicBool::new(needs_fresh),
                policy,
            }),
        })
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

    /// Whether the log up to `log_id` may go: the snapshot file covers it.
    pub(crate) fn snapshot_covers(&self, log_id: &LogId) -> bool {
        lock(&self.inner.snapshot_last).is_some_and(|s| s >= *log_id)
    }

    /// Writes a snapshot file of the state now, so that the log up to `log_id` may go (see
    /// [`Self::snapshot_covers`]). A `log_id` not applied yet cannot be covered (openraft
    /// purges only applied entries; its storage test suite purges a log without a state
    /// machine): that is logged.
    pub(crate) async fn cover_with_snapshot(&self, log_id: &LogId) -> Result<(), StoreError> {
        self.build().await?;
        if !self.snapshot_covers(log_id) {
            tracing::warn!(
                purge = %log_id,
                "the log is purged past what the state machine applied"
            );
        }
        Ok(())
    }

    /// Applies a batch in memory.
    fn apply_batch(&self, entries: Vec<Entry>) -> Vec<CommandResponse> {
        let inner = &self.inner;
        inner.view.write(|state| {
            let mut events = Vec::new();
            let responses = entries
                .iter()
                .map(|e| state.apply_entry_with_events(e, &mut events))
                .collect();
            if let Some(last) = state.last_applied {
                inner.view.events().append(last.index, events);
            }
            inner.policy.applied(&entries);
            responses
        })
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
    /// (tens of megabytes to decode and write) left a log purged past the snapshot file, and the
    /// node could never start again. With it, the purge is covered by the file, and a start
    /// after such a crash loads it. `data` must be a whole snapshot
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
    /// staged), then memory. A snapshot that is damaged, or of another cluster, is refused
    /// before anything is written.
    async fn install(&self, meta: &SnapshotMeta, data: Vec<u8>) -> Result<(), StoreError> {
        // Decoding, writing and syncing tens of megabytes: off the async workers, like build.
        let inner = Arc::clone(&self.inner);
        let meta = meta.clone();
        self.inner
            .disk
            .spawn_blocking(move || {
                let (state, theirs) = decode_state(&meta, &data)?;
                check_cluster(&inner, theirs, &meta.snapshot_id)?;
                write_snapshot_file(&inner, &data, meta.last_log_id)?;
                inner.policy.taken();
                inner.policy.sized(data.len() as u64);
                inner.view.install(state);
                Ok::<(), StoreError>(())
            })
            .await??;
        Ok(())
    }

    /// The current snapshot, checked: a damaged file is moved aside and a fresh snapshot
    /// built in its place, so a damaged one is never served; so is a file of another cluster
    /// than the store's (the file a restore wrote, once the restored group is bootstrapped).
    async fn current_snapshot(&self) -> Result<Option<Snapshot<TypeConfig>>, StoreError> {
        let inner = Arc::clone(&self.inner);
        let read = self
            .inner
            .disk
            .spawn_blocking(move || {
                let Some(mut file) = inner.snapshot.open()? else {
                    return Ok(Current::Absent);
                };
                // Checked whole before it is served, read in pieces: only the file is
                // handed on.
                match snapshot::check_file(&mut file) {
                    Ok(info) if info.header.cluster_id != inner.identity.cluster_id() => {
                        Ok(Current::OtherCluster)
                    }
                    Ok(info) => {
                        file.seek(SeekFrom::Start(0))
                            .map_err(StoreError::io("seek", inner.snapshot.path()))?;
                        Ok(Current::Whole(info.header.meta(), file))
                    }
                    Err(e @ (StoreError::Damaged { .. } | StoreError::NewerFormat { .. })) => {
                        let _writes = lock(&inner.snapshot_writes);
                        let moved = inner.snapshot.quarantine()?;
                        *lock(&inner.snapshot_last) = None;
                        Ok(Current::Damaged(e, moved))
                    }
                    Err(e) => Err(e),
                }
            })
            .await??;
        match read {
            Current::Absent if self.inner.needs_fresh.swap(false, Ordering::Relaxed) => {
                tracing::info!("building a fresh snapshot in place of the damaged one");
                self.build().await.map(Some)
            }
            Current::Absent => Ok(None),
            Current::Whole(meta, file) => Ok(Some(Snapshot {
                meta,
                snapshot: Box::new(tokio::fs::File::from_std(file)),
            })),
            Current::OtherCluster => {
                tracing::info!(
                    "the snapshot file is not of this store's cluster (it was restored from a \
                     backup); building one of the cluster's state"
                );
                self.build().await.map(Some)
            }
            Current::Damaged(e, moved) => {
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
        Ok(self.apply_batch(entries.into_iter().collect()))
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

/// What the snapshot file holds when a snapshot is asked for.
enum Current {
    /// No file.
    Absent,
    /// A whole snapshot of the store's cluster, open at its start.
    Whole(SnapshotMeta, std::fs::File),
    /// A whole snapshot of another cluster (or of none): not to be served.
    OtherCluster,
    /// A damaged file, moved aside to the path given.
    Damaged(StoreError, std::path::PathBuf),
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
