//! Query strings of `GET /v1/services` (`serde_urlencoded` into `ServicesQuery`, unknown keys
//! refused) and of `GET /v3/os-services` (`ListQuery::parse`). Never a panic; an accepted
//! query encodes and parses back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use registry_api::cinder::query::ListQuery;
use registry_api::wire::ServicesQuery;

fn round_trip(q: &ServicesQuery) {
    let text = serde_urlencoded::to_string(q).expect("a query encodes");
    let back: ServicesQuery = serde_urlencoded::from_str(&text).expect("its encoding parses");
    assert_eq!(&back, q, "query round trip through {text:?}");
}

fuzz_target!(|data: &[u8]| {
    if let Ok(q) = serde_urlencoded::from_bytes::<ServicesQuery>(data) {
        round_trip(&q);
    }
    if let Ok(raw) = std::str::from_utf8(data) {
        if let Ok(q) = ListQuery::parse(raw) {
            round_trip(&q.native());
        }
    }
});
