//! Errors of the Cinder API and their wire form, Cinder's fault document
//! `{"<faultName>": {"code": N, "message": "..."}}`.
//!
//! The fault names are Cinder's (`cinder/api/openstack/wsgi.py`, `Fault._fault_names`):
//! `badRequest` 400, `itemNotFound` 404, `badMethod` 405, `conflictingRequest` 409,
//! `overLimit` 413, `notImplemented` 501, `serviceUnavailable` 503, and `computeFault` for
//! every other code (406, 500).

use serde_json::json;
use warp::http::header::{ALLOW, RETRY_AFTER};
use warp::http::{HeaderValue, Method, StatusCode};
use warp::Reply;

use crate::error::ApiError;

/// An error answered to a Cinder client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CinderError {
    /// Malformed request, invalid body, bad microversion header (400 `badRequest`).
    #[error("{0}")]
    BadRequest(String),
    /// No or unknown token (401 `unauthorized`).
    #[error("{0}")]
    Unauthorized(String),
    /// A token whose role does not allow the request (403 `forbidden`).
    #[error("{0}")]
    Forbidden(String),
    /// No such resource or service (404 `itemNotFound`).
    #[error("{0}")]
    NotFound(String),
    /// The resource exists but not with this method (405 `badMethod`).
    #[error("The method {method} is not allowed on {resource}; allowed: {allow}.")]
    MethodNotAllowed {
        /// The method the client used.
        method: Method,
        /// What the path names.
        resource: String,
        /// The methods the resource answers, for the `Allow` header.
        allow: &'static str,
    },
    /// The request conflicts with the registry's current state (409 `conflictingRequest`).
    #[error("{0}")]
    Conflict(String),
    /// The requested microversion is not served (406 `computeFault`).
    #[error("{0}")]
    NotAcceptable(String),
    /// The body is larger than accepted (413 `overLimit`).
    #[error("Request body larger than {limit} bytes.")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// An action Cinder has but a heartbeat registry cannot perform (501 `notImplemented`).
    #[error("{0}")]
    NotImplemented(String),
    /// No leader or no quorum; retrying later may succeed (503 `serviceUnavailable`).
    #[error("{0}")]
    Unavailable(String),
    /// The node serves its maximum of concurrent requests (503 `serviceUnavailable` with
    /// `Retry-After: 1`).
    #[error("{0}")]
    Overloaded(String),
    /// A bug or a broken invariant (500 `computeFault`).
    #[error("{0}")]
    Internal(String),
}

impl CinderError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            CinderError::BadRequest(_) => StatusCode::BAD_REQUEST,
            CinderError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            CinderError::Forbidden(_) => StatusCode::FORBIDDEN,
            CinderError::NotFound(_) => StatusCode::NOT_FOUND,
            CinderError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            CinderError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            CinderError::Conflict(_) => StatusCode::CONFLICT,
            CinderError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            CinderError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            CinderError::Unavailable(_) | CinderError::Overloaded(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            CinderError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The fault name Cinder gives this status.
    pub fn fault_name(&self) -> &'static str {
        fault_name(self.status())
    }

    /// The error for a status and message answered by another node's native API (a request
    /// this node forwarded to the leader).
    pub fn from_status(status: StatusCode, message: String) -> Self {
        match status {
            StatusCode::BAD_REQUEST => CinderError::BadRequest(message),
            StatusCode::UNAUTHORIZED => CinderError::Unauthorized(message),
            StatusCode::FORBIDDEN => CinderError::Forbidden(message),
            StatusCode::NOT_FOUND => CinderError::NotFound(message),
            StatusCode::CONFLICT => CinderError::Conflict(message),
            StatusCode::PAYLOAD_TOO_LARGE => CinderError::BadRequest(message),
            StatusCode::SERVICE_UNAVAILABLE => CinderError::Unavailable(message),
            _ => CinderError::Internal(format!("the leader answered {status}: {message}")),
        }
    }

    /// The fault as a response: status, fault document, `Allow` for a 405 and
    /// `Retry-After` for an overload. Request-id and version headers are added by the route.
    pub fn into_response(self) -> warp::reply::Response {
        let status = self.status();
        let body = json!({
            self.fault_name(): {
                "code": status.as_u16(),
                "message": self.to_string(),
            }
        });
        let extra = match &self {
            CinderError::MethodNotAllowed { allow, .. } => Some((ALLOW, *allow)),
            CinderError::Overloaded(_) => Some((RETRY_AFTER, "1")),
            _ => None,
        };
        let mut resp = warp::reply::with_status(warp::reply::json(&body), status).into_response();
        if let Some((name, value)) = extra {
            resp.headers_mut()
                .insert(name, HeaderValue::from_static(value));
        }
        resp
    }
}

impl From<ApiError> for CinderError {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::BadRequest(m) => CinderError::BadRequest(m),
            ApiError::Unauthorized(m) => CinderError::Unauthorized(m),
            ApiError::Forbidden(m) => CinderError::Forbidden(m),
            ApiError::NotFound(m) => CinderError::NotFound(m),
            ApiError::Conflict(m) | ApiError::WrongPeer(m) => CinderError::Conflict(m),
            ApiError::PayloadTooLarge { limit } => CinderError::PayloadTooLarge { limit },
            ApiError::Unavailable(m) => CinderError::Unavailable(m),
            ApiError::Overloaded(m) => CinderError::Overloaded(m),
            ApiError::Internal(m) => CinderError::Internal(m),
        }
    }
}

/// Cinder's fault name for an HTTP status.
pub fn fault_name(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "badRequest",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "itemNotFound",
        405 => "badMethod",
        409 => "conflictingRequest",
        413 => "overLimit",
        415 => "badMediaType",
        501 => "notImplemented",
        503 => "serviceUnavailable",
        _ => "computeFault",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each error renders as `{"<faultName>": {"code", "message"}}` with its status.
    #[test]
    fn faults_use_cinder_names() {
        let cases = [
            (CinderError::BadRequest("b".into()), 400, "badRequest"),
            (CinderError::NotFound("n".into()), 404, "itemNotFound"),
            (CinderError::NotAcceptable("v".into()), 406, "computeFault"),
            (CinderError::Conflict("c".into()), 409, "conflictingRequest"),
            (CinderError::PayloadTooLarge { limit: 1 }, 413, "overLimit"),
            (
                CinderError::NotImplemented("x".into()),
                501,
                "notImplemented",
            ),
            (
                CinderError::Unavailable("q".into()),
                503,
                "serviceUnavailable",
            ),
            (CinderError::Internal("i".into()), 500, "computeFault"),
        ];
        for (err, code, name) in cases {
            assert_eq!(err.status().as_u16(), code);
            assert_eq!(err.fault_name(), name, "fault name of {code}");
        }
    }
}
