//! A stored Raft log entry (`raft_log` tree values, and the entries of AppendEntries): the
//! storage codec on arbitrary bytes is an error or an entry, never a panic or an allocation
//! of a size the bytes do not hold; an entry that decodes round-trips, and applying it to a
//! fresh state machine does not panic either.
#![no_main]

use std::collections::BTreeSet;

use libfuzzer_sys::fuzz_target;
use registry_storage::codec::{decode, encode};
use registry_storage::types::Entry;
use registry_storage::ServicesState;

fuzz_target!(|data: &[u8]| {
    let Ok(entry) = decode::<Entry>(data) else {
        return;
    };
    let once = encode(&entry).expect("a decoded entry encodes");
    let again = decode::<Entry>(&once).expect("our own encoding decodes");
    assert_eq!(
        encode(&again).expect("encodes again"),
        once,
        "stable round trip"
    );
    let mut state = ServicesState::default();
    let mut changed = BTreeSet::new();
    let _ = state.apply_entry(&entry, &mut changed);
    let _ = state.apply_entry(&entry, &mut changed);
});
