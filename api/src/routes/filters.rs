//! Small warp filters every route module uses.

use std::convert::Infallible;

use warp::Filter;

use crate::app::RegistryApp;
use crate::error::ApiError;

/// The raw query string, empty when there is none.
pub fn raw_query() -> impl Filter<Extract = (String,), Error = Infallible> + Clone {
    warp::query::raw().or(warp::any().map(String::new)).unify()
}

pub(crate) fn with_app(
    app: RegistryApp,
) -> impl Filter<Extract = (RegistryApp,), Error = Infallible> + Clone {
    warp::any().map(move || app.clone())
}

/// Parses a query string, refusing unknown keys and bad values with a clear message.
pub fn parse_query<T: serde::de::DeserializeOwned>(raw: &str) -> Result<T, ApiError> {
    serde_urlencoded::from_str(raw)
        .map_err(|e| ApiError::BadRequest(format!("invalid query string: {e}")))
}
