//! The public API: heartbeats in, services and cluster state out; and the probes, `/health`
//! (liveness), `/ready` (readiness) and `/metrics` (Prometheus).

use warp::http::header::CONTENT_TYPE;
use warp::http::{HeaderValue, StatusCode};
use warp::{Filter, Rejection, Reply};

use super::body::{self, GatedBody};
use super::route::{gate, name, Access, Gate, Route, RouteKind, HEARTBEATS_TEMPLATE};
use super::{parse_query, raw_query, with_app, MAX_BODY_BYTES};
use crate::app::RegistryApp;
use crate::auth::Role;
use crate::error::ApiError;
use crate::read::ReadAt;
use crate::shedding::{missed_of, refused_for_load, Load};
use crate::transport::tls::ClientCert;
use crate::wire::{parse_heartbeats, ServicesQuery, WhoAmIOut};
use crate::write::Written;

const HEARTBEATS: Route = Route::public(HEARTBEATS_TEMPLATE, Access::Client(Role::Reporter));
const SERVICES: Route = Route::public("/v1/services", Access::Client(Role::Reader));
const CLUSTER: Route = Route::public("/v1/cluster", Access::Client(Role::Reader));
/// Open: the handler itself finds the highest role the credentials have.
const WHOAMI: Route = Route::public("/v1/whoami", Access::Open);
const HEALTH: Route = Route {
    template: "/health",
    kind: RouteKind::Probe,
    access: Access::Open,
};
const READY: Route = Route {
    template: "/ready",
    kind: RouteKind::Probe,
    access: Access::Open,
};
const METRICS: Route = Route {
    template: "/metrics",
    kind: RouteKind::Probe,
    access: Access::Client(Role::Reader),
};

pub(super) fn routes(
    app: RegistryApp,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    heartbeats(app.clone())
        .or(services(app.clone()))
        .unify()
        .or(cluster(app.clone()))
        .unify()
        .or(whoami(app.clone()))
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
        .and(name(&HEARTBEATS))
        .and(warp::post())
        .and(body::gated(&app, &HEARTBEATS, MAX_BODY_BYTES))
        .and(with_app(app))
        .then(post_heartbeats)
}

async fn post_heartbeats(gated: GatedBody, app: RegistryApp) -> warp::reply::Response {
    let failed = |e: ApiError, n: usize| {
        app.shared().metrics.heartbeats_failed(e.kind(), n);
        e.into_reply()
    };
    let (pass, body) = match gated {
        Ok(g) => g,
        Err(e) => return failed(e, 1),
    };
    let shed = &app.shared().shed;
    if pass.forwarded() {
        // The load its follower received, counted there.
        if let Some(load) = Load::from_headers(&pass.headers) {
            shed.add(load);
        }
    } else {
        shed.admitted();
    }
    let failed = |e: ApiError, n: usize| {
        if !pass.forwarded() && refused_for_load(&e) {
            shed.refused(true);
        }
        failed(e, n)
    };
    let beats = match parse_heartbeats(&body) {
        Ok(b) => b,
        Err(e) => return failed(e, 1),
    };
    // What the reporter missed before this one (a forwarded batch carries its follower's
    // counts instead, in the load headers).
    let missed = if pass.forwarded() {
        0
    } else {
        match missed_of(&pass.headers) {
            Ok(m) => m,
            Err(why) => return failed(ApiError::BadRequest(why), 1),
        }
    };
    let landed = || {
        if missed > 0 {
            shed.missed(missed);
            app.shared().metrics.heartbeats_missed(missed);
        }
    };
    let n = beats.len();
    match app.write().heartbeats(beats, body, pass.forwarded()).await {
        Ok(Written::Here(records)) => {
            landed();
            app.shared().metrics.heartbeats_accepted(n);
            app.write().written_response(&records)
        }
        Ok(Written::Forwarded(resp)) => {
            if resp.status().is_success() {
                landed();
            }
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
        .and(name(&SERVICES))
        .and(warp::get())
        .and(gate(&app, &SERVICES))
        .and(raw_query())
        .and(with_app(app))
        .then(get_services)
}

async fn get_services(gate: Gate, raw: String, app: RegistryApp) -> warp::reply::Response {
    let pass = match gate {
        Ok(p) => p,
        Err(e) => return e.into_reply(),
    };
    let query: ServicesQuery = match parse_query(&raw) {
        Ok(q) => q,
        Err(e) => return e.into_reply(),
    };
    let path = format!("/v1/services?{raw}");
    match app.read().at(&query, &path, pass.forwarded()).await {
        Ok(ReadAt::Here) => {
            let listing = app.read().services(&query);
            let applied = listing.applied;
            let consistency = query.consistency.unwrap_or_default().as_str();
            let mut resp = listing.native_response(pass.permit);
            resp.headers_mut()
                .extend(app.read().freshness_headers(applied, consistency));
            resp
        }
        Ok(ReadAt::Forwarded(resp)) => resp,
        Err(e) => e.into_reply(),
    }
}

/// Query of `GET /v1/cluster`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterQuery {
    /// `true`: add the state machine's digest (a walk of every record).
    #[serde(default)]
    digest: bool,
}

/// `GET /v1/cluster[?digest=true]`: leader, term, members and indexes as this node knows
/// them, and the digest of its state machine when asked for.
fn cluster(
    app: RegistryApp,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    warp::path!("v1" / "cluster")
        .and(name(&CLUSTER))
        .and(warp::get())
        .and(gate(&app, &CLUSTER))
        .and(raw_query())
        .and(with_app(app))
        .then(|gate: Gate, raw: String, app: RegistryApp| async move {
            let res = async {
                gate?;
                let q: ClusterQuery = parse_query(&raw)?;
                let view = if q.digest {
                    app.status().cluster_with_digest().await?
                } else {
                    app.status().cluster()
                };
                Ok::<_, ApiError>(warp::reply::json(&view).into_response())
            };
            res.await.unwrap_or_else(ApiError::into_reply)
        })
}

/// `GET /v1/whoami`: the role the request's credentials have (`admin`, `reader` or
/// `reporter`, the first that admits them) and who they act as; 401 for none or an unknown
/// token. What a client (the dashboard) asks before it offers actions, instead of trying one.
fn whoami(
    app: RegistryApp,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    warp::path!("v1" / "whoami")
        .and(name(&WHOAMI))
        .and(warp::get())
        .and(gate(&app, &WHOAMI))
        .and(warp::ext::optional::<ClientCert>())
        .and(with_app(app))
        .map(|gate: Gate, cert: Option<ClientCert>, app: RegistryApp| {
            let pass = match gate {
                Ok(p) => p,
                Err(e) => return e.into_reply(),
            };
            let subject = match &cert {
                Some(ClientCert::Verified { subject }) => Some(subject.as_str()),
                _ => None,
            };
            let mut refused = None;
            for (role, name) in [
                (Role::Admin, "admin"),
                (Role::Reader, "reader"),
                (Role::Reporter, "reporter"),
            ] {
                match app.authorize(&pass.headers, role, subject) {
                    Ok(actor) => {
                        let out = WhoAmIOut {
                            role: name.to_string(),
                            actor: actor.as_str().to_string(),
                        };
                        return warp::reply::json(&out).into_response();
                    }
                    Err(e) => refused = Some(e),
                }
            }
            refused
                .unwrap_or_else(|| {
                    ApiError::Unauthorized("no role admits these credentials".into())
                })
                .into_reply()
        })
}

/// `GET /health`: 200 with the leader's id when this node is in a cluster with a known
/// leader, else 503 saying why.
fn health(
    app: RegistryApp,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    warp::path!("health")
        .and(name(&HEALTH))
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
        .and(name(&READY))
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
        .and(name(&METRICS))
        .and(warp::get())
        .and(gate(&app, &METRICS))
        .and(with_app(app))
        .then(|gate: Gate, app: RegistryApp| async move {
            if let Err(e) = gate {
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
