//! Writes the committed seed corpora, `corpus/<target>/seed-*`: a few small valid inputs of
//! each decoder, made with the registry's own encoders, and a few invalid ones (truncated,
//! corrupted, oversized length prefixes, unknown fields, newer format versions). Every
//! `seed-*` file of a target is removed first, so the corpora hold exactly what this writes.
//! Run from `fuzz/`: `cargo run --example write_seeds`.
//!
//! The targets of checksummed formats seal their input themselves (see `src/lib.rs`), so their
//! seeds are what lies beneath the checksum: a stored value's bincode payload (the target
//! prepends the version and the CRC-32), a snapshot blob without its trailing CRC-32 (the
//! target appends it). Each also has one whole, sealed encoding, which the target's pass over
//! the input as it is decodes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use chrono::DateTime;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::{CommittedLeaderId, EntryPayload, LogId, Membership, Vote};
use registry_api::transport::rpc;
use registry_storage::codec;
use registry_storage::snapshot::{self, encode_state};
use registry_storage::types::Entry;
use registry_storage::{
    ClusterId, Command, Heartbeat, Incarnation, RegistryNode, ServicesState, TypeConfig,
};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const TARGETS: [&str; 9] = [
    "api_heartbeats",
    "api_actions",
    "api_query",
    "rpc_append",
    "rpc_vote",
    "rpc_snapshot",
    "stored_record",
    "stored_entry",
    "snapshot_data",
];

/// Removes every committed seed (`seed-*`) of every target; what fuzz runs added stays.
fn clear_seeds() -> Result<()> {
    for target in TARGETS {
        let dir = Path::new("corpus").join(target);
        let Ok(files) = std::fs::read_dir(&dir) else {
            continue;
        };
        for file in files {
            let path = file?.path();
            let is_seed = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("seed-"));
            if is_seed {
                std::fs::remove_file(&path)?;
            }
        }
    }
    Ok(())
}

fn write(target: &str, name: &str, bytes: &[u8]) -> Result<()> {
    assert!(TARGETS.contains(&target), "a target: {target}");
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

fn members() -> Membership<u64, RegistryNode> {
    let nodes: BTreeMap<u64, RegistryNode> = (1..=3)
        .map(|id| {
            let addr = format!("127.0.0.1:{}", 7000 + id);
            (
                id,
                RegistryNode::new(addr, Incarnation(0x0123_4567_89ab_cd00 + id)),
            )
        })
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

/// bincode's varint (the standard configuration): below 251 one byte, else a marker byte
/// (251: u16, 252: u32, 253: u64) and the little-endian value.
fn varint(v: u64) -> Vec<u8> {
    match v {
        0..=250 => vec![v as u8],
        251..=0xffff => [vec![251], (v as u16).to_le_bytes().to_vec()].concat(),
        0x1_0000..=0xffff_ffff => [vec![252], (v as u32).to_le_bytes().to_vec()].concat(),
        _ => [vec![253], v.to_le_bytes().to_vec()].concat(),
    }
}

/// `state` encoded as a snapshot (`encode_state`), its header's `created_at` (the encoder's
/// wall clock) then set to a fixed time, so that the seeds are the same at every run.
fn snapshot_of(
    state: &ServicesState,
    cluster_id: Option<ClusterId>,
    snapshot_id: &str,
) -> Result<Vec<u8>> {
    let blob = encode_state(state, cluster_id, snapshot_id.into())?;
    let (mut info, _) = snapshot::decode(&blob)?;
    info.header.created_at = DateTime::from_timestamp(1_800_000_000, 0).ok_or("timestamp")?;
    let header = codec::encode_plain(&info.header)?;
    let (_, records) = split_snapshot(&blob);
    let mut out = snapshot::MAGIC.to_vec();
    out.push(blob[8]);
    out.extend_from_slice(&u32::try_from(header.len())?.to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&(records.len() as u64).to_le_bytes());
    out.extend_from_slice(records);
    out.extend_from_slice(&crc32fast::hash(&out).to_le_bytes());
    let (pinned, _) = snapshot::decode(&out)?;
    assert_eq!(pinned.header, info.header, "the pinned snapshot decodes");
    Ok(out)
}

/// A snapshot blob's parts: magic, version, header length and header; then its records
/// (without their length, nor the checksum after them).
fn split_snapshot(blob: &[u8]) -> (&[u8], &[u8]) {
    let header_len = u32::from_le_bytes([blob[9], blob[10], blob[11], blob[12]]) as usize;
    let header_end = 8 + 1 + 4 + header_len;
    (&blob[..header_end], &blob[header_end + 8..blob.len() - 4])
}

fn main() -> Result<()> {
    clear_seeds()?;

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

    // Raft RPCs: the format-version byte, then bincode.
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
    // The format version, a vote (term 3, node 1, committed) and no previous log id, then an
    // entry count of u64::MAX and nothing after it. The prefix is cut from a real encoding:
    // its last two bytes are the empty entry list and the absent commit index.
    let empty = AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(3, 1),
        prev_log_id: None,
        entries: Vec::new(),
        leader_commit: None,
    };
    let mut huge = rpc::encode(&empty)?;
    assert_eq!(
        huge[huge.len() - 2..],
        [0, 0],
        "empty entries, no commit index"
    );
    huge.truncate(huge.len() - 2);
    huge.extend(varint(u64::MAX));
    write("rpc_append", "huge-count", &huge)?;

    let req = VoteRequest::<u64> {
        vote,
        last_log_id: Some(log_id(2, 40)),
    };
    let vote_body = rpc::encode(&req)?;
    with_damage("rpc_vote", "vote", &vote_body)?;
    write("rpc_vote", "empty", &[])?;
    let mut newer = vote_body.clone();
    newer[0] = rpc::RPC_VERSION + 1;
    write("rpc_vote", "vote-newer-version", &newer)?;
    let mut zero = vote_body;
    zero[0] = 0;
    write("rpc_vote", "vote-version-0", &zero)?;

    // A snapshot of the state the entries make, sent whole in one chunk.
    let mut state = ServicesState::default();
    for e in &entries {
        state.apply_entry(e);
    }
    let cluster = ClusterId(0x00c0_ffee_0000_0000_0000_0000_0000_0001);
    let data = snapshot_of(&state, Some(cluster), "1-4-1")?;
    let meta = snapshot::check(&data)?.header.meta();
    let chunk = InstallSnapshotRequest::<TypeConfig> {
        vote,
        meta,
        offset: 0,
        data: data.clone(),
        done: true,
    };
    with_damage("rpc_snapshot", "chunk", &rpc::encode(&chunk)?)?;

    // Stored values: the bincode payload beneath the envelope, which the targets seal.
    for (i, r) in state.records().enumerate() {
        with_damage(
            "stored_record",
            &format!("record{i}"),
            &codec::encode_plain(r)?,
        )?;
    }
    if let Some(r) = state.records().next() {
        // A whole stored value, envelope and all, as sled holds it.
        write("stored_record", "record0-envelope", &codec::encode(r)?)?;
    }
    // A record whose topic is said to be 128 MiB long, in 9 bytes: id 0, empty host and
    // binary, then the topic's length prefix (found by this target: it made bincode allocate
    // 128 MiB before failing).
    write(
        "stored_record",
        "oversized-topic-length",
        &[0, 0, 0, 252, 189, 0, 0, 8, 0],
    )?;
    for e in &entries {
        let name = format!("entry{}", e.log_id.index);
        with_damage("stored_entry", &name, &codec::encode_plain(e)?)?;
    }
    write(
        "stored_entry",
        "entry3-envelope",
        &codec::encode(&entries[2])?,
    )?;

    // Snapshot data: the first byte picks the metadata (0: the header's own; 1, 2, 3: one that
    // differs in the last log id, the membership, the snapshot id), the rest is a blob without
    // its trailing CRC-32, which the target appends.
    let mut fresh = ServicesState::default();
    for e in &entries[2..] {
        let mut e = e.clone();
        e.log_id = log_id(1, 1);
        fresh.apply_entry(&e);
    }
    let blob = snapshot_of(&fresh, Some(cluster), "1-1-1")?;
    let unsealed = |pick: u8, blob: &[u8]| {
        let mut out = vec![pick];
        out.extend_from_slice(&blob[..blob.len() - 4]);
        out
    };
    with_damage("snapshot_data", "records", &unsealed(0, &blob))?;
    for (pick, name) in [
        (1, "log-id-mismatch"),
        (2, "membership-mismatch"),
        (3, "snapshot-id-mismatch"),
    ] {
        write("snapshot_data", name, &unsealed(pick, &blob))?;
    }
    let empty = snapshot_of(&ServicesState::default(), None, "0-0-0")?;
    write("snapshot_data", "empty-state", &unsealed(0, &empty))?;
    // The header of the records' snapshot (it counts 2 records) with the empty one's records.
    let (head, _) = split_snapshot(&blob);
    let (_, no_records) = split_snapshot(&empty);
    let mut count = vec![0u8];
    count.extend_from_slice(head);
    count.extend_from_slice(&(no_records.len() as u64).to_le_bytes());
    count.extend_from_slice(no_records);
    write("snapshot_data", "count-mismatch", &count)?;
    let mut newer = unsealed(0, &blob);
    newer[1 + 8] = codec::FORMAT_VERSION + 1;
    write("snapshot_data", "newer-version", &newer)?;
    // A whole blob, checksum and all, as a snapshot file holds it.
    let mut whole = vec![0u8];
    whole.extend_from_slice(&blob);
    write("snapshot_data", "records-sealed", &whole)?;
    Ok(())
}
