//! HTTP layer of the heartbeat registry (warp), laid out by the path a request takes:
//!
//! - [`server`]: the accept loop and the layer in front of every route: request ids and
//!   their `tracing` span, the bound on concurrent requests, peer admission before a body is
//!   read, latency metrics;
//! - [`routes`]: the public API (`/v1/*`), Cinder's `/v3/*` ([`cinder`]) and the probes, as
//!   warp filters;
//! - [`mod@write`]: the write path: group commit on the leader ([`write::batcher`]), answering a
//!   write;
//! - [`forward`]: reaching the leader from another node: batched heartbeats, relayed
//!   requests, waiting for an election;
//! - [`read`]: the read path: consistency levels, the read floor, listing, freshness;
//! - [`status`]: health, readiness, the cluster view, `/metrics`;
//! - [`transport`]: how nodes talk to each other: the Raft RPCs (their encoding, the
//!   client that sends them, the routes that serve them), the identity every request
//!   between nodes carries, and the peer client;
//! - [`shared::Shared`]: what all of them use of a node; [`app::RegistryApp`] holds it and
//!   the paths, for the routes;
//! - [`group_commit`]: the batching loop of the batcher and the forwarder, and their bounds;
//! - [`metrics`]: the counters and histograms updated as things happen;
//! - [`liveness`]: `up`/`down`, computed at read time;
//! - [`wire`]: JSON request and response bodies, validated; [`json`]: lists and answers
//!   written out by hand with the bytes `serde_json` writes for [`wire`]'s types;
//! - [`request_id`]: the id every request gets, and carries when forwarded;
//! - [`auth`]: tokens, roles and the cluster secret; [`audit`]: who made each
//!   administrative change, stored in its log entry and written as an `audit` line;
//! - [`replace`]: the leader puts back a node whose store was created anew;
//! - [`error::ApiError`]: every error a route answers, mapped to HTTP in one place.
#![deny(missing_docs)]

pub mod app;
pub mod audit;
pub mod auth;
pub mod cinder;
pub mod cluster_settings;
pub mod connections;
pub mod error;
pub mod forward;
pub mod group_commit;
pub mod json;
pub mod liveness;
pub mod metrics;
pub mod read;
pub mod replace;
pub mod request_id;
pub mod routes;
pub mod server;
pub mod shared;
pub mod shedding;
pub mod status;
pub mod transport;
pub mod watch;
pub mod wire;
pub mod write;

pub use app::{AppTasks, RegistryApp};
pub use error::ApiError;
pub use shared::ApiSettings;
