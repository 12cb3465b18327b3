//! `registry-node restore --snapshot FILE --config CFG`: prepares a node's empty data
//! directory from a backup, for a new cluster ([`registry_storage::restore`]). Every member is
//! restored from the same file; once started, they bootstrap a new cluster together (a new
//! cluster id: a node of the old cluster cannot mix with it) holding every record of the
//! backup, registry time resuming from the backup's.

use std::path::Path;

use registry_storage::StoreError;

use crate::cli::snapshot::describe;
use crate::config::NodeConfig;

/// Why a restore was refused.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The backup could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The backup is damaged, or the data directory is not empty.
    #[error("restore refused: {0}")]
    Store(#[from] StoreError),
}

/// Restores `snapshot` into the data directory of `config`; answers what was restored.
pub fn restore(config: &NodeConfig, snapshot: &Path) -> Result<String, RestoreError> {
    let bytes = std::fs::read(snapshot).map_err(|source| RestoreError::Read {
        path: snapshot.to_path_buf(),
        source,
    })?;
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
