//! What the node library can fail with: one enum for its config, its start, its run, its
//! shutdown and a restore. (`registryctl`'s commands answer with [`crate::cli::CliError`],
//! which says what the tool's exit code is.)

use std::path::PathBuf;
use std::time::Duration;

use openraft::error::{Fatal, InitializeError, RaftError};
use registry_storage::{ClusterId, NodeId, RegistryNode, StoreError};

/// Why a node could not be configured, start, run or stop cleanly, or a restore was refused.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A file or directory could not be read or made: the config file, a token or secret
    /// file, a backup, the data directory.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done (`reading the config`, `creating the data directory`, ...).
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for [`NodeConfig`](crate::NodeConfig).
    #[error("invalid config {}: {source}", path.display())]
    ConfigParse {
        /// The file.
        path: PathBuf,
        /// The parse error, with its line and column.
        source: Box<toml::de::Error>,
    },
    /// A value of the config is out of range or inconsistent with another; the message says
    /// which, and what to change.
    #[error("invalid config: {0}")]
    Config(String),
    /// openraft refuses the Raft settings of the config.
    #[error("invalid config: raft: {0}")]
    RaftConfig(#[source] Box<openraft::ConfigError>),
    /// The listener's local address could not be read.
    #[error("reading the listener's address: {0}")]
    Listener(#[source] std::io::Error),
    /// The `[tls]` files could not be loaded (the message names the file and why).
    #[error(transparent)]
    Tls(#[from] registry_api::transport::tls::TlsError),
    /// An HTTP client for requests between nodes (Raft RPCs, forwarding) could not be built.
    #[error(transparent)]
    Network(registry_api::transport::network::NetworkSetupError),
    /// The storage could not be opened, written or flushed, or refused a restore (a damaged
    /// backup, a data directory that is not empty).
    #[error("storage: {0}")]
    Storage(#[from] StoreError),
    /// Raft could not start, or stopped with a fatal error: a storage error (a full disk), a
    /// panic inside Raft, or Raft gone.
    #[error("raft: {0}")]
    Raft(#[source] Box<Fatal<NodeId>>),
    /// Raft's core task ended abnormally as it was shut down.
    #[error("raft shutdown: {0}")]
    RaftShutdown(#[source] tokio::task::JoinError),
    /// A step of the shutdown did not end within its grace; the steps after it still ran.
    #[error("shutdown: {step} did not end within {grace:?}")]
    Stalled {
        /// The step.
        step: &'static str,
        /// How long it was given.
        grace: Duration,
    },
    /// Bootstrapping a group was refused: a peer already belongs to another cluster, answers
    /// as another node, or was restored from another backup (the message says which).
    #[error("refusing to bootstrap: {0}")]
    Bootstrap(String),
    /// Bootstrapping: the new group's cluster id could not be recorded in the store.
    #[error("refusing to bootstrap: recording cluster {cluster}: {source}")]
    RecordCluster {
        /// The cluster id.
        cluster: ClusterId,
        /// Why it could not be recorded.
        source: StoreError,
    },
    /// Bootstrapping: Raft refused to initialise the group.
    #[error("refusing to bootstrap: initializing the group: {0}")]
    Initialize(#[source] Box<RaftError<NodeId, InitializeError<NodeId, RegistryNode>>>),
}

impl NodeError {
    /// Wraps an I/O error with what was done to which path.
    pub(crate) fn io(
        what: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| NodeError::Io { what, path, source }
    }

    /// Whether this node refused to bootstrap a group (and must therefore stop).
    pub fn is_bootstrap_refusal(&self) -> bool {
        matches!(
            self,
            NodeError::Bootstrap(_) | NodeError::RecordCluster { .. } | NodeError::Initialize(_)
        )
    }
}
