//! The registry's client side, for programs that talk to a registry without running one:
//! [`RegistryClient`], a typed client of the public HTTP API that tries every node in turn;
//! [`wire`], the API's JSON bodies and the checks every field passes; and [`reporter`], the
//! heartbeat loop a service embeds (Cinder's `report_state`); [`tls`], the CA and client
//! certificate of HTTPS endpoints.
//!
//! It depends on no server crate: no sled, openraft or warp. Embedding a reporter costs
//! reqwest, serde and a few tokio features.
#![deny(missing_docs)]

pub mod client;
pub mod error;
pub mod events;
pub mod reporter;
pub mod tls;
pub mod watch;
pub mod wire;

pub use client::{RegistryClient, POOL_IDLE_TIMEOUT};
pub use error::ClientError;
pub use reporter::{HealthCheck, HealthCommand, Reporter, ReporterConfig, ReporterHandle};
pub use tls::ClientTls;
