//! What every route declares about itself, and the gate each request passes before its
//! route reads a byte of its body.
//!
//! A route is a [`Route`] constant beside its warp filter: its template (the path with its
//! variable segments named, as metrics and logs label it), its [`RouteKind`] and who may
//! call it ([`Access`]). Its filter is `path → name(&ROUTE) → method → gate(&ROUTE) → body`:
//! - [`name`] records the route in the request's [`Matched`] slot (the server layer reads it
//!   to time and log the request) and in the request's span;
//! - [`gate`] admits the request under the node's bound on concurrent requests (public
//!   routes, except requests another node forwarded: that node admitted them under its own
//!   bound), then checks its credentials: a client token of the route's role, or the
//!   cluster secret and the identity headers of another node (on a node with TLS, also a
//!   client certificate the cluster CA signed). It never rejects: it hands the
//!   handler a [`Gate`], so that a refused request is answered by its own route, in that
//!   route's error shape (Cinder's faults under `/v3`), and never falls through to another
//!   route. Bodies are read by the handler ([`super::body`]) only once the gate passed, so an
//!   unauthenticated client that declares a large body is answered 401 at once.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::OwnedSemaphorePermit;
use warp::http::HeaderMap;
use warp::Filter;

use crate::app::RegistryApp;
use crate::audit::{Actor, Caller};
use crate::auth::Role;
use crate::error::ApiError;
use crate::transport::peer::FORWARDED_HEADER;
use crate::transport::tls::ClientCert;

/// What kind of route a request is for: it decides whether the request counts against the
/// node's bound on concurrent requests, and how loudly it is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    /// The public API (`/v1/*`, Cinder's `/v3/*`, `/`): bounded.
    Public,
    /// `/health`, `/ready`, `/metrics`: never refused for load, so probes and scrapes still
    /// see an overloaded node.
    Probe,
    /// `/raft/{append,vote,snapshot,identity,join,read-index}`: never refused for load (the group's
    /// heartbeats must get through), and logged only at `trace` (they arrive many times a
    /// second per peer).
    RaftRpc,
}

/// What a request from another node must show before it is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerCheck {
    /// The cluster secret (a peer asking who this node is).
    Secret,
    /// The cluster secret, then the identity headers ([`crate::transport::identity`]);
    /// `joining` for a sender that has no cluster yet.
    Identity {
        /// Admit a sender without a cluster.
        joining: bool,
    },
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: the probes `/health` and `/ready`, and the version documents.
    Open,
    /// A client token allowed `Role` (see [`crate::auth`]). A request another node forwarded
    /// to this one shows the cluster secret and its identity instead.
    Client(Role),
    /// Another node of the cluster only.
    Peer(PeerCheck),
}

/// One route: how it is named, bounded and authorised.
#[derive(Debug, PartialEq, Eq)]
pub struct Route {
    /// The template, e.g. `/v1/services/{action}`; never the raw path.
    pub template: &'static str,
    /// Its kind.
    pub kind: RouteKind,
    /// Who may call it.
    pub access: Access,
}

impl Route {
    /// A public route.
    pub const fn public(template: &'static str, access: Access) -> Self {
        Self {
            template,
            kind: RouteKind::Public,
            access,
        }
    }

    /// Whether reporters send heartbeats on it (their refusals slow the registry clock:
    /// [`crate::shedding`]).
    pub fn takes_heartbeats(&self) -> bool {
        self.template == HEARTBEATS_TEMPLATE
    }
}

/// The template of the heartbeats route.
pub const HEARTBEATS_TEMPLATE: &str = "/v1/heartbeats";

/// The route a request matched, in the request's extensions: put there empty by the server
/// layer ([`crate::server`]), filled by [`name`]. Empty after routing means no route matched.
#[derive(Debug, Clone, Default)]
pub struct Matched(Arc<Mutex<Option<&'static Route>>>);

impl Matched {
    /// The route named last, if any.
    pub fn route(&self) -> Option<&'static Route> {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, route: &'static Route) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(route);
    }
}

/// Names `route` as the one the request is for (placed right after the route's path, so a
/// wrong method is still labelled by its route).
pub fn name(
    route: &'static Route,
) -> impl Filter<Extract = (), Error = std::convert::Infallible> + Clone {
    warp::ext::optional::<Matched>()
        .map(move |matched: Option<Matched>| {
            if let Some(m) = matched {
                m.set(route);
            }
            tracing::Span::current().record("route", route.template);
        })
        .untuple_one()
}

/// A request that passed its route's gate.
#[derive(Debug)]
pub struct Pass {
    /// The request's headers.
    pub headers: HeaderMap,
    /// Who sent it, and whether another node forwarded it.
    pub caller: Caller,
    /// Its place under the node's bound on concurrent public requests (`None` for probes and
    /// Raft RPCs). It is released when the handler's answer is ready, unless the handler
    /// moves it into a streamed body (a long list) to keep it while the body is written.
    pub permit: Option<OwnedSemaphorePermit>,
}

impl Pass {
    /// Whether another node forwarded the request to this one.
    pub fn forwarded(&self) -> bool {
        self.caller.forwarded
    }
}

/// What the gate decided: the request may go on, or the error to answer it with.
pub type Gate = Result<Pass, ApiError>;

/// The gate of `route` (see the module's documentation); it never rejects.
pub fn gate(
    app: &RegistryApp,
    route: &'static Route,
) -> impl Filter<Extract = (Gate,), Error = std::convert::Infallible> + Clone {
    let app = app.clone();
    warp::header::headers_cloned()
        .and(warp::ext::optional::<ClientCert>())
        .then(move |headers: HeaderMap, cert: Option<ClientCert>| {
            let app = app.clone();
            async move { admit(&app, route, headers, cert.as_ref()).await }
        })
}

/// Admits a request for `route`: its place under the bound, then its credentials (`cert`:
/// what the TLS handshake of its connection learnt, `None` over plain HTTP).
async fn admit(
    app: &RegistryApp,
    route: &'static Route,
    headers: HeaderMap,
    cert: Option<&ClientCert>,
) -> Gate {
    let forwarded = headers.contains_key(FORWARDED_HEADER);
    let permit = match route.kind {
        // A request another node forwarded carries requests that node admitted under its
        // own bound (a batch of heartbeats: refusing it would refuse every one of them), and
        // each node has at most a few on the way; it is authenticated as a peer's below.
        RouteKind::Public if forwarded => None,
        RouteKind::Public => match app.shared().admission.try_admit() {
            Ok(p) => Some(p),
            Err(e) => {
                app.shared().metrics.overloaded();
                if route.takes_heartbeats() {
                    app.shared().shed.refused(false);
                }
                tracing::debug!("refused: too many requests");
                return Err(e);
            }
        },
        RouteKind::Probe | RouteKind::RaftRpc => None,
    };
    let actor = match route.access {
        Access::Open => Actor::anonymous(),
        Access::Client(role) => {
            if forwarded {
                admit_peer(app, PeerCheck::Identity { joining: false }, &headers, cert).await?;
            }
            let subject = match cert {
                Some(ClientCert::Verified { subject }) => Some(subject.as_str()),
                _ => None,
            };
            app.authorize(&headers, role, subject)?
        }
        Access::Peer(check) => {
            admit_peer(app, check, &headers, cert).await?;
            Actor::relayed(&headers, "peer")
        }
    };
    Ok(Pass {
        headers,
        caller: Caller { actor, forwarded },
        permit,
    })
}

/// Checks a request from another node: on a node with TLS, a client certificate the cluster
/// CA signed (401); the secret (401, saying nothing of this node to a stranger); then its
/// identity (421).
async fn admit_peer(
    app: &RegistryApp,
    check: PeerCheck,
    headers: &HeaderMap,
    cert: Option<&ClientCert>,
) -> Result<(), ApiError> {
    if app.shared().tls.is_some() {
        peer_certificate(cert).inspect_err(|e| {
            tracing::warn!(error = %e, "refused a request between nodes without a client certificate");
        })?;
    }
    app.authorize_peer(headers).inspect_err(|e| {
        tracing::warn!(error = %e, "refused a request between nodes without the cluster secret");
    })?;
    match check {
        PeerCheck::Secret => Ok(()),
        PeerCheck::Identity { joining } => app.shared().identity.admit(headers, joining).await,
    }
}

/// On a node with TLS: a request between nodes must come over a connection whose client
/// presented a certificate the cluster CA signed (the handshake verified it).
fn peer_certificate(cert: Option<&ClientCert>) -> Result<(), ApiError> {
    match cert {
        Some(ClientCert::Verified { subject }) => {
            tracing::trace!(%subject, "request between nodes with a client certificate");
            Ok(())
        }
        Some(ClientCert::None) => Err(ApiError::Unauthorized(
            "requests between nodes need a client certificate signed by the cluster CA: \
             none was presented"
                .into(),
        )),
        None => Err(ApiError::Unauthorized(
            "requests between nodes need TLS with a client certificate signed by the \
             cluster CA"
                .into(),
        )),
    }
}
