//! Cinder's Block Storage v3 `os-services` resource, so that unchanged OpenStack tooling
//! (python-cinderclient, openstackclient, scripts written for Cinder) lists and administers
//! the services this registry keeps.
//!
//! The HTTP routes are in `routes/cinder.rs`; this module holds what they are made of:
//!
//! - [`microversion`]: the `OpenStack-API-Version: volume 3.N` negotiation (3.0 to 3.71);
//! - [`versions`]: the discovery documents of `GET /` and `GET /v3/`;
//! - [`query`]: the filters of `GET /v3/os-services`;
//! - [`view`]: a service as Cinder lists it at each microversion;
//! - [`actions`]: the bodies and answers of `PUT /v3/os-services/{action}`;
//! - [`fault`]: Cinder's fault names (its errors are the API's one [`crate::error::ApiError`],
//!   rendered as Cinder's fault document);
//!
//! Everything is translated to and from the registry's own API: a list reads the same
//! records as `GET /v1/services` ([`crate::read::listing::Listing`]), and an action commits the
//! same command as `PUT /v1/services/{action}`. A node that must forward to the leader forwards the
//! *native* request and renders the leader's native answer as Cinder does, so the leader's
//! answer never depends on the client's microversion and Cinder headers need no pass-through.

pub mod actions;
pub mod fault;
pub mod microversion;
pub mod query;
pub mod versions;
pub mod view;

pub use microversion::ApiVersion;
