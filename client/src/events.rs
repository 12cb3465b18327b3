//! The wire types of watching: liveness events (`GET /v1/events`, Server-Sent Events), their
//! positions, and zone disruption (`GET /v1/zones`).
//!
//! Every node derives the same events at the same positions from the Raft log, so a watcher
//! resumes on any node from the last position it saw.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::wire::{State, Status};

/// Where an event stands in the log: the index of the entry that caused it and its number
/// among that entry's events (from 0). Written `INDEX-SEQ`; a bare `INDEX` stands for the end
/// of that entry (after all its events), which is what a list at applied index `INDEX` reflects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// Log index of the entry.
    pub index: u64,
    /// Number of the event within the entry; `u32::MAX` for "after all of them".
    pub seq: u32,
}

impl Position {
    /// The position after every event of entry `index`.
    pub fn end_of(index: u64) -> Self {
        Self {
            index,
            seq: u32::MAX,
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.seq == u32::MAX {
            write!(f, "{}", self.index)
        } else {
            write!(f, "{}-{}", self.index, self.seq)
        }
    }
}

/// A position that is not `INDEX` or `INDEX-SEQ`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not an event position: INDEX or INDEX-SEQ, both decimal")]
pub struct BadPosition(pub String);

impl FromStr for Position {
    type Err = BadPosition;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadPosition(s.chars().take(64).collect());
        let digits =
            |p: &str| !p.is_empty() && p.len() <= 20 && p.bytes().all(|b| b.is_ascii_digit());
        match s.split_once('-') {
            None if digits(s) => Ok(Position::end_of(s.parse().map_err(|_| bad())?)),
            Some((i, q)) if digits(i) && digits(q) => {
                let seq: u32 = q.parse().map_err(|_| bad())?;
                if seq == u32::MAX {
                    return Err(bad());
                }
                Ok(Position {
                    index: i.parse().map_err(|_| bad())?,
                    seq,
                })
            }
            _ => Err(bad()),
        }
    }
}

impl Serialize for Position {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Position {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// A service's first heartbeat (or its first after removal).
    Created,
    /// A heartbeat from a service that was down (silent past `service_down_time`).
    Up,
    /// A service went silent for longer than `service_down_time` of registry time.
    Down,
    /// An operator disabled the service.
    Disabled,
    /// An operator enabled it.
    Enabled,
    /// An operator forced it down.
    ForcedDown,
    /// An operator cleared the force.
    ForceCleared,
    /// Its host was frozen.
    Frozen,
    /// Its host was thawed.
    Thawed,
    /// It was removed.
    Removed,
    /// An availability zone's disruption state changed.
    Zone,
}

impl EventKind {
    /// Every kind, with its name.
    pub const ALL: [(EventKind, &'static str); 11] = [
        (EventKind::Created, "created"),
        (EventKind::Up, "up"),
        (EventKind::Down, "down"),
        (EventKind::Disabled, "disabled"),
        (EventKind::Enabled, "enabled"),
        (EventKind::ForcedDown, "forced-down"),
        (EventKind::ForceCleared, "force-cleared"),
        (EventKind::Frozen, "frozen"),
        (EventKind::Thawed, "thawed"),
        (EventKind::Removed, "removed"),
        (EventKind::Zone, "zone"),
    ];

    /// The kind's name (the SSE `event:` field, and what `?kinds=` lists).
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(k, _)| *k == self)
            .map_or("", |(_, n)| n)
    }

    /// The kind named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.iter().find(|(_, n)| *n == name).map(|(k, _)| *k)
    }
}

/// A zone's disruption state (Kubernetes' node lifecycle rule, over the zone's enabled
/// services).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ZoneState {
    /// Fewer than 3 enabled services down, or less than the threshold of them.
    Normal,
    /// More than 2 enabled services down, and at least `unhealthy_zone_threshold` of them.
    PartialDisruption,
    /// Enabled services, none of them up.
    FullDisruption,
}

impl ZoneState {
    /// Its name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            ZoneState::Normal => "normal",
            ZoneState::PartialDisruption => "partial-disruption",
            ZoneState::FullDisruption => "full-disruption",
        }
    }
}

/// One event, as `data:` of `GET /v1/events` carries it (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventOut {
    /// Its position (also the SSE `id:`).
    pub position: Position,
    /// What happened.
    pub kind: EventKind,
    /// The service's host (service events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The service's binary (service events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary: Option<String>,
    /// The service's availability zone, or the zone whose state changed.
    pub zone: String,
    /// The service's state after the event (service events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<State>,
    /// The service's status after the event (service events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// The zone's new state (zone events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone_state: Option<ZoneState>,
    /// The registry-wide suspect flag after the change (zone events): every zone in full
    /// disruption at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspect: Option<bool>,
    /// Registry time of the entry that caused it.
    pub registry_time: DateTime<Utc>,
}

/// The SSE event name a node sends before it ends a stream it cut off (a consumer too slow
/// for the events kept); its `data:` is a [`CutOff`].
pub const CUT_OFF_EVENT: &str = "cut-off";

/// Why a node ended a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CutOff {
    /// The reason, in words.
    pub reason: String,
    /// The last position sent: resume from it (a `410` then means re-list).
    pub position: Position,
}

/// Header of `GET /v1/events`' `410 Gone` answer: the oldest position a watch can still
/// resume from on that node.
pub const EVENTS_FROM_HEADER: &str = "x-registry-events-from";

/// One availability zone, as `GET /v1/zones` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneOut {
    /// The zone's name.
    pub name: String,
    /// Services in it (removed ones not counted).
    pub total: u64,
    /// Of them, up.
    pub up: u64,
    /// Of them, down (silent, or forced down).
    pub down: u64,
    /// Of them, disabled (up or down).
    pub disabled: u64,
    /// Its disruption state, judged over its enabled services.
    pub state: ZoneState,
}

/// Body of `GET /v1/zones`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZonesOut {
    /// Every zone with a service, by name.
    pub zones: Vec<ZoneOut>,
    /// Every zone in full disruption at once: more likely the network or the registry than
    /// every service. A fencing controller must not act while it is set.
    pub suspect: bool,
    /// The fraction of a zone's enabled services down (with more than 2 down) that makes it
    /// partially disrupted.
    pub unhealthy_zone_threshold: f64,
    /// The log index the counts reflect.
    pub applied_index: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_print_and_parse_back() {
        let p = Position { index: 12, seq: 3 };
        assert_eq!(p.to_string(), "12-3");
        assert_eq!("12-3".parse::<Position>(), Ok(p));
        assert_eq!("12".parse::<Position>(), Ok(Position::end_of(12)));
        assert_eq!(Position::end_of(12).to_string(), "12");
        assert!(Position::end_of(12) > p && Position { index: 13, seq: 0 } > Position::end_of(12));
        for bad in [
            "",
            "-",
            "1-",
            "-1",
            "a",
            "1-2-3",
            "1 ",
            "+1",
            "99999999999999999999999",
        ] {
            assert!(bad.parse::<Position>().is_err(), "{bad:?}");
        }
        assert!(format!("1-{}", u32::MAX).parse::<Position>().is_err());
    }

    #[test]
    fn zone_states_have_their_wire_names() {
        for z in [
            ZoneState::Normal,
            ZoneState::PartialDisruption,
            ZoneState::FullDisruption,
        ] {
            assert_eq!(
                serde_json::to_string(&z).ok(),
                Some(format!("\"{}\"", z.name()))
            );
        }
    }

    #[test]
    fn kinds_have_their_wire_names() {
        for (kind, name) in EventKind::ALL {
            assert_eq!(
                serde_json::to_string(&kind).ok(),
                Some(format!("\"{name}\""))
            );
            assert_eq!(EventKind::parse(name), Some(kind));
        }
    }
}
