//! Snapshot data (`registry_storage::snapshot`: magic, version, header, records, CRC-32), as
//! received from a leader, read back from the node's snapshot file or restored from a backup.
//! The first byte of the input picks the metadata the blob is decoded with; the rest is fed
//! twice, as it is and sealed (its CRC-32 appended), so that the checks and decoders beneath
//! the checksum are what is fuzzed. On either, `check`, `decode` and `decode_state` are errors
//! or values, never a panic or an allocation of a size the bytes do not hold, and:
//!
//! - `check` accepts what `decode` accepts, with the same header, size and checksum;
//! - `decode_state` accepts the blob with its header's own metadata (pick 0) and gives the
//!   state of its header and records, and refuses it when the metadata differs in the last log
//!   id (pick 1), the membership (2) or the snapshot id (3);
//! - the state re-encodes (`encode_state`) to a blob that decodes to the same state and
//!   cluster id, and encoding that again gives the same header (but for its `created_at`) and
//!   the same records.
#![no_main]

use libfuzzer_sys::fuzz_target;
use openraft::{CommittedLeaderId, LogId};
use registry_storage::snapshot::{
    check, decode, decode_state, encode_state, into_state, SnapshotHeader,
};
use registry_storage::types::{SnapshotMeta, StoredMembership};

fn log_id() -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(1, 1), 1)
}

/// The metadata announced with a snapshot whose header is `h`: its own (pick 0), or one that
/// differs from it in the last log id (1), the membership (2) or the snapshot id (3).
fn announced(h: &SnapshotHeader, pick: u8) -> SnapshotMeta {
    let mut meta = h.meta();
    match pick % 4 {
        0 => {}
        1 => meta.last_log_id = meta.last_log_id.xor(Some(log_id())),
        2 => {
            let other = StoredMembership::new(Some(log_id()), Default::default());
            meta.last_membership = if meta.last_membership == other {
                StoredMembership::default()
            } else {
                other
            };
        }
        _ => meta.snapshot_id.push('x'),
    }
    meta
}

fn check_blob(pick: u8, blob: &[u8]) {
    let checked = check(blob);
    let Ok((info, records)) = decode(blob) else {
        let meta = SnapshotMeta {
            last_log_id: None,
            last_membership: StoredMembership::default(),
            snapshot_id: String::new(),
        };
        assert!(
            decode_state(&meta, blob).is_err(),
            "decode_state refuses it too"
        );
        return;
    };
    assert_eq!(
        checked.ok().as_ref(),
        Some(&info),
        "check agrees with decode"
    );
    assert_eq!(info.size, blob.len(), "size");
    let h = info.header;
    let cluster_id = h.cluster_id;
    let state = into_state(h.clone(), records);

    let res = decode_state(&announced(&h, pick), blob);
    let variant = pick % 4;
    if variant == 0 {
        let (got, cluster) = res.expect("a snapshot decodes with its own metadata");
        assert_eq!(got, state, "the state of its header and records");
        assert_eq!(cluster, cluster_id, "its cluster id");
    } else {
        assert!(
            res.is_err(),
            "metadata {variant} of another snapshot is refused"
        );
    }

    let once = encode_state(&state, cluster_id, h.snapshot_id.clone()).expect("encodes");
    let (again, cluster) =
        decode_state(&h.meta(), &once).expect("our own encoding decodes with the same metadata");
    assert_eq!(again, state, "round trip");
    assert_eq!(cluster, cluster_id, "cluster id round trip");
    let (first, first_records) = decode(&once).expect("our own encoding decodes");
    assert_eq!(first.header.records, state.len() as u64, "record count");
    let twice = encode_state(&again, cluster, h.snapshot_id).expect("encodes again");
    let (second, second_records) = decode(&twice).expect("decodes again");
    assert_eq!(second_records, first_records, "stable records");
    assert_eq!(
        SnapshotHeader {
            created_at: first.header.created_at,
            ..second.header
        },
        first.header,
        "stable header"
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    check_blob(pick, body);
    check_blob(pick, &registry_fuzz::seal_snapshot(body));
});
