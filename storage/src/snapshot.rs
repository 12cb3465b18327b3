//! The snapshot format: the whole services table with the log id it reflects.

use serde::{Deserialize, Serialize};

use crate::clock::RegistryClock;
use crate::codec::{decode, encode};
use crate::error::StoreError;
use crate::model::ServiceRecord;
use crate::state::ServicesState;
use crate::types::{LogId, SnapshotMeta, StoredMembership};

/// What a snapshot's data holds. Its metadata (last log id, membership) travels beside it in
/// openraft's `SnapshotMeta`; the last applied log id is also kept inside, so data and
/// metadata that do not belong together are refused. `R` is the record list: borrowed when
/// encoding (no copy of the table), owned when decoding; both have the same bytes.
#[derive(Debug, Serialize, Deserialize)]
struct SnapshotPayload<R> {
    /// Log id of the last entry reflected in the records.
    last_applied: Option<LogId>,
    /// Id the next created record gets.
    next_id: u64,
    /// Registry time as of `last_applied`.
    clock: RegistryClock,
    /// Every record, soft-deleted ones included.
    records: R,
}

/// Encodes a state as snapshot data.
pub fn encode_state(state: &ServicesState) -> Result<Vec<u8>, StoreError> {
    encode(&SnapshotPayload {
        last_applied: state.last_applied,
        next_id: state.next_id,
        clock: state.clock,
        records: state.records().collect::<Vec<&ServiceRecord>>(),
    })
}

/// Decodes snapshot data received with `meta` into the state it describes.
pub fn decode_state(meta: &SnapshotMeta, data: &[u8]) -> Result<ServicesState, StoreError> {
    let payload: SnapshotPayload<Vec<ServiceRecord>> = decode(data)?;
    if payload.last_applied != meta.last_log_id {
        return Err(StoreError::Corrupt(format!(
            "snapshot data reflects log id {:?} but its metadata says {:?}",
            payload.last_applied, meta.last_log_id
        )));
    }
    Ok(ServicesState::from_parts(
        payload.last_applied,
        StoredMembership::clone(&meta.last_membership),
        payload.next_id,
        payload.clock,
        payload.records,
    ))
}
