//! Errors the API answers with, and the one place that maps them (and warp's rejections) to
//! HTTP status codes and JSON bodies `{"error": {"code": .., "message": ..}}`.

use std::convert::Infallible;

use warp::http::header::RETRY_AFTER;
use warp::http::{HeaderValue, StatusCode};
use warp::reject::Reject;
use warp::{Rejection, Reply};

/// An error answered to an API client.
#[derive(Debug, Clone, thiserror::Error)]
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
    /// The request conflicts with the current state, e.g. a membership change while another
    /// is in progress (409).
    #[error("{0}")]
    Conflict(String),
    /// The body is larger than the route accepts (413).
    #[error("request body larger than {limit} bytes")]
    PayloadTooLarge {
        /// The route's limit in bytes.
        limit: u64,
    },
    /// No leader, no quorum, or the write was not committed in time; retrying later may
    /// succeed (503).
    #[error("{0}")]
    Unavailable(String),
    /// The node is serving as many requests as it may at once; answered at once with 503
    /// and `Retry-After: 1`, before the request is read.
    #[error("{0}")]
    Overloaded(String),
    /// A request between nodes that is not for this node: it comes from another cluster, or
    /// it is meant for another node or another incarnation of this one (421 Misdirected
    /// Request). Its sender treats this node as unreachable.
    #[error("{0}")]
    WrongPeer(String),
    /// A bug or a broken invariant (500).
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unavailable(_) | ApiError::Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::WrongPeer(_) => StatusCode::MISDIRECTED_REQUEST,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A short name of the kind of error, for metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Overloaded(_) => "overloaded",
            ApiError::WrongPeer(_) => "wrong_peer",
            ApiError::Internal(_) => "internal",
        }
    }

    /// The error as a JSON reply; an [`ApiError::Overloaded`] also carries `Retry-After: 1`.
    pub fn into_reply(self) -> warp::reply::Response {
        let status = self.status();
        let overloaded = matches!(self, ApiError::Overloaded(_));
        let body = ErrorBody {
            error: ErrorDetail {
                code: status.as_u16(),
                message: self.to_string(),
            },
        };
        let mut resp = warp::reply::with_status(warp::reply::json(&body), status).into_response();
        if overloaded {
            resp.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

impl Reject for ApiError {}

pub use registry_client::wire::{ErrorBody, ErrorDetail};

/// Renders every rejection as a JSON error: the single place where warp's own rejections
/// become [`ApiError`]s.
pub async fn recover(rejection: Rejection) -> Result<warp::reply::Response, Infallible> {
    let err = if let Some(e) = rejection.find::<ApiError>() {
        e.clone()
    } else if rejection.is_not_found() {
        ApiError::NotFound("no such route".into())
    } else if rejection.find::<warp::reject::PayloadTooLarge>().is_some() {
        return Ok(error_reply(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body too large for this route",
        ));
    } else if let Some(e) = rejection.find::<warp::reject::InvalidQuery>() {
        ApiError::BadRequest(format!("invalid query string: {e}"))
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        return Ok(error_reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed on this route",
        ));
    } else if rejection.find::<warp::reject::LengthRequired>().is_some() {
        return Ok(error_reply(
            StatusCode::LENGTH_REQUIRED,
            "a Content-Length header is required",
        ));
    } else if let Some(e) = rejection.find::<warp::reject::InvalidHeader>() {
        ApiError::BadRequest(e.to_string())
    } else if let Some(e) = rejection.find::<warp::reject::MissingHeader>() {
        ApiError::BadRequest(e.to_string())
    } else {
        tracing::warn!(?rejection, "unhandled rejection");
        ApiError::Internal(format!("unhandled rejection: {rejection:?}"))
    };
    Ok(err.into_reply())
}

fn error_reply(status: StatusCode, message: &str) -> warp::reply::Response {
    let body = ErrorBody {
        error: ErrorDetail {
            code: status.as_u16(),
            message: message.into(),
        },
    };
    warp::reply::with_status(warp::reply::json(&body), status).into_response()
}
