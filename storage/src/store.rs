//! Opening a node's storage: one sled database (one tree per concern) and the snapshot file
//! beside it; and preparing an empty store from a backup ([`restore`]).

use std::path::Path;

use crate::error::StoreError;
use crate::identity::{Incarnation, RestoredFrom, StoreIdentity};
use crate::log_store::{self, LogStore};
use crate::sm_disk;
use crate::snapshot::{self, SnapshotInfo};
use crate::state::ServicesState;
use crate::state_machine::StateMachineStore;
use crate::types::StoredMembership;

/// Tree of log entries, keyed by big-endian index so sled's order is the log's order.
pub(crate) const TREE_LOG: &str = "raft_log";
/// Tree of the log's metadata: vote, last purged log id, committed log id; and the store's
/// identity (format version, incarnation, cluster id).
pub(crate) const TREE_LOG_META: &str = "raft_log_meta";
/// Tree of the state machine: service records keyed by the encoded (host, binary), and its
/// metadata (applied log id, membership, next record id, clock).
pub(crate) const TREE_SERVICES: &str = "services";

/// sled's page cache per node (its default is 1 GiB). Reads never go to sled (the table is
/// in memory, recent log entries too), so the cache only speeds up writes to the trees and
/// a lagging follower's log reads.
const CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// A node's opened storage.
#[derive(Debug, Clone)]
pub struct Store {
    /// The Raft log.
    pub log: LogStore,
    /// The state machine.
    pub sm: StateMachineStore,
    /// Which cluster the store belongs to, and its incarnation.
    pub identity: StoreIdentity,
}

fn open_db(dir: &Path) -> Result<sled::Db, StoreError> {
    Ok(sled::Config::new()
        .path(dir)
        .cache_capacity(CACHE_BYTES)
        .open()?)
}

/// Opens (or creates) the store under `dir` and loads the state machine into memory. A new
/// store gets a new incarnation; a store of a newer format is refused.
pub fn open_store(dir: &Path) -> Result<Store, StoreError> {
    let db = open_db(dir)?;
    let meta = db.open_tree(TREE_LOG_META)?;
    let fresh = meta.is_empty()
        && db.open_tree(TREE_LOG)?.is_empty()
        && db.open_tree(TREE_SERVICES)?.is_empty()
        && !StateMachineStore::has_snapshot_file(dir);
    let identity = StoreIdentity::open(&db, &meta, dir, fresh)?;
    let last_purged = log_store::read_last_purged(&meta)?;
    let sm = StateMachineStore::open(&db, dir, identity.clone(), last_purged)?;
    let log = LogStore::open(&db, sm.clone())?;
    Ok(Store { log, sm, identity })
}

/// What [`restore`] prepared.
#[derive(Debug, Clone)]
pub struct RestoreSummary {
    /// The backup it was prepared from.
    pub backup: SnapshotInfo,
    /// The new store's incarnation.
    pub incarnation: Incarnation,
}

/// Prepares a new store in `dir` (which must not exist or be empty) from the backup `bytes`:
/// every record, the registry clock and the id counter, with no log and no membership. A
/// node started on it bootstraps a **new** cluster (a new cluster id) together with the
/// other members restored from the same backup. A damaged backup is refused before `dir` is
/// touched.
pub fn restore(dir: &Path, bytes: &[u8]) -> Result<RestoreSummary, StoreError> {
    let (info, records) = snapshot::decode(bytes)?;
    if let Ok(mut entries) = std::fs::read_dir(dir) {
        if entries.next().is_some() {
            return Err(StoreError::NotEmpty(format!(
                "{} is not empty: a backup is restored into an empty data directory only \
                 (move the old one aside first)",
                dir.display()
            )));
        }
    }
    std::fs::create_dir_all(dir).map_err(StoreError::io("create", dir))?;
    let db = open_db(dir)?;
    let meta = db.open_tree(TREE_LOG_META)?;
    let identity = StoreIdentity::open(&db, &meta, dir, true)?;
    let h = &info.header;
    let state = ServicesState::from_parts(
        None,
        StoredMembership::default(),
        h.next_id,
        h.clock,
        records,
    );
    let services = db.open_tree(TREE_SERVICES)?;
    services.apply_batch(sm_disk::replace_batch(&services, &state)?)?;
    let from = RestoredFrom {
        cluster_id: h.cluster_id,
        last_log_id: h.last_log_id,
        checksum: info.checksum,
    };
    StoreIdentity::set_restored_from(&db, &meta, &from)?;
    Ok(RestoreSummary {
        incarnation: identity.incarnation(),
        backup: info,
    })
}
