//! A node as the routes see it: [`RegistryApp`] holds the node's [`Shared`] parts and the
//! paths a request takes through them: the write path ([`crate::write`]), the read path
//! ([`crate::read`]) and the status views ([`crate::status`]); and beside them what the
//! routes between nodes need ([`crate::transport`]) and the credentials every route checks
//! ([`crate::auth`]).

use std::sync::Arc;

use openraft::Raft;
use registry_storage::{Store, TypeConfig};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use warp::http::HeaderMap;

use crate::audit::Actor;
use crate::auth::{Role, SharedAuth};
use crate::connections::Connections;
use crate::error::ApiError;
use crate::forward::forwarder::Forwarder;
use crate::forward::Forwarding;
use crate::read::ReadPath;
use crate::replace::Replacements;
use crate::shared::{Admission, ApiSettings, LeaderContact, RequestTasks, Shared};
use crate::status::Status;
use crate::transport::identity::PeerIdentity;
use crate::transport::network::NetworkSetupError;
use crate::transport::peer::Peer;
use crate::transport::snapshot_receiver::SnapshotReceiver;
use crate::transport::tls::{peer_client_builder, NodeTls, Scheme};
use crate::write::batcher::Batcher;
use crate::write::WritePath;

/// A node as the API sees it. Cheap to clone.
#[derive(Clone)]
pub struct RegistryApp {
    inner: Arc<Parts>,
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

struct Parts {
    shared: Arc<Shared>,
    write: WritePath,
    read: ReadPath,
    status: Status,
    /// Tokens and the cluster secret, as last (re)loaded.
    auth: SharedAuth,
    /// How this node sends requests to its peers.
    peer: Peer,
    /// The snapshot being received from the leader.
    snapshots: SnapshotReceiver,
    /// Nodes being put back in place after a lost store (on the leader).
    replacements: Replacements,
}

impl RegistryApp {
    /// Wraps a node's parts and starts the tasks of its write path, which run until `stop`
    /// is cancelled; requests it sends its peers leave from `local_ip`, over HTTPS when it
    /// has `tls`. Fails when the HTTP client for its peers cannot be built.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        identity: PeerIdentity,
        raft: Raft<TypeConfig>,
        store: &Store,
        settings: ApiSettings,
        auth: SharedAuth,
        local_ip: Option<std::net::IpAddr>,
        tls: Option<Arc<NodeTls>>,
        stop: CancellationToken,
    ) -> Result<(Self, AppTasks), NetworkSetupError> {
        let id = identity.node_id();
        let shared = Arc::new(Shared {
            id,
            raft,
            view: store.sm.view(),
            sm: store.sm.clone(),
            identity: identity.clone(),
            settings,
            metrics: crate::metrics::Metrics::new(),
            contact: LeaderContact::default(),
            admission: Admission::new(id, settings.max_concurrent_requests),
            connections: Connections::new(settings.connections.max_connections),
            tasks: RequestTasks::new(stop.clone()),
            tls: tls.clone(),
            data_dir: store.dir.clone(),
            watchers: crate::watch::Watchers::default(),
            streams_stop: stop.child_token(),
            shed: Arc::default(),
        });
        let flushes = shared.metrics.flush_durations();
        if !store
            .sm
            .observe_flushes(Box::new(move |took| flushes.observe(took.as_secs_f64())))
        {
            tracing::warn!(
                "the store's flushes are already observed: \
                 registry_disk_flush_duration_seconds stays empty"
            );
        }
        let http = peer_client_builder(tls.as_deref())
            .local_address(local_ip)
            .pool_max_idle_per_host(64)
            .pool_idle_timeout(registry_client::POOL_IDLE_TIMEOUT)
            .timeout(settings.write_timeout.max(settings.read_timeout))
            .build()
            .map_err(NetworkSetupError::from)?;
        let peer = Peer::new(http, Scheme::of(tls.as_deref()), identity, auth.clone());
        let linger = settings.group_commit_linger;
        let (forwarder, forwarder_task) =
            Forwarder::spawn(peer.clone(), Arc::clone(&shared.shed), linger, stop.clone());
        let forwarding = Forwarding::new(Arc::clone(&shared), peer.clone(), forwarder);
        let (batcher, batcher_task) = Batcher::spawn(
            shared.raft.clone(),
            shared.metrics.batch_sizes(),
            linger,
            stop,
        );
        let tasks = AppTasks {
            batcher: batcher_task,
            forwarder: forwarder_task,
            requests: shared.tasks.tracker(),
        };
        let app = Self {
            inner: Arc::new(Parts {
                write: WritePath::new(Arc::clone(&shared), batcher, forwarding.clone()),
                read: ReadPath::new(Arc::clone(&shared), forwarding),
                status: Status::new(Arc::clone(&shared)),
                shared,
                auth,
                peer,
                snapshots: SnapshotReceiver::default(),
                replacements: Replacements::default(),
            }),
        };
        Ok((app, tasks))
    }

    /// A keeper of the cluster's liveness settings (for the leader's ticker).
    pub fn settings_keeper(&self) -> crate::cluster_settings::SettingsKeeper {
        crate::cluster_settings::SettingsKeeper::new(Arc::clone(&self.inner.shared))
    }

    /// The keeper of the registry clock's rate, for the leader's ticker.
    pub fn clock_keeper(&self) -> crate::shedding::ClockKeeper {
        crate::shedding::ClockKeeper::new(Arc::clone(&self.inner.shared))
    }

    /// What every path uses: the node's id, Raft handle, state, settings and metrics.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    /// The write path.
    pub fn write(&self) -> &WritePath {
        &self.inner.write
    }

    /// The read path.
    pub fn read(&self) -> &ReadPath {
        &self.inner.read
    }

    /// The status views.
    pub fn status(&self) -> &Status {
        &self.inner.status
    }

    /// How this node sends requests to its peers.
    pub fn peer(&self) -> &Peer {
        &self.inner.peer
    }

    /// The snapshot being received from the leader.
    pub(crate) fn snapshots(&self) -> &SnapshotReceiver {
        &self.inner.snapshots
    }

    /// Nodes being put back in place (on the leader).
    pub(crate) fn replacements(&self) -> &Replacements {
        &self.inner.replacements
    }

    /// 401/403 unless the request's credentials allow `role`.
    pub fn authorize(
        &self,
        headers: &HeaderMap,
        role: Role,
        certificate: Option<&str>,
    ) -> Result<Actor, ApiError> {
        self.inner.auth.current().check(headers, role, certificate)
    }

    /// 401 unless the request comes from a peer node (Raft RPC).
    pub fn authorize_peer(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        self.inner.auth.current().check_peer(headers)
    }
}
