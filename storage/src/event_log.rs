//! The events a node derived from the entries it applied, kept in memory for watchers: the
//! newest `events.kept` of them (its capacity), in position order, with the position from which
//! every later event is still held (the floor). A watcher that asks for events after a
//! position below the floor is told so ([`Gone`]): it must list again, then watch from the
//! list's applied index. The floor is where this node started (the applied index it loaded),
//! where it installed a snapshot, or the position of the newest event it let go.
//!
//! Positions are `(log index, number within the entry)`; `(index, u32::MAX)` stands for the
//! end of entry `index`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::events::Event;
use crate::state::lock;

/// A position in the event sequence: `(log index, number within the entry)`.
pub type EventPos = (u64, u32);

/// The position after every event of entry `index`.
pub fn end_of(index: u64) -> EventPos {
    (index, u32::MAX)
}

/// Events kept by default: at 200 bytes or so each, about 20 MiB.
pub const DEFAULT_EVENTS_KEPT: usize = 100_000;

/// Why the events before the floor are not held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloorCause {
    /// This node started with its state at the floor: it derived nothing before.
    Started,
    /// This node installed a snapshot reflecting the floor.
    SnapshotInstalled,
    /// The events up to the floor were let go beyond the capacity.
    LetGo,
}

/// The events after a position are no longer all held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gone {
    /// The oldest position a watch can resume from now.
    pub floor: EventPos,
    /// Why nothing before it is held.
    pub cause: FloorCause,
}

/// What [`EventLog::after`] found.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The events, oldest first.
    pub events: Vec<Arc<Event>>,
    /// Whether more events after the last one are already held.
    pub more: bool,
    /// The end of the last entry applied when they were read.
    pub applied: EventPos,
}

#[derive(Debug)]
struct Ring {
    events: VecDeque<Arc<Event>>,
    capacity: usize,
    floor: EventPos,
    cause: FloorCause,
    applied: EventPos,
}

/// The shared event log of a node. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EventLog {
    ring: Arc<Mutex<Ring>>,
    /// Bumped on every change; watchers wait on it.
    changes: Arc<watch::Sender<u64>>,
}

impl EventLog {
    /// An empty log keeping at most `capacity` events (at least 1), whose floor is the end of
    /// entry `applied` (what the state it serves reflects).
    pub fn new(capacity: usize, applied: Option<u64>) -> Self {
        let at = end_of(applied.unwrap_or(0));
        Self {
            ring: Arc::new(Mutex::new(Ring {
                events: VecDeque::new(),
                capacity: capacity.max(1),
                floor: at,
                cause: FloorCause::Started,
                applied: at,
            })),
            changes: Arc::new(watch::channel(0).0),
        }
    }

    /// Adds the events of entries up to `applied`, in order; lets the oldest go beyond the
    /// capacity.
    pub(crate) fn append(&self, applied: u64, events: Vec<Event>) {
        {
            let mut ring = lock(&self.ring);
            for e in events {
                ring.events.push_back(Arc::new(e));
            }
            while ring.events.len() > ring.capacity {
                if let Some(old) = ring.events.pop_front() {
                    ring.floor = (old.index, old.seq);
                    ring.cause = FloorCause::LetGo;
                }
            }
            ring.applied = ring.applied.max(end_of(applied));
        }
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Forgets every event: the state now reflects entry `applied` without this node having
    /// derived the events before it (a snapshot installed).
    pub(crate) fn reset(&self, applied: Option<u64>) {
        {
            let mut ring = lock(&self.ring);
            ring.events.clear();
            ring.floor = end_of(applied.unwrap_or(0));
            ring.cause = FloorCause::SnapshotInstalled;
            ring.applied = ring.floor;
        }
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Up to `max` events after `pos`, or [`Gone`] when some of those are no longer held.
    pub fn after(&self, pos: EventPos, max: usize) -> Result<Batch, Gone> {
        let ring = lock(&self.ring);
        if pos < ring.floor {
            return Err(Gone {
                floor: ring.floor,
                cause: ring.cause,
            });
        }
        let start = ring.events.partition_point(|e| (e.index, e.seq) <= pos);
        let end = start.saturating_add(max).min(ring.events.len());
        Ok(Batch {
            events: ring.events.range(start..end).cloned().collect(),
            more: end < ring.events.len(),
            applied: ring.applied,
        })
    }

    /// The oldest position a watch can resume from.
    pub fn floor(&self) -> EventPos {
        lock(&self.ring).floor
    }

    /// The end of the last entry applied.
    pub fn applied(&self) -> EventPos {
        lock(&self.ring).applied
    }

    /// Events held now, and the most that are kept.
    pub fn len_and_capacity(&self) -> (usize, usize) {
        let ring = lock(&self.ring);
        (ring.events.len(), ring.capacity)
    }

    /// A receiver that changes whenever events are added or forgotten.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{EventKind, Subject};
    use crate::zones::ZoneState;

    fn event(index: u64, seq: u32) -> Event {
        Event {
            index,
            seq,
            kind: EventKind::Zone,
            zone: "z".into(),
            subject: Subject::Zone {
                state: ZoneState::Normal,
                suspect: false,
            },
            registry_time: chrono::DateTime::UNIX_EPOCH,
            encoded: std::sync::OnceLock::new(),
        }
    }

    fn positions(b: &Batch) -> Vec<EventPos> {
        b.events.iter().map(|e| (e.index, e.seq)).collect()
    }

    /// Reads resume exactly after a position, and a position no longer covered is gone.
    #[test]
    fn reads_resume_after_a_position_until_it_is_let_go() -> Result<(), String> {
        let log = EventLog::new(3, Some(10));
        let gone = |r: Result<Batch, Gone>| r.err().map(|g| g.floor);
        assert_eq!(
            gone(log.after(end_of(9), 10)),
            Some(end_of(10)),
            "before the start"
        );
        log.append(11, vec![event(11, 0), event(11, 1)]);
        log.append(12, vec![]);
        log.append(13, vec![event(13, 0)]);
        let all = log.after(end_of(10), 10).map_err(|g| format!("{g:?}"))?;
        assert_eq!(positions(&all), [(11, 0), (11, 1), (13, 0)]);
        assert_eq!(all.applied, end_of(13));
        let rest = log.after((11, 0), 1).map_err(|g| format!("{g:?}"))?;
        assert_eq!((positions(&rest), rest.more), (vec![(11, 1)], true));
        assert!(log.after(end_of(13), 10).is_ok_and(|b| b.events.is_empty()));
        log.append(14, vec![event(14, 0)]);
        assert_eq!(log.floor(), (11, 0), "the oldest let go");
        assert_eq!(gone(log.after(end_of(10), 10)), Some((11, 0)));
        let kept = log.after((11, 0), 10).map_err(|g| format!("{g:?}"))?;
        assert_eq!(positions(&kept), [(11, 1), (13, 0), (14, 0)]);
        log.reset(Some(40));
        assert_eq!(
            gone(log.after(end_of(14), 10)),
            Some(end_of(40)),
            "a snapshot installed"
        );
        Ok(())
    }
}
