//! What the routes need of a node: its Raft handle, its in-memory services table, its
//! settings and metrics; the two paths every request takes, the write path (commit on the
//! leader, forwarded there from any node) and the read path (consistency levels); and the
//! node's health and readiness.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use openraft::error::{CheckIsLeaderError, ClientWriteError, ForwardToLeader, RaftError};
use openraft::{Raft, ServerState};
use registry_storage::{
    Command, CommandResponse, Heartbeat, NodeId, RegistryNode, ServiceRecord, StateMachineStore,
    StateView, Store, TypeConfig,
};
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use warp::http::{HeaderMap, HeaderValue, Method};

use crate::auth::{Auth, Role};
use crate::batcher::{Batcher, WriteError};
use crate::error::ApiError;
use crate::forwarder::Forwarder;
use crate::identity::PeerIdentity;
use crate::json::list::{json_response, write_list};
use crate::json::service::push_service;
use crate::listing::Listing;
use crate::liveness::Liveness;
use crate::metrics::Metrics;
use crate::peer::{relay_headers, Peer, RelayError, Relayed};
use crate::replace::Replacements;
use crate::server::current_request_id;
use crate::snapshot_receiver::SnapshotReceiver;
use crate::wire::{ClusterOut, IdentityOut, MemberIdentity, MemberOut, ServicesQuery};

/// Header set on a request one node forwards to the leader, so it is never forwarded again.
pub const FORWARDED_HEADER: &str = "x-registry-forwarded";
/// Header with the applied log index the answer reflects.
pub const APPLIED_INDEX_HEADER: &str = "x-registry-applied-index";
/// Header naming the node that served a read.
pub const SERVED_BY_HEADER: &str = "x-registry-served-by";
/// Header with the consistency level a read was served at.
pub const CONSISTENCY_HEADER: &str = "x-registry-consistency";
/// Header with the milliseconds since this node last heard from a leader (stale reads).
pub const LEADER_CONTACT_HEADER: &str = "x-registry-last-leader-contact-ms";

/// Settings of the API layer.
#[derive(Debug, Clone, Copy)]
pub struct ApiSettings {
    /// Liveness rule.
    pub liveness: Liveness,
    /// How long a write may wait for a leader and its commit before failing with 503.
    pub write_timeout: Duration,
    /// How long a linearizable read may wait for the leader to confirm its quorum.
    pub read_timeout: Duration,
    /// Most requests on public routes served at once; beyond it a request is answered 503
    /// with `Retry-After` at once (Raft RPCs and probes are not counted).
    pub max_concurrent_requests: usize,
}

/// A node as the API sees it. Cheap to clone.
#[derive(Clone)]
pub struct RegistryApp {
    inner: Arc<Inner>,
}

struct Inner {
    /// This node's id.
    id: NodeId,
    /// The Raft handle.
    raft: Raft<TypeConfig>,
    /// The in-memory services table.
    view: StateView,
    /// The state machine (for backups).
    sm: StateMachineStore,
    /// This node's cluster and incarnation, sent to and checked on peers.
    identity: PeerIdentity,
    /// The snapshot being received from the leader.
    snapshots: SnapshotReceiver,
    /// Nodes being put back in place after a lost store (on the leader).
    replacements: Replacements,
    /// Settings.
    settings: ApiSettings,
    /// How this node sends requests to the leader (pooled connections).
    peer: Peer,
    /// Group commit of heartbeats.
    batcher: Batcher,
    /// Heartbeats waiting for the leader, forwarded in batches.
    forwarder: Forwarder,
    /// Tokens and the cluster secret.
    auth: Auth,
    /// When a leader last sent this node an AppendEntries (or this node led).
    last_leader_contact: Mutex<Option<Instant>>,
    /// The highest commit index a leader announced to this node (AppendEntries'
    /// `leader_commit`): what `/ready` compares the applied index with on a follower.
    leader_commit: Mutex<Option<u64>>,
    /// The term this node leads in and the last log index it held when it first served a
    /// linearizable read in it: reads wait until that much is applied (see
    /// [`RegistryApp::read_floor`]).
    read_floor: Mutex<Option<(u64, u64)>>,
    /// Counters and histograms of what this node did.
    metrics: Metrics,
    /// One permit per public request in flight.
    limiter: Arc<Semaphore>,
    /// Cancelled when the node stops its write path: ends the tasks of [`AppTasks`].
    stop: CancellationToken,
    /// Tasks started by requests (see [`RegistryApp::spawn_task`]).
    tasks: TaskTracker,
}

/// The tasks a [`RegistryApp`] runs beside the routes, for the node to join at shutdown:
/// they end once the token given to [`RegistryApp::new`] is cancelled.
#[derive(Debug)]
pub struct AppTasks {
    /// The heartbeat batcher (group commit on the leader).
    pub batcher: JoinHandle<()>,
    /// The heartbeat forwarder (from a follower to the leader).
    pub forwarder: JoinHandle<()>,
    /// Tasks started by requests, such as putting a node back in place: close it, then wait
    /// for it.
    pub requests: TaskTracker,
}

/// What `GET /ready` answers when the node is ready.
#[derive(Debug, Clone, Serialize)]
pub struct Readiness {
    /// This node's id.
    pub node_id: NodeId,
    /// The leader it heard from recently.
    pub leader_id: NodeId,
    /// The last index applied here.
    pub applied_index: u64,
    /// The leader's commit index as this node knows it.
    pub leader_commit_index: u64,
    /// Committed entries not yet applied here.
    pub lag_entries: u64,
    /// The most that may be: [`READY_MAX_LAG`].
    pub max_lag_entries: u64,
}

/// What the write path did with a request.
pub enum Written {
    /// Committed and applied here: the records the command produced.
    Here(Vec<Arc<ServiceRecord>>),
    /// Committed and applied here, but it named no live record: nothing changed.
    NotFound,
    /// Forwarded to the leader: its answer, passed through.
    Forwarded(warp::reply::Response),
}

/// Where a call that must run on the leader ran.
pub enum OnLeader<T> {
    /// Here: its result.
    Here(T),
    /// On the leader, whose answer is passed through.
    Forwarded(warp::reply::Response),
}

/// Where a read is served.
pub enum ReadAt {
    /// Here, from the local state machine.
    Here,
    /// By the leader, whose answer is passed through.
    Forwarded(warp::reply::Response),
}

impl RegistryApp {
    /// Wraps a node's parts and starts the tasks of its write path, which run until `stop`
    /// is cancelled; requests it sends its peers leave from `local_ip`.
    pub fn new(
        id: NodeId,
        raft: Raft<TypeConfig>,
        store: &Store,
        settings: ApiSettings,
        auth: Auth,
        local_ip: Option<std::net::IpAddr>,
        stop: CancellationToken,
    ) -> (Self, AppTasks) {
        let identity = PeerIdentity::new(id, store.identity.clone());
        let metrics = Metrics::new();
        let (batcher, batcher_task) =
            Batcher::spawn(raft.clone(), metrics.batch_sizes(), stop.clone());
        let permits = settings
            .max_concurrent_requests
            .clamp(1, Semaphore::MAX_PERMITS);
        let http = reqwest::Client::builder()
            .local_address(local_ip)
            .pool_max_idle_per_host(64)
            .timeout(settings.write_timeout.max(settings.read_timeout))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        let peer = Peer::new(http, identity.clone(), auth.secret().map(str::to_string));
        let (forwarder, forwarder_task) = Forwarder::spawn(peer.clone(), stop.clone());
        let tasks = TaskTracker::new();
        let app = Self {
            inner: Arc::new(Inner {
                id,
                raft,
                view: store.sm.view(),
                sm: store.sm.clone(),
                identity,
                snapshots: SnapshotReceiver::default(),
                replacements: Replacements::default(),
                settings,
                peer,
                batcher,
                forwarder,
                auth,
                last_leader_contact: Mutex::new(None),
                leader_commit: Mutex::new(None),
                read_floor: Mutex::new(None),
                metrics,
                limiter: Arc::new(Semaphore::new(permits)),
                stop,
                tasks: tasks.clone(),
            }),
        };
        let tasks = AppTasks {
            batcher: batcher_task,
            forwarder: forwarder_task,
            requests: tasks,
        };
        (app, tasks)
    }

    /// Runs `task`, started by a request, in the background until it ends or the node stops
    /// its write path (it is then dropped at its next await); the node waits for it at
    /// shutdown ([`AppTasks::requests`]).
    pub fn spawn_task(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let stop = self.inner.stop.clone();
        self.inner.tasks.spawn(async move {
            stop.run_until_cancelled(task).await;
        });
    }

    /// The node's counters and histograms.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The in-memory services table.
    pub(crate) fn view(&self) -> &StateView {
        &self.inner.view
    }

    /// This node's identity among its peers.
    pub fn identity(&self) -> &PeerIdentity {
        &self.inner.identity
    }

    /// How this node sends requests to its peers.
    pub fn peer(&self) -> &Peer {
        &self.inner.peer
    }

    /// The snapshot being received from the leader.
    pub(crate) fn snapshots(&self) -> &SnapshotReceiver {
        &self.inner.snapshots
    }

    /// The state machine.
    pub(crate) fn sm(&self) -> &StateMachineStore {
        &self.inner.sm
    }

    /// Nodes being put back in place (on the leader).
    pub(crate) fn replacements(&self) -> &Replacements {
        &self.inner.replacements
    }

    /// The state now as a backup (a snapshot blob, see [`registry_storage::snapshot`]), and
    /// the applied index it reflects.
    pub async fn backup(&self) -> Result<(Vec<u8>, Option<u64>), ApiError> {
        self.inner
            .sm
            .backup()
            .await
            .map_err(|e| ApiError::Internal(format!("encoding the backup: {e}")))
    }

    /// This node's identity as its peers ask for it (`GET /raft/identity`).
    pub async fn identity_out(&self) -> IdentityOut {
        let initialized = self.inner.raft.is_initialized().await.unwrap_or(true);
        let m = self.inner.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: std::collections::BTreeSet<NodeId> = membership.voter_ids().collect();
        let store = self.inner.identity.store();
        IdentityOut {
            format: registry_storage::codec::FORMAT_VERSION,
            node_id: self.inner.id,
            incarnation: store.incarnation().to_string(),
            cluster_id: store.cluster_id().map(|c| c.to_string()),
            initialized,
            restored_from: store.restored_from().map(|r| r.backup_id()),
            leader_id: leader_of(&m),
            members: membership
                .nodes()
                .map(|(id, node)| MemberIdentity {
                    id: *id,
                    addr: node.addr.clone(),
                    incarnation: node.incarnation.to_string(),
                    voter: voters.contains(id),
                })
                .collect(),
        }
    }

    /// A permit to serve one public request, or 503 with `Retry-After` when
    /// `max_concurrent_requests` are in flight already; the request holds it until answered.
    pub fn try_admit(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.inner.limiter.clone().try_acquire_owned().map_err(|_| {
            ApiError::Overloaded(format!(
                "node {} is serving its maximum of {} concurrent requests; retry shortly",
                self.inner.id, self.inner.settings.max_concurrent_requests
            ))
        })
    }

    /// Public requests being served now.
    pub fn requests_in_flight(&self) -> usize {
        let max = self
            .inner
            .settings
            .max_concurrent_requests
            .clamp(1, Semaphore::MAX_PERMITS);
        max.saturating_sub(self.inner.limiter.available_permits())
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// The Raft handle (for the RPC routes).
    pub fn raft(&self) -> &Raft<TypeConfig> {
        &self.inner.raft
    }

    /// 401/403 unless the request's credentials allow `role`.
    pub fn authorize(&self, headers: &HeaderMap, role: Role) -> Result<(), ApiError> {
        self.inner.auth.check(headers, role)
    }

    /// 401 unless the request comes from a peer node (Raft RPC).
    pub fn authorize_peer(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        self.inner.auth.check_peer(headers)
    }

    /// The settings.
    pub fn settings(&self) -> &ApiSettings {
        &self.inner.settings
    }

    /// Records that a leader just reached this node.
    pub fn touch_leader_contact(&self) {
        *self
            .inner
            .last_leader_contact
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
    }

    /// Notes the commit index a leader announced in an AppendEntries this node accepted.
    pub fn note_leader_commit(&self, index: Option<u64>) {
        let Some(index) = index else { return };
        let mut known = self
            .inner
            .leader_commit
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Committed entries stay committed: the commit index only grows.
        *known = Some(known.map_or(index, |k| k.max(index)));
    }

    /// The commit index in this node's Raft state: on the leader, the group's; on a
    /// follower, at most what it has appended of the leader's. `None` when nothing is
    /// committed, or when Raft does not answer within a second (it stopped, or is stuck).
    pub async fn committed_index(&self) -> Option<u64> {
        let ask = self
            .inner
            .raft
            .with_raft_state(|s| s.committed.map(|l| l.index));
        tokio::time::timeout(Duration::from_secs(1), ask)
            .await
            .ok()
            .and_then(Result::ok)
            .flatten()
    }

    /// The leader's commit index as this node knows it: the highest a leader announced to
    /// it, or its own committed index if higher (on the leader, that is the group's).
    pub async fn leader_commit_index(&self) -> Option<u64> {
        let announced = *self
            .inner
            .leader_commit
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let own = self.committed_index().await;
        announced.max(own)
    }

    /// Whether this node can serve reads that reflect the group's recent writes: it is
    /// [`healthy`](Self::healthy) (in a cluster, with a leader heard from within
    /// [`LEADER_CONTACT_BOUND`]) and it has applied all but at most [`READY_MAX_LAG`]
    /// entries of the leader's commit index as it knows it (the `leader_commit` of the last
    /// AppendEntries it accepted; on the leader, its own commit index). Since that is what
    /// the leader said at most [`LEADER_CONTACT_BOUND`] ago, a ready follower is at most
    /// [`READY_MAX_LAG`] entries plus that much time behind the leader. Else says why not.
    pub async fn ready(&self) -> Result<Readiness, String> {
        let leader = self.healthy()?;
        let applied = self
            .inner
            .raft
            .metrics()
            .borrow()
            .last_applied
            .map_or(0, |l| l.index);
        let Some(commit) = self.leader_commit_index().await else {
            return Err(format!(
                "no commit index heard from leader {leader} yet: this node is catching up"
            ));
        };
        let lag = commit.saturating_sub(applied);
        if lag > READY_MAX_LAG {
            return Err(format!(
                "catching up: applied index {applied} is {lag} entries behind the leader's \
                 commit index {commit} (at most {READY_MAX_LAG} allowed)"
            ));
        }
        Ok(Readiness {
            node_id: self.inner.id,
            leader_id: leader,
            applied_index: applied,
            leader_commit_index: commit,
            lag_entries: lag,
            max_lag_entries: READY_MAX_LAG,
        })
    }

    /// Milliseconds since a leader last reached this node; on the leader, since a quorum last
    /// acknowledged it (`None` until one has).
    pub fn millis_since_leader_contact(&self) -> Option<u64> {
        let (state, quorum_ack) = {
            let m = self.inner.raft.metrics();
            let m = m.borrow();
            (m.state, m.millis_since_quorum_ack)
        };
        if state == ServerState::Leader {
            // `None` until a quorum acknowledged this leader: one that took leadership back
            // from a vote it held before a restart has heard from no one.
            return quorum_ack;
        }
        let last = *self
            .inner
            .last_leader_contact
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        last.map(|t| u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    /// Commits heartbeats through the leader. On the leader they are stamped with its clock
    /// and proposed (in a group commit); elsewhere the request joins the heartbeats being
    /// forwarded to the leader in one request (once: the leader never forwards them again).
    /// `body` is the request's body, `beats` its validated heartbeats.
    pub async fn write_heartbeats(
        &self,
        beats: Vec<Heartbeat>,
        body: bytes::Bytes,
        forwarded: bool,
    ) -> Result<Written, ApiError> {
        let count = beats.len();
        let propose = || async {
            if let Some(fwd) = self.leader_elsewhere() {
                // No need to ask Raft to refuse it.
                return Err(RaftError::APIError(ClientWriteError::ForwardToLeader(fwd)));
            }
            match self.inner.batcher.submit(beats.clone()).await {
                Ok(res) => res,
                Err(stopped) => {
                    tracing::error!(error = %stopped, "heartbeat batcher gone");
                    Err(RaftError::Fatal(openraft::error::Fatal::Stopped))
                }
            }
        };
        let via = Via::Heartbeats { body, count };
        let done = self.on_leader_via(propose, &via, forwarded).await?;
        written(done)
    }

    /// Commits the command built by `cmd` (given the leader's time) through the leader; a
    /// node that is not the leader forwards the original request (`route`, `body`) there.
    pub async fn write(
        &self,
        cmd: impl Fn(DateTime<Utc>) -> Command,
        route: (Method, &str),
        body: bytes::Bytes,
        forwarded: bool,
    ) -> Result<Written, ApiError> {
        let propose = || async {
            self.inner
                .raft
                .client_write(cmd(Utc::now()))
                .await
                .map(|r| r.data)
        };
        written(self.on_leader(propose, route, body, forwarded).await?)
    }

    /// The leader as this node knows it, when it is another node: where a write goes
    /// without asking Raft first.
    fn leader_elsewhere(&self) -> Option<ForwardToLeader<NodeId, RegistryNode>> {
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        if m.state == ServerState::Leader {
            return None;
        }
        let leader = m.current_leader.filter(|l| *l != self.inner.id)?;
        let node = m.membership_config.membership().get_node(&leader)?.clone();
        Some(ForwardToLeader::new(leader, node))
    }

    /// Runs `call` (a write or a membership change) until it succeeds on the leader; a node
    /// that is not the leader forwards the original request (`route`, `body`) there once, or
    /// waits for one to be elected; all within `write_timeout`.
    pub async fn on_leader<T, F, Fut>(
        &self,
        call: F,
        route: (Method, &str),
        body: bytes::Bytes,
        forwarded: bool,
    ) -> Result<OnLeader<T>, ApiError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, WriteError>>,
    {
        let via = Via::Request {
            method: route.0,
            path_and_query: route.1,
            body,
        };
        self.on_leader_via(call, &via, forwarded).await
    }

    /// [`on_leader`](Self::on_leader), reaching the leader `via` the given way.
    async fn on_leader_via<T, F, Fut>(
        &self,
        call: F,
        via: &Via<'_>,
        forwarded: bool,
    ) -> Result<OnLeader<T>, ApiError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, WriteError>>,
    {
        let deadline = Instant::now() + self.inner.settings.write_timeout;
        loop {
            self.check_quorum_contact()?;
            let remaining = deadline.saturating_duration_since(Instant::now());
            let attempt = async {
                tokio::select! {
                    res = call() => Ok(res),
                    e = self.quorum_lost() => Err(e),
                }
            };
            let err = match tokio::time::timeout(remaining, attempt).await {
                Ok(Err(lost)) => return Err(lost),
                Ok(Ok(res)) => Ok(res),
                Err(elapsed) => Err(elapsed),
            };
            let err = match err {
                Err(_) => {
                    return Err(ApiError::Unavailable(format!(
                        "not committed within {:?}: the leader has no quorum",
                        self.inner.settings.write_timeout
                    )))
                }
                Ok(Ok(v)) => return Ok(OnLeader::Here(v)),
                Ok(Err(e)) => e,
            };
            let fwd = match err {
                RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => f,
                RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
                    return Err(ApiError::Conflict(e.to_string()))
                }
                RaftError::Fatal(f) => {
                    return Err(ApiError::Unavailable(format!(
                        "raft on this node stopped: {f}"
                    )))
                }
            };
            if forwarded {
                return Err(not_leader(self.inner.id, &fwd));
            }
            if let Some(resp) = self.forward_or_wait(&fwd, via, deadline).await? {
                return Ok(OnLeader::Forwarded(resp));
            }
        }
    }

    /// Decides where a read at `consistency` is served. A linearizable read is confirmed by
    /// the leader with a quorum (openraft's read-index) and then served from this node's
    /// state machine when this node leads, else forwarded to the leader.
    pub async fn read_at(
        &self,
        query: &ServicesQuery,
        path_and_query: &str,
        forwarded: bool,
    ) -> Result<ReadAt, ApiError> {
        if query.consistency.unwrap_or_default() == crate::wire::Consistency::Stale {
            return Ok(ReadAt::Here);
        }
        let deadline = Instant::now() + self.inner.settings.read_timeout;
        loop {
            self.check_quorum_contact()?;
            let remaining = deadline.saturating_duration_since(Instant::now());
            let res = tokio::time::timeout(remaining, self.inner.raft.ensure_linearizable()).await;
            let fwd = match res {
                Err(_) => {
                    return Err(ApiError::Unavailable(format!(
                        "linearizable read not confirmed within {:?}: no quorum; \
                         use ?consistency=stale to read this node's state",
                        self.inner.settings.read_timeout
                    )))
                }
                Ok(Ok(_)) => {
                    self.wait_for_read_floor(deadline).await?;
                    return Ok(ReadAt::Here);
                }
                Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => f,
                Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(q)))) => {
                    return Err(ApiError::Unavailable(format!(
                        "linearizable read refused: {q}; use ?consistency=stale"
                    )))
                }
                Ok(Err(RaftError::Fatal(f))) => {
                    return Err(ApiError::Unavailable(format!(
                        "raft on this node stopped: {f}"
                    )))
                }
            };
            if forwarded {
                return Err(not_leader(self.inner.id, &fwd));
            }
            let via = Via::Request {
                method: Method::GET,
                path_and_query,
                body: bytes::Bytes::new(),
            };
            if let Some(resp) = self.forward_or_wait(&fwd, &via, deadline).await? {
                return Ok(ReadAt::Forwarded(resp));
            }
        }
    }

    /// The index a linearizable read on this leader must see applied: the last log index it
    /// held when it first served such a read in the term it leads in now.
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
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        if m.state != ServerState::Leader {
            return None;
        }
        let mut floor = self
            .inner
            .read_floor
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match *floor {
            Some((term, index)) if term == m.current_term => Some(index),
            _ => {
                let index = m.last_log_index.unwrap_or(0);
                *floor = Some((m.current_term, index));
                Some(index)
            }
        }
    }

    /// Waits (until `deadline`) until this leader applied its [`read floor`](Self::read_floor).
    async fn wait_for_read_floor(&self, deadline: Instant) -> Result<(), ApiError> {
        let Some(floor) = self.read_floor() else {
            return Ok(());
        };
        let mut rx = self.inner.raft.metrics();
        let applied = async {
            rx.wait_for(|m| m.last_applied.is_some_and(|l| l.index >= floor))
                .await
                .map(|_| ())
        };
        match tokio::time::timeout_at(deadline.into(), applied).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(ApiError::Unavailable("raft on this node stopped".into())),
            Err(_) => Err(ApiError::Unavailable(format!(
                "linearizable read not served within {:?}: this leader has not yet applied \
                 index {floor}, the last it held when it took the lead (no quorum?); use \
                 ?consistency=stale to read this node's state",
                self.inner.settings.read_timeout
            ))),
        }
    }

    /// Forwards a request to the leader named in `fwd` and returns its answer; when no leader
    /// is known, or the known one cannot be reached, waits (until `deadline`) for the group to
    /// elect one and returns `None` so the caller tries again.
    async fn forward_or_wait(
        &self,
        fwd: &ForwardToLeader<NodeId, RegistryNode>,
        via: &Via<'_>,
        deadline: Instant,
    ) -> Result<Option<warp::reply::Response>, ApiError> {
        if let (Some(leader), Some(node)) = (fwd.leader_id, &fwd.leader_node) {
            if leader != self.inner.id {
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

    /// Fails at once when this node leads but has not heard from a quorum for longer than
    /// [`LEADER_CONTACT_BOUND`]: a write could not commit, so the client should not wait.
    fn check_quorum_contact(&self) -> Result<(), ApiError> {
        let (state, quorum_ack) = {
            let m = self.inner.raft.metrics();
            let m = m.borrow();
            (m.state, m.millis_since_quorum_ack)
        };
        let bound = u64::try_from(LEADER_CONTACT_BOUND.as_millis()).unwrap_or(u64::MAX);
        match (state, quorum_ack) {
            (ServerState::Leader, Some(ms)) if ms > bound => Err(ApiError::Unavailable(format!(
                "node {} leads but has not heard from a quorum for {ms} ms: no quorum",
                self.inner.id
            ))),
            _ => Ok(()),
        }
    }

    /// Resolves once this node leads without having heard from a quorum for longer than
    /// [`LEADER_CONTACT_BOUND`], so a write waiting on it fails fast (its outcome is then
    /// unknown: it commits only if the quorum comes back).
    async fn quorum_lost(&self) -> ApiError {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if let Err(e) = self.check_quorum_contact() {
                return ApiError::Unavailable(format!("{e}; the write's outcome is unknown"));
            }
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
        let mut rx = self.inner.raft.metrics();
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
        let (method, path_and_query, body) = match via {
            Via::Heartbeats { body, count } => {
                return self
                    .inner
                    .forwarder
                    .forward(to, body.clone(), *count, current_request_id())
                    .await
                    .map(Relayed::into_response)
            }
            Via::Request {
                method,
                path_and_query,
                body,
            } => (method, path_and_query, body),
        };
        let resp = self
            .inner
            .peer
            .send(
                method.clone(),
                to,
                path_and_query,
                body.clone(),
                current_request_id().as_deref(),
            )
            .await?;
        if *method == Method::GET {
            // A read (a list, up to tens of MiB) is passed through as it arrives.
            let status = resp.status();
            let headers = relay_headers(resp.headers());
            let mut out = crate::json::relay::relay(resp);
            *out.status_mut() = status;
            out.headers_mut().extend(headers);
            return Ok(out);
        }
        Ok(Relayed::read(resp).await?.into_response())
    }

    /// The services matching `query`, to be judged up or down at registry time now. Only
    /// the shared records are taken under the state's lock; nothing is copied or encoded
    /// there.
    pub fn services(&self, query: &ServicesQuery) -> Listing {
        let now = self.registry_now();
        let keep = |r: &&Arc<ServiceRecord>| {
            !r.deleted && query.binary.as_ref().is_none_or(|b| &r.binary == b)
        };
        let (records, applied) = self.inner.view.read(|state| {
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
            (records, state.last_applied.map(|l| l.index))
        });
        Listing {
            records,
            now,
            liveness: self.inner.settings.liveness,
            applied,
        }
    }

    /// Registry time now, as this node tells it (see [`registry_storage::clock`]).
    pub fn registry_now(&self) -> DateTime<Utc> {
        self.inner.view.registry_now().unwrap_or_else(Utc::now)
    }

    /// The answer to a write: `{"services": [...]}` with the records it produced, in the
    /// listed form (the bytes `ServicesOut` serialises to), with their state now.
    pub fn written_response(&self, records: &[Arc<ServiceRecord>]) -> warp::reply::Response {
        let rule = self.inner.settings.liveness.at(self.registry_now());
        json_response(write_list(records, |buf, r| {
            push_service(buf, r, rule.state(r))
        }))
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
        put(SERVED_BY_HEADER, self.inner.id.to_string());
        put(CONSISTENCY_HEADER, consistency.to_string());
        if let Some(ms) = self.millis_since_leader_contact() {
            put(LEADER_CONTACT_HEADER, ms.to_string());
        }
        h
    }

    /// The group as this node sees it.
    pub fn cluster(&self) -> ClusterOut {
        let mut m = self.inner.raft.metrics().borrow().clone();
        let (sm_applied, records, digest) = self
            .inner
            .view
            .read(|s| (s.last_applied.map(|l| l.index), s.len(), s.digest()));
        m.current_leader = leader_of(&m);
        let membership = m.membership_config.membership();
        let voters: std::collections::BTreeSet<NodeId> = membership.voter_ids().collect();
        let matched = m.replication.clone().unwrap_or_default();
        let members = membership
            .nodes()
            .map(|(id, node)| MemberOut {
                id: *id,
                addr: node.addr.clone(),
                voter: voters.contains(id),
                incarnation: node.incarnation.to_string(),
                matched_index: if *id == m.id {
                    m.last_log_index
                } else {
                    matched.get(id).copied().flatten().map(|l| l.index)
                },
            })
            .collect();
        let leader_addr = m
            .current_leader
            .and_then(|l| membership.get_node(&l).map(|n| n.addr.clone()));
        let store = self.inner.identity.store();
        ClusterOut {
            cluster_id: store.cluster_id().map(|c| c.to_string()),
            node_id: m.id,
            incarnation: store.incarnation().to_string(),
            role: format!("{:?}", m.state),
            leader_id: m.current_leader,
            leader_addr,
            term: m.current_term,
            last_log_index: m.last_log_index,
            // From the state machine itself, read together with its digest and size: Raft's
            // metrics can lag the state machine by an apply.
            applied_index: sm_applied,
            snapshot_index: m.snapshot.map(|l| l.index),
            purged_index: m.purged.map(|l| l.index),
            members,
            records,
            digest: format!("{digest:016x}"),
        }
    }

    /// Whether this node is a member of a group with a leader it heard from recently (or,
    /// when it leads, whose quorum acknowledged it recently): a leader id remembered from
    /// before a restart does not count.
    pub fn healthy(&self) -> Result<NodeId, String> {
        let m = self.inner.raft.metrics().borrow().clone();
        if let Err(e) = &m.running_state {
            return Err(format!("raft stopped: {e}"));
        }
        if m.current_leader.is_some() && leader_of(&m).is_none() {
            return Err("no leader known since this node restarted".into());
        }
        if !m
            .membership_config
            .membership()
            .nodes()
            .any(|(id, _)| *id == m.id)
        {
            return Err("this node is not a member of a cluster yet".into());
        }
        let leader = m
            .current_leader
            .ok_or("no leader known: the cluster has no quorum or is electing")?;
        let bound = u64::try_from(LEADER_CONTACT_BOUND.as_millis()).unwrap_or(u64::MAX);
        match self.millis_since_leader_contact() {
            Some(ms) if ms <= bound => Ok(leader),
            Some(ms) => Err(format!(
                "no contact with leader {leader} for {ms} ms: the cluster may have no quorum"
            )),
            None if leader == m.id => {
                Err("this node leads, but no quorum has acknowledged it since it started".into())
            }
            None => Err(format!(
                "no contact with leader {leader} since this node started"
            )),
        }
    }
}

/// The leader `m` names, unless it names this node while it does not lead: a vote for itself
/// remembered from before a restart makes no leader.
pub(crate) fn leader_of(m: &openraft::RaftMetrics<NodeId, RegistryNode>) -> Option<NodeId> {
    m.current_leader
        .filter(|l| *l != m.id || m.state == ServerState::Leader)
}

/// How long a request waits for a leader to be elected before failing with 503: a few
/// election rounds; a group that elects none in that time has no quorum.
pub const LEADER_WAIT: Duration = Duration::from_secs(2);

/// How recent the last contact with a leader (or, on the leader, with its quorum) must be
/// for `/health` and `/ready` to answer 200.
pub const LEADER_CONTACT_BOUND: Duration = Duration::from_millis(1500);

/// How many entries of the leader's commit index (as this node knows it) a node may have
/// left to apply and still answer `/ready` with 200: a few batches of heartbeats (applying
/// them takes milliseconds), far fewer than a node that restarted or was cut off has to
/// catch up on.
pub const READY_MAX_LAG: u64 = 100;

/// How a request that must run on the leader reaches it from another node.
enum Via<'a> {
    /// The request itself, sent again.
    Request {
        method: Method,
        path_and_query: &'a str,
        body: bytes::Bytes,
    },
    /// Validated heartbeats (`count` of them in `body`), batched with others on the way.
    Heartbeats { body: bytes::Bytes, count: usize },
}

/// What a committed write produced, as the routes answer it.
fn written(done: OnLeader<CommandResponse>) -> Result<Written, ApiError> {
    match done {
        OnLeader::Here(CommandResponse::Records(r)) => Ok(Written::Here(r)),
        OnLeader::Here(CommandResponse::NotFound) => Ok(Written::NotFound),
        OnLeader::Here(CommandResponse::Empty) => {
            Err(ApiError::Internal("entry applied without a result".into()))
        }
        OnLeader::Forwarded(resp) => Ok(Written::Forwarded(resp)),
    }
}

fn not_leader(id: NodeId, fwd: &ForwardToLeader<NodeId, RegistryNode>) -> ApiError {
    ApiError::Unavailable(format!(
        "node {id} received a forwarded request but is not the leader (leader now: {:?}); retry",
        fwd.leader_id
    ))
}
