//! JSON bodies of the public API, and their validation.

use chrono::{DateTime, Utc};
use registry_storage::{Heartbeat, ServiceRecord};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::liveness::State;

/// Longest accepted string field (Cinder's schema: 1 to 255 characters).
pub const MAX_FIELD_CHARS: usize = 255;
/// Most heartbeats accepted in one request.
pub const MAX_BATCH: usize = 1000;

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

    /// Checks every field and converts to the storage model.
    pub fn validate(self) -> Result<Heartbeat, ApiError> {
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
        Ok(Heartbeat {
            host: self.host,
            binary: self.binary,
            topic: self.topic,
            availability_zone: self.availability_zone,
            cluster_name: self.cluster_name,
            rpc_current_version: self.rpc_current_version,
            object_current_version: self.object_current_version,
        })
    }
}

/// A string field must hold 1 to 255 characters and no control characters.
pub fn check_field(name: &str, value: &str) -> Result<(), ApiError> {
    let chars = value.chars().count();
    if chars == 0 || chars > MAX_FIELD_CHARS {
        return Err(ApiError::BadRequest(format!(
            "'{name}' must be 1 to {MAX_FIELD_CHARS} characters long (got {chars})"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(format!(
            "'{name}' must not contain control characters"
        )));
    }
    Ok(())
}

/// Parses the body of `POST /v1/heartbeats`: one heartbeat object or an array of them, in
/// one pass (the first byte that is not white space tells which).
pub fn parse_heartbeats(body: &[u8]) -> Result<Vec<Heartbeat>, ApiError> {
    let not_json =
        |e: serde_json::Error| ApiError::BadRequest(format!("body is not valid JSON: {e}"));
    let refused = |what: &str, e: serde_json::Error| match e.classify() {
        serde_json::error::Category::Data => ApiError::BadRequest(format!("{what}: {e}")),
        _ => not_json(e),
    };
    let items: Vec<HeartbeatIn> = match body.trim_ascii_start().first() {
        Some(b'[') => {
            serde_json::from_slice(body).map_err(|e| refused("invalid heartbeat in array", e))?
        }
        Some(b'{') => {
            vec![serde_json::from_slice(body).map_err(|e| refused("invalid heartbeat", e))?]
        }
        _ => {
            serde_json::from_slice::<serde::de::IgnoredAny>(body).map_err(not_json)?;
            return Err(ApiError::BadRequest(
                "body must be a heartbeat object or an array of them".into(),
            ));
        }
    };
    if items.is_empty() {
        return Err(ApiError::BadRequest("no heartbeat in the array".into()));
    }
    if items.len() > MAX_BATCH {
        return Err(ApiError::BadRequest(format!(
            "at most {MAX_BATCH} heartbeats per request (got {})",
            items.len()
        )));
    }
    items.into_iter().map(HeartbeatIn::validate).collect()
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

impl ServiceOut {
    /// The listed form of a record with its computed state.
    pub fn new(r: &ServiceRecord, state: State) -> Self {
        Self {
            id: r.id,
            host: r.host.clone(),
            binary: r.binary.clone(),
            topic: r.topic.clone(),
            report_count: r.report_count,
            state,
            status: if r.disabled {
                Status::Disabled
            } else {
                Status::Enabled
            },
            disabled: r.disabled,
            disabled_reason: r.disabled_reason.clone(),
            availability_zone: r.availability_zone.clone(),
            created_at: r.created_at,
            updated_at: r.updated_at,
            modified_at: r.modified_at,
            rpc_current_version: r.rpc_current_version.clone(),
            object_current_version: r.object_current_version.clone(),
            replication_status: r.replication_status.clone(),
            frozen: r.frozen,
            active_backend_id: r.active_backend_id.clone(),
            cluster_name: r.cluster_name.clone(),
            forced_down: r.forced_down,
        }
    }
}

/// Body of `GET /v1/services` and of `POST /v1/heartbeats` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicesOut {
    /// The services.
    pub services: Vec<ServiceOut>,
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
    /// Digest of this node's state machine (equal on nodes at the same applied index).
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

/// Validates an action's body and builds the command (given the leader's time).
pub fn action_command(
    action: ServiceAction,
    body: &ServiceActionIn,
) -> Result<impl Fn(DateTime<Utc>) -> registry_storage::Command, ApiError> {
    use registry_storage::{AdminAction, Command, ServiceKey};
    check_field("host", &body.host)?;
    if let Some(r) = &body.reason {
        check_field("reason", r)?;
        if action != ServiceAction::Disable {
            return Err(ApiError::BadRequest(format!(
                "'reason' is accepted by disable only, not by {}",
                action.name()
            )));
        }
    }
    let host = body.host.clone();
    let key = if action.is_per_host() {
        if body.binary.is_some() {
            return Err(ApiError::BadRequest(format!(
                "{} applies to a whole host: 'binary' is not accepted",
                action.name()
            )));
        }
        None
    } else {
        let binary = body
            .binary
            .clone()
            .ok_or_else(|| ApiError::BadRequest(format!("{} needs 'binary'", action.name())))?;
        check_field("binary", &binary)?;
        Some(ServiceKey::new(host.clone(), binary))
    };
    let admin = match action {
        ServiceAction::Disable => Some(AdminAction::Disable {
            reason: body.reason.clone(),
        }),
        ServiceAction::Enable => Some(AdminAction::Enable),
        ServiceAction::ForceDown => Some(AdminAction::ForceDown(true)),
        ServiceAction::ClearForceDown => Some(AdminAction::ForceDown(false)),
        ServiceAction::Remove => Some(AdminAction::Remove),
        ServiceAction::Freeze | ServiceAction::Thaw => None,
    };
    let frozen = action == ServiceAction::Freeze;
    Ok(move |at| match (&key, &admin) {
        (Some(key), Some(action)) => Command::Admin {
            at,
            key: key.clone(),
            action: action.clone(),
        },
        _ => Command::Freeze {
            at,
            host: host.clone(),
            frozen,
        },
    })
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
