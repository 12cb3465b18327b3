//! `PUT /v3/os-services/{action}`: Cinder's action bodies, validated as Cinder's JSON schemas
//! do (`cinder/api/schemas/services.py`: known keys only, strings of 1 to 255 characters),
//! translated to the registry's own actions, and Cinder's answers.
//!
//! | action | body | answer |
//! | --- | --- | --- |
//! | `enable`, `disable` | `{"host", "binary"}` (or the old `service` key; `binary` wins) | `{"host", "service", "binary", "status", "disabled"}` |
//! | `disable-log-reason` | `+ "disabled_reason"` | `+ "disabled_reason"` |
//! | `freeze`, `thaw` | `{"host"}` | 200, empty body |
//! | `failover_host`, `failover`, `set-log`, `get-log` | any | 501: nothing to fail over or log |
//!
//! `cluster` is accepted as `null` (Cinder's schemas allow it); a cluster name is refused, as
//! the registry acts on one host's services, not on clusters.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::wire::{check_field, ServiceAction, ServiceActionIn, Status};

/// The actions of `PUT /v3/os-services/{action}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CinderAction {
    /// Enable a service (its disabled reason is kept, as in Cinder).
    Enable,
    /// Disable a service.
    Disable,
    /// Disable a service and record why.
    DisableLogReason,
    /// Freeze every service of a host.
    Freeze,
    /// Thaw every service of a host.
    Thaw,
    /// An action of Cinder's API that has no meaning for a heartbeat registry.
    Unsupported(Unsupported),
}

/// Cinder actions answered with 501.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsupported {
    /// `failover_host` (before 3.26).
    FailoverHost,
    /// `failover` (3.26 and later).
    Failover,
    /// `set-log` (3.32 and later).
    SetLog,
    /// `get-log` (3.32 and later).
    GetLog,
}

impl CinderAction {
    /// Every action, with its path segment.
    pub const ALL: [(CinderAction, &'static str); 9] = [
        (CinderAction::Enable, "enable"),
        (CinderAction::Disable, "disable"),
        (CinderAction::DisableLogReason, "disable-log-reason"),
        (CinderAction::Freeze, "freeze"),
        (CinderAction::Thaw, "thaw"),
        (
            CinderAction::Unsupported(Unsupported::FailoverHost),
            "failover_host",
        ),
        (CinderAction::Unsupported(Unsupported::Failover), "failover"),
        (CinderAction::Unsupported(Unsupported::SetLog), "set-log"),
        (CinderAction::Unsupported(Unsupported::GetLog), "get-log"),
    ];

    /// The action named by a path segment, or a 404 naming the known ones.
    pub fn parse(segment: &str) -> Result<Self, ApiError> {
        Self::ALL
            .iter()
            .find(|(_, name)| *name == segment)
            .map(|(a, _)| *a)
            .ok_or_else(|| {
                let known: Vec<&str> = Self::ALL.iter().map(|(_, n)| *n).collect();
                ApiError::NotFound(format!(
                    "Unknown action '{segment}' on os-services; known actions: {}.",
                    known.join(", ")
                ))
            })
    }

    /// The action's path segment.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(a, _)| *a == self)
            .map_or("", |(_, name)| name)
    }

    /// The keys its body may hold (`additionalProperties: false`).
    fn allowed_keys(self) -> &'static [&'static str] {
        match self {
            CinderAction::Enable | CinderAction::Disable => {
                &["host", "binary", "service", "cluster"]
            }
            CinderAction::DisableLogReason => {
                &["host", "binary", "service", "cluster", "disabled_reason"]
            }
            CinderAction::Freeze | CinderAction::Thaw => &["host", "cluster"],
            CinderAction::Unsupported(_) => &[],
        }
    }
}

/// A validated action: the registry action and body to commit, and what to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionRequest {
    /// The Cinder action.
    pub action: CinderAction,
    /// The registry's action.
    pub native: ServiceAction,
    /// The registry's body for it.
    pub body: ServiceActionIn,
    /// The answer after a successful commit (`None`: 200 with an empty body).
    pub answer: Option<StatusAnswer>,
}

/// Cinder's answer to `enable`, `disable` and `disable-log-reason`; `service` and `binary`
/// echo the request's keys (empty when absent), as Cinder does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusAnswer {
    /// The host.
    pub host: String,
    /// The request's `service` key, or empty.
    pub service: String,
    /// The request's `binary` key, or empty.
    pub binary: String,
    /// `enabled` or `disabled`.
    pub status: Status,
    /// Whether the service is now disabled.
    pub disabled: bool,
    /// The recorded reason (`disable-log-reason` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
}

impl ActionRequest {
    /// Validates `body` for `action` and translates it.
    pub fn parse(action: CinderAction, body: &[u8]) -> Result<Self, ApiError> {
        if let CinderAction::Unsupported(what) = action {
            return Err(unsupported(what));
        }
        let map = body_object(action, body)?;
        let host = required_string(&map, "host")?;
        if let Some(cluster) = nullable_string(&map, "cluster")? {
            return Err(ApiError::BadRequest(format!(
                "Invalid input for field/attribute cluster: '{cluster}'. The registry acts \
                 on the services of one host; send 'host' and leave 'cluster' out or null."
            )));
        }
        let native_body = |binary: Option<String>, reason: Option<String>| ServiceActionIn {
            host: host.clone(),
            binary,
            reason,
        };
        let (native, answer, body) = match action {
            CinderAction::Freeze | CinderAction::Thaw => {
                let native = if action == CinderAction::Freeze {
                    ServiceAction::Freeze
                } else {
                    ServiceAction::Thaw
                };
                (native, None, native_body(None, None))
            }
            _ => {
                let binary = optional_string(&map, "binary")?;
                let service = optional_string(&map, "service")?;
                let key = binary.clone().or_else(|| service.clone()).ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "Invalid input for {}: 'binary' is a required property (or the old \
                         'service' key).",
                        action.name()
                    ))
                })?;
                let reason = if action == CinderAction::DisableLogReason {
                    Some(disabled_reason(&map)?)
                } else {
                    None
                };
                let disabled = action != CinderAction::Enable;
                let answer = StatusAnswer {
                    host: host.clone(),
                    service: service.unwrap_or_default(),
                    binary: binary.unwrap_or_default(),
                    status: if disabled {
                        Status::Disabled
                    } else {
                        Status::Enabled
                    },
                    disabled,
                    disabled_reason: reason.clone(),
                };
                let native = if disabled {
                    ServiceAction::Disable
                } else {
                    ServiceAction::Enable
                };
                (native, Some(answer), native_body(Some(key), reason))
            }
        };
        Ok(Self {
            action,
            native,
            body,
            answer,
        })
    }

    /// The error when the commit found nothing to change: 404 for an unknown service, 400
    /// for a freeze or thaw of a host without services.
    pub fn not_found(&self) -> ApiError {
        match &self.body.binary {
            Some(binary) => ApiError::NotFound(format!(
                "Service {binary} could not be found on host {}.",
                self.body.host
            )),
            None => ApiError::BadRequest(format!(
                "Invalid host: no service found on host {} to {}.",
                self.body.host,
                self.action.name()
            )),
        }
    }
}

/// The 501 of an action a registry cannot perform.
fn unsupported(what: Unsupported) -> ApiError {
    let why = match what {
        Unsupported::FailoverHost | Unsupported::Failover => {
            "this service registry records heartbeats and has no volume backends to fail over; \
             run the failover against a Cinder volume service"
        }
        Unsupported::SetLog | Unsupported::GetLog => {
            "this service registry does not manage the log levels of Cinder services"
        }
    };
    let name = CinderAction::Unsupported(what).name();
    ApiError::NotImplemented(format!("The {name} action is not implemented: {why}."))
}

/// The body as a JSON object holding only the keys `action` accepts.
fn body_object(action: CinderAction, body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("Malformed request body: {e}.")))?;
    let Value::Object(map) = value else {
        return Err(ApiError::BadRequest(format!(
            "Invalid input for {}: the request body must be a JSON object.",
            action.name()
        )));
    };
    let allowed = action.allowed_keys();
    if let Some(extra) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(ApiError::BadRequest(format!(
            "Invalid input for {}: Additional properties are not allowed ('{extra}' was \
             unexpected); allowed: {}.",
            action.name(),
            allowed.join(", ")
        )));
    }
    Ok(map)
}

/// A string field that must be present.
fn required_string(map: &Map<String, Value>, name: &str) -> Result<String, ApiError> {
    optional_string(map, name)?.ok_or_else(|| {
        ApiError::BadRequest(format!(
            "Missing required element '{name}' in request body."
        ))
    })
}

/// A string field of 1 to 255 characters, when present (`null` is refused).
fn optional_string(map: &Map<String, Value>, name: &str) -> Result<Option<String>, ApiError> {
    match map.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => {
            check_field(name, s).map_err(|e| invalid(name, &e.to_string()))?;
            Ok(Some(s.clone()))
        }
        Some(other) => Err(invalid(name, &format!("{other} is not of type 'string'"))),
    }
}

/// A field that may be a string (0 to 255 characters) or null; `Some` when a non-empty
/// string.
fn nullable_string(map: &Map<String, Value>, name: &str) -> Result<Option<String>, ApiError> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => {
            check_field(name, s).map_err(|e| invalid(name, &e.to_string()))?;
            Ok(Some(s.clone()))
        }
        Some(other) => Err(invalid(
            name,
            &format!("{other} is not of type 'string', 'null'"),
        )),
    }
}

/// `disabled_reason`: required, 1 to 255 characters, not blank.
fn disabled_reason(map: &Map<String, Value>) -> Result<String, ApiError> {
    let reason = required_string(map, "disabled_reason")?;
    if reason.trim().is_empty() {
        return Err(invalid("disabled_reason", "it must not be blank"));
    }
    Ok(reason)
}

fn invalid(name: &str, why: &str) -> ApiError {
    ApiError::BadRequest(format!("Invalid input for field/attribute {name}: {why}."))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(action: &str, body: &str) -> Result<ActionRequest, ApiError> {
        ActionRequest::parse(CinderAction::parse(action)?, body.as_bytes())
    }

    /// Cinder's bodies translate to the registry's actions; `binary` wins over `service`.
    #[test]
    fn bodies_translate() -> Result<(), ApiError> {
        let r = parse(
            "disable-log-reason",
            r#"{"host":"h@lvm","binary":"cinder-volume","disabled_reason":"maint"}"#,
        )?;
        assert_eq!(r.native, ServiceAction::Disable);
        assert_eq!(r.body.reason.as_deref(), Some("maint"));
        assert_eq!(
            r.answer
                .as_ref()
                .and_then(|a| a.disabled_reason.clone())
                .as_deref(),
            Some("maint")
        );
        let r = parse("enable", r#"{"host":"h","service":"old","binary":"new"}"#)?;
        assert_eq!(r.native, ServiceAction::Enable);
        assert_eq!(r.body.binary.as_deref(), Some("new"), "binary wins");
        let r = parse("disable", r#"{"host":"h","service":"old","cluster":null}"#)?;
        assert_eq!(
            r.body.binary.as_deref(),
            Some("old"),
            "service stands in for binary"
        );
        let a = r
            .answer
            .clone()
            .ok_or_else(|| ApiError::Internal("no answer".into()))?;
        assert_eq!(
            (a.service.as_str(), a.binary.as_str(), a.disabled),
            ("old", "", true)
        );
        let r = parse("freeze", r#"{"host":"h"}"#)?;
        assert_eq!(
            (r.native, r.body.binary.clone(), r.answer.clone()),
            (ServiceAction::Freeze, None, None)
        );
        Ok(())
    }

    /// Unknown keys, wrong types, bad lengths and missing fields are 400s; unknown actions
    /// 404; failover and log actions 501.
    #[test]
    fn bad_bodies_are_refused() {
        let status = |a: &str, b: &str| parse(a, b).err().map(|e| e.status().as_u16());
        let long = "x".repeat(256);
        assert_eq!(
            status("enable", r#"{"host":"h","binary":"b","colour":1}"#),
            Some(400)
        );
        assert_eq!(status("enable", r#"{"host":"h"}"#), Some(400));
        assert_eq!(status("enable", r#"{"binary":"b"}"#), Some(400));
        assert_eq!(status("enable", r#"{"host":"","binary":"b"}"#), Some(400));
        assert_eq!(status("enable", r#"{"host":5,"binary":"b"}"#), Some(400));
        assert_eq!(
            status("enable", r#"{"host":"h","binary":"b","cluster":"c"}"#),
            Some(400)
        );
        assert_eq!(status("enable", r#"["h"]"#), Some(400));
        assert_eq!(status("enable", "not json"), Some(400));
        assert_eq!(
            status(
                "disable",
                r#"{"host":"h","binary":"b","disabled_reason":"r"}"#
            ),
            Some(400)
        );
        assert_eq!(
            status("disable-log-reason", r#"{"host":"h","binary":"b"}"#),
            Some(400)
        );
        assert_eq!(
            status(
                "disable-log-reason",
                r#"{"host":"h","binary":"b","disabled_reason":"  "}"#
            ),
            Some(400)
        );
        let too_long = format!(r#"{{"host":"h","binary":"b","disabled_reason":"{long}"}}"#);
        assert_eq!(status("disable-log-reason", &too_long), Some(400));
        assert_eq!(status("freeze", r#"{"host":"h","binary":"b"}"#), Some(400));
        assert_eq!(status("reboot", "{}"), Some(404));
        for a in ["failover_host", "failover", "set-log", "get-log"] {
            assert_eq!(status(a, "{}"), Some(501), "{a}");
        }
    }
}
