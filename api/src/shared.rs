//! The parts of a node that the write path, the read path and the status views all use:
//! [`Shared`], one per node, held behind an `Arc`. It has fields and a few questions about
//! the node's Raft state that all of them ask; what each path does lives in its module
//! ([`crate::write`], [`crate::read`], [`crate::status`]).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use openraft::{Raft, ServerState};
use registry_storage::{
    LivenessSettings, NodeId, RegistryNode, StateMachineStore, StateView, TypeConfig,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::connections::{ConnectionLimits, Connections};
use crate::error::ApiError;
use crate::liveness::Liveness;
use crate::metrics::Metrics;
use crate::transport::identity::PeerIdentity;
use crate::transport::rpc::RpcLimits;
use crate::transport::tls::NodeTls;

/// Settings of the API layer.
#[derive(Debug, Clone, Copy)]
pub struct ApiSettings {
    /// Liveness rule of this node's file: judged by until the log carries the cluster's
    /// (see [`Shared::liveness`]).
    pub liveness: Liveness,
    /// The unhealthy-zone threshold of this node's file (the log's is used once it has one).
    pub unhealthy_zone_threshold: f64,
    /// How often an idle event stream gets a keep-alive comment.
    pub events_keepalive: Duration,
    /// How long a write may wait for a leader and its commit before failing with 503.
    pub write_timeout: Duration,
    /// How long a linearizable read may wait for the leader to confirm its quorum.
    pub read_timeout: Duration,
    /// Most requests on public routes served at once; beyond it a request is answered 503
    /// with `Retry-After` at once (Raft RPCs and probes are not counted).
    pub max_concurrent_requests: usize,
    /// How long a batch of heartbeats waits for company under load (see
    /// [`crate::group_commit::LINGER`], its default).
    pub group_commit_linger: Duration,
    /// Bounds on open connections and on how long a request's head may take.
    pub connections: ConnectionLimits,
    /// Largest Raft RPC bodies accepted.
    pub rpc: RpcLimits,
}

/// How recent the last contact with a leader (or, on the leader, with its quorum) must be
/// for `/health` and `/ready` to answer 200, and for a leader to take writes.
pub const LEADER_CONTACT_BOUND: Duration = Duration::from_millis(1500);

/// What every path of a node uses.
pub struct Shared {
    /// This node's id.
    pub id: NodeId,
    /// The Raft handle.
    pub raft: Raft<TypeConfig>,
    /// The in-memory services table.
    pub view: StateView,
    /// The state machine (for backups and received snapshots).
    pub sm: StateMachineStore,
    /// This node's cluster and incarnation, sent to and checked on peers.
    pub identity: PeerIdentity,
    /// Settings.
    pub settings: ApiSettings,
    /// Counters and histograms of what this node did.
    pub metrics: Metrics,
    /// What this node heard from leaders.
    pub contact: LeaderContact,
    /// The bound on public requests in flight.
    pub admission: Admission,
    /// The open connections, under their cap.
    pub connections: Connections,
    /// Tasks started by requests, joined at shutdown.
    pub tasks: RequestTasks,
    /// The node's TLS (`None`: plain HTTP): its server serves HTTPS only, its requests to
    /// peers use HTTPS, and requests from peers must show a client certificate.
    pub tls: Option<Arc<NodeTls>>,
    /// The data directory (its filesystem's free space is in `/metrics`).
    pub data_dir: std::path::PathBuf,
    /// The event streams served, under their cap.
    pub watchers: crate::watch::Watchers,
    /// Cancelled when the HTTP server stops accepting: every event stream ends then.
    pub streams_stop: CancellationToken,
    /// Heartbeat requests received and refused for overload (they slow the registry clock).
    pub shed: Arc<crate::shedding::ShedMeter>,
}

impl Shared {
    /// The liveness rule in force: the cluster's, from the log, once it carries one; until
    /// then this node's file.
    pub fn liveness(&self) -> Liveness {
        self.liveness_of(self.view.read(|s| s.settings))
    }

    /// The liveness rule of the log's `settings` when there are some, else this node's file.
    pub fn liveness_of(&self, settings: Option<LivenessSettings>) -> Liveness {
        settings.map_or(self.settings.liveness, |s| Liveness {
            service_down_time: s.service_down_time(),
        })
    }

    /// The liveness settings in force, as the log would carry them, and whether they are the
    /// log's (else this node's file's, before the log carries any).
    pub fn settings_in_force(&self) -> (LivenessSettings, bool) {
        match self.view.read(|s| s.settings) {
            Some(log) => (log, true),
            None => (self.file_settings(), false),
        }
    }

    /// The liveness settings of this node's file, as the log would carry them.
    pub fn file_settings(&self) -> LivenessSettings {
        LivenessSettings::new(
            self.settings.liveness.service_down_time,
            self.settings.unhealthy_zone_threshold,
        )
    }

    /// The newest storage format that this node and every other member of the group read
    /// (see [`crate::transport::formats`]).
    pub fn common_format(&self) -> u8 {
        let peers: Vec<NodeId> = {
            let m = self.raft.metrics();
            let m = m.borrow();
            m.membership_config
                .membership()
                .nodes()
                .map(|(id, _)| *id)
                .filter(|id| *id != self.id)
                .collect()
        };
        self.identity.formats().common(peers)
    }

    /// Registry time now, as this node tells it (see [`registry_storage::clock`]).
    pub fn registry_now(&self) -> DateTime<Utc> {
        self.view.registry_now().unwrap_or_else(Utc::now)
    }

    /// Milliseconds since a leader last reached this node; on the leader, since a quorum last
    /// acknowledged it (`None` until one has).
    pub fn millis_since_leader_contact(&self) -> Option<u64> {
        let (state, quorum_ack) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            (m.state, m.millis_since_quorum_ack)
        };
        if state == ServerState::Leader {
            // `None` until a quorum acknowledged this leader: one that took leadership back
            // from a vote it held before a restart has heard from no one.
            return quorum_ack;
        }
        self.contact.millis_since()
    }

    /// Fails at once when this node leads but has not heard from a quorum for longer than
    /// [`LEADER_CONTACT_BOUND`]: a write could not commit, nor a read be confirmed, so the
    /// client should not wait.
    pub fn check_quorum_contact(&self) -> Result<(), ApiError> {
        let (state, quorum_ack) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            (m.state, m.millis_since_quorum_ack)
        };
        let bound = u64::try_from(LEADER_CONTACT_BOUND.as_millis()).unwrap_or(u64::MAX);
        match (state, quorum_ack) {
            (ServerState::Leader, Some(ms)) if ms > bound => Err(ApiError::Unavailable(format!(
                "node {} leads but has not heard from a quorum for {ms} ms: no quorum",
                self.id
            ))),
            _ => Ok(()),
        }
    }

    /// The commit index in this node's Raft state: on the leader, the group's; on a
    /// follower, at most what it has appended of the leader's. `None` when nothing is
    /// committed, or when Raft does not answer within a second (it stopped, or is stuck).
    pub async fn committed_index(&self) -> Option<u64> {
        let ask = self.raft.with_raft_state(|s| s.committed.map(|l| l.index));
        tokio::time::timeout(Duration::from_secs(1), ask)
            .await
            .ok()
            .and_then(Result::ok)
            .flatten()
    }

    /// The leader's commit index as this node knows it: the highest a leader announced to
    /// it, or its own committed index if higher (on the leader, that is the group's).
    pub async fn leader_commit_index(&self) -> Option<u64> {
        let announced = self.contact.leader_commit();
        let own = self.committed_index().await;
        announced.max(own)
    }
}

/// The leader `m` names, unless it names this node while it does not lead: a vote for itself
/// remembered from before a restart makes no leader. The one place that rule is written.
pub fn leader_of(m: &openraft::RaftMetrics<NodeId, RegistryNode>) -> Option<NodeId> {
    m.current_leader
        .filter(|l| *l != m.id || m.state == ServerState::Leader)
}

/// What this node heard from leaders: when one last reached it, and the highest commit
/// index one announced.
#[derive(Debug, Default)]
pub struct LeaderContact {
    /// When a leader last sent this node an AppendEntries.
    last: Mutex<Option<Instant>>,
    /// The highest commit index a leader announced to this node (AppendEntries'
    /// `leader_commit`): what `/ready` compares the applied index with on a follower.
    commit: Mutex<Option<u64>>,
}

impl LeaderContact {
    /// Records that a leader just reached this node.
    pub fn touch(&self) {
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
    }

    /// Notes the commit index a leader announced in an AppendEntries this node accepted.
    pub fn note_commit(&self, index: Option<u64>) {
        let Some(index) = index else { return };
        let mut known = self.commit.lock().unwrap_or_else(PoisonError::into_inner);
        // Committed entries stay committed: the commit index only grows.
        *known = Some(known.map_or(index, |k| k.max(index)));
    }

    /// The highest commit index a leader announced.
    fn leader_commit(&self) -> Option<u64> {
        *self.commit.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Milliseconds since a leader last reached this node.
    fn millis_since(&self) -> Option<u64> {
        let last = *self.last.lock().unwrap_or_else(PoisonError::into_inner);
        last.map(|t| u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX))
    }
}

/// The bound on public requests served at once.
#[derive(Debug)]
pub struct Admission {
    /// One permit per public request in flight.
    limiter: Arc<Semaphore>,
    /// The bound.
    max: usize,
    /// This node's id, for the message.
    id: NodeId,
}

impl Admission {
    /// At most `max` requests at once on node `id`.
    pub fn new(id: NodeId, max: usize) -> Self {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            limiter: Arc::new(Semaphore::new(max)),
            max,
            id,
        }
    }

    /// A permit to serve one public request, or 503 with `Retry-After` when the maximum is
    /// in flight already; the request holds it until answered.
    pub fn try_admit(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.limiter.clone().try_acquire_owned().map_err(|_| {
            ApiError::Overloaded(format!(
                "node {} is serving its maximum of {} concurrent requests; retry shortly",
                self.id, self.max
            ))
        })
    }

    /// Public requests being served now.
    pub fn in_flight(&self) -> usize {
        self.max.saturating_sub(self.limiter.available_permits())
    }
}

/// Tasks a request starts beside its handler: putting a node back in place, which outlives
/// the request; relaying a leader's answer, which ends with the answer's body; blocking work
/// whose caller may give up on it. They run until they end or the node stops its write
/// path, and the node waits for them at shutdown.
#[derive(Debug, Clone)]
pub struct RequestTasks {
    stop: CancellationToken,
    tracker: TaskTracker,
}

impl RequestTasks {
    /// Tasks that stop when `stop` is cancelled.
    pub fn new(stop: CancellationToken) -> Self {
        Self {
            stop,
            tracker: TaskTracker::new(),
        }
    }

    /// Runs `task` in the background until it ends or the node stops its write path (it is
    /// then dropped at its next await). Dropping the handle leaves it running; aborting it
    /// ends it.
    pub fn spawn(
        &self,
        task: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> JoinHandle<()> {
        let stop = self.stop.clone();
        self.tracker.spawn(async move {
            stop.run_until_cancelled(task).await;
        })
    }

    /// Runs `work` on a blocking thread, waited for at shutdown like the other tasks (it is
    /// not stopped: it must end by itself).
    pub fn spawn_blocking<T, F>(&self, work: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.tracker.spawn_blocking(work)
    }

    /// The tracker the node closes and waits on at shutdown.
    pub fn tracker(&self) -> TaskTracker {
        self.tracker.clone()
    }
}
