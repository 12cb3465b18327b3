//! The names of the sled trees a store keeps: one per concern.

/// Tree of log entries, keyed by big-endian index so sled's order is the log's order.
pub(crate) const TREE_LOG: &str = "raft_log";
/// Tree of the log's metadata: vote, last purged log id, committed log id; and the store's
/// identity (format version, incarnation, cluster id).
pub(crate) const TREE_LOG_META: &str = "raft_log_meta";
/// Tree of the state machine's records and metadata in stores of formats 1 to 4, read once
/// and dropped when such a store is opened (see [`crate::legacy_records`]).
pub(crate) const TREE_SERVICES: &str = "services";
