//! How nodes talk to each other: the one seam between a node and its peers.
//!
//! - [`rpc`]: the encoding of the Raft RPCs (a version byte, then bincode);
//! - [`formats`]: the storage format each peer reads (from a header of its RPC answers),
//!   so a leader writes only what every member decodes;
//! - [`network`]: openraft's `RaftNetwork`, the client that sends them over HTTP;
//! - [`routes`]: the routes that serve them, `POST /raft/{append,vote,snapshot}`, and the
//!   node-to-node routes `GET /raft/identity` and `POST /raft/join`;
//! - [`snapshot_receiver`]: a snapshot received chunk by chunk, installed only whole;
//! - [`identity`]: the cluster id and target incarnation every request between nodes
//!   carries, checked before its body is read;
//! - [`peer`]: the HTTP client for the other requests between nodes (forwarded writes and
//!   reads, identity, join);
//! - [`tls`]: the node's TLS: its server's certificate, the client certificate each request
//!   came with, and the HTTPS client config of its requests to peers (the URL scheme too).
//!
//! Every request between nodes leaves through [`network`] or [`peer`], with the cluster
//! secret and the identity headers (over mutual TLS when the node has TLS), and arrives
//! through the routes' peer admission ([`crate::routes::route`]) and [`routes`]: peer
//! authentication sits here.

pub mod formats;
pub mod identity;
pub mod network;
pub mod peer;
pub mod routes;
pub mod rpc;
pub mod snapshot_receiver;
pub mod tls;

pub use network::HttpNetwork;
