//! Writes the committed seed corpora, `corpus/<target>/seed-*`: a few small valid inputs of
//! each decoder, made with the registry's own encoders, and a few invalid ones (truncated,
//! corrupted, oversized length prefixes, unknown fields). Run from `fuzz/`:
//! `cargo run --example write_seeds`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use chrono::DateTime;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::{
    BasicNode, CommittedLeaderId, EntryPayload, LogId, Membership, StoredMembership, Vote,
};
use registry_api::rpc;
use registry_storage::codec;
use registry_storage::snapshot::encode_state;
use registry_storage::types::{Entry, SnapshotMeta};
use registry_storage::{Command, Heartbeat, ServicesState, TypeConfig};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn write(target: &str, name: &str, bytes: &[u8]) -> Result<()> {
    let dir = Path::new("corpus").join(target);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(format!("seed-{name}")), bytes)?;
    Ok(())
}

/// The valid encoding, its first half, one byte flipped in the middle, and a byte appended.
fn with_damage(target: &str, name: &str, bytes: &[u8]) -> Result<()> {
    write(target, name, bytes)?;
    write(
        target,
        &format!("{name}-truncated"),
        &bytes[..bytes.len() / 2],
    )?;
    let mut flipped = bytes.to_vec();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0xff;
    write(target, &format!("{name}-flipped"), &flipped)?;
    let mut trailing = bytes.to_vec();
    trailing.push(0);
    write(target, &format!("{name}-trailing"), &trailing)
}

fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn members() -> Membership<u64, BasicNode> {
    let nodes: BTreeMap<u64, BasicNode> = (1..=3)
        .map(|id| (id, BasicNode::new(format!("127.0.0.1:{}", 7000 + id))))
        .collect();
    Membership::new(vec![BTreeSet::from([1, 2, 3])], nodes)
}

fn entries() -> Result<Vec<Entry>> {
    let at = DateTime::from_timestamp(1_800_000_000, 0).ok_or("timestamp")?;
    let mut beat = Heartbeat::new("node1@lvm", "cinder-volume");
    beat.availability_zone = Some("nova".into());
    Ok(vec![
        Entry {
            log_id: log_id(1, 1),
            payload: EntryPayload::Blank,
        },
        Entry {
            log_id: log_id(1, 2),
            payload: EntryPayload::Membership(members()),
        },
        Entry {
            log_id: log_id(1, 3),
            payload: EntryPayload::Normal(Command::Heartbeats {
                at,
                beats: vec![beat, Heartbeat::new("node2@lvm", "cinder-scheduler")].into(),
            }),
        },
        Entry {
            log_id: log_id(1, 4),
            payload: EntryPayload::Normal(Command::Tick { at }),
        },
    ])
}

fn main() -> Result<()> {
    // API request bodies.
    for (name, body) in [
        ("one", r#"{"host":"node1@lvm","binary":"cinder-volume"}"#),
        (
            "array",
            r#"[{"host":"h1","binary":"cinder-volume","topic":"cinder-volume","availability_zone":"nova","cluster_name":"c1","rpc_current_version":"3.0","object_current_version":"1.39"},{"host":"h2","binary":"cinder-backup"}]"#,
        ),
        ("empty-array", "[]"),
        (
            "unknown-field",
            r#"{"host":"h","binary":"b","colour":"red"}"#,
        ),
        ("control-char", r#"{"host":"h\u0007","binary":"b"}"#),
        ("empty-host", r#"{"host":"","binary":"b"}"#),
        ("not-json", "host=h&binary=b"),
        ("number", "42"),
        ("nested", r#"[[{"host":"h","binary":"b"}]]"#),
    ] {
        write("api_heartbeats", name, body.as_bytes())?;
    }
    let long = format!(r#"{{"host":"{}","binary":"b"}}"#, "x".repeat(256));
    write("api_heartbeats", "long-host", long.as_bytes())?;

    // First byte: low nibble picks the native action (disable, enable, force-down,
    // clear-force-down, remove, freeze, thaw), high nibble the Cinder one (enable, disable,
    // disable-log-reason, freeze, thaw, failover_host, failover, set-log, get-log).
    for (name, pick, body) in [
        (
            "disable-enable",
            0x00u8,
            r#"{"host":"h@lvm","binary":"cinder-volume"}"#,
        ),
        (
            "disable-reason",
            0x20,
            r#"{"host":"h@lvm","binary":"cinder-volume","reason":"maint","disabled_reason":"maint"}"#,
        ),
        (
            "log-reason",
            0x20,
            r#"{"host":"h@lvm","binary":"cinder-volume","disabled_reason":"maint"}"#,
        ),
        (
            "old-service-key",
            0x11,
            r#"{"host":"h","service":"cinder-volume","cluster":null}"#,
        ),
        ("freeze", 0x35, r#"{"host":"h@lvm"}"#),
        ("thaw-with-binary", 0x46, r#"{"host":"h@lvm","binary":"b"}"#),
        (
            "cluster-name",
            0x12,
            r#"{"host":"h","binary":"b","cluster":"c"}"#,
        ),
        ("wrong-type", 0x03, r#"{"host":5,"binary":"b"}"#),
        ("failover", 0x64, r#"{}"#),
        ("not-object", 0x00, r#"["h"]"#),
    ] {
        let mut bytes = vec![pick];
        bytes.extend_from_slice(body.as_bytes());
        write("api_actions", name, &bytes)?;
    }

    for (name, query) in [
        (
            "filters",
            "host=node1%40lvm&binary=cinder-volume&consistency=stale",
        ),
        ("linearizable", "consistency=linearizable"),
        ("empty", ""),
        ("unknown-key", "colour=red&host=h"),
        ("bad-level", "consistency=eventual"),
        ("repeated", "host=a&host=b"),
        ("bad-escape", "host=%ZZ&binary=%"),
        ("plus-and-at", "host=node1@lvm+x&binary="),
    ] {
        write("api_query", name, query.as_bytes())?;
    }

    // Raft RPCs.
    let vote = Vote::new(3, 1);
    let entries = entries()?;
    let append = AppendEntriesRequest::<TypeConfig> {
        vote,
        prev_log_id: None,
        entries: entries.clone(),
        leader_commit: Some(log_id(1, 2)),
    };
    with_damage("rpc_append", "entries", &rpc::encode(&append)?)?;
    let heartbeat = AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(3, 1),
        prev_log_id: Some(log_id(1, 4)),
        entries: Vec::new(),
        leader_commit: Some(log_id(1, 4)),
    };
    write("rpc_append", "heartbeat", &rpc::encode(&heartbeat)?)?;
    // Vote (term 3, node 1, committed), no previous log id, then an entry count of u64::MAX
    // and nothing after it.
    write(
        "rpc_append",
        "huge-count",
        &[3, 1, 1, 0, 253, 255, 255, 255, 255, 255, 255, 255, 255],
    )?;

    let req = VoteRequest::<u64> {
        vote,
        last_log_id: Some(log_id(2, 40)),
    };
    with_damage("rpc_vote", "vote", &rpc::encode(&req)?)?;
    write("rpc_vote", "empty", &[])?;

    let mut state = ServicesState::default();
    state.last_applied = Some(log_id(1, 4));
    let mut changed = BTreeSet::new();
    for e in &entries {
        state.apply_entry(e, &mut changed);
    }
    let data = encode_state(&state)?;
    let meta = SnapshotMeta {
        last_log_id: Some(log_id(1, 4)),
        last_membership: StoredMembership::new(Some(log_id(1, 2)), members()),
        snapshot_id: "1-4-1".into(),
    };
    let chunk = InstallSnapshotRequest::<TypeConfig> {
        vote,
        meta: meta.clone(),
        offset: 0,
        data: data.clone(),
        done: true,
    };
    with_damage("rpc_snapshot", "chunk", &rpc::encode(&chunk)?)?;

    // Stored values.
    for (i, r) in state.records().enumerate() {
        with_damage("stored_record", &format!("record{i}"), &codec::encode(r)?)?;
    }
    // A host string said to be 128 MiB long, in 9 bytes (found by this target: it made
    // bincode allocate 128 MiB before failing).
    write(
        "stored_record",
        "oversized-host-length",
        &[0, 0, 0, 252, 189, 0, 0, 8, 0],
    )?;
    for e in &entries {
        let name = format!("entry{}", e.log_id.index);
        with_damage("stored_entry", &name, &codec::encode(e)?)?;
    }

    // Snapshot data: the first byte picks the metadata's last log id (even: none; odd: 1-1-1).
    let mut fresh = ServicesState::default();
    fresh.last_applied = Some(log_id(1, 1));
    for e in &entries[2..] {
        let mut e = e.clone();
        e.log_id = log_id(1, 1);
        fresh.apply_entry(&e, &mut changed);
    }
    let mut bytes = vec![1u8];
    bytes.extend(encode_state(&fresh)?);
    with_damage("snapshot_data", "records", &bytes)?;
    let mut empty = vec![0u8];
    empty.extend(encode_state(&ServicesState::default())?);
    write("snapshot_data", "empty-state", &empty)?;
    let mut mismatch = vec![0u8];
    mismatch.extend(encode_state(&fresh)?);
    write("snapshot_data", "log-id-mismatch", &mismatch)?;
    Ok(())
}
