//! The read path: where a read is served, at which consistency, and what it lists.
//!
//! - `stale`: from this node's state machine, at once;
//! - `linearizable` (the default): the leader confirms with a quorum the index the read must
//!   see (openraft's read index, or everything it held when it took the lead, if later), and
//!   the node asked serves it from its own state machine once it has applied that index
//!   ([`ReadPath::at`]): the leader at once, a follower after asking the leader for the
//!   index (`POST /raft/read-index`, Raft's read index as in section 6.4 of Ongaro's thesis).
//!   A follower that has not applied it within half the read's time, or whose leader does not
//!   know that route, forwards the read to the leader and relays its answer.
//!
//! A list is taken from the state machine under its lock ([`listing`]) and written out
//! after; every answer says how fresh it is ([`ReadPath::freshness_headers`]).

pub mod listing;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use openraft::error::{CheckIsLeaderError, ForwardToLeader, RaftError};
use openraft::ServerState;
use registry_storage::{NodeId, RegistryNode, ServiceRecord};
use warp::http::{HeaderMap, HeaderValue, Method};

use crate::error::ApiError;
use crate::forward::{not_leader, Forwarding, LeaderIndex, Via};
use crate::shared::Shared;
use crate::wire::{Consistency, ServicesQuery};
use listing::Listing;

/// Header with the applied log index the answer reflects.
pub const APPLIED_INDEX_HEADER: &str = "x-registry-applied-index";
/// Header naming the node that served a read.
pub const SERVED_BY_HEADER: &str = "x-registry-served-by";
/// Header with the consistency level a read was served at.
pub const CONSISTENCY_HEADER: &str = "x-registry-consistency";
/// Header with the milliseconds since this node last heard from a leader (stale reads).
pub const LEADER_CONTACT_HEADER: &str = "x-registry-last-leader-contact-ms";

/// How long a leader waits before asking its quorum again to confirm a read index that one
/// round of heartbeats did not confirm.
const QUORUM_RETRY: Duration = Duration::from_millis(20);

/// What a quorum confirmed about this node's lead.
enum Confirmed {
    /// It leads: a read must see this index applied.
    Leader(Option<u64>),
    /// Another node leads, or none is known.
    Elsewhere(ForwardToLeader<NodeId, RegistryNode>),
}

/// Where a read is served.
pub enum ReadAt {
    /// Here, from the local state machine.
    Here,
    /// By the leader, whose answer is passed through.
    Forwarded(warp::reply::Response),
}

/// A node's read path. Cheap to clone.
#[derive(Clone)]
pub struct ReadPath {
    shared: Arc<Shared>,
    /// The way to the leader.
    forwarding: Forwarding,
    /// The term this node leads in and the last log index it held when it first served a
    /// linearizable read in it: reads wait until that much is applied (see
    /// [`ReadPath::read_floor`]).
    floor: Arc<Mutex<Option<(u64, u64)>>>,
}

impl ReadPath {
    /// Reads `shared`'s state machine, reaching the leader by `forwarding`.
    pub fn new(shared: Arc<Shared>, forwarding: Forwarding) -> Self {
        Self {
            shared,
            forwarding,
            floor: Arc::default(),
        }
    }

    /// Decides where a read at `consistency` is served. A linearizable read is confirmed by
    /// the leader with a quorum (openraft's read index) and then served from this node's
    /// state machine once it has applied that index: on the leader, or on a follower that
    /// asked the leader for the index (`POST /raft/read-index`). Only when the leader
    /// does not know that route (a member of an older version) is the read forwarded to it
    /// and its answer relayed.
    pub async fn at(
        &self,
        query: &ServicesQuery,
        path_and_query: &str,
        forwarded: bool,
    ) -> Result<ReadAt, ApiError> {
        if query.consistency.unwrap_or_default() == Consistency::Stale {
            return Ok(ReadAt::Here);
        }
        let deadline = Instant::now() + self.shared.settings.read_timeout;
        loop {
            let fwd = match self.confirm(deadline).await? {
                Confirmed::Leader(index) => {
                    self.wait_applied(index, deadline).await?;
                    return Ok(ReadAt::Here);
                }
                Confirmed::Elsewhere(fwd) => fwd,
            };
            if forwarded {
                return Err(not_leader(self.shared.id, &fwd));
            }
            match self.forwarding.read_index_or_wait(&fwd, deadline).await? {
                LeaderIndex::At(index) => {
                    // A follower far behind (catching up, or installing a snapshot) leaves
                    // the read to the leader rather than fail it.
                    let now = Instant::now();
                    let own = now + deadline.saturating_duration_since(now) / 2;
                    if self.applied_by(index, own).await? {
                        return Ok(ReadAt::Here);
                    }
                    tracing::debug!(
                        ?index,
                        "read index not applied in time here; forwarding the read"
                    );
                }
                LeaderIndex::Retry => continue,
                LeaderIndex::Unsupported => {}
            }
            let via = Via::Request {
                method: Method::GET,
                path_and_query,
                body: bytes::Bytes::new(),
                actor: None,
            };
            if let Some(resp) = self
                .forwarding
                .forward_or_wait(&fwd, &via, deadline)
                .await?
            {
                return Ok(ReadAt::Forwarded(resp));
            }
        }
    }

    /// The answer of `POST /raft/read-index` on this node: the index a follower's
    /// linearizable read must see applied, if this node leads (else a 503 naming the leader
    /// it knows).
    pub async fn leader_read_index(&self) -> Result<Option<u64>, ApiError> {
        let deadline = Instant::now() + self.shared.settings.read_timeout;
        match self.confirm(deadline).await? {
            Confirmed::Leader(index) => Ok(index),
            Confirmed::Elsewhere(fwd) => Err(ApiError::Unavailable(format!(
                "node {} is not the leader (leader now: {:?}); ask it for the read index",
                self.shared.id, fwd.leader_id
            ))),
        }
    }

    /// Confirms with a quorum (until `deadline`) that this node leads, and returns the index a
    /// linearizable read must see applied: openraft's read index, or this leader's
    /// [read floor](Self::read_floor) when that is later; or the leader as this node knows it.
    async fn confirm(&self, deadline: Instant) -> Result<Confirmed, ApiError> {
        let timeout = self.shared.settings.read_timeout;
        loop {
            self.shared.check_quorum_contact()?;
            let remaining = deadline.saturating_duration_since(Instant::now());
            let res = tokio::time::timeout(remaining, self.shared.raft.get_read_log_id()).await;
            match res {
                Err(_) => {
                    return Err(ApiError::Unavailable(format!(
                        "linearizable read not confirmed within {timeout:?}: no quorum; \
                         use ?consistency=stale to read this node's state"
                    )))
                }
                Ok(Ok((read_log_id, _))) => {
                    let index = read_log_id.map(|l| l.index).max(self.read_floor());
                    return Ok(Confirmed::Leader(index));
                }
                Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
                    return Ok(Confirmed::Elsewhere(f))
                }
                Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(q)))) => {
                    // One round of heartbeats did not reach a quorum in time (an AppendEntries
                    // has `heartbeat_interval` to complete, fsync included, and a busy follower
                    // can miss it). A leader that really lost its quorum is caught by
                    // `check_quorum_contact` at the top of the loop; until then, and within
                    // the read's deadline, it asks again.
                    if Instant::now() + QUORUM_RETRY >= deadline {
                        return Err(ApiError::Unavailable(format!(
                            "linearizable read refused: {q}; use ?consistency=stale"
                        )));
                    }
                    tracing::debug!(error = %q, "read index not confirmed by a quorum; asking again");
                    tokio::time::sleep(QUORUM_RETRY).await;
                }
                Ok(Err(RaftError::Fatal(f))) => {
                    return Err(ApiError::Unavailable(format!(
                        "raft on this node stopped: {f}"
                    )))
                }
            }
        }
    }

    /// The index a linearizable read on this leader must see applied, at least: the last log
    /// index it held when it first served such a read in the term it leads in now.
    ///
    /// openraft's read index is the leader's first entry of its term or its commit index,
    /// whichever is later. A leader elected in this process committed that first entry, and
    /// its commit index is the group's. But openraft 0.9 also puts a node whose vote was its own
    /// straight back as leader at start-up, in the same term, with the commit index it had on
    /// disk, which is written without a flush and may be older than writes it had
    /// acknowledged: its read index may miss them. Entries it holds are committed once an
    /// entry after them is, so waiting until everything it held is applied is enough (and, for
    /// a leader elected here, costs the first read at most the commit of entries in flight).
    fn read_floor(&self) -> Option<u64> {
        let m = self.shared.raft.metrics();
        let m = m.borrow();
        if m.state != ServerState::Leader {
            return None;
        }
        let mut floor = self.floor.lock().unwrap_or_else(PoisonError::into_inner);
        match *floor {
            Some((term, index)) if term == m.current_term => Some(index),
            _ => {
                let index = m.last_log_index.unwrap_or(0);
                *floor = Some((m.current_term, index));
                Some(index)
            }
        }
    }

    /// Waits (until `deadline`) until this leader has applied `index`, the read index of a
    /// linearizable read.
    async fn wait_applied(&self, index: Option<u64>, deadline: Instant) -> Result<(), ApiError> {
        if self.applied_by(index, deadline).await? {
            return Ok(());
        }
        Err(ApiError::Unavailable(format!(
            "linearizable read not served within {:?}: this leader has not yet applied its \
             read index {index:?} (no quorum?); use ?consistency=stale to read this node's state",
            self.shared.settings.read_timeout
        )))
    }

    /// Whether this node has applied `index` by `deadline` (waiting for it until then).
    async fn applied_by(&self, index: Option<u64>, deadline: Instant) -> Result<bool, ApiError> {
        let Some(index) = index else {
            return Ok(true);
        };
        let mut rx = self.shared.raft.metrics();
        let applied = async {
            rx.wait_for(|m| m.last_applied.is_some_and(|l| l.index >= index))
                .await
                .map(|_| ())
        };
        match tokio::time::timeout_at(deadline.into(), applied).await {
            Ok(Ok(())) => Ok(true),
            Ok(Err(_)) => Err(ApiError::Unavailable("raft on this node stopped".into())),
            Err(_) => Ok(false),
        }
    }

    /// The services matching `query`, to be judged up or down at registry time now. Only
    /// the shared records are taken under the state's lock; nothing is copied or encoded
    /// there.
    pub fn services(&self, query: &ServicesQuery) -> Listing {
        let now = self.shared.registry_now();
        let keep = |r: &&Arc<ServiceRecord>| {
            !r.deleted && query.binary.as_ref().is_none_or(|b| *r.binary == **b)
        };
        let (records, applied, settings) = self.shared.view.read(|state| {
            let records = match &query.host {
                Some(h) => state
                    .shared_records_of_host(h)
                    .filter(keep)
                    .cloned()
                    .collect(),
                None => {
                    let mut all = Vec::with_capacity(state.len());
                    all.extend(state.shared_records().filter(keep).cloned());
                    all
                }
            };
            (records, state.last_applied.map(|l| l.index), state.settings)
        });
        Listing {
            records,
            now,
            liveness: self.shared.liveness_of(settings),
            applied,
        }
    }

    /// Headers describing how fresh a read served here is.
    pub fn freshness_headers(&self, applied: Option<u64>, consistency: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let mut put = |name: &'static str, value: String| {
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.insert(name, v);
            }
        };
        put(
            APPLIED_INDEX_HEADER,
            applied.map_or("none".into(), |i| i.to_string()),
        );
        put(SERVED_BY_HEADER, self.shared.id.to_string());
        put(CONSISTENCY_HEADER, consistency.to_string());
        if let Some(ms) = self.shared.millis_since_leader_contact() {
            put(LEADER_CONTACT_HEADER, ms.to_string());
        }
        h
    }

    /// The state now as a backup (a snapshot blob, see [`registry_storage::snapshot`]), and
    /// the applied index it reflects.
    pub async fn backup(&self) -> Result<(Vec<u8>, Option<u64>), ApiError> {
        self.shared
            .sm
            .backup()
            .await
            .map_err(|e| ApiError::Internal(format!("encoding the backup: {e}")))
    }
}
