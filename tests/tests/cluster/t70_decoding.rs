//! The decoders of everything that comes from outside a node, on hostile bytes: API request
//! bodies and query strings (reporters, operators), Raft RPC bodies (peers), and stored values
//! and snapshot data (the disk, or a leader's snapshot). A short proptest run inside
//! `cargo test`; the long runs are the cargo-fuzz targets under `fuzz/` (see FUZZING.md).
//!
//! Invariants: no decoder panics on any input; valid heartbeats round-trip; a truncated valid
//! encoding of an RPC or a stored value is an error; a corrupted one is an error or a value,
//! never a panic; and a length prefix larger than the input is refused without allocating
//! what it claims (the largest allocation made while decoding is measured on this thread).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::{CommittedLeaderId, EntryPayload, LogId, Membership, Vote};
use proptest::prelude::*;
use registry_api::cinder::actions::{ActionRequest, CinderAction};
use registry_api::cinder::query::ListQuery;
use registry_api::transport::rpc::{self, RpcCodecError, RPC_DECODE_LIMIT};
use registry_api::wire::{
    action_command, parse_heartbeats, HeartbeatIn, ServiceAction, ServiceActionIn, ServicesQuery,
    MAX_BATCH,
};
use registry_storage::codec;
use registry_storage::snapshot::{self, encode_state};
use registry_storage::types::{Entry, SnapshotMeta, StoredMembership};
use registry_storage::{
    AdminAction, ClusterId, Command, Heartbeat, Incarnation, RegistryNode, ServiceKey,
    ServiceRecord, ServicesState, StoreError, TypeConfig,
};

// ---------------------------------------------------------------------------------------------
// Measuring allocations: the largest single allocation made by this thread while tracking.

/// The system allocator, noting the largest allocation of threads that asked for it.
struct Tracking;

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = TRACKING.try_with(|on| {
        if on.get() {
            let _ = LARGEST.try_with(|m| m.set(m.get().max(size)));
        }
    });
}

// SAFETY: every call is forwarded unchanged to the system allocator; the thread-locals
// touched on the way are const-initialised cells, which never allocate.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc_zeroed(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        System.realloc(ptr, layout, new_size)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOCATOR: Tracking = Tracking;

/// Runs `f`, returning its result and the largest single allocation it made.
fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|m| m.set(0));
    TRACKING.with(|on| on.set(true));
    let out = f();
    TRACKING.with(|on| on.set(false));
    (out, LARGEST.with(Cell::get))
}

/// What a decode may allocate at most, whatever the input claims: serde pre-allocates at most
/// 1 MiB for a sequence whose length it is told ("cautious" size hints); strings and byte
/// buffers are never allocated beyond what the input holds.
const PREALLOCATION_CAP: usize = 1 << 20;

// ---------------------------------------------------------------------------------------------
// Every decoder of outside bytes.

/// A decoder, by name; `true` when the bytes decoded.
type Decoder = (&'static str, fn(&[u8]) -> bool);

/// The RPC decoders.
fn rpc_decoders() -> [Decoder; 3] {
    [
        ("append", |b| {
            rpc::decode::<AppendEntriesRequest<TypeConfig>>(b).is_ok()
        }),
        ("vote", |b| rpc::decode::<VoteRequest<u64>>(b).is_ok()),
        ("snapshot", |b| {
            rpc::decode::<InstallSnapshotRequest<TypeConfig>>(b).is_ok()
        }),
    ]
}

/// The storage decoders.
fn stored_decoders() -> [Decoder; 3] {
    [
        ("record", |b| codec::decode::<ServiceRecord>(b).is_ok()),
        ("entry", |b| codec::decode::<Entry>(b).is_ok()),
        ("snapshot data", |b| snapshot::decode(b).is_ok()),
    ]
}

/// Feeds `bytes` to every decoder of outside input.
fn decode_everything(bytes: &[u8]) {
    let _ = parse_heartbeats(bytes);
    if let Ok(body) = serde_json::from_slice::<ServiceActionIn>(bytes) {
        for (action, _) in ServiceAction::ALL {
            let _ = action_command(action, &body).map(|cmd| cmd(Utc::now()));
        }
    }
    for (action, _) in CinderAction::ALL {
        if let Ok(req) = ActionRequest::parse(action, bytes) {
            assert!(
                action_command(req.native, &req.body).is_ok(),
                "a validated Cinder action always builds a command"
            );
        }
    }
    let _ = serde_urlencoded::from_bytes::<ServicesQuery>(bytes);
    if let Ok(text) = std::str::from_utf8(bytes) {
        let _ = ListQuery::parse(text);
    }
    for (_, decode) in rpc_decoders().into_iter().chain(stored_decoders()) {
        decode(bytes);
    }
}

// ---------------------------------------------------------------------------------------------
// Valid values.

fn log_id(term: u64, node: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, node), index)
}

fn meta_for(last: Option<LogId<u64>>) -> SnapshotMeta {
    SnapshotMeta {
        last_log_id: last,
        last_membership: StoredMembership::default(),
        snapshot_id: "t70".into(),
    }
}

/// A field the API accepts: 1 to 255 characters, none of them a control character.
fn field() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z0-9@._:-]{1,24}", "[^\\p{Cc}]{1,40}", "[a-zé中]{255}",]
}

fn heartbeat_in() -> impl Strategy<Value = HeartbeatIn> {
    (
        field(),
        field(),
        proptest::option::of(field()),
        proptest::option::of(field()),
        proptest::option::of(field()),
        proptest::option::of(field()),
        proptest::option::of(field()),
    )
        .prop_map(
            |(host, binary, topic, az, cluster, rpc_v, obj_v)| HeartbeatIn {
                host,
                binary,
                topic,
                availability_zone: az,
                cluster_name: cluster,
                rpc_current_version: rpc_v,
                object_current_version: obj_v,
            },
        )
}

fn time() -> impl Strategy<Value = DateTime<Utc>> {
    (0i64..4_000_000_000_000_000)
        .prop_map(|us| DateTime::from_timestamp_micros(us).unwrap_or(DateTime::<Utc>::UNIX_EPOCH))
}

fn heartbeat() -> impl Strategy<Value = Heartbeat> {
    (field(), field(), proptest::option::of(field())).prop_map(|(host, binary, az)| Heartbeat {
        availability_zone: az,
        ..Heartbeat::new(host, binary)
    })
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        (time(), proptest::collection::vec(heartbeat(), 0..4)).prop_map(|(at, beats)| {
            Command::Heartbeats {
                at,
                beats: beats.into(),
            }
        }),
        (time(), field(), field(), proptest::option::of(field())).prop_map(
            |(at, host, binary, reason)| Command::Admin {
                at,
                key: ServiceKey::new(host, binary),
                action: AdminAction::Disable { reason },
            }
        ),
        (time(), field(), any::<bool>()).prop_map(|(at, host, frozen)| Command::Freeze {
            at,
            host,
            frozen
        }),
        (time(), field(), field(), field()).prop_map(|(at, host, binary, by)| {
            Command::AdminBy {
                at,
                key: ServiceKey::new(host, binary),
                action: AdminAction::ForceDown(true),
                by,
            }
        }),
        (time(), field(), any::<bool>(), field()).prop_map(|(at, host, frozen, by)| {
            Command::FreezeBy {
                at,
                host,
                frozen,
                by,
            }
        }),
        time().prop_map(|at| Command::Tick { at }),
        (time(), 1u16..=1000).prop_map(|(at, permille)| Command::ClockRate {
            at,
            rate: registry_storage::ClockRate::from_permille(permille)
                .unwrap_or(registry_storage::ClockRate::FULL),
        }),
    ]
}

fn membership() -> impl Strategy<Value = Membership<u64, RegistryNode>> {
    proptest::collection::btree_set(1u64..10, 1..5).prop_map(|ids| {
        let nodes: BTreeMap<u64, RegistryNode> = ids
            .iter()
            .map(|id| {
                let addr = format!("127.0.0.1:{}", 7000 + id);
                (*id, RegistryNode::new(addr, Incarnation(id * 7919)))
            })
            .collect();
        Membership::new(vec![ids], nodes)
    })
}

fn entry() -> impl Strategy<Value = Entry> {
    let payload = prop_oneof![
        Just(EntryPayload::<TypeConfig>::Blank),
        membership().prop_map(EntryPayload::Membership),
        command().prop_map(EntryPayload::Normal),
    ];
    (any::<(u32, u8, u32)>(), payload).prop_map(|((term, node, index), payload)| Entry {
        log_id: log_id(term.into(), node.into(), index.into()),
        payload,
    })
}

fn record() -> impl Strategy<Value = ServiceRecord> {
    (
        (any::<u64>(), field(), field(), field(), any::<u64>()),
        (any::<bool>(), proptest::option::of(field()), time()),
        (proptest::option::of(time()), any::<bool>(), any::<bool>()),
    )
        .prop_map(
            |((id, host, binary, topic, count), (disabled, reason, at), (seen, frozen, down))| {
                ServiceRecord {
                    id,
                    host: host.into(),
                    binary: binary.into(),
                    topic: topic.into(),
                    report_count: count,
                    disabled,
                    disabled_reason: reason.clone(),
                    availability_zone: "nova".into(),
                    created_at: at,
                    updated_at: seen,
                    modified_at: None,
                    modified_by: reason,
                    deleted: false,
                    deleted_at: None,
                    rpc_current_version: None,
                    object_current_version: Some("1.39".into()),
                    replication_status: "not-capable".into(),
                    frozen,
                    active_backend_id: None,
                    cluster_name: None,
                    forced_down: down,
                    last_seen: seen.unwrap_or(at),
                }
            },
        )
}

fn vote() -> impl Strategy<Value = Vote<u64>> {
    (any::<u32>(), 1u64..10, any::<bool>()).prop_map(|(term, node, committed)| {
        if committed {
            Vote::new_committed(term.into(), node)
        } else {
            Vote::new(term.into(), node)
        }
    })
}

/// A valid encoding of one of the values a node decodes from a peer or from its disk, with
/// the name of its decoder.
fn valid_encoding() -> impl Strategy<Value = (&'static str, Vec<u8>)> {
    let opt_log_id = || proptest::option::of((1u64..50, 1u64..4, 0u64..1000));
    let lid = |t: Option<(u64, u64, u64)>| t.map(|(a, b, c)| log_id(a, b, c));
    prop_oneof![
        (
            vote(),
            opt_log_id(),
            proptest::collection::vec(entry(), 0..4),
            opt_log_id()
        )
            .prop_map(move |(vote, prev, entries, commit)| {
                let req = AppendEntriesRequest::<TypeConfig> {
                    vote,
                    prev_log_id: lid(prev),
                    entries,
                    leader_commit: lid(commit),
                };
                ("append", rpc::encode(&req).expect("encodes"))
            }),
        (vote(), opt_log_id()).prop_map(move |(vote, last)| {
            let req = VoteRequest::<u64> {
                vote,
                last_log_id: lid(last),
            };
            ("vote", rpc::encode(&req).expect("encodes"))
        }),
        (
            vote(),
            opt_log_id(),
            field(),
            any::<u64>(),
            proptest::collection::vec(any::<u8>(), 0..300),
            any::<bool>()
        )
            .prop_map(move |(vote, last, id, offset, data, done)| {
                let req = InstallSnapshotRequest::<TypeConfig> {
                    vote,
                    meta: SnapshotMeta {
                        snapshot_id: id,
                        ..meta_for(lid(last))
                    },
                    offset,
                    data,
                    done,
                };
                ("snapshot", rpc::encode(&req).expect("encodes"))
            }),
        record().prop_map(|r| ("record", codec::encode(&r).expect("encodes"))),
        entry().prop_map(|e| ("entry", codec::encode(&e).expect("encodes"))),
        proptest::collection::vec(record(), 0..5).prop_map(|records| {
            let state = ServicesState::from_parts(
                Some(log_id(1, 1, 1)),
                StoredMembership::default(),
                7,
                Default::default(),
                None,
                records,
            );
            let blob = encode_state(&state, Some(ClusterId(3)), "1-1-1".into());
            ("snapshot data", blob.expect("encodes"))
        }),
    ]
}

/// The decoder named `name`.
fn decoder(name: &str) -> fn(&[u8]) -> bool {
    rpc_decoders()
        .into_iter()
        .chain(stored_decoders())
        .find(|(n, _)| *n == name)
        .map(|(_, d)| d)
        .expect("a decoder of that name")
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Properties.

proptest! {
    #![proptest_config(config())]

    /// Arbitrary bytes, and JSON- or query-like text, never make any decoder panic, nor
    /// allocate beyond serde's fixed pre-allocation cap.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..512),
        "[\\[\\]{}\":, a-z0-9@_=&%.-]{0,120}".prop_map(String::into_bytes),
    ]) {
        let ((), largest) = largest_allocation(|| decode_everything(&bytes));
        prop_assert!(largest <= PREALLOCATION_CAP + 64 * bytes.len(),
            "decoding {} bytes allocated {largest} bytes at once", bytes.len());
    }

    /// Valid heartbeats, one object or a batch, parse to exactly what was sent.
    #[test]
    fn valid_heartbeats_round_trip(batch in proptest::collection::vec(heartbeat_in(), 1..20)) {
        let expected: Vec<Heartbeat> = batch
            .iter()
            .map(|b| Heartbeat {
                host: b.host.clone(),
                binary: b.binary.clone(),
                topic: b.topic.clone(),
                availability_zone: b.availability_zone.clone(),
                cluster_name: b.cluster_name.clone(),
                rpc_current_version: b.rpc_current_version.clone(),
                object_current_version: b.object_current_version.clone(),
            })
            .collect();
        let body = serde_json::to_vec(&batch).expect("encodes");
        let parsed = parse_heartbeats(&body);
        prop_assert_eq!(parsed.as_ref().ok(), Some(&expected), "{:?}", parsed.as_ref().err());
        let one = serde_json::to_vec(&batch[0]).expect("encodes");
        prop_assert_eq!(parse_heartbeats(&one).ok(), Some(vec![expected[0].clone()]));
        prop_assert!(batch.len() <= MAX_BATCH);
    }

    /// A valid encoding decodes; every truncation of it and a trailing byte are errors; a
    /// corrupted byte gives an error or a value, never a panic or a large allocation.
    #[test]
    fn damaged_encodings_are_errors_never_panics(
        (name, bytes) in valid_encoding(),
        cut in any::<prop::sample::Index>(),
        flip_at in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let decode = decoder(name);
        prop_assert!(decode(&bytes), "a valid {} encoding decodes", name);
        let cut = cut.index(bytes.len());
        let (ok, largest) = largest_allocation(|| decode(&bytes[..cut]));
        prop_assert!(!ok, "{} truncated to {} of {} bytes decoded", name, cut, bytes.len());
        prop_assert!(largest <= PREALLOCATION_CAP, "truncated {} allocated {}", name, largest);
        let mut longer = bytes.clone();
        longer.push(0);
        prop_assert!(!decode(&longer), "{} with a trailing byte decoded", name);
        let mut corrupt = bytes.clone();
        let at = flip_at.index(corrupt.len());
        corrupt[at] ^= flip;
        let (_, largest) = largest_allocation(|| decode(&corrupt));
        prop_assert!(largest <= PREALLOCATION_CAP, "corrupted {} allocated {}", name, largest);
    }

    /// A string length prefix beyond the input, up to and past the decode limit, is refused
    /// without allocating it, in an RPC body and in a stored value alike.
    #[test]
    fn oversized_string_lengths_are_refused_without_allocating(claimed in prop_oneof![
        64u64..RPC_DECODE_LIMIT / 2,
        64u64..=u64::MAX,
    ]) {
        for (name, bytes) in marked_encodings() {
            let forged = forge(name, &bytes, claimed);
            let (ok, largest) = largest_allocation(|| decoder(name)(&forged));
            prop_assert!(!ok, "{} with a string of {} bytes claimed decoded", name, claimed);
            prop_assert!(largest < 4096,
                "{} claiming a {} byte string allocated {} bytes", name, claimed, largest);
        }
    }

    /// An entry count beyond the input is refused; serde pre-allocates at most its fixed cap.
    #[test]
    fn oversized_entry_counts_are_refused(claimed in 2u64..=u64::MAX) {
        let mut forged = empty_append_prefix();
        forged.extend(varint(claimed));
        forged.extend([0, 0]);
        let (res, largest) = largest_allocation(|| {
            rpc::decode::<AppendEntriesRequest<TypeConfig>>(&forged)
        });
        prop_assert!(res.is_err(), "{} entries claimed in {} bytes", claimed, forged.len());
        prop_assert!(largest <= PREALLOCATION_CAP, "allocated {}", largest);
    }
}

// ---------------------------------------------------------------------------------------------
// Forged length prefixes.

/// A string that marks where a length prefix is in an encoding.
const MARK: &str = "MARK-t70";

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

/// Valid encodings holding [`MARK`] as a string, with their decoder's name.
fn marked_encodings() -> Vec<(&'static str, Vec<u8>)> {
    let at = DateTime::<Utc>::UNIX_EPOCH;
    let entry = Entry {
        log_id: log_id(1, 1, 1),
        payload: EntryPayload::Normal(Command::Heartbeats {
            at,
            beats: vec![Heartbeat::new(MARK, "cinder-volume")].into(),
        }),
    };
    let chunk = InstallSnapshotRequest::<TypeConfig> {
        vote: Vote::new(1, 1),
        meta: SnapshotMeta {
            snapshot_id: MARK.into(),
            ..meta_for(None)
        },
        offset: 0,
        data: vec![1, 2, 3],
        done: true,
    };
    let append = AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new(1, 1),
        prev_log_id: None,
        entries: vec![entry.clone()],
        leader_commit: None,
    };
    let mut state = ServicesState::default();
    state.last_applied = Some(log_id(1, 1, 1));
    state.apply_entry(&entry);
    let record = state
        .records()
        .next()
        .cloned()
        .expect("the heartbeat made a record");
    vec![
        ("append", rpc::encode(&append).expect("encodes")),
        ("snapshot", rpc::encode(&chunk).expect("encodes")),
        ("record", codec::encode(&record).expect("encodes")),
        ("entry", codec::encode(&entry).expect("encodes")),
        (
            "snapshot data",
            encode_state(&state, Some(ClusterId(3)), "1-1-1".into()).expect("encodes"),
        ),
    ]
}

/// `bytes` (an encoding for decoder `name`) cut right after the length prefix of [`MARK`],
/// which now claims `claimed` bytes; a stored value or snapshot gets a checksum that matches
/// the forged bytes, so that the decoder beneath the checksum is the one put to the test.
fn forge(name: &str, bytes: &[u8], claimed: u64) -> Vec<u8> {
    let mut forged = forge_length(bytes, claimed);
    match name {
        "record" | "entry" => forged = codec::seal(&forged[5..]),
        "snapshot data" => {
            let crc = crc32fast::hash(&forged);
            forged.extend(crc.to_le_bytes());
        }
        _ => {}
    }
    forged
}

/// A stored value's payload in a valid envelope (format version, checksum), as sled holds it.
fn sealed(payload: &[u8]) -> Vec<u8> {
    codec::seal(payload)
}

/// `bytes` cut right after the length prefix of [`MARK`], which now claims `claimed` bytes.
fn forge_length(bytes: &[u8], claimed: u64) -> Vec<u8> {
    let mut needle = varint(MARK.len() as u64);
    needle.extend(MARK.as_bytes());
    let pos = bytes
        .windows(needle.len())
        .position(|w| w == needle.as_slice())
        .expect("the encoding holds the mark");
    let mut forged = bytes[..pos].to_vec();
    forged.extend(varint(claimed));
    forged.extend(&MARK.as_bytes()[..4]);
    forged
}

/// The encoding of an AppendEntries up to its entry count: the format version, then vote
/// (term 3, node 1, not committed) and no previous log id.
fn empty_append_prefix() -> Vec<u8> {
    vec![rpc::RPC_VERSION, 3, 1, 0, 0]
}

/// The layout the forged inputs rely on is the one the encoder produces.
#[test]
fn forged_inputs_follow_the_real_layout() {
    let empty = AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new(3, 1),
        prev_log_id: None,
        entries: Vec::new(),
        leader_commit: None,
    };
    let bytes = rpc::encode(&empty).expect("encodes");
    assert_eq!(bytes, [empty_append_prefix(), vec![0, 0]].concat());
    for (name, bytes) in marked_encodings() {
        assert!(decoder(name)(&bytes), "the marked {name} encoding decodes");
        assert!(
            !decoder(name)(&forge(name, &bytes, MARK.len() as u64 + 100)),
            "a forged {name} is refused"
        );
    }
}

/// Past the decode limit the refusal is the limit's; below it, the end of the input's. The
/// 9-byte record the `stored_record` fuzz target found (a 128 MiB topic) allocates nothing.
#[test]
fn length_prefixes_hit_the_limit_or_the_end_of_input() {
    let (name, bytes) = marked_encodings().remove(1);
    assert_eq!(name, "snapshot");
    let over = forge_length(&bytes, RPC_DECODE_LIMIT + 1);
    let err = rpc::decode::<InstallSnapshotRequest<TypeConfig>>(&over).map(|_| ());
    assert!(
        matches!(
            err,
            Err(RpcCodecError::Decode(
                bincode::error::DecodeError::LimitExceeded
            ))
        ),
        "a string over the RPC limit: {err:?}"
    );
    let under = forge_length(&bytes, RPC_DECODE_LIMIT / 2);
    let (err, largest) = largest_allocation(|| {
        rpc::decode::<InstallSnapshotRequest<TypeConfig>>(&under).map(|_| ())
    });
    assert!(
        matches!(
            err,
            Err(RpcCodecError::Decode(
                bincode::error::DecodeError::UnexpectedEnd { .. }
            ))
        ),
        "a string under the RPC limit but past the input: {err:?}"
    );
    assert!(largest < 4096, "allocated {largest} bytes");

    let found = sealed(&[0u8, 0, 0, 252, 189, 0, 0, 8, 0]);
    let (res, largest) = largest_allocation(|| codec::decode::<ServiceRecord>(&found));
    assert!(matches!(res, Err(StoreError::Decode(_))), "{res:?}");
    assert!(largest < 4096, "allocated {largest} bytes (was 128 MiB)");
}

/// A snapshot's bytes are allocated once, at their size: its records are encoded in place
/// rather than into a buffer of their own (grown by doubling) that is then copied, which
/// held two copies of a 100k-service table's encoding at the peak of every snapshot.
#[test]
fn a_snapshot_is_encoded_into_one_buffer_of_its_size() {
    let mut state = ServicesState::default();
    let at = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap_or_default();
    for chunk in 0..20u64 {
        let beats: Vec<Heartbeat> = (0..1000)
            .map(|i| Heartbeat::new(format!("host-{chunk}-{i}"), "cinder-volume"))
            .collect();
        let entry = Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), chunk + 1),
            payload: EntryPayload::Normal(Command::Heartbeats {
                at,
                beats: beats.into(),
            }),
        };
        state.apply_entry(&entry);
    }
    assert_eq!(state.len(), 20_000);
    let (bytes, largest) = largest_allocation(|| {
        encode_state(&state, Some(ClusterId(3)), "1-20-1".into()).expect("encodes")
    });
    assert!(
        largest <= bytes.len(),
        "encoding a snapshot of {} bytes allocated {largest} bytes at once",
        bytes.len()
    );
    snapshot::check(&bytes).expect("a whole snapshot");
}
