//! The state machine in sled: service records and the applied log id, written together.
//!
//! Every applied batch of entries is one sled transaction over the records and the state
//! machine's metadata, so the disk never holds records without the log id they reflect. The
//! same state lives in memory ([`StateView`]) for reads and snapshots: a snapshot copies it
//! under the lock that applies take, so records and log id always belong together even when
//! applies continue while the snapshot is written.

use std::collections::BTreeSet;
use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{RaftSnapshotBuilder, StorageIOError};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use crate::codec::{decode, encode};
use crate::error::StoreError;
use crate::model::{CommandResponse, ServiceKey};
use crate::snapshot::{decode_state, encode_state};
use crate::state::{ServicesState, StateView};
use crate::store::{TREE_SERVICES, TREE_SM_META, TREE_SNAPSHOT};
use crate::types::{Entry, LogId, SnapshotMeta, StorageError, StoredMembership, TypeConfig};

const KEY_LAST_APPLIED: &[u8] = b"last_applied";
const KEY_MEMBERSHIP: &[u8] = b"membership";
const KEY_NEXT_ID: &[u8] = b"next_id";
const KEY_CLOCK: &[u8] = b"clock";
const KEY_SNAPSHOT_META: &[u8] = b"meta";
const KEY_SNAPSHOT_DATA: &[u8] = b"data";

/// The sled-backed state machine. Cloning gives another handle on the same state (the
/// snapshot builder is one).
#[derive(Debug, Clone)]
pub struct StateMachineStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The database, flushed as a whole.
    db: sled::Db,
    /// Records by encoded key.
    services: sled::Tree,
    /// Last applied log id, membership, next record id.
    meta: sled::Tree,
    /// The current snapshot's metadata and data.
    snapshot: sled::Tree,
    /// The same state in memory.
    view: StateView,
    /// Makes snapshot ids unique within this process.
    snapshot_seq: AtomicU64,
}

/// The three values of the state machine's metadata tree, encoded.
struct EncodedMeta {
    last_applied: Vec<u8>,
    membership: Vec<u8>,
    next_id: Vec<u8>,
    clock: Vec<u8>,
}

impl EncodedMeta {
    fn of(state: &ServicesState) -> Result<Self, StoreError> {
        Ok(Self {
            last_applied: encode(&state.last_applied)?,
            membership: encode(&state.membership)?,
            next_id: encode(&state.next_id)?,
            clock: encode(&state.clock)?,
        })
    }

    fn write(
        &self,
        meta: &sled::transaction::TransactionalTree,
    ) -> Result<(), sled::transaction::UnabortableTransactionError> {
        meta.insert(KEY_LAST_APPLIED, self.last_applied.as_slice())?;
        meta.insert(KEY_MEMBERSHIP, self.membership.as_slice())?;
        meta.insert(KEY_NEXT_ID, self.next_id.as_slice())?;
        meta.insert(KEY_CLOCK, self.clock.as_slice())?;
        Ok(())
    }
}

fn record_key(key: &ServiceKey) -> Result<Vec<u8>, StoreError> {
    encode(&(&key.host, &key.binary))
}

fn tx_result(r: Result<(), TransactionError<StoreError>>) -> Result<(), StoreError> {
    r.map_err(StoreError::from)
}

impl StateMachineStore {
    pub(crate) fn open(db: &sled::Db) -> Result<Self, StoreError> {
        let services = db.open_tree(TREE_SERVICES)?;
        let meta = db.open_tree(TREE_SM_META)?;
        let snapshot = db.open_tree(TREE_SNAPSHOT)?;
        let get = |k: &[u8]| -> Result<Option<sled::IVec>, StoreError> { Ok(meta.get(k)?) };
        let last_applied: Option<LogId> = match get(KEY_LAST_APPLIED)? {
            Some(v) => decode(&v)?,
            None => None,
        };
        let membership: StoredMembership = match get(KEY_MEMBERSHIP)? {
            Some(v) => decode(&v)?,
            None => StoredMembership::default(),
        };
        let mut state = ServicesState::default();
        if let Some(v) = get(KEY_NEXT_ID)? {
            state.next_id = decode(&v)?;
        }
        if let Some(v) = get(KEY_CLOCK)? {
            state.clock = decode(&v)?;
        }
        let records = services
            .iter()
            .map(|kv| decode(&kv?.1))
            .collect::<Result<Vec<_>, _>>()?;
        let state = ServicesState::from_parts(
            last_applied,
            membership,
            state.next_id,
            state.clock,
            records,
        );
        let seq = chrono::Utc::now().timestamp_millis().unsigned_abs();
        Ok(Self {
            inner: Arc::new(Inner {
                db: db.clone(),
                services,
                meta,
                snapshot,
                view: StateView::new(state),
                snapshot_seq: AtomicU64::new(seq),
            }),
        })
    }

    /// A read handle on the in-memory services table, for the API.
    pub fn view(&self) -> StateView {
        self.inner.view.clone()
    }

    /// Applies a batch in memory, then writes the changed records and the metadata in one
    /// transaction.
    fn apply_batch(&self, entries: Vec<Entry>) -> Result<Vec<CommandResponse>, StoreError> {
        let mut changed = BTreeSet::new();
        let (responses, records, meta) = self.inner.view.write(|state| {
            let responses: Vec<_> = entries
                .iter()
                .map(|e| state.apply_entry(e, &mut changed))
                .collect();
            let records = changed
                .iter()
                .filter_map(|k| state.get(k))
                .map(|r| Ok((record_key(&r.key())?, encode(r)?)))
                .collect::<Result<Vec<_>, StoreError>>();
            (responses, records, EncodedMeta::of(state))
        });
        let (records, meta) = (records?, meta?);
        let inner = &self.inner;
        tx_result((&inner.services, &inner.meta).transaction(|(svc, m)| {
            for (k, v) in &records {
                svc.insert(k.as_slice(), v.as_slice())?;
            }
            meta.write(m)?;
            Ok::<(), ConflictableTransactionError<StoreError>>(())
        }))?;
        Ok(responses)
    }

    /// Copies the state with its applied log id, encodes it, and stores it as the current
    /// snapshot (flushed).
    async fn build(&self) -> Result<Snapshot<TypeConfig>, StoreError> {
        let state = self.inner.view.read(ServicesState::clone);
        let data = encode_state(&state)?;
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
        let mut batch = sled::Batch::default();
        batch.insert(KEY_SNAPSHOT_META, encode(&meta)?);
        batch.insert(KEY_SNAPSHOT_DATA, data.as_slice());
        self.inner.snapshot.apply_batch(batch)?;
        self.inner.db.flush_async().await?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }

    /// Replaces the whole state with a snapshot's, on disk in one transaction, then in memory.
    async fn install(&self, meta: &SnapshotMeta, data: Vec<u8>) -> Result<(), StoreError> {
        let state = decode_state(meta, &data)?;
        let mut replace = sled::Batch::default();
        for kv in self.inner.services.iter() {
            replace.remove(kv?.0);
        }
        for r in state.records() {
            replace.insert(record_key(&r.key())?, encode(r)?);
        }
        let enc_meta = EncodedMeta::of(&state)?;
        let snap_meta = encode(meta)?;
        let inner = &self.inner;
        tx_result((&inner.services, &inner.meta, &inner.snapshot).transaction(
            |(svc, m, snap)| {
                svc.apply_batch(&replace)?;
                enc_meta.write(m)?;
                snap.insert(KEY_SNAPSHOT_META, snap_meta.as_slice())?;
                snap.insert(KEY_SNAPSHOT_DATA, data.as_slice())?;
                Ok::<(), ConflictableTransactionError<StoreError>>(())
            },
        ))?;
        inner.db.flush_async().await?;
        inner.view.install(state);
        Ok(())
    }

    fn current_snapshot(&self) -> Result<Option<Snapshot<TypeConfig>>, StoreError> {
        let snap = &self.inner.snapshot;
        let (Some(meta), Some(data)) = (snap.get(KEY_SNAPSHOT_META)?, snap.get(KEY_SNAPSHOT_DATA)?)
        else {
            return Ok(None);
        };
        Ok(Some(Snapshot {
            meta: decode(&meta)?,
            snapshot: Box::new(Cursor::new(data.to_vec())),
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
