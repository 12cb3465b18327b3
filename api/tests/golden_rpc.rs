//! Golden files of the Raft RPC bodies of format version 1 (`tests/fixtures/v1/`), made by
//! the code that introduced it: every request and answer a node sends a peer. Every run
//! decodes them and encodes the same messages again, byte for byte, so a change to the wire
//! format without a new format version fails the suite. A new format version adds a
//! directory of its own, made with
//! `REGISTRY_WRITE_FIXTURES=1 cargo test -p registry-api --test golden_rpc -- --ignored`.
// The answers are openraft's own `Result`s, as the RPC routes encode them.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use chrono::DateTime;
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{CommittedLeaderId, EntryPayload, Membership, Vote};
use registry_api::transport::rpc;
use registry_storage::types::{Entry, LogId, SnapshotMeta, StoredMembership};
use registry_storage::{Command, Heartbeat, Incarnation, NodeId, RegistryNode, TypeConfig};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1")
}

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 2), index)
}

fn membership() -> Membership<NodeId, RegistryNode> {
    let nodes: BTreeMap<NodeId, RegistryNode> = (1..=3)
        .map(|n| {
            (
                n,
                RegistryNode::new(format!("10.0.0.{n}:21000"), Incarnation(0xfeed + n)),
            )
        })
        .collect();
    Membership::new(vec![BTreeSet::from([1, 2, 3])], nodes)
}

fn append() -> AppendEntriesRequest<TypeConfig> {
    let at = DateTime::from_timestamp(1_800_000_000, 123_000).unwrap_or_default();
    let entries: Vec<Entry> = vec![
        Entry {
            log_id: log_id(3, 10),
            payload: EntryPayload::Membership(membership()),
        },
        Entry {
            log_id: log_id(3, 11),
            payload: EntryPayload::Normal(Command::Heartbeats {
                at,
                beats: vec![Heartbeat {
                    topic: Some("cinder-volume".into()),
                    availability_zone: Some("nova".into()),
                    ..Heartbeat::new("node1@lvm", "cinder-volume")
                }]
                .into(),
            }),
        },
        Entry {
            log_id: log_id(3, 12),
            payload: EntryPayload::Normal(Command::Tick { at }),
        },
    ];
    AppendEntriesRequest {
        vote: Vote::new_committed(3, 2),
        prev_log_id: Some(log_id(3, 9)),
        entries,
        leader_commit: Some(log_id(3, 9)),
    }
}

fn vote() -> VoteRequest<NodeId> {
    VoteRequest {
        vote: Vote::new(4, 1),
        last_log_id: Some(log_id(3, 12)),
    }
}

fn snapshot_chunk() -> InstallSnapshotRequest<TypeConfig> {
    InstallSnapshotRequest {
        vote: Vote::new_committed(3, 2),
        meta: SnapshotMeta {
            last_log_id: Some(log_id(3, 12)),
            last_membership: StoredMembership::new(Some(log_id(3, 10)), membership()),
            snapshot_id: "3-12-1".into(),
        },
        offset: 0,
        data: b"RGSNAP\r\n...".to_vec(),
        done: false,
    }
}

type AppendResult = Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>;
type VoteResult = Result<VoteResponse<NodeId>, RaftError<NodeId>>;
type SnapshotResult =
    Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>;

fn append_answer() -> AppendResult {
    Ok(AppendEntriesResponse::Success)
}

fn vote_answer() -> VoteResult {
    Ok(VoteResponse {
        vote: Vote::new(4, 1),
        vote_granted: true,
        last_log_id: Some(log_id(3, 12)),
    })
}

fn snapshot_answer() -> SnapshotResult {
    Ok(InstallSnapshotResponse {
        vote: Vote::new_committed(3, 2),
    })
}

/// Every fixture: its file name and today's encoding of the message it holds.
fn encodings() -> Vec<(&'static str, Vec<u8>)> {
    let enc = |r: Result<Vec<u8>, rpc::RpcCodecError>| r.expect("encodes");
    vec![
        ("append.bin", enc(rpc::encode(&append()))),
        ("vote.bin", enc(rpc::encode(&vote()))),
        ("snapshot.bin", enc(rpc::encode(&snapshot_chunk()))),
        ("append-answer.bin", enc(rpc::encode(&append_answer()))),
        ("vote-answer.bin", enc(rpc::encode(&vote_answer()))),
        ("snapshot-answer.bin", enc(rpc::encode(&snapshot_answer()))),
    ]
}

/// Writes the fixtures (only with `REGISTRY_WRITE_FIXTURES` set, into an empty directory).
#[test]
#[ignore = "writes the golden files; run once per new format version"]
fn write_fixtures() -> std::io::Result<()> {
    if std::env::var_os("REGISTRY_WRITE_FIXTURES").is_none() {
        return Ok(());
    }
    let dir = fixtures();
    assert!(
        !dir.exists(),
        "the fixtures of a format are never rewritten"
    );
    std::fs::create_dir_all(&dir)?;
    for (name, bytes) in encodings() {
        std::fs::write(dir.join(name), bytes)?;
    }
    Ok(())
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// Each format-1 body decodes to the message it was made of.
#[test]
fn format_1_bodies_decode() {
    let a: AppendEntriesRequest<TypeConfig> = rpc::decode(&read("append.bin")).expect("decodes");
    assert_eq!(a.vote, append().vote);
    assert_eq!(a.prev_log_id, append().prev_log_id);
    assert_eq!(a.entries, append().entries);
    assert_eq!(a.leader_commit, append().leader_commit);
    let v: VoteRequest<NodeId> = rpc::decode(&read("vote.bin")).expect("decodes");
    assert_eq!(v, vote());
    let s: InstallSnapshotRequest<TypeConfig> =
        rpc::decode(&read("snapshot.bin")).expect("decodes");
    assert_eq!(s.meta, snapshot_chunk().meta);
    assert_eq!((s.vote, s.offset, s.data, s.done), {
        let c = snapshot_chunk();
        (c.vote, c.offset, c.data, c.done)
    });
    let r: AppendResult = rpc::decode(&read("append-answer.bin")).expect("decodes");
    assert_eq!(r, append_answer());
    let r: VoteResult = rpc::decode(&read("vote-answer.bin")).expect("decodes");
    assert_eq!(r, vote_answer());
    let r: SnapshotResult = rpc::decode(&read("snapshot-answer.bin")).expect("decodes");
    assert_eq!(r, snapshot_answer());
}

/// Today's encoding of the same messages is byte for byte the fixture's.
#[test]
fn format_1_bodies_are_encoded_the_same_today() {
    for (name, bytes) in encodings() {
        assert_eq!(
            bytes,
            read(name),
            "{name}: the wire format changed without a new version"
        );
    }
}
