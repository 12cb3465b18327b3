//! Online membership changes, run on the leader (forwarded there from any node):
//! `POST /v1/cluster/learners`, `POST /v1/cluster/voters`, `DELETE /v1/cluster/members/{id}`;
//! `POST /v1/cluster/snapshot`, served by the node it reaches; and `GET /v1/cluster/backup`,
//! a consistent backup of the whole state.

use std::collections::BTreeSet;

use bytes::Bytes;
use openraft::ChangeMembers;
use registry_storage::{Incarnation, RegistryNode};
use warp::http::Method;
use warp::{Filter, Rejection, Reply};

use super::body::{self, GatedBody};
use super::route::{gate, name, Access, Gate, Route};
use super::{parse_query, raw_query, with_app, MAX_BODY_BYTES};
use crate::app::RegistryApp;
use crate::audit::{self, Caller};
use crate::auth::Role;
use crate::error::ApiError;
use crate::read::ReadAt;
use crate::wire::{check_field, AddLearnerIn, Consistency, PromoteIn, ServicesQuery};
use crate::write::OnLeader;

/// Content type of a backup (a snapshot blob, see `registry_storage::snapshot`).
pub const BACKUP_CONTENT_TYPE: &str = "application/vnd.registry.snapshot";

const LEARNERS: Route = Route::public("/v1/cluster/learners", Access::Client(Role::Admin));
const VOTERS: Route = Route::public("/v1/cluster/voters", Access::Client(Role::Admin));
const MEMBER: Route = Route::public("/v1/cluster/members/{id}", Access::Client(Role::Admin));
const SNAPSHOT: Route = Route::public("/v1/cluster/snapshot", Access::Client(Role::Admin));
const BACKUP: Route = Route::public("/v1/cluster/backup", Access::Client(Role::Admin));

pub(super) fn routes(
    app: RegistryApp,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    add_learner(app.clone())
        .or(promote(app.clone()))
        .unify()
        .or(remove(app.clone()))
        .unify()
        .or(snapshot(app.clone()))
        .unify()
        .or(backup(app))
        .unify()
}

/// Query of `GET /v1/cluster/backup`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct BackupQuery {
    /// `linearizable` (default: taken on the leader once it confirmed its quorum, so it holds
    /// every write acknowledged before the request) or `stale` (this node's state).
    consistency: Option<Consistency>,
}

/// `GET /v1/cluster/backup[?consistency=stale]` (admin): the whole state as a self-checking
/// snapshot file (`registryctl snapshot save`), from the leader by default.
fn backup(
    app: RegistryApp,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    warp::path!("v1" / "cluster" / "backup")
        .and(name(&BACKUP))
        .and(warp::get())
        .and(gate(&app, &BACKUP))
        .and(raw_query())
        .and(with_app(app))
        .then(|gate: Gate, raw: String, app: RegistryApp| async move {
            let res = async {
                let fwd = gate?.forwarded();
                let q: BackupQuery = parse_query(&raw)?;
                let query = ServicesQuery {
                    consistency: q.consistency,
                    ..ServicesQuery::default()
                };
                let path = format!("/v1/cluster/backup?{raw}");
                match app.read().at(&query, &path, fwd).await? {
                    ReadAt::Forwarded(resp) => Ok(resp),
                    ReadAt::Here => {
                        let (bytes, applied) = app.read().backup().await?;
                        let mut resp = bytes.into_response();
                        resp.headers_mut().insert(
                            warp::http::header::CONTENT_TYPE,
                            warp::http::HeaderValue::from_static(BACKUP_CONTENT_TYPE),
                        );
                        let consistency = query.consistency.unwrap_or_default().as_str();
                        resp.headers_mut()
                            .extend(app.read().freshness_headers(applied, consistency));
                        Ok(resp)
                    }
                }
            };
            res.await.unwrap_or_else(ApiError::into_reply)
        })
}

/// `POST /v1/cluster/snapshot`: makes this node build a snapshot now (and purge its log
/// behind it, as the snapshot policy would); answers 202 at once.
fn snapshot(
    app: RegistryApp,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    warp::path!("v1" / "cluster" / "snapshot")
        .and(name(&SNAPSHOT))
        .and(warp::post())
        .and(gate(&app, &SNAPSHOT))
        .and(with_app(app))
        .then(|gate: Gate, app: RegistryApp| async move {
            if let Err(e) = gate {
                return e.into_reply();
            }
            match app.shared().raft.trigger().snapshot().await {
                Ok(()) => warp::reply::with_status(
                    warp::reply::json(&serde_json::json!({"snapshot": "building"})),
                    warp::http::StatusCode::ACCEPTED,
                )
                .into_response(),
                Err(e) => ApiError::Unavailable(format!("raft stopped: {e}")).into_reply(),
            }
        })
}

/// A `POST` on `path` (the path of `route`) by an admin, with a bounded body read once the
/// gate passed: extracts the gate's decision with the body, and the app.
fn admin_post(
    path: impl Filter<Extract = (), Error = Rejection> + Clone,
    route: &'static Route,
    app: RegistryApp,
) -> impl Filter<Extract = (GatedBody, RegistryApp), Error = Rejection> + Clone {
    path.and(name(route))
        .and(warp::post())
        .and(body::gated(&app, route, MAX_BODY_BYTES))
        .and(with_app(app))
}

/// `POST /v1/cluster/learners` `{"id": 4, "addr": "127.0.0.1:21004"}`: adds the node listening
/// at `addr` as a learner, with the incarnation of its store it reports, and answers once it
/// has caught up with the leader's log. The node must say it is node `id`, and belong to no
/// cluster or to this one.
fn add_learner(
    app: RegistryApp,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    admin_post(warp::path!("v1" / "cluster" / "learners"), &LEARNERS, app).then(
        |gated: GatedBody, app: RegistryApp| async move {
            let res = async {
                let (pass, body) = gated?;
                let input: AddLearnerIn = serde_json::from_slice(&body)
                    .map_err(|e| ApiError::BadRequest(format!("invalid learner: {e}")))?;
                check_field("addr", &input.addr)?;
                let incarnation = incarnation_at(&app, input.id, &input.addr).await?;
                let call = || {
                    let node = RegistryNode::new(input.addr.clone(), incarnation);
                    async {
                        app.shared()
                            .raft
                            .add_learner(input.id, node, true)
                            .await
                            .map(|_| ())
                    }
                };
                let route = (Method::POST, "/v1/cluster/learners");
                finish(
                    &app,
                    &pass.caller,
                    &format!("add node {} at {} as a learner", input.id, input.addr),
                    app.write()
                        .on_leader(call, route, body.clone(), &pass.caller)
                        .await?,
                )
            };
            res.await.unwrap_or_else(ApiError::into_reply)
        },
    )
}

/// The incarnation of node `id` at `addr`, as it tells it: 400 if the node there is another
/// one or belongs to another cluster, 503 if it does not answer.
async fn incarnation_at(app: &RegistryApp, id: u64, addr: &str) -> Result<Incarnation, ApiError> {
    let who = app.peer().identity(addr).await.map_err(|e| {
        ApiError::Unavailable(format!(
            "cannot ask the node at {addr} who it is (is it running?): {e}"
        ))
    })?;
    if who.node_id != id {
        return Err(ApiError::BadRequest(format!(
            "the node at {addr} is node {}, not node {id}",
            who.node_id
        )));
    }
    let ours = app.shared().identity.cluster_id().map(|c| c.to_string());
    if who.cluster_id.is_some() && who.cluster_id != ours {
        return Err(ApiError::BadRequest(format!(
            "the node at {addr} belongs to cluster {}, not to this one ({})",
            who.cluster_id.unwrap_or_default(),
            ours.unwrap_or_default()
        )));
    }
    who.incarnation.parse().map_err(|e: String| {
        ApiError::Internal(format!(
            "the node at {addr} reports an incarnation that {e}"
        ))
    })
}

/// `POST /v1/cluster/voters` `{"id": 4}`: promotes a learner to voter (joint consensus).
fn promote(
    app: RegistryApp,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    admin_post(warp::path!("v1" / "cluster" / "voters"), &VOTERS, app).then(
        |gated: GatedBody, app: RegistryApp| async move {
            let res = async {
                let (pass, body) = gated?;
                let input: PromoteIn = serde_json::from_slice(&body)
                    .map_err(|e| ApiError::BadRequest(format!("invalid voter: {e}")))?;
                let known = app
                    .status()
                    .cluster()
                    .members
                    .iter()
                    .any(|m| m.id == input.id);
                if !known {
                    return Err(ApiError::NotFound(format!(
                        "node {} is not a member; add it as a learner first",
                        input.id
                    )));
                }
                let call = || async {
                    let ids = BTreeSet::from([input.id]);
                    app.shared()
                        .raft
                        .change_membership(ChangeMembers::AddVoterIds(ids), false)
                        .await
                        .map(|_| ())
                };
                let route = (Method::POST, "/v1/cluster/voters");
                finish(
                    &app,
                    &pass.caller,
                    &format!("promote node {} to voter", input.id),
                    app.write()
                        .on_leader(call, route, body.clone(), &pass.caller)
                        .await?,
                )
            };
            res.await.unwrap_or_else(ApiError::into_reply)
        },
    )
}

/// `DELETE /v1/cluster/members/{id}`: removes a voter or a learner from the group.
fn remove(
    app: RegistryApp,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    warp::path!("v1" / "cluster" / "members" / u64)
        .and(name(&MEMBER))
        .and(warp::delete())
        .and(gate(&app, &MEMBER))
        .and(with_app(app))
        .then(|id: u64, gate: Gate, app: RegistryApp| async move {
            let res = async {
                let pass = gate?;
                let cluster = app.status().cluster();
                let Some(member) = cluster.members.iter().find(|m| m.id == id) else {
                    return Err(ApiError::NotFound(format!("node {id} is not a member")));
                };
                if member.voter && cluster.members.iter().filter(|m| m.voter).count() == 1 {
                    return Err(ApiError::Conflict("cannot remove the last voter".into()));
                }
                let voter = member.voter;
                let call = || async {
                    let ids = BTreeSet::from([id]);
                    let change = if voter {
                        ChangeMembers::RemoveVoters(ids)
                    } else {
                        ChangeMembers::RemoveNodes(ids)
                    };
                    app.shared()
                        .raft
                        .change_membership(change, false)
                        .await
                        .map(|_| ())
                };
                let path = format!("/v1/cluster/members/{id}");
                finish(
                    &app,
                    &pass.caller,
                    &format!("remove node {id}"),
                    app.write()
                        .on_leader(call, (Method::DELETE, &path), Bytes::new(), &pass.caller)
                        .await?,
                )
            };
            res.await.unwrap_or_else(ApiError::into_reply)
        })
}

/// Answers the membership as this node sees it after a change `caller` made here (and
/// writes its audit line), or the leader's answer.
fn finish(
    app: &RegistryApp,
    caller: &Caller,
    change: &str,
    done: OnLeader<()>,
) -> Result<warp::reply::Response, ApiError> {
    Ok(match done {
        OnLeader::Here(()) => {
            audit::committed(&caller.actor, change, None, "membership changed");
            warp::reply::json(&app.status().cluster()).into_response()
        }
        OnLeader::Forwarded(resp) => resp,
    })
}
