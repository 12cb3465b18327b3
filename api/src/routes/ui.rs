//! The dashboard: `GET /ui` (a redirect to `/ui/`), `GET /ui/` (the page) and
//! `GET /ui/{asset}` (its script, style sheet and icon), embedded in the node binary.
//!
//! The files hold no data, so they are served without a token; every API call the page
//! makes carries the token its user typed (see `api/src/ui/app.js`). They are served with
//! a strict `Content-Security-Policy` (nothing but this node's own files and API: no inline
//! script, no other origin), `X-Content-Type-Options: nosniff` and `Cache-Control: no-cache`
//! (a browser revalidates after a node upgrade instead of running a stale script against a
//! newer API). An unknown asset is a 404 in the API's JSON error shape.

use warp::http::header::{
    HeaderName, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, LOCATION, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use warp::http::{HeaderValue, Method, StatusCode};
use warp::path::FullPath;
use warp::{Filter, Rejection};

use super::route::{gate, name, Access, Gate, Route};
use crate::app::RegistryApp;
use crate::error::ApiError;

const REDIRECT: Route = Route::public("/ui", Access::Open);
const INDEX: Route = Route::public("/ui/", Access::Open);
const ASSET: Route = Route::public("/ui/{asset}", Access::Open);

/// What the page may load and where it may connect: this node only. No inline script or
/// style attribute, no plugin, no framing, no form posting elsewhere.
pub const CONTENT_SECURITY_POLICY_VALUE: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One embedded file of the dashboard.
#[derive(Debug)]
pub struct Asset {
    /// Its name under `/ui/`.
    pub name: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its bytes.
    pub body: &'static [u8],
}

/// The page itself, served at `/ui/` (and `/ui/index.html`).
pub const INDEX_HTML: Asset = Asset {
    name: "index.html",
    content_type: "text/html; charset=utf-8",
    body: include_bytes!("../ui/index.html"),
};

/// Every file of the dashboard, by name.
pub const ASSETS: [Asset; 4] = [
    INDEX_HTML,
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../ui/app.js"),
    },
    Asset {
        name: "style.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../ui/style.css"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../ui/favicon.svg"),
    },
];

/// The asset named `name`, if the dashboard has one.
pub fn asset(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.name == name)
}

pub(super) fn routes(
    app: RegistryApp,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    redirect(&app)
        .or(index(&app))
        .unify()
        .or(assets(&app))
        .unify()
}

/// `GET /ui`: 301 to `/ui/`, so that the page's relative links resolve under `/ui/`.
fn redirect(
    app: &RegistryApp,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    warp::path("ui")
        .and(warp::path::end())
        .and(exactly("/ui"))
        .and(name(&REDIRECT))
        .and(warp::method())
        .and(gate(app, &REDIRECT))
        .map(|method: Method, gate: Gate| {
            answer(&method, gate, "/ui", || {
                let mut resp = warp::reply::Response::new(Vec::new().into());
                *resp.status_mut() = StatusCode::MOVED_PERMANENTLY;
                // Relative: it resolves to `/ui/` here and under a proxy's path prefix.
                resp.headers_mut()
                    .insert(LOCATION, HeaderValue::from_static("ui/"));
                resp
            })
        })
}

/// `GET /ui/`: the page.
fn index(
    app: &RegistryApp,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    warp::path("ui")
        .and(warp::path::end())
        .and(name(&INDEX))
        .and(warp::method())
        .and(gate(app, &INDEX))
        .map(|method: Method, gate: Gate| {
            answer(&method, gate, "/ui/", || file_response(&INDEX_HTML))
        })
}

/// `GET /ui/{asset}`: one of [`ASSETS`], or a 404 naming the ones there are.
fn assets(
    app: &RegistryApp,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    warp::path!("ui" / String)
        .and(name(&ASSET))
        .and(warp::method())
        .and(gate(app, &ASSET))
        .map(|wanted: String, method: Method, gate: Gate| {
            let Some(found) = asset(&wanted) else {
                let known: Vec<&str> = ASSETS.iter().map(|a| a.name).collect();
                return ApiError::NotFound(format!(
                    "the dashboard has no file '{wanted}'; it has: {}",
                    known.join(", ")
                ))
                .into_reply();
            };
            answer(&method, gate, "/ui/{asset}", || file_response(found))
        })
}

/// Passes only a request whose whole path is `path` (warp's `end()` also passes a trailing
/// slash, which is the page's own path, not the redirect's).
fn exactly(path: &'static str) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::path::full()
        .and_then(move |full: FullPath| async move {
            if full.as_str() == path {
                Ok(())
            } else {
                Err(warp::reject::not_found())
            }
        })
        .untuple_one()
}

/// The answer to `method` on `resource`: `ok()` for `GET` and `HEAD`, 405 otherwise, the
/// gate's error (a node over its bound on requests) first; the dashboard's headers on each.
fn answer(
    method: &Method,
    gate: Gate,
    resource: &str,
    ok: impl FnOnce() -> warp::reply::Response,
) -> warp::reply::Response {
    let mut resp = match gate {
        Err(e) => return e.into_reply(),
        Ok(_) if method == Method::GET || method == Method::HEAD => ok(),
        Ok(_) => return ApiError::method_not_allowed(method, resource, "GET, HEAD").into_reply(),
    };
    let headers = resp.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        headers.insert(name, HeaderValue::from_static(value));
    }
    resp
}

/// Headers of every file and redirect of the dashboard (see the module's documentation).
const SECURITY_HEADERS: [(HeaderName, &str); 5] = [
    (CACHE_CONTROL, "no-cache"),
    (CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY_VALUE),
    (X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (X_FRAME_OPTIONS, "DENY"),
    (REFERRER_POLICY, "no-referrer"),
];

/// A 200 carrying `asset`.
fn file_response(asset: &'static Asset) -> warp::reply::Response {
    let mut resp = warp::reply::Response::new(asset.body.into());
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(asset: &Asset) -> &str {
        std::str::from_utf8(asset.body).unwrap_or_default()
    }

    /// The page loads its script and style sheet as files under `/ui/` (the policy forbids
    /// inline ones and every other origin), and names nothing the node does not serve.
    #[test]
    fn the_page_loads_only_its_own_files() {
        let html = text(&INDEX_HTML);
        for (tag, attr) in [("<script", "src"), ("<link", "href")] {
            for part in html.split(tag).skip(1) {
                let element = part.split('>').next().unwrap_or_default();
                let value = element
                    .split(&format!("{attr}=\""))
                    .nth(1)
                    .and_then(|v| v.split('"').next());
                let Some(value) = value else {
                    panic!("{tag} without {attr}: an inline script or style ({element})");
                };
                assert!(
                    asset(value).is_some(),
                    "{tag} {attr}={value:?} names a file the node does not serve"
                );
            }
        }
        assert!(html.contains("src=\"app.js\""), "the page loads app.js");
        for word in html.split_whitespace() {
            let attribute = word.split('=').next().unwrap_or_default();
            assert!(
                !(word.contains("=\"") && (attribute == "style" || attribute.starts_with("on"))),
                "no style or event-handler attribute (the policy blocks them): {word}"
            );
        }
    }

    /// Every asset is non-empty UTF-8 with a content type and a name of its own.
    #[test]
    fn assets_are_named_once_and_typed() {
        for (i, a) in ASSETS.iter().enumerate() {
            assert!(!a.body.is_empty(), "{} is empty", a.name);
            assert!(std::str::from_utf8(a.body).is_ok(), "{} is UTF-8", a.name);
            assert!(a.content_type.contains('/'), "{} has a type", a.name);
            assert!(
                ASSETS[..i].iter().all(|b| b.name != a.name),
                "{} named twice",
                a.name
            );
        }
    }
}
