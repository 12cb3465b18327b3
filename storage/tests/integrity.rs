//! What a store does with damaged, missing, foreign or newer data: its own snapshot file
//! damaged (at several offsets) or missing, a store written by a newer format or by none, a
//! snapshot of another cluster, a backup restored into a new store. Every case is refused with a clear error or
//! handled without losing anything; none is decoded into something else.

use std::path::Path;

use anyhow::{ensure, Context};
use chrono::DateTime;
use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::{CommittedLeaderId, EntryPayload, Membership, RaftSnapshotBuilder};
use registry_storage::error::NeededFor;
use registry_storage::state_machine::read_snapshot_data;
use registry_storage::types::{Entry, LogId};
use registry_storage::{
    open_store, restore, ClusterId, Command, Heartbeat, LogStore, ServicesState, StateMachineStore,
    StoreError,
};
use tempfile::TempDir;

const CLUSTER: ClusterId = ClusterId(0xc1);

fn log_id(index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(1, 1), index)
}

/// Entry 1 is the membership {1}; every later one heartbeats `host-{index % 4}`.
fn entries(upto: u64) -> Vec<Entry> {
    (1..=upto)
        .map(|i| Entry {
            log_id: log_id(i),
            payload: if i == 1 {
                EntryPayload::Membership(Membership::new(
                    vec![std::collections::BTreeSet::from([1])],
                    None,
                ))
            } else {
                EntryPayload::Normal(Command::Heartbeats {
                    at: DateTime::from_timestamp(1_800_000_000 + i as i64, 0).unwrap_or_default(),
                    beats: vec![Heartbeat::new(format!("host-{}", i % 4), "cinder-volume")].into(),
                })
            },
        })
        .collect()
}

/// The state of `entries(upto)` applied in order.
fn expected(upto: u64) -> ServicesState {
    let mut s = ServicesState::default();
    for e in entries(upto) {
        s.apply_entry(&e);
    }
    s
}

/// Opens the store in `dir`.
async fn try_open(dir: &Path) -> Result<registry_storage::Store, StoreError> {
    open_store(dir)
}

/// [`try_open`], then the store joins [`CLUSTER`].
async fn open_quiet(dir: &Path) -> anyhow::Result<(LogStore, StateMachineStore)> {
    let store = try_open(dir).await?;
    store.identity.adopt(CLUSTER).await?;
    Ok((store.log, store.sm))
}

fn state_of(sm: &StateMachineStore) -> ServicesState {
    sm.view().read(ServicesState::clone)
}

/// Offsets a byte is flipped at: in the magic, the version, the header, the records, and
/// the checksum.
fn offsets(len: usize) -> [usize; 6] {
    [0, 8, 12, len / 2, len - 6, len - 1]
}

/// A damaged snapshot file that the state does not need (the log was never purged, so it
/// holds every entry from the first) is moved aside: the store opens with the empty state,
/// which openraft's replay of the whole log makes whole again, and the snapshot it then
/// serves is a fresh, whole one of that state.
#[tokio::test]
async fn a_damaged_snapshot_file_a_whole_log_does_without_is_moved_aside() -> anyhow::Result<()> {
    let tmp = TempDir::new()?;
    let dir = tmp.path().join("db");
    let len = {
        let (_log, mut sm) = open_quiet(&dir).await?;
        sm.apply(entries(30)).await?;
        sm.get_snapshot_builder().await.build_snapshot().await?;
        std::fs::metadata(dir.join("raft-snapshot"))?.len() as usize
    };
    let good = std::fs::read(dir.join("raft-snapshot"))?;
    for at in offsets(len) {
        let mut bad = good.clone();
        bad[at] ^= 0x10;
        std::fs::write(dir.join("raft-snapshot"), &bad)?;
        let (_log, mut sm) = open_quiet(&dir)
            .await
            .with_context(|| format!("byte {at} flipped"))?;
        let (applied, _) = sm.applied_state().await?;
        ensure!(
            applied.is_none() && state_of(&sm) == ServicesState::default(),
            "byte {at} flipped: nothing of the damaged file is loaded (applied {applied:?})"
        );
        ensure!(
            std::fs::read(dir.join("raft-snapshot.damaged"))? == bad,
            "byte {at} flipped: the damaged file is kept aside"
        );
        // What openraft does at start: the committed log, applied again from its start.
        sm.apply(entries(30)).await?;
        let fresh = sm
            .get_current_snapshot()
            .await?
            .context("a fresh snapshot")?;
        let data = read_snapshot_data(*fresh.snapshot).await?;
        registry_storage::snapshot::check(&data)?;
        ensure!(
            fresh.meta.last_log_id == Some(log_id(30)),
            "byte {at}: fresh snapshot at 30"
        );
        ensure!(
            std::fs::read(dir.join("raft-snapshot"))? == data,
            "byte {at}: the fresh snapshot is the node's snapshot file"
        );
    }
    Ok(())
}

/// Once the log is purged, the snapshot file is the only copy of what the purged entries
/// did: a damaged one is refused with a message saying what to do, never loaded, never
/// ignored; so is a missing one; the intact one is loaded.
#[tokio::test]
async fn a_damaged_or_missing_snapshot_file_the_state_needs_is_refused() -> anyhow::Result<()> {
    let tmp = TempDir::new()?;
    let dir = tmp.path().join("db");
    {
        let (mut log, mut sm) = open_quiet(&dir).await?;
        sm.apply(entries(30)).await?;
        sm.get_snapshot_builder().await.build_snapshot().await?;
        log.purge(log_id(30)).await?;
    }
    let good = std::fs::read(dir.join("raft-snapshot"))?;
    for at in offsets(good.len()) {
        let mut bad = good.clone();
        bad[at] ^= 0x10;
        std::fs::write(dir.join("raft-snapshot"), &bad)?;
        let e = match try_open(&dir).await {
            Err(e) => e,
            Ok(_) => anyhow::bail!("byte {at}: a store whose needed snapshot is damaged opened"),
        };
        let StoreError::NeededSnapshotDamaged(needed) = &e else {
            anyhow::bail!("byte {at}: refused, but not as a needed snapshot that is damaged: {e}");
        };
        ensure!(
            needed.path == dir.join("raft-snapshot")
                && needed.needed_for == NeededFor::Purged(log_id(30)),
            "byte {at}: the refusal names the file and the purge point: {e:?}"
        );
        ensure!(
            matches!(
                needed.source,
                StoreError::Damaged { .. } | StoreError::NewerFormat { .. }
            ),
            "byte {at}: the refusal carries how the file is damaged: {:?}",
            needed.source
        );
        let why = e.to_string();
        ensure!(
            why.contains("cannot be rebuilt") && why.contains("new incarnation"),
            "byte {at}: the refusal says why and what to do: {why}"
        );
        ensure!(
            std::fs::read(dir.join("raft-snapshot"))? == bad,
            "byte {at}: a refused file is left in place"
        );
    }
    std::fs::remove_file(dir.join("raft-snapshot"))?;
    match try_open(&dir).await {
        Err(StoreError::NeededSnapshotMissing { path, needed_for }) => ensure!(
            path == dir.join("raft-snapshot") && needed_for == NeededFor::Purged(log_id(30)),
            "the refusal names the file and the purge point"
        ),
        Err(e) => anyhow::bail!("refused, but not as a needed snapshot that is missing: {e}"),
        Ok(_) => anyhow::bail!("a store whose needed snapshot is missing opened"),
    }
    std::fs::write(dir.join("raft-snapshot"), &good)?;
    let (_log, sm) = open_quiet(&dir).await?;
    ensure!(
        state_of(&sm) == expected(30),
        "the intact snapshot is loaded"
    );
    Ok(())
}

/// What was applied after the last snapshot is not on disk: a start loads the snapshot
/// file's state, for openraft to apply the log after it again (an acknowledged entry is in
/// the log, flushed, before it is applied anywhere).
#[tokio::test]
async fn a_start_loads_the_last_snapshot_and_no_later_apply() -> anyhow::Result<()> {
    let tmp = TempDir::new()?;
    let dir = tmp.path().join("db");
    {
        let (_log, mut sm) = open_quiet(&dir).await?;
        sm.apply(entries(30)).await?;
        sm.get_snapshot_builder().await.build_snapshot().await?;
        sm.apply(entries(60).split_off(30)).await?;
        ensure!(state_of(&sm) == expected(60), "60 entries applied");
    }
    let (_log, mut sm) = open_quiet(&dir).await?;
    let (applied, _) = sm.applied_state().await?;
    ensure!(
        applied == Some(log_id(30)) && state_of(&sm) == expected(30),
        "the state is the snapshot file's (30): applied {applied:?}"
    );
    sm.apply(entries(60).split_off(30)).await?;
    ensure!(
        state_of(&sm) == expected(60),
        "entries 31..=60 applied again give the state of 60, each applied once"
    );
    Ok(())
}

/// A store written by a newer format, or holding data but no format at all, is refused
/// with a message naming the format.
#[tokio::test]
async fn stores_of_another_format_are_refused() -> anyhow::Result<()> {
    let tmp = TempDir::new()?;
    let dir = tmp.path().join("db");
    drop(open_quiet(&dir).await?);
    {
        let db = sled::open(&dir)?;
        let meta = db.open_tree("raft_log_meta")?;
        let newer = registry_storage::codec::FORMAT_VERSION + 1;
        meta.insert("format", registry_storage::codec::encode(&newer)?)?;
        db.flush()?;
    }
    match try_open(&dir).await {
        Err(e @ StoreError::NewerFormat { .. }) => {
            let text = e.to_string();
            ensure!(
                text.contains(&format!(
                    "format version {}",
                    registry_storage::codec::FORMAT_VERSION + 1
                )) && text.contains("newer"),
                "{text}"
            );
        }
        Err(other) => anyhow::bail!("refused, but not as newer: {other}"),
        Ok(_) => anyhow::bail!("a store of a newer format opened"),
    }
    {
        let db = sled::open(&dir)?;
        db.open_tree("raft_log_meta")?.remove("format")?;
        db.flush()?;
    }
    match try_open(&dir).await {
        Err(StoreError::Unversioned(_)) => Ok(()),
        Err(other) => anyhow::bail!("refused, but not as unversioned: {other}"),
        Ok(_) => anyhow::bail!("a store without a format opened"),
    }
}

/// A snapshot of another cluster is not installed; the store keeps its state.
#[tokio::test]
async fn snapshot_of_another_cluster_is_not_installed() -> anyhow::Result<()> {
    let tmp = TempDir::new()?;
    let other = {
        let store = open_store(&tmp.path().join("other"))?;
        store.identity.adopt(ClusterId(0xbad)).await?;
        let mut sm = store.sm;
        sm.apply(entries(20)).await?;
        sm.get_snapshot_builder().await.build_snapshot().await?
    };
    let (_log, mut sm) = open_quiet(&tmp.path().join("mine")).await?;
    sm.apply(entries(5)).await?;
    let res = sm.install_snapshot(&other.meta, other.snapshot).await;
    ensure!(res.is_err(), "a snapshot of another cluster was installed");
    ensure!(state_of(&sm) == expected(5), "the state is unchanged");
    Ok(())
}

/// A backup of a store of `CLUSTER` that applied `entries(25)`, made in `dir`.
async fn backup_of_25_entries(dir: &Path) -> anyhow::Result<Vec<u8>> {
    let store = open_store(dir)?;
    store.identity.adopt(CLUSTER).await?;
    let mut sm = store.sm;
    sm.apply(entries(25)).await?;
    Ok(sm.backup().await?.0)
}

/// A restore prepares a new store from a backup: every record, no log, no membership, no
/// cluster yet, the backup recorded; a damaged backup is refused before the directory is
/// touched, and a directory that holds data is refused.
#[tokio::test]
async fn restore_prepares_a_new_store_from_a_backup() -> anyhow::Result<()> {
    let tmp = TempDir::new()?;
    let backup = backup_of_25_entries(&tmp.path().join("src")).await?;
    let target = tmp.path().join("restored");
    let mut bad = backup.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 1;
    ensure!(
        restore(&target, &bad).is_err(),
        "a damaged backup is refused"
    );
    ensure!(!target.exists(), "a refused restore touches nothing");

    let summary = restore(&target, &backup)?;
    ensure!(
        summary.backup.header.records == 4,
        "four records in the backup"
    );
    ensure!(
        matches!(
            restore(&target, &backup),
            Err(StoreError::NotEmpty { ref dir }) if *dir == target
        ),
        "a directory that holds a store is refused, naming it"
    );
    let store = open_store(&target)?;
    ensure!(
        store.identity.cluster_id().is_none(),
        "no cluster until bootstrapped"
    );
    ensure!(
        store.identity.incarnation() == summary.incarnation,
        "the summary names the new incarnation"
    );
    let from = store
        .identity
        .restored_from()
        .context("the backup is recorded")?;
    ensure!(from.cluster_id == Some(CLUSTER) && from.last_log_id == Some(log_id(25)));
    let mut sm = store.sm.clone();
    let (applied, membership) = sm.applied_state().await?;
    ensure!(
        applied.is_none() && membership.membership().nodes().count() == 0,
        "no log position, no membership: a new group starts from here"
    );
    let mut want = expected(25);
    want.last_applied = None;
    want.membership = Default::default();
    ensure!(
        state_of(&sm) == want,
        "every record, the clock and the id counter restored"
    );
    drop((store, sm));

    // The restored records are only in the snapshot file: damaged, it is refused.
    let file = target.join("raft-snapshot");
    let mut bad = std::fs::read(&file)?;
    let mid = bad.len() / 2;
    bad[mid] ^= 1;
    std::fs::write(&file, &bad)?;
    match open_store(&target) {
        Err(StoreError::NeededSnapshotDamaged(needed)) => ensure!(
            needed.needed_for == NeededFor::Restored,
            "the refusal says the store was restored: {needed}"
        ),
        Err(e) => anyhow::bail!("refused, but not as a needed snapshot that is damaged: {e}"),
        Ok(_) => anyhow::bail!("a restored store whose snapshot file is damaged opened"),
    }
    Ok(())
}

/// The snapshot file a restore writes is of no cluster: once the restored members bootstrap
/// a new one, the snapshot served is built anew, of that cluster (a follower refuses a
/// snapshot of another one), from the restored records.
#[tokio::test]
async fn a_restored_store_serves_a_snapshot_of_its_new_cluster() -> anyhow::Result<()> {
    let tmp = TempDir::new()?;
    let backup = backup_of_25_entries(&tmp.path().join("src")).await?;
    let target = tmp.path().join("restored");
    restore(&target, &backup)?;
    let store = open_store(&target)?;
    store.identity.adopt(ClusterId(0xd2)).await?;
    let mut sm = store.sm;
    let served = sm
        .get_current_snapshot()
        .await?
        .context("a snapshot is served")?;
    let data = read_snapshot_data(*served.snapshot).await?;
    let (info, records) = registry_storage::snapshot::decode(&data)?;
    ensure!(
        info.header.cluster_id == Some(ClusterId(0xd2)),
        "the snapshot served is of the new cluster: {:?}",
        info.header.cluster_id
    );
    ensure!(records.len() == 4, "with the restored records");
    Ok(())
}

/// A cluster id, once adopted, is kept across a reopen, and another one is refused.
#[tokio::test]
async fn an_adopted_cluster_id_is_kept() -> anyhow::Result<()> {
    let tmp = TempDir::new()?;
    let dir = tmp.path().join("db");
    let incarnation = {
        let store = try_open(&dir).await?;
        ensure!(store.identity.cluster_id().is_none());
        store.identity.adopt(ClusterId(7)).await?;
        store.identity.incarnation()
    };
    let store = try_open(&dir).await?;
    ensure!(store.identity.cluster_id() == Some(ClusterId(7)), "kept");
    ensure!(
        store.identity.incarnation() == incarnation,
        "same incarnation"
    );
    ensure!(
        matches!(
            store.identity.adopt(ClusterId(8)).await,
            Err(StoreError::ClusterMismatch { .. })
        ),
        "another cluster is refused"
    );
    Ok(())
}

/// A purge beyond the snapshot file writes a snapshot file of the state first, so that the
/// file always reaches the log's purge point.
#[tokio::test]
async fn a_purge_past_the_snapshot_file_writes_one_first() -> anyhow::Result<()> {
    let tmp = TempDir::new()?;
    let dir = tmp.path().join("db");
    {
        let (mut log, mut sm) = open_quiet(&dir).await?;
        sm.apply(entries(30)).await?;
        sm.get_snapshot_builder().await.build_snapshot().await?;
        sm.apply(entries(60).split_off(30)).await?;
        log.purge(log_id(40)).await?;
        let file = std::fs::read(dir.join("raft-snapshot"))?;
        let info = registry_storage::snapshot::check(&file)?;
        ensure!(
            info.header.last_log_id == Some(log_id(60)),
            "the purge to 40 wrote a snapshot file of the state (60) first: {:?}",
            info.header.last_log_id
        );
    }
    let (_log, sm) = open_quiet(&dir).await?;
    ensure!(
        state_of(&sm) == expected(60),
        "a start loads that file: the state of 60"
    );
    Ok(())
}

/// A built snapshot's data is the snapshot file itself (encoded straight into it), and a
/// build that the file already covers (a newer snapshot was staged meanwhile) still hands
/// openraft its own state, while the file keeps the newer one and no unfinished file stays.
#[tokio::test]
async fn a_built_snapshot_is_its_file_and_never_replaces_a_newer_one() -> anyhow::Result<()> {
    let tmp = TempDir::new()?;
    let dir = tmp.path().join("db");
    let newer = {
        let (_log, mut sm) = open_quiet(&tmp.path().join("leader")).await?;
        sm.apply(entries(30)).await?;
        let built = sm.get_snapshot_builder().await.build_snapshot().await?;
        read_snapshot_data(*built.snapshot).await?
    };
    let (_log, mut sm) = open_quiet(&dir).await?;
    sm.apply(entries(10)).await?;
    let built = sm.get_snapshot_builder().await.build_snapshot().await?;
    ensure!(built.meta.last_log_id == Some(log_id(10)), "built at 10");
    let data = read_snapshot_data(*built.snapshot).await?;
    ensure!(
        std::fs::read(dir.join("raft-snapshot"))? == data,
        "the built snapshot's data is the snapshot file"
    );
    let (_, records) = registry_storage::snapshot::decode(&data)?;
    ensure!(
        records.len() == 4,
        "every record is in it, not {}",
        records.len()
    );

    sm.stage_snapshot(newer.clone()).await?;
    sm.apply(entries(12).split_off(10)).await?;
    let built = sm.get_snapshot_builder().await.build_snapshot().await?;
    ensure!(built.meta.last_log_id == Some(log_id(12)), "built at 12");
    let data = read_snapshot_data(*built.snapshot).await?;
    let info = registry_storage::snapshot::check(&data)?;
    ensure!(
        info.header.last_log_id == Some(log_id(12)) && info.header.meta() == built.meta,
        "the build's data is its own snapshot, at 12: {:?}",
        info.header.last_log_id
    );
    ensure!(
        std::fs::read(dir.join("raft-snapshot"))? == newer,
        "the file still holds the newer snapshot (30)"
    );
    let left: Vec<_> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("raft-snapshot") && n != "raft-snapshot")
        .collect();
    ensure!(
        left.is_empty(),
        "no unfinished snapshot file stays: {left:?}"
    );
    Ok(())
}
