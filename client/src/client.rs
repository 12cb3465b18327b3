//! A typed client of the public API, trying each known node in turn.

use std::time::Duration;

use crate::error::ClientError;
use crate::tls::ClientTls;
use crate::wire::{
    AddLearnerIn, ClusterOut, Consistency, ErrorBody, HeartbeatIn, PromoteIn, ServiceAction,
    ServiceActionIn, ServicesOut, MISSED_HEADER,
};

/// How long a client keeps an idle connection to a node for reuse. Nodes close idle
/// connections after their `http_header_timeout` (30 s by default), so a client must give
/// them up sooner, or it may send a request on a connection the node is closing.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(20);

/// A client of the registry's public API. Cloning shares the connection pool.
#[derive(Debug, Clone)]
pub struct RegistryClient {
    http: reqwest::Client,
    endpoints: Vec<String>,
    /// Sent as `Authorization: Bearer` when set.
    token: Option<String>,
}

impl RegistryClient {
    /// A client of the nodes at `endpoints` (`host:port` or `http://host:port`), each request
    /// bounded by `timeout`.
    pub fn new(
        endpoints: impl IntoIterator<Item = impl Into<String>>,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        Self::with_tls(endpoints, timeout, None)
    }

    /// A client of the nodes at `endpoints`, each request bounded by `timeout`, with `tls`
    /// for HTTPS: its CA bundle is the only root trusted, and its certificate is presented
    /// to nodes that ask. An endpoint given as `host:port` is `https://host:port` when
    /// `tls` names a CA, `http://host:port` otherwise; one with a scheme keeps it.
    pub fn with_tls(
        endpoints: impl IntoIterator<Item = impl Into<String>>,
        timeout: Duration,
        tls: Option<&ClientTls>,
    ) -> Result<Self, ClientError> {
        let scheme = if tls.is_some_and(ClientTls::has_ca) {
            "https"
        } else {
            "http"
        };
        let endpoints = endpoints
            .into_iter()
            .map(Into::into)
            .map(|e: String| {
                let e = e.trim_end_matches('/').to_string();
                if e.starts_with("http://") || e.starts_with("https://") {
                    e
                } else {
                    format!("{scheme}://{e}")
                }
            })
            .collect();
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT);
        if let Some(tls) = tls {
            builder = tls.apply(builder)?;
        }
        let http = builder.build().map_err(ClientError::Build)?;
        Ok(Self {
            http,
            endpoints,
            token: None,
        })
    }

    /// The same client, authenticating with `token` (see the node's `[auth]` settings).
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// The endpoints, as base URLs.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Sends heartbeats; answers the records as committed.
    pub async fn heartbeat(&self, beats: &[HeartbeatIn]) -> Result<ServicesOut, ClientError> {
        self.heartbeat_after_missed(beats, 0).await
    }

    /// [`heartbeat`](Self::heartbeat) from a reporter that `missed` heartbeats since its last
    /// acknowledged one (sent in [`MISSED_HEADER`] when not zero).
    pub async fn heartbeat_after_missed(
        &self,
        beats: &[HeartbeatIn],
        missed: u32,
    ) -> Result<ServicesOut, ClientError> {
        self.send(|base| {
            let req = self.http.post(format!("{base}/v1/heartbeats")).json(beats);
            if missed == 0 {
                req
            } else {
                req.header(MISSED_HEADER, missed)
            }
        })
        .await
    }

    /// Lists services.
    pub async fn services(
        &self,
        host: Option<&str>,
        binary: Option<&str>,
        consistency: Consistency,
    ) -> Result<ServicesOut, ClientError> {
        let mut q: Vec<(&str, &str)> = vec![("consistency", consistency.as_str())];
        if let Some(h) = host {
            q.push(("host", h));
        }
        if let Some(b) = binary {
            q.push(("binary", b));
        }
        self.send(|base| self.http.get(format!("{base}/v1/services")).query(&q))
            .await
    }

    /// Runs an administrative action on a service (or, for freeze and thaw, a host).
    pub async fn action(
        &self,
        action: ServiceAction,
        host: &str,
        binary: Option<&str>,
        reason: Option<&str>,
    ) -> Result<ServicesOut, ClientError> {
        let body = ServiceActionIn {
            host: host.to_string(),
            binary: binary.map(str::to_string),
            reason: reason.map(str::to_string),
        };
        self.send(|base| {
            self.http
                .put(format!("{base}/v1/services/{}", action.name()))
                .json(&body)
        })
        .await
    }

    /// Adds a node as a learner (answers once it caught up).
    pub async fn add_learner(&self, id: u64, addr: &str) -> Result<ClusterOut, ClientError> {
        let body = AddLearnerIn {
            id,
            addr: addr.to_string(),
        };
        self.send(|base| {
            self.http
                .post(format!("{base}/v1/cluster/learners"))
                .json(&body)
        })
        .await
    }

    /// Promotes a learner to voter.
    pub async fn promote(&self, id: u64) -> Result<ClusterOut, ClientError> {
        let body = PromoteIn { id };
        self.send(|base| {
            self.http
                .post(format!("{base}/v1/cluster/voters"))
                .json(&body)
        })
        .await
    }

    /// Removes a voter or learner from the group.
    pub async fn remove_member(&self, id: u64) -> Result<ClusterOut, ClientError> {
        self.send(|base| self.http.delete(format!("{base}/v1/cluster/members/{id}")))
            .await
    }

    /// Asks the first reachable node to build a snapshot now.
    pub async fn trigger_snapshot(&self) -> Result<serde_json::Value, ClientError> {
        self.send(|base| self.http.post(format!("{base}/v1/cluster/snapshot")))
            .await
    }

    /// A backup of the whole state (`GET /v1/cluster/backup`): taken on the leader once it
    /// confirmed its quorum (`Linearizable`), or on the first reachable node (`Stale`). The
    /// bytes are a snapshot file, checked by the caller.
    pub async fn backup(&self, consistency: Consistency) -> Result<Vec<u8>, ClientError> {
        let q = [("consistency", consistency.as_str())];
        let bytes = self
            .send_bytes(|base| self.http.get(format!("{base}/v1/cluster/backup")).query(&q))
            .await?;
        Ok(bytes.to_vec())
    }

    /// The cluster as the first reachable node sees it (no digest).
    pub async fn cluster(&self) -> Result<ClusterOut, ClientError> {
        self.send(|base| self.http.get(format!("{base}/v1/cluster")))
            .await
    }

    /// The cluster as the first reachable node sees it, with the digest of its state
    /// machine (`?digest=true`), which costs that node a walk of every record.
    pub async fn cluster_with_digest(&self) -> Result<ClusterOut, ClientError> {
        let q = [("digest", "true")];
        self.send(|base| self.http.get(format!("{base}/v1/cluster")).query(&q))
            .await
    }

    /// A request to `url` with this client's token.
    pub(crate) fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        self.authenticated(self.http.request(method, url))
    }

    /// `req` with this client's token, if it has one.
    fn authenticated(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// The zones and their disruption state, as the first reachable node has applied them.
    pub async fn zones(&self) -> Result<crate::events::ZonesOut, ClientError> {
        self.send(|base| self.http.get(format!("{base}/v1/zones")))
            .await
    }

    /// The cluster-wide liveness settings in force.
    pub async fn settings(&self) -> Result<crate::wire::SettingsOut, ClientError> {
        self.send(|base| self.http.get(format!("{base}/v1/settings")))
            .await
    }

    /// Changes the cluster-wide liveness settings (admin).
    pub async fn set_settings(
        &self,
        change: &crate::wire::SettingsIn,
    ) -> Result<crate::wire::SettingsOut, ClientError> {
        self.send(|base| self.http.put(format!("{base}/v1/settings")).json(change))
            .await
    }

    /// Sends the request built by `build` to each endpoint in turn until one answers; an
    /// answer that is an error is returned as is (not retried elsewhere), as is a request
    /// whose outcome is unknown.
    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        build: impl Fn(&str) -> reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let bytes = self.send_bytes(build).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Api {
            status: 200,
            message: format!("unexpected answer: {e}"),
        })
    }

    /// [`send`](Self::send), answering the body of a successful answer as it is.
    async fn send_bytes(
        &self,
        build: impl Fn(&str) -> reqwest::RequestBuilder,
    ) -> Result<bytes::Bytes, ClientError> {
        let mut last = String::from("no endpoint configured");
        for base in &self.endpoints {
            let resp = match self.authenticated(build(base)).send().await {
                Ok(r) => r,
                Err(e) if e.is_connect() => {
                    last = format!("{base}: {e}");
                    continue;
                }
                Err(e) => return Err(ClientError::Unknown(format!("{base}: {e}"))),
            };
            let status = resp.status();
            let bytes = resp
                .bytes()
                .await
                .map_err(|e| ClientError::Unknown(format!("{base}: {e}")))?;
            if status.is_success() {
                return Ok(bytes);
            }
            return Err(ClientError::Api {
                status: status.as_u16(),
                message: error_message(&bytes),
            });
        }
        Err(ClientError::Unreachable {
            tried: self.endpoints.len(),
            last,
        })
    }
}

/// The message of an error answer: its JSON error body's, or the body as text.
pub(crate) fn error_message(body: &[u8]) -> String {
    serde_json::from_slice::<ErrorBody>(body)
        .map(|b| b.error.message)
        .unwrap_or_else(|_| String::from_utf8_lossy(body).into_owned())
}
