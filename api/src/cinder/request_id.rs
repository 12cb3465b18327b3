//! Request ids as OpenStack services give them: `req-` and a version-4 UUID, answered in
//! `x-openstack-request-id` (and, on errors, `x-compute-request-id`, which cinderclient
//! prints in its error line).
//!
//! The 122 random bits come from the standard library's randomly keyed SipHash
//! ([`std::collections::hash_map::RandomState`], keyed from the operating system's random
//! source) over a process-wide counter: unique and unpredictable enough to correlate logs,
//! without a dependency. They are not a secret and are not used as one.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// Header carrying the request id on every response.
pub const OPENSTACK_HEADER: &str = "x-openstack-request-id";
/// Header carrying the same id on error responses.
pub const COMPUTE_HEADER: &str = "x-compute-request-id";

/// Counter mixed into each id so two ids of one process never share their input.
static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// A new request id, `req-xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx` (lowercase hex, `y` one of
/// `8`, `9`, `a`, `b`).
pub fn new_request_id() -> String {
    let n = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let random = RandomState::new();
    let half = |salt: u64| {
        let mut h = random.build_hasher();
        h.write_u64(n);
        h.write_u64(salt);
        h.finish()
    };
    let mut bits = (u128::from(half(0)) << 64) | u128::from(half(1));
    // Version 4 (random) and the RFC 4122 variant.
    bits = (bits & !(0xf << 76)) | (0x4 << 76);
    bits = (bits & !(0x3 << 62)) | (0x2 << 62);
    let hex = format!("{bits:032x}");
    format!(
        "req-{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Whether `id` has the form [`new_request_id`] produces.
pub fn is_request_id(id: &str) -> bool {
    let Some(uuid) = id.strip_prefix("req-") else {
        return false;
    };
    let groups: Vec<&str> = uuid.split('-').collect();
    let lengths_ok = groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12]);
    let hex_ok = groups
        .iter()
        .all(|g| g.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
    lengths_ok
        && hex_ok
        && groups[2].starts_with('4')
        && groups[3].starts_with(['8', '9', 'a', 'b'])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ids are well formed version-4 UUIDs and do not repeat.
    #[test]
    fn ids_are_uuid4_and_unique() {
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| new_request_id()).collect();
        assert_eq!(ids.len(), 1000, "request ids repeat");
        for id in &ids {
            assert!(is_request_id(id), "{id} is not req-<uuid4>");
        }
        assert!(!is_request_id("req-123"));
    }
}
