//! The HTTP server of a node: warp's routes ([`crate::routes::all`]) behind one layer that
//! every request passes through, which
//! - gives the request an id: its `x-request-id` when valid (1 to
//!   [`MAX_REQUEST_ID_LEN`](crate::request_id::MAX_REQUEST_ID_LEN)
//!   characters of `[A-Za-z0-9_-]`), else a new one; the id is set on the request (so the
//!   routes and a forward to the leader carry it), echoed in the answer's `x-request-id`, and
//!   recorded in a `tracing` span around the handler, so every log line of the request
//!   names it;
//! - times the request into the latency histogram of its route's template (each route names
//!   itself, see [`crate::routes::route`]; `unmatched` when none did), and logs one line
//!   for it: at `debug`, or at `trace` for the Raft RPCs, which arrive many times a second.
//!
//! Admission under the bound on concurrent requests and the credentials of clients and
//! peers are checked by each route's gate, before it reads the body
//! ([`crate::routes::route`]).
//!
//! warp 0.4 has no hook that wraps a handler's future (its `trace` filter logs every request
//! at `info` and every 503 at `error`), so this layer is a tower `Service` around
//! [`warp::service`], and [`serve`] runs it on hyper as `warp::serve(..).incoming(..)
//! .graceful(..)` would: on an already-bound listener, stopping when `shutdown` resolves and
//! letting the requests in flight finish, for a grace; it returns once every connection has
//! ended. It speaks HTTP/1.1 only (every client of the registry, its peers included, does),
//! under the node's connection bounds ([`crate::connections`]): a cap on open connections
//! and a timeout for each request's head, which also closes idle keep-alive connections.
//!
//! A node with TLS ([`crate::transport::tls`]) serves HTTPS only: each connection's TLS
//! handshake runs in the connection's own task (a slow client never holds up the accept
//! loop), bounded by the same header timeout, and what it learnt of the client's certificate
//! goes into each request's extensions.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::either::Either;
use tower_service::Service;
use tracing::Instrument;
use warp::http::{HeaderValue, Method, Request};
use warp::hyper::server::conn::http1;
use warp::reply::Response;

use crate::app::RegistryApp;
use crate::request_id::{request_id_of, REQUEST_ID, REQUEST_ID_HEADER};
use crate::routes::route::{Matched, RouteKind};
use crate::transport::tls::WithClientCert;

/// The template of a request that matched no route.
const UNMATCHED: &str = "unmatched";

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
    let shared = Arc::clone(app.shared());
    let service = Observed { inner: routes, app };
    let header_timeout = shared.settings.connections.header_timeout;
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let graceful = GracefulShutdown::new();
    // Every connection's task, so that none outlives the server (each holds the node's app).
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
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
        let Some(slot) = shared.connections.open() else {
            shared.metrics.connection_refused();
            drop(stream);
            continue;
        };
        // Answers are written as they are ready (streamed lists in several writes): without
        // this, Nagle's algorithm holds a last small write until the client's delayed ACK.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
        let service = service.clone();
        let watcher = graceful.watcher();
        let http = http.clone();
        let tls = shared.tls.clone();
        connections.spawn(async move {
            // The connection's place under the cap, given back when it closes.
            let _slot = slot;
            let (io, cert) = match tls {
                None => (Either::Left(stream), None),
                Some(tls) => match tls.accept(stream, header_timeout).await {
                    Ok((stream, cert)) => (Either::Right(stream), Some(cert)),
                    Err(e) => {
                        tracing::debug!(remote = %remote, error = %e, "connection closed");
                        return;
                    }
                },
            };
            let svc = TowerToHyperService::new(WithClientCert {
                inner: service,
                cert,
            });
            let conn = http.serve_connection(TokioIo::new(io), svc);
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    // Event streams never finish by themselves: they end now, each with a last frame saying
    // so, and the drain waits only for the requests that do.
    shared.streams_stop.cancel();
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
        let method = method_label(req.method());
        let id = request_id_of(req.headers());
        let header = HeaderValue::from_str(&id).ok();
        if let Some(v) = &header {
            req.headers_mut().insert(REQUEST_ID_HEADER, v.clone());
        }
        // The route that matches names itself in the span and in `matched`.
        let span = tracing::info_span!(
            "request",
            node = self.app.shared().id,
            request_id = %id,
            method = %method,
            route = tracing::field::Empty,
        );
        let matched = Matched::default();
        req.extensions_mut().insert(matched.clone());
        let app = self.app.clone();
        let mut inner = self.inner.clone();
        let served = async move {
            let mut resp = match inner.call(req).await {
                Ok(resp) => resp,
                Err(never) => match never {},
            };
            let route = matched.route();
            let template = route.map_or(UNMATCHED, |r| r.template);
            let elapsed = start.elapsed();
            let status = resp.status().as_u16();
            app.shared()
                .metrics
                .observe_request(method, template, status, elapsed);
            let latency_ms = elapsed.as_secs_f64() * 1000.0;
            if route.is_some_and(|r| r.kind == RouteKind::RaftRpc) {
                tracing::trace!(status, latency_ms, "served");
            } else {
                tracing::debug!(status, latency_ms, route = template, "served");
            }
            if let Some(v) = header {
                resp.headers_mut().insert(REQUEST_ID_HEADER, v);
            }
            Ok(resp)
        };
        Box::pin(REQUEST_ID.scope(id, served.instrument(span)))
    }
}
