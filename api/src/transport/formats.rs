//! Which storage format each peer reads, so that a leader writes nothing a member cannot
//! decode while the cluster is upgraded one node at a time.
//!
//! Every answer to a Raft RPC carries [`FORMAT_HEADER`]: the newest format its node reads
//! ([`FORMAT_VERSION`]). The leader records what each peer's last answer said (a node of
//! format 1 sends no header), and proposes a command of format N
//! ([`registry_storage::Command::format`]) only once every other member has answered with N
//! or more; until then it proposes the command's older form. Raft RPC messages keep the
//! encoding of format 1 (see [`super::rpc`]), so nodes of both formats replicate to each
//! other; only the entries inside them and snapshot files carry newer formats.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use registry_storage::codec::FORMAT_VERSION;
use registry_storage::NodeId;
use warp::http::{HeaderMap, HeaderValue};

/// Header of an RPC answer with the newest storage format its node reads.
pub const FORMAT_HEADER: &str = "x-registry-format";

/// The value of [`FORMAT_HEADER`] this node sends.
pub fn format_header_value() -> HeaderValue {
    HeaderValue::from(u16::from(FORMAT_VERSION))
}

/// What each peer's latest RPC answer said it reads. Cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct PeerFormats(Arc<Mutex<BTreeMap<NodeId, u8>>>);

impl PeerFormats {
    /// Records the format `headers` (an RPC answer of `peer`) say it reads: 1 without the
    /// header or with one this node cannot parse.
    pub fn record(&self, peer: NodeId, headers: &HeaderMap) {
        let format = headers
            .get(FORMAT_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u8>().ok())
            .unwrap_or(1);
        let mut known = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if known.insert(peer, format) != Some(format) {
            tracing::info!(peer, format, "a peer reads this storage format");
        }
    }

    /// The newest format that this node and every one of `peers` read: the peers not heard
    /// from yet count as format 1.
    pub fn common(&self, peers: impl IntoIterator<Item = NodeId>) -> u8 {
        let known = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        peers
            .into_iter()
            .map(|p| known.get(&p).copied().unwrap_or(1))
            .fold(FORMAT_VERSION, u8::min)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_common_format_is_the_oldest_a_member_reads() {
        let formats = PeerFormats::default();
        assert_eq!(formats.common([]), FORMAT_VERSION, "alone");
        assert_eq!(formats.common([2, 3]), 1, "peers not heard from");
        let mut current = HeaderMap::new();
        current.insert(FORMAT_HEADER, format_header_value());
        formats.record(2, &current);
        assert_eq!(formats.common([2, 3]), 1, "node 3 still unknown");
        formats.record(3, &HeaderMap::new());
        assert_eq!(formats.common([2, 3]), 1, "node 3 answered as format 1");
        formats.record(3, &current);
        assert_eq!(formats.common([2, 3]), FORMAT_VERSION, "both upgraded");
        let mut newer = HeaderMap::new();
        newer.insert(
            FORMAT_HEADER,
            HeaderValue::from(u16::from(FORMAT_VERSION) + 1),
        );
        formats.record(2, &newer);
        assert_eq!(
            formats.common([2, 3]),
            FORMAT_VERSION,
            "never newer than this node"
        );
    }
}
