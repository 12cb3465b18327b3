//! Reaching the leader from another node: every request that must run on the leader and
//! arrives elsewhere goes through here.
//!
//! - heartbeats join the batches a follower sends the leader ([`forwarder`]);
//! - a linearizable read asks the leader for its read index and is served here
//!   ([`crate::read`]); only a leader of an older version, without that route, gets the read
//!   itself;
//! - any other write, or such a read, is relayed as it came, a read's answer streamed back
//!   as it arrives ([`relay`]);
//! - with no leader known, or the known one unreachable, the request waits (a bounded time)
//!   for the group to elect one ([`Forwarding::forward_or_wait`]).
//!
//! A forwarded request carries [`FORWARDED_HEADER`]: the leader never forwards it again.

pub mod forwarder;
pub mod relay;

use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::ForwardToLeader;
use openraft::ServerState;
use registry_storage::{NodeId, RegistryNode};
use warp::http::{Method, StatusCode};

use crate::audit::Actor;
use crate::error::ApiError;
use crate::request_id::current_request_id;
use crate::shared::Shared;
use crate::transport::peer::{relay_headers, Peer, PeerError, RelayError, Relayed};
use forwarder::Forwarder;

pub use crate::transport::peer::FORWARDED_HEADER;

/// How long a request waits for a leader to be elected before failing with 503: a few
/// election rounds; a group that elects none in that time has no quorum.
pub const LEADER_WAIT: Duration = Duration::from_secs(2);

/// How a request that must run on the leader reaches it from another node.
pub enum Via<'a> {
    /// The request itself, sent again.
    Request {
        /// Its method.
        method: Method,
        /// Its path and query.
        path_and_query: &'a str,
        /// Its body.
        body: bytes::Bytes,
        /// Who it acts as, sent along for a write ([`crate::audit::ACTOR_HEADER`]).
        actor: Option<&'a Actor>,
    },
    /// Validated heartbeats (`count` of them in `body`), batched with others on the way.
    Heartbeats {
        /// The request's body.
        body: bytes::Bytes,
        /// Heartbeats in it.
        count: usize,
    },
}

/// What the leader said of a linearizable read's index ([`Forwarding::read_index_or_wait`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaderIndex {
    /// The read must see this index applied.
    At(Option<u64>),
    /// Another leader is known now: ask again.
    Retry,
    /// The leader does not serve read indexes (an older version): forward the read.
    Unsupported,
}

/// This node's way to the leader. Cheap to clone.
#[derive(Clone)]
pub struct Forwarding {
    shared: Arc<Shared>,
    /// How this node sends requests to the leader (pooled connections).
    peer: Peer,
    /// Heartbeats waiting for the leader, forwarded in batches.
    forwarder: Forwarder,
}

impl Forwarding {
    /// Forwards as `peer`, heartbeats through `forwarder`.
    pub fn new(shared: Arc<Shared>, peer: Peer, forwarder: Forwarder) -> Self {
        Self {
            shared,
            peer,
            forwarder,
        }
    }

    /// The leader as this node knows it, when it is another node: where a write goes
    /// without asking Raft first.
    pub fn leader_elsewhere(&self) -> Option<ForwardToLeader<NodeId, RegistryNode>> {
        let m = self.shared.raft.metrics();
        let m = m.borrow();
        if m.state == ServerState::Leader {
            return None;
        }
        let leader = m.current_leader.filter(|l| *l != self.shared.id)?;
        let node = m.membership_config.membership().get_node(&leader)?.clone();
        Some(ForwardToLeader::new(leader, node))
    }

    /// Forwards a request to the leader named in `fwd` and returns its answer; when no leader
    /// is known, or the known one cannot be reached, waits (until `deadline`) for the group to
    /// elect one and returns `None` so the caller tries again.
    pub async fn forward_or_wait(
        &self,
        fwd: &ForwardToLeader<NodeId, RegistryNode>,
        via: &Via<'_>,
        deadline: Instant,
    ) -> Result<Option<warp::reply::Response>, ApiError> {
        if let (Some(leader), Some(node)) = (fwd.leader_id, &fwd.leader_node) {
            if leader != self.shared.id {
                match self.relay((leader, node), via).await {
                    Ok(resp) => return Ok(Some(resp)),
                    Err(RelayError::Connect(e)) => {
                        tracing::debug!(leader, error = %e, "leader unreachable; waiting for a new one");
                    }
                    Err(RelayError::Unknown(e)) => {
                        return Err(ApiError::Unavailable(format!(
                            "forwarding to leader {leader} at {} failed, outcome unknown: {e}",
                            node.addr
                        )))
                    }
                }
            }
        }
        self.wait_for_other_leader(fwd.leader_id, deadline).await?;
        Ok(None)
    }

    /// Asks the leader named in `fwd` for the read index of a linearizable read. When no
    /// leader is known, the known one cannot be reached, or it refuses (it lost its lead or
    /// its quorum), waits (until `deadline`) for the group to elect one and says to try
    /// again; a leader without the route (an older version) says to forward the read.
    pub async fn read_index_or_wait(
        &self,
        fwd: &ForwardToLeader<NodeId, RegistryNode>,
        deadline: Instant,
    ) -> Result<LeaderIndex, ApiError> {
        let mut refusal = None;
        if let (Some(leader), Some(node)) = (fwd.leader_id, &fwd.leader_node) {
            if leader != self.shared.id {
                let timeout = deadline.saturating_duration_since(Instant::now());
                let rid = current_request_id();
                match self
                    .peer
                    .read_index((leader, node), timeout, rid.as_deref())
                    .await
                {
                    Ok(out) => return Ok(LeaderIndex::At(out.read_index)),
                    Err(PeerError::Refused { status, .. })
                        if status == StatusCode::NOT_FOUND.as_u16()
                            || status == StatusCode::METHOD_NOT_ALLOWED.as_u16() =>
                    {
                        return Ok(LeaderIndex::Unsupported)
                    }
                    Err(e) => {
                        tracing::debug!(leader, error = %e, "no read index from the leader; waiting for a leader");
                        refusal = Some(e);
                    }
                }
            }
        }
        match self.wait_for_other_leader(fwd.leader_id, deadline).await {
            Ok(()) => Ok(LeaderIndex::Retry),
            Err(e) => Err(match refusal {
                Some(PeerError::Refused { message, .. }) => ApiError::Unavailable(message),
                _ => e,
            }),
        }
    }

    /// Waits until a leader other than `not` is known, or fails at `deadline` or after
    /// [`LEADER_WAIT`], whichever comes first.
    async fn wait_for_other_leader(
        &self,
        not: Option<NodeId>,
        deadline: Instant,
    ) -> Result<(), ApiError> {
        let deadline = deadline.min(Instant::now() + LEADER_WAIT);
        let mut rx = self.shared.raft.metrics();
        let wait = async {
            rx.wait_for(|m| m.current_leader.is_some() && m.current_leader != not)
                .await
                .map(|_| ())
        };
        match tokio::time::timeout_at(deadline.into(), wait).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(ApiError::Unavailable("raft on this node stopped".into())),
            Err(_) => Err(ApiError::Unavailable(
                "no leader elected in time: the registry has no quorum".into(),
            )),
        }
    }

    /// Sends a request to the leader `to` the way `via` says, and returns its answer.
    async fn relay(
        &self,
        to: (NodeId, &RegistryNode),
        via: &Via<'_>,
    ) -> Result<warp::reply::Response, RelayError> {
        let (method, path_and_query, body, actor) = match via {
            Via::Heartbeats { body, count } => {
                return self
                    .forwarder
                    .forward(to, body.clone(), *count, current_request_id())
                    .await
                    .map(Relayed::into_response)
            }
            Via::Request {
                method,
                path_and_query,
                body,
                actor,
            } => (method, path_and_query, body, actor),
        };
        let resp = self
            .peer
            .send(
                method.clone(),
                to,
                path_and_query,
                body.clone(),
                current_request_id().as_deref(),
                *actor,
            )
            .await?;
        if *method == Method::GET {
            // A read (a list, up to tens of MiB) is passed through as it arrives.
            let status = resp.status();
            let headers = relay_headers(resp.headers());
            let mut out = relay::relay(resp, &self.shared.tasks);
            *out.status_mut() = status;
            out.headers_mut().extend(headers);
            return Ok(out);
        }
        Ok(Relayed::read(resp).await?.into_response())
    }
}

/// The answer of a node that got a forwarded request but does not lead (any more).
pub fn not_leader(id: NodeId, fwd: &ForwardToLeader<NodeId, RegistryNode>) -> ApiError {
    ApiError::Unavailable(format!(
        "node {id} received a forwarded request but is not the leader (leader now: {:?}); retry",
        fwd.leader_id
    ))
}
