//! Every HTTP route of a node, as warp filters (one function per route, the route in its doc
//! comment), with one `recover` that renders every error as JSON.

mod admin;
mod cinder;
mod membership;
mod public;
mod raft_rpc;

use std::convert::Infallible;

use warp::{Filter, Reply};

use crate::app::RegistryApp;
use crate::error::recover;

/// Largest public request body accepted (a batch of heartbeats).
pub const MAX_BODY_BYTES: u64 = 1024 * 1024;

/// All routes of a node: the public API and the internal Raft RPC routes.
pub fn all(
    app: RegistryApp,
) -> impl Filter<Extract = (impl Reply,), Error = Infallible> + Clone + Send + Sync + 'static {
    public::routes(app.clone())
        .or(admin::routes(app.clone()))
        .or(membership::routes(app.clone()))
        .or(cinder::routes(app.clone()))
        .or(raft_rpc::routes(app))
        .recover(recover)
}

fn with_app(app: RegistryApp) -> impl Filter<Extract = (RegistryApp,), Error = Infallible> + Clone {
    warp::any().map(move || app.clone())
}
