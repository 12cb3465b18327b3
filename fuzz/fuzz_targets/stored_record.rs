//! A stored service record (`services` tree values): the storage codec on arbitrary bytes is
//! an error or a record, never a panic or an allocation of a size the bytes do not hold; a
//! record that decodes round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use registry_storage::codec::{decode, encode};
use registry_storage::ServiceRecord;

fuzz_target!(|data: &[u8]| {
    let Ok(record) = decode::<ServiceRecord>(data) else {
        return;
    };
    let once = encode(&record).expect("a decoded record encodes");
    let again = decode::<ServiceRecord>(&once).expect("our own encoding decodes");
    assert_eq!(again, record, "round trip");
});
