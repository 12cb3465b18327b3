//! Starting and stopping a node: storage, Raft, the HTTP server, and how a node with an empty
//! store comes into a group ([`crate::bootstrap`] when told to form one, [`crate::join`]
//! otherwise).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use openraft::error::Fatal;
use openraft::Raft;
use registry_api::identity::PeerIdentity;
use registry_api::liveness::Liveness;
use registry_api::{ApiSettings, RegistryApp};
use registry_storage::{open_store, LogStore, NodeId, StoreIdentity, TypeConfig};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::config::NodeConfig;
use crate::error::NodeError;
use crate::network::HttpNetwork;

/// How a node starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StartOptions {
    /// Form a new group with every configured peer if this node's store is empty
    /// (`registry-node --bootstrap`): a one-time act, refused when a peer already belongs to
    /// a group, and ignored by a node that holds Raft state. Without it, a node with an empty
    /// store joins the group its peers are in.
    pub bootstrap: bool,
}

/// How long each step of a shutdown may take before it is cut short.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// A running registry node.
pub struct Node {
    /// The node's id.
    pub id: NodeId,
    /// The address its HTTP server is bound to.
    pub addr: SocketAddr,
    /// The Raft handle (for tests and embedding programs).
    pub raft: Raft<TypeConfig>,
    /// What the routes use.
    pub app: RegistryApp,
    /// The log store, kept to flush on shutdown.
    log: LogStore,
    /// Stops the HTTP server.
    stop_http: oneshot::Sender<()>,
    /// The HTTP server task.
    server: JoinHandle<()>,
    /// Stops the background tasks (the clock tick).
    stop_tasks: watch::Sender<bool>,
    /// The clock tick task.
    ticker: JoinHandle<()>,
    /// Bootstrapping or joining, while this node is not in a group yet.
    formation: JoinHandle<()>,
    /// Why the node cannot run, when bootstrapping found it must not (see [`Node::failed`]);
    /// `None` once that was said, or when it can no longer be.
    failed: Option<oneshot::Receiver<NodeError>>,
}

impl Node {
    /// Opens the node's storage, starts Raft and the HTTP server on `listener`, and, when
    /// its store is empty, bootstraps a new group or joins its peers' (see [`StartOptions`])
    /// in the background.
    pub async fn start(
        config: NodeConfig,
        listener: TcpListener,
        options: StartOptions,
    ) -> Result<Node, NodeError> {
        let raft_config = Arc::new(config.openraft_config()?);
        std::fs::create_dir_all(&config.data_dir).map_err(NodeError::io(
            "creating the data directory",
            &config.data_dir,
        ))?;
        let store = open_store(&config.data_dir)?;
        let view = store.sm.view();
        let auth = config.auth.load()?;
        if !auth.tokens_required() {
            tracing::warn!(
                "AUTHENTICATION IS DISABLED: anyone who can reach {} may send heartbeats, \
                 disable services and change membership. Use this for a local demo only.",
                config.listen
            );
        }
        if auth.secret().is_none() {
            tracing::warn!(
                "no cluster secret: Raft RPCs are accepted from anyone (local demo only)"
            );
        }
        let local_ip = Some(config.listen.ip()).filter(|ip| !ip.is_unspecified());
        let secret = auth.secret().map(str::to_string);
        let identity = PeerIdentity::new(config.node_id, store.identity.clone());
        let network = HttpNetwork::new(local_ip, secret, identity).map_err(NodeError::Network)?;
        let raft = Raft::new(
            config.node_id,
            raft_config,
            network,
            store.log.clone(),
            store.sm.clone(),
        )
        .await
        .map_err(|e| NodeError::Raft(Box::new(e)))?;
        tracing::info!(
            node_id = config.node_id,
            incarnation = %store.identity.incarnation(),
            cluster_id = %store.identity.cluster_id().map_or_else(|| "none yet".to_string(), |c| c.to_string()),
            "store opened"
        );

        let settings = ApiSettings {
            liveness: Liveness {
                service_down_time: config.service_down_time,
            },
            write_timeout: config.write_timeout,
            read_timeout: config.read_timeout,
            max_concurrent_requests: config.max_concurrent_requests,
        };
        let (stop_tasks, stopped_tasks) = watch::channel(false);
        let ticker = tokio::spawn(crate::ticker::run(
            raft.clone(),
            view.clone(),
            stopped_tasks,
        ));
        let app = RegistryApp::new(
            config.node_id,
            raft.clone(),
            &store,
            settings,
            auth,
            local_ip,
        );
        let addr = listener.local_addr().map_err(NodeError::Listener)?;
        let (stop_http, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(registry_api::server::serve(app.clone(), listener, async {
            let _ = stopped.await;
        }));
        tracing::info!(node_id = config.node_id, %addr, data_dir = %config.data_dir.display(), "node listening");

        let (fail, failed) = oneshot::channel();
        let formation = tokio::spawn(form(
            raft.clone(),
            app.clone(),
            store.identity.clone(),
            config.clone(),
            options,
            stop_tasks.subscribe(),
            fail,
        ));
        Ok(Node {
            id: config.node_id,
            addr,
            raft,
            app,
            log: store.log,
            stop_http,
            server,
            stop_tasks,
            ticker,
            formation,
            failed: Some(failed),
        })
    }

    /// Resolves with why the node cannot run, when bootstrapping found it must not form a
    /// group (a peer already belongs to one, say); never resolves otherwise, nor once it
    /// has said so.
    pub async fn failed(&mut self) -> NodeError {
        if let Some(rx) = self.failed.as_mut() {
            let why = rx.await;
            self.failed = None;
            if let Ok(why) = why {
                return why;
            }
        }
        std::future::pending().await
    }

    /// Stops in a fixed order: stop accepting requests, shut Raft down, flush storage.
    /// Each step is bounded by [`SHUTDOWN_GRACE`]: a client that keeps a request open cannot
    /// hold the node up.
    pub async fn shutdown(mut self) -> Result<(), NodeError> {
        let _ = self.stop_http.send(());
        match tokio::time::timeout(SHUTDOWN_GRACE, &mut self.server).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "HTTP server task ended abnormally"),
            Err(_) => {
                tracing::warn!(grace = ?SHUTDOWN_GRACE, "open requests outlived the grace; closing them");
                self.server.abort();
            }
        }
        let _ = self.stop_tasks.send(true);
        if let Err(e) = self.ticker.await {
            tracing::warn!(error = %e, "tick task ended abnormally");
        }
        if let Err(e) = self.formation.await {
            tracing::warn!(error = %e, "bootstrap or join task ended abnormally");
        }
        match tokio::time::timeout(SHUTDOWN_GRACE, self.raft.shutdown()).await {
            Ok(res) => res.map_err(NodeError::RaftShutdown)?,
            Err(_) => {
                return Err(NodeError::Stalled {
                    step: "raft",
                    grace: SHUTDOWN_GRACE,
                })
            }
        }
        tokio::time::timeout(SHUTDOWN_GRACE, self.log.flush())
            .await
            .map_err(|_| NodeError::Stalled {
                step: "flushing storage",
                grace: SHUTDOWN_GRACE,
            })??;
        tracing::info!(node_id = self.id, "node stopped");
        Ok(())
    }
}

/// Brings a node whose Raft holds no state into a group: it bootstraps one when told to (or
/// when its store was restored from a backup), else it joins its peers'. A node with Raft
/// state does neither. A failure to bootstrap is sent on `fail`.
async fn form(
    raft: Raft<TypeConfig>,
    app: RegistryApp,
    store: StoreIdentity,
    config: NodeConfig,
    options: StartOptions,
    stop: watch::Receiver<bool>,
    fail: oneshot::Sender<NodeError>,
) {
    let initialized = match raft.is_initialized().await {
        Ok(i) => i,
        Err(e) => {
            tracing::error!(error = %e, "raft stopped before the node joined a group");
            return;
        }
    };
    if initialized {
        if options.bootstrap {
            tracing::info!("this node holds Raft state already: --bootstrap is ignored");
        }
        tracing::info!("existing Raft state found; rejoining the group");
        return;
    }
    if options.bootstrap || store.restored_from().is_some() {
        if let Err(why) = crate::bootstrap::run(&raft, app.peer(), &store, &config, stop).await {
            tracing::error!(error = %why, "bootstrapping failed");
            let _ = fail.send(why);
        }
        return;
    }
    crate::join::run(&raft, app.peer(), store.incarnation(), &config, stop).await;
}

/// Runs a node on `listener` until `shutdown` resolves, then stops it cleanly.
///
/// When Raft stops on its own with a fatal error (a storage error such as a full disk, or a
/// panic inside Raft), the node logs why, stops the same way and returns an error, so that the
/// process exits non-zero and a supervisor sees it failed: a node whose Raft is gone can take
/// no write, and must not look healthy or stopped on purpose.
pub async fn run(
    config: NodeConfig,
    listener: TcpListener,
    options: StartOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), NodeError> {
    let mut node = Node::start(config, listener, options).await?;
    let mut metrics = node.raft.metrics();
    let ended = tokio::select! {
        _ = shutdown => None,
        why = node.failed() => Some(why),
        fatal = async {
            match metrics.wait_for(|m| m.running_state.is_err()).await {
                Ok(m) => m.running_state.clone().err().unwrap_or(Fatal::Stopped),
                // The metrics' sender is Raft's: Raft is gone.
                Err(_) => Fatal::Stopped,
            }
        } => Some(NodeError::Raft(Box::new(fatal))),
    };
    let Some(error) = ended else {
        return node.shutdown().await;
    };
    match &error {
        e if e.is_bootstrap_refusal() => {
            tracing::error!(error = %error, "this node must not form a group; shutting it down")
        }
        _ => tracing::error!(
            error = %error,
            "raft stopped with a fatal error: this node takes no more writes; shutting it down"
        ),
    }
    if let Err(e) = node.shutdown().await {
        tracing::warn!(error = %e, "shutdown after the fatal error was not clean");
    }
    Err(error)
}
