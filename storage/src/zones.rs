//! Zone disruption: per availability zone, how many services are up, down and disabled, and
//! whether the zone is disrupted, by Kubernetes' node lifecycle rule, counted over the zone's
//! enabled services (a disabled service was taken out by an operator, its silence is no
//! failure):
//! - **full disruption**: enabled services, none of them up;
//! - **partial disruption**: more than 2 of them down, and at least the unhealthy threshold
//!   (0.55 by default) of them;
//! - **normal** otherwise.
//!
//! The registry is **suspect** when every zone that has enabled services is in full
//! disruption at once: more likely the network or the registry than every service.
//!
//! The counts are derived from the records, the registry clock and the settings applied, so
//! every node holds the same at the same log index.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A zone's disruption state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ZoneState {
    /// Fewer than 3 enabled services down, or less than the threshold of them.
    Normal,
    /// More than 2 enabled services down, and at least the threshold of them.
    PartialDisruption,
    /// Enabled services, none of them up.
    FullDisruption,
}

/// What one live service adds to its zone's counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Share {
    /// Down (silent past `service_down_time`, or forced down).
    pub down: bool,
    /// Disabled.
    pub disabled: bool,
}

/// The counts of one zone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ZoneCounts {
    /// Live services.
    pub total: u64,
    /// Of them, down.
    pub down: u64,
    /// Of them, disabled.
    pub disabled: u64,
    /// Enabled services (live, not disabled).
    pub enabled: u64,
    /// Of them, down.
    pub enabled_down: u64,
}

impl ZoneCounts {
    /// Of the live services, up.
    pub fn up(&self) -> u64 {
        self.total - self.down
    }

    /// The zone's state at `permille` (the unhealthy threshold, in thousandths).
    pub fn state(&self, permille: u16) -> ZoneState {
        let up = self.enabled - self.enabled_down;
        if self.enabled > 0 && up == 0 {
            ZoneState::FullDisruption
        } else if self.enabled_down > 2
            && self.enabled_down * 1000 >= u64::from(permille) * self.enabled
        {
            ZoneState::PartialDisruption
        } else {
            ZoneState::Normal
        }
    }

    fn add(&mut self, share: Share, sign: bool) {
        let step = |n: &mut u64, yes: bool| {
            if yes {
                *n = if sign { *n + 1 } else { n.saturating_sub(1) };
            }
        };
        step(&mut self.total, true);
        step(&mut self.down, share.down);
        step(&mut self.disabled, share.disabled);
        step(&mut self.enabled, !share.disabled);
        step(&mut self.enabled_down, !share.disabled && share.down);
    }
}

/// Every zone's counts, and the states last derived from them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Zones {
    counts: BTreeMap<String, ZoneCounts>,
    /// The state each zone was in after the last entry (absent: normal).
    states: BTreeMap<String, ZoneState>,
    suspect: bool,
}

/// A zone whose state, or the suspect flag, an entry changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ZoneChange {
    /// The zone.
    pub zone: String,
    /// Its new state.
    pub state: ZoneState,
    /// The suspect flag after the entry.
    pub suspect: bool,
}

impl Zones {
    /// Moves a live service's share in or out of `zone` (`added` false: out).
    pub(crate) fn count(&mut self, zone: &str, share: Share, added: bool) {
        if let Some(c) = self.counts.get_mut(zone) {
            c.add(share, added);
            if c.total == 0 {
                self.counts.remove(zone);
            }
        } else if added {
            let mut c = ZoneCounts::default();
            c.add(share, true);
            self.counts.insert(zone.to_string(), c);
        }
    }

    /// Recomputes the states of `touched` zones and the suspect flag; returns the changes, in
    /// zone order: each touched zone whose state changed, and, when only the suspect flag
    /// changed (a zone appeared or emptied), every touched zone.
    pub(crate) fn settle<'a>(
        &mut self,
        touched: impl IntoIterator<Item = &'a String>,
        permille: u16,
    ) -> Vec<ZoneChange> {
        let mut touched: Vec<&String> = touched.into_iter().collect();
        touched.sort();
        touched.dedup();
        let mut changed = Vec::new();
        for zone in &touched {
            let now = self
                .counts
                .get(*zone)
                .map_or(ZoneState::Normal, |c| c.state(permille));
            let before = self.states.get(*zone).copied().unwrap_or(ZoneState::Normal);
            if now == ZoneState::Normal {
                self.states.remove(*zone);
            } else {
                self.states.insert((*zone).clone(), now);
            }
            if now != before {
                changed.push((*zone).clone());
            }
        }
        let suspect = self.compute_suspect(permille);
        let flipped = suspect != self.suspect;
        self.suspect = suspect;
        if changed.is_empty() && flipped {
            changed = touched.into_iter().cloned().collect();
        }
        changed
            .into_iter()
            .map(|zone| ZoneChange {
                state: self.state_of(&zone),
                zone,
                suspect,
            })
            .collect()
    }

    /// Recomputes every state from the counts, without changes (a state rebuilt from a
    /// snapshot or from disk, or new settings being applied through [`Zones::settle`]).
    pub(crate) fn rebuild_states(&mut self, permille: u16) {
        self.states = self
            .counts
            .iter()
            .map(|(z, c)| (z.clone(), c.state(permille)))
            .filter(|(_, s)| *s != ZoneState::Normal)
            .collect();
        self.suspect = self.compute_suspect(permille);
    }

    /// Takes the states (and the suspect flag) `other` was left in, so that the next
    /// [`Zones::settle`] reports changes from them (counts rebuilt under new settings).
    pub(crate) fn keep_states_of(&mut self, other: &Zones) {
        self.states = other.states.clone();
        self.suspect = other.suspect;
    }

    fn compute_suspect(&self, permille: u16) -> bool {
        let mut with_enabled = self.counts.values().filter(|c| c.enabled > 0).peekable();
        with_enabled.peek().is_some()
            && with_enabled.all(|c| c.state(permille) == ZoneState::FullDisruption)
    }

    /// Every zone name with a live service.
    pub(crate) fn names(&self) -> impl Iterator<Item = &String> {
        self.counts.keys()
    }

    /// The state `zone` was left in.
    pub fn state_of(&self, zone: &str) -> ZoneState {
        self.states.get(zone).copied().unwrap_or(ZoneState::Normal)
    }

    /// Every zone with a live service: its counts and state, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &ZoneCounts, ZoneState)> {
        self.counts.iter().map(|(z, c)| (z, c, self.state_of(z)))
    }

    /// Whether every zone with enabled services is in full disruption.
    pub fn suspect(&self) -> bool {
        self.suspect
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(enabled: u64, enabled_down: u64) -> ZoneCounts {
        ZoneCounts {
            total: enabled,
            down: enabled_down,
            disabled: 0,
            enabled,
            enabled_down,
        }
    }

    /// Kubernetes' rule: partial from 3 down and 55 %, full when none is up.
    #[test]
    fn the_rule_is_kubernetes() {
        assert_eq!(zone(0, 0).state(550), ZoneState::Normal, "an empty zone");
        assert_eq!(
            zone(4, 2).state(550),
            ZoneState::Normal,
            "2 down is never partial"
        );
        assert_eq!(zone(5, 3).state(550), ZoneState::PartialDisruption, "60 %");
        assert_eq!(zone(6, 3).state(550), ZoneState::Normal, "50 %");
        assert_eq!(
            zone(20, 11).state(550),
            ZoneState::PartialDisruption,
            "55 % exactly"
        );
        assert_eq!(
            zone(1, 1).state(550),
            ZoneState::FullDisruption,
            "one, down"
        );
        assert_eq!(zone(2, 2).state(550), ZoneState::FullDisruption);
    }

    /// States change as shares move, and the suspect flag needs every zone fully down.
    #[test]
    fn settling_reports_the_zones_whose_state_changed() {
        let up = Share {
            down: false,
            disabled: false,
        };
        let down = Share {
            down: true,
            disabled: false,
        };
        let mut z = Zones::default();
        let (a, b) = ("a".to_string(), "b".to_string());
        z.count(&a, up, true);
        z.count(&b, up, true);
        assert!(z.settle([&a, &b], 550).is_empty(), "two normal zones");
        z.count(&a, up, false);
        z.count(&a, down, true);
        let c = z.settle([&a], 550);
        assert_eq!(c.len(), 1);
        assert_eq!(
            (c[0].state, c[0].suspect),
            (ZoneState::FullDisruption, false)
        );
        z.count(&b, up, false);
        z.count(&b, down, true);
        let c = z.settle([&b], 550);
        assert_eq!(
            (c[0].zone.as_str(), c[0].suspect),
            ("b", true),
            "every zone down"
        );
        let disabled_up = Share {
            down: false,
            disabled: true,
        };
        let c_zone = "c".to_string();
        z.count(&c_zone, disabled_up, true);
        assert!(
            z.settle([&c_zone], 550).is_empty(),
            "a zone of disabled services"
        );
        assert!(z.suspect(), "does not count against the flag");
        z.count(&c_zone, up, true);
        let c = z.settle([&c_zone], 550);
        assert_eq!(
            c.len(),
            1,
            "only the suspect flag changed: the touched zone tells it"
        );
        assert_eq!((c[0].state, c[0].suspect), (ZoneState::Normal, false));
    }
}
