//! Requests from this node to another one, other than Raft RPCs: a request forwarded to the
//! leader, a peer's identity asked for (bootstrap, joining, adding a member), a request to be
//! added back after a lost disk. Every one carries the cluster secret and the identity
//! headers ([`crate::transport::identity`]); a forwarded one also carries [`FORWARDED_HEADER`] (so it is
//! never forwarded again) and the request id (the leader logs it under the same id).

use std::time::Duration;

use bytes::Bytes;
use registry_storage::{NodeId, RegistryNode};
use warp::http::header::{HeaderName, CONTENT_TYPE, RETRY_AFTER};
use warp::http::{HeaderMap, Method, StatusCode};
use warp::Reply;

use crate::audit::{Actor, ACTOR_HEADER};
use crate::auth::{SharedAuth, SECRET_HEADER};
use crate::error::ErrorBody;
use crate::request_id::REQUEST_ID_HEADER;
use crate::transport::identity::PeerIdentity;
use crate::transport::tls::Scheme;
use crate::wire::{IdentityOut, JoinIn, JoinOut, ReadIndexOut};

/// Header set on a request one node forwards to the leader, so it is never forwarded again.
pub const FORWARDED_HEADER: &str = "x-registry-forwarded";
/// Path of a node's identity, for its peers.
pub const IDENTITY_PATH: &str = "/raft/identity";
/// Path of the leader's route that adds back a node whose store was created anew.
pub const JOIN_PATH: &str = "/raft/join";
/// Path of the leader's route that confirms a read index for a follower's linearizable read.
pub const READ_INDEX_PATH: &str = "/raft/read-index";

/// The leader's answer to a forwarded request, to pass on to the client.
#[derive(Debug, Clone)]
pub struct Relayed {
    /// Its status.
    pub status: StatusCode,
    /// The headers worth passing on (see [`relay_headers`]).
    pub headers: HeaderMap,
    /// Its body.
    pub body: Bytes,
}

impl Relayed {
    /// The answer as this node's reply.
    pub fn into_response(self) -> warp::reply::Response {
        let mut out = self.body.to_vec().into_response();
        *out.status_mut() = self.status;
        out.headers_mut().extend(self.headers);
        out
    }

    /// The leader's whole answer, read.
    pub async fn read(resp: reqwest::Response) -> Result<Self, RelayError> {
        let status = resp.status();
        let headers = relay_headers(resp.headers());
        let body = resp
            .bytes()
            .await
            .map_err(|e| RelayError::Unknown(e.to_string()))?;
        Ok(Self {
            status,
            headers,
            body,
        })
    }
}

/// Why a request could not be relayed to the leader.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RelayError {
    /// The leader could not be reached, or refused the request as not meant for it (another
    /// incarnation or cluster listens there now): nothing was done, so waiting for a new
    /// leader and trying again is safe.
    #[error("cannot reach the leader: {0}")]
    Connect(String),
    /// The request may have reached the leader: its outcome is unknown.
    #[error("{0}")]
    Unknown(String),
}

impl RelayError {
    /// Classifies a client error.
    pub fn of(e: &reqwest::Error) -> Self {
        if e.is_connect() {
            Self::Connect(e.to_string())
        } else {
            Self::Unknown(e.to_string())
        }
    }
}

/// The prefix of the registry's own headers.
pub const REGISTRY_HEADER_PREFIX: &str = "x-registry-";

/// The registry's own headers (`x-registry-*`) among `from`, and those `also` names.
fn headers_of(from: &HeaderMap, also: &[HeaderName]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in from {
        if name.as_str().starts_with(REGISTRY_HEADER_PREFIX) || also.contains(name) {
            headers.insert(name.clone(), value.clone());
        }
    }
    headers
}

/// The registry's own headers of a leader's answer (`x-registry-*`: freshness of a read).
pub fn registry_headers(from: &HeaderMap) -> HeaderMap {
    headers_of(from, &[])
}

/// The headers of a leader's answer that are passed on to the client: the registry's own
/// (`x-registry-*`), the content type and `Retry-After`.
pub fn relay_headers(from: &HeaderMap) -> HeaderMap {
    headers_of(from, &[CONTENT_TYPE, RETRY_AFTER])
}

/// Why a peer's identity or a join could not be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PeerError {
    /// No connection, no answer, or an answer that is not what was asked for.
    #[error("{addr}: {why}")]
    Unreachable {
        /// The peer's address.
        addr: String,
        /// What went wrong.
        why: String,
    },
    /// The peer answered with an error.
    #[error("{addr} answered {status}: {message}")]
    Refused {
        /// The peer's address.
        addr: String,
        /// The HTTP status.
        status: u16,
        /// The message of its error body.
        message: String,
    },
}

/// How this node sends requests to its peers (pooled connections). Cloning shares the pool.
#[derive(Debug, Clone)]
pub struct Peer {
    http: reqwest::Client,
    /// `https` when the node has TLS.
    scheme: Scheme,
    /// Who this node is: its id (in [`FORWARDED_HEADER`]), cluster and incarnation.
    identity: PeerIdentity,
    /// Where the cluster secret it sends comes from (it may be rotated).
    auth: SharedAuth,
}

/// Bound on a request for a peer's identity: it answers from memory.
const IDENTITY_TIMEOUT: Duration = Duration::from_secs(2);

impl Peer {
    /// This node (`identity`) sending with `http` to `scheme` URLs.
    pub fn new(
        http: reqwest::Client,
        scheme: Scheme,
        identity: PeerIdentity,
        auth: SharedAuth,
    ) -> Self {
        Self {
            http,
            scheme,
            identity,
            auth,
        }
    }

    /// A request to `addr` with the secret (no identity headers).
    fn request(&self, method: Method, addr: &str, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.scheme.url(addr, path))
            .header(SECRET_HEADER, &*self.auth.secret())
    }

    /// Sends `body` to the leader `(id, node)` as `method path_and_query`; the answer is
    /// returned as it starts to arrive. A leader that refuses it as not meant for it (421)
    /// is [`RelayError::Connect`].
    pub async fn send(
        &self,
        method: Method,
        to: (NodeId, &RegistryNode),
        path_and_query: &str,
        body: Bytes,
        request_id: Option<&str>,
        actor: Option<&Actor>,
    ) -> Result<reqwest::Response, RelayError> {
        self.send_with(method, to, path_and_query, body, request_id, actor, &[])
            .await
    }

    /// [`send`](Self::send) with more headers.
    #[allow(clippy::too_many_arguments)]
    pub async fn send_with(
        &self,
        method: Method,
        to: (NodeId, &RegistryNode),
        path_and_query: &str,
        body: Bytes,
        request_id: Option<&str>,
        actor: Option<&Actor>,
        extra: &[(&'static str, String)],
    ) -> Result<reqwest::Response, RelayError> {
        let (id, node) = to;
        let mut req = self
            .request(method, &node.addr, path_and_query)
            .headers(self.identity.headers_to(id, node))
            .header(FORWARDED_HEADER, self.identity.node_id().to_string())
            .header(CONTENT_TYPE, "application/json");
        if let Some(rid) = request_id {
            req = req.header(REQUEST_ID_HEADER, rid);
        }
        if let Some(v) = actor.and_then(Actor::header_value) {
            req = req.header(ACTOR_HEADER, v);
        }
        for (name, value) in extra {
            req = req.header(*name, value);
        }
        let resp = req
            .body(body)
            .send()
            .await
            .map_err(|e| RelayError::of(&e))?;
        if resp.status() == StatusCode::MISDIRECTED_REQUEST {
            let text = resp.text().await.unwrap_or_default();
            return Err(RelayError::Connect(format!(
                "node {id} at {} refused the request as not meant for it: {text}",
                node.addr
            )));
        }
        Ok(resp)
    }

    /// The identity of the node at `addr`, as it tells it.
    pub async fn identity(&self, addr: &str) -> Result<IdentityOut, PeerError> {
        let resp = self
            .request(Method::GET, addr, IDENTITY_PATH)
            .timeout(IDENTITY_TIMEOUT)
            .send()
            .await;
        read_json(addr, resp).await
    }

    /// Asks the leader `(id, node)` for the index a linearizable read must see applied
    /// (see [`ReadIndexOut`]), waiting at most `timeout` for its answer.
    pub async fn read_index(
        &self,
        to: (NodeId, &RegistryNode),
        timeout: Duration,
        request_id: Option<&str>,
    ) -> Result<ReadIndexOut, PeerError> {
        let (id, node) = to;
        let mut req = self
            .request(Method::POST, &node.addr, READ_INDEX_PATH)
            .headers(self.identity.headers_to(id, node))
            .timeout(timeout);
        if let Some(rid) = request_id {
            req = req.header(REQUEST_ID_HEADER, rid);
        }
        read_json(&node.addr, req.send().await).await
    }

    /// Asks the leader `(id, node)` to add this node back (see [`JoinIn`]).
    pub async fn join(
        &self,
        to: (NodeId, &RegistryNode),
        body: &JoinIn,
    ) -> Result<JoinOut, PeerError> {
        let (id, node) = to;
        let resp = self
            .request(Method::POST, &node.addr, JOIN_PATH)
            .headers(self.identity.headers_to(id, node))
            .timeout(IDENTITY_TIMEOUT)
            .json(body)
            .send()
            .await;
        read_json(&node.addr, resp).await
    }
}

/// Reads a JSON answer of a peer, or the error it gave.
async fn read_json<T: serde::de::DeserializeOwned>(
    addr: &str,
    resp: Result<reqwest::Response, reqwest::Error>,
) -> Result<T, PeerError> {
    let unreachable = |why: String| PeerError::Unreachable {
        addr: addr.to_string(),
        why,
    };
    let resp = resp.map_err(|e| unreachable(e.to_string()))?;
    let status = resp.status();
    let bytes = resp.bytes().await.map_err(|e| unreachable(e.to_string()))?;
    if !status.is_success() {
        let message = serde_json::from_slice::<ErrorBody>(&bytes)
            .map(|b| b.error.message)
            .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
        return Err(PeerError::Refused {
            addr: addr.to_string(),
            status: status.as_u16(),
            message,
        });
    }
    serde_json::from_slice(&bytes).map_err(|e| unreachable(format!("unreadable answer: {e}")))
}
