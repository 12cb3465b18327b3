//! Opening a node's storage: one sled database (one tree per concern), the snapshot file and
//! the disk reserve beside it.

use std::fs;
use std::path::Path;

use crate::error::StoreError;
use crate::log_store::LogStore;
use crate::reserve::Reserve;
use crate::state_machine::StateMachineStore;

/// Tree of log entries, keyed by big-endian index so sled's order is the log's order.
pub(crate) const TREE_LOG: &str = "raft_log";
/// Tree of the log's metadata: vote, last purged log id, committed log id.
pub(crate) const TREE_LOG_META: &str = "raft_log_meta";
/// Tree of the state machine: service records keyed by the encoded (host, binary), and its
/// metadata (applied log id, membership, next record id, clock).
pub(crate) const TREE_SERVICES: &str = "services";

/// sled's page cache per node (its default is 1 GiB). Reads never go to sled (the table is
/// in memory, recent log entries too), so the cache only speeds up writes to the trees and
/// a lagging follower's log reads.
const CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// Opens (or creates) the database under `dir` and loads the state machine into memory.
///
/// sled opens only with room on the disk for what it writes while opening (see
/// [`reserve`](crate::reserve)): a disk too full for that refuses the start with
/// [`StoreError::DiskFull`] and the store is left as it was.
pub fn open_store(dir: &Path) -> Result<(LogStore, StateMachineStore), StoreError> {
    fs::create_dir_all(dir)
        .map_err(|e| StoreError::Io(format!("creating {}: {e}", dir.display())))?;
    let reserve = Reserve::new(dir);
    reserve.claim()?;
    reserve.release()?;
    let db = sled::Config::new()
        .path(dir)
        .cache_capacity(CACHE_BYTES)
        .open()?;
    reserve.claim()?;
    let sm = StateMachineStore::open(&db, dir)?;
    let log = LogStore::open(&db, sm.clone())?;
    Ok((log, sm))
}
