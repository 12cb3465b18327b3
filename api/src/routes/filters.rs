//! Small warp filters every route module uses.

use std::convert::Infallible;

use warp::Filter;

use crate::app::RegistryApp;

/// The raw query string, empty when there is none.
pub fn raw_query() -> impl Filter<Extract = (String,), Error = Infallible> + Clone {
    warp::query::raw().or(warp::any().map(String::new)).unify()
}

pub(crate) fn with_app(
    app: RegistryApp,
) -> impl Filter<Extract = (RegistryApp,), Error = Infallible> + Clone {
    warp::any().map(move || app.clone())
}
