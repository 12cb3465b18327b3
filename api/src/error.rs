//! Every error the API answers, and the one place that answers it: [`ApiError::status`]
//! decides the status of each kind, and [`ApiError::render`] writes the answer in the shape of
//! the API the request was for ([`Shape`]): the native `{"error": {"code", "message"}}`, or
//! Cinder's fault document `{"<faultName>": {"code", "message"}}` under `/v3`. warp's own
//! rejections become [`ApiError`]s in [`recover`], and answers a leader gave to a forwarded
//! request in [`ApiError::from_status`]; nothing else builds an error response.

use std::convert::Infallible;

use serde_json::json;
use warp::http::header::{ALLOW, RETRY_AFTER};
use warp::http::{HeaderValue, StatusCode};
use warp::reject::Reject;
use warp::{Rejection, Reply};

/// An error answered to an API client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed or a field is invalid (400).
    #[error("{0}")]
    BadRequest(String),
    /// No or unknown credentials (401).
    #[error("{0}")]
    Unauthorized(String),
    /// Credentials that do not allow the request (403).
    #[error("{0}")]
    Forbidden(String),
    /// No such route or record (404).
    #[error("{0}")]
    NotFound(String),
    /// The route exists but not with this method (405, with `Allow` when known).
    #[error("{message}")]
    MethodNotAllowed {
        /// What to tell the client.
        message: String,
        /// The methods the route answers.
        allow: Option<&'static str>,
    },
    /// The requested (micro)version is not served (406).
    #[error("{0}")]
    NotAcceptable(String),
    /// The request conflicts with the current state, e.g. a membership change while another
    /// is in progress (409).
    #[error("{0}")]
    Conflict(String),
    /// The events after the position asked for are no longer kept here (410, with the oldest
    /// position a watch can resume from in `x-registry-events-from`): list again, then
    /// watch from the list's applied index.
    #[error("{message}")]
    Gone {
        /// What to tell the client.
        message: String,
        /// The oldest position a watch can resume from.
        floor: String,
    },
    /// The route needs a `Content-Length` (411).
    #[error("a Content-Length header is required")]
    LengthRequired,
    /// The body is larger than the route accepts (413).
    #[error("request body larger than {limit} bytes")]
    PayloadTooLarge {
        /// The route's limit in bytes.
        limit: u64,
    },
    /// A request between nodes that is not for this node: it comes from another cluster, or
    /// it is meant for another node or another incarnation of this one (421 Misdirected
    /// Request). Its sender treats this node as unreachable.
    #[error("{0}")]
    WrongPeer(String),
    /// A bug or a broken invariant (500).
    #[error("{0}")]
    Internal(String),
    /// Something Cinder does that a heartbeat registry cannot (501).
    #[error("{0}")]
    NotImplemented(String),
    /// No leader, no quorum, or the write was not committed in time; retrying later may
    /// succeed (503).
    #[error("{0}")]
    Unavailable(String),
    /// The node is serving as many requests as it may at once; answered at once with 503
    /// and `Retry-After: 1`, before the request is read.
    #[error("{0}")]
    Overloaded(String),
}

/// The shape of an error answer: that of the API the request was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `{"error": {"code": .., "message": ..}}`: the registry's own API.
    Native,
    /// Cinder's fault document `{"<faultName>": {"code": .., "message": ..}}`: `/v3` and `/`.
    Cinder,
}

impl ApiError {
    /// A 405 for `method` on `resource`, which answers `allow`.
    pub fn method_not_allowed(
        method: &warp::http::Method,
        resource: &str,
        allow: &'static str,
    ) -> Self {
        ApiError::MethodNotAllowed {
            message: format!("The method {method} is not allowed on {resource}; allowed: {allow}."),
            allow: Some(allow),
        }
    }

    /// The HTTP status this error is answered with, in either shape.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Gone { .. } => StatusCode::GONE,
            ApiError::LengthRequired => StatusCode::LENGTH_REQUIRED,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::WrongPeer(_) => StatusCode::MISDIRECTED_REQUEST,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ApiError::Unavailable(_) | ApiError::Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// A short name of the kind of error, for metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::NotAcceptable(_) => "not_acceptable",
            ApiError::Conflict(_) => "conflict",
            ApiError::Gone { .. } => "gone",
            ApiError::LengthRequired => "length_required",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::WrongPeer(_) => "wrong_peer",
            ApiError::Internal(_) => "internal",
            ApiError::NotImplemented(_) => "not_implemented",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Overloaded(_) => "overloaded",
        }
    }

    /// The error a leader's answer to a forwarded request stands for (`status`, and the
    /// message of its error body): the same kind, so it is answered with the same status.
    /// A 413 is a bad request here (the leader refused what this node translated).
    pub fn from_status(status: StatusCode, message: String) -> Self {
        match status {
            StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::BadRequest(message)
            }
            StatusCode::UNAUTHORIZED => ApiError::Unauthorized(message),
            StatusCode::FORBIDDEN => ApiError::Forbidden(message),
            StatusCode::NOT_FOUND => ApiError::NotFound(message),
            StatusCode::CONFLICT => ApiError::Conflict(message),
            StatusCode::SERVICE_UNAVAILABLE => ApiError::Unavailable(message),
            _ => ApiError::Internal(format!("the leader answered {status}: {message}")),
        }
    }

    /// The answer: the status, the body in `shape`, `Allow` on a 405 that knows it and
    /// `Retry-After: 1` on an overload. (Request-id and version headers are the routes'.)
    pub fn render(self, shape: Shape) -> warp::reply::Response {
        let status = self.status();
        let extra = match &self {
            ApiError::MethodNotAllowed { allow: Some(a), .. } => Some((ALLOW, *a)),
            ApiError::Overloaded(_) => Some((RETRY_AFTER, "1")),
            _ => None,
        };
        let mut resp =
            warp::reply::with_status(warp::reply::json(&self.body(shape)), status).into_response();
        if let Some((name, value)) = extra {
            resp.headers_mut()
                .insert(name, HeaderValue::from_static(value));
        }
        if let ApiError::Gone { floor, .. } = &self {
            if let Ok(v) = HeaderValue::from_str(floor) {
                resp.headers_mut()
                    .insert(registry_client::events::EVENTS_FROM_HEADER, v);
            }
        }
        resp
    }

    /// The answer's body in `shape`.
    pub fn body(&self, shape: Shape) -> serde_json::Value {
        let status = self.status();
        let detail = json!({"code": status.as_u16(), "message": self.to_string()});
        match shape {
            Shape::Native => json!({ "error": detail }),
            Shape::Cinder => json!({ crate::cinder::fault::fault_name(status): detail }),
        }
    }

    /// The error as the registry's own API answers it.
    pub fn into_reply(self) -> warp::reply::Response {
        self.render(Shape::Native)
    }

    /// The error as Cinder's API answers it.
    pub fn into_fault(self) -> warp::reply::Response {
        self.render(Shape::Cinder)
    }
}

impl Reject for ApiError {}

pub use registry_client::wire::{ErrorBody, ErrorDetail};

/// The error a rejection stands for: warp's own rejections (no route matched, a bad query,
/// a wrong method) as [`ApiError`]s.
pub fn rejected(rejection: &Rejection) -> ApiError {
    if let Some(e) = rejection.find::<ApiError>() {
        e.clone()
    } else if rejection.is_not_found() {
        ApiError::NotFound("no such route".into())
    } else if rejection.find::<warp::reject::PayloadTooLarge>().is_some() {
        ApiError::BadRequest("request body too large for this route".into())
    } else if let Some(e) = rejection.find::<warp::reject::InvalidQuery>() {
        ApiError::BadRequest(format!("invalid query string: {e}"))
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        ApiError::MethodNotAllowed {
            message: "method not allowed on this route".into(),
            allow: None,
        }
    } else if rejection.find::<warp::reject::LengthRequired>().is_some() {
        ApiError::LengthRequired
    } else if let Some(e) = rejection.find::<warp::reject::InvalidHeader>() {
        ApiError::BadRequest(e.to_string())
    } else if let Some(e) = rejection.find::<warp::reject::MissingHeader>() {
        ApiError::BadRequest(e.to_string())
    } else {
        tracing::warn!(?rejection, "unhandled rejection");
        ApiError::Internal(format!("unhandled rejection: {rejection:?}"))
    }
}

/// Renders every rejection that reached the top of the routes as a native error (the
/// Cinder routes never reject: they answer their own faults).
pub async fn recover(rejection: Rejection) -> Result<warp::reply::Response, Infallible> {
    Ok(rejected(&rejection).into_reply())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each kind has one status, the same in both shapes; the body is the shape's.
    #[test]
    fn one_status_per_kind_in_both_shapes() {
        let cases = [
            (ApiError::BadRequest("b".into()), 400, "badRequest"),
            (ApiError::Unauthorized("u".into()), 401, "unauthorized"),
            (ApiError::NotFound("n".into()), 404, "itemNotFound"),
            (
                ApiError::method_not_allowed(&warp::http::Method::PATCH, "/x", "GET"),
                405,
                "badMethod",
            ),
            (ApiError::NotAcceptable("v".into()), 406, "computeFault"),
            (ApiError::Conflict("c".into()), 409, "conflictingRequest"),
            (ApiError::PayloadTooLarge { limit: 1 }, 413, "overLimit"),
            (
                ApiError::Gone {
                    message: "g".into(),
                    floor: "7".into(),
                },
                410,
                "computeFault",
            ),
            (ApiError::Internal("i".into()), 500, "computeFault"),
            (ApiError::NotImplemented("x".into()), 501, "notImplemented"),
            (ApiError::Unavailable("q".into()), 503, "serviceUnavailable"),
            (ApiError::Overloaded("o".into()), 503, "serviceUnavailable"),
        ];
        for (err, code, fault) in cases {
            let message = err.to_string();
            let overloaded = matches!(err, ApiError::Overloaded(_));
            for (shape, key) in [(Shape::Native, "error"), (Shape::Cinder, fault)] {
                let resp = err.clone().render(shape);
                assert_eq!(resp.status().as_u16(), code, "{err:?} as {shape:?}");
                assert_eq!(
                    resp.headers().get(RETRY_AFTER).is_some(),
                    overloaded,
                    "Retry-After only on an overload"
                );
                assert_eq!(
                    err.body(shape),
                    json!({ key: {"code": code, "message": message} }),
                    "{shape:?}"
                );
            }
        }
    }
}
