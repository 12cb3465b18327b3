//! The records tree of stores of formats 1 to 4, read once to move it into the snapshot file.
//!
//! Up to format 4 the state machine kept a copy of every record in a sled tree, beside its
//! metadata (applied log id, membership, next record id, registry clock), written in the
//! background every second; from format 5 its state on disk is the snapshot file and the log
//! after it (see [`crate::state_machine`]). A store of an older format is opened by reading
//! the tree ([`load`], unless [`is_incomplete`]), making a snapshot file of it when it is newer than the file, and then
//! dropping the tree ([`drop_tree`]).
//!
//! A write of more than 512 records went in several sled batches, between a marker made
//! durable before the first of them and removed, with the metadata, by the last one. A tree
//! found with the marker ([`is_incomplete`]) holds records of two log ids: it is never loaded,
//! and the state comes from the snapshot file and the log after it.
//!
//! A record's key is its encoded (host, binary), which starts with the host's encoded length
//! and holds the binary's length before the binary; the metadata keys are a zero byte and a
//! name, which no such encoding equals (the test below checks the near misses).

use std::sync::Arc;

use crate::codec::{decode, decode_record};
use crate::disk::Disk;
use crate::error::StoreError;
use crate::state::ServicesState;
use crate::trees::TREE_SERVICES;
use crate::types::{LogId, StoredMembership};

const KEY_LAST_APPLIED: &[u8] = b"\0last_applied";
const KEY_MEMBERSHIP: &[u8] = b"\0membership";
const KEY_NEXT_ID: &[u8] = b"\0next_id";
const KEY_CLOCK: &[u8] = b"\0clock";
/// The liveness settings (format 3; absent before the log carried them).
const KEY_SETTINGS: &[u8] = b"\0settings";
/// The registry clock's rate (format 4; absent while it runs at full rate).
const KEY_CLOCK_RATE: &[u8] = b"\0clock_rate";
/// Present while a write in several batches is under way (see the module doc).
const KEY_INCOMPLETE: &[u8] = b"\0incomplete";

/// Every metadata key.
const META_KEYS: [&[u8]; 7] = [
    KEY_LAST_APPLIED,
    KEY_MEMBERSHIP,
    KEY_NEXT_ID,
    KEY_CLOCK,
    KEY_SETTINGS,
    KEY_CLOCK_RATE,
    KEY_INCOMPLETE,
];

/// Whether `key` is one of the metadata keys (else it is a record's).
fn is_meta(key: &[u8]) -> bool {
    META_KEYS.contains(&key)
}

/// The records tree of the store on `disk`, when it has one (formats 1 to 4; it is not
/// created here).
pub(crate) fn open(disk: &Disk) -> Result<Option<sled::Tree>, StoreError> {
    let db = disk.db();
    if !db
        .tree_names()
        .iter()
        .any(|n| n == TREE_SERVICES.as_bytes())
    {
        return Ok(None);
    }
    Ok(Some(db.open_tree(TREE_SERVICES)?))
}

/// Drops the records tree (flushed): the snapshot file holds the state from now on.
pub(crate) fn drop_tree(disk: &Disk) -> Result<(), StoreError> {
    disk.write(|| disk.db().drop_tree(TREE_SERVICES))?;
    disk.flush_blocking()
}

/// Whether `tree` holds the marker of a write in several batches that did not finish: its
/// records are of two log ids.
pub(crate) fn is_incomplete(tree: &sled::Tree) -> Result<bool, StoreError> {
    Ok(tree.contains_key(KEY_INCOMPLETE)?)
}

/// The state stored in `tree` (the empty state when it holds none).
pub(crate) fn load(tree: &sled::Tree) -> Result<ServicesState, StoreError> {
    let get = |k: &[u8]| -> Result<Option<sled::IVec>, StoreError> { Ok(tree.get(k)?) };
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
    if let Some(v) = get(KEY_CLOCK_RATE)? {
        state.clock.rate = decode(&v)?;
    }
    if let Some(v) = get(KEY_SETTINGS)? {
        state.settings = Some(decode(&v)?);
    }
    let mut records = Vec::new();
    for kv in tree.iter() {
        let (k, v) = kv?;
        if !is_meta(&k) {
            // Each into the `Arc` the state keeps (not a second, doubling vector of them).
            records.push(Arc::new(decode_record(&v)?));
        }
    }
    Ok(ServicesState::from_parts(
        last_applied,
        membership,
        state.next_id,
        state.clock,
        state.settings,
        records,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::encode_key;
    use crate::model::ServiceKey;

    /// The key a record was stored under.
    fn record_key(key: &ServiceKey) -> Result<Vec<u8>, StoreError> {
        encode_key(&(&key.host, &key.binary))
    }

    #[test]
    fn record_keys_never_look_like_metadata() {
        let long = "x".repeat(255);
        let mut cases = vec![
            ("h".to_string(), "cinder-volume".to_string()),
            (long.clone(), long),
        ];
        for meta in META_KEYS {
            assert!(is_meta(meta));
            // The closest a record can come: an empty host, and the rest of a metadata key
            // as the binary.
            let name = String::from_utf8_lossy(&meta[1..]).into_owned();
            cases.push((String::new(), name.clone()));
            cases.push((String::new(), name[1..].to_string()));
        }
        for (host, binary) in cases {
            let key =
                record_key(&ServiceKey::new(host.as_str(), binary.as_str())).expect("encodes");
            assert!(
                !is_meta(&key),
                "({host:?}, {binary:?}) encodes to a metadata key"
            );
        }
    }
}
