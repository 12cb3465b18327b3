//! Storage layer of the heartbeat registry.
//!
//! It holds the data model (the service record, modelled on Cinder's `services` table, and
//! the commands that change it), the Raft type configuration, and the sled-backed
//! implementations of openraft's [`RaftLogStorage`](openraft::storage::RaftLogStorage) and
//! [`RaftStateMachine`](openraft::storage::RaftStateMachine).
//!
//! One sled database per node holds the Raft log. The state machine is kept in memory
//! ([`ServicesState`]), so reads never scan sled, and on disk as the snapshot file beside the
//! database and the log after it ([`state_machine`]).
//!
//! Every value stored and every snapshot carries a format version and a checksum
//! ([`codec`], [`snapshot`]); every store knows its cluster and its own incarnation
//! ([`identity`]).
//!
//! This crate knows nothing of HTTP.
#![deny(missing_docs)]

pub mod clock;
pub mod codec;
pub mod disk;
pub mod error;
pub mod event_log;
pub mod events;
pub mod headroom;
pub mod identity;
pub mod ids;
mod legacy_records;
pub mod log_store;
pub mod model;
pub mod raft_tasks;
pub mod settings;
pub mod snapshot;
mod snapshot_file;
pub mod snapshot_policy;
pub mod state;
pub mod state_machine;
pub mod store;
mod trees;
pub mod types;
pub mod zones;

pub use clock::{ClockRate, RegistryClock};
pub use disk::DatabaseWatch;
pub use error::StoreError;
pub use event_log::EventLog;
pub use identity::{ClusterId, Incarnation, RestoredFrom, StoreIdentity};
pub use log_store::LogStore;
pub use model::{AdminAction, Command, CommandResponse, Heartbeat, ServiceKey, ServiceRecord};
pub use raft_tasks::RaftTasks;
pub use settings::LivenessSettings;
pub use state::{LastStamp, ServicesState, StateView};
pub use state_machine::StateMachineStore;
pub use store::{open_store, open_store_with, restore, RestoreSummary, Store, StoreOptions};
pub use types::{NodeId, RegistryNode, TypeConfig};
