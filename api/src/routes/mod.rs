//! Every HTTP route of a node, as warp filters (one function per route, the route in its doc
//! comment), with one `recover` that renders every error as JSON; and [`classify`], which
//! names the route of a request for the layer in front of them ([`crate::server`]).

mod admin;
mod cinder;
mod membership;
mod public;

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

/// What kind of route a request is for: it decides whether the request counts against the
/// node's bound on concurrent requests, and how loudly it is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    /// The public API (`/v1/*`, Cinder's `/v3/*`, `/`) and unknown paths: bounded.
    Public,
    /// `/health`, `/ready`, `/metrics`: never refused for load, so probes and scrapes still
    /// see an overloaded node.
    Probe,
    /// `/raft/{append,vote,snapshot,identity,join}`: never refused for load (the group's
    /// heartbeats must get through), and logged only at `trace` (they arrive many times a
    /// second per peer).
    RaftRpc,
}

/// A request's route: its template (the path with its variable segments named, as metrics
/// and logs label it; never the raw path) and its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteInfo {
    /// The route template, e.g. `/v1/services/{action}`; `unmatched` for unknown paths.
    pub template: &'static str,
    /// The route's kind.
    pub kind: RouteKind,
}

/// The route a request `path` is for.
pub fn classify(path: &str) -> RouteInfo {
    use RouteKind::{Probe, Public, RaftRpc};
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (template, kind) = match segments.as_slice() {
        [] => ("/", Public),
        ["health"] => ("/health", Probe),
        ["ready"] => ("/ready", Probe),
        ["metrics"] => ("/metrics", Probe),
        ["raft", "append"] => ("/raft/append", RaftRpc),
        ["raft", "vote"] => ("/raft/vote", RaftRpc),
        ["raft", "snapshot"] => ("/raft/snapshot", RaftRpc),
        ["raft", "identity"] => ("/raft/identity", RaftRpc),
        ["raft", "join"] => ("/raft/join", RaftRpc),
        ["v1", "heartbeats"] => ("/v1/heartbeats", Public),
        ["v1", "services"] => ("/v1/services", Public),
        ["v1", "services", _] => ("/v1/services/{action}", Public),
        ["v1", "cluster"] => ("/v1/cluster", Public),
        ["v1", "cluster", "learners"] => ("/v1/cluster/learners", Public),
        ["v1", "cluster", "voters"] => ("/v1/cluster/voters", Public),
        ["v1", "cluster", "snapshot"] => ("/v1/cluster/snapshot", Public),
        ["v1", "cluster", "backup"] => ("/v1/cluster/backup", Public),
        ["v1", "cluster", "members", _] => ("/v1/cluster/members/{id}", Public),
        ["v3"] => ("/v3/", Public),
        ["v3", "os-services"] => ("/v3/os-services", Public),
        ["v3", _, "os-services"] => ("/v3/{project_id}/os-services", Public),
        ["v3", "os-services", _] => ("/v3/os-services/{action}", Public),
        ["v3", _, "os-services", _] => ("/v3/{project_id}/os-services/{action}", Public),
        ["v3", ..] => ("/v3/{unknown}", Public),
        _ => ("unmatched", Public),
    };
    RouteInfo { template, kind }
}

/// The raw query string, empty when there is none.
fn raw_query() -> impl Filter<Extract = (String,), Error = Infallible> + Clone {
    warp::query::raw().or(warp::any().map(String::new)).unify()
}

fn with_app(app: RegistryApp) -> impl Filter<Extract = (RegistryApp,), Error = Infallible> + Clone {
    warp::any().map(move || app.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Variable segments are named, never copied into the template; only the three Raft
    /// RPCs and the probes are exempt from the concurrency bound.
    #[test]
    fn routes_are_labelled_by_template() {
        let t = |p: &str| classify(p).template;
        assert_eq!(t("/v1/services/disable"), "/v1/services/{action}");
        assert_eq!(t("/v1/cluster/members/7"), "/v1/cluster/members/{id}");
        assert_eq!(t("/v3/abc123/os-services"), "/v3/{project_id}/os-services");
        assert_eq!(t("/v3/os-services/enable"), "/v3/os-services/{action}");
        assert_eq!(t("/v3/x/y/z/w"), "/v3/{unknown}");
        assert_eq!(t("/no/such/thing"), "unmatched");
        assert_eq!(classify("/raft/append").kind, RouteKind::RaftRpc);
        assert_eq!(classify("/raft/other").kind, RouteKind::Public);
        for probe in ["/health", "/ready", "/metrics"] {
            assert_eq!(classify(probe).kind, RouteKind::Probe, "{probe}");
        }
        assert_eq!(classify("/v1/services").kind, RouteKind::Public);
    }
}
