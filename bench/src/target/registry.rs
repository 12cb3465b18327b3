//! The registry over HTTP: `POST /v1/heartbeats` with prepared bodies, through a pooled
//! HTTP/1.1 client (one connection per concurrent request, kept alive).
//!
//! Like the reporter of `registry-client`, each request group counts the heartbeats it
//! missed since its last acknowledged one (failed, or skipped by the load generator) and
//! sends them in `x-registry-missed-heartbeats` with the next one, when there are any.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use registry_api::error::ErrorBody;
use registry_api::wire::ClusterOut;
use registry_client::wire::MISSED_HEADER;

use super::Target;
use crate::stats::Failure;
use crate::workload::{registry_bodies, Groups};

/// Bound on a `GET /v1/cluster` that reads the Raft term during a run.
const TERM_READ_TIMEOUT: Duration = Duration::from_secs(2);

/// The registry as a [`Target`].
pub struct RegistryTarget {
    http: reqwest::Client,
    urls: Vec<String>,
    cluster_urls: Vec<String>,
    groups: Groups,
    bodies: Vec<Bytes>,
    /// Per group, heartbeats missed since its last acknowledged one.
    missed: Vec<AtomicU32>,
}

impl RegistryTarget {
    /// [`RegistryTarget::new`] for the registry cluster of the command line `c`.
    pub fn of_cluster(c: &crate::opts::ClusterArgs, groups: Groups) -> anyhow::Result<Self> {
        Self::new(
            &c.registry,
            &c.prefix,
            groups,
            c.timeout,
            c.registry_token.as_deref(),
            c.registry_cacert.as_deref(),
        )
    }

    /// Prepares the requests of `groups` (services named with `prefix`) for the nodes at
    /// `endpoints` (`host:port` or URLs).
    pub fn new(
        endpoints: &[String],
        prefix: &str,
        groups: Groups,
        timeout: Duration,
        token: Option<&str>,
        ca: Option<&Path>,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(!endpoints.is_empty(), "no registry endpoint (--registry)");
        Ok(Self {
            http: http_client(timeout, token, ca)?,
            urls: endpoints
                .iter()
                .map(|e| format!("{}/v1/heartbeats", base_url(e)))
                .collect(),
            cluster_urls: endpoints
                .iter()
                .map(|e| format!("{}/v1/cluster", base_url(e)))
                .collect(),
            groups,
            missed: (0..groups.count()).map(|_| AtomicU32::new(0)).collect(),
            bodies: registry_bodies(prefix, groups),
        })
    }
}

/// The HTTP client every registry request goes through (sending `token`, if any, as a
/// bearer token; trusting only the CA in the PEM file `ca`, if any, for `https://`).
pub fn http_client(
    timeout: Duration,
    token: Option<&str>,
    ca: Option<&Path>,
) -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(t) = token {
        let mut v = reqwest::header::HeaderValue::from_str(&format!("Bearer {t}"))?;
        v.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, v);
    }
    let mut builder = reqwest::Client::builder();
    if let Some(path) = ca {
        let pem = std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("reading the CA {}: {e}", path.display()))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem)? {
            builder = builder.add_root_certificate(cert);
        }
    }
    Ok(builder
        .default_headers(headers)
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(30))
        .no_proxy()
        .build()?)
}

/// `http://host:port` for `host:port` (a URL is kept as is, without a trailing slash).
pub fn base_url(endpoint: &str) -> String {
    let e = endpoint.trim_end_matches('/');
    if e.starts_with("http://") || e.starts_with("https://") {
        e.to_string()
    } else {
        format!("http://{e}")
    }
}

/// Groups a transport error into a kind.
pub fn transport_failure(e: &reqwest::Error) -> Failure {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_body() || e.is_decode() {
        "body"
    } else {
        "transport"
    };
    Failure::new(kind, e)
}

/// Reads an answer: `Ok` on 2xx, else the status and the error message of the body. A 503
/// with `Retry-After` (a node's admission bound: `max_concurrent_requests` in flight) is
/// its own kind, `HTTP 503 overloaded`, named with the node that refused when the message
/// says (a follower relays the leader's refusal of a forwarded batch as it is).
pub async fn check_answer(resp: reqwest::Response) -> Result<Bytes, Failure> {
    let status = resp.status();
    let retry_after = resp.headers().contains_key(reqwest::header::RETRY_AFTER);
    let body = resp.bytes().await.map_err(|e| transport_failure(&e))?;
    if status.is_success() {
        return Ok(body);
    }
    let message = serde_json::from_slice::<ErrorBody>(&body)
        .map(|b| b.error.message)
        .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
    let kind = if status == reqwest::StatusCode::SERVICE_UNAVAILABLE && retry_after {
        match refusing_node(&message) {
            Some(id) => format!("{OVERLOADED} (node {id})"),
            None => OVERLOADED.to_string(),
        }
    } else {
        format!("HTTP {}", status.as_u16())
    };
    Err(Failure::new(kind, message))
}

/// The kind (or the start of the kind) of a refusal by a node's admission bound.
pub const OVERLOADED: &str = "HTTP 503 overloaded";

/// The node id in an admission refusal's message (`node 2 is serving its maximum of ...`).
fn refusing_node(message: &str) -> Option<u64> {
    let rest = message.strip_prefix("node ")?;
    let id = rest.split_whitespace().next()?;
    rest[id.len()..]
        .trim_start()
        .starts_with("is serving its maximum")
        .then(|| id.parse().ok())
        .flatten()
}

impl Target for RegistryTarget {
    fn label(&self) -> String {
        "registry".into()
    }

    fn groups(&self) -> usize {
        self.bodies.len()
    }

    fn beats_in(&self, group: usize) -> usize {
        self.groups.members(group).len()
    }

    fn endpoints(&self) -> usize {
        self.urls.len()
    }

    async fn send(&self, _lane: usize, endpoint: usize, group: usize) -> Result<(), Failure> {
        let missed = self.missed.get(group);
        let told = missed.map_or(0, |m| m.load(Ordering::Relaxed));
        let mut req = self
            .http
            .post(&self.urls[endpoint % self.urls.len()])
            .header("content-type", "application/json");
        if told > 0 {
            req = req.header(MISSED_HEADER, told);
        }
        let sent = async {
            let resp = req
                .body(self.bodies[group].clone())
                .send()
                .await
                .map_err(|e| transport_failure(&e))?;
            check_answer(resp).await.map(|_| ())
        };
        let result = sent.await;
        if let Some(m) = missed {
            match &result {
                // The ones it told of are told; any missed meanwhile are still to tell.
                Ok(()) => {
                    let _ = m.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                        Some(v.saturating_sub(told))
                    });
                }
                Err(_) => {
                    m.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        result
    }

    fn skipped(&self, group: usize) {
        if let Some(m) = self.missed.get(group) {
            m.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The highest `term` of `GET /v1/cluster` among the nodes that answer.
    async fn raft_term(&self) -> Option<u64> {
        highest_term(&self.http, &self.cluster_urls).await
    }
}

/// The highest `term` of the `GET /v1/cluster` answers at `cluster_urls` (`None` when no
/// node answered).
pub(crate) async fn highest_term(http: &reqwest::Client, cluster_urls: &[String]) -> Option<u64> {
    let reads = cluster_urls.iter().map(|url| async move {
        let resp = http.get(url).timeout(TERM_READ_TIMEOUT).send().await.ok()?;
        let body = check_answer(resp).await.ok()?;
        serde_json::from_slice::<ClusterOut>(&body)
            .ok()
            .map(|c| c.term)
    });
    futures::future::join_all(reads)
        .await
        .into_iter()
        .flatten()
        .max()
}

#[cfg(test)]
mod tests {
    use super::refusing_node;

    #[test]
    fn the_refusing_node_is_read_from_the_message() {
        assert_eq!(
            refusing_node(
                "node 2 is serving its maximum of 1024 concurrent requests; retry shortly"
            ),
            Some(2)
        );
        assert_eq!(refusing_node("no leader elected in time"), None);
        assert_eq!(refusing_node("node x is serving its maximum"), None);
    }
}
