//! The public API's wire types ([`registry_client::wire`], re-exported here) as a node takes
//! and answers them: heartbeat bodies parsed and checked into the storage model, records in
//! their listed form, actions turned into commands. Every string field passes
//! [`check_field`]; a refusal is a 400 that says which field and why.

use chrono::{DateTime, Utc};
use registry_client::ClientError;
use registry_storage::{Heartbeat, ServiceRecord};

pub use registry_client::wire::*;

use crate::error::ApiError;

/// [`registry_client::wire::check_field`], refusing with a 400.
pub fn check_field(name: &str, value: &str) -> Result<(), ApiError> {
    registry_client::wire::check_field(name, value).map_err(bad_request)
}

fn bad_request(e: ClientError) -> ApiError {
    match e {
        ClientError::Invalid(m) => ApiError::BadRequest(m),
        other => ApiError::BadRequest(other.to_string()),
    }
}

/// A heartbeat as a reporter sent it, checked, in the storage model.
pub fn to_heartbeat(hb: HeartbeatIn) -> Result<Heartbeat, ApiError> {
    hb.check().map_err(bad_request)?;
    Ok(Heartbeat {
        host: hb.host,
        binary: hb.binary,
        topic: hb.topic,
        availability_zone: hb.availability_zone,
        cluster_name: hb.cluster_name,
        rpc_current_version: hb.rpc_current_version,
        object_current_version: hb.object_current_version,
    })
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
    items.into_iter().map(to_heartbeat).collect()
}

/// The listed form of a record with its computed state.
pub fn service_out(r: &ServiceRecord, state: State) -> ServiceOut {
    ServiceOut {
        id: r.id,
        host: r.host.to_string(),
        binary: r.binary.to_string(),
        topic: r.topic.to_string(),
        report_count: r.report_count,
        state,
        status: if r.disabled {
            Status::Disabled
        } else {
            Status::Enabled
        },
        disabled: r.disabled,
        disabled_reason: r.disabled_reason.clone(),
        availability_zone: r.availability_zone.to_string(),
        created_at: r.created_at,
        updated_at: r.updated_at,
        modified_at: r.modified_at,
        modified_by: r.modified_by.clone(),
        rpc_current_version: r.rpc_current_version.as_deref().map(str::to_string),
        object_current_version: r.object_current_version.as_deref().map(str::to_string),
        replication_status: r.replication_status.to_string(),
        frozen: r.frozen,
        active_backend_id: r.active_backend_id.as_deref().map(str::to_string),
        cluster_name: r.cluster_name.as_deref().map(str::to_string),
        forced_down: r.forced_down,
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
