//! openraft's storage conformance suite, run against the sled log store and state machine.

use openraft::testing::{StoreBuilder, Suite};
use registry_storage::{open_store, ClusterId, LogStore, StateMachineStore, TypeConfig};
use tempfile::TempDir;

/// Builds a fresh store in a temporary directory, of one cluster (snapshots move between the
/// stores the suite builds); the directory lives as long as the test.
struct SledBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for SledBuilder {
    async fn build(
        &self,
    ) -> Result<(TempDir, LogStore, StateMachineStore), openraft::StorageError<u64>> {
        let dir = TempDir::new().map_err(|e| openraft::StorageIOError::write(&e))?;
        let store = open_store(dir.path()).map_err(|e| openraft::StorageIOError::write(&e))?;
        store
            .identity
            .adopt(ClusterId(1))
            .await
            .map_err(|e| openraft::StorageIOError::write(&e))?;
        Ok((dir, store.log, store.sm))
    }
}

/// Every property openraft requires of a storage implementation holds for ours.
#[test]
fn openraft_storage_suite() -> anyhow::Result<()> {
    Suite::test_all(SledBuilder)?;
    Ok(())
}
