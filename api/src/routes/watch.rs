//! Watching and zones: `GET /v1/events` (Server-Sent Events, see [`crate::watch`]),
//! `GET /v1/zones`, and the cluster-wide liveness settings, `GET` and `PUT /v1/settings`.

use bytes::Bytes;
use warp::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use warp::http::{HeaderValue, Method};
use warp::{Filter, Rejection, Reply};

use super::body::{self, GatedBody};
use super::route::{gate, name, Access, Gate, Route};
use super::{parse_query, raw_query, with_app, MAX_BODY_BYTES};
use crate::app::RegistryApp;
use crate::auth::Role;
use crate::error::ApiError;
use crate::read::SERVED_BY_HEADER;
use crate::watch::{self, EventFilter, WatchQuery};
use crate::wire::{SettingsIn, SettingsOut};
use crate::write::Written;

const EVENTS: Route = Route::public("/v1/events", Access::Client(Role::Reader));
const ZONES: Route = Route::public("/v1/zones", Access::Client(Role::Reader));
const SETTINGS: Route = Route::public("/v1/settings", Access::Client(Role::Reader));
const SETTINGS_PUT: Route = Route::public("/v1/settings", Access::Client(Role::Admin));

pub(super) fn routes(
    app: RegistryApp,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    events(app.clone())
        .or(zones(app.clone()))
        .unify()
        .or(get_settings(app.clone()))
        .unify()
        .or(put_settings(app))
        .unify()
}

/// `GET /v1/events[?since=POS][&host=H][&binary=B][&zone=Z][&kinds=K1,K2]`, resuming after
/// `Last-Event-ID` when sent.
fn events(
    app: RegistryApp,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    warp::path!("v1" / "events")
        .and(name(&EVENTS))
        .and(warp::get())
        .and(gate(&app, &EVENTS))
        .and(raw_query())
        .and(warp::header::optional::<String>("last-event-id"))
        .and(with_app(app))
        .map(
            |gate: Gate, raw: String, last: Option<String>, app: RegistryApp| {
                watch_events(gate, &raw, last.as_deref(), &app).unwrap_or_else(ApiError::into_reply)
            },
        )
}

fn watch_events(
    gate: Gate,
    raw: &str,
    last_event_id: Option<&str>,
    app: &RegistryApp,
) -> Result<warp::reply::Response, ApiError> {
    // A stream is no request in flight: it does not keep a place under the node's bound on
    // concurrent requests, but one under the bound on streams.
    drop(gate?.permit);
    let query: WatchQuery = parse_query(raw)?;
    let filter = EventFilter::of(&query)?;
    let shared = app.shared();
    let log = shared.view.events().clone();
    let pos = watch::start(&log, query.since.as_deref(), last_event_id)?;
    let body = watch::stream(
        &shared.watchers,
        log,
        pos,
        filter,
        shared.settings.events_keepalive,
        shared.streams_stop.clone(),
    )?;
    let mut resp = warp::reply::stream(body).into_response();
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    h.insert(SERVED_BY_HEADER, HeaderValue::from(shared.id));
    Ok(resp)
}

/// `GET /v1/zones`: every zone's counts and disruption state, and the suspect flag, as of
/// this node's applied index.
fn zones(
    app: RegistryApp,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    warp::path!("v1" / "zones")
        .and(name(&ZONES))
        .and(warp::get())
        .and(gate(&app, &ZONES))
        .and(with_app(app))
        .map(|gate: Gate, app: RegistryApp| match gate {
            Ok(_) => {
                let out = app.shared().view.read(watch::convert::zones_out);
                warp::reply::json(&out).into_response()
            }
            Err(e) => e.into_reply(),
        })
}

/// `GET /v1/settings`: the liveness settings in force, and this node's file.
fn get_settings(
    app: RegistryApp,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    warp::path!("v1" / "settings")
        .and(name(&SETTINGS))
        .and(warp::get())
        .and(gate(&app, &SETTINGS))
        .and(with_app(app))
        .map(|gate: Gate, app: RegistryApp| match gate {
            Ok(_) => warp::reply::json(&settings_out(&app)).into_response(),
            Err(e) => e.into_reply(),
        })
}

fn settings_out(app: &RegistryApp) -> SettingsOut {
    let shared = app.shared();
    let file = shared.file_settings();
    let (in_force, from_log) = shared.settings_in_force();
    SettingsOut {
        service_down_time: in_force.service_down_time().as_secs_f64(),
        unhealthy_zone_threshold: in_force.unhealthy_zone_threshold(),
        source: if from_log { "log" } else { "file" }.to_string(),
        file: SettingsIn {
            service_down_time: Some(file.service_down_time().as_secs_f64()),
            unhealthy_zone_threshold: Some(file.unhealthy_zone_threshold()),
        },
    }
}

/// `PUT /v1/settings` with `{"service_down_time": SECONDS, "unhealthy_zone_threshold": F}`
/// (either may be left out): changes them for the whole cluster, from the entry on.
fn put_settings(
    app: RegistryApp,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    warp::path!("v1" / "settings")
        .and(name(&SETTINGS_PUT))
        .and(warp::put())
        .and(body::gated(&app, &SETTINGS_PUT, MAX_BODY_BYTES))
        .and(with_app(app))
        .then(|gated: GatedBody, app: RegistryApp| async move {
            let res = match gated {
                Ok((pass, body)) => change_settings(&pass.caller, body, &app).await,
                Err(e) => Err(e),
            };
            res.unwrap_or_else(ApiError::into_reply)
        })
}

async fn change_settings(
    caller: &crate::audit::Caller,
    body: Bytes,
    app: &RegistryApp,
) -> Result<warp::reply::Response, ApiError> {
    let input: SettingsIn = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("invalid settings body: {e}")))?;
    let shared = app.shared();
    let (current, _) = shared.settings_in_force();
    let sdt = match input.service_down_time {
        None => current.service_down_time(),
        Some(s) if s.is_finite() && s > 0.0 && s <= 86_400.0 * 365.0 => {
            std::time::Duration::from_secs_f64(s)
        }
        Some(s) => {
            return Err(ApiError::BadRequest(format!(
                "service_down_time must be more than 0 and at most a year, in seconds (got {s})"
            )))
        }
    };
    let threshold = match input.unhealthy_zone_threshold {
        None => current.unhealthy_zone_threshold(),
        Some(t) if (0.0..=1.0).contains(&t) => t,
        Some(t) => {
            return Err(ApiError::BadRequest(format!(
                "unhealthy_zone_threshold must be 0 to 1 (got {t})"
            )))
        }
    };
    // Only a leader knows which formats its peers read (from their RPC answers); another
    // node forwards the request, and the leader checks it again.
    let leads = shared.raft.metrics().borrow().state == openraft::ServerState::Leader;
    if leads && shared.common_format() < 3 {
        return Err(ApiError::Conflict(
            "a member of the group reads only an older storage format, which cannot decode \
             settings in the log: upgrade every node first"
                .into(),
        ));
    }
    let settings = registry_storage::LivenessSettings::new(sdt, threshold);
    let cmd = move |at| registry_storage::Command::Settings { at, settings };
    match app
        .write()
        .command(cmd, (Method::PUT, "/v1/settings"), body, caller)
        .await?
    {
        Written::Forwarded(resp) => Ok(resp),
        Written::Here(_) | Written::NotFound => {
            Ok(warp::reply::json(&settings_out(app)).into_response())
        }
    }
}
