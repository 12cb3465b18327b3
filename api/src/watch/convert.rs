//! Events and zones as the API shows them (the wire types of `registry_client::events`).

use registry_client::events::{EventKind, EventOut, Position, ZoneOut, ZoneState, ZonesOut};
use registry_storage::event_log::EventPos;
use registry_storage::events::{self, Event, Subject};
use registry_storage::zones;
use registry_storage::ServicesState;

use crate::wire::{State, Status};

/// The wire position of a stored one.
pub fn position((index, seq): EventPos) -> Position {
    Position { index, seq }
}

/// The stored position of a wire one.
pub fn stored(p: Position) -> EventPos {
    (p.index, p.seq)
}

/// The wire kind of a stored one.
pub fn kind(k: events::EventKind) -> EventKind {
    use events::EventKind as K;
    match k {
        K::Created => EventKind::Created,
        K::Up => EventKind::Up,
        K::Down => EventKind::Down,
        K::Disabled => EventKind::Disabled,
        K::Enabled => EventKind::Enabled,
        K::ForcedDown => EventKind::ForcedDown,
        K::ForceCleared => EventKind::ForceCleared,
        K::Frozen => EventKind::Frozen,
        K::Thawed => EventKind::Thawed,
        K::Removed => EventKind::Removed,
        K::Zone => EventKind::Zone,
    }
}

/// The wire state of a zone.
pub fn zone_state(s: zones::ZoneState) -> ZoneState {
    match s {
        zones::ZoneState::Normal => ZoneState::Normal,
        zones::ZoneState::PartialDisruption => ZoneState::PartialDisruption,
        zones::ZoneState::FullDisruption => ZoneState::FullDisruption,
    }
}

/// An event as `GET /v1/events` sends it.
pub fn event_out(e: &Event) -> EventOut {
    let (host, binary, state, status, zone_state_, suspect) = match &e.subject {
        Subject::Service {
            key,
            down,
            disabled,
        } => (
            Some(key.host.to_string()),
            Some(key.binary.to_string()),
            Some(if *down { State::Down } else { State::Up }),
            Some(if *disabled {
                Status::Disabled
            } else {
                Status::Enabled
            }),
            None,
            None,
        ),
        Subject::Zone { state, suspect } => (
            None,
            None,
            None,
            None,
            Some(zone_state(*state)),
            Some(*suspect),
        ),
    };
    EventOut {
        position: position((e.index, e.seq)),
        kind: kind(e.kind),
        host,
        binary,
        zone: e.zone.clone(),
        state,
        status,
        zone_state: zone_state_,
        suspect,
        registry_time: e.registry_time,
    }
}

/// `GET /v1/zones` of `state`.
pub fn zones_out(state: &ServicesState) -> ZonesOut {
    let z = state.zones();
    ZonesOut {
        zones: z
            .iter()
            .map(|(name, c, s)| ZoneOut {
                name: name.clone(),
                total: c.total,
                up: c.up(),
                down: c.down,
                disabled: c.disabled,
                state: zone_state(s),
            })
            .collect(),
        suspect: z.suspect(),
        unhealthy_zone_threshold: f64::from(state.unhealthy_zone_permille()) / 1000.0,
        applied_index: state.last_applied.map(|l| l.index),
    }
}
