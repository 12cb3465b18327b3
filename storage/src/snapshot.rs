//! The snapshot format: the whole services table with the log id it reflects, in one
//! self-checking blob. The same bytes are the node's snapshot file, the data openraft streams
//! to a follower, and a backup (`registryctl snapshot save`).
//!
//! Layout (integers little endian):
//!
//! | bytes | what |
//! | --- | --- |
//! | 8 | [`MAGIC`] |
//! | 1 | format version ([`SNAPSHOT_FORMAT`] when written; up to [`FORMAT_VERSION`](crate::codec::FORMAT_VERSION) read) |
//! | 4 | header length *h* |
//! | *h* | [`SnapshotHeader`] (bincode) |
//! | 8 | records length *r* |
//! | *r* | every record (bincode list) |
//! | 4 | CRC-32 of every byte before it |
//!
//! A blob is refused whole when any byte changed, when it is cut short, when it was written in
//! a newer format, or when its header does not describe its records.

use std::io::Write;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::clock::{ClockRate, RegistryClock};
use crate::codec::{
    check_version, decode_plain, decode_records_plain, encode_plain, encode_plain_to, encoded_size,
};
use crate::error::{DamageKind, StoreError, Stored};
use crate::identity::ClusterId;
use crate::model::ServiceRecord;
use crate::settings::LivenessSettings;
use crate::state::ServicesState;
use crate::types::{LogId, SnapshotMeta, StoredMembership};

/// The format version a snapshot is written in: the last format that changed a snapshot's
/// layout or the encoding of what it holds. Format 5 changed only the store's layout (see
/// [`crate::state_machine`]), so nodes of formats 4 and 5 send each other snapshots, and a
/// backup taken by either restores with both.
pub const SNAPSHOT_FORMAT: u8 = 4;

/// A snapshot's first bytes. The CR LF catches a copy that mangled line ends.
pub const MAGIC: &[u8; 8] = b"RGSNAP\r\n";

/// Bytes of the fixed parts: magic, version, header length, records length, checksum.
const FIXED: usize = 8 + 1 + 4 + 8 + 4;
/// Bytes before the header: magic, version, header length.
const HEAD_FIXED: usize = 8 + 1 + 4;

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

/// The state machine's metadata as of some applied entry: the header's fields of a snapshot
/// taken of it.
#[derive(Debug, Clone)]
struct Meta {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    next_id: u64,
    clock: RegistryClock,
    settings: Option<LivenessSettings>,
}

impl Meta {
    /// The metadata of `state`.
    fn of(state: &ServicesState) -> Self {
        Self {
            last_applied: state.last_applied,
            membership: state.membership.clone(),
            next_id: state.next_id,
            clock: state.clock,
            settings: state.settings,
        }
    }
}

/// What a snapshot is made of, copied out of a [`ServicesState`] while its lock is held:
/// the header's fields and one pointer to each shared record, in key order. Neither the maps
/// nor what is derived from the records are copied, so taking one for a 100k table costs a
/// vector of 100k pointers rather than a second copy of every key.
#[derive(Debug, Clone)]
pub struct SnapshotSource {
    meta: Meta,
    records: Vec<Arc<ServiceRecord>>,
}

impl SnapshotSource {
    /// The parts of `state` a snapshot holds.
    pub fn of(state: &ServicesState) -> Self {
        Self {
            meta: Meta::of(state),
            records: state.shared_records().cloned().collect(),
        }
    }

    /// The log id of the last entry the copy reflects.
    pub fn last_applied(&self) -> Option<LogId> {
        self.meta.last_applied
    }

    /// The membership the copy reflects.
    pub fn membership(&self) -> &StoredMembership {
        &self.meta.membership
    }

    /// Number of records in the copy, soft-deleted ones included.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the copy holds no record.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The digest of the state the copy was taken of ([`ServicesState::digest`]), computed
    /// without the state's lock.
    pub fn digest(&self) -> u64 {
        crate::state::digest_of(
            self.meta.next_id,
            self.meta.settings,
            &self.meta.clock,
            self.records.iter().map(|r| &**r),
        )
    }

    /// Encodes the copy as a snapshot of cluster `cluster_id` named `snapshot_id`, in memory
    /// (a backup; the node's own snapshots go straight to their file, [`Self::encode_to`]).
    pub fn encode(
        &self,
        cluster_id: Option<ClusterId>,
        snapshot_id: String,
    ) -> Result<Vec<u8>, StoreError> {
        let encoding = self.prepare(cluster_id, snapshot_id)?;
        let mut out = Vec::with_capacity(encoding.len());
        encoding.write_to(&mut out)?;
        Ok(out)
    }

    /// Encodes the copy as a snapshot of cluster `cluster_id` named `snapshot_id` into `out`
    /// as it is made: the only copy of the records is the one `out` holds. Returns the
    /// snapshot's size in bytes.
    pub fn encode_to<W: Write>(
        &self,
        out: W,
        cluster_id: Option<ClusterId>,
        snapshot_id: String,
    ) -> Result<u64, StoreError> {
        let encoding = self.prepare(cluster_id, snapshot_id)?;
        encoding.write_to(out)?;
        Ok(encoding.len() as u64)
    }

    /// The header, encoded, and the records' encoded size (measured without keeping it).
    fn prepare(
        &self,
        cluster_id: Option<ClusterId>,
        snapshot_id: String,
    ) -> Result<Encoding<'_>, StoreError> {
        let header = SnapshotHeader {
            cluster_id,
            snapshot_id,
            last_log_id: self.meta.last_applied,
            last_membership: self.meta.membership.clone(),
            next_id: self.meta.next_id,
            clock: self.meta.clock,
            records: self.records.len() as u64,
            created_at: Utc::now(),
            settings: self.meta.settings,
            clock_rate: self.meta.clock.rate,
        };
        let header = encode_plain(&header)?;
        if u32::try_from(header.len()).is_err() {
            return Err(StoreError::SnapshotHeaderTooLarge { len: header.len() });
        }
        let records = self
            .records
            .iter()
            .map(|r| &**r)
            .collect::<Vec<&ServiceRecord>>();
        let records_len = encoded_size(&records)?;
        Ok(Encoding {
            header,
            records,
            records_len,
        })
    }
}

/// A snapshot about to be written: everything before the records is known, and so is the
/// records' size, which goes before them.
struct Encoding<'a> {
    header: Vec<u8>,
    records: Vec<&'a ServiceRecord>,
    records_len: usize,
}

impl Encoding<'_> {
    /// The snapshot's size in bytes.
    fn len(&self) -> usize {
        FIXED + self.header.len() + self.records_len
    }

    /// Writes the snapshot to `out`, the checksum computed as the bytes pass.
    fn write_to<W: Write>(&self, out: W) -> Result<(), StoreError> {
        let mut out = Checksummed::new(out);
        // `prepare` checked that the length fits.
        let header_len = self.header.len() as u32;
        let put = |out: &mut Checksummed<W>, bytes: &[u8]| {
            out.write_all(bytes)
                .map_err(StoreError::snapshot_data("writing"))
        };
        put(&mut out, MAGIC)?;
        put(&mut out, &[SNAPSHOT_FORMAT])?;
        put(&mut out, &header_len.to_le_bytes())?;
        put(&mut out, &self.header)?;
        put(&mut out, &(self.records_len as u64).to_le_bytes())?;
        let written = encode_plain_to(&self.records, &mut out)?;
        if written != self.records_len {
            return Err(StoreError::SnapshotSizeChanged {
                measured: self.records_len,
                written,
            });
        }
        let (mut out, crc) = out.finish();
        out.write_all(&crc.to_le_bytes())
            .map_err(StoreError::snapshot_data("writing"))
    }
}

/// A writer that computes the CRC-32 of every byte written through it.
struct Checksummed<W> {
    inner: W,
    hasher: crc32fast::Hasher,
}

impl<W: Write> Checksummed<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: crc32fast::Hasher::new(),
        }
    }

    /// The inner writer and the checksum of what went through.
    fn finish(self) -> (W, u32) {
        (self.inner, self.hasher.finalize())
    }
}

impl<W: Write> Write for Checksummed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
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
pub fn decode(bytes: &[u8]) -> Result<(SnapshotInfo, Vec<Arc<ServiceRecord>>), StoreError> {
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
        return Err(too_short(bytes.len()));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    let (info, records) = check_framing(Framing {
        size: bytes.len(),
        head: body,
        stored: u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]),
        computed: crc32fast::hash(body),
    })?;
    Ok((info, &body[records]))
}

/// Checks a snapshot in `file`, from its start, as [`check`] checks bytes, reading it in
/// pieces: only its header is held in memory, so a snapshot of any size can be checked
/// before it is served. Leaves the file's position anywhere.
pub fn check_file(file: &mut std::fs::File) -> Result<SnapshotInfo, StoreError> {
    use std::io::{Read, Seek, SeekFrom};
    let io = |e| StoreError::snapshot_data("reading")(e);
    let size = file.seek(SeekFrom::End(0)).map_err(io)?;
    let size = usize::try_from(size).map_err(|_| damaged(DamageKind::LengthPastEnd))?;
    if size < FIXED {
        return Err(too_short(size));
    }
    let body_len = size - 4;
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    let mut body = file.take(body_len as u64);
    // The head: magic, version and header length, then the header and the records' length
    // (as much of them as the body holds; a header past `MAX_HEADER` is refused unread).
    let mut head = vec![0u8; HEAD_FIXED];
    body.read_exact(&mut head).map_err(io)?;
    let header_len = u32::from_le_bytes([head[9], head[10], head[11], head[12]]) as usize;
    let rest = header_len
        .min(MAX_HEADER + 1)
        .saturating_add(8)
        .min(body_len - HEAD_FIXED);
    head.resize(HEAD_FIXED + rest, 0);
    body.read_exact(&mut head[HEAD_FIXED..]).map_err(io)?;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&head);
    let mut chunk = vec![0u8; 256 * 1024];
    loop {
        let n = body.read(&mut chunk).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&chunk[..n]);
    }
    let mut crc = [0u8; 4];
    body.into_inner().read_exact(&mut crc).map_err(io)?;
    let (info, _) = check_framing(Framing {
        size,
        head: &head,
        stored: u32::from_le_bytes(crc),
        computed: hasher.finalize(),
    })?;
    Ok(info)
}

/// What the checks of a snapshot's framing need: its size, its first bytes (at least up to
/// the records' length when the snapshot is that long, or all of its body), and its stored
/// and computed checksums.
struct Framing<'a> {
    size: usize,
    head: &'a [u8],
    stored: u32,
    computed: u32,
}

/// Checks a snapshot's magic, version, checksum, lengths and header; returns what it says
/// of itself and where its records lie.
fn check_framing(f: Framing<'_>) -> Result<(SnapshotInfo, std::ops::Range<usize>), StoreError> {
    let bytes = f.head;
    if &bytes[..8] != MAGIC {
        return Err(damaged(DamageKind::WrongMagic));
    }
    check_version(bytes[8], Stored::Snapshot)?;
    if f.stored != f.computed {
        return Err(damaged(DamageKind::ChecksumMismatch {
            len: f.size,
            stored: f.stored,
            computed: f.computed,
        }));
    }
    let body_len = f.size - 4;
    let mut at: usize = 9;
    let mut take = |n: usize| -> Result<std::ops::Range<usize>, StoreError> {
        let end = at
            .checked_add(n)
            .filter(|end| *end <= body_len)
            .ok_or_else(|| damaged(DamageKind::LengthPastEnd))?;
        let part = at..end;
        at = end;
        Ok(part)
    };
    let header_len = take(4)?;
    let header_len = u32::from_le_bytes(bytes[header_len].try_into().unwrap_or_default()) as usize;
    if header_len > MAX_HEADER {
        return Err(damaged(DamageKind::HeaderTooLarge {
            len: header_len,
            max: MAX_HEADER,
        }));
    }
    let header = decode_header(bytes[8], &bytes[take(header_len)?])?;
    let records_len = u64::from_le_bytes(bytes[take(8)?].try_into().unwrap_or_default());
    let records_len = usize::try_from(records_len)
        .map_err(|_| damaged(DamageKind::RecordsTooLarge { len: records_len }))?;
    let records = take(records_len)?;
    if at != body_len {
        return Err(damaged(DamageKind::BytesAfterRecords {
            extra: body_len - at,
        }));
    }
    let info = SnapshotInfo {
        format_version: bytes[8],
        header,
        checksum: f.stored,
        size: f.size,
    };
    Ok((info, records))
}

/// A snapshot of `len` bytes, shorter than its fixed parts.
fn too_short(len: usize) -> StoreError {
    damaged(DamageKind::TooShort { len, min: FIXED })
}

/// The state a decoded snapshot describes.
pub fn into_state(header: SnapshotHeader, records: Vec<Arc<ServiceRecord>>) -> ServicesState {
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
    use crate::codec::FORMAT_VERSION;
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
        s.apply_entry(&entry);
        s
    }

    /// The digest a status view computes off the lock, from a copy, is the state's own; it
    /// moves with a heartbeat, and the copy keeps the digest of the moment it was taken.
    #[test]
    fn a_copy_has_the_digest_of_the_state_it_was_taken_of() {
        let mut s = state();
        let copy = SnapshotSource::of(&s);
        assert_eq!((copy.len(), copy.digest()), (2, s.digest()));
        let before = s.digest();
        s.apply_entry(&Entry {
            log_id: openraft::LogId::new(CommittedLeaderId::new(3, 1), 8),
            payload: EntryPayload::Normal(Command::Heartbeats {
                at: DateTime::from_timestamp(1_800_000_001, 0).unwrap_or_default(),
                beats: vec![Heartbeat::new("h1", "cinder-volume")].into(),
            }),
        });
        assert_ne!(s.digest(), before, "a counted heartbeat changes the digest");
        assert_eq!(
            copy.digest(),
            before,
            "the copy is of the moment it was taken"
        );
        assert_eq!(SnapshotSource::of(&s).digest(), s.digest());
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

    /// A writer that takes `room` bytes, then fails as a full disk does.
    struct Full {
        room: usize,
    }

    impl Write for Full {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.room == 0 {
                return Err(std::io::Error::from_raw_os_error(28));
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            Ok(n)
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_snapshot_written_as_it_is_made_is_the_one_made_in_memory() -> Result<(), StoreError> {
        let source = SnapshotSource::of(&state());
        let mut streamed = Vec::new();
        let size = source.encode_to(&mut streamed, Some(ClusterId(5)), "3-7-1".into())?;
        assert_eq!(size, streamed.len() as u64, "the size it reports");
        let in_memory = source.encode(Some(ClusterId(5)), "3-7-1".into())?;
        let (a, ra) = decode(&streamed)?;
        let (b, rb) = decode(&in_memory)?;
        assert_eq!(ra, rb);
        assert_eq!((a.size, a.header.records), (b.size, b.header.records));
        for room in [0, 5, 30, streamed.len() / 2, streamed.len() - 1] {
            let full = source.encode_to(Full { room }, Some(ClusterId(5)), "3-7-1".into());
            assert!(
                matches!(&full, Err(StoreError::SnapshotData { source, .. }) if source.raw_os_error() == Some(28))
                    || matches!(&full, Err(StoreError::Encode(_))),
                "a full writer after {room} bytes fails the encode: {full:?}"
            );
        }
        Ok(())
    }

    /// `bytes` checked from a file as it is served.
    fn check_as_file(bytes: &[u8]) -> Result<SnapshotInfo, StoreError> {
        let mut file = tempfile::tempfile().map_err(StoreError::snapshot_data("writing"))?;
        file.write_all(bytes)
            .map_err(StoreError::snapshot_data("writing"))?;
        check_file(&mut file)
    }

    /// A file is checked exactly as its bytes are: the same answer for the whole snapshot,
    /// for every byte flipped and for every cut, so no damage that [`check`] refuses is
    /// served from a file.
    #[test]
    fn a_file_is_checked_as_its_bytes_are() -> Result<(), StoreError> {
        let bytes = encode_state(&state(), Some(ClusterId(5)), "3-7-1".into())?;
        assert_eq!(check_as_file(&bytes)?, check(&bytes)?);
        let same = |a: Result<SnapshotInfo, StoreError>, b: Result<SnapshotInfo, StoreError>| {
            format!("{a:?}") == format!("{b:?}")
        };
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(check(&bad).is_err(), "a flipped byte at {i} is refused");
            assert!(same(check_as_file(&bad), check(&bad)), "byte {i} flipped");
        }
        for cut in 0..bytes.len() {
            let short = &bytes[..cut];
            assert!(check_as_file(short).is_err(), "cut at {cut} is refused");
            assert!(same(check_as_file(short), check(short)), "cut at {cut}");
        }
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
