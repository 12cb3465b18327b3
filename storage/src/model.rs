//! The data model: service records and the commands that change them.
//!
//! A [`ServiceRecord`] carries the columns of Cinder's `services` table. Every time a record
//! holds was stamped by the Raft leader when it proposed the command (see [`Command`]), so
//! applying a command never reads a clock and every node computes the same records.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::clock::ClockRate;
use crate::settings::LivenessSettings;

/// Availability zone given to a service that reports none (Cinder's default).
pub const DEFAULT_AVAILABILITY_ZONE: &str = "nova";
/// Replication status of a service that reports none (Cinder's `not-capable`).
pub const DEFAULT_REPLICATION_STATUS: &str = "not-capable";

/// Identity of a service: one record per (host, binary), as in Cinder.
///
/// Its strings are shared (`Arc<str>`, encoded as plain strings): the table's key, its
/// record and the derived index hold one copy of them between them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ServiceKey {
    /// Host the service runs on, e.g. `node1@lvm`.
    pub host: Arc<str>,
    /// The service's binary, e.g. `cinder-volume`.
    pub binary: Arc<str>,
}

impl ServiceKey {
    /// Builds a key.
    pub fn new(host: impl Into<Arc<str>>, binary: impl Into<Arc<str>>) -> Self {
        Self {
            host: host.into(),
            binary: binary.into(),
        }
    }
}

/// One service, with the columns of Cinder's `services` table.
///
/// The strings that records repeat or that rarely change are shared (`Arc<str>`, encoded
/// as plain strings): a binary, a zone or a version is held once by the table however many
/// records carry it (see `state::strings`), and copying a record on write copies no string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRecord {
    /// Id assigned by the state machine when the record is created (deterministic: a counter
    /// in the replicated state).
    pub id: u64,
    /// Host the service runs on.
    pub host: Arc<str>,
    /// The service's binary.
    pub binary: Arc<str>,
    /// The service's RPC topic.
    pub topic: Arc<str>,
    /// Number of heartbeats applied to this record; never goes backwards.
    pub report_count: u64,
    /// Whether an operator disabled the service.
    pub disabled: bool,
    /// Why it was disabled.
    pub disabled_reason: Option<String>,
    /// Availability zone the service reported.
    pub availability_zone: Arc<str>,
    /// When the record was created (leader time).
    #[serde(with = "chrono::serde::ts_microseconds")]
    pub created_at: DateTime<Utc>,
    /// Time of the latest heartbeat (leader time).
    #[serde(with = "chrono::serde::ts_microseconds_option")]
    pub updated_at: Option<DateTime<Utc>>,
    /// Time of the latest administrative change (leader time); never used for liveness.
    #[serde(with = "chrono::serde::ts_microseconds_option")]
    pub modified_at: Option<DateTime<Utc>>,
    /// Who made the latest administrative change (an audit trail: the name of the admin
    /// token, or the subject of the client certificate, the leader authorised it with).
    /// `None` when there was none, or when it was made before the cluster wrote format 2.
    pub modified_by: Option<String>,
    /// Soft-deleted.
    pub deleted: bool,
    /// When it was soft-deleted.
    #[serde(with = "chrono::serde::ts_microseconds_option")]
    pub deleted_at: Option<DateTime<Utc>>,
    /// RPC version the service reported.
    pub rpc_current_version: Option<Arc<str>>,
    /// Versioned-object version the service reported.
    pub object_current_version: Option<Arc<str>>,
    /// Replication status (Cinder volume services).
    pub replication_status: Arc<str>,
    /// Whether the service is frozen (Cinder volume services).
    pub frozen: bool,
    /// Active replication backend (Cinder volume services).
    pub active_backend_id: Option<Arc<str>>,
    /// Cluster the service belongs to (Cinder's `cluster_name`).
    pub cluster_name: Option<Arc<str>>,
    /// Forced down by an operator (Nova's `forced_down`, for fencing): listed `down` whatever
    /// its heartbeats say.
    pub forced_down: bool,
    /// Registry time (see [`crate::clock`]) of the latest heartbeat, or of creation: what
    /// liveness is measured from.
    #[serde(with = "chrono::serde::ts_microseconds")]
    pub last_seen: DateTime<Utc>,
}

impl ServiceRecord {
    /// The record's key.
    pub fn key(&self) -> ServiceKey {
        ServiceKey::new(self.host.clone(), self.binary.clone())
    }

    /// Time of the latest heartbeat, or of creation when none was counted yet (leader wall
    /// time, as displayed).
    pub fn last_heartbeat(&self) -> DateTime<Utc> {
        self.updated_at.unwrap_or(self.created_at)
    }

    /// The time listed as `updated_at` by Cinder: the newer of the latest heartbeat and the
    /// latest administrative change.
    pub fn listed_updated_at(&self) -> Option<DateTime<Utc>> {
        match (self.updated_at, self.modified_at) {
            (Some(u), Some(m)) => Some(u.max(m)),
            (u, m) => u.or(m),
        }
    }
}

/// A heartbeat as a reporter sends it. Optional fields, when present, replace the record's
/// values: the reporter's view of itself wins, as in Cinder's `report_state`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Host the service runs on.
    pub host: String,
    /// The service's binary.
    pub binary: String,
    /// RPC topic; defaults to the binary on creation.
    pub topic: Option<String>,
    /// Availability zone; defaults to [`DEFAULT_AVAILABILITY_ZONE`] on creation.
    pub availability_zone: Option<String>,
    /// Cluster name.
    pub cluster_name: Option<String>,
    /// RPC version.
    pub rpc_current_version: Option<String>,
    /// Versioned-object version.
    pub object_current_version: Option<String>,
}

impl Heartbeat {
    /// A heartbeat with only the identity set.
    pub fn new(host: impl Into<String>, binary: impl Into<String>) -> Self {
        Self {
            host: host.into(),
            binary: binary.into(),
            ..Self::default()
        }
    }

    /// The key of the service this heartbeat is for.
    pub fn key(&self) -> ServiceKey {
        ServiceKey::new(self.host.as_str(), self.binary.as_str())
    }
}

/// An operator's change to one service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminAction {
    /// Disable, with an optional reason (replaces the old one when given).
    Disable {
        /// Why.
        reason: Option<String>,
    },
    /// Enable; the old reason is kept, as Cinder does.
    Enable,
    /// Force the service down (true) or clear the force (false).
    ForceDown(bool),
    /// Soft-delete the record; the service's next heartbeat creates a fresh one.
    Remove,
}

/// A change to the services table, as it travels through the Raft log.
///
/// Every time a command needs is inside it, stamped by the leader when it proposed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// One or more heartbeats, coalesced into one log entry.
    Heartbeats {
        /// Leader time at which they were accepted.
        #[serde(with = "chrono::serde::ts_microseconds")]
        at: DateTime<Utc>,
        /// The heartbeats, applied in order. Shared: the log store keeps recent entries in
        /// memory and hands out copies (to apply, to replicate) without copying them; encoded
        /// exactly as a plain list.
        beats: Arc<Vec<Heartbeat>>,
    },
    /// An administrative change to one service.
    Admin {
        /// Leader time of the change.
        #[serde(with = "chrono::serde::ts_microseconds")]
        at: DateTime<Utc>,
        /// The service.
        key: ServiceKey,
        /// The change.
        action: AdminAction,
    },
    /// Freeze (true) or thaw (false) every service of a host.
    Freeze {
        /// Leader time of the change.
        #[serde(with = "chrono::serde::ts_microseconds")]
        at: DateTime<Utc>,
        /// The host.
        host: String,
        /// Frozen or not.
        frozen: bool,
    },
    /// The leader's clock tick: keeps registry time moving when nothing else is written.
    Tick {
        /// Leader time.
        #[serde(with = "chrono::serde::ts_microseconds")]
        at: DateTime<Utc>,
    },
    /// [`Command::Admin`] with who made it (format 2: see [`Command::format`]).
    AdminBy {
        /// Leader time of the change.
        #[serde(with = "chrono::serde::ts_microseconds")]
        at: DateTime<Utc>,
        /// The service.
        key: ServiceKey,
        /// The change.
        action: AdminAction,
        /// Who made it, recorded as the service's `modified_by`.
        by: String,
    },
    /// [`Command::Freeze`] with who made it (format 2).
    FreezeBy {
        /// Leader time of the change.
        #[serde(with = "chrono::serde::ts_microseconds")]
        at: DateTime<Utc>,
        /// The host.
        host: String,
        /// Frozen or not.
        frozen: bool,
        /// Who made it.
        by: String,
    },
    /// The cluster-wide liveness settings from this entry on (format 3).
    Settings {
        /// Leader time of the change.
        #[serde(with = "chrono::serde::ts_microseconds")]
        at: DateTime<Utc>,
        /// The settings.
        settings: LivenessSettings,
    },
    /// Registry time runs at `rate` from this entry on (format 4): the leader slows it while
    /// the registry refuses heartbeats for overload, and sets it back to full when it no
    /// longer does. The time up to this entry counts at the rate before it.
    ClockRate {
        /// Leader time.
        #[serde(with = "chrono::serde::ts_microseconds")]
        at: DateTime<Utc>,
        /// The new rate.
        rate: ClockRate,
    },
}

impl Command {
    /// The leader time stamped into the command.
    pub fn at(&self) -> DateTime<Utc> {
        match self {
            Command::Heartbeats { at, .. }
            | Command::Admin { at, .. }
            | Command::Freeze { at, .. }
            | Command::Tick { at }
            | Command::AdminBy { at, .. }
            | Command::FreezeBy { at, .. }
            | Command::Settings { at, .. }
            | Command::ClockRate { at, .. } => *at,
        }
    }

    /// The oldest storage format whose builds can decode the command. Variants are only ever
    /// added at the end of the enum, so a command of format 1 encodes the same bytes in every
    /// later format; one of a later format fails to decode on an older build (an unknown
    /// variant). A leader therefore proposes a command of format N only once every member has
    /// shown it reads format N, and otherwise proposes [`Command::older_form`].
    pub fn format(&self) -> u8 {
        match self {
            Command::ClockRate { .. } => 4,
            Command::Settings { .. } => 3,
            Command::AdminBy { .. } | Command::FreezeBy { .. } => 2,
            Command::Heartbeats { .. }
            | Command::Admin { .. }
            | Command::Freeze { .. }
            | Command::Tick { .. } => 1,
        }
    }

    /// The same change saying that `by` made it, for the commands that record it (an
    /// administrative change); any other command as it is.
    pub fn made_by(self, by: &str) -> Command {
        match self {
            Command::Admin { at, key, action }
            | Command::AdminBy {
                at, key, action, ..
            } => Command::AdminBy {
                at,
                key,
                action,
                by: by.to_string(),
            },
            Command::Freeze { at, host, frozen }
            | Command::FreezeBy {
                at, host, frozen, ..
            } => Command::FreezeBy {
                at,
                host,
                frozen,
                by: by.to_string(),
            },
            other => other,
        }
    }

    /// The same change in format 1: without who made it.
    pub fn older_form(self) -> Command {
        match self {
            Command::AdminBy {
                at, key, action, ..
            } => Command::Admin { at, key, action },
            Command::FreezeBy {
                at, host, frozen, ..
            } => Command::Freeze { at, host, frozen },
            other => other,
        }
    }

    /// Who made the change, for the commands that record it.
    pub fn by(&self) -> Option<&str> {
        match self {
            Command::AdminBy { by, .. } | Command::FreezeBy { by, .. } => Some(by),
            _ => None,
        }
    }
}

/// What applying a log entry yields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResponse {
    /// The records a command changed, in the order of the command's items: shared with the
    /// state, not copied (serialized as the records themselves).
    Records(Vec<Arc<ServiceRecord>>),
    /// The command names no live record (an unknown or removed service, a host with no
    /// services); nothing changed.
    NotFound,
    /// Entries with no application payload (blank, membership and tick entries).
    Empty,
}
