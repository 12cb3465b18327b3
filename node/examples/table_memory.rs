//! What the services table costs in memory, with the node's allocator: the resident size a
//! table of N services adds, and what a round of heartbeats to every service adds while a
//! snapshot holds the records (each record a reader holds is copied on write).
//!
//! ```sh
//! cargo run --release -p registry-node --example table_memory -- 1000000
//! ```
//!
//! The heartbeats are those of `registry-bench` (four services per host, topic, zone and both
//! versions set on each), applied in entries of 100 as the leader would batch them.

use std::time::Instant;

use chrono::{DateTime, Utc};
use openraft::{CommittedLeaderId, EntryPayload};
use registry_storage::snapshot::SnapshotSource;
use registry_storage::types::Entry;
use registry_storage::{Command, Heartbeat, ServicesState};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Services per entry.
const PER_ENTRY: usize = 100;
/// The binaries of a host's services.
const BINARIES: [&str; 4] = [
    "cinder-volume",
    "cinder-backup",
    "cinder-scheduler",
    "nova-compute",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let services: usize = match std::env::args().nth(1) {
        Some(n) => n.parse()?,
        None => 1_000_000,
    };
    let mut state = ServicesState::default();
    let mut index = 0;
    let base = rss_bytes()?;
    let started = Instant::now();
    apply_round(&mut state, services, &mut index);
    let built = rss_bytes()?;
    let first = started.elapsed();
    println!(
        "{services} services: table {:.1} MiB, {} B per service (a record is {} B); first round applied in {:.2} s",
        mib(built - base),
        (built - base) / services as u64,
        std::mem::size_of::<registry_storage::ServiceRecord>(),
        first.as_secs_f64(),
    );
    let started = Instant::now();
    apply_round(&mut state, services, &mut index);
    let again = rss_bytes()?;
    println!(
        "a round of heartbeats to every service: +{:.1} MiB, applied in {:.2} s ({:.2} µs per heartbeat)",
        mib(again.saturating_sub(built)),
        started.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64() * 1e6 / services as f64,
    );
    let held = SnapshotSource::of(&state);
    let started = Instant::now();
    apply_round(&mut state, services, &mut index);
    let during = rss_bytes()?;
    println!(
        "the same round while a snapshot holds {} records: +{:.1} MiB, {} B per service, applied in {:.2} s",
        held.len(),
        mib(during.saturating_sub(again)),
        during.saturating_sub(again) / services as u64,
        started.elapsed().as_secs_f64(),
    );
    drop(held);
    Ok(())
}

/// One heartbeat to each of `services`, in entries of [`PER_ENTRY`].
fn apply_round(state: &mut ServicesState, services: usize, index: &mut u64) {
    for first in (0..services).step_by(PER_ENTRY) {
        *index += 1;
        let beats: Vec<Heartbeat> = (first..(first + PER_ENTRY).min(services))
            .map(heartbeat)
            .collect();
        let entry = Entry {
            log_id: openraft::LogId::new(CommittedLeaderId::new(1, 1), *index),
            payload: EntryPayload::Normal(Command::Heartbeats {
                at: stamp(*index),
                beats: beats.into(),
            }),
        };
        state.apply_entry(&entry);
    }
}

fn heartbeat(i: usize) -> Heartbeat {
    let binary = BINARIES[i % BINARIES.len()];
    let mut hb = Heartbeat::new(format!("million-h{:07}", i / BINARIES.len()), binary);
    hb.topic = Some(binary.to_string());
    hb.availability_zone = Some("nova".into());
    hb.rpc_current_version = Some("3.17".into());
    hb.object_current_version = Some("1.39".into());
    hb
}

fn stamp(index: u64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(1_700_000_000_000_000 + index as i64 * 1_000)
        .unwrap_or_default()
}

/// The process's resident set (`VmRSS`), in bytes.
fn rss_bytes() -> Result<u64, Box<dyn std::error::Error>> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .ok_or("no VmRSS in /proc/self/status")?;
    Ok(kib * 1024)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
