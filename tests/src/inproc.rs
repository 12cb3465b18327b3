//! A cluster of registry nodes inside the test process, each on its own loopback port and
//! data directory; nodes can be stopped and restarted on the same port and directory.

use std::net::SocketAddr;
use std::time::Duration;

use registry_client::RegistryClient;
use registry_node::config::{AuthMode, AuthSettings};
use registry_node::{Node, NodeConfig, Peer, RaftSettings, StartOptions};
use tempfile::TempDir;

use crate::tls::TestPki;

/// Settings for a test cluster; defaults suit fast tests.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Number of nodes.
    pub nodes: usize,
    /// Raft settings of every node.
    pub raft: RaftSettings,
    /// Liveness setting of every node.
    pub service_down_time: Duration,
    /// Authentication of every node (default: no tokens, a cluster secret).
    pub auth: AuthSettings,
    /// Bound on each node's public requests in flight (default: the config's default).
    pub max_concurrent_requests: usize,
    /// Most connections each node keeps open (default: the config's default).
    pub max_connections: usize,
    /// Each node's `http_header_timeout` (default: the config's default).
    pub http_header_timeout: Duration,
    /// TLS for every node (default: none, plain HTTP): a throwaway CA and a certificate per
    /// node ([`crate::tls::TestPki`]).
    pub tls: Option<TestPki>,
    /// Events each node keeps for watchers (default: the config's default).
    pub events_kept: usize,
    /// How often an idle event stream gets a keep-alive comment (default: 15 s).
    pub events_keepalive: Duration,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        Self {
            nodes: 3,
            raft: RaftSettings::default(),
            service_down_time: Duration::from_secs(60),
            auth: AuthSettings {
                mode: AuthMode::Disabled,
                tokens: Vec::new(),
                token_file: None,
                cluster_secret: Some("test-cluster-secret-0123".into()),
                cluster_secret_file: None,
                accepted_cluster_secrets: Vec::new(),
            },
            max_concurrent_requests: registry_node::config::DEFAULT_MAX_CONCURRENT_REQUESTS,
            max_connections: registry_node::config::DEFAULT_MAX_CONNECTIONS,
            http_header_timeout: registry_node::config::DEFAULT_HTTP_HEADER_TIMEOUT,
            tls: None,
            events_kept: registry_storage::event_log::DEFAULT_EVENTS_KEPT,
            events_keepalive: Duration::from_secs(15),
        }
    }
}

/// The in-process cluster. Dropping it stops nothing gracefully: tests call
/// [`InProcCluster::shutdown`] or let the runtime end.
pub struct InProcCluster {
    /// Where every node's data directory lives.
    pub dir: TempDir,
    /// Each node's config (index i is node id i + 1).
    pub configs: Vec<NodeConfig>,
    /// Running nodes; `None` where stopped.
    pub nodes: Vec<Option<Node>>,
    /// Listeners bound before the configs were written, kept until each node's first start
    /// so no other process can take the port in between.
    bound: Vec<Option<tokio::net::TcpListener>>,
    /// Whether each node started once already: only the first start bootstraps.
    started: Vec<bool>,
    /// The certificates of a TLS cluster.
    tls: Option<TestPki>,
}

impl InProcCluster {
    /// Starts `spec.nodes` nodes that form one group.
    pub async fn start(spec: ClusterSpec) -> anyhow::Result<Self> {
        let dir = TempDir::new()?;
        let mut bound = Vec::new();
        for _ in 0..spec.nodes {
            bound.push(Some(tokio::net::TcpListener::bind("127.0.0.1:0").await?));
        }
        let addrs: Vec<SocketAddr> = bound
            .iter()
            .flatten()
            .map(|l| l.local_addr())
            .collect::<Result<_, _>>()?;
        let peers: Vec<Peer> = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| Peer {
                id: i as u64 + 1,
                addr: a.to_string(),
            })
            .collect();
        let configs = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| {
                NodeConfig {
                    node_id: i as u64 + 1,
                    listen: *a,
                    data_dir: dir.path().join(format!("node{}", i + 1)),
                    peers: peers.clone(),
                    service_down_time: spec.service_down_time,
                    unhealthy_zone_threshold: 0.55,
                    events: registry_node::config::EventsConfig {
                        kept: spec.events_kept,
                        keepalive: spec.events_keepalive,
                    },
                    report_interval: Duration::from_secs(1),
                    write_timeout: Duration::from_secs(5),
                    read_timeout: Duration::from_secs(2),
                    max_concurrent_requests: spec.max_concurrent_requests,
                    max_connections: spec.max_connections,
                    http_header_timeout: spec.http_header_timeout,
                    group_commit_linger: registry_node::config::DEFAULT_GROUP_COMMIT_LINGER,
                    raft: spec.raft.clone(),
                    auth: spec.auth.clone(),
                    tls: spec.tls.as_ref().map(|t| t.node_config(i as u64 + 1)),
                }
                .validate()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut cluster = Self {
            dir,
            nodes: configs.iter().map(|_| None).collect(),
            started: configs.iter().map(|_| false).collect(),
            configs,
            bound,
            tls: spec.tls.clone(),
        };
        for i in 0..cluster.configs.len() {
            cluster.start_node(i).await?;
        }
        Ok(cluster)
    }

    /// Starts (or restarts) node index `i` on its port and data directory; its first start
    /// bootstraps the group (all nodes together), later ones do not.
    pub async fn start_node(&mut self, i: usize) -> anyhow::Result<()> {
        anyhow::ensure!(self.nodes[i].is_none(), "node {} is already running", i + 1);
        let config = self.configs[i].clone();
        let listener = match self.bound[i].take() {
            Some(l) => l,
            None => rebind(config.listen).await?,
        };
        let options = StartOptions {
            bootstrap: !self.started[i],
        };
        self.started[i] = true;
        self.nodes[i] = Some(Node::start(config, listener, options).await?);
        Ok(())
    }

    /// Stops node index `i` cleanly.
    pub async fn stop_node(&mut self, i: usize) -> anyhow::Result<()> {
        if let Some(node) = self.nodes[i].take() {
            node.shutdown().await?;
        }
        Ok(())
    }

    /// Stops every node.
    pub async fn shutdown(&mut self) -> anyhow::Result<()> {
        for i in 0..self.nodes.len() {
            self.stop_node(i).await?;
        }
        Ok(())
    }

    /// The certificates of a TLS cluster (`None` for plain HTTP).
    pub fn spec_tls(&self) -> Option<&TestPki> {
        self.tls.as_ref()
    }

    /// The running node index `i`.
    pub fn node(&self, i: usize) -> &Node {
        self.nodes[i].as_ref().expect("node is running")
    }

    /// Waits until every running node knows the same leader; returns its index.
    pub async fn wait_for_leader(&self, timeout: Duration) -> anyhow::Result<usize> {
        crate::wait::until("every running node agrees on a leader", timeout, || async {
            let leaders: Vec<Option<u64>> = self
                .nodes
                .iter()
                .flatten()
                .map(|n| n.raft.metrics().borrow().current_leader)
                .collect();
            let first = leaders.first().copied().flatten()?;
            let leader = self.nodes[(first - 1) as usize].as_ref()?;
            let leads = leader.raft.metrics().borrow().state == openraft::ServerState::Leader;
            (leads && leaders.iter().all(|l| *l == Some(first))).then_some((first - 1) as usize)
        })
        .await
    }

    /// The last log index node index `i` applied, if any.
    pub fn last_applied(&self, i: usize) -> Option<u64> {
        self.node(i)
            .raft
            .metrics()
            .borrow()
            .last_applied
            .map(|l| l.index)
    }

    /// Waits until every running node applied at least `index`.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> anyhow::Result<()> {
        for node in self.nodes.iter().flatten() {
            node.raft
                .wait(Some(timeout))
                .applied_index_at_least(Some(index), "node applied the leader's entries")
                .await?;
        }
        Ok(())
    }

    /// A client talking only to node index `i` (over HTTPS, trusting the cluster CA, when
    /// the cluster has TLS).
    pub fn client_of(&self, i: usize) -> RegistryClient {
        crate::client_tls(
            [self.configs[i].listen.to_string()],
            Duration::from_secs(10),
            self.configs[i].tls.as_ref().map(|t| t.ca.as_path()),
        )
    }
}

/// Binds a stopped node's address again; a port just released can take a moment to be
/// free (a peer's connection still closing), so this retries within a deadline.
async fn rebind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    crate::wait::until(
        "the node's port is free again",
        Duration::from_secs(10),
        || async { tokio::net::TcpListener::bind(addr).await.ok() },
    )
    .await
}
