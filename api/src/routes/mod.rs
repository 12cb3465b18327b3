//! Every HTTP route of a node, as warp filters (one function per route, the route in its doc
//! comment, its [`route::Route`] beside it), with one `recover` that renders every error as
//! JSON.

mod admin;
pub mod body;
mod cinder;
mod membership;
mod public;
pub mod route;

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
        .or(crate::transport::routes::routes(app))
        .recover(recover)
}

/// The raw query string, empty when there is none.
pub(crate) fn raw_query() -> impl Filter<Extract = (String,), Error = Infallible> + Clone {
    warp::query::raw().or(warp::any().map(String::new)).unify()
}

pub(crate) fn with_app(
    app: RegistryApp,
) -> impl Filter<Extract = (RegistryApp,), Error = Infallible> + Clone {
    warp::any().map(move || app.clone())
}
