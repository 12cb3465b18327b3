//! The public API: heartbeats in, services and cluster state out; and the probes, `/health`
//! (liveness), `/ready` (readiness) and `/metrics` (Prometheus).

use bytes::Bytes;
use warp::http::header::CONTENT_TYPE;
use warp::http::{HeaderMap, HeaderValue, StatusCode};
use warp::{Filter, Rejection, Reply};

use super::{raw_query, with_app, MAX_BODY_BYTES};
use crate::app::RegistryApp;
use crate::auth::Role;
use crate::error::ApiError;
use crate::forward::FORWARDED_HEADER;
use crate::read::ReadAt;
use crate::server::Admission;
use crate::wire::{parse_heartbeats, ServicesQuery};
use crate::write::Written;

pub(super) fn routes(
    app: RegistryApp,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    heartbeats(app.clone())
        .or(services(app.clone()))
        .unify()
        .or(cluster(app.clone()))
        .unify()
        .or(health(app.clone()))
        .unify()
        .or(ready(app.clone()))
        .unify()
        .or(metrics(app))
        .unify()
}

/// `POST /v1/heartbeats`: one heartbeat object or an array of them; answered after commit.
fn heartbeats(
    app: RegistryApp,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    warp::path!("v1" / "heartbeats")
        .and(warp::post())
        .and(warp::body::content_length_limit(MAX_BODY_BYTES))
        .and(warp::header::optional::<String>(FORWARDED_HEADER))
        .and(warp::header::headers_cloned())
        .and(warp::body::bytes())
        .and(with_app(app))
        .then(post_heartbeats)
}

async fn post_heartbeats(
    forwarded: Option<String>,
    headers: HeaderMap,
    body: Bytes,
    app: RegistryApp,
) -> warp::reply::Response {
    let failed = |e: ApiError, n: usize| {
        app.shared().metrics.heartbeats_failed(e.kind(), n);
        e.into_reply()
    };
    if let Err(e) = app.authorize(&headers, Role::Reporter) {
        return failed(e, 1);
    }
    let beats = match parse_heartbeats(&body) {
        Ok(b) => b,
        Err(e) => return failed(e, 1),
    };
    let n = beats.len();
    match app
        .write()
        .heartbeats(beats, body, forwarded.is_some())
        .await
    {
        Ok(Written::Here(records)) => {
            app.shared().metrics.heartbeats_accepted(n);
            app.write().written_response(&records)
        }
        Ok(Written::Forwarded(resp)) => {
            app.shared().metrics.heartbeats_forwarded(n);
            resp
        }
        Ok(Written::NotFound) => failed(
            ApiError::Internal("a heartbeat found no record to count".into()),
            n,
        ),
        Err(e) => failed(e, n),
    }
}

/// `GET /v1/services[?host=H][&binary=B][&consistency=linearizable|stale]`.
fn services(
    app: RegistryApp,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    warp::path!("v1" / "services")
        .and(warp::get())
        .and(raw_query())
        .and(warp::header::optional::<String>(FORWARDED_HEADER))
        .and(warp::header::headers_cloned())
        .and(warp::ext::optional::<Admission>())
        .and(with_app(app))
        .then(get_services)
}

async fn get_services(
    raw: String,
    forwarded: Option<String>,
    headers: HeaderMap,
    admission: Option<Admission>,
    app: RegistryApp,
) -> warp::reply::Response {
    if let Err(e) = app.authorize(&headers, Role::Reader) {
        return e.into_reply();
    }
    let query: ServicesQuery = match parse_query(&raw) {
        Ok(q) => q,
        Err(e) => return e.into_reply(),
    };
    let path = format!("/v1/services?{raw}");
    match app.read().at(&query, &path, forwarded.is_some()).await {
        Ok(ReadAt::Here) => {
            let listing = app.read().services(&query);
            let applied = listing.applied;
            let consistency = query.consistency.unwrap_or_default().as_str();
            let permit = admission.as_ref().and_then(Admission::take);
            let mut resp = listing.native_response(permit);
            resp.headers_mut()
                .extend(app.read().freshness_headers(applied, consistency));
            resp
        }
        Ok(ReadAt::Forwarded(resp)) => resp,
        Err(e) => e.into_reply(),
    }
}

/// Parses a query string, refusing unknown keys and bad values with a clear message.
fn parse_query<T: serde::de::DeserializeOwned>(raw: &str) -> Result<T, ApiError> {
    serde_urlencoded::from_str(raw)
        .map_err(|e| ApiError::BadRequest(format!("invalid query string: {e}")))
}

/// `GET /v1/cluster`: leader, term, members and indexes as this node knows them.
fn cluster(
    app: RegistryApp,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    warp::path!("v1" / "cluster")
        .and(warp::get())
        .and(warp::header::headers_cloned())
        .and(with_app(app))
        .map(
            |headers: HeaderMap, app: RegistryApp| match app.authorize(&headers, Role::Reader) {
                Ok(()) => warp::reply::json(&app.status().cluster()).into_response(),
                Err(e) => e.into_reply(),
            },
        )
}

/// `GET /health`: 200 with the leader's id when this node is in a cluster with a known
/// leader, else 503 saying why.
fn health(
    app: RegistryApp,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    warp::path!("health")
        .and(warp::get())
        .and(with_app(app))
        .map(|app: RegistryApp| match app.status().healthy() {
            Ok(leader) => warp::reply::with_status(
                warp::reply::json(
                    &serde_json::json!({"status": "ok", "node_id": app.shared().id, "leader_id": leader}),
                ),
                StatusCode::OK,
            )
            .into_response(),
            Err(why) => ApiError::Unavailable(why).into_reply(),
        })
}

/// `GET /ready`: 200 with the indexes compared when this node is in a cluster, heard from
/// its leader recently and has applied all but at most [`READY_MAX_LAG`] entries of the
/// leader's commit index as it knows it (see [`RegistryApp::ready`]); else 503 saying why.
/// Unauthenticated, like `/health`.
///
/// [`READY_MAX_LAG`]: crate::app::READY_MAX_LAG
fn ready(
    app: RegistryApp,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    warp::path!("ready")
        .and(warp::get())
        .and(with_app(app))
        .then(|app: RegistryApp| async move {
            match app.status().ready().await {
                Ok(r) => warp::reply::json(&serde_json::json!({"status": "ready", "ready": r}))
                    .into_response(),
                Err(why) => ApiError::Unavailable(format!("not ready: {why}")).into_reply(),
            }
        })
}

/// `GET /metrics`: every metric of the node in the Prometheus text format (see
/// [`crate::metrics`]); needs the `reader` role.
fn metrics(
    app: RegistryApp,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    warp::path!("metrics")
        .and(warp::get())
        .and(warp::header::headers_cloned())
        .and(with_app(app))
        .then(|headers: HeaderMap, app: RegistryApp| async move {
            if let Err(e) = app.authorize(&headers, Role::Reader) {
                return e.into_reply();
            }
            match crate::status::prometheus::render(app.status()).await {
                Ok(text) => {
                    let mut resp = text.into_response();
                    resp.headers_mut().insert(
                        CONTENT_TYPE,
                        HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
                    );
                    resp
                }
                Err(e) => ApiError::Internal(format!("encoding metrics: {e}")).into_reply(),
            }
        })
}
