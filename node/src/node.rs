//! Starting and stopping a node: storage, Raft, the HTTP server, and how a node with an empty
//! store comes into a group ([`crate::bootstrap`] when told to form one, [`crate::join`]
//! otherwise). How it stops is [`crate::shutdown`]'s.

use std::future::Future;
use std::path::Path;

use futures::{Stream, StreamExt};
use std::net::SocketAddr;
use std::sync::Arc;

use openraft::error::Fatal;
use openraft::Raft;
use registry_api::auth::SharedAuth;
use registry_api::connections::ConnectionLimits;
use registry_api::liveness::Liveness;
use registry_api::transport::identity::PeerIdentity;
use registry_api::transport::rpc::RpcLimits;
use registry_api::{ApiSettings, RegistryApp};
use registry_storage::{
    open_store_with, LogStore, NodeId, RaftTasks, StoreIdentity, StoreOptions, TypeConfig,
};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::config::NodeConfig;
use crate::error::NodeError;
use crate::shutdown::{Parts, Stages, StoreWatches, TaskWatch, Tasks, SHUTDOWN_GRACE};
use registry_api::transport::tls::{NodeTls, Scheme};
use registry_api::transport::HttpNetwork;

/// How a node starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StartOptions {
    /// Form a new group with every configured peer if this node's store is empty
    /// (`registry-node --bootstrap`): a one-time act, refused when a peer already belongs to
    /// a group, and ignored by a node that holds Raft state. Without it, a node with an empty
    /// store joins the group its peers are in.
    pub bootstrap: bool,
}

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
    /// Tokens and the cluster secret in force, replaced by [`Node::reload`].
    auth: SharedAuth,
    /// The log store, flushed last on shutdown.
    log: LogStore,
    /// The node's cancellation token, by stage of the shutdown.
    stages: Stages,
    /// Every task the node started.
    tasks: Tasks,
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
        let rpc_limits = RpcLimits::new(
            raft_config.max_payload_entries,
            raft_config.snapshot_max_chunk_size,
        );
        std::fs::create_dir_all(&config.data_dir).map_err(NodeError::io(
            "creating the data directory",
            &config.data_dir,
        ))?;
        let store = open_store_with(
            &config.data_dir,
            &StoreOptions {
                events_kept: config.events.kept,
            },
        )?;
        let view = store.sm.view();
        let auth = config.auth.load()?;
        if !auth.tokens_required() {
            tracing::warn!(
                "AUTHENTICATION IS DISABLED: anyone who can reach {} may send heartbeats, \
                 disable services and change membership. Use this for a local demo only.",
                config.listen
            );
        }
        let local_ip = Some(config.listen.ip()).filter(|ip| !ip.is_unspecified());
        let auth = SharedAuth::new(auth);
        let identity = PeerIdentity::new(config.node_id, store.identity.clone());
        let tls = match &config.tls {
            Some(t) => Some(Arc::new(NodeTls::load(t)?)),
            None => None,
        };
        let stages = Stages::new();
        let network = HttpNetwork::new(
            local_ip,
            auth.clone(),
            identity.clone(),
            stages.raft(),
            tls.as_deref(),
        )
        .map_err(NodeError::Network)?;
        // Every task of this Raft joins `raft_tasks`, which the shutdown waits for.
        let raft_tasks = RaftTasks::new();
        let raft = raft_tasks
            .scope(Raft::new(
                config.node_id,
                raft_config,
                network,
                store.log.clone(),
                store.sm.clone(),
            ))
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
            unhealthy_zone_threshold: config.unhealthy_zone_threshold,
            events_keepalive: config.events.keepalive,
            write_timeout: config.write_timeout,
            read_timeout: config.read_timeout,
            max_concurrent_requests: config.max_concurrent_requests,
            group_commit_linger: config.group_commit_linger,
            connections: ConnectionLimits {
                max_connections: config.max_connections,
                header_timeout: config.http_header_timeout,
            },
            rpc: rpc_limits,
        };
        let (app, app_tasks) = RegistryApp::new(
            identity,
            raft.clone(),
            &store,
            settings,
            auth.clone(),
            local_ip,
            tls.clone(),
            stages.write_path(),
        )
        .map_err(NodeError::Network)?;
        let ticker = tokio::spawn(crate::ticker::run(
            raft.clone(),
            view.clone(),
            app.settings_keeper(),
            app.clock_keeper(),
            crate::ticker::Snapshots {
                sm: store.sm.clone(),
                node_id: config.node_id,
            },
            stages.background(),
        ));
        let addr = listener.local_addr().map_err(NodeError::Listener)?;
        let server = tokio::spawn(registry_api::server::serve(
            app.clone(),
            listener,
            stages.http().cancelled_owned(),
            SHUTDOWN_GRACE,
        ));
        let scheme = Scheme::of(tls.as_deref()).as_str();
        tracing::info!(node_id = config.node_id, %addr, scheme, data_dir = %config.data_dir.display(), "node listening");

        let (fail, failed) = oneshot::channel();
        let formation = tokio::spawn(form(
            raft.clone(),
            app.clone(),
            store.identity.clone(),
            config.clone(),
            options,
            stages.background(),
            fail,
        ));
        Ok(Node {
            id: config.node_id,
            addr,
            raft,
            app,
            auth,
            log: store.log,
            stages,
            tasks: Tasks {
                server,
                ticker,
                formation,
                app: app_tasks,
                raft: raft_tasks,
            },
            failed: Some(failed),
        })
    }

    /// Puts the `[auth]` settings of `config` in force without a restart (SIGHUP): tokens,
    /// token file, cluster secret and the secrets also accepted, files read again; and, on a
    /// node with TLS, reads its certificate and key files again ([`Node::reload_tls`]).
    /// Settings that are wrong are refused with the reason, and the ones in force stay
    /// (authentication and certificate alike). Other sections of `config` are not reloaded,
    /// nor the `[tls]` paths (their files are).
    pub fn reload(&self, config: &NodeConfig) -> Result<(), NodeError> {
        let auth = config.auth.load()?;
        // The certificate is swapped only once it loaded, and before the tokens and secret
        // are, so a refused reload leaves both as they were.
        self.reload_tls()?;
        let before = self.auth.current();
        tracing::info!(
            tokens = ?auth.tokens(),
            secret_changed = before.secret() != auth.secret(),
            secrets_also_accepted = auth.also_accepted(),
            "authentication settings reloaded"
        );
        self.auth.replace(auth);
        Ok(())
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

    /// Reads the TLS certificate, key and CA files again and uses them for the handshakes to
    /// come, as a server and towards peers; when they do not load (a missing or half-written
    /// file, a key that does not match), keeps what is in use and says why. Nothing to do
    /// without TLS.
    pub fn reload_tls(&self) -> Result<(), NodeError> {
        let Some(tls) = &self.app.shared().tls else {
            return Ok(());
        };
        tls.reload()?;
        tracing::info!(
            cert = %tls.config().cert.display(),
            ca = %tls.config().ca.display(),
            "reloaded the TLS certificate and CA"
        );
        Ok(())
    }

    /// A watch on every task the node started (see [`TaskWatch`]), which stays valid after
    /// the node is shut down.
    pub fn task_watch(&self) -> TaskWatch {
        self.tasks.watch(StoreWatches {
            background: self.log.background_watch(),
            database: self.log.database_watch(),
        })
    }

    /// Stops every task the node started, Raft and the storage, in the fixed order
    /// [`crate::shutdown`] describes: the HTTP server first, then the ticker and formation,
    /// the write path, Raft with every task of it, and the storage (its blocking work, then a flush). Once it returns, nothing the node
    /// started runs, and nothing of the node holds its database.
    /// Each stage is bounded by [`SHUTDOWN_GRACE`] (a client that keeps a request open cannot
    /// hold the node up); returns once everything has ended or its wait expired (logged),
    /// with the first error of Raft or the storage.
    pub async fn shutdown(mut self) -> Result<(), NodeError> {
        let parts = Parts {
            id: self.id,
            raft: &self.raft,
            log: &self.log,
        };
        crate::shutdown::stop(&self.stages, &mut self.tasks, parts).await?;
        tracing::info!(node_id = self.id, "node stopped");
        Ok(())
    }
}

/// Brings a node whose Raft holds no state into a group: it bootstraps one when told to (or
/// when its store was restored from a backup), else it joins its peers'. A node with Raft
/// state does neither. A failure to bootstrap is sent on `fail`. Ends early when `stop` is
/// cancelled.
async fn form(
    raft: Raft<TypeConfig>,
    app: RegistryApp,
    store: StoreIdentity,
    config: NodeConfig,
    options: StartOptions,
    stop: CancellationToken,
    fail: oneshot::Sender<NodeError>,
) {
    let initialized = match stop.run_until_cancelled(raft.is_initialized()).await {
        None => return,
        Some(Ok(i)) => i,
        Some(Err(e)) => {
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
        if let Err(why) = crate::bootstrap::run(&raft, app.peer(), &store, &config, &stop).await {
            tracing::error!(error = %why, "bootstrapping failed");
            let _ = fail.send(why);
        }
        return;
    }
    crate::join::run(&raft, app.peer(), store.incarnation(), &config, &stop).await;
}

/// Runs a node on `listener` until `shutdown` resolves, then stops it cleanly.
///
/// When Raft stops on its own with a fatal error (a storage error such as a full disk, or a
/// panic inside Raft), the node logs why, stops the same way and returns an error, so that the
/// process exits non-zero and a supervisor sees it failed: a node whose Raft is gone can take
/// no write, and must not look healthy or stopped on purpose.
///
/// Each item of `reloads` (SIGHUP) reads the config file at `config_path` again and puts its
/// `[auth]` section in force, and reloads the TLS certificate ([`Node::reload`]); a file
/// that does not load is logged and changes nothing.
pub async fn run(
    config: NodeConfig,
    config_path: &Path,
    listener: TcpListener,
    options: StartOptions,
    shutdown: impl Future<Output = ()>,
    reloads: impl Stream<Item = ()>,
) -> Result<(), NodeError> {
    let mut node = Node::start(config, listener, options).await?;
    let mut metrics = node.raft.metrics();
    let mut shutdown = std::pin::pin!(shutdown);
    let mut reloads = std::pin::pin!(reloads);
    let ended = loop {
        tokio::select! {
            _ = &mut shutdown => break None,
            why = node.failed() => break Some(why),
            fatal = async {
                match metrics.wait_for(|m| m.running_state.is_err()).await {
                    Ok(m) => m.running_state.clone().err().unwrap_or(Fatal::Stopped),
                    // The metrics' sender is Raft's: Raft is gone.
                    Err(_) => Fatal::Stopped,
                }
            } => break Some(NodeError::Raft(Box::new(fatal))),
            Some(()) = reloads.next() => {
                let reloaded = NodeConfig::load(config_path).and_then(|c| node.reload(&c));
                if let Err(e) = reloaded {
                    tracing::error!(
                        error = %e,
                        config = %config_path.display(),
                        "reload refused: the settings in force are kept"
                    );
                }
            }
        }
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
