//! Administrative actions: `PUT /v1/services/{action}`.

use bytes::Bytes;
use warp::http::Method;
use warp::{Filter, Rejection};

use super::body::{self, GatedBody};
use super::route::{name, Access, Route};
use super::{with_app, MAX_BODY_BYTES};
use crate::app::RegistryApp;
use crate::audit::Caller;
use crate::auth::Role;
use crate::error::ApiError;
use crate::wire::{action_command, ServiceAction, ServiceActionIn};
use crate::write::Written;

const ACTION: Route = Route::public("/v1/services/{action}", Access::Client(Role::Admin));

/// `PUT /v1/services/{disable|enable|force-down|clear-force-down|remove|freeze|thaw}` with
/// body `{"host", "binary"?, "reason"?}`; answers the changed records, or 404 when the
/// service (or, for freeze and thaw, any service of the host) does not exist.
pub(super) fn routes(
    app: RegistryApp,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    warp::path!("v1" / "services" / String)
        .and(name(&ACTION))
        .and(warp::put())
        .and(body::gated(&app, &ACTION, MAX_BODY_BYTES))
        .and(with_app(app))
        .then(
            |segment: String, gated: GatedBody, app: RegistryApp| async move {
                let res = match gated {
                    Ok((pass, body)) => act(&segment, &pass.caller, body, &app).await,
                    Err(e) => Err(e),
                };
                res.unwrap_or_else(ApiError::into_reply)
            },
        )
}

async fn act(
    segment: &str,
    caller: &Caller,
    body: Bytes,
    app: &RegistryApp,
) -> Result<warp::reply::Response, ApiError> {
    let action = ServiceAction::parse(segment).ok_or_else(|| {
        let known: Vec<&str> = ServiceAction::ALL.iter().map(|(_, n)| *n).collect();
        ApiError::NotFound(format!(
            "unknown action '{segment}'; known: {}",
            known.join(", ")
        ))
    })?;
    let input: ServiceActionIn = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("invalid {} body: {e}", action.name())))?;
    let cmd = action_command(action, &input)?;
    let path = format!("/v1/services/{}", action.name());
    match app
        .write()
        .command(cmd, (Method::PUT, &path), body, caller)
        .await?
    {
        Written::Here(records) => Ok(app.write().written_response(&records)),
        Written::Forwarded(resp) => Ok(resp),
        Written::NotFound => Err(ApiError::NotFound(match &input.binary {
            Some(b) if !action.is_per_host() => {
                format!("Service {b} could not be found on host {}.", input.host)
            }
            _ => format!("Host {} has no services.", input.host),
        })),
    }
}
