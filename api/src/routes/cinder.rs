//! Cinder's Block Storage v3 API, `os-services` resource (see [`crate::cinder`]):
//!
//! - `GET /`: 300 with the versions document (cinderclient's discovery);
//! - `GET /v3`, `GET /v3/`: 200 with the versions document (openstackclient's discovery);
//! - `GET /v3[/{project_id}]/os-services[?host=H][&binary=B][&consistency=stale]`;
//! - `PUT /v3[/{project_id}]/os-services/{action}`.
//!
//! Every answer carries `x-openstack-request-id: req-<uuid>`, errors also
//! `x-compute-request-id`, and every answer under `/v3` after a successful microversion
//! negotiation `OpenStack-API-Version: volume 3.N` and `Vary: OpenStack-API-Version`. Every
//! error is a Cinder fault document, a refusal by the route's gate included (a missing token,
//! an overloaded node). Any project segment routes: clients send `admin` as well as hex ids.
//!
//! Reads and writes go through the registry's own paths ([`crate::read`],
//! [`crate::write`]); when the leader must serve them, the *native* request
//! (`GET /v1/services`, `PUT /v1/services/{action}`) is forwarded and the leader's native
//! answer rendered here, so a follower answers exactly as the leader would.

use std::future::poll_fn;
use std::pin::Pin;

use bytes::{Buf, Bytes, BytesMut};
use futures::Stream;
use warp::http::header::{HOST, VARY};
use warp::http::{HeaderMap, HeaderValue, Method, StatusCode};
use warp::hyper::body::Body as _;
use warp::{Filter, Rejection, Reply};

use super::route::{gate, name, Access, Gate, Pass, Route};
use super::{body, raw_query, with_app, MAX_BODY_BYTES};
use crate::app::RegistryApp;
use crate::auth::Role;
use crate::cinder::actions::{ActionRequest, CinderAction};
use crate::cinder::microversion::{self, ApiVersion};
use crate::cinder::query::ListQuery;
use crate::cinder::versions::versions_doc;
use crate::cinder::view::{listing_response, services_response};
use crate::error::{ApiError, ErrorBody};
use crate::read::ReadAt;
use crate::request_id::{is_request_id, new_request_id, COMPUTE_HEADER, OPENSTACK_HEADER};
use crate::transport::peer::registry_headers;
use crate::transport::tls::Scheme;
use crate::wire::{action_command, ServicesOut, ServicesQuery};
use crate::write::Written;

/// The resource `os-services` is the only one served under `/v3`.
const RESOURCE: &str = "os-services";
/// Largest native answer read back from the leader (a list of many thousand services).
const MAX_FORWARDED_ANSWER_BYTES: usize = 64 * 1024 * 1024;

const ROOT: Route = Route::public("/", Access::Open);
const VERSIONS: Route = Route::public("/v3/", Access::Open);
const LIST: Route = Route::public("/v3/os-services", Access::Client(Role::Reader));
const PROJECT_LIST: Route =
    Route::public("/v3/{project_id}/os-services", Access::Client(Role::Reader));
const ACTION: Route = Route::public("/v3/os-services/{action}", Access::Client(Role::Admin));
const PROJECT_ACTION: Route = Route::public(
    "/v3/{project_id}/os-services/{action}",
    Access::Client(Role::Admin),
);
const UNKNOWN: Route = Route::public("/v3/{unknown}", Access::Open);

/// `GET /` and everything under `/v3`. Any project segment routes (clients send `admin` as
/// well as hex ids); a path that is `os-services` both ways is the list.
pub(super) fn routes(
    app: RegistryApp,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    let versions = warp::path("v3")
        .and(warp::path::end())
        .map(|| Resource::Versions);
    let list = warp::path!("v3" / "os-services").map(|| Resource::List);
    let project_list = warp::path!("v3" / String / "os-services").map(|_| Resource::List);
    let action = warp::path!("v3" / "os-services" / String).map(Resource::Action);
    let project_action =
        warp::path!("v3" / String / "os-services" / String).map(|_, a| Resource::Action(a));
    let unknown = warp::path("v3")
        .and(warp::path::tail())
        .map(|tail: warp::path::Tail| Resource::Unknown(tail.as_str().to_string()));
    root(app.clone())
        .or(v3(&app, &VERSIONS, versions))
        .unify()
        .or(v3(&app, &LIST, list))
        .unify()
        .or(v3(&app, &PROJECT_LIST, project_list))
        .unify()
        .or(v3(&app, &ACTION, action))
        .unify()
        .or(v3(&app, &PROJECT_ACTION, project_action))
        .unify()
        .or(v3(&app, &UNKNOWN, unknown))
        .unify()
}

/// The request's id ([`crate::server`] sets `x-request-id` on every request) when it has
/// OpenStack's `req-<uuid>` form, so both headers and the logs name the same id; else a new
/// one in that form.
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(crate::request_id::REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|id| is_request_id(id))
        .map_or_else(new_request_id, str::to_string)
}

/// `GET /`: 300 Multiple Choices with the versions document; other methods 405.
fn root(
    app: RegistryApp,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    let scheme = Scheme::of(app.shared().tls.as_deref()).as_str();
    warp::path::end()
        .and(name(&ROOT))
        .and(gate(&app, &ROOT))
        .and(warp::method())
        .and(warp::header::headers_cloned())
        .map(move |gate: Gate, method: Method, headers: HeaderMap| {
            let rid = request_id(&headers);
            let resp = match gate {
                Err(e) => e.into_fault(),
                Ok(_) if method == Method::GET => {
                    let doc = versions_doc(scheme, host_of(&headers));
                    warp::reply::with_status(warp::reply::json(&doc), StatusCode::MULTIPLE_CHOICES)
                        .into_response()
                }
                Ok(_) => ApiError::method_not_allowed(&method, "/", "GET").into_fault(),
            };
            stamp(resp, &rid, None)
        })
}

/// What a path under `/v3` names.
#[derive(Debug, PartialEq, Eq)]
enum Resource {
    /// `/v3`, `/v3/`: the versions document.
    Versions,
    /// `[/{project_id}]/os-services`: the list.
    List,
    /// `[/{project_id}]/os-services/{action}`.
    Action(String),
    /// Anything else: the path after `/v3/`.
    Unknown(String),
}

/// The route `route` under `/v3`, on the paths `path` matches.
fn v3(
    app: &RegistryApp,
    route: &'static Route,
    path: impl Filter<Extract = (Resource,), Error = Rejection> + Clone,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    path.and(name(route))
        .and(gate(app, route))
        .and(warp::method())
        .and(raw_query())
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .and(with_app(app.clone()))
        .then(handle_v3)
}

/// Negotiates the microversion, serves the request, and stamps the answer's headers.
async fn handle_v3<S, B>(
    resource: Resource,
    gate: Gate,
    method: Method,
    raw_query: String,
    headers: HeaderMap,
    body: S,
    app: RegistryApp,
) -> warp::reply::Response
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf + Send,
{
    let rid = request_id(&headers);
    let version = match ApiVersion::from_headers(&headers) {
        Ok(v) => v,
        Err(fault) => return stamp(fault.into_fault(), &rid, None),
    };
    let served = async {
        let request = Request {
            method,
            version,
            raw_query,
            pass: gate?,
            app,
        };
        request.serve(resource, body).await
    };
    let resp = match served.await {
        Ok(resp) => resp,
        Err(fault) => {
            if let ApiError::Internal(_) = fault {
                tracing::warn!(request_id = %rid, error = %fault, "cinder API request failed");
            } else {
                tracing::debug!(request_id = %rid, error = %fault, "cinder API fault");
            }
            fault.into_fault()
        }
    };
    stamp(resp, &rid, Some(version))
}

/// A request under `/v3` whose microversion was negotiated and whose gate passed.
struct Request {
    method: Method,
    version: ApiVersion,
    raw_query: String,
    pass: Pass,
    app: RegistryApp,
}

impl Request {
    async fn serve<S, B>(
        self,
        resource: Resource,
        body: S,
    ) -> Result<warp::reply::Response, ApiError>
    where
        S: Stream<Item = Result<B, warp::Error>> + Send,
        B: Buf + Send,
    {
        match resource {
            Resource::Versions => {
                self.allow(Method::GET, "/v3/", "GET")?;
                let scheme = Scheme::of(self.app.shared().tls.as_deref()).as_str();
                let doc = versions_doc(scheme, host_of(&self.pass.headers));
                Ok(warp::reply::json(&doc).into_response())
            }
            Resource::List => {
                self.allow(Method::GET, RESOURCE, "GET")?;
                self.list().await
            }
            Resource::Action(segment) => {
                let action = CinderAction::parse(&segment)?;
                self.allow(Method::PUT, &format!("{RESOURCE}/{segment}"), "PUT")?;
                let body = body::read(&self.pass.headers, body, MAX_BODY_BYTES).await?;
                self.act(action, body).await
            }
            Resource::Unknown(tail) => Err(ApiError::NotFound(format!(
                "The resource could not be found: /v3/{} (only {RESOURCE} is served).",
                tail.trim_start_matches('/')
            ))),
        }
    }

    /// 405 unless the request uses `method`.
    fn allow(&self, method: Method, resource: &str, allow: &'static str) -> Result<(), ApiError> {
        if self.method == method {
            Ok(())
        } else {
            Err(ApiError::method_not_allowed(&self.method, resource, allow))
        }
    }

    /// `GET os-services`: the services, read at the requested consistency.
    async fn list(self) -> Result<warp::reply::Response, ApiError> {
        let query = ListQuery::parse(&self.raw_query)?;
        let native = query.native();
        let forward_path = native_list_path(&native)?;
        let forwarded = self.pass.forwarded();
        let read = self.app.read();
        let (mut resp, freshness) = match read.at(&native, &forward_path, forwarded).await? {
            ReadAt::Here => {
                let listing = read.services(&native);
                let fresh = read.freshness_headers(listing.applied, query.consistency.as_str());
                (
                    listing_response(listing, self.version, self.pass.permit),
                    fresh,
                )
            }
            ReadAt::Forwarded(resp) => {
                let answer = NativeAnswer::read(resp).await?.success()?;
                let out: ServicesOut = serde_json::from_slice(&answer.body).map_err(|e| {
                    ApiError::Internal(format!("the leader's service list is unreadable: {e}"))
                })?;
                (
                    services_response(out.services, self.version, self.pass.permit),
                    answer.registry_headers,
                )
            }
        };
        resp.headers_mut().extend(freshness);
        Ok(resp)
    }

    /// `PUT os-services/{action}`: validates, commits through the leader, answers as Cinder.
    async fn act(
        &self,
        action: CinderAction,
        body: Bytes,
    ) -> Result<warp::reply::Response, ApiError> {
        let request = ActionRequest::parse(action, &body)?;
        let cmd = action_command(request.native, &request.body)?;
        let native_body = serde_json::to_vec(&request.body)
            .map_err(|e| ApiError::Internal(format!("cannot encode the registry action: {e}")))?;
        let path = format!("/v1/services/{}", request.native.name());
        let written = self
            .app
            .write()
            .command(
                cmd,
                (Method::PUT, &path),
                native_body.into(),
                &self.pass.caller,
            )
            .await?;
        match written {
            Written::Here(_) => {}
            Written::NotFound => return Err(request.not_found()),
            Written::Forwarded(resp) => {
                let answer = NativeAnswer::read(resp).await?;
                if answer.status == StatusCode::NOT_FOUND {
                    return Err(request.not_found());
                }
                answer.success()?;
            }
        }
        Ok(match &request.answer {
            Some(answer) => warp::reply::json(answer).into_response(),
            None => warp::reply::with_status(warp::reply(), StatusCode::OK).into_response(),
        })
    }
}

/// The native list request forwarded to the leader (its default consistency is
/// linearizable, the only one ever forwarded).
fn native_list_path(native: &ServicesQuery) -> Result<String, ApiError> {
    let forwarded = ServicesQuery {
        consistency: None,
        ..native.clone()
    };
    let query = serde_urlencoded::to_string(&forwarded)
        .map_err(|e| ApiError::Internal(format!("cannot encode the list query: {e}")))?;
    Ok(if query.is_empty() {
        "/v1/services".into()
    } else {
        format!("/v1/services?{query}")
    })
}

/// The leader's answer to a forwarded native request.
struct NativeAnswer {
    status: StatusCode,
    /// Its `x-registry-*` headers (freshness of a read).
    registry_headers: HeaderMap,
    body: Bytes,
}

impl NativeAnswer {
    /// Reads a forwarded answer whole.
    async fn read(resp: warp::reply::Response) -> Result<Self, ApiError> {
        let (parts, mut body) = resp.into_parts();
        let mut buf = BytesMut::new();
        while let Some(frame) = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
            let frame = frame.map_err(|e| {
                ApiError::Unavailable(format!("reading the leader's answer failed: {e}"))
            })?;
            if let Ok(data) = frame.into_data() {
                if buf.len() + data.len() > MAX_FORWARDED_ANSWER_BYTES {
                    return Err(ApiError::Internal(format!(
                        "the leader's answer exceeds {MAX_FORWARDED_ANSWER_BYTES} bytes"
                    )));
                }
                buf.extend_from_slice(&data);
            }
        }
        let registry_headers = registry_headers(&parts.headers);
        Ok(Self {
            status: parts.status,
            registry_headers,
            body: buf.freeze(),
        })
    }

    /// The answer if it is a success, else its error as a Cinder fault.
    fn success(self) -> Result<Self, ApiError> {
        if self.status.is_success() {
            return Ok(self);
        }
        let message = serde_json::from_slice::<ErrorBody>(&self.body)
            .map(|e| e.error.message)
            .unwrap_or_else(|_| String::from_utf8_lossy(&self.body).into_owned());
        Err(ApiError::from_status(self.status, message))
    }
}

/// The request's `Host` header, for the versions document's `self` link.
fn host_of(headers: &HeaderMap) -> Option<&str> {
    headers.get(HOST).and_then(|h| h.to_str().ok())
}

/// Adds the request id (twice on errors) and, under `/v3`, the negotiated microversion.
fn stamp(
    mut resp: warp::reply::Response,
    request_id: &str,
    version: Option<ApiVersion>,
) -> warp::reply::Response {
    let error = resp.status().is_client_error() || resp.status().is_server_error();
    let headers = resp.headers_mut();
    if let Ok(id) = HeaderValue::from_str(request_id) {
        if error {
            headers.insert(COMPUTE_HEADER, id.clone());
        }
        headers.insert(OPENSTACK_HEADER, id);
    }
    if let Some(version) = version {
        if let Ok(v) = HeaderValue::from_str(&version.header_value()) {
            headers.insert(microversion::HEADER, v);
        }
        headers.insert(VARY, HeaderValue::from_static("OpenStack-API-Version"));
    }
    resp
}
