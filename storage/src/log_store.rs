//! The Raft log in sled: entries, vote, committed and purged log ids.
//!
//! Durability rules: the vote is flushed before `save_vote` returns; appended entries are
//! flushed (one flush per appended batch) before openraft is told they are; the last purged
//! log id reaches disk before any entry is removed.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{RaftLogId, RaftLogReader, StorageIOError};

use crate::codec::{decode, encode};
use crate::error::StoreError;
use crate::store::{TREE_LOG, TREE_LOG_META};
use crate::types::{Entry, LogId, StorageError, TypeConfig, Vote};

const KEY_VOTE: &[u8] = b"vote";
const KEY_LAST_PURGED: &[u8] = b"last_purged";
const KEY_COMMITTED: &[u8] = b"committed";

/// The sled-backed Raft log. Cloning gives another handle on the same trees (a log reader).
#[derive(Debug, Clone)]
pub struct LogStore {
    /// The database, flushed as a whole.
    db: sled::Db,
    /// Entries by big-endian index.
    log: sled::Tree,
    /// Vote, last purged and committed log ids.
    meta: sled::Tree,
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

impl LogStore {
    pub(crate) fn open(db: &sled::Db) -> Result<Self, StoreError> {
        Ok(Self {
            db: db.clone(),
            log: db.open_tree(TREE_LOG)?,
            meta: db.open_tree(TREE_LOG_META)?,
        })
    }

    fn get_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        self.meta.get(key)?.map(|v| decode(&v)).transpose()
    }

    fn last_entry_log_id(&self) -> Result<Option<LogId>, StoreError> {
        match self.log.last()? {
            None => Ok(None),
            Some((_, v)) => Ok(Some(*decode::<Entry>(&v)?.get_log_id())),
        }
    }

    fn entries(&self, range: impl RangeBounds<u64>) -> Result<Vec<Entry>, StoreError> {
        let start = match range.start_bound() {
            Bound::Included(i) => Bound::Included(index_key(*i)),
            Bound::Excluded(i) => Bound::Excluded(index_key(*i)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => Bound::Included(index_key(*i)),
            Bound::Excluded(i) => Bound::Excluded(index_key(*i)),
            Bound::Unbounded => Bound::Unbounded,
        };
        self.log
            .range::<[u8; 8], _>((start, end))
            .map(|kv| {
                let (_, v) = kv?;
                decode::<Entry>(&v)
            })
            .collect()
    }

    fn log_state(&self) -> Result<LogState<TypeConfig>, StoreError> {
        let last_purged: Option<LogId> = self.get_meta(KEY_LAST_PURGED)?;
        let last = self.last_entry_log_id()?.or(last_purged);
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn append_entries(
        &self,
        entries: impl IntoIterator<Item = Entry>,
    ) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for entry in entries {
            batch.insert(&index_key(entry.get_log_id().index), encode(&entry)?);
        }
        self.log.apply_batch(batch)?;
        self.db.flush_async().await?;
        Ok(())
    }

    async fn remove_from(&self, index: u64) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for kv in self.log.range(index_key(index)..) {
            batch.remove(kv?.0);
        }
        self.log.apply_batch(batch)?;
        self.db.flush_async().await?;
        Ok(())
    }

    async fn purge_upto(&self, log_id: LogId) -> Result<(), StoreError> {
        // The purge point is durable first, and with it whatever the state machine applied so
        // far (same database): the log is never shorter than what the disk state needs.
        self.meta.insert(KEY_LAST_PURGED, encode(&log_id)?)?;
        self.db.flush_async().await?;
        let mut batch = sled::Batch::default();
        for kv in self.log.range(..=index_key(log_id.index)) {
            batch.remove(kv?.0);
        }
        self.log.apply_batch(batch)?;
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        self.entries(range)
            .map_err(|e| StorageIOError::read_logs(&e).into())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        self.log_state()
            .map_err(|e| StorageIOError::read_logs(&e).into())
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let res: Result<(), StoreError> = async {
            self.meta.insert(KEY_VOTE, encode(vote)?)?;
            self.db.flush_async().await?;
            Ok(())
        }
        .await;
        res.map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.get_meta(KEY_VOTE)
            .map_err(|e| StorageIOError::read_vote(&e).into())
    }

    /// The committed log id is written without a flush: after a crash it may be older than
    /// it was, and openraft only re-applies less on start-up; the leader commits the rest.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let res: Result<(), StoreError> = match committed {
            Some(c) => {
                encode(&c).and_then(|v| Ok(self.meta.insert(KEY_COMMITTED, v).map(|_| ())?))
            }
            None => self
                .meta
                .remove(KEY_COMMITTED)
                .map(|_| ())
                .map_err(Into::into),
        };
        res.map_err(|e| StorageIOError::write_logs(&e).into())
    }

    /// Never claims more committed than the log holds, whatever reached disk first.
    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        let res: Result<Option<LogId>, StoreError> = (|| {
            let committed: Option<LogId> = self.get_meta(KEY_COMMITTED)?;
            let last = self.log_state()?.last_log_id;
            Ok(committed.min(last))
        })();
        res.map_err(|e| StorageIOError::read_logs(&e).into())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        match self.append_entries(entries).await {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(StorageIOError::write_logs(&e).into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.remove_from(log_id.index)
            .await
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.purge_upto(log_id)
            .await
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }
}

impl LogStore {
    /// Flushes everything written to the node's database (used on shutdown).
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }
}
