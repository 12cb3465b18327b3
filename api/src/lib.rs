//! HTTP layer of the heartbeat registry (warp).
//!
//! - [`routes`]: the public API (`/v1/heartbeats`, `/v1/services`, `/v1/cluster`), the
//!   probes (`/health`, `/ready`, `/metrics`) and the internal Raft RPC routes (`/raft/*`,
//!   bincode bodies);
//! - [`server`]: serves the routes behind one layer: request ids and their `tracing` span,
//!   the bound on concurrent requests, latency metrics;
//! - [`metrics`]: the Prometheus metrics;
//! - [`app::RegistryApp`]: what a route needs of a node (its Raft handle, its in-memory
//!   services table, its settings), with the write path (leader commit, forwarding) and the
//!   read path (consistency levels);
//! - [`liveness`]: `up`/`down`, computed at read time;
//! - [`wire`]: JSON request and response bodies, validated;
//! - [`listing`], [`json`]: the service lists, taken from the state machine under its lock
//!   and written out after, by hand, with the bytes `serde_json` writes for [`wire`]'s types;
//! - [`error::ApiError`]: every error a route answers, mapped to HTTP in one place;
#![deny(missing_docs)]

pub mod app;
pub mod auth;
pub mod batcher;
pub mod cinder;
pub mod error;
pub mod forwarder;
pub mod identity;
pub mod json;
pub mod listing;
pub mod liveness;
pub mod metrics;
pub mod peer;
pub mod replace;
pub mod routes;
pub mod rpc;
pub mod server;
pub mod snapshot_receiver;
pub mod wire;

pub use app::{ApiSettings, AppTasks, RegistryApp};
pub use error::ApiError;
