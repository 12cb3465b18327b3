//! When a node builds a snapshot: once the log it applied since the last one holds about as
//! many bytes as that snapshot, rather than after a fixed number of entries.
//!
//! A snapshot costs the size of the table (encoded, written and synced); the log it lets go
//! of costs its own size on disk and in a restart's replay. Counting entries ties the first
//! to the write rate instead: at a few thousand small entries a second, a 20k-service table
//! was encoded every couple of seconds on every node. Counting bytes keeps the snapshot work
//! a bounded share of the write work (at most about as many bytes as the log took) and the
//! log on disk within a few snapshots' size, whatever the rate or the batch size.
//!
//! Past [`MAX_LOG_BYTES`] a snapshot is due whatever the table's size: the log between two
//! snapshots is held in memory as well as on disk (sled 0.34 keeps the pages it wrote
//! resident far past its cache's capacity: about 1.2 bytes of RSS per byte of log, measured
//! on sled alone), and at a million services it grew to 1¾ times the table's encoded size,
//! about 200 MB, before each snapshot.
//!
//! Each node decides for itself (openraft's own entry-count policy stays as a bound), and
//! the nodes' thresholds differ a little ([`SnapshotPolicy::due_for`]) so the three do not
//! encode the table at the same moment.

use std::sync::atomic::{AtomicU64, Ordering};

use openraft::EntryPayload;

use crate::model::Command;
use crate::types::Entry;

/// The least log since the last snapshot that makes one due, however small the table.
pub const MIN_LOG_BYTES: u64 = 4 * 1024 * 1024;

/// The most log since the last snapshot that the node's factor is applied to, however
/// large the table: with it a node holds at most 80–112 MiB of log between snapshots.
pub const MAX_LOG_BYTES: u64 = 64 * 1024 * 1024;

/// What a node counts to tell when a snapshot is due.
#[derive(Debug, Default)]
pub struct SnapshotPolicy {
    /// About how many bytes of log were applied since the last snapshot was taken.
    since: AtomicU64,
    /// The size of the last snapshot built or installed.
    last_size: AtomicU64,
}

impl SnapshotPolicy {
    /// Counts `entries`, just applied.
    pub fn applied(&self, entries: &[Entry]) {
        let bytes: u64 = entries.iter().map(approx_bytes).sum();
        self.since.fetch_add(bytes, Ordering::Relaxed);
    }

    /// A snapshot of the state as of now is being taken: the log applied from here on counts
    /// towards the next.
    pub fn taken(&self) {
        self.since.store(0, Ordering::Relaxed);
    }

    /// The snapshot taken last is `size` bytes.
    pub fn sized(&self, size: u64) {
        self.last_size.store(size, Ordering::Relaxed);
    }

    /// Whether node `node_id` should build a snapshot now: the log since the last one holds
    /// at least the last snapshot's size (within [`MIN_LOG_BYTES`] and [`MAX_LOG_BYTES`])
    /// times the node's factor (1¼, 1½ or 1¾ by node id, so nodes snapshot at different
    /// indexes).
    pub fn due_for(&self, node_id: u64) -> bool {
        let base = self
            .last_size
            .load(Ordering::Relaxed)
            .clamp(MIN_LOG_BYTES, MAX_LOG_BYTES);
        let quarters = 5 + node_id % 3;
        self.since.load(Ordering::Relaxed) >= base / 4 * quarters
    }

    /// Log bytes applied since the last snapshot.
    #[cfg(test)]
    fn since(&self) -> u64 {
        self.since.load(Ordering::Relaxed)
    }
}

/// About the bytes `entry` takes in the log: its strings and a fixed part per item; cheap
/// enough to count every applied entry.
fn approx_bytes(entry: &Entry) -> u64 {
    const ENTRY: u64 = 40;
    const ITEM: u64 = 16;
    let strings = |h: &crate::model::Heartbeat| {
        let opt = |s: &Option<String>| s.as_ref().map_or(1, |s| s.len() + 2);
        h.host.len()
            + h.binary.len()
            + opt(&h.topic)
            + opt(&h.availability_zone)
            + opt(&h.cluster_name)
            + opt(&h.rpc_current_version)
            + opt(&h.object_current_version)
    };
    ENTRY
        + match &entry.payload {
            EntryPayload::Normal(Command::Heartbeats { beats, .. }) => {
                beats.iter().map(|h| ITEM + strings(h) as u64).sum::<u64>()
            }
            EntryPayload::Membership(m) => ITEM * m.nodes().count() as u64 * 4,
            _ => ITEM * 4,
        }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Heartbeat;
    use openraft::{CommittedLeaderId, LogId};

    fn beats(n: usize) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), 1),
            payload: EntryPayload::Normal(Command::Heartbeats {
                at: chrono::Utc::now(),
                beats: (0..n)
                    .map(|i| Heartbeat::new(format!("host-{i:05}"), "cinder-volume"))
                    .collect::<Vec<_>>()
                    .into(),
            }),
        }
    }

    /// A snapshot is due once the log since the last one outgrows it (by the node's factor),
    /// never before [`MIN_LOG_BYTES`]; taking one starts the count again.
    #[test]
    fn due_once_the_log_outgrows_the_snapshot() {
        let p = SnapshotPolicy::default();
        let entry = beats(100);
        let per_entry = approx_bytes(&entry);
        assert!((100 * 30..100 * 60).contains(&per_entry), "{per_entry}");
        p.sized(1024);
        let entries = vec![entry; 10];
        p.applied(&entries);
        assert!(!p.due_for(1), "below the minimum");
        while p.since() < MIN_LOG_BYTES / 4 * 6 {
            p.applied(&entries);
        }
        assert!(p.due_for(1), "factor 1½");
        assert!(!p.due_for(2), "factor 1¾");
        p.taken();
        assert!(!p.due_for(1));
        p.sized(10 * MIN_LOG_BYTES);
        while p.since() < 10 * MIN_LOG_BYTES {
            p.applied(&entries);
        }
        assert!(!p.due_for(3), "factor 1¼ of a larger snapshot");
        while p.since() < 10 * MIN_LOG_BYTES / 4 * 5 {
            p.applied(&entries);
        }
        assert!(p.due_for(3));
    }

    /// A table whose snapshot is larger than [`MAX_LOG_BYTES`] gets one once the log holds
    /// that bound times the node's factor, not its own size.
    #[test]
    fn due_within_the_bound_for_a_large_table() {
        let p = SnapshotPolicy::default();
        let entries = vec![beats(1000); 10];
        p.sized(16 * MAX_LOG_BYTES);
        while p.since() < MAX_LOG_BYTES {
            p.applied(&entries);
        }
        assert!(!p.due_for(3), "below the bound times 1¼");
        while p.since() < MAX_LOG_BYTES / 4 * 5 {
            p.applied(&entries);
        }
        assert!(
            p.due_for(3),
            "the bound times 1¼, a sixteenth of the snapshot's size"
        );
        assert!(!p.due_for(2), "factor 1¾");
    }
}
