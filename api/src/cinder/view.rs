//! How a service is listed by `GET /v3/os-services`, per microversion (Cinder's
//! `cinder/api/v3/services.py` with the extended-services extension loaded):
//!
//! - 3.0: `binary`, `host`, `zone`, `status`, `state`, `updated_at`, `disabled_reason`, and on
//!   `cinder-volume` rows `replication_status`, `active_backend_id`, `frozen`;
//! - 3.7 adds `cluster` (the cluster name or null) on every row;
//! - 3.49 adds `backend_state` on `cinder-volume` rows.
//!
//! `updated_at` is Cinder's naive UTC time with six fractional digits and no offset, and shows
//! the newer of the latest heartbeat and the latest administrative change (as Cinder does
//! with `modified_at`); `state` comes from the registry's liveness rule alone.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::microversion::ApiVersion;
use crate::liveness::State;
use crate::wire::{ServiceOut, Status};

/// The binary whose rows carry the replication fields and `backend_state`.
pub const VOLUME_BINARY: &str = "cinder-volume";

/// Body of `GET /v3/os-services`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServicesView {
    /// One row per service.
    pub services: Vec<ServiceRow>,
}

/// One service as Cinder lists it. `Option<Option<_>>` fields are absent (outer `None`) at
/// microversions or on binaries that do not show them, and `null` (inner `None`) when shown
/// without a value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceRow {
    /// The service's binary.
    pub binary: String,
    /// Host it runs on.
    pub host: String,
    /// Availability zone.
    pub zone: String,
    /// `enabled` or `disabled`.
    pub status: Status,
    /// `up` or `down`, from the registry's liveness (forced down is `down`).
    pub state: State,
    /// Naive UTC time of the latest heartbeat or administrative change, or null.
    pub updated_at: Option<String>,
    /// Cluster name (3.7 and later).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<Option<String>>,
    /// Why it was disabled.
    pub disabled_reason: Option<String>,
    /// Replication status (`cinder-volume` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replication_status: Option<String>,
    /// Active replication backend (`cinder-volume` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active_backend_id: Option<Option<String>>,
    /// Frozen (`cinder-volume` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frozen: Option<bool>,
    /// The backend's state (`cinder-volume` only, 3.49 and later): the service's state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend_state: Option<Option<State>>,
}

impl ServiceRow {
    /// The row of `s` at microversion `version`.
    pub fn new(s: &ServiceOut, version: ApiVersion) -> Self {
        let volume = s.binary == VOLUME_BINARY;
        let listed = match (s.updated_at, s.modified_at) {
            (Some(u), Some(m)) => Some(u.max(m)),
            (u, m) => u.or(m),
        };
        Self {
            binary: s.binary.clone(),
            host: s.host.clone(),
            zone: s.availability_zone.clone(),
            status: s.status,
            state: s.state,
            updated_at: listed.map(naive_utc),
            cluster: version
                .at_least(ApiVersion::CLUSTER)
                .then(|| s.cluster_name.clone()),
            disabled_reason: s.disabled_reason.clone(),
            replication_status: volume.then(|| s.replication_status.clone()),
            active_backend_id: volume.then(|| s.active_backend_id.clone()),
            frozen: volume.then_some(s.frozen),
            backend_state: (volume && version.at_least(ApiVersion::BACKEND_STATE))
                .then_some(Some(s.state)),
        }
    }
}

/// The list body of `services` at microversion `version`.
pub fn services_view(services: &[ServiceOut], version: ApiVersion) -> ServicesView {
    ServicesView {
        services: services
            .iter()
            .map(|s| ServiceRow::new(s, version))
            .collect(),
    }
}

/// Cinder's form of a time: naive UTC, exactly six fractional digits, no offset, e.g.
/// `2026-11-28T03:13:19.425419`.
pub fn naive_utc(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(binary: &str) -> ServiceOut {
        let t = DateTime::parse_from_rfc3339("2026-11-28T03:13:19.425419123Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default();
        ServiceOut {
            id: 1,
            host: "node1@lvm".into(),
            binary: binary.into(),
            topic: binary.into(),
            report_count: 3,
            state: State::Up,
            status: Status::Enabled,
            disabled: false,
            disabled_reason: None,
            availability_zone: "nova".into(),
            created_at: t,
            updated_at: Some(t),
            modified_at: None,
            rpc_current_version: None,
            object_current_version: None,
            replication_status: "not-capable".into(),
            frozen: false,
            active_backend_id: None,
            cluster_name: None,
            forced_down: false,
        }
    }

    fn keys(s: &ServiceOut, v: u32) -> Vec<String> {
        let value =
            serde_json::to_value(ServiceRow::new(s, ApiVersion::new(v))).unwrap_or_default();
        let mut keys: Vec<String> = value
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        keys.sort();
        keys
    }

    /// The fields of each microversion, for volume and other binaries.
    #[test]
    fn fields_per_microversion() {
        let base = [
            "binary",
            "disabled_reason",
            "host",
            "state",
            "status",
            "updated_at",
            "zone",
        ];
        let sched = out("cinder-scheduler");
        let vol = out(VOLUME_BINARY);
        let sorted = |extra: &[&str]| {
            let mut k: Vec<String> = base.iter().chain(extra).map(|s| s.to_string()).collect();
            k.sort();
            k
        };
        assert_eq!(keys(&sched, 0), sorted(&[]));
        assert_eq!(keys(&sched, 7), sorted(&["cluster"]));
        assert_eq!(keys(&sched, 71), sorted(&["cluster"]));
        let repl = ["replication_status", "active_backend_id", "frozen"];
        assert_eq!(keys(&vol, 0), sorted(&repl));
        assert_eq!(keys(&vol, 48), sorted(&[&repl[..], &["cluster"]].concat()));
        assert_eq!(
            keys(&vol, 49),
            sorted(&[&repl[..], &["cluster", "backend_state"]].concat())
        );
    }

    /// Times are naive with six digits; the newer of heartbeat and change is listed.
    #[test]
    fn naive_time_shows_the_newer_change() {
        let mut s = out(VOLUME_BINARY);
        let row = ServiceRow::new(&s, ApiVersion::MIN);
        assert_eq!(
            row.updated_at.as_deref(),
            Some("2026-11-28T03:13:19.425419")
        );
        let later = s.created_at + chrono::Duration::seconds(5);
        s.modified_at = Some(later);
        let row = ServiceRow::new(&s, ApiVersion::MIN);
        assert_eq!(
            row.updated_at.as_deref(),
            Some("2026-11-28T03:13:24.425419")
        );
        s.updated_at = None;
        s.modified_at = None;
        assert_eq!(ServiceRow::new(&s, ApiVersion::MIN).updated_at, None);
    }
}
