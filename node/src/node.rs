//! Starting and stopping a node: storage, Raft, bootstrap, the HTTP server.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use openraft::error::{InitializeError, RaftError};
use openraft::{BasicNode, Raft};
use registry_api::liveness::Liveness;
use registry_api::{ApiSettings, RegistryApp};
use registry_storage::{open_store, LogStore, NodeId, StoreError, TypeConfig};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::config::{ConfigError, NodeConfig};
use crate::network::HttpNetwork;

/// Why a node could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The storage could not be opened or flushed.
    #[error("storage: {0}")]
    Storage(#[from] StoreError),
    /// Raft could not be created or failed fatally.
    #[error("raft: {0}")]
    Raft(String),
    /// The listener or the HTTP client could not be set up.
    #[error("io: {0}")]
    Io(String),
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
}

impl Node {
    /// Opens the node's storage, starts Raft and the HTTP server on `listener`, and forms the
    /// group with its peers if this node has never been part of one.
    pub async fn start(config: NodeConfig, listener: TcpListener) -> Result<Node, NodeError> {
        let raft_config = Arc::new(config.openraft_config()?);
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| NodeError::Io(format!("creating {}: {e}", config.data_dir.display())))?;
        let (log, sm) = open_store(&config.data_dir)?;
        let view = sm.view();
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
        let network =
            HttpNetwork::new(local_ip, secret).map_err(|e| NodeError::Io(e.to_string()))?;
        let raft = Raft::new(config.node_id, raft_config, network, log.clone(), sm)
            .await
            .map_err(|e| NodeError::Raft(e.to_string()))?;

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
        let app = RegistryApp::new(config.node_id, raft.clone(), view, settings, auth, local_ip);
        let addr = listener
            .local_addr()
            .map_err(|e| NodeError::Io(e.to_string()))?;
        let (stop_http, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(registry_api::server::serve(app.clone(), listener, async {
            let _ = stopped.await;
        }));
        tracing::info!(node_id = config.node_id, %addr, data_dir = %config.data_dir.display(), "node listening");

        bootstrap(&raft, &config).await?;
        Ok(Node {
            id: config.node_id,
            addr,
            raft,
            app,
            log,
            stop_http,
            server,
            stop_tasks,
            ticker,
        })
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
        match tokio::time::timeout(SHUTDOWN_GRACE, self.raft.shutdown()).await {
            Ok(res) => res.map_err(|e| NodeError::Raft(format!("shutdown: {e}")))?,
            Err(_) => return Err(NodeError::Raft("raft did not stop within the grace".into())),
        }
        tokio::time::timeout(SHUTDOWN_GRACE, self.log.flush())
            .await
            .map_err(|_| {
                NodeError::Raft("flushing storage did not finish within the grace".into())
            })??;
        tracing::info!(node_id = self.id, "node stopped");
        Ok(())
    }
}

/// Forms the group with every configured peer when this node has never been initialised.
/// Running it on every node at once is safe: they all propose the same membership at the
/// same log position; a node that already holds a log or a vote is never re-initialised.
async fn bootstrap(raft: &Raft<TypeConfig>, config: &NodeConfig) -> Result<(), NodeError> {
    let initialized = raft
        .is_initialized()
        .await
        .map_err(|e| NodeError::Raft(e.to_string()))?;
    if initialized {
        tracing::info!("existing Raft state found; rejoining the group");
        return Ok(());
    }
    if !config.bootstrap {
        tracing::info!("empty node with bootstrap = false: waiting to be added by the leader");
        return Ok(());
    }
    let members: BTreeMap<NodeId, BasicNode> = config
        .peers
        .iter()
        .map(|p| (p.id, BasicNode::new(p.addr.clone())))
        .collect();
    match raft.initialize(members).await {
        Ok(()) => {
            tracing::info!(peers = config.peers.len(), "initialised a new group");
            Ok(())
        }
        Err(RaftError::APIError(InitializeError::NotAllowed(e))) => {
            tracing::info!(reason = %e, "group already initialised");
            Ok(())
        }
        Err(e) => Err(NodeError::Raft(format!("initialize: {e}"))),
    }
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
    shutdown: impl Future<Output = ()>,
) -> Result<(), NodeError> {
    let node = Node::start(config, listener).await?;
    let mut metrics = node.raft.metrics();
    let fatal = tokio::select! {
        _ = shutdown => None,
        why = async {
            match metrics.wait_for(|m| m.running_state.is_err()).await {
                Ok(m) => match &m.running_state {
                    Err(fatal) => fatal.to_string(),
                    Ok(()) => "running".to_string(),
                },
                Err(_) => "its metrics channel closed".to_string(),
            }
        } => Some(why),
    };
    let Some(why) = fatal else {
        return node.shutdown().await;
    };
    tracing::error!(
        error = %why,
        "raft stopped with a fatal error: this node takes no more writes; shutting it down"
    );
    if let Err(e) = node.shutdown().await {
        tracing::warn!(error = %e, "shutdown after the fatal error was not clean");
    }
    Err(NodeError::Raft(format!(
        "stopped with a fatal error: {why}"
    )))
}
