//! In-process clusters: every node is a `registry_node::Node` in this test process, on its
//! own loopback port and data directory.

mod cinderclient;
mod t10_replication;
mod t12_snapshot_policy;
mod t20_restart;
mod t25_shutdown;
mod t30_cinder_api;
mod t40_registryctl;
mod t41_reporter;
mod t42_settings;
mod t43_events;
mod t44_overload;
mod t50_auth;
mod t60_observability;
mod t65_connections;
mod t66_tls;
mod t70_decoding;
mod t80_integrity;
