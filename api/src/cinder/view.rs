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
//!
//! Rows are written by hand (see [`crate::json`]) from borrowed fields: from the shared
//! records when this node serves the list, from the leader's native answer when it was
//! forwarded there.

use chrono::{DateTime, Utc};
use registry_storage::ServiceRecord;
use tokio::sync::OwnedSemaphorePermit;

use super::microversion::ApiVersion;
use crate::json::list::list_response;
use crate::json::service::state_str;
use crate::json::time::{naive_utc_chrono, push_naive_utc};
use crate::json::{push_bool, push_opt_str, push_str};
use crate::liveness::State;
use crate::read::listing::Listing;
use crate::wire::{ServiceOut, Status};

/// The binary whose rows carry the replication fields and `backend_state`.
pub const VOLUME_BINARY: &str = "cinder-volume";

/// What a Cinder row shows of one service, borrowed from a record or a native answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowSource<'a> {
    /// The service's binary.
    pub binary: &'a str,
    /// Host it runs on.
    pub host: &'a str,
    /// Availability zone.
    pub zone: &'a str,
    /// `enabled` or `disabled`.
    pub status: Status,
    /// `up` or `down`, from the registry's liveness (forced down is `down`).
    pub state: State,
    /// Latest heartbeat or administrative change, whichever is newer.
    pub updated_at: Option<DateTime<Utc>>,
    /// Cluster name.
    pub cluster_name: Option<&'a str>,
    /// Why it was disabled.
    pub disabled_reason: Option<&'a str>,
    /// Replication status.
    pub replication_status: &'a str,
    /// Active replication backend.
    pub active_backend_id: Option<&'a str>,
    /// Frozen.
    pub frozen: bool,
}

impl<'a> RowSource<'a> {
    /// The row of a record with its computed state.
    pub fn of_record(r: &'a ServiceRecord, state: State) -> Self {
        Self {
            binary: &r.binary,
            host: &r.host,
            zone: &r.availability_zone,
            status: if r.disabled {
                Status::Disabled
            } else {
                Status::Enabled
            },
            state,
            updated_at: r.listed_updated_at(),
            cluster_name: r.cluster_name.as_deref(),
            disabled_reason: r.disabled_reason.as_deref(),
            replication_status: &r.replication_status,
            active_backend_id: r.active_backend_id.as_deref(),
            frozen: r.frozen,
        }
    }

    /// The row of a service as the native API listed it.
    pub fn of_out(s: &'a ServiceOut) -> Self {
        Self {
            binary: &s.binary,
            host: &s.host,
            zone: &s.availability_zone,
            status: s.status,
            state: s.state,
            updated_at: match (s.updated_at, s.modified_at) {
                (Some(u), Some(m)) => Some(u.max(m)),
                (u, m) => u.or(m),
            },
            cluster_name: s.cluster_name.as_deref(),
            disabled_reason: s.disabled_reason.as_deref(),
            replication_status: &s.replication_status,
            active_backend_id: s.active_backend_id.as_deref(),
            frozen: s.frozen,
        }
    }
}

/// Appends the row of `s` at microversion `version`.
pub fn push_row(buf: &mut Vec<u8>, s: &RowSource<'_>, version: ApiVersion) {
    let volume = s.binary == VOLUME_BINARY;
    buf.extend_from_slice(b"{\"binary\":");
    push_str(buf, s.binary);
    buf.extend_from_slice(b",\"host\":");
    push_str(buf, s.host);
    buf.extend_from_slice(b",\"zone\":");
    push_str(buf, s.zone);
    buf.extend_from_slice(match s.status {
        Status::Enabled => b",\"status\":\"enabled\",\"state\":",
        Status::Disabled => b",\"status\":\"disabled\",\"state\":",
    });
    buf.extend_from_slice(state_str(s.state));
    buf.extend_from_slice(b",\"updated_at\":");
    match &s.updated_at {
        Some(t) => push_naive_utc(buf, t),
        None => buf.extend_from_slice(b"null"),
    }
    if version.at_least(ApiVersion::CLUSTER) {
        buf.extend_from_slice(b",\"cluster\":");
        push_opt_str(buf, s.cluster_name);
    }
    buf.extend_from_slice(b",\"disabled_reason\":");
    push_opt_str(buf, s.disabled_reason);
    if volume {
        buf.extend_from_slice(b",\"replication_status\":");
        push_str(buf, s.replication_status);
        buf.extend_from_slice(b",\"active_backend_id\":");
        push_opt_str(buf, s.active_backend_id);
        buf.extend_from_slice(b",\"frozen\":");
        push_bool(buf, s.frozen);
        if version.at_least(ApiVersion::BACKEND_STATE) {
            buf.extend_from_slice(b",\"backend_state\":");
            buf.extend_from_slice(state_str(s.state));
        }
    }
    buf.push(b'}');
}

/// The list answer of the records of `listing` at microversion `version`, which keeps
/// `permit` while it is written (see [`list_response`]).
pub fn listing_response(
    listing: Listing,
    version: ApiVersion,
    permit: Option<OwnedSemaphorePermit>,
) -> warp::reply::Response {
    let rule = listing.liveness.at(listing.now);
    list_response(
        listing.records,
        move |buf, r| push_row(buf, &RowSource::of_record(r, rule.state(r)), version),
        permit,
    )
}

/// The list answer of services from a native answer at microversion `version`.
pub fn services_response(
    services: Vec<ServiceOut>,
    version: ApiVersion,
    permit: Option<OwnedSemaphorePermit>,
) -> warp::reply::Response {
    list_response(
        services,
        move |buf, s| push_row(buf, &RowSource::of_out(s), version),
        permit,
    )
}

/// Cinder's form of a time: naive UTC, exactly six fractional digits, no offset, e.g.
/// `2026-11-28T03:13:19.425419`.
pub fn naive_utc(t: DateTime<Utc>) -> String {
    naive_utc_chrono(&t)
}

#[cfg(test)]
mod tests;
