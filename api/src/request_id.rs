//! Request ids: every request gets one (its `x-request-id` when valid, else a new one as
//! OpenStack services give them: `req-` and a version-4 UUID), set for the task serving it
//! so that a forward to the leader carries it, and answered in `x-request-id` (and, on the
//! Cinder API, `x-openstack-request-id`, and on errors `x-compute-request-id`, which
//! cinderclient prints in its error line).
//!
//! The 122 random bits come from the standard library's randomly keyed SipHash
//! ([`std::collections::hash_map::RandomState`], keyed from the operating system's random
//! source) over a process-wide counter: unique and unpredictable enough to correlate logs,
//! without a dependency. They are not a secret and are not used as one.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use warp::http::HeaderMap;

/// Header carrying the request id on every response.
pub const OPENSTACK_HEADER: &str = "x-openstack-request-id";
/// Header carrying the same id on error responses.
pub const COMPUTE_HEADER: &str = "x-compute-request-id";

/// Header carrying a request's id, in the request (optional) and in every answer.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// Longest request id taken from a client.
pub const MAX_REQUEST_ID_LEN: usize = 64;

tokio::task_local! {
    /// The id of the request being served, for code that calls further out (forwarding).
    pub(crate) static REQUEST_ID: String;
}

/// The id of the request being served by the current task, if any.
pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// Whether a client's request id may be kept: 1 to [`MAX_REQUEST_ID_LEN`] characters, each
/// an ASCII letter, digit, `-` or `_`.
pub fn is_valid_request_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The request's own id when it sent a valid one, else a new one (`req-<uuid4>`).
pub(crate) fn request_id_of(headers: &HeaderMap) -> String {
    match headers.get(REQUEST_ID_HEADER).map(|v| v.to_str()) {
        Some(Ok(id)) if is_valid_request_id(id) => id.to_string(),
        Some(_) => {
            let id = new_request_id();
            tracing::debug!(request_id = %id, "invalid x-request-id replaced");
            id
        }
        None => new_request_id(),
    }
}

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
    use warp::http::HeaderValue;

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

    /// A client's id is kept only when short and made of safe characters; otherwise a new
    /// one replaces it.
    #[test]
    fn request_ids_are_validated() {
        assert!(is_valid_request_id("abc-DEF_123"));
        assert!(is_valid_request_id(&"a".repeat(64)));
        assert!(!is_valid_request_id(&"a".repeat(65)));
        assert!(!is_valid_request_id(""));
        assert!(!is_valid_request_id("has space"));
        assert!(!is_valid_request_id("semi;colon"));
        assert!(!is_valid_request_id("ünïcode"));
        let mut h = HeaderMap::new();
        h.insert(REQUEST_ID_HEADER, HeaderValue::from_static("mine-1"));
        assert_eq!(request_id_of(&h), "mine-1");
        h.insert(REQUEST_ID_HEADER, HeaderValue::from_static("not/ok"));
        let replaced = request_id_of(&h);
        assert!(replaced.starts_with("req-") && is_valid_request_id(&replaced));
    }
}
