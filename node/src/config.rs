//! A node's configuration: one TOML file per node, loaded into a typed, validated struct.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use registry_api::auth::{Auth, ClientToken, Role};
use registry_api::transport::tls::TlsConfig;
use serde::{Deserialize, Serialize};

use crate::error::NodeError;

/// One node of the group, as every node's config lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    /// The peer's node id.
    pub id: u64,
    /// The address its HTTP API (and Raft RPC) listens on, `host:port`.
    pub addr: String,
}

/// Raft timings and log compaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftSettings {
    /// How often the leader sends heartbeats to followers.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// Lower bound of the randomised election timeout.
    #[serde(with = "humantime_serde")]
    pub election_timeout_min: Duration,
    /// Upper bound of the randomised election timeout.
    #[serde(with = "humantime_serde")]
    pub election_timeout_max: Duration,
    /// Build a snapshot once this many entries were applied since the last one, at the
    /// latest. A node also builds one, sooner, once the log it applied since the last one
    /// holds about as many bytes as that snapshot (`registry_storage::snapshot_policy`),
    /// which is what decides at the default.
    pub snapshot_logs_since_last: u64,
    /// Entries kept in the log behind the latest snapshot (so a briefly lagging follower
    /// catches up from the log rather than by a snapshot install).
    pub max_in_snapshot_log_to_keep: u64,
    /// How long one snapshot chunk may take to send and, for the last one, to install on the
    /// follower (decoding and writing every record).
    #[serde(with = "humantime_serde")]
    pub install_snapshot_timeout: Duration,
    /// Most log entries in one AppendEntries. openraft gives each AppendEntries
    /// `heartbeat_interval` to complete (the follower decodes, writes and flushes them), and
    /// one entry can carry thousands of heartbeats, so a follower catching up gets the log in
    /// small pieces rather than in RPCs that time out again and again.
    pub max_payload_entries: u64,
}

impl Default for RaftSettings {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_millis(50),
            election_timeout_min: Duration::from_millis(150),
            election_timeout_max: Duration::from_millis(300),
            snapshot_logs_since_last: 1_000_000,
            max_in_snapshot_log_to_keep: 1000,
            install_snapshot_timeout: Duration::from_secs(10),
            max_payload_entries: 8,
        }
    }
}

/// A registry node's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's id; must appear in `peers`.
    pub node_id: u64,
    /// Address the HTTP server binds, `ip:port`.
    pub listen: SocketAddr,
    /// Directory of the node's sled database; a relative path is taken from the directory
    /// of the config file.
    pub data_dir: PathBuf,
    /// The members of the group, this node included: the founding members that
    /// `--bootstrap` forms the group with, and the peers a node with an empty data directory
    /// asks to join.
    pub peers: Vec<Peer>,
    /// How long a service may stay silent and still be `up` (Cinder's `service_down_time`).
    #[serde(with = "humantime_serde", default = "default_service_down_time")]
    pub service_down_time: Duration,
    /// The share of a zone's enabled services down (with more than 2 down) that makes it
    /// partially disrupted (Kubernetes' `unhealthy-zone-threshold`), 0 to 1.
    /// `service_down_time` and this are cluster-wide: the first leader writes its own into
    /// the log, every node judges by the log's, and a node whose file disagrees says so.
    #[serde(default = "default_unhealthy_zone_threshold")]
    pub unhealthy_zone_threshold: f64,
    /// Watching (`GET /v1/events`).
    #[serde(default)]
    pub events: EventsConfig,
    /// How often reporters send heartbeats (Cinder's `report_interval`).
    #[serde(with = "humantime_serde", default = "default_report_interval")]
    pub report_interval: Duration,
    /// How long a write may wait for a leader and its commit before answering 503.
    #[serde(with = "humantime_serde", default = "default_write_timeout")]
    pub write_timeout: Duration,
    /// How long a linearizable read may wait for the leader's quorum before answering 503.
    #[serde(with = "humantime_serde", default = "default_read_timeout")]
    pub read_timeout: Duration,
    /// Most requests on public routes this node serves at once; beyond it a request is
    /// answered 503 with `Retry-After: 1` at once. Raft RPCs and `/health`, `/ready`,
    /// `/metrics` are not counted.
    #[serde(default = "default_max_concurrent_requests")]
    pub max_concurrent_requests: usize,
    /// Most HTTP connections this node keeps open (clients and peers); a connection
    /// accepted past it is closed at once and counted in
    /// `registry_http_connections_refused_total`.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// How long a client may take to send a request's head, and how long an idle
    /// keep-alive connection is kept waiting for its next request, before the connection
    /// is closed. Clients of the registry keep idle connections for less
    /// ([`registry_client::POOL_IDLE_TIMEOUT`]), so they never reuse one the node is closing.
    #[serde(with = "humantime_serde", default = "default_http_header_timeout")]
    pub http_header_timeout: Duration,
    /// How long a batch of heartbeats waits for more to join it under load, on the leader
    /// before it proposes them as one log entry and on a follower before it forwards them
    /// (0 to 50 ms; 0: never). Longer gives fewer, larger entries: less CPU per heartbeat at
    /// a moderate rate, for up to twice this much more latency. A lone heartbeat after a
    /// quiet spell never waits.
    #[serde(with = "humantime_serde", default = "default_group_commit_linger")]
    pub group_commit_linger: Duration,
    /// Raft timings and log compaction.
    #[serde(default)]
    pub raft: RaftSettings,
    /// Client tokens and the cluster secret. Required: turning authentication off must be
    /// said in so many words (`mode = "disabled"`), and is meant for a local demo only.
    pub auth: AuthSettings,
    /// TLS (optional): with it the node serves HTTPS only on `listen`, talks to its peers
    /// over HTTPS with its certificate, and refuses requests from peers that show no client
    /// certificate the cluster CA signed. Paths are relative to the config file. Every node
    /// of a group has TLS or none does.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

/// Settings of watching.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// How many events a node keeps for watchers to resume from; a watch from an older
    /// position is answered `410 Gone` (list again, then watch from the list's index).
    #[serde(default = "default_events_kept")]
    pub kept: usize,
    /// How often an idle stream gets a keep-alive comment.
    #[serde(with = "humantime_serde", default = "default_events_keepalive")]
    pub keepalive: Duration,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            kept: default_events_kept(),
            keepalive: default_events_keepalive(),
        }
    }
}

fn default_events_kept() -> usize {
    registry_storage::event_log::DEFAULT_EVENTS_KEPT
}

fn default_events_keepalive() -> Duration {
    Duration::from_secs(15)
}

pub(crate) fn default_unhealthy_zone_threshold() -> f64 {
    0.55
}

/// Whether clients need tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Every client request needs a token whose role allows it.
    Tokens,
    /// Anyone who reaches the node may do anything (local demo only; logged loudly).
    Disabled,
}

/// A client token of `[[auth.tokens]]`, stored as its SHA-256 (see `registryctl
/// hash-token`): `role`, `sha256` and an optional `name`, exactly what [`Auth`] checks.
pub type TokenEntry = ClientToken;

/// Authentication settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// `tokens` or `disabled`.
    pub mode: AuthMode,
    /// Accepted tokens (with `mode = "tokens"`).
    #[serde(default)]
    pub tokens: Vec<TokenEntry>,
    /// A file of more tokens, one `ROLE SHA256 [NAME]` per line (`#` starts a comment; the
    /// name is the rest of the line); relative to the config file.
    pub token_file: Option<PathBuf>,
    /// The secret every node of the group sends and expects on Raft RPCs and forwarded
    /// requests (at least 16 characters). Required in every mode: `disabled` turns off
    /// client tokens only.
    pub cluster_secret: Option<String>,
    /// A file holding the cluster secret instead (its first line; each further non-empty
    /// line is a secret also accepted); relative to the config file.
    pub cluster_secret_file: Option<PathBuf>,
    /// Other secrets accepted from peers but never sent: the old or the next one while the
    /// cluster secret is rotated (README, "Rotating the cluster secret").
    #[serde(default)]
    pub accepted_cluster_secrets: Vec<String>,
}

impl AuthSettings {
    /// Resolves the files and builds the API's [`Auth`].
    pub fn load(&self) -> Result<Auth, NodeError> {
        let invalid = |m: String| NodeError::Config(format!("auth: {m}"));
        let read = |what: &'static str, p: &Path| {
            std::fs::read_to_string(p).map_err(NodeError::io(what, p))
        };
        let mut also_accepted = self.accepted_cluster_secrets.clone();
        let secret = match (&self.cluster_secret, &self.cluster_secret_file) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "give cluster_secret or cluster_secret_file, not both".into(),
                ))
            }
            (Some(s), None) => s.clone(),
            (None, Some(f)) => {
                let text = read("reading the cluster secret file", f)?;
                let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
                let first = lines.next().unwrap_or("").to_string();
                also_accepted.extend(lines.map(str::to_string));
                first
            }
            (None, None) => {
                return Err(invalid(
                    "a cluster_secret (or cluster_secret_file) is required in every mode: \
                     requests between nodes always need it (mode = \"disabled\" turns off \
                     client tokens only)"
                        .into(),
                ))
            }
        };
        let mut tokens = self.tokens.clone();
        if let Some(f) = &self.token_file {
            for (n, line) in read("reading the token file", f)?.lines().enumerate() {
                let line = line.split('#').next().unwrap_or("").trim();
                if line.is_empty() {
                    continue;
                }
                let (role, rest) = line.split_once(char::is_whitespace).ok_or_else(|| {
                    invalid(format!(
                        "{}:{}: expected `ROLE SHA256 [NAME]`",
                        f.display(),
                        n + 1
                    ))
                })?;
                let role: Role = serde_json::from_value(serde_json::json!(role)).map_err(|_| {
                    invalid(format!("{}:{}: unknown role {role:?}", f.display(), n + 1))
                })?;
                let rest = rest.trim();
                let (digest, name) = match rest.split_once(char::is_whitespace) {
                    Some((d, name)) => (d, Some(name.trim().to_string())),
                    None => (rest, None),
                };
                tokens.push(ClientToken {
                    role,
                    sha256: digest.to_string(),
                    name,
                });
            }
        }
        let tokens = match self.mode {
            AuthMode::Tokens => {
                if tokens.is_empty() {
                    return Err(invalid(
                        "mode = \"tokens\" but no token is configured".into(),
                    ));
                }
                Some(tokens)
            }
            AuthMode::Disabled => None,
        };
        Auth::rotating(tokens, secret, also_accepted).map_err(invalid)
    }
}

/// The default of [`NodeConfig::max_concurrent_requests`].
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 1024;

/// The largest [`NodeConfig::max_concurrent_requests`] accepted.
pub const MAX_CONCURRENT_REQUESTS_LIMIT: usize = 1 << 20;

fn default_max_concurrent_requests() -> usize {
    DEFAULT_MAX_CONCURRENT_REQUESTS
}

/// The default of [`NodeConfig::group_commit_linger`].
pub const DEFAULT_GROUP_COMMIT_LINGER: Duration = registry_api::group_commit::LINGER;

/// The longest [`NodeConfig::group_commit_linger`] accepted.
pub const MAX_GROUP_COMMIT_LINGER: Duration = Duration::from_millis(50);

fn default_group_commit_linger() -> Duration {
    DEFAULT_GROUP_COMMIT_LINGER
}

/// The default of [`NodeConfig::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

fn default_max_connections() -> usize {
    DEFAULT_MAX_CONNECTIONS
}

/// The default of [`NodeConfig::http_header_timeout`].
pub const DEFAULT_HTTP_HEADER_TIMEOUT: Duration = Duration::from_secs(30);

fn default_http_header_timeout() -> Duration {
    DEFAULT_HTTP_HEADER_TIMEOUT
}

pub(crate) fn default_service_down_time() -> Duration {
    Duration::from_secs(60)
}
pub(crate) fn default_report_interval() -> Duration {
    Duration::from_secs(10)
}
pub(crate) fn default_write_timeout() -> Duration {
    Duration::from_secs(5)
}
pub(crate) fn default_read_timeout() -> Duration {
    Duration::from_secs(2)
}

impl NodeConfig {
    /// Reads, parses and validates a config file; relative paths (`data_dir`, the auth
    /// files, the `[tls]` files) are resolved against the file's directory.
    pub fn load(path: &Path) -> Result<Self, NodeError> {
        let text =
            std::fs::read_to_string(path).map_err(NodeError::io("cannot read config", path))?;
        let mut config: NodeConfig =
            toml::from_str(&text).map_err(|source| NodeError::ConfigParse {
                path: path.to_owned(),
                source: Box::new(source),
            })?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        for p in [
            Some(&mut config.data_dir),
            config.auth.token_file.as_mut(),
            config.auth.cluster_secret_file.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        if let Some(tls) = config.tls.as_mut() {
            tls.resolve(base);
        }
        config.validate()
    }

    /// Checks the values and corrects `service_down_time` as Cinder does.
    pub fn validate(mut self) -> Result<Self, NodeError> {
        let invalid = |m: String| Err(NodeError::Config(m));
        let ids: BTreeSet<u64> = self.peers.iter().map(|p| p.id).collect();
        if ids.len() != self.peers.len() {
            return invalid("peers: node ids must be unique".into());
        }
        let addrs: BTreeSet<&str> = self.peers.iter().map(|p| p.addr.as_str()).collect();
        if addrs.len() != self.peers.len() {
            return invalid("peers: addresses must be unique".into());
        }
        if !ids.contains(&self.node_id) {
            return invalid(format!("node_id {} is not among the peers", self.node_id));
        }
        let r = &self.raft;
        if r.heartbeat_interval.is_zero() {
            return invalid("raft.heartbeat_interval must be more than zero".into());
        }
        if r.election_timeout_min <= r.heartbeat_interval {
            return invalid("raft.election_timeout_min must exceed raft.heartbeat_interval".into());
        }
        if r.election_timeout_max <= r.election_timeout_min {
            return invalid(
                "raft.election_timeout_max must exceed raft.election_timeout_min".into(),
            );
        }
        if r.max_payload_entries == 0 {
            return invalid("raft.max_payload_entries must be at least 1".into());
        }
        if r.snapshot_logs_since_last == 0 {
            return invalid("raft.snapshot_logs_since_last must be at least 1".into());
        }
        if self.report_interval.is_zero() {
            return invalid("report_interval must be more than zero".into());
        }
        if self.service_down_time <= self.report_interval {
            let corrected = self.report_interval.mul_f64(2.5);
            tracing::warn!(
                service_down_time = ?self.service_down_time,
                report_interval = ?self.report_interval,
                corrected = ?corrected,
                "service_down_time must exceed report_interval; using 2.5 x report_interval"
            );
            self.service_down_time = corrected;
        }
        if !(0.0..=1.0).contains(&self.unhealthy_zone_threshold) {
            return invalid(format!(
                "unhealthy_zone_threshold must be 0 to 1 (got {})",
                self.unhealthy_zone_threshold
            ));
        }
        if !(1..=10_000_000).contains(&self.events.kept) {
            return invalid(format!(
                "events.kept must be 1 to 10000000 (got {})",
                self.events.kept
            ));
        }
        if self.events.keepalive.is_zero() {
            return invalid("events.keepalive must be more than zero".into());
        }
        if self.write_timeout.is_zero() || self.read_timeout.is_zero() {
            return invalid("write_timeout and read_timeout must be more than zero".into());
        }
        if !(1..=MAX_CONCURRENT_REQUESTS_LIMIT).contains(&self.max_concurrent_requests) {
            return invalid(format!(
                "max_concurrent_requests must be 1 to {MAX_CONCURRENT_REQUESTS_LIMIT} (got {})",
                self.max_concurrent_requests
            ));
        }
        if !(1..=MAX_CONCURRENT_REQUESTS_LIMIT).contains(&self.max_connections) {
            return invalid(format!(
                "max_connections must be 1 to {MAX_CONCURRENT_REQUESTS_LIMIT} (got {})",
                self.max_connections
            ));
        }
        if self.group_commit_linger > MAX_GROUP_COMMIT_LINGER {
            return invalid(format!(
                "group_commit_linger must be at most {MAX_GROUP_COMMIT_LINGER:?} (got {:?})",
                self.group_commit_linger
            ));
        }
        if self.http_header_timeout < Duration::from_millis(100) {
            return invalid(format!(
                "http_header_timeout must be at least 100ms (got {:?})",
                self.http_header_timeout
            ));
        }
        if self.http_header_timeout <= registry_client::POOL_IDLE_TIMEOUT {
            tracing::warn!(
                http_header_timeout = ?self.http_header_timeout,
                client_idle = ?registry_client::POOL_IDLE_TIMEOUT,
                "http_header_timeout is no longer than registry clients keep idle connections: \
                 a client may send a request on a connection this node is closing"
            );
        }
        Ok(self)
    }

    /// The address this node advertises to its peers (its entry in `peers`).
    pub fn advertised_addr(&self) -> &str {
        self.peers
            .iter()
            .find(|p| p.id == self.node_id)
            .map_or("", |p| p.addr.as_str())
    }

    /// openraft's config for these settings.
    pub fn openraft_config(&self) -> Result<openraft::Config, NodeError> {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        openraft::Config {
            cluster_name: "heartbeat-registry".into(),
            heartbeat_interval: ms(self.raft.heartbeat_interval),
            election_timeout_min: ms(self.raft.election_timeout_min),
            election_timeout_max: ms(self.raft.election_timeout_max),
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(
                self.raft.snapshot_logs_since_last,
            ),
            max_in_snapshot_log_to_keep: self.raft.max_in_snapshot_log_to_keep,
            install_snapshot_timeout: ms(self.raft.install_snapshot_timeout),
            max_payload_entries: self.raft.max_payload_entries,
            ..Default::default()
        }
        .validate()
        .map_err(|e| NodeError::RaftConfig(Box::new(e)))
    }
}
