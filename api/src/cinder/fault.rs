//! Cinder's fault document `{"<faultName>": {"code": N, "message": "..."}}`: the names it
//! gives each status. The errors themselves, and their statuses, are the API's one
//! [`crate::error::ApiError`], rendered in this shape by [`crate::error::ApiError::render`].
//!
//! The fault names are Cinder's (`cinder/api/openstack/wsgi.py`, `Fault._fault_names`):
//! `badRequest` 400, `itemNotFound` 404, `badMethod` 405, `conflictingRequest` 409,
//! `overLimit` 413, `notImplemented` 501, `serviceUnavailable` 503, and `computeFault` for
//! every other code (406, 500).

use warp::http::StatusCode;

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
