//! A stored Raft log entry (`raft_log` tree values, in the envelope of
//! `registry_storage::codec`): `codec::decode` on the input as it is and on the input sealed
//! in a valid envelope (format version, CRC-32 of the input) is an error or an entry, never a
//! panic or an allocation of a size the bytes do not hold; an entry that decodes round-trips,
//! and applying it (twice) to a fresh state machine does not panic either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use registry_storage::types::Entry;
use registry_storage::ServicesState;

fuzz_target!(|data: &[u8]| {
    for entry in registry_fuzz::stored_round_trip::<Entry>(data)
        .into_iter()
        .flatten()
    {
        let mut state = ServicesState::default();
        let _ = state.apply_entry(&entry);
        let _ = state.apply_entry(&entry);
    }
});
