//! The HTTP server of a node: warp's routes ([`crate::routes::all`]) behind one layer that
//! every request passes through, which
//! - gives the request an id: its `x-request-id` when valid (1 to
//!   [`MAX_REQUEST_ID_LEN`](crate::request_id::MAX_REQUEST_ID_LEN)
//!   characters of `[A-Za-z0-9_-]`), else a new one; the id is set on the request (so the
//!   routes and a forward to the leader carry it), echoed in the answer's `x-request-id`, and
//!   recorded in a `tracing` span around the handler, so every log line of the request
//!   names it;
//! - bounds the public requests in flight to `max_concurrent_requests`: beyond it, a request
//!   is answered 503 with `Retry-After: 1` at once, before its body is read (Raft RPCs and
//!   `/health`, `/ready`, `/metrics` are never refused);
//! - admits a request from another node (a Raft RPC, a join, a request forwarded to the
//!   leader) only when its identity headers name this node's cluster, id and incarnation
//!   ([`crate::transport::identity`]), before its body is read;
//! - times the request into the latency histogram of its route template, and logs one line
//!   for it: at `debug`, or at `trace` for the Raft RPCs, which arrive many times a second.
//!
//! warp 0.4 has no hook that wraps a handler's future (its `trace` filter logs every request
//! at `info` and every 503 at `error`), so this layer is a tower `Service` around
//! [`warp::service`], and [`serve`] runs it on hyper as `warp::serve(..).incoming(..)
//! .graceful(..)` would: on an already-bound listener, stopping when `shutdown` resolves and
//! letting the requests in flight finish, for a grace; it returns once every connection has
//! ended.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinSet;
use tower_service::Service;
use tracing::Instrument;
use warp::http::{HeaderMap, HeaderValue, Method, Request};
use warp::reply::Response;

use crate::app::RegistryApp;
use crate::request_id::{request_id_of, REQUEST_ID, REQUEST_ID_HEADER};
use crate::routes::{classify, RouteKind};
use crate::transport::peer::FORWARDED_HEADER;

/// The method as a metric label (other methods share one label, so clients cannot grow the
/// label set).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "OTHER",
    }
}

/// Serves `app`'s routes on `listener` until `shutdown` resolves; then stops accepting,
/// waits up to `grace` for the requests in flight to be answered, closes the connections
/// still open after it, and returns once every connection's task has ended.
pub async fn serve(
    app: RegistryApp,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
    grace: Duration,
) {
    let routes = warp::service(crate::routes::all(app.clone()));
    let service = Observed { inner: routes, app };
    let graceful = GracefulShutdown::new();
    // Every connection's task, so that none outlives the server (each holds the node's app).
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, _remote) = tokio::select! {
            Some(ended) = connections.join_next(), if !connections.is_empty() => {
                if let Err(e) = ended {
                    tracing::warn!(error = %e, "a connection's task ended abnormally");
                }
                continue;
            }
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Answers are written as they are ready (streamed lists in several writes): without
        // this, Nagle's algorithm holds a last small write until the client's delayed ACK.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
        let svc = TowerToHyperService::new(service.clone());
        let watcher = graceful.watcher();
        connections.spawn(async move {
            let builder = Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        while connections.try_join_next().is_some() {}
        tracing::warn!(
            ?grace,
            open = connections.len(),
            "requests still open after the grace: closing their connections"
        );
    }
    // Aborts the connections left (none after a clean drain) and waits for every task.
    connections.shutdown().await;
}

/// A request's admission (its permit under the bound on concurrent requests), in the
/// request's extensions. It is released when the answer's headers are ready, unless the
/// route took it to keep while it writes a streamed body (a long list).
#[derive(Debug, Clone)]
pub struct Admission(Arc<Mutex<Option<OwnedSemaphorePermit>>>);

impl Admission {
    /// The permit, if the request holds one and no one took it yet.
    pub fn take(&self) -> Option<OwnedSemaphorePermit> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// The layer in front of the routes (see the module's documentation).
#[derive(Clone)]
struct Observed<S> {
    /// warp's routes as a service.
    inner: S,
    /// The node: its limiter, metrics and id.
    app: RegistryApp,
}

impl<S, B> Service<Request<B>> for Observed<S>
where
    S: Service<Request<B>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let start = Instant::now();
        let route = classify(req.uri().path());
        let method = method_label(req.method());
        let id = request_id_of(req.headers());
        let header = HeaderValue::from_str(&id).ok();
        if let Some(v) = &header {
            req.headers_mut().insert(REQUEST_ID_HEADER, v.clone());
        }
        let span = tracing::info_span!(
            "request",
            node = self.app.shared().id,
            request_id = %id,
            method = %method,
            route = %route.template,
        );
        let app = self.app.clone();
        let permit = match route.kind {
            RouteKind::Public => match app.shared().admission.try_admit() {
                Ok(p) => Some(p),
                Err(e) => {
                    app.shared().metrics.overloaded();
                    let mut resp = e.into_reply();
                    let status = resp.status().as_u16();
                    span.in_scope(|| tracing::debug!(status, "refused: too many requests"));
                    app.shared().metrics.observe_request(
                        method,
                        route.template,
                        status,
                        start.elapsed(),
                    );
                    if let Some(v) = header {
                        resp.headers_mut().insert(REQUEST_ID_HEADER, v);
                    }
                    return Box::pin(async move { Ok(resp) });
                }
            },
            RouteKind::Probe | RouteKind::RaftRpc => None,
        };
        let admission = Admission(Arc::new(Mutex::new(permit)));
        req.extensions_mut().insert(admission.clone());
        let from_peer =
            peer_check(route.template, req.headers()).map(|check| (check, req.headers().clone()));
        let mut inner = self.inner.clone();
        let served = async move {
            let admitted = match from_peer {
                Some((check, headers)) => admit_peer(&app, check, &headers).await,
                None => Ok(()),
            };
            let handled = match admitted {
                Ok(()) => inner.call(req).await,
                Err(e) => Ok(e.into_reply()),
            };
            let mut resp = match handled {
                Ok(resp) => resp,
                Err(never) => match never {},
            };
            drop(admission.take());
            let elapsed = start.elapsed();
            let status = resp.status().as_u16();
            app.shared()
                .metrics
                .observe_request(method, route.template, status, elapsed);
            let latency_ms = elapsed.as_secs_f64() * 1000.0;
            if route.kind == RouteKind::RaftRpc {
                tracing::trace!(status, latency_ms, "served");
            } else {
                tracing::debug!(status, latency_ms, "served");
            }
            if let Some(v) = header {
                resp.headers_mut().insert(REQUEST_ID_HEADER, v);
            }
            Ok(resp)
        };
        Box::pin(REQUEST_ID.scope(id, served.instrument(span)))
    }
}

/// What a request from another node must show before it is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PeerCheck {
    /// The cluster secret (a peer asking who this node is).
    Secret,
    /// The cluster secret, then the identity headers ([`crate::transport::identity`]); `joining` for a
    /// sender that has no cluster yet.
    Identity {
        /// Admit a sender without a cluster.
        joining: bool,
    },
}

/// What a request must show as coming from another node: the Raft RPCs, joins and requests
/// forwarded by a peer show the secret and their identity, `/raft/identity` the secret;
/// `None` for a client's request.
fn peer_check(template: &str, headers: &HeaderMap) -> Option<PeerCheck> {
    match template {
        "/raft/append" | "/raft/vote" | "/raft/snapshot" => {
            Some(PeerCheck::Identity { joining: false })
        }
        "/raft/join" => Some(PeerCheck::Identity { joining: true }),
        "/raft/identity" => Some(PeerCheck::Secret),
        _ if headers.contains_key(FORWARDED_HEADER) => Some(PeerCheck::Identity { joining: false }),
        _ => None,
    }
}

/// Checks a request from another node: the secret first (401, saying nothing of this node
/// to a stranger), then its identity (421).
async fn admit_peer(
    app: &RegistryApp,
    check: PeerCheck,
    headers: &HeaderMap,
) -> Result<(), crate::error::ApiError> {
    app.authorize_peer(headers).inspect_err(|e| {
        tracing::warn!(error = %e, "refused a request between nodes without the cluster secret");
    })?;
    match check {
        PeerCheck::Secret => Ok(()),
        PeerCheck::Identity { joining } => app.shared().identity.admit(headers, joining).await,
    }
}
