//! The strings that many records carry (binaries, topics, zones, replication states,
//! versions, cluster names), held once by the table: a million services of four binaries
//! in one zone hold four binaries and one zone, not a million of each.
//!
//! Only what the table keeps shares a string; a value no record holds any more is dropped
//! from the set at the next sweep, and a sweep runs when the set has doubled since the last
//! one, so the set stays within twice the distinct values in use and its upkeep is constant
//! per value added.

use std::collections::HashSet;
use std::sync::Arc;

use crate::model::ServiceRecord;

/// Values the set holds before it ever sweeps.
const SWEEP_FLOOR: usize = 1024;

/// The shared strings.
#[derive(Debug, Clone, Default)]
pub(super) struct Strings {
    held: HashSet<Arc<str>>,
    /// Values held after the last sweep.
    after_sweep: usize,
}

impl Strings {
    /// The shared copy of `value`.
    pub(super) fn get(&mut self, value: &str) -> Arc<str> {
        if let Some(shared) = self.held.get(value) {
            return Arc::clone(shared);
        }
        if self.held.len() >= 2 * self.after_sweep + SWEEP_FLOOR {
            // A value only the set holds cannot be handed out again by anyone else: the
            // set is the only way to it, and `&mut self` is held.
            self.held.retain(|s| Arc::strong_count(s) > 1);
            self.after_sweep = self.held.len();
        }
        let shared: Arc<str> = Arc::from(value);
        self.held.insert(Arc::clone(&shared));
        shared
    }

    /// Sets `field` to `value`, to the shared copy, unless it holds it already; returns the
    /// value it held before when it changed.
    pub(super) fn set(&mut self, field: &mut Arc<str>, value: &str) -> Option<Arc<str>> {
        if **field == *value {
            return None;
        }
        Some(std::mem::replace(field, self.get(value)))
    }

    /// [`Strings::set`] for an optional field: a value given replaces the one held.
    pub(super) fn set_some(&mut self, field: &mut Option<Arc<str>>, value: &str) {
        if field.as_deref() != Some(value) {
            *field = Some(self.get(value));
        }
    }

    /// Makes a record read from a snapshot hold the shared copies of its strings.
    pub(super) fn share(&mut self, r: &mut ServiceRecord) {
        for field in [
            &mut r.binary,
            &mut r.topic,
            &mut r.availability_zone,
            &mut r.replication_status,
        ] {
            *field = self.get(field);
        }
        for field in [
            &mut r.rpc_current_version,
            &mut r.object_current_version,
            &mut r.active_backend_id,
            &mut r.cluster_name,
        ]
        .into_iter()
        .flatten()
        {
            *field = self.get(field);
        }
    }

    /// Values held, in use or not yet swept.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_held_once_and_dropped_once_nothing_else_holds_it() {
        let mut strings = Strings::default();
        let a = strings.get("cinder-volume");
        let b = strings.get("cinder-volume");
        assert!(Arc::ptr_eq(&a, &b), "one copy of a value");
        drop((a, b));
        // Fill the set to its floor with values nobody keeps: the set holds 'cinder-volume',
        // 'nova' and gone-0 to gone-1021 when gone-1022 comes, and sweeps all but 'nova'.
        let kept = strings.get("nova");
        for i in 0..SWEEP_FLOOR {
            strings.get(&format!("gone-{i}"));
        }
        assert_eq!(strings.len(), 3, "'nova', gone-1022 and gone-1023");
        assert!(
            Arc::ptr_eq(&kept, &strings.get("nova")),
            "a value held survives"
        );
    }

    #[test]
    fn set_replaces_only_a_different_value() {
        let mut strings = Strings::default();
        let mut field = strings.get("nova");
        let before = Arc::clone(&field);
        assert_eq!(strings.set(&mut field, "nova"), None);
        assert!(
            Arc::ptr_eq(&field, &before),
            "an equal value leaves the field alone"
        );
        let old = strings.set(&mut field, "az1");
        assert_eq!(old.as_deref(), Some("nova"));
        assert_eq!(&*field, "az1");
    }
}
