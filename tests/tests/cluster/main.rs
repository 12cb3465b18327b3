//! In-process clusters: every node is a `registry_node::Node` in this test process, on its
//! own loopback port and data directory.

mod t10_replication;
mod t20_restart;
mod t30_cinder_api;
