//! The events applying the log yields: liveness transitions judged on registry time, an
//! operator's changes, zone disruption and the suspect flag, numbered by position.

use std::time::Duration;

use chrono::{DateTime, Utc};
use openraft::{CommittedLeaderId, EntryPayload};
use registry_storage::events::{Event, EventKind, Subject};
use registry_storage::types::{Entry, LogId};
use registry_storage::zones::ZoneState;
use registry_storage::{
    AdminAction, Command, Heartbeat, LivenessSettings, ServiceKey, ServicesState,
};

fn t(s: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap_or_default()
}

/// A state machine fed entries at consecutive indexes, collecting their events.
struct Feed {
    state: ServicesState,
    index: u64,
}

impl Feed {
    fn new() -> Self {
        Self {
            state: ServicesState::default(),
            index: 0,
        }
    }

    fn apply(&mut self, cmd: Command) -> Vec<Event> {
        self.index += 1;
        let entry = Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), self.index),
            payload: EntryPayload::Normal(cmd),
        };
        let mut events = Vec::new();
        self.state.apply_entry_with_events(&entry, &mut events);
        events
    }

    fn beats(&mut self, at: i64, beats: &[(&str, &str)]) -> Vec<Event> {
        let beats = beats
            .iter()
            .map(|(host, zone)| Heartbeat {
                availability_zone: Some(zone.to_string()),
                ..Heartbeat::new(*host, "cinder-volume")
            })
            .collect::<Vec<_>>();
        self.apply(Command::Heartbeats {
            at: t(at),
            beats: beats.into(),
        })
    }

    fn tick(&mut self, at: i64) -> Vec<Event> {
        self.apply(Command::Tick { at: t(at) })
    }

    /// Ticks every second from `from` to `to` (registry time counts at most a second of a gap
    /// between entries); returns the events of them all.
    fn ticks(&mut self, from: i64, to: i64) -> Vec<Event> {
        (from..=to).flat_map(|s| self.tick(s)).collect()
    }
}

fn kinds(events: &[Event]) -> Vec<(EventKind, String)> {
    events
        .iter()
        .map(|e| match &e.subject {
            Subject::Service { key, .. } => (e.kind, key.host.to_string()),
            Subject::Zone { .. } => (e.kind, e.zone.clone()),
        })
        .collect()
}

fn settings(down_after: u64) -> Command {
    Command::Settings {
        at: t(0),
        settings: LivenessSettings::new(Duration::from_secs(down_after), 0.55),
    }
}

/// A silent service goes `down` at the entry that moves registry time past its deadline (a
/// tick, with no heartbeat of it), and comes back `up` with its next heartbeat; positions
/// number the events of each entry from 0.
#[test]
fn silence_and_return_are_events_at_the_entry_that_decides_them() {
    let mut f = Feed::new();
    assert!(f.apply(settings(10)).is_empty());
    let created = f.beats(0, &[("a", "z1"), ("b", "z1")]);
    assert_eq!(
        kinds(&created),
        [
            (EventKind::Created, "a".into()),
            (EventKind::Created, "b".into())
        ]
    );
    assert_eq!(
        created.iter().map(|e| (e.index, e.seq)).collect::<Vec<_>>(),
        [(2, 0), (2, 1)]
    );
    for s in 1..=10 {
        assert!(
            f.beats(s, &[("a", "z1")]).is_empty(),
            "nothing changes at {s} s"
        );
    }
    let down = f.tick(11);
    assert_eq!(
        kinds(&down),
        [(EventKind::Down, "b".into())],
        "silent for 11 s > 10 s"
    );
    assert_eq!(down[0].registry_time, t(11));
    assert!(matches!(
        down[0].subject,
        Subject::Service { down: true, .. }
    ));
    assert!(f.tick(12).is_empty(), "down once");
    let up = f.beats(13, &[("b", "z1")]);
    assert_eq!(kinds(&up), [(EventKind::Up, "b".into())]);
    assert!(matches!(
        up[0].subject,
        Subject::Service { down: false, .. }
    ));
}

/// An outage of the registry does not count: registry time moves at most the grace across
/// a gap between entries, so no one goes down for the registry's own silence.
#[test]
fn a_registry_outage_makes_no_service_down() {
    let mut f = Feed::new();
    f.apply(settings(10));
    f.beats(0, &[("a", "z1")]);
    assert!(f.tick(300).is_empty(), "five minutes without a leader");
    assert!(
        f.ticks(301, 309).is_empty(),
        "registry time is 10 s past the heartbeat"
    );
    assert_eq!(
        kinds(&f.tick(310))[0],
        (EventKind::Down, "a".into()),
        "then 11 s"
    );
}

/// Operator changes are events with the state and status after them.
#[test]
fn operator_changes_are_events() {
    let mut f = Feed::new();
    f.apply(settings(10));
    f.beats(0, &[("a", "z1")]);
    let key = ServiceKey::new("a", "cinder-volume");
    let admin = |action| Command::Admin {
        at: t(1),
        key: key.clone(),
        action,
    };
    let disabled = f.apply(admin(AdminAction::Disable { reason: None }));
    assert_eq!(kinds(&disabled), [(EventKind::Disabled, "a".into())]);
    assert!(matches!(
        disabled[0].subject,
        Subject::Service {
            disabled: true,
            down: false,
            ..
        }
    ));
    let forced = f.apply(admin(AdminAction::ForceDown(true)));
    assert_eq!(kinds(&forced), [(EventKind::ForcedDown, "a".into())]);
    assert!(matches!(
        forced[0].subject,
        Subject::Service { down: true, .. }
    ));
    assert!(
        f.ticks(2, 20).is_empty(),
        "already down: silence changes no state"
    );
    let cleared = f.apply(admin(AdminAction::ForceDown(false)));
    assert!(
        matches!(cleared[0].subject, Subject::Service { down: true, .. }),
        "still silent"
    );
    let frozen = f.apply(Command::Freeze {
        at: t(21),
        host: "a".into(),
        frozen: true,
    });
    assert_eq!(kinds(&frozen), [(EventKind::Frozen, "a".into())]);
    let removed = f.apply(admin(AdminAction::Remove));
    assert_eq!(kinds(&removed)[0], (EventKind::Removed, "a".into()));
    let again = f.beats(22, &[("a", "z1")]);
    assert_eq!(kinds(&again)[0], (EventKind::Created, "a".into()));
}

/// Zones go into partial then full disruption as their services go silent, every zone in
/// full disruption sets the suspect flag, and a return clears both.
#[test]
fn zones_disrupt_and_every_zone_down_is_suspect() {
    let mut f = Feed::new();
    f.apply(settings(10));
    let z1 = [
        ("a", "z1"),
        ("b", "z1"),
        ("c", "z1"),
        ("d", "z1"),
        ("e", "z1"),
    ];
    f.beats(0, &z1);
    f.beats(0, &[("x", "z2")]);
    for s in 1..=5 {
        f.beats(s, &[("a", "z1"), ("b", "z1"), ("x", "z2")]);
    }
    assert!(f.ticks(6, 10).iter().all(|e| e.kind == EventKind::Down));
    let partial = f.tick(11);
    let zone_events: Vec<_> = partial
        .iter()
        .filter(|e| e.kind == EventKind::Zone)
        .collect();
    assert_eq!(zone_events.len(), 1, "{:?}", kinds(&partial));
    assert!(
        matches!(
            zone_events[0].subject,
            Subject::Zone {
                state: ZoneState::PartialDisruption,
                suspect: false
            }
        ),
        "3 of 5 down is 60 %"
    );
    assert_eq!(
        partial.last().map(|e| e.kind),
        Some(EventKind::Zone),
        "zone events come last"
    );
    let all = f.ticks(12, 16);
    let zones: Vec<_> = all
        .iter()
        .filter_map(|e| match e.subject {
            Subject::Zone { state, suspect } => Some((e.zone.as_str(), state, suspect)),
            Subject::Service { .. } => None,
        })
        .collect();
    assert_eq!(
        zones,
        [
            ("z1", ZoneState::FullDisruption, true),
            ("z2", ZoneState::FullDisruption, true)
        ]
    );
    assert!(f.state.zones().suspect());
    let back = f.beats(17, &[("x", "z2")]);
    assert_eq!(kinds(&back)[0], (EventKind::Up, "x".into()));
    assert!(matches!(
        back.last().map(|e| &e.subject),
        Some(Subject::Zone {
            state: ZoneState::Normal,
            suspect: false
        })
    ));
    let counts: Vec<_> = f
        .state
        .zones()
        .iter()
        .map(|(z, c, s)| (z.clone(), c.up(), c.down, s))
        .collect();
    assert_eq!(
        counts,
        [
            ("z1".into(), 0, 5, ZoneState::FullDisruption),
            ("z2".into(), 1, 0, ZoneState::Normal)
        ]
    );
}

/// Without settings in the log nothing is judged silent; the settings entry judges everyone
/// at once, and a longer `service_down_time` brings services back.
#[test]
fn settings_entries_judge_again() {
    let mut f = Feed::new();
    f.beats(0, &[("a", "z1")]);
    assert!(f.tick(1).is_empty());
    f.tick(2);
    let mut tick = 2;
    while tick < 30 {
        tick += 1;
        assert!(f.tick(tick).is_empty(), "no settings, no silence");
    }
    let judged = f.apply(Command::Settings {
        at: t(31),
        settings: LivenessSettings::new(Duration::from_secs(10), 0.55),
    });
    assert_eq!(kinds(&judged)[0], (EventKind::Down, "a".into()));
    let longer = f.apply(Command::Settings {
        at: t(32),
        settings: LivenessSettings::new(Duration::from_secs(60), 0.55),
    });
    assert_eq!(kinds(&longer)[0], (EventKind::Up, "a".into()));
    assert_eq!(
        f.state.settings.map(|s| s.service_down_time_ms),
        Some(60_000)
    );
}
