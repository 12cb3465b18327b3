//! The Raft log in sled: entries, vote, committed and purged log ids.
//!
//! Durability rules: the vote is flushed before `save_vote` returns; appended entries are
//! flushed (one flush per appended batch) before openraft is told they are; the last purged
//! log id reaches disk before any entry is removed. Writes and flushes go through
//! [`Disk`](crate::disk), which stops the store's I/O at the first failure.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{RaftLogId, RaftLogReader, StorageIOError};

use crate::codec::{decode, encode};
use crate::disk::{DatabaseWatch, Disk};
use crate::error::StoreError;
use crate::state::lock;
use crate::state_machine::StateMachineStore;
use crate::trees::{TREE_LOG, TREE_LOG_META};
use crate::types::{Entry, LogId, StorageError, TypeConfig, Vote};

const KEY_VOTE: &[u8] = b"vote";
const KEY_LAST_PURGED: &[u8] = b"last_purged";
const KEY_COMMITTED: &[u8] = b"committed";

/// The sled-backed Raft log. Cloning gives another handle on the same trees (a log reader).
#[derive(Debug, Clone)]
pub struct LogStore {
    /// The database, flushed as a whole.
    disk: Disk,
    /// Entries by big-endian index.
    log: sled::Tree,
    /// Vote, last purged and committed log ids.
    meta: sled::Tree,
    /// The state machine, whose snapshot file must cover a purge (built first when not).
    sm: StateMachineStore,
    /// The latest entries, so that applying and replicating them copies them instead of
    /// reading and decoding them again.
    recent: Arc<Mutex<Recent>>,
    /// The last purged log id (as on disk): entries up to it are gone for readers even while
    /// a background thread is still removing them from the tree.
    purged: Arc<Mutex<Option<LogId>>>,
}

/// Most entries kept in [`Recent`].
const RECENT_ENTRIES: usize = 64;

/// A copy of the log's last entries (up to [`RECENT_ENTRIES`], contiguous, ending at the
/// log's last entry; empty after a restart until entries are appended).
#[derive(Debug, Default)]
struct Recent {
    entries: BTreeMap<u64, Entry>,
}

impl Recent {
    /// Notes entries just written after the log's last ones.
    fn appended(&mut self, entries: Vec<Entry>) {
        let first = entries.first().map(|e| e.get_log_id().index);
        if let (Some(first), Some((&last, _))) = (first, self.entries.last_key_value()) {
            if first != last + 1 {
                // Not a continuation (a truncation went before): start over.
                self.entries.clear();
            }
        }
        for e in entries {
            self.entries.insert(e.get_log_id().index, e);
        }
        while self.entries.len() > RECENT_ENTRIES {
            self.entries.pop_first();
        }
    }

    /// The entries from `start` to `end` (inclusive; to the last when `None`), when all of
    /// them are here.
    fn get(&self, start: u64, end: Option<u64>) -> Option<Vec<Entry>> {
        let (&first, _) = self.entries.first_key_value()?;
        let (&last, _) = self.entries.last_key_value()?;
        let end = end.unwrap_or(last);
        if start < first || end > last {
            return None;
        }
        Some(
            self.entries
                .range(start..=end)
                .map(|(_, e)| e.clone())
                .collect(),
        )
    }
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// The last purged log id recorded in the log's metadata tree `meta`.
pub(crate) fn read_last_purged(meta: &sled::Tree) -> Result<Option<LogId>, StoreError> {
    meta.get(KEY_LAST_PURGED)?.map(|v| decode(&v)).transpose()
}

impl LogStore {
    pub(crate) fn open(disk: &Disk, sm: StateMachineStore) -> Result<Self, StoreError> {
        Ok(Self {
            disk: disk.clone(),
            log: disk.db().open_tree(TREE_LOG)?,
            meta: disk.db().open_tree(TREE_LOG_META)?,
            sm,
            recent: Arc::default(),
            purged: Arc::default(),
        })
        .and_then(|store| {
            let purged = store.get_meta(KEY_LAST_PURGED)?;
            *lock(&store.purged) = purged;
            Ok(store)
        })
    }

    /// Waits until the blocking work started on the database has ended: the removal of
    /// purged entries, snapshot files being encoded or written (also those whose caller gave
    /// up on them). A node's shutdown calls it once Raft has stopped, before the last flush,
    /// so that nothing writes to the database after the node let go of it.
    pub async fn finish_background(&self) {
        let background = self.disk.background();
        background.close();
        background.wait().await;
    }

    /// A watch on the blocking work started on the database (running while it holds any);
    /// it holds nothing of the store.
    pub fn background_watch(&self) -> tokio_util::task::TaskTracker {
        self.disk.background()
    }

    /// A watch on whether anything still holds the database.
    pub fn database_watch(&self) -> DatabaseWatch {
        self.disk.watch()
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
        let first = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let first = match *lock(&self.purged) {
            Some(p) => first.max(p.index + 1),
            None => first,
        };
        let last = match range.end_bound() {
            Bound::Included(i) => Some(*i),
            Bound::Excluded(0) => return Ok(Vec::new()),
            Bound::Excluded(i) => Some(i - 1),
            Bound::Unbounded => None,
        };
        if last.is_some_and(|l| l < first) {
            return Ok(Vec::new());
        }
        if let Some(hit) = lock(&self.recent).get(first, last) {
            return Ok(hit);
        }
        let end = match last {
            Some(l) => Bound::Included(index_key(l)),
            None => Bound::Unbounded,
        };
        self.log
            .range::<[u8; 8], _>((Bound::Included(index_key(first)), end))
            .map(|kv| {
                let (_, v) = kv?;
                decode::<Entry>(&v)
            })
            .collect()
    }

    fn log_state(&self) -> Result<LogState<TypeConfig>, StoreError> {
        let last_purged: Option<LogId> = self.get_meta(KEY_LAST_PURGED)?;
        // An entry at or before the purge point may linger while it is being removed.
        let last = self.last_entry_log_id()?.max(last_purged);
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn append_entries(
        &self,
        entries: impl IntoIterator<Item = Entry>,
    ) -> Result<(), StoreError> {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let mut batch = sled::Batch::default();
        for entry in &entries {
            batch.insert(&index_key(entry.get_log_id().index), encode(entry)?);
        }
        self.disk.write(|| self.log.apply_batch(batch))?;
        lock(&self.recent).appended(entries);
        self.disk.flush().await?;
        Ok(())
    }

    async fn remove_from(&self, index: u64) -> Result<(), StoreError> {
        lock(&self.recent).entries.retain(|&i, _| i < index);
        let mut batch = sled::Batch::default();
        for kv in self.log.range(index_key(index)..) {
            batch.remove(kv?.0);
        }
        self.disk.write(|| self.log.apply_batch(batch))?;
        self.disk.flush().await?;
        Ok(())
    }

    async fn purge_upto(&self, log_id: LogId) -> Result<(), StoreError> {
        // The purge point is durable first, and with it what the state machine needs to catch
        // up after a crash: openraft purges only what the snapshot file covers (a start loads
        // it and applies the log after it again); a purge beyond it writes a snapshot file of
        // the state first.
        if !self.sm.snapshot_covers(&log_id) {
            self.sm.cover_with_snapshot(&log_id).await?;
        }
        let value = encode(&log_id)?;
        self.disk
            .write(|| self.meta.insert(KEY_LAST_PURGED, value))?;
        self.disk.flush().await?;
        *lock(&self.purged) = Some(log_id);
        lock(&self.recent).entries.retain(|&i, _| i > log_id.index);
        // Removing thousands of entries takes a while, and openraft waits for a purge before
        // it appends again: readers already skip them, so a blocking thread removes them.
        let log = self.log.clone();
        let disk = self.disk.clone();
        let removal = move || -> Result<(), StoreError> {
            let mut batch = sled::Batch::default();
            for kv in log.range(..=index_key(log_id.index)) {
                batch.remove(kv?.0);
            }
            disk.write(|| log.apply_batch(batch))
        };
        // In the database's background set: the node's shutdown waits for it.
        drop(self.disk.spawn_blocking(move || {
            if let Err(e) = removal() {
                tracing::warn!(error = %e, upto = log_id.index, "removing purged log entries failed; the next purge retries");
            }
        }));
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
            let value = encode(vote)?;
            self.disk.write(|| self.meta.insert(KEY_VOTE, value))?;
            self.disk.flush().await?;
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
            Some(c) => encode(&c)
                .and_then(|v| self.disk.write(|| self.meta.insert(KEY_COMMITTED, v)))
                .map(|_| ()),
            None => self
                .disk
                .write(|| self.meta.remove(KEY_COMMITTED))
                .map(|_| ()),
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
        self.disk.flush().await
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;

    fn entry(index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    fn indexes(entries: Option<Vec<Entry>>) -> Option<Vec<u64>> {
        entries.map(|es| es.iter().map(|e| e.log_id.index).collect())
    }

    #[test]
    fn recent_entries_serve_only_ranges_they_hold_whole() {
        let mut r = Recent::default();
        assert_eq!(indexes(r.get(1, None)), None, "empty after a restart");
        r.appended((1..=10).map(entry).collect());
        assert_eq!(indexes(r.get(3, Some(5))), Some(vec![3, 4, 5]));
        assert_eq!(indexes(r.get(9, None)), Some(vec![9, 10]), "to the last");
        assert_eq!(
            indexes(r.get(0, Some(2))),
            None,
            "starts before the first held"
        );
        assert_eq!(
            indexes(r.get(10, Some(11))),
            None,
            "ends after the last held"
        );

        r.appended((11..=100).map(entry).collect());
        assert_eq!(r.entries.len(), RECENT_ENTRIES, "bounded");
        let first = 101 - RECENT_ENTRIES as u64;
        assert_eq!(indexes(r.get(first - 1, Some(first))), None);
        assert!(r.get(first, None).is_some());

        // After a truncation, appends that do not continue the held entries replace them.
        r.appended(vec![entry(50)]);
        assert_eq!(indexes(r.get(50, None)), Some(vec![50]));
        assert_eq!(indexes(r.get(49, Some(50))), None);
    }

    /// The entries a purge removes in the background are gone from the tree once
    /// [`LogStore::finish_background`] returns, and nothing of that work is left; the
    /// database is closed once the store's handles are dropped.
    #[tokio::test]
    async fn a_purge_removal_is_waited_for_and_then_nothing_holds_the_database(
    ) -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = crate::store::open_store(dir.path())?;
        let log = store.log.clone();
        log.append_entries((1..=2000).map(entry)).await?;
        log.purge_upto(entry(1500).log_id).await?;
        let background = log.background_watch();

        log.finish_background().await;

        assert!(background.is_empty(), "no removal runs any more");
        let left = log.log.range(..=index_key(1500)).count();
        assert_eq!(left, 0, "the purged entries are removed from the tree");
        assert_eq!(
            log.log.len(),
            500,
            "the entries after the purge point are kept"
        );
        let database = log.database_watch();
        assert!(!database.is_closed(), "the store still holds its database");
        drop((store, log));
        assert!(
            database.is_closed(),
            "nothing holds the database once dropped"
        );
        Ok(())
    }
}
