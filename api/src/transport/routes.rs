//! Internal routes between nodes, all behind the cluster secret:
//! - the Raft RPCs, `POST /raft/{append,vote,snapshot}` with bincode bodies, each answering
//!   the bincode of openraft's `Result` for that RPC (snapshots are received by
//!   [`crate::transport::snapshot_receiver`], which installs only whole, undamaged ones);
//! - `GET /raft/identity`: who this node is ([`IdentityOut`](crate::wire::IdentityOut)), for a
//!   peer that bootstraps a group, joins one or adds this node;
//! - `POST /raft/join`: on the leader, put back a node whose store was created anew
//!   ([`crate::replace`]);
//! - `POST /raft/read-index`: on the leader, the index a follower's linearizable read must
//!   see applied ([`ReadIndexOut`]), confirmed with a quorum ([`crate::read`]).
//!
//! The identity headers of the RPCs and of joins are checked before the body is read, by the
//! server ([`crate::transport::identity`]).

use bytes::Bytes;
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use registry_storage::{NodeId, TypeConfig};
use warp::http::{header, HeaderValue};
use warp::{Filter, Rejection, Reply};

use crate::app::RegistryApp;
use crate::error::ApiError;
use crate::routes::body::{self, GatedBody};
use crate::routes::filters::with_app;
use crate::routes::route::{gate, name, Access, Gate, PeerCheck, Route, RouteKind};
use crate::transport::formats::{format_header_value, FORMAT_HEADER};
use crate::transport::rpc::{self, path, VOTE_MAX_BYTES};
use crate::wire::{JoinIn, ReadIndexOut};

/// Largest `POST /raft/join` body (a node id and an incarnation, in JSON).
const MAX_JOIN_BYTES: u64 = 64 * 1024;

/// A route between nodes.
const fn rpc_route(template: &'static str, check: PeerCheck) -> Route {
    Route {
        template,
        kind: RouteKind::RaftRpc,
        access: Access::Peer(check),
    }
}

/// The identity of a member of the group, checked on every Raft RPC.
const MEMBER: PeerCheck = PeerCheck::Identity { joining: false };
const APPEND: Route = rpc_route("/raft/append", MEMBER);
const VOTE: Route = rpc_route("/raft/vote", MEMBER);
const SNAPSHOT: Route = rpc_route("/raft/snapshot", MEMBER);
const IDENTITY: Route = rpc_route("/raft/identity", PeerCheck::Secret);
const JOIN: Route = rpc_route("/raft/join", PeerCheck::Identity { joining: true });
const READ_INDEX: Route = rpc_route("/raft/read-index", MEMBER);

/// `/raft/NAME`, as the sender names it ([`rpc::path`]).
fn rpc_path(name: &'static str) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::path("raft")
        .and(warp::path(name))
        .and(warp::path::end())
}

pub(crate) fn routes(
    app: RegistryApp,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    let identity = warp::path!("raft" / "identity")
        .and(name(&IDENTITY))
        .and(warp::get())
        .and(gate(&app, &IDENTITY))
        .and(with_app(app.clone()))
        .then(|gate: Gate, app: RegistryApp| async move {
            match gate {
                Ok(_) => warp::reply::json(&app.status().identity_out().await).into_response(),
                Err(e) => e.into_reply(),
            }
        });
    let join = warp::path!("raft" / "join")
        .and(name(&JOIN))
        .and(warp::post())
        .and(body::gated(&app, &JOIN, MAX_JOIN_BYTES))
        .and(with_app(app.clone()))
        .then(|gated: GatedBody, app: RegistryApp| async move {
            let res = gated.and_then(|(_, body)| {
                let join = serde_json::from_slice::<JoinIn>(&body)
                    .map_err(|e| ApiError::BadRequest(format!("invalid join request: {e}")))?;
                app.replacements().request(app.shared(), app.peer(), join)
            });
            match res {
                Ok(out) => warp::reply::json(&out).into_response(),
                Err(e) => e.into_reply(),
            }
        });
    let read_index = warp::path!("raft" / "read-index")
        .and(name(&READ_INDEX))
        .and(warp::post())
        .and(gate(&app, &READ_INDEX))
        .and(with_app(app.clone()))
        .then(|gate: Gate, app: RegistryApp| async move {
            let res = match gate {
                Ok(_) => app.read().leader_read_index().await,
                Err(e) => Err(e),
            };
            match res {
                Ok(read_index) => warp::reply::json(&ReadIndexOut { read_index }).into_response(),
                Err(e) => e.into_reply(),
            }
        });
    let limits = app.shared().settings.rpc;
    let append = rpc_path(path::APPEND)
        .and(name(&APPEND))
        .and(warp::post())
        .and(body::gated(&app, &APPEND, limits.append))
        .and(with_app(app.clone()))
        .then(append);
    let vote = rpc_path(path::VOTE)
        .and(name(&VOTE))
        .and(warp::post())
        .and(body::gated(&app, &VOTE, VOTE_MAX_BYTES))
        .and(with_app(app.clone()))
        .then(vote);
    let snapshot = rpc_path(path::SNAPSHOT)
        .and(name(&SNAPSHOT))
        .and(warp::post())
        .and(body::gated(&app, &SNAPSHOT, limits.snapshot))
        .and(with_app(app))
        .then(snapshot);
    append
        .or(vote)
        .unify()
        .or(snapshot)
        .unify()
        .or(identity)
        .unify()
        .or(join)
        .unify()
        .or(read_index)
        .unify()
}

/// Decodes the request body as `Req`, runs `call`, and encodes its result; an undecodable
/// body is answered 400 and never reaches Raft.
async fn serve<Req, Res, Fut>(
    what: &str,
    body: &Bytes,
    call: impl FnOnce(Req) -> Fut,
) -> warp::reply::Response
where
    Req: serde::de::DeserializeOwned,
    Res: serde::Serialize,
    Fut: std::future::Future<Output = Res>,
{
    let req: Req = match rpc::decode(body) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(rpc = what, error = %e, "refused an undecodable Raft RPC");
            return ApiError::BadRequest(format!("undecodable {what} request: {e}")).into_reply();
        }
    };
    let res = call(req).await;
    match rpc::encode(&res) {
        Ok(bytes) => {
            let mut resp = bytes.into_response();
            let headers = resp.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(rpc::CONTENT_TYPE),
            );
            headers.insert(FORMAT_HEADER, format_header_value());
            resp
        }
        Err(e) => ApiError::Internal(format!("encoding an RPC answer: {e}")).into_reply(),
    }
}

/// `POST /raft/append`: AppendEntries (also the leader's heartbeat).
async fn append(gated: GatedBody, app: RegistryApp) -> warp::reply::Response {
    let body = match gated {
        Ok((_, body)) => body,
        Err(e) => return e.into_reply(),
    };
    serve(
        "append",
        &body,
        |req: AppendEntriesRequest<TypeConfig>| async {
            let leader_commit = req.leader_commit.map(|l| l.index);
            let res: Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>> =
                app.shared().raft.append_entries(req).await;
            if matches!(&res, Ok(r) if !matches!(r, AppendEntriesResponse::HigherVote(_))) {
                app.shared().contact.touch();
                app.shared().contact.note_commit(leader_commit);
            }
            res
        },
    )
    .await
}

/// `POST /raft/vote`: RequestVote.
async fn vote(gated: GatedBody, app: RegistryApp) -> warp::reply::Response {
    let body = match gated {
        Ok((_, body)) => body,
        Err(e) => return e.into_reply(),
    };
    serve("vote", &body, |req: VoteRequest<NodeId>| async {
        let res: Result<VoteResponse<NodeId>, RaftError<NodeId>> =
            app.shared().raft.vote(req).await;
        res
    })
    .await
}

/// `POST /raft/snapshot`: one chunk of InstallSnapshot.
async fn snapshot(gated: GatedBody, app: RegistryApp) -> warp::reply::Response {
    let body = match gated {
        Ok((_, body)) => body,
        Err(e) => return e.into_reply(),
    };
    serve(
        "snapshot",
        &body,
        |req: InstallSnapshotRequest<TypeConfig>| async {
            let res: Result<
                InstallSnapshotResponse<NodeId>,
                RaftError<NodeId, InstallSnapshotError>,
            > = app
                .snapshots()
                .receive(
                    &app.shared().raft,
                    &app.shared().sm,
                    app.shared().identity.cluster_id(),
                    &app.shared().tasks,
                    req,
                )
                .await;
            if res.is_ok() {
                app.shared().contact.touch();
            }
            res
        },
    )
    .await
}
