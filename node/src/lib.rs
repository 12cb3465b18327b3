//! The registry node: configuration, Raft wiring, the HTTP server, start-up and graceful
//! shutdown.
//!
//! A node is a library first: a Rust program starts one inside its own process with
//! [`Node::start`] (a config and an already-bound listener) and stops it with
//! [`Node::shutdown`], or hands both and a shutdown future to [`run`]. The `registry-node`
//! binary only parses arguments and calls [`run`].
//!
//! Beside the node: [`cli`], the commands of the `registryctl` binary (the reporter it runs
//! with `registryctl report` is `registry_client::Reporter`).
#![deny(missing_docs)]

mod bootstrap;
pub mod cli;
pub mod config;
mod error;
mod join;
mod node;
pub mod restore;
pub mod shutdown;
pub mod signals;
mod ticker;

pub use bootstrap::cluster_id_of;
pub use config::{NodeConfig, Peer, RaftSettings};
pub use error::NodeError;
pub use node::{run, Node, StartOptions};
pub use shutdown::{task, TaskWatch, SHUTDOWN_GRACE};
