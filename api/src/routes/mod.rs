//! Every HTTP route of a node, as warp filters (one function per route, the route in its doc
//! comment, its [`route::Route`] beside it), with one `recover` that renders every error as
//! JSON.

mod admin;
pub mod body;
mod cinder;
pub mod filters;
mod membership;
mod public;
pub mod route;
mod ui;
mod watch;

pub(crate) use filters::{parse_query, raw_query, with_app};

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
        .or(watch::routes(app.clone()))
        .or(ui::routes(app.clone()))
        .or(crate::transport::routes::routes(app))
        .recover(recover)
}
