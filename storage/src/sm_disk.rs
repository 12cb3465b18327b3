//! The state machine on disk: one sled tree holds every service record and the state
//! machine's metadata (applied log id, membership, next record id, registry clock), so one
//! atomic `apply_batch` writes records and the log id they reflect together, without the cost
//! of a multi-tree transaction.
//!
//! A record's key is its encoded (host, binary), which starts with the host's encoded length
//! and holds the binary's length before the binary; the metadata keys are a zero byte and a
//! name, which no such encoding equals (the test below checks the near misses).

use crate::clock::{ClockRate, RegistryClock};
use crate::codec::{decode, decode_record, encode, encode_key};
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

/// Every metadata key.
const META_KEYS: [&[u8]; 6] = [
    KEY_LAST_APPLIED,
    KEY_MEMBERSHIP,
    KEY_NEXT_ID,
    KEY_CLOCK,
    KEY_SETTINGS,
    KEY_CLOCK_RATE,
];

/// Whether `key` is one of the metadata keys (else it is a record's).
fn is_meta(key: &[u8]) -> bool {
    META_KEYS.contains(&key)
}

/// The key a record is stored under.
pub(crate) fn record_key(key: &ServiceKey) -> Result<Vec<u8>, StoreError> {
    encode_key(&(&key.host, &key.binary))
}

/// The state machine's metadata, as of some applied entry.
pub(crate) struct Meta {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    next_id: u64,
    clock: RegistryClock,
    settings: Option<LivenessSettings>,
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
    batch.insert(KEY_LAST_APPLIED, encode(&meta.last_applied)?);
    batch.insert(KEY_MEMBERSHIP, encode(&meta.membership)?);
    batch.insert(KEY_NEXT_ID, encode(&meta.next_id)?);
    batch.insert(KEY_CLOCK, encode(&meta.clock)?);
    if meta.clock.rate == ClockRate::FULL {
        batch.remove(KEY_CLOCK_RATE);
    } else {
        batch.insert(KEY_CLOCK_RATE, encode(&meta.clock.rate)?);
    }
    if let Some(settings) = &meta.settings {
        batch.insert(KEY_SETTINGS, encode(settings)?);
    }
    Ok(())
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
            records.push(decode_record(&v)?);
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
}
