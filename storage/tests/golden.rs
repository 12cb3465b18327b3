//! Golden files of each storage format version, made by the code that introduced it
//! (`tests/fixtures/v1/` to `tests/fixtures/v5/`): a small store (the sled directory and its
//! snapshot file), a backup, and stored values. Every run decodes them, so a change that
//! cannot read data written in an older format fails the suite. They are never rewritten; a
//! new format version adds a directory of its own beside them, made with
//! `REGISTRY_WRITE_FIXTURES=1 cargo test -p registry-storage --test golden -- --ignored`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context};
use chrono::DateTime;
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::{CommittedLeaderId, EntryPayload, Membership, RaftLogReader, RaftSnapshotBuilder};
use registry_storage::codec::{decode, decode_record, encode, FORMAT_VERSION};
use registry_storage::snapshot::SNAPSHOT_FORMAT;
use registry_storage::types::{Entry, LogId, Vote};
use registry_storage::{
    open_store_with, AdminAction, ClockRate, ClusterId, Command, Heartbeat, Incarnation,
    LivenessSettings, RegistryNode, ServiceKey, ServiceRecord, ServicesState, StoreOptions,
};

/// The cluster of the fixture store.
const CLUSTER: ClusterId = ClusterId(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
/// Entries the fixture store applied; it holds [`LOGGED`] more, not applied.
const APPLIED: u64 = 40;
const LOGGED: u64 = 5;

fn fixtures(format: u8) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/v{format}"))
}

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

/// Entry `i` of the fixture log of `format`: the membership first, then heartbeats of four
/// services, an admin change every seventh, a tick every ninth; from format 2, the admin
/// changes say who made them, and every eleventh freezes or thaws a host; from format 3, the
/// second sets a `service_down_time` of 3 s, under which services go silent and come back;
/// from format 4, the third slows the registry clock to a quarter and the 33rd sets it to a
/// half.
fn entry(format: u8, i: u64) -> Entry {
    let at = DateTime::from_timestamp(1_800_000_000 + i as i64, 0).unwrap_or_default();
    let payload = match i {
        1 => EntryPayload::Membership(Membership::new(
            vec![BTreeSet::from([1, 2, 3])],
            (1..=3)
                .map(|n| {
                    (
                        n,
                        RegistryNode::new(format!("127.0.0.1:2100{n}"), Incarnation(n)),
                    )
                })
                .collect::<std::collections::BTreeMap<_, _>>(),
        )),
        2 if format >= 3 => EntryPayload::Normal(Command::Settings {
            at,
            settings: LivenessSettings::new(std::time::Duration::from_secs(3), 0.55),
        }),
        3 | 33 if format >= 4 => EntryPayload::Normal(Command::ClockRate {
            at,
            rate: ClockRate::from_permille(if i == 3 { 250 } else { 500 }).unwrap_or_default(),
        }),
        i if i % 7 == 0 => {
            let (key, action) = (
                ServiceKey::new("host-2", "cinder-volume"),
                AdminAction::Disable {
                    reason: Some(format!("maintenance {i}")),
                },
            );
            EntryPayload::Normal(match format {
                1 => Command::Admin { at, key, action },
                _ => Command::AdminBy {
                    at,
                    key,
                    action,
                    by: "token:ops-admin".into(),
                },
            })
        }
        i if i % 11 == 0 && format >= 2 => EntryPayload::Normal(Command::FreezeBy {
            at,
            host: "host-3".into(),
            frozen: i % 2 == 0,
            by: "cert:CN=operator".into(),
        }),
        i if i % 9 == 0 => EntryPayload::Normal(Command::Tick { at }),
        i => EntryPayload::Normal(Command::Heartbeats {
            at,
            beats: vec![
                Heartbeat::new(format!("host-{}", i % 4), "cinder-volume"),
                Heartbeat {
                    availability_zone: Some("az-1".into()),
                    ..Heartbeat::new("node1@lvm", "cinder-backup")
                },
            ]
            .into(),
        }),
    };
    Entry {
        log_id: log_id(1 + i / 20, i),
        payload,
    }
}

fn entries(format: u8, range: std::ops::RangeInclusive<u64>) -> Vec<Entry> {
    range.map(|i| entry(format, i)).collect()
}

fn expected_state(format: u8) -> ServicesState {
    let mut s = ServicesState::default();
    for e in entries(format, 1..=APPLIED) {
        s.apply_entry(&e);
    }
    s
}

fn vote() -> Vote {
    Vote::new_committed(2, 1)
}

/// A record with every field set, for the value fixtures.
fn record(format: u8) -> anyhow::Result<ServiceRecord> {
    expected_state(format)
        .get(&ServiceKey::new("host-2", "cinder-volume"))
        .cloned()
        .context("host-2 is in the fixture state")
}

fn quiet() -> StoreOptions {
    StoreOptions::default()
}

/// Writes the fixtures of this build's format (only with `REGISTRY_WRITE_FIXTURES` set, and
/// only into an empty directory: a format's files are never rewritten).
#[tokio::test]
#[ignore = "writes the golden files; run once per new format version"]
async fn write_fixtures() -> anyhow::Result<()> {
    if std::env::var_os("REGISTRY_WRITE_FIXTURES").is_none() {
        return Ok(());
    }
    let format = FORMAT_VERSION;
    let dir = fixtures(format);
    ensure!(
        !dir.exists(),
        "{} exists: the fixtures of a format are never rewritten",
        dir.display()
    );
    std::fs::create_dir_all(&dir)?;
    let store = open_store_with(&dir.join("store"), &quiet())?;
    store.identity.adopt(CLUSTER).await?;
    let (mut log, mut sm) = (store.log, store.sm);
    log.save_vote(&vote()).await?;
    log.blocking_append(entries(format, 1..=APPLIED + LOGGED))
        .await?;
    log.save_committed(Some(log_id(1 + APPLIED / 20, APPLIED)))
        .await?;
    sm.apply(entries(format, 1..=APPLIED)).await?;
    sm.get_snapshot_builder().await.build_snapshot().await?;
    let (backup, _) = sm.backup().await?;
    std::fs::write(dir.join("backup.snap"), backup)?;
    log.flush().await?;
    std::fs::write(
        dir.join("store.incarnation"),
        store.identity.incarnation().to_string(),
    )?;
    std::fs::write(dir.join("record.bin"), encode(&record(format)?)?)?;
    std::fs::write(dir.join("entry.bin"), encode(&entry(format, VALUE_ENTRY))?)?;
    std::fs::write(dir.join("settings-entry.bin"), encode(&entry(format, 2))?)?;
    std::fs::write(dir.join("clock-rate-entry.bin"), encode(&entry(format, 3))?)?;
    Ok(())
}

/// The entry of the value fixtures: an admin change (who made it, from format 2).
const VALUE_ENTRY: u64 = 7;

#[tokio::test]
async fn the_format_1_store_reads_back() -> anyhow::Result<()> {
    store_reads_back(1).await
}

#[tokio::test]
async fn the_format_2_store_reads_back() -> anyhow::Result<()> {
    store_reads_back(2).await
}

#[tokio::test]
async fn the_format_3_store_reads_back() -> anyhow::Result<()> {
    store_reads_back(3).await
}

#[tokio::test]
async fn the_format_4_store_reads_back() -> anyhow::Result<()> {
    store_reads_back(4).await
}

#[tokio::test]
async fn the_format_5_store_reads_back() -> anyhow::Result<()> {
    store_reads_back(5).await
}

/// Opens the sled database of a closed store (its threads let go of the lock a moment after
/// the store is dropped).
fn open_closed_db(dir: &Path) -> anyhow::Result<sled::Db> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match sled::open(dir) {
            Ok(db) => return Ok(db),
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => return Err(e).context("opening the closed store's database"),
        }
    }
}

/// Whether the database of the closed store in `dir` still has the records tree of formats
/// 1 to 4.
fn has_records_tree(dir: &Path) -> anyhow::Result<bool> {
    let db = open_closed_db(dir)?;
    Ok(db.tree_names().iter().any(|n| n == b"services".as_slice()))
}

/// A copy, in `dir`, of the format-4 fixture store without its snapshot file (as a store was
/// before its first snapshot): its records are all its state.
fn format_4_store_without_snapshot_file(dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    let copy = dir.join("store");
    copy_dir(&fixtures(4).join("store"), &copy)?;
    std::fs::remove_file(copy.join("raft-snapshot"))?;
    Ok(copy)
}

/// A store of format 4 whose records are newer than its snapshot file (here: it has none, as
/// a store had before its first snapshot) opens with its records: they become its snapshot
/// file, and the records tree goes. The next start loads that file.
#[tokio::test]
async fn a_format_4_store_moves_its_records_into_its_snapshot_file() -> anyhow::Result<()> {
    let tmp = tempfile::TempDir::new()?;
    let copy = format_4_store_without_snapshot_file(tmp.path())?;
    ensure!(has_records_tree(&copy)?, "the fixture has its records tree");
    {
        let store = open_store_with(&copy, &quiet())?;
        ensure!(
            store.sm.view().read(ServicesState::clone) == expected_state(4),
            "the records are loaded"
        );
    }
    let file = std::fs::read(copy.join("raft-snapshot")).context("a snapshot file was made")?;
    let (info, _) = registry_storage::snapshot::decode(&file)?;
    ensure!(
        info.header.last_log_id == Some(entry(4, APPLIED).log_id)
            && info.header.cluster_id == Some(CLUSTER),
        "of the records' log id and the store's cluster: {:?}",
        info.header
    );
    ensure!(!has_records_tree(&copy)?, "the records tree is gone");
    let store = open_store_with(&copy, &quiet())?;
    ensure!(
        store.sm.view().read(ServicesState::clone) == expected_state(4),
        "the next start loads the snapshot file"
    );
    Ok(())
}

/// The records of a format-4 store marked as of a write in several batches that did not
/// finish (the marker, and a record changed as a later batch would have) are never loaded:
/// without a snapshot file, and with the log whole, the state is the empty one, which the log
/// applied again rebuilds.
#[tokio::test]
async fn records_of_an_unfinished_write_are_not_loaded() -> anyhow::Result<()> {
    let tmp = tempfile::TempDir::new()?;
    let copy = format_4_store_without_snapshot_file(tmp.path())?;
    {
        let db = open_closed_db(&copy)?;
        let services = db.open_tree("services")?;
        services.insert(b"\0incomplete", Vec::<u8>::new())?;
        let (key, value) = services
            .iter()
            .filter_map(Result::ok)
            .find(|(k, _)| k.first() != Some(&0))
            .context("a record")?;
        let mut record = decode_record(&value)?;
        record.report_count += 1000;
        services.insert(key, encode(&record)?)?;
        db.flush()?;
    }
    let store = open_store_with(&copy, &quiet())?;
    let mut sm = store.sm.clone();
    let (applied, _) = sm.applied_state().await?;
    ensure!(
        applied.is_none() && sm.view().read(ServicesState::len) == 0,
        "nothing of the unfinished records is loaded (applied {applied:?})"
    );
    sm.apply(entries(4, 1..=APPLIED)).await?;
    ensure!(
        sm.view().read(ServicesState::clone) == expected_state(4),
        "the log applied again rebuilds the state"
    );
    drop((store, sm));
    ensure!(!has_records_tree(&copy)?, "the records tree is gone");
    Ok(())
}

/// The fixture store of `format` opens with its identity, vote, committed index, log and
/// records.
async fn store_reads_back(format: u8) -> anyhow::Result<()> {
    let tmp = tempfile::TempDir::new()?;
    let copy = tmp.path().join("store");
    copy_dir(&fixtures(format).join("store"), &copy)?;
    let store = open_store_with(&copy, &quiet())?;
    let incarnation: Incarnation =
        std::fs::read_to_string(fixtures(format).join("store.incarnation"))?
            .trim()
            .parse()
            .map_err(anyhow::Error::msg)?;
    ensure!(
        store.identity.incarnation() == incarnation,
        "the store's incarnation"
    );
    ensure!(
        store.identity.cluster_id() == Some(CLUSTER),
        "the store's cluster"
    );
    let (mut log, mut sm) = (store.log, store.sm);
    ensure!(log.read_vote().await? == Some(vote()), "the vote");
    ensure!(
        log.read_committed().await? == Some(log_id(1 + APPLIED / 20, APPLIED)),
        "the committed log id"
    );
    let state = log.get_log_state().await?;
    ensure!(
        state.last_log_id == Some(entry(format, APPLIED + LOGGED).log_id),
        "the last log id: {:?}",
        state.last_log_id
    );
    let logged = log.try_get_log_entries(1..=APPLIED + LOGGED).await?;
    ensure!(
        logged == entries(format, 1..=APPLIED + LOGGED),
        "every log entry"
    );
    let (applied, membership) = sm.applied_state().await?;
    ensure!(
        applied == Some(entry(format, APPLIED).log_id),
        "the applied log id"
    );
    ensure!(
        membership.membership().get_node(&2)
            == Some(&RegistryNode::new("127.0.0.1:21002", Incarnation(2))),
        "the membership, with incarnations"
    );
    ensure!(
        sm.view().read(ServicesState::clone) == expected_state(format),
        "every record, the clock and the id counter"
    );
    let snapshot = sm
        .get_current_snapshot()
        .await?
        .context("the fixture's snapshot file")?;
    ensure!(
        snapshot.meta.last_log_id == applied,
        "the snapshot's log id"
    );
    Ok(())
}

/// The fixture backups check and decode to the fixture state.
#[test]
fn the_backups_of_every_format_read_back() -> anyhow::Result<()> {
    for format in 1..=FORMAT_VERSION {
        let bytes = std::fs::read(fixtures(format).join("backup.snap"))?;
        let (info, records) = registry_storage::snapshot::decode(&bytes)?;
        ensure!(info.format_version == format.min(SNAPSHOT_FORMAT));
        ensure!(info.header.cluster_id == Some(CLUSTER));
        ensure!(info.header.last_log_id == Some(entry(format, APPLIED).log_id));
        let state = registry_storage::snapshot::into_state(info.header, records);
        ensure!(
            state == expected_state(format),
            "the backup of format {format} holds the fixture state"
        );
    }
    Ok(())
}

/// The values of format 1 decode to what was encoded: the record without who changed it
/// last, the entry as the same command, whose payload today's build encodes byte for byte
/// the same (only the envelope's version differs).
#[test]
fn the_format_1_values_read_back() -> anyhow::Result<()> {
    let dir = fixtures(1);
    let record_bytes = std::fs::read(dir.join("record.bin"))?;
    let record = decode_record(&record_bytes)?;
    ensure!(record == self::record(1)?, "the record");
    ensure!(record.modified_by.is_none());
    let entry_bytes = std::fs::read(dir.join("entry.bin"))?;
    ensure!(decode::<Entry>(&entry_bytes)? == entry(1, 8), "the entry");
    let today = encode(&entry(1, 8))?;
    ensure!(
        today[0] == FORMAT_VERSION && today[PAYLOAD..] == entry_bytes[PAYLOAD..],
        "a command of format 1 encodes as it did"
    );
    Ok(())
}

/// Where a stored value's payload starts (after the version byte and the checksum).
const PAYLOAD: usize = 5;

/// The values of format 2 decode to what was encoded, and today's encoding of the same values
/// is byte for byte the same payload (format 3 changed only the envelope's checksum, which
/// now covers the version byte).
#[test]
fn the_format_2_values_read_back() -> anyhow::Result<()> {
    let dir = fixtures(2);
    let record_bytes = std::fs::read(dir.join("record.bin"))?;
    let record = decode_record(&record_bytes)?;
    ensure!(record == self::record(2)?, "the record");
    ensure!(record.modified_by.as_deref() == Some("token:ops-admin"));
    let today = encode(&record)?;
    ensure!(
        today[PAYLOAD..] == record_bytes[PAYLOAD..],
        "the record's encoding"
    );
    let entry_bytes = std::fs::read(dir.join("entry.bin"))?;
    let entry = decode::<Entry>(&entry_bytes)?;
    ensure!(entry == self::entry(2, VALUE_ENTRY), "the entry");
    let today = encode(&entry)?;
    ensure!(
        today[PAYLOAD..] == entry_bytes[PAYLOAD..],
        "the entry's encoding"
    );
    Ok(())
}

/// The values of format 3 decode to what was encoded, and today's encoding of the same values
/// is byte for byte the same payload (format 4 added a command and a field of the snapshot
/// header, and changed no encoding).
#[test]
fn the_format_3_values_read_back() -> anyhow::Result<()> {
    let dir = fixtures(3);
    let record_bytes = std::fs::read(dir.join("record.bin"))?;
    let record = decode_record(&record_bytes)?;
    ensure!(record == self::record(3)?, "the record");
    ensure!(
        encode(&record)?[PAYLOAD..] == record_bytes[PAYLOAD..],
        "the record's encoding"
    );
    let entry_bytes = std::fs::read(dir.join("entry.bin"))?;
    let entry = decode::<Entry>(&entry_bytes)?;
    ensure!(entry == self::entry(3, VALUE_ENTRY), "the entry");
    ensure!(
        encode(&entry)?[PAYLOAD..] == entry_bytes[PAYLOAD..],
        "the entry's encoding"
    );
    let settings_bytes = std::fs::read(dir.join("settings-entry.bin"))?;
    let settings = decode::<Entry>(&settings_bytes)?;
    ensure!(settings == self::entry(3, 2), "the settings entry");
    ensure!(
        encode(&settings)?[PAYLOAD..] == settings_bytes[PAYLOAD..],
        "its encoding"
    );
    Ok(())
}

/// The values of format 4 decode to what was encoded, and today's encoding of the same values
/// is byte for byte the same (a change of encoding needs a new format version).
#[test]
fn the_format_4_values_read_back() -> anyhow::Result<()> {
    values_read_back(4)
}

/// The values of format 5 decode to what was encoded, and today's encoding of them is byte
/// for byte the same.
#[test]
fn the_format_5_values_read_back() -> anyhow::Result<()> {
    values_read_back(5)
}

/// The values of `format` (4 or later) decode to what was encoded, and today's encoding of
/// them is the same payload (format 5 changed the store's layout, not an encoding), and the
/// same bytes when `format` is today's.
fn values_read_back(format: u8) -> anyhow::Result<()> {
    let dir = fixtures(format);
    let same = |today: &[u8], then: &[u8]| {
        today[PAYLOAD..] == then[PAYLOAD..] && (format < FORMAT_VERSION || today == then)
    };
    let record_bytes = std::fs::read(dir.join("record.bin"))?;
    let record = decode_record(&record_bytes)?;
    ensure!(record == self::record(format)?, "the record");
    ensure!(
        same(&encode(&record)?, &record_bytes),
        "the record's encoding"
    );
    for (file, i) in [
        ("entry.bin", VALUE_ENTRY),
        ("settings-entry.bin", 2),
        ("clock-rate-entry.bin", 3),
    ] {
        let bytes = std::fs::read(dir.join(file))?;
        let entry = decode::<Entry>(&bytes)?;
        ensure!(entry == self::entry(format, i), "the entry of {file}");
        ensure!(same(&encode(&entry)?, &bytes), "the encoding of {file}");
    }
    let rate = expected_state(format).clock.rate;
    ensure!(
        rate.permille() == 500,
        "the fixture state's clock rate: {rate:?}"
    );
    Ok(())
}

/// The fixture states of formats 3 and 4 went through silences and zone changes (format 4's
/// at a slower clock): the events they yield are the same applied entry by entry and
/// derived again from the state at any index (what a snapshot install does).
#[test]
fn the_format_3_state_derives_the_same_from_any_index() -> anyhow::Result<()> {
    derives_the_same_from_any_index(3)
}

#[test]
fn the_format_4_state_derives_the_same_from_any_index() -> anyhow::Result<()> {
    derives_the_same_from_any_index(4)
}

fn derives_the_same_from_any_index(format: u8) -> anyhow::Result<()> {
    let mut s = ServicesState::default();
    let mut events = Vec::new();
    for e in entries(format, 1..=APPLIED) {
        s.apply_entry_with_events(&e, &mut events);
        let again = ServicesState::from_parts(
            s.last_applied,
            s.membership.clone(),
            s.next_id,
            s.clock,
            s.settings,
            s.records().cloned().collect::<Vec<_>>(),
        );
        ensure!(
            again == s,
            "the state rebuilt at {} is the one applied",
            e.log_id.index
        );
    }
    let downs = events
        .iter()
        .filter(|e| e.kind == registry_storage::events::EventKind::Down)
        .count();
    ensure!(
        downs > 0,
        "services went silent in the fixture log ({} events)",
        events.len()
    );
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let target = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &target)?;
        } else {
            std::fs::copy(e.path(), target)?;
        }
    }
    Ok(())
}
