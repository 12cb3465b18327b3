//! JSON bodies of the public API (what clients send and what nodes answer), and the checks
//! every string field passes. The server converts them to and from its storage model
//! (`registry_api::wire`); nothing here knows of it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::ClientError;

/// JSON body of every error a node answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// The HTTP status code.
    pub code: u16,
    /// A sentence saying what is wrong.
    pub message: String,
}

/// `up` or `down`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Heartbeated within `service_down_time`.
    Up,
    /// Silent for longer than `service_down_time`.
    Down,
}

impl State {
    /// Its name on the wire (`up` or `down`).
    pub fn as_str(self) -> &'static str {
        match self {
            State::Up => "up",
            State::Down => "down",
        }
    }
}

/// Longest accepted string field (Cinder's schema: 1 to 255 characters).
pub const MAX_FIELD_CHARS: usize = 255;
/// Most heartbeats accepted in one request.
pub const MAX_BATCH: usize = 1000;

/// The header of a heartbeat request in which a reporter says how many of its heartbeats
/// since its last acknowledged one did not land: refused, failed, timed out, or never sent
/// because the one before was still unanswered at their time. Absent means none. A registry
/// that is itself refusing heartbeats for load counts them as refused heartbeats it never
/// saw, so that the registry clock slows as much as heartbeats are lost, not only as much as
/// the share it refused of those it read.
pub const MISSED_HEADER: &str = "x-registry-missed-heartbeats";

/// The most missed heartbeats one request is counted for: a reporter cut off for longer
/// than that many intervals was cut off for longer than `service_down_time` (six intervals
/// by default) anyway, and one reporter must not weigh like many.
pub const MAX_MISSED_COUNTED: u32 = 8;

/// A heartbeat as reporters send it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatIn {
    /// Host the service runs on.
    pub host: String,
    /// The service's binary.
    pub binary: String,
    /// RPC topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// Availability zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability_zone: Option<String>,
    /// Cluster name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_name: Option<String>,
    /// RPC version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpc_current_version: Option<String>,
    /// Versioned-object version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_current_version: Option<String>,
}

impl HeartbeatIn {
    /// A heartbeat with only the identity set.
    pub fn new(host: impl Into<String>, binary: impl Into<String>) -> Self {
        Self {
            host: host.into(),
            binary: binary.into(),
            topic: None,
            availability_zone: None,
            cluster_name: None,
            rpc_current_version: None,
            object_current_version: None,
        }
    }

    /// Checks every field (see [`check_field`]).
    pub fn check(&self) -> Result<(), ClientError> {
        check_field("host", &self.host)?;
        check_field("binary", &self.binary)?;
        for (name, value) in [
            ("topic", &self.topic),
            ("availability_zone", &self.availability_zone),
            ("cluster_name", &self.cluster_name),
            ("rpc_current_version", &self.rpc_current_version),
            ("object_current_version", &self.object_current_version),
        ] {
            if let Some(v) = value {
                check_field(name, v)?;
            }
        }
        Ok(())
    }
}

/// A string field must hold 1 to 255 characters and no control characters.
pub fn check_field(name: &str, value: &str) -> Result<(), ClientError> {
    let chars = value.chars().count();
    if chars == 0 || chars > MAX_FIELD_CHARS {
        return Err(ClientError::Invalid(format!(
            "'{name}' must be 1 to {MAX_FIELD_CHARS} characters long (got {chars})"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(ClientError::Invalid(format!(
            "'{name}' must not contain control characters"
        )));
    }
    Ok(())
}

/// `enabled` or `disabled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Not disabled by an operator.
    Enabled,
    /// Disabled by an operator.
    Disabled,
}

impl Status {
    /// Its name on the wire (`enabled` or `disabled`).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Enabled => "enabled",
            Status::Disabled => "disabled",
        }
    }
}

/// A service as the API lists it: the record, its liveness and its status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceOut {
    /// Record id.
    pub id: u64,
    /// Host the service runs on.
    pub host: String,
    /// The service's binary.
    pub binary: String,
    /// RPC topic.
    pub topic: String,
    /// Heartbeats counted.
    pub report_count: u64,
    /// `up` or `down`, computed when the list was served.
    pub state: State,
    /// `enabled` or `disabled`.
    pub status: Status,
    /// Whether an operator disabled the service.
    pub disabled: bool,
    /// Why it was disabled.
    pub disabled_reason: Option<String>,
    /// Availability zone.
    pub availability_zone: String,
    /// Creation time (leader time).
    pub created_at: DateTime<Utc>,
    /// Latest heartbeat (leader time).
    pub updated_at: Option<DateTime<Utc>>,
    /// Latest administrative change (leader time).
    pub modified_at: Option<DateTime<Utc>>,
    /// Who made it: `token:NAME`, `cert:SUBJECT` or `anonymous` (absent from registries
    /// before storage format 2, and for changes made while a member still read format 1).
    #[serde(default)]
    pub modified_by: Option<String>,
    /// RPC version.
    pub rpc_current_version: Option<String>,
    /// Versioned-object version.
    pub object_current_version: Option<String>,
    /// Replication status.
    pub replication_status: String,
    /// Frozen.
    pub frozen: bool,
    /// Active replication backend.
    pub active_backend_id: Option<String>,
    /// Cluster name.
    pub cluster_name: Option<String>,
    /// Forced down by an operator.
    pub forced_down: bool,
}

/// Body of `GET /v1/services` and of `POST /v1/heartbeats` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicesOut {
    /// The services.
    pub services: Vec<ServiceOut>,
    /// The log index the list reflects (`GET /v1/services` only; also in the
    /// `x-registry-applied-index` header): watching `/v1/events?since=` it misses nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_index: Option<u64>,
}

/// Query of `GET /v1/services`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServicesQuery {
    /// Only services on this host (exact match).
    pub host: Option<String>,
    /// Only services of this binary (exact match).
    pub binary: Option<String>,
    /// `linearizable` (default) or `stale`.
    pub consistency: Option<Consistency>,
}

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    /// Confirmed with a quorum by the leader before answering (the default).
    #[default]
    Linearizable,
    /// This node's applied state, whatever its age; answers without a leader.
    Stale,
}

impl Consistency {
    /// The query-string value.
    pub fn as_str(self) -> &'static str {
        match self {
            Consistency::Linearizable => "linearizable",
            Consistency::Stale => "stale",
        }
    }
}

/// One member of the Raft group, as `GET /v1/cluster` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberOut {
    /// Node id.
    pub id: u64,
    /// HTTP address.
    pub addr: String,
    /// Voter (true) or learner.
    pub voter: bool,
    /// The incarnation of its store that is the member (16 hex digits).
    #[serde(default)]
    pub incarnation: String,
    /// Last log index known to be replicated to it (known on the leader only; on others,
    /// only for the answering node itself).
    pub matched_index: Option<u64>,
}

/// Body of `GET /v1/cluster`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterOut {
    /// The cluster the answering node belongs to (32 hex digits), once it belongs to one.
    #[serde(default)]
    pub cluster_id: Option<String>,
    /// The answering node.
    pub node_id: u64,
    /// The incarnation of its store (16 hex digits).
    #[serde(default)]
    pub incarnation: String,
    /// Its Raft role: `Leader`, `Follower`, `Candidate` or `Learner`.
    pub role: String,
    /// The leader it knows of.
    pub leader_id: Option<u64>,
    /// The leader's address.
    pub leader_addr: Option<String>,
    /// Current term.
    pub term: u64,
    /// Last log index on this node.
    pub last_log_index: Option<u64>,
    /// Last applied index on this node.
    pub applied_index: Option<u64>,
    /// Index of the latest snapshot on this node.
    pub snapshot_index: Option<u64>,
    /// Index up to which this node purged its log.
    #[serde(default)]
    pub purged_index: Option<u64>,
    /// Members of the group.
    pub members: Vec<MemberOut>,
    /// Number of records in this node's state machine, removed ones included.
    pub records: usize,
    /// Digest of this node's state machine (equal on nodes at the same applied index) when
    /// asked for with `?digest=true`, else empty: it walks every record, which a status poll
    /// should not pay for. Always present, so that clients of older builds read the view.
    pub digest: String,
}

/// Body of `PUT /v1/services/{action}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceActionIn {
    /// The service's host.
    pub host: String,
    /// The service's binary (every action but freeze and thaw).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary: Option<String>,
    /// Why the service is disabled (`disable` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The administrative actions of `PUT /v1/services/{action}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceAction {
    /// Disable (with an optional reason).
    Disable,
    /// Enable (the reason is kept).
    Enable,
    /// Force down: listed `down` whatever the heartbeats say.
    ForceDown,
    /// Clear a forced down.
    ClearForceDown,
    /// Soft-delete; the next heartbeat re-creates the service.
    Remove,
    /// Freeze every service of a host.
    Freeze,
    /// Thaw every service of a host.
    Thaw,
}

impl ServiceAction {
    /// Every action, with its path segment.
    pub const ALL: [(ServiceAction, &'static str); 7] = [
        (ServiceAction::Disable, "disable"),
        (ServiceAction::Enable, "enable"),
        (ServiceAction::ForceDown, "force-down"),
        (ServiceAction::ClearForceDown, "clear-force-down"),
        (ServiceAction::Remove, "remove"),
        (ServiceAction::Freeze, "freeze"),
        (ServiceAction::Thaw, "thaw"),
    ];

    /// The action named by a path segment.
    pub fn parse(segment: &str) -> Option<Self> {
        Self::ALL
            .iter()
            .find(|(_, name)| *name == segment)
            .map(|(a, _)| *a)
    }

    /// The action's path segment.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(a, _)| *a == self)
            .map_or("", |(_, name)| name)
    }

    /// Whether the action applies to a whole host rather than one service.
    pub fn is_per_host(self) -> bool {
        matches!(self, ServiceAction::Freeze | ServiceAction::Thaw)
    }
}

/// Body of `POST /v1/cluster/learners`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddLearnerIn {
    /// The new node's id.
    pub id: u64,
    /// Its HTTP address, `host:port`.
    pub addr: String,
}

/// Body of `POST /v1/cluster/voters`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromoteIn {
    /// The learner to promote.
    pub id: u64,
}

/// A member as a node's identity lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberIdentity {
    /// Node id.
    pub id: u64,
    /// Address.
    pub addr: String,
    /// The incarnation of its store that is the member (16 hex digits).
    pub incarnation: String,
    /// Voter (true) or learner.
    pub voter: bool,
}

/// Body of `GET /raft/identity` (peers only): who a node is, for a peer that bootstraps a
/// group, joins one, or adds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityOut {
    /// The format version of the node's store.
    pub format: u8,
    /// Its node id.
    pub node_id: u64,
    /// The incarnation of its store (16 hex digits).
    pub incarnation: String,
    /// Its cluster (32 hex digits), once it has one.
    pub cluster_id: Option<String>,
    /// Whether its Raft holds any state (a log or a vote): a node that does must not be
    /// bootstrapped again.
    pub initialized: bool,
    /// The backup its store was restored from, when it was (see `RestoredFrom::backup_id`).
    pub restored_from: Option<String>,
    /// The leader it knows of.
    pub leader_id: Option<u64>,
    /// The members as it knows them.
    pub members: Vec<MemberIdentity>,
}

/// The leader's answer to `POST /raft/read-index` (peers only): the log index a
/// linearizable read must see applied, confirmed with a quorum after the request arrived. A
/// follower that has applied that much serves the read from its own state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadIndexOut {
    /// The index (`None` while the log is empty).
    pub read_index: Option<u64>,
}

/// Body of `POST /raft/join` (peers only): a node whose store was created anew asks the leader
/// to put it back in place of the incarnation the membership records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinIn {
    /// Its node id.
    pub node_id: u64,
    /// Its address (must be the member's).
    pub addr: String,
    /// Its new incarnation (16 hex digits).
    pub incarnation: String,
}

/// The leader's answer to a [`JoinIn`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinOut {
    /// Whether the node is back in its place (a voter again, or the learner it was).
    pub done: bool,
    /// Where the replacement stands, in words.
    pub phase: String,
}

/// Body of `GET /v1/settings`: the cluster-wide liveness settings in force.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SettingsOut {
    /// `service_down_time`, in seconds.
    pub service_down_time: f64,
    /// The share of a zone's enabled services down that makes it partially disrupted.
    pub unhealthy_zone_threshold: f64,
    /// `log` once the cluster's log carries them (every node judges by them); `file` before
    /// (this node's own file decides, and events judge no service silent).
    pub source: String,
    /// This node's file, for comparison.
    pub file: SettingsIn,
}

/// Body of `PUT /v1/settings` (admin): what to change; a field left out keeps its value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsIn {
    /// `service_down_time`, in seconds (more than 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_down_time: Option<f64>,
    /// 0 to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy_zone_threshold: Option<f64>,
}

/// Body of `GET /v1/whoami`: the highest role the request's credentials have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhoAmIOut {
    /// `admin`, `reader` or `reporter`.
    pub role: String,
    /// Who the credentials act as (`token:NAME`, `cert:SUBJECT`, `anonymous`).
    pub actor: String,
}
