//! A stored service record (`services` tree values, in the envelope of
//! `registry_storage::codec`): `codec::decode` on the input as it is and on the input sealed
//! in a valid envelope (format version, CRC-32 of the input) is an error or a record, never a
//! panic or an allocation of a size the bytes do not hold; a record that decodes round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use registry_storage::ServiceRecord;

fuzz_target!(|data: &[u8]| {
    let _ = registry_fuzz::stored_round_trip::<ServiceRecord>(data);
});
