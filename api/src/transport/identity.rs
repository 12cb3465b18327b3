//! Who is talking to whom between nodes: every request one node sends another (Raft RPCs,
//! requests forwarded to the leader, membership requests) names the sender's cluster and the
//! node and store incarnation it is meant for, as the sender's membership records them; the
//! receiver admits it only if all three are its own.
//!
//! - [`CLUSTER_ID_HEADER`]: the sender's cluster id (absent when it has none yet: a node that
//!   is joining).
//! - [`TARGET_HEADER`]: `NODE_ID/INCARNATION` of the addressee.
//!
//! So a node whose store was created anew (a lost disk: a new incarnation) refuses every
//! request meant for the member it was, and cannot vote or count toward a quorum as that
//! member; a node of another cluster (an old node pointed at a restored cluster, say) is
//! refused both ways. A node that has no cluster yet takes the sender's, durably, from the
//! first request that addresses its own incarnation: only a peer this node introduced itself
//! to can know it.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use registry_storage::{ClusterId, Incarnation, NodeId, RegistryNode, StoreIdentity};
use warp::http::{HeaderMap, HeaderValue};

use crate::error::ApiError;
use crate::transport::formats::PeerFormats;

/// Header with the sender's cluster id.
pub const CLUSTER_ID_HEADER: &str = "x-registry-cluster-id";
/// Header with the addressee, `NODE_ID/INCARNATION`.
pub const TARGET_HEADER: &str = "x-registry-target";

/// How often refusals are logged at most (per node): a peer that keeps addressing a lost
/// incarnation retries every few hundred milliseconds.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// A node as a request addresses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// Its node id.
    pub node_id: NodeId,
    /// The incarnation of its store.
    pub incarnation: Incarnation,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.node_id, self.incarnation)
    }
}

impl FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (id, inc) = s
            .split_once('/')
            .ok_or_else(|| format!("expected NODE_ID/INCARNATION, got {s:?}"))?;
        Ok(Self {
            node_id: id.parse().map_err(|_| format!("not a node id: {id:?}"))?,
            incarnation: inc.parse()?,
        })
    }
}

/// This node's identity as its peers see it: what it sends, and what it admits.
#[derive(Debug, Clone)]
pub struct PeerIdentity {
    node_id: NodeId,
    store: StoreIdentity,
    /// The storage formats peers read, as their RPC answers say.
    formats: PeerFormats,
    /// When a refusal was last logged.
    logged: Arc<Mutex<Option<Instant>>>,
}

impl PeerIdentity {
    /// Node `node_id`, whose store is `store`.
    pub fn new(node_id: NodeId, store: StoreIdentity) -> Self {
        Self {
            node_id,
            store,
            formats: PeerFormats::default(),
            logged: Arc::default(),
        }
    }

    /// The storage formats peers read.
    pub fn formats(&self) -> &PeerFormats {
        &self.formats
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// Its store's incarnation.
    pub fn incarnation(&self) -> Incarnation {
        self.store.incarnation()
    }

    /// Its cluster, once it has one.
    pub fn cluster_id(&self) -> Option<ClusterId> {
        self.store.cluster_id()
    }

    /// The store's identity.
    pub fn store(&self) -> &StoreIdentity {
        &self.store
    }

    /// The identity headers of a request to node `target` as the membership records it.
    pub fn headers_to(&self, target: NodeId, node: &RegistryNode) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(c) = self.cluster_id() {
            if let Ok(v) = HeaderValue::from_str(&c.to_string()) {
                h.insert(CLUSTER_ID_HEADER, v);
            }
        }
        let to = Target {
            node_id: target,
            incarnation: node.incarnation,
        };
        if let Ok(v) = HeaderValue::from_str(&to.to_string()) {
            h.insert(TARGET_HEADER, v);
        }
        h
    }

    /// Admits a request from a peer, or says why not (421). `joining` admits a sender that
    /// has no cluster yet (a node asking to be added); every other request must name a
    /// cluster. A node without a cluster takes the sender's, durably, before it admits.
    pub async fn admit(&self, headers: &HeaderMap, joining: bool) -> Result<(), ApiError> {
        let res = self.check(headers, joining).await;
        if let Err(e) = &res {
            let mut logged = self.logged.lock().unwrap_or_else(PoisonError::into_inner);
            if logged.is_none_or(|t| t.elapsed() >= REFUSAL_LOG_EVERY) {
                *logged = Some(Instant::now());
                tracing::warn!(error = %e, "refused a request from a peer (logged at most every 10 s)");
            }
        }
        res
    }

    async fn check(&self, headers: &HeaderMap, joining: bool) -> Result<(), ApiError> {
        let header = |name: &str| -> Result<Option<&str>, ApiError> {
            headers
                .get(name)
                .map(|v| {
                    v.to_str()
                        .map_err(|_| ApiError::BadRequest(format!("{name} is not text")))
                })
                .transpose()
        };
        let target: Target = header(TARGET_HEADER)?
            .ok_or_else(|| {
                ApiError::WrongPeer(format!(
                    "a request between nodes must name its addressee in {TARGET_HEADER}"
                ))
            })?
            .parse()
            .map_err(|e| ApiError::BadRequest(format!("{TARGET_HEADER}: {e}")))?;
        if target.node_id != self.node_id {
            return Err(ApiError::WrongPeer(format!(
                "this request is meant for node {}, but this is node {}",
                target.node_id, self.node_id
            )));
        }
        let mine = self.incarnation();
        if target.incarnation != mine {
            return Err(ApiError::WrongPeer(format!(
                "this request is meant for incarnation {} of node {}, but this is incarnation \
                 {mine}: this node's store was created anew (a lost or emptied data directory) \
                 and is not the member the sender knows; it must be added again (it asks the \
                 leader to replace its old incarnation by itself)",
                target.incarnation, self.node_id
            )));
        }
        let theirs: Option<ClusterId> = header(CLUSTER_ID_HEADER)?
            .map(|c| {
                c.parse()
                    .map_err(|e| ApiError::BadRequest(format!("{CLUSTER_ID_HEADER}: {e}")))
            })
            .transpose()?;
        match (self.cluster_id(), theirs) {
            (Some(ours), Some(theirs)) if ours == theirs => Ok(()),
            (Some(ours), Some(theirs)) => Err(ApiError::WrongPeer(format!(
                "this node belongs to cluster {ours}; the request comes from cluster {theirs}"
            ))),
            (_, None) if joining => Ok(()),
            (Some(ours), None) => Err(ApiError::WrongPeer(format!(
                "the request names no cluster; this node belongs to cluster {ours}"
            ))),
            (None, None) => Err(ApiError::WrongPeer(
                "neither this node nor the sender belongs to a cluster yet".into(),
            )),
            (None, Some(theirs)) => {
                self.store.adopt(theirs).await.map_err(|e| {
                    ApiError::Unavailable(format!("cannot record cluster {theirs}: {e}"))
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_print_and_parse_back() {
        let t = Target {
            node_id: 3,
            incarnation: Incarnation(0xfeed),
        };
        assert_eq!(t.to_string(), "3/000000000000feed");
        assert_eq!("3/000000000000feed".parse::<Target>(), Ok(t));
        assert!("3".parse::<Target>().is_err());
        assert!("x/000000000000feed".parse::<Target>().is_err());
        assert!("3/feed".parse::<Target>().is_err());
    }

    /// The receiver admits exactly the requests meant for its node id, incarnation and
    /// cluster; one without a cluster takes the first sender's that addresses it right.
    #[tokio::test]
    async fn admits_only_requests_for_this_incarnation_and_cluster() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = registry_storage::open_store(dir.path())?;
        let me = PeerIdentity::new(2, store.identity.clone());
        let other = RegistryNode::new("x", Incarnation(me.incarnation().0 ^ 1));
        let right = RegistryNode::new("x", me.incarnation());
        let status = |r: Result<(), ApiError>| r.map_err(|e| e.status().as_u16());

        // No cluster on either side: refused, unless asking to join.
        let none = me.headers_to(2, &right);
        assert_eq!(status(me.admit(&none, false).await), Err(421));
        assert_eq!(status(me.admit(&none, true).await), Ok(()));

        // Another incarnation or node: refused, cluster or not.
        let mut h = me.headers_to(2, &other);
        h.insert(
            CLUSTER_ID_HEADER,
            HeaderValue::from_static("0000000000000000000000000000000a"),
        );
        assert_eq!(status(me.admit(&h, false).await), Err(421));
        assert_eq!(
            me.cluster_id(),
            None,
            "a misdirected request hands no cluster"
        );
        let mut h = me.headers_to(3, &right);
        h.insert(
            CLUSTER_ID_HEADER,
            HeaderValue::from_static("0000000000000000000000000000000a"),
        );
        assert_eq!(status(me.admit(&h, false).await), Err(421));

        // The right incarnation with a cluster: adopted, durably.
        let mut h = me.headers_to(2, &right);
        h.insert(
            CLUSTER_ID_HEADER,
            HeaderValue::from_static("0000000000000000000000000000000a"),
        );
        assert_eq!(status(me.admit(&h, false).await), Ok(()));
        assert_eq!(me.cluster_id(), Some(ClusterId(10)));
        assert_eq!(
            me.headers_to(1, &right)
                .get(CLUSTER_ID_HEADER)
                .and_then(|v| v.to_str().ok()),
            Some("0000000000000000000000000000000a"),
            "it now sends its cluster"
        );

        // Then another cluster is refused.
        let mut h = me.headers_to(2, &right);
        h.insert(
            CLUSTER_ID_HEADER,
            HeaderValue::from_static("0000000000000000000000000000000b"),
        );
        assert_eq!(status(me.admit(&h, false).await), Err(421));
        Ok(())
    }
}
