//! `registry-node restore --snapshot FILE --config CFG`: prepares a node's empty data
//! directory from a backup, for a new cluster ([`registry_storage::restore`]). Every member is
//! restored from the same file; once started, they bootstrap a new cluster together (a new
//! cluster id: a node of the old cluster cannot mix with it) holding every record of the
//! backup, registry time resuming from the backup's.

use std::path::Path;

use crate::cli::snapshot::describe;
use crate::config::NodeConfig;
use crate::error::NodeError;

/// Restores `snapshot` into the data directory of `config`; answers what was restored.
/// A damaged backup, or a data directory that is not empty, is refused with
/// [`NodeError::Storage`].
pub fn restore(config: &NodeConfig, snapshot: &Path) -> Result<String, NodeError> {
    let bytes = std::fs::read(snapshot).map_err(NodeError::io("reading", snapshot))?;
    let summary = registry_storage::restore(&config.data_dir, &bytes)?;
    Ok(format!(
        "Restored node {} in {} from {}\n{}New incarnation: {}\n\
         Start every member restored from this file: together they form a new cluster.",
        config.node_id,
        config.data_dir.display(),
        snapshot.display(),
        describe(&summary.backup),
        summary.incarnation
    ))
}
