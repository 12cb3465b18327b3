//! Raft RPC to the other nodes over HTTP, with bincode bodies: one pooled HTTP client per
//! node, a per-call deadline from openraft, and the errors sorted the way openraft's
//! replication expects (unreachable peers are backed off; remote Raft errors are returned as
//! such). Every RPC names this node's cluster and the target's node id and incarnation as
//! the membership records them ([`crate::transport::identity`]); a target that refuses it as not
//! meant for it (a lost store, another cluster) counts as unreachable. Every answer says which
//! storage format the peer reads ([`crate::transport::formats`]).
//!
//! Once the node stops Raft, the RPCs still in flight end at once, unanswered: openraft's
//! tasks that sent them (replication streams, snapshot sends, votes) then end with Raft,
//! which the node's shutdown waits for, instead of when a peer that hangs lets the RPC's
//! deadline pass (`install_snapshot_timeout` for a chunk of a snapshot).

use std::time::Duration;

use crate::auth::{SharedAuth, SECRET_HEADER};
use crate::transport::identity::PeerIdentity;
use crate::transport::rpc::{self, path};
use crate::transport::tls::{peer_client_builder, NodeTls, Scheme};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use registry_storage::{NodeId, RegistryNode, TypeConfig};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

/// An HTTP client for requests between nodes (Raft RPCs, forwarded requests) could not be
/// built (no TLS backend, a bad local address).
#[derive(Debug, thiserror::Error)]
#[error("building the HTTP client for requests between nodes: {0}")]
pub struct NetworkSetupError(#[from] reqwest::Error);

/// Builds connections to peers; all share one connection pool.
#[derive(Debug, Clone)]
pub struct HttpNetwork {
    client: reqwest::Client,
    /// Where the cluster secret sent with every RPC comes from (it may be rotated).
    auth: SharedAuth,
    /// This node's cluster, sent with every RPC.
    identity: PeerIdentity,
    /// Cancelled when the node stops Raft: the RPCs in flight end.
    stop: CancellationToken,
    /// `https` when the node has TLS.
    scheme: Scheme,
}

impl HttpNetwork {
    /// A network whose connections are reused across RPCs; they leave from `local`, the
    /// node's own listen address, when it names one (so peers and firewalls see the node's
    /// address, not whichever one the OS picks); with `tls`, over HTTPS with this node's
    /// certificate. Once `stop` is cancelled, every RPC fails at once.
    pub fn new(
        local: Option<std::net::IpAddr>,
        auth: SharedAuth,
        identity: PeerIdentity,
        stop: CancellationToken,
        tls: Option<&NodeTls>,
    ) -> Result<Self, NetworkSetupError> {
        let client = peer_client_builder(tls)
            .local_address(local)
            .pool_idle_timeout(registry_client::POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(8)
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_millis(500))
            .build()?;
        Ok(Self {
            client,
            auth,
            identity,
            stop,
            scheme: Scheme::of(tls),
        })
    }
}

impl RaftNetworkFactory<TypeConfig> for HttpNetwork {
    type Network = HttpPeer;

    async fn new_client(&mut self, target: NodeId, node: &RegistryNode) -> HttpPeer {
        HttpPeer {
            target,
            base: self.scheme.url(&node.addr, "/raft"),
            client: self.client.clone(),
            auth: self.auth.clone(),
            identity: self.identity.clone(),
            node: node.clone(),
            stop: self.stop.clone(),
        }
    }
}

/// The RPC channel to one peer.
#[derive(Debug, Clone)]
pub struct HttpPeer {
    target: NodeId,
    base: String,
    client: reqwest::Client,
    /// Where the cluster secret comes from.
    auth: SharedAuth,
    identity: PeerIdentity,
    /// The target as the membership records it.
    node: RegistryNode,
    /// Cancelled when the node stops Raft.
    stop: CancellationToken,
}

impl HttpPeer {
    /// Sends one RPC and decodes its answer; fails at once once the node stops Raft
    /// (nothing waits for the answer any more).
    async fn call<Req, Resp, E>(
        &self,
        rpc_path: &str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, RegistryNode, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        match self
            .stop
            .run_until_cancelled(self.exchange(rpc_path, req, option))
            .await
        {
            Some(res) => res,
            // A network error, not `Unreachable`: openraft backs an unreachable peer off
            // (half a second) before it looks again whether it should stop.
            None => Err(RPCError::Network(NetworkError::new(
                &std::io::Error::other("this node is stopping Raft"),
            ))),
        }
    }

    /// The RPC itself: the request sent, the answer read and decoded.
    async fn exchange<Req, Resp, E>(
        &self,
        rpc_path: &str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, RegistryNode, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let body = rpc::encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let req = self
            .client
            .post(format!("{}/{rpc_path}", self.base))
            .timeout(option.hard_ttl())
            .headers(self.identity.headers_to(self.target, &self.node))
            .header("content-type", rpc::CONTENT_TYPE)
            .header(SECRET_HEADER, &*self.auth.secret());
        let resp = req.body(body).send().await.map_err(|e| {
            if e.is_connect() {
                RPCError::Unreachable(Unreachable::new(&e))
            } else {
                RPCError::Network(NetworkError::new(&e))
            }
        })?;
        let status = resp.status();
        self.identity.formats().record(self.target, resp.headers());
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let err =
                std::io::Error::other(format!("peer {} answered {status}: {text}", self.target));
            if status == reqwest::StatusCode::MISDIRECTED_REQUEST {
                // Another incarnation or cluster listens there: backed off like a dead peer.
                return Err(RPCError::Unreachable(Unreachable::new(&err)));
            }
            return Err(RPCError::Network(NetworkError::new(&err)));
        }
        let res: Result<Resp, E> =
            rpc::decode(&bytes).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        res.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for HttpPeer {
    async fn append_entries(
        &mut self,
        req: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, RegistryNode, RaftError<NodeId>>>
    {
        self.call(path::APPEND, &req, &option).await
    }

    async fn install_snapshot(
        &mut self,
        req: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, RegistryNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(path::SNAPSHOT, &req, &option).await
    }

    async fn vote(
        &mut self,
        req: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, RegistryNode, RaftError<NodeId>>> {
        self.call(path::VOTE, &req, &option).await
    }
}
