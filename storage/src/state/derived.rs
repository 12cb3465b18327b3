//! What the records, the registry clock and the liveness settings imply, kept beside the
//! records and rebuilt from them (never stored): which live services are silent past
//! `service_down_time`, the zones' counts and states, and the events an entry yields.
//!
//! A service is silent at registry time `now` when `now - last_seen > service_down_time`.
//! The live services that are not yet silent are kept ordered by `last_seen`, so applying an
//! entry that moves registry time finds those it made silent at the front, and a heartbeat
//! moves its service to the back. Built from scratch at a log index, or kept up entry by
//! entry to it, the structure is the same: that is what lets every node derive the same
//! events whether it applied every entry or installed a snapshot.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::ServicesState;
use crate::events::{EntryEvents, Event, EventKind, Subject};
use crate::model::{ServiceKey, ServiceRecord};
use crate::settings::{LivenessSettings, DEFAULT_UNHEALTHY_ZONE_PERMILLE};
use crate::zones::{Share, Zones};

/// The derived structures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Derived {
    /// Live services not silent, by (`last_seen`, id). Without settings in the log, no
    /// service is ever judged silent.
    alive: BTreeMap<(DateTime<Utc>, u64), ServiceKey>,
    /// Every zone's counts and state.
    zones: Zones,
}

impl Derived {
    /// The structures of `services` at registry time `now` under `settings`.
    pub(super) fn of<'a>(
        services: impl IntoIterator<Item = &'a std::sync::Arc<ServiceRecord>>,
        now: Option<DateTime<Utc>>,
        settings: Option<LivenessSettings>,
    ) -> Self {
        let limit = silent_before(now, settings);
        let mut d = Derived::default();
        for r in services.into_iter().filter(|r| !r.deleted) {
            if limit.is_none_or(|l| r.last_seen >= l) {
                d.alive.insert((r.last_seen, r.id), r.key());
            }
            d.zones.count(&r.availability_zone, d.share(r), true);
        }
        d.zones.rebuild_states(permille(settings));
        d
    }

    /// Whether the live record `r` is silent.
    fn silent(&self, r: &ServiceRecord) -> bool {
        !self.alive.contains_key(&(r.last_seen, r.id))
    }

    /// What the live record `r` adds to its zone.
    pub(super) fn share(&self, r: &ServiceRecord) -> Share {
        Share {
            down: r.forced_down || self.silent(r),
            disabled: r.disabled,
        }
    }

    /// Takes the live record `r` out of the services not silent (before its `last_seen`
    /// moves), in one lookup; returns its share as it was, and its key, to put it back with
    /// [`Derived::seen`] without copying it.
    pub(super) fn unseen(&mut self, r: &ServiceRecord) -> (Share, ServiceKey) {
        let held = self.alive.remove(&(r.last_seen, r.id));
        let share = Share {
            down: r.forced_down || held.is_none(),
            disabled: r.disabled,
        };
        (share, held.unwrap_or_else(|| r.key()))
    }

    /// Puts `r`, just heard from, among the services not silent; returns its share now
    /// (not silent: down only if forced).
    pub(super) fn seen(&mut self, r: &ServiceRecord, key: ServiceKey) -> Share {
        self.alive.insert((r.last_seen, r.id), key);
        Share {
            down: r.forced_down,
            disabled: r.disabled,
        }
    }

    /// Moves `r`'s share from `before` in zone `from` to what it is now, when it changed;
    /// returns the share now.
    pub(super) fn recount(
        &mut self,
        from: &str,
        before: Share,
        r: &ServiceRecord,
        fx: &mut Effects,
    ) -> Share {
        let after = self.share(r);
        self.recount_as(from, before, r, after, fx);
        after
    }

    /// [`Derived::recount`] with the share now already known.
    pub(super) fn recount_as(
        &mut self,
        from: &str,
        before: Share,
        r: &ServiceRecord,
        after: Share,
        fx: &mut Effects,
    ) {
        if *from != *r.availability_zone || before != after {
            self.zones.count(from, before, false);
            self.zones.count(&r.availability_zone, after, true);
            fx.touch(from);
            fx.touch(&r.availability_zone);
        }
    }

    /// Counts a new live record whose share is `share`.
    pub(super) fn add(&mut self, r: &ServiceRecord, share: Share, fx: &mut Effects) {
        self.zones.count(&r.availability_zone, share, true);
        fx.touch(&r.availability_zone);
    }

    /// Forgets a record just removed, whose share was `before`.
    pub(super) fn forget(&mut self, r: &ServiceRecord, before: Share, fx: &mut Effects) {
        self.alive.remove(&(r.last_seen, r.id));
        self.zones.count(&r.availability_zone, before, false);
        fx.touch(&r.availability_zone);
    }
}

/// Registry time before which a `last_seen` is silent at `now`, when there are settings.
fn silent_before(
    now: Option<DateTime<Utc>>,
    settings: Option<LivenessSettings>,
) -> Option<DateTime<Utc>> {
    let s = settings?;
    now?.checked_sub_signed(s.down_after())
}

/// The unhealthy-zone threshold in force.
fn permille(settings: Option<LivenessSettings>) -> u16 {
    settings.map_or(DEFAULT_UNHEALTHY_ZONE_PERMILLE, |s| {
        s.unhealthy_zone_permille
    })
}

/// What applying one entry yields besides the records: its events, and the zones whose
/// counts moved (settled once, at the end of the entry).
#[derive(Debug)]
pub(super) struct Effects<'a> {
    events: EntryEvents<'a>,
    touched: Vec<String>,
}

impl<'a> Effects<'a> {
    /// The effects of entry `index`, at registry time `at`, adding events to `out`.
    pub(super) fn new(index: u64, at: DateTime<Utc>, out: &'a mut Vec<Event>) -> Self {
        Self {
            events: EntryEvents {
                index,
                at,
                out,
                next_seq: 0,
            },
            touched: Vec::new(),
        }
    }

    /// Adds an event of `kind` about the service `r`, down (`down`) or up after it.
    pub(super) fn service(&mut self, kind: EventKind, r: &ServiceRecord, down: bool) {
        let subject = Subject::Service {
            key: r.key(),
            down,
            disabled: r.disabled,
        };
        self.events.push(kind, &r.availability_zone, subject);
    }

    /// Notes that `zone`'s counts moved.
    fn touch(&mut self, zone: &str) {
        if !self.touched.iter().any(|z| z == zone) {
            self.touched.push(zone.to_string());
        }
    }
}

impl ServicesState {
    /// Every zone's counts and state as of the last entry applied.
    pub fn zones(&self) -> &Zones {
        &self.derived.zones
    }

    /// The unhealthy-zone threshold in force, in thousandths.
    pub fn unhealthy_zone_permille(&self) -> u16 {
        permille(self.settings)
    }

    /// Marks the services that registry time `reg` made silent: each gets a `down` event
    /// unless an operator had forced it down already.
    pub(super) fn expire(&mut self, reg: DateTime<Utc>, fx: &mut Effects) {
        let Some(limit) = silent_before(Some(reg), self.settings) else {
            return;
        };
        while let Some(first) = self.derived.alive.first_entry() {
            if first.key().0 >= limit {
                break;
            }
            let (_, key) = first.remove_entry();
            let Some(r) = self.services.get(&key).filter(|r| !r.deleted) else {
                continue;
            };
            let before = Share {
                down: r.forced_down,
                disabled: r.disabled,
            };
            let after = Share {
                down: true,
                disabled: r.disabled,
            };
            self.derived
                .recount_as(&r.availability_zone, before, r, after, fx);
            if !r.forced_down {
                fx.service(EventKind::Down, r, true);
            }
        }
    }

    /// Applies new liveness settings at registry time `reg`: services whose silence the new
    /// `service_down_time` judges otherwise get `down` or `up` events, and every zone is
    /// judged again.
    pub(super) fn apply_settings(
        &mut self,
        settings: LivenessSettings,
        reg: DateTime<Utc>,
        fx: &mut Effects,
    ) {
        self.settings = Some(settings);
        let before = std::mem::take(&mut self.derived);
        let mut after = Derived::of(self.services.values(), Some(reg), self.settings);
        for r in self.services.values().filter(|r| !r.deleted) {
            let (was, is) = (before.silent(r), after.silent(r));
            if was != is && !r.forced_down {
                let kind = if is { EventKind::Down } else { EventKind::Up };
                fx.service(kind, r, is);
            }
        }
        for zone in before.zones.names().chain(after.zones.names()) {
            fx.touch(zone);
        }
        after.zones.keep_states_of(&before.zones);
        self.derived = after;
    }

    /// Settles the zones the entry moved: a `zone` event for each whose state changed.
    pub(super) fn settle_zones(&mut self, mut fx: Effects) {
        if fx.touched.is_empty() {
            return;
        }
        let touched = std::mem::take(&mut fx.touched);
        let permille = self.unhealthy_zone_permille();
        for change in self.derived.zones.settle(&touched, permille) {
            let subject = Subject::Zone {
                state: change.state,
                suspect: change.suspect,
            };
            fx.events.push(EventKind::Zone, &change.zone, subject);
        }
    }
}
