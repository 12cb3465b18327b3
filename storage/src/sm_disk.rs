//! The state machine on disk: one sled tree holds every service record and the state
//! machine's metadata (applied log id, membership, next record id, registry clock), so one
//! atomic `apply_batch` writes records and the log id they reflect together, without the cost
//! of a multi-tree transaction.
//!
//! But a sled batch holds a lock that every other read and write of the process waits for,
//! the log's appends included, for as long as it takes: about 12 µs a record, so more than a
//! second for the 100,000 records a bulk registration changes within one persist, during
//! which a node neither appends nor answers its leader and the group holds elections. So a
//! write of more than [`RECORDS_PER_BATCH`] records ([`write`]) goes in batches of that many,
//! between a marker that is made durable before the first of them and removed, with the
//! metadata, by the last one. A store found with the marker holds records of two different
//! log ids: its records are not used, and the state is loaded from the snapshot file, whose
//! log the store keeps (see `StateMachineStore::open`). The marker's value is empty, which no
//! record decodes from, so a build older than it refuses such a store as damaged instead of
//! reading it.
//!
//! A record's key is its encoded (host, binary), which starts with the host's encoded length
//! and holds the binary's length before the binary; the metadata keys are a zero byte and a
//! name, which no such encoding equals (the test below checks the near misses).

use std::collections::HashSet;
use std::sync::Arc;

use crate::clock::{ClockRate, RegistryClock};
use crate::codec::{decode, decode_record, encode, encode_key};
use crate::disk::Disk;
use crate::error::StoreError;
use crate::model::{ServiceKey, ServiceRecord};
use crate::settings::LivenessSettings;
use crate::state::ServicesState;
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

/// Most records written in one sled batch (a few milliseconds of sled's lock).
pub(crate) const RECORDS_PER_BATCH: usize = 512;

/// Whether `key` is one of the metadata keys (else it is a record's).
fn is_meta(key: &[u8]) -> bool {
    META_KEYS.contains(&key)
}

/// The key a record is stored under.
pub(crate) fn record_key(key: &ServiceKey) -> Result<Vec<u8>, StoreError> {
    encode_key(&(&key.host, &key.binary))
}

/// The state machine's metadata, as of some applied entry (stored beside the records, and
/// the header's fields of a snapshot).
#[derive(Debug, Clone)]
pub(crate) struct Meta {
    pub(crate) last_applied: Option<LogId>,
    pub(crate) membership: StoredMembership,
    pub(crate) next_id: u64,
    pub(crate) clock: RegistryClock,
    pub(crate) settings: Option<LivenessSettings>,
}

impl Meta {
    /// The metadata of `state`.
    pub(crate) fn of(state: &ServicesState) -> Self {
        Self {
            last_applied: state.last_applied,
            membership: state.membership.clone(),
            next_id: state.next_id,
            clock: state.clock,
            settings: state.settings,
        }
    }
}

/// Adds `records` and `meta` to `batch`.
pub(crate) fn add_to_batch<'a>(
    batch: &mut sled::Batch,
    meta: &Meta,
    records: impl IntoIterator<Item = &'a ServiceRecord>,
) -> Result<(), StoreError> {
    for r in records {
        batch.insert(record_key(&r.key())?, encode(r)?);
    }
    add_meta(batch, meta)
}

/// Adds `meta` to `batch`, and the removal of the marker: the records are whole as of it.
fn add_meta(batch: &mut sled::Batch, meta: &Meta) -> Result<(), StoreError> {
    batch.remove(KEY_INCOMPLETE);
    batch.insert(KEY_LAST_APPLIED, encode(&meta.last_applied)?);
    batch.insert(KEY_MEMBERSHIP, encode(&meta.membership)?);
    batch.insert(KEY_NEXT_ID, encode(&meta.next_id)?);
    batch.insert(KEY_CLOCK, encode(&meta.clock)?);
    if meta.clock.rate == ClockRate::FULL {
        batch.remove(KEY_CLOCK_RATE);
    } else {
        batch.insert(KEY_CLOCK_RATE, encode(&meta.clock.rate)?);
    }
    match &meta.settings {
        Some(settings) => batch.insert(KEY_SETTINGS, encode(settings)?),
        None => batch.remove(KEY_SETTINGS),
    }
    Ok(())
}

/// What [`write`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Written {
    /// Records written.
    pub records: usize,
    /// The sled batches they went in (the marker's and the metadata's not counted).
    pub batches: usize,
}

/// Writes `records` and `meta` to `tree` through `disk`, in one batch when there are at most
/// [`RECORDS_PER_BATCH`], else in batches of that many between the marker (see the module
/// doc). When `replace`, every other record in the tree is removed as well. Not flushed,
/// but for the marker.
pub(crate) fn write(
    disk: &Disk,
    tree: &sled::Tree,
    meta: &Meta,
    records: &[&ServiceRecord],
    replace: bool,
) -> Result<Written, StoreError> {
    let mut stale = Vec::new();
    if replace {
        let keep = records
            .iter()
            .map(|r| record_key(&r.key()))
            .collect::<Result<HashSet<_>, _>>()?;
        for key in tree.iter().keys() {
            let key = key?;
            if !is_meta(&key) && !keep.contains(&key[..]) {
                stale.push(key);
            }
        }
    }
    if records.len() + stale.len() <= RECORDS_PER_BATCH {
        let mut batch = sled::Batch::default();
        for key in stale {
            batch.remove(key);
        }
        add_to_batch(&mut batch, meta, records.iter().copied())?;
        disk.write(|| tree.apply_batch(batch))?;
        return Ok(Written {
            records: records.len(),
            batches: 1,
        });
    }
    disk.write(|| tree.insert(KEY_INCOMPLETE, Vec::new()))?;
    disk.flush_blocking()?;
    let mut batches = 0;
    for keys in stale.chunks(RECORDS_PER_BATCH) {
        let mut batch = sled::Batch::default();
        for key in keys {
            batch.remove(key);
        }
        disk.write(|| tree.apply_batch(batch))?;
        batches += 1;
    }
    for chunk in records.chunks(RECORDS_PER_BATCH) {
        let mut batch = sled::Batch::default();
        for r in chunk {
            batch.insert(record_key(&r.key())?, encode(*r)?);
        }
        disk.write(|| tree.apply_batch(batch))?;
        batches += 1;
    }
    let mut batch = sled::Batch::default();
    add_meta(&mut batch, meta)?;
    disk.write(|| tree.apply_batch(batch))?;
    Ok(Written {
        records: records.len(),
        batches,
    })
}

/// [`write`] of the whole of `state`, removing every other record: what a start from the
/// snapshot file and an installed snapshot leave on disk.
pub(crate) fn replace(
    disk: &Disk,
    tree: &sled::Tree,
    state: &ServicesState,
) -> Result<Written, StoreError> {
    let records: Vec<&ServiceRecord> = state.records().collect();
    write(disk, tree, &Meta::of(state), &records, true)
}

/// Whether `tree` holds the marker of a write in several batches that did not finish: its
/// records are of two log ids.
pub(crate) fn is_incomplete(tree: &sled::Tree) -> Result<bool, StoreError> {
    Ok(tree.contains_key(KEY_INCOMPLETE)?)
}

/// A batch that replaces everything in `tree` with `state`.
pub(crate) fn replace_batch(
    tree: &sled::Tree,
    state: &ServicesState,
) -> Result<sled::Batch, StoreError> {
    let mut batch = sled::Batch::default();
    for key in tree.iter().keys() {
        batch.remove(key?);
    }
    add_to_batch(&mut batch, &Meta::of(state), state.records())?;
    Ok(batch)
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

    fn record(i: usize) -> ServiceRecord {
        let at = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default();
        let key = ServiceKey::new(format!("host-{i}"), "cinder-volume");
        let mut r = crate::state::fresh_record(&mut (i as u64), &key, at, at);
        r.report_count = i as u64;
        r
    }

    /// A write of many records goes in batches of at most `RECORDS_PER_BATCH` and leaves no
    /// marker; one of a few goes in one; a replacing write removes the records it does not
    /// hold (in batches as well). What is loaded is what was written.
    #[test]
    fn many_records_are_written_in_short_batches() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(StoreError::io("tempdir", ""))?;
        let disk = Disk::new(sled::Config::new().path(dir.path()).open()?);
        let tree = disk.db().open_tree("services")?;
        let records: Vec<ServiceRecord> = (0..2000).map(record).collect();
        let all: Vec<&ServiceRecord> = records.iter().collect();
        let mut state = ServicesState::default();
        state.next_id = 2000;
        let meta = Meta::of(&state);

        let w = write(&disk, &tree, &meta, &all, false)?;
        assert_eq!(
            w,
            Written {
                records: 2000,
                batches: 4
            },
            "2000 in batches of 512"
        );
        assert!(!is_incomplete(&tree)?, "the last batch removes the marker");
        let loaded = load(&tree)?;
        assert_eq!(loaded.len(), 2000);
        assert_eq!(loaded.next_id, 2000);

        let w = write(&disk, &tree, &meta, &all[..10], false)?;
        assert_eq!(
            w,
            Written {
                records: 10,
                batches: 1
            },
            "a few in one batch"
        );

        let w = write(&disk, &tree, &meta, &all[..100], true)?;
        assert_eq!(
            w,
            Written {
                records: 100,
                batches: 5
            },
            "1900 removed in 4 batches, 100 written in 1"
        );
        assert!(!is_incomplete(&tree)?);
        let loaded = load(&tree)?;
        assert_eq!(
            loaded.len(),
            100,
            "only the replacing write's records are left"
        );
        assert!(loaded.records().all(|r| r.report_count < 100));
        Ok(())
    }
}
