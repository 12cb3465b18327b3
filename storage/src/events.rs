//! The events that applying the log yields: a service's liveness transitions, an operator's
//! changes, and zone disruption changes. Each is a function of the entry and the state before
//! it, so every node yields the same events at the same positions (the entry's log index and
//! the event's number within the entry).

use std::sync::OnceLock;

use chrono::{DateTime, Utc};

use crate::model::ServiceKey;
use crate::zones::ZoneState;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A service's first heartbeat (or its first after removal).
    Created,
    /// A heartbeat from a service that was silent past `service_down_time`.
    Up,
    /// A service went silent past `service_down_time` of registry time.
    Down,
    /// Disabled by an operator.
    Disabled,
    /// Enabled by an operator.
    Enabled,
    /// Forced down by an operator.
    ForcedDown,
    /// Its forced down cleared by an operator.
    ForceCleared,
    /// Its host frozen.
    Frozen,
    /// Its host thawed.
    Thawed,
    /// Removed.
    Removed,
    /// A zone's disruption state (or the suspect flag) changed.
    Zone,
}

/// What an event says of its subject after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// A service.
    Service {
        /// The service.
        key: ServiceKey,
        /// Its state after the event: down (silent, or forced down) or up.
        down: bool,
        /// Disabled after the event.
        disabled: bool,
    },
    /// A zone.
    Zone {
        /// Its state after the event.
        state: ZoneState,
        /// Every zone with enabled services in full disruption, after the event.
        suspect: bool,
    },
}

/// One event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Log index of the entry that caused it.
    pub index: u64,
    /// Its number among that entry's events, from 0.
    pub seq: u32,
    /// What happened.
    pub kind: EventKind,
    /// The service's availability zone, or the zone whose state changed.
    pub zone: String,
    /// What it says of the service or zone.
    pub subject: Subject,
    /// Registry time of the entry.
    pub registry_time: DateTime<Utc>,
    /// The event as the API sends it, encoded once by the first stream that sends it and
    /// shared by every other (each node serves many watchers the same bytes).
    pub encoded: OnceLock<Box<[u8]>>,
}

/// The events of one entry as they are found, numbered in order.
#[derive(Debug)]
pub(crate) struct EntryEvents<'a> {
    pub(crate) index: u64,
    pub(crate) at: DateTime<Utc>,
    pub(crate) out: &'a mut Vec<Event>,
    pub(crate) next_seq: u32,
}

impl EntryEvents<'_> {
    /// Adds an event of `kind` about `zone` and `subject`.
    pub(crate) fn push(&mut self, kind: EventKind, zone: &str, subject: Subject) {
        self.out.push(Event {
            index: self.index,
            seq: self.next_seq,
            kind,
            zone: zone.to_string(),
            subject,
            registry_time: self.at,
            encoded: OnceLock::new(),
        });
        self.next_seq = self.next_seq.saturating_add(1);
    }
}
