//! Online membership changes, run on the leader (forwarded there from any node):
//! `POST /v1/cluster/learners`, `POST /v1/cluster/voters`, `DELETE /v1/cluster/members/{id}`;
//! and `POST /v1/cluster/snapshot`, served by the node it reaches.

use std::collections::BTreeSet;

use bytes::Bytes;
use openraft::{BasicNode, ChangeMembers};
use warp::http::{HeaderMap, Method};
use warp::{Filter, Rejection, Reply};

use super::{with_app, MAX_BODY_BYTES};
use crate::app::{OnLeader, RegistryApp, FORWARDED_HEADER};
use crate::auth::Role;
use crate::error::ApiError;
use crate::wire::{check_field, AddLearnerIn, PromoteIn};

pub(super) fn routes(
    app: RegistryApp,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    add_learner(app.clone())
        .or(promote(app.clone()))
        .unify()
        .or(remove(app.clone()))
        .unify()
        .or(snapshot(app))
        .unify()
}

/// `POST /v1/cluster/snapshot`: makes this node build a snapshot now (and purge its log
/// behind it, as the snapshot policy would); answers 202 at once.
fn snapshot(
    app: RegistryApp,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    warp::path!("v1" / "cluster" / "snapshot")
        .and(warp::post())
        .and(forwarded(app.clone()))
        .and(with_app(app))
        .then(|_: bool, app: RegistryApp| async move {
            match app.raft().trigger().snapshot().await {
                Ok(()) => warp::reply::with_status(
                    warp::reply::json(&serde_json::json!({"snapshot": "building"})),
                    warp::http::StatusCode::ACCEPTED,
                )
                .into_response(),
                Err(e) => ApiError::Unavailable(format!("raft stopped: {e}")).into_reply(),
            }
        })
}

/// Whether the request was forwarded by a peer; refuses (401/403) anyone but an admin.
fn forwarded(app: RegistryApp) -> impl Filter<Extract = (bool,), Error = Rejection> + Clone {
    warp::header::optional::<String>(FORWARDED_HEADER)
        .and(warp::header::headers_cloned())
        .and_then(move |h: Option<String>, headers: HeaderMap| {
            let allowed = app.authorize(&headers, Role::Admin);
            async move { allowed.map(|()| h.is_some()).map_err(warp::reject::custom) }
        })
}

/// A `POST` on `path` by an admin, with a bounded body: extracts whether a peer forwarded
/// it, the body, and the app.
fn admin_post(
    path: impl Filter<Extract = (), Error = Rejection> + Clone,
    app: RegistryApp,
) -> impl Filter<Extract = (bool, Bytes, RegistryApp), Error = Rejection> + Clone {
    path.and(warp::post())
        .and(warp::body::content_length_limit(MAX_BODY_BYTES))
        .and(forwarded(app.clone()))
        .and(warp::body::bytes())
        .and(with_app(app))
}

/// `POST /v1/cluster/learners` `{"id": 4, "addr": "127.0.0.1:21004"}`: adds a node as a
/// learner and answers once it has caught up with the leader's log.
fn add_learner(
    app: RegistryApp,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    admin_post(warp::path!("v1" / "cluster" / "learners"), app).then(
        |fwd: bool, body: Bytes, app: RegistryApp| async move {
            let res = async {
                let input: AddLearnerIn = serde_json::from_slice(&body)
                    .map_err(|e| ApiError::BadRequest(format!("invalid learner: {e}")))?;
                check_field("addr", &input.addr)?;
                let call = || {
                    let node = BasicNode::new(input.addr.clone());
                    async {
                        app.raft()
                            .add_learner(input.id, node, true)
                            .await
                            .map(|_| ())
                    }
                };
                let route = (Method::POST, "/v1/cluster/learners");
                finish(&app, app.on_leader(call, route, body.clone(), fwd).await?)
            };
            res.await.unwrap_or_else(ApiError::into_reply)
        },
    )
}

/// `POST /v1/cluster/voters` `{"id": 4}`: promotes a learner to voter (joint consensus).
fn promote(
    app: RegistryApp,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    admin_post(warp::path!("v1" / "cluster" / "voters"), app).then(
        |fwd: bool, body: Bytes, app: RegistryApp| async move {
            let res = async {
                let input: PromoteIn = serde_json::from_slice(&body)
                    .map_err(|e| ApiError::BadRequest(format!("invalid voter: {e}")))?;
                let known = app.cluster().members.iter().any(|m| m.id == input.id);
                if !known {
                    return Err(ApiError::NotFound(format!(
                        "node {} is not a member; add it as a learner first",
                        input.id
                    )));
                }
                let call = || async {
                    let ids = BTreeSet::from([input.id]);
                    app.raft()
                        .change_membership(ChangeMembers::AddVoterIds(ids), false)
                        .await
                        .map(|_| ())
                };
                let route = (Method::POST, "/v1/cluster/voters");
                finish(&app, app.on_leader(call, route, body.clone(), fwd).await?)
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
        .and(warp::delete())
        .and(forwarded(app.clone()))
        .and(with_app(app))
        .then(|id: u64, fwd: bool, app: RegistryApp| async move {
            let res = async {
                let cluster = app.cluster();
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
                    app.raft()
                        .change_membership(change, false)
                        .await
                        .map(|_| ())
                };
                let path = format!("/v1/cluster/members/{id}");
                finish(
                    &app,
                    app.on_leader(call, (Method::DELETE, &path), Bytes::new(), fwd)
                        .await?,
                )
            };
            res.await.unwrap_or_else(ApiError::into_reply)
        })
}

/// Answers the membership as this node sees it after a change made here, or the leader's
/// answer.
fn finish(app: &RegistryApp, done: OnLeader<()>) -> Result<warp::reply::Response, ApiError> {
    Ok(match done {
        OnLeader::Here(()) => warp::reply::json(&app.cluster()).into_response(),
        OnLeader::Forwarded(resp) => resp,
    })
}
