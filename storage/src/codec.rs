//! bincode (2.x) encoding of everything stored in sled.
//!
//! Every stored value is an envelope: the format version it was written in (one byte,
//! [`FORMAT_VERSION`]), a CRC-32 of the version byte and the payload (four bytes, little
//! endian; formats 1 and 2 left the version byte out of it), then the payload in bincode. A value written by a newer format is refused with a message saying so
//! ([`StoreError::NewerFormat`]); a value whose bytes changed since they were written is
//! refused as damaged ([`StoreError::Damaged`]), never decoded into something else.
//!
//! bincode is not self-describing: every payload is decoded as exactly the type it was
//! encoded as, and a payload that does not decode completely is an error, never a default.
//! Decoding never allocates more than the input holds: a corrupt length prefix is an error
//! before any allocation ([`decode_from_slice`]).
//!
//! Keys are plain bincode ([`encode_key`]): their bytes decide sled's order and never change.
//!
//! A value whose type changed between formats is read by the type of the format it was
//! written in ([`decode_record`], [`decode_records_plain`]; the older types are in `v1`).

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{DamageKind, StoreError, Stored};
use crate::model::ServiceRecord;

mod borrowed;
mod v1;

/// The format version of everything this build writes: stored values, the store itself
/// (its `format` key), and (up to format 4) snapshot and backup files. A build reads every
/// version up to its own.
///
/// | version | change |
/// | --- | --- |
/// | 1 | the first |
/// | 2 | records carry `modified_by`; commands `AdminBy` and `FreezeBy` |
/// | 3 | the liveness settings in the log (command `Settings`), the state machine and snapshots |
/// | 4 | the registry clock's rate (command `ClockRate`), in the state machine and snapshots |
/// | 5 | the store: no records tree, the state machine's state on disk is the snapshot file and the log (snapshots are still written in format 4, [`crate::snapshot::SNAPSHOT_FORMAT`]) |
pub const FORMAT_VERSION: u8 = 5;

/// Bytes in front of every stored value's payload: the version and the CRC-32.
const ENVELOPE: usize = 5;

/// Upper bound on a single decoded value (bincode's limit, which counts the in-memory size of
/// what is decoded).
const DECODE_LIMIT: usize = 1 << 30;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<DECODE_LIMIT>()
}

/// Encodes a value for storage, in the envelope (version, checksum, payload).
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    let mut out = vec![FORMAT_VERSION, 0, 0, 0, 0];
    bincode::serde::encode_into_std_write(value, &mut out, config())?;
    let crc = checksum(FORMAT_VERSION, &out[ENVELOPE..]);
    out[1..ENVELOPE].copy_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// The envelope of this build's format around `payload`, whatever it holds: what
/// [`encode`] writes for a payload of those bytes (for tests and fuzzers that forge
/// payloads beneath a valid checksum).
pub fn seal(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ENVELOPE + payload.len());
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&checksum(FORMAT_VERSION, payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// The checksum of a value of format `version`: from format 3 on it covers the version byte
/// too, so a value whose version byte changed into that of an older format this build still
/// reads is refused, not decoded as that format.
fn checksum(version: u8, payload: &[u8]) -> u32 {
    if version < 3 {
        return crc32fast::hash(payload);
    }
    let mut h = crc32fast::Hasher::new();
    h.update(&[version]);
    h.update(payload);
    h.finalize()
}

/// Decodes a stored value: checks its version and checksum, then decodes exactly a `T`;
/// trailing bytes make it an error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    let damaged = |kind| StoreError::Damaged {
        what: Stored::Value,
        kind,
    };
    let Some((&version, rest)) = bytes.split_first() else {
        return Err(damaged(DamageKind::Empty));
    };
    check_version(version, Stored::Value)?;
    if rest.len() < ENVELOPE - 1 {
        return Err(damaged(DamageKind::TooShort {
            len: bytes.len(),
            min: ENVELOPE,
        }));
    }
    let (crc, payload) = rest.split_at(ENVELOPE - 1);
    let stored = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    let computed = checksum(version, payload);
    if stored != computed {
        return Err(damaged(DamageKind::ChecksumMismatch {
            len: bytes.len(),
            stored,
            computed,
        }));
    }
    decode_plain(payload)
}

/// Decodes a stored [`ServiceRecord`] of any format this build reads.
pub fn decode_record(bytes: &[u8]) -> Result<ServiceRecord, StoreError> {
    match bytes.first() {
        Some(1) => decode::<v1::ServiceRecordV1>(bytes).map(ServiceRecord::from),
        _ => decode(bytes),
    }
}

/// Decodes the plain bincode list of records of a snapshot or backup written in `format`.
pub fn decode_records_plain(
    format: u8,
    bytes: &[u8],
) -> Result<Vec<Arc<ServiceRecord>>, StoreError> {
    if format == 1 {
        let old: Vec<v1::ServiceRecordV1> = decode_plain(bytes)?;
        return Ok(old
            .into_iter()
            .map(|r| Arc::new(ServiceRecord::from(r)))
            .collect());
    }
    // Each record straight into the `Arc` the state keeps: a vector of whole records
    // would hold every one a second time, and grow by doubling past the count
    // (67 MB for 100k records) while the state is built from it.
    decode_plain(bytes)
}

/// Encodes a key (plain bincode: keys are never versioned, their order is sled's).
pub fn encode_key<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    Ok(bincode::serde::encode_to_vec(value, config())?)
}

/// Decodes plain bincode of exactly a `T` (no envelope); trailing bytes make it an error.
/// Used inside files that carry their own version and checksum (snapshots, backups).
pub fn decode_plain<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    let (value, read) = decode_from_slice(bytes, config())?;
    if read != bytes.len() {
        return Err(StoreError::TrailingBytes {
            extra: bytes.len() - read,
            len: bytes.len(),
        });
    }
    Ok(value)
}

/// Encodes plain bincode (no envelope), for files that carry their own version and checksum.
pub fn encode_plain<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    Ok(bincode::serde::encode_to_vec(value, config())?)
}

/// The size of [`encode_plain`]'s encoding of `value`, measured without keeping it.
pub fn encoded_size<T: Serialize>(value: &T) -> Result<usize, StoreError> {
    let mut size = bincode::enc::write::SizeWriter::default();
    bincode::serde::encode_into_writer(value, &mut size, config())?;
    Ok(size.bytes_written)
}

/// [`encode_plain`] written to `out` as it is made, without a buffer of its own: a
/// snapshot's records go straight into its file. Returns the encoding's size.
pub fn encode_plain_to<T: Serialize, W: std::io::Write>(
    value: &T,
    out: &mut W,
) -> Result<usize, StoreError> {
    Ok(bincode::serde::encode_into_std_write(value, out, config())?)
}

/// Refuses a format `version` newer than this build's (or 0, which none writes); `what` is
/// the thing read.
pub fn check_version(version: u8, what: Stored) -> Result<(), StoreError> {
    match version {
        0 => Err(StoreError::Damaged {
            what,
            kind: DamageKind::VersionZero,
        }),
        v if v > FORMAT_VERSION => Err(StoreError::NewerFormat {
            what,
            found: v,
            supported: FORMAT_VERSION,
        }),
        _ => Ok(()),
    }
}

/// Decodes a value of exactly type `T` from the start of `bytes` with the bincode `config`;
/// returns it with the number of bytes read. Unlike `bincode::serde::decode_from_slice`, every
/// string and byte buffer is checked against the bytes that remain before it is allocated, so
/// a corrupt or hostile length prefix is an error, never an allocation of the size it claims
/// (bincode's limit alone still lets a 9-byte input allocate up to the limit). The encoding is
/// bincode's own. Also used for the Raft RPC bodies received from peers.
pub fn decode_from_slice<T: DeserializeOwned, C: bincode::config::Config>(
    bytes: &[u8],
    config: C,
) -> Result<(T, usize), bincode::error::DecodeError> {
    bincode::serde::seed_decode_from_slice(borrowed::Root::<T>::new(), bytes, config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_any_changed_byte_is_refused() -> Result<(), StoreError> {
        let value = ("cinder-volume".to_string(), 42u64, Some(vec![1u8, 2, 3]));
        let bytes = encode(&value)?;
        assert_eq!(bytes[0], FORMAT_VERSION);
        assert_eq!(decode::<(String, u64, Option<Vec<u8>>)>(&bytes)?, value);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            let res = decode::<(String, u64, Option<Vec<u8>>)>(&bad);
            assert!(res.is_err(), "a flipped bit at byte {i} is refused");
        }
        for cut in 0..bytes.len() {
            assert!(
                decode::<(String, u64, Option<Vec<u8>>)>(&bytes[..cut]).is_err(),
                "a value cut at {cut} bytes is refused"
            );
        }
        Ok(())
    }

    /// Each way a stored value can be damaged is told apart by its kind.
    #[test]
    fn damage_is_told_by_its_kind() -> Result<(), StoreError> {
        let bytes = encode(&7u64)?;
        let kind = |bytes: &[u8]| match decode::<u64>(bytes) {
            Err(StoreError::Damaged {
                what: Stored::Value,
                kind,
            }) => Some(kind),
            _ => None,
        };
        assert_eq!(kind(&[]), Some(DamageKind::Empty));
        assert_eq!(
            kind(&bytes[..3]),
            Some(DamageKind::TooShort {
                len: 3,
                min: ENVELOPE
            })
        );
        let mut zero = bytes.clone();
        zero[0] = 0;
        assert_eq!(kind(&zero), Some(DamageKind::VersionZero));
        let mut flipped = bytes.clone();
        flipped[ENVELOPE] ^= 1;
        assert_eq!(
            kind(&flipped),
            Some(DamageKind::ChecksumMismatch {
                len: bytes.len(),
                stored: checksum(FORMAT_VERSION, &bytes[ENVELOPE..]),
                computed: checksum(FORMAT_VERSION, &flipped[ENVELOPE..]),
            })
        );
        let two = encode(&(7u64, 8u64))?;
        assert!(
            matches!(
                decode::<u64>(&two),
                Err(StoreError::TrailingBytes { extra: 1, len: 2 })
            ),
            "a whole value read as a shorter type leaves bytes over"
        );
        Ok(())
    }

    #[test]
    fn newer_formats_are_refused_with_a_message() -> Result<(), StoreError> {
        let mut bytes = encode(&7u64)?;
        bytes[0] = FORMAT_VERSION + 1;
        match decode::<u64>(&bytes) {
            Err(e @ StoreError::NewerFormat { .. }) => {
                let text = e.to_string();
                assert!(text.contains("newer"), "{text}");
            }
            other => panic!("a newer version is refused as such, got {other:?}"),
        }
        Ok(())
    }
}
