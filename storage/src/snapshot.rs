//! The snapshot format: the whole services table with the log id it reflects, in one
//! self-checking blob. The same bytes are the node's snapshot file, the data openraft streams
//! to a follower, and a backup (`registryctl snapshot save`).
//!
//! Layout (integers little endian):
//!
//! | bytes | what |
//! | --- | --- |
//! | 8 | [`MAGIC`] |
//! | 1 | format version ([`FORMAT_VERSION`]) |
//! | 4 | header length *h* |
//! | *h* | [`SnapshotHeader`] (bincode) |
//! | 8 | records length *r* |
//! | *r* | every record (bincode list) |
//! | 4 | CRC-32 of every byte before it |
//!
//! A blob is refused whole when any byte changed, when it is cut short, when it was written in
//! a newer format, or when its header does not describe its records.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::clock::{ClockRate, RegistryClock};
use crate::codec::{
    check_version, decode_plain, decode_records_plain, encode_plain, encode_plain_into,
    FORMAT_VERSION,
};
use crate::error::{DamageKind, StoreError, Stored};
use crate::identity::ClusterId;
use crate::model::ServiceRecord;
use crate::settings::LivenessSettings;
use crate::state::ServicesState;
use crate::types::{LogId, SnapshotMeta, StoredMembership};

/// A snapshot's first bytes. The CR LF catches a copy that mangled line ends.
pub const MAGIC: &[u8; 8] = b"RGSNAP\r\n";

/// Bytes of the fixed parts: magic, version, header length, records length, checksum.
const FIXED: usize = 8 + 1 + 4 + 8 + 4;

/// Largest header accepted (it is a few hundred bytes).
const MAX_HEADER: usize = 1024 * 1024;

/// What a snapshot says of itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotHeader {
    /// The cluster whose state it is.
    pub cluster_id: Option<ClusterId>,
    /// openraft's id of the snapshot.
    pub snapshot_id: String,
    /// Log id of the last entry reflected in the records.
    pub last_log_id: Option<LogId>,
    /// The membership as of that entry.
    pub last_membership: StoredMembership,
    /// Id the next created record gets.
    pub next_id: u64,
    /// Registry time as of `last_log_id`.
    pub clock: RegistryClock,
    /// Number of records, soft-deleted ones included.
    pub records: u64,
    /// When the snapshot was made (the maker's wall clock; informative only).
    #[serde(with = "chrono::serde::ts_microseconds")]
    pub created_at: DateTime<Utc>,
    /// The liveness settings as of `last_log_id` (format 3; `None` in older snapshots and
    /// before the log carried them).
    pub settings: Option<LivenessSettings>,
    /// The rate of the registry clock as of `last_log_id` (format 4; full in older ones).
    pub clock_rate: ClockRate,
}

/// The header of format 3: [`SnapshotHeader`] without the clock's rate.
#[derive(Debug, Deserialize)]
struct HeaderV3 {
    cluster_id: Option<ClusterId>,
    snapshot_id: String,
    last_log_id: Option<LogId>,
    last_membership: StoredMembership,
    next_id: u64,
    clock: RegistryClock,
    records: u64,
    #[serde(with = "chrono::serde::ts_microseconds")]
    created_at: DateTime<Utc>,
    settings: Option<LivenessSettings>,
}

/// The header of formats 1 and 2: [`SnapshotHeader`] without the settings.
#[derive(Debug, Deserialize)]
struct HeaderV2 {
    cluster_id: Option<ClusterId>,
    snapshot_id: String,
    last_log_id: Option<LogId>,
    last_membership: StoredMembership,
    next_id: u64,
    clock: RegistryClock,
    records: u64,
    #[serde(with = "chrono::serde::ts_microseconds")]
    created_at: DateTime<Utc>,
}

/// Decodes the header of a snapshot of format `version`.
fn decode_header(version: u8, bytes: &[u8]) -> Result<SnapshotHeader, StoreError> {
    match version {
        4.. => decode_plain(bytes),
        3 => decode_plain::<HeaderV3>(bytes).map(SnapshotHeader::from),
        _ => decode_plain::<HeaderV2>(bytes).map(|h| HeaderV3::from(h).into()),
    }
}

impl From<HeaderV2> for HeaderV3 {
    /// Format 2's header: no settings.
    fn from(h: HeaderV2) -> Self {
        HeaderV3 {
            cluster_id: h.cluster_id,
            snapshot_id: h.snapshot_id,
            last_log_id: h.last_log_id,
            last_membership: h.last_membership,
            next_id: h.next_id,
            clock: h.clock,
            records: h.records,
            created_at: h.created_at,
            settings: None,
        }
    }
}

impl From<HeaderV3> for SnapshotHeader {
    /// Format 3's header: the clock at full rate.
    fn from(h: HeaderV3) -> Self {
        SnapshotHeader {
            cluster_id: h.cluster_id,
            snapshot_id: h.snapshot_id,
            last_log_id: h.last_log_id,
            last_membership: h.last_membership,
            next_id: h.next_id,
            clock: h.clock,
            records: h.records,
            created_at: h.created_at,
            settings: h.settings,
            clock_rate: ClockRate::FULL,
        }
    }
}

impl SnapshotHeader {
    /// openraft's metadata of this snapshot.
    pub fn meta(&self) -> SnapshotMeta {
        SnapshotMeta {
            last_log_id: self.last_log_id,
            last_membership: self.last_membership.clone(),
            snapshot_id: self.snapshot_id.clone(),
        }
    }
}

/// What a snapshot's bytes say of it, once checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Its format version.
    pub format_version: u8,
    /// Its header.
    pub header: SnapshotHeader,
    /// Its CRC-32 (the last four bytes).
    pub checksum: u32,
    /// Its size in bytes.
    pub size: usize,
}

/// What a snapshot is made of, copied out of a [`ServicesState`] while its lock is held:
/// the header's fields and one pointer to each shared record, in key order. Neither the maps
/// nor what is derived from the records are copied, so taking one for a 100k table costs a
/// vector of 100k pointers rather than a second copy of every key.
#[derive(Debug, Clone)]
pub struct SnapshotSource {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    next_id: u64,
    clock: RegistryClock,
    settings: Option<LivenessSettings>,
    records: Vec<Arc<ServiceRecord>>,
}

impl SnapshotSource {
    /// The parts of `state` a snapshot holds.
    pub fn of(state: &ServicesState) -> Self {
        Self {
            last_applied: state.last_applied,
            membership: state.membership.clone(),
            next_id: state.next_id,
            clock: state.clock,
            settings: state.settings,
            records: state.shared_records().cloned().collect(),
        }
    }

    /// The log id of the last entry the copy reflects.
    pub fn last_applied(&self) -> Option<LogId> {
        self.last_applied
    }

    /// The membership the copy reflects.
    pub fn membership(&self) -> &StoredMembership {
        &self.membership
    }

    /// Encodes the copy as a snapshot of cluster `cluster_id` named `snapshot_id`.
    pub fn encode(
        &self,
        cluster_id: Option<ClusterId>,
        snapshot_id: String,
    ) -> Result<Vec<u8>, StoreError> {
        let header = SnapshotHeader {
            cluster_id,
            snapshot_id,
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
            next_id: self.next_id,
            clock: self.clock,
            records: self.records.len() as u64,
            created_at: Utc::now(),
            settings: self.settings,
            clock_rate: self.clock.rate,
        };
        let header = encode_plain(&header)?;
        let header_len = u32::try_from(header.len())
            .map_err(|_| StoreError::SnapshotHeaderTooLarge { len: header.len() })?;
        let mut out = Vec::with_capacity(FIXED - 4 + header.len());
        out.extend_from_slice(MAGIC);
        out.push(FORMAT_VERSION);
        out.extend_from_slice(&header_len.to_le_bytes());
        out.extend_from_slice(&header);
        // The records' length goes before them: a place for it, filled once they are written.
        let records_len_at = out.len();
        out.extend_from_slice(&0u64.to_le_bytes());
        let records = self
            .records
            .iter()
            .map(|r| &**r)
            .collect::<Vec<&ServiceRecord>>();
        let records_len = encode_plain_into(&records, &mut out, 4)?;
        out[records_len_at..records_len_at + 8]
            .copy_from_slice(&(records_len as u64).to_le_bytes());
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        Ok(out)
    }
}

/// Encodes `state` as a snapshot of cluster `cluster_id` named `snapshot_id`.
pub fn encode_state(
    state: &ServicesState,
    cluster_id: Option<ClusterId>,
    snapshot_id: String,
) -> Result<Vec<u8>, StoreError> {
    SnapshotSource::of(state).encode(cluster_id, snapshot_id)
}

/// Checks a snapshot's bytes (magic, version, checksum, lengths, header) without decoding
/// its records.
pub fn check(bytes: &[u8]) -> Result<SnapshotInfo, StoreError> {
    parse(bytes).map(|(info, _)| info)
}

/// Checks a snapshot's bytes and decodes it whole: its header and every record.
pub fn decode(bytes: &[u8]) -> Result<(SnapshotInfo, Vec<ServiceRecord>), StoreError> {
    let (info, records) = parse(bytes)?;
    let records = decode_records_plain(info.format_version, records)?;
    if records.len() as u64 != info.header.records {
        return Err(damaged(DamageKind::RecordCount {
            header: info.header.records,
            found: records.len() as u64,
        }));
    }
    Ok((info, records))
}

/// A snapshot damaged as `kind` says.
fn damaged(kind: DamageKind) -> StoreError {
    StoreError::Damaged {
        what: Stored::Snapshot,
        kind,
    }
}

/// Checks everything but the records, which it returns undecoded.
fn parse(bytes: &[u8]) -> Result<(SnapshotInfo, &[u8]), StoreError> {
    if bytes.len() < FIXED {
        return Err(damaged(DamageKind::TooShort {
            len: bytes.len(),
            min: FIXED,
        }));
    }
    if &bytes[..8] != MAGIC {
        return Err(damaged(DamageKind::WrongMagic));
    }
    check_version(bytes[8], Stored::Snapshot)?;
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    let stored = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    let computed = crc32fast::hash(body);
    if stored != computed {
        return Err(damaged(DamageKind::ChecksumMismatch {
            len: bytes.len(),
            stored,
            computed,
        }));
    }
    let mut at: usize = 9;
    let mut take = |n: usize| -> Result<&[u8], StoreError> {
        let end = at
            .checked_add(n)
            .filter(|end| *end <= body.len())
            .ok_or_else(|| damaged(DamageKind::LengthPastEnd))?;
        let part = &body[at..end];
        at = end;
        Ok(part)
    };
    let header_len = u32::from_le_bytes(take(4)?.try_into().unwrap_or_default()) as usize;
    if header_len > MAX_HEADER {
        return Err(damaged(DamageKind::HeaderTooLarge {
            len: header_len,
            max: MAX_HEADER,
        }));
    }
    let header = decode_header(bytes[8], take(header_len)?)?;
    let records_len = u64::from_le_bytes(take(8)?.try_into().unwrap_or_default());
    let records_len = usize::try_from(records_len)
        .map_err(|_| damaged(DamageKind::RecordsTooLarge { len: records_len }))?;
    let records = take(records_len)?;
    if at != body.len() {
        return Err(damaged(DamageKind::BytesAfterRecords {
            extra: body.len() - at,
        }));
    }
    let info = SnapshotInfo {
        format_version: bytes[8],
        header,
        checksum: stored,
        size: bytes.len(),
    };
    Ok((info, records))
}

/// The state a decoded snapshot describes.
pub fn into_state(header: SnapshotHeader, records: Vec<ServiceRecord>) -> ServicesState {
    let clock = RegistryClock {
        rate: header.clock_rate,
        ..header.clock
    };
    ServicesState::from_parts(
        header.last_log_id,
        header.last_membership,
        header.next_id,
        clock,
        header.settings,
        records,
    )
}

/// Decodes snapshot data received (or stored) with `meta` into the state it describes and the
/// cluster it belongs to; data whose header does not match `meta` is refused.
pub fn decode_state(
    meta: &SnapshotMeta,
    data: &[u8],
) -> Result<(ServicesState, Option<ClusterId>), StoreError> {
    let (info, records) = decode(data)?;
    let found = info.header.meta();
    if found != *meta {
        return Err(StoreError::SnapshotMetaMismatch {
            found: Box::new(found),
            expected: Box::new(meta.clone()),
        });
    }
    let cluster_id = info.header.cluster_id;
    Ok((into_state(info.header, records), cluster_id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Command, Heartbeat};
    use crate::types::Entry;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn state() -> ServicesState {
        let mut s = ServicesState::default();
        let entry = Entry {
            log_id: openraft::LogId::new(CommittedLeaderId::new(3, 1), 7),
            payload: EntryPayload::Normal(Command::Heartbeats {
                at: DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default(),
                beats: vec![
                    Heartbeat::new("h1", "cinder-volume"),
                    Heartbeat::new("h2", "b"),
                ]
                .into(),
            }),
        };
        s.apply_entry(&entry, &mut Vec::new());
        s
    }

    #[test]
    fn a_snapshot_decodes_to_the_state_it_was_made_of() -> Result<(), StoreError> {
        let s = state();
        let bytes = encode_state(&s, Some(ClusterId(5)), "3-7-1".into())?;
        let (d, records) = decode(&bytes)?;
        assert_eq!(d.header.cluster_id, Some(ClusterId(5)));
        assert_eq!(d.header.records, 2);
        assert_eq!(records.len(), 2);
        assert_eq!(d.size, bytes.len());
        assert_eq!(check(&bytes)?, d);
        let meta = d.header.meta();
        assert_eq!(decode_state(&meta, &bytes)?, (s, Some(ClusterId(5))));
        let mut other = meta.clone();
        other.snapshot_id = "3-7-2".into();
        assert!(
            matches!(
                decode_state(&other, &bytes),
                Err(StoreError::SnapshotMetaMismatch { found, expected })
                    if *found == meta && *expected == other
            ),
            "metadata of another"
        );
        Ok(())
    }

    #[test]
    fn every_damage_is_refused() -> Result<(), StoreError> {
        let bytes = encode_state(&state(), Some(ClusterId(5)), "3-7-1".into())?;
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(decode(&bad).is_err(), "a flipped byte at {i} is refused");
        }
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut} is refused");
        }
        let mut newer = bytes.clone();
        newer[8] = FORMAT_VERSION + 1;
        assert!(matches!(
            decode(&newer),
            Err(StoreError::NewerFormat {
                what: Stored::Snapshot,
                ..
            })
        ));
        let kind = |bytes: &[u8]| match decode(bytes) {
            Err(StoreError::Damaged {
                what: Stored::Snapshot,
                kind,
            }) => Some(kind),
            _ => None,
        };
        assert_eq!(
            kind(&bytes[..10]),
            Some(DamageKind::TooShort {
                len: 10,
                min: FIXED
            })
        );
        let mut magic = bytes.clone();
        magic[0] ^= 0x40;
        assert_eq!(kind(&magic), Some(DamageKind::WrongMagic));
        let mut flipped = bytes.clone();
        flipped[bytes.len() / 2] ^= 0x40;
        assert!(
            matches!(
                kind(&flipped),
                Some(DamageKind::ChecksumMismatch { len, .. }) if len == bytes.len()
            ),
            "a flipped byte in the records"
        );
        Ok(())
    }
}
