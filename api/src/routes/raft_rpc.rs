//! Internal Raft RPC routes: `POST /raft/{append,vote,snapshot}` with bincode bodies, each
//! answering the bincode of openraft's `Result` for that RPC.

use bytes::Bytes;
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use registry_storage::{NodeId, TypeConfig};
use warp::http::{header, HeaderValue};
use warp::{Filter, Rejection, Reply};

use super::with_app;
use crate::app::RegistryApp;
use crate::error::ApiError;
use crate::rpc::{self, path, MAX_RPC_BYTES};

pub(super) fn routes(
    app: RegistryApp,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    let base = warp::path("raft")
        .and(warp::post())
        .and(warp::body::content_length_limit(MAX_RPC_BYTES));
    let append = base
        .and(warp::path(path::APPEND))
        .and(warp::path::end())
        .and(warp::body::bytes())
        .and(with_app(app.clone()))
        .then(append);
    let vote = base
        .and(warp::path(path::VOTE))
        .and(warp::path::end())
        .and(warp::body::bytes())
        .and(with_app(app.clone()))
        .then(vote);
    let snapshot = base
        .and(warp::path(path::SNAPSHOT))
        .and(warp::path::end())
        .and(warp::body::bytes())
        .and(with_app(app))
        .then(snapshot);
    append.or(vote).unify().or(snapshot).unify()
}

/// Decodes a request body or answers 400 saying why.
fn decode_body<T: serde::de::DeserializeOwned>(
    what: &str,
    body: &Bytes,
) -> Result<T, warp::reply::Response> {
    rpc::decode(body).map_err(|e| {
        tracing::warn!(rpc = what, error = %e, "refused an undecodable Raft RPC");
        ApiError::BadRequest(format!("undecodable {what} request: {e}")).into_reply()
    })
}

fn encode_reply<T: serde::Serialize>(value: &T) -> warp::reply::Response {
    match rpc::encode(value) {
        Ok(bytes) => {
            let mut resp = bytes.into_response();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(rpc::CONTENT_TYPE),
            );
            resp
        }
        Err(e) => ApiError::Internal(format!("encoding an RPC answer: {e}")).into_reply(),
    }
}

/// `POST /raft/append`: AppendEntries (also the leader's heartbeat).
async fn append(body: Bytes, app: RegistryApp) -> warp::reply::Response {
    let req: AppendEntriesRequest<TypeConfig> = match decode_body("append", &body) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let res: Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>> =
        app.raft().append_entries(req).await;
    if matches!(
        res,
        Ok(AppendEntriesResponse::Success)
            | Ok(AppendEntriesResponse::PartialSuccess(_))
            | Ok(AppendEntriesResponse::Conflict)
    ) {
        app.touch_leader_contact();
    }
    encode_reply(&res)
}

/// `POST /raft/vote`: RequestVote.
async fn vote(body: Bytes, app: RegistryApp) -> warp::reply::Response {
    let req: VoteRequest<NodeId> = match decode_body("vote", &body) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let res: Result<VoteResponse<NodeId>, RaftError<NodeId>> = app.raft().vote(req).await;
    encode_reply(&res)
}

/// `POST /raft/snapshot`: one chunk of InstallSnapshot.
async fn snapshot(body: Bytes, app: RegistryApp) -> warp::reply::Response {
    let req: InstallSnapshotRequest<TypeConfig> = match decode_body("snapshot", &body) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let res: Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>> =
        app.raft().install_snapshot(req).await;
    if res.is_ok() {
        app.touch_leader_contact();
    }
    encode_reply(&res)
}
