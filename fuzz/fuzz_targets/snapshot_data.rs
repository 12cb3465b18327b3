//! Snapshot data, as received from a leader or read back from the `snapshot` tree:
//! `decode_state` on arbitrary bytes is an error or a state, never a panic or an allocation
//! of a size the bytes do not hold. The first byte picks the metadata's last log id (none, or
//! a fixed one), so that both the match and the mismatch of data and metadata are exercised;
//! a state that decodes re-encodes to data that decodes to the same state.
#![no_main]

use libfuzzer_sys::fuzz_target;
use openraft::{CommittedLeaderId, LogId};
use registry_storage::snapshot::{decode_state, encode_state};
use registry_storage::types::SnapshotMeta;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, data)) = data.split_first() else {
        return;
    };
    let meta = SnapshotMeta {
        last_log_id: (pick & 1 == 1).then(|| LogId::new(CommittedLeaderId::new(1, 1), 1)),
        last_membership: Default::default(),
        snapshot_id: "fuzz".into(),
    };
    let Ok(state) = decode_state(&meta, data) else {
        return;
    };
    let once = encode_state(&state).expect("a decoded state encodes");
    let again = decode_state(&meta, &once).expect("our own encoding decodes");
    assert_eq!(again.digest(), state.digest(), "round trip");
    assert_eq!(
        encode_state(&again).expect("encodes again"),
        once,
        "stable encoding"
    );
});
