//! Whether a service is `up`, computed at read time (Cinder's rule).
//!
//! A service is `up` when `abs(now - last_seen) <= service_down_time` and no operator forced
//! it down. Both times are registry time (see [`registry_storage::clock`]): `last_seen` was
//! stamped by the leader into the heartbeat's log entry, and `now` is the serving node's
//! estimate of registry time, passed in so the rule is tested without waiting. Neither the
//! reporter's clock nor the serving node's wall clock enters the rule.

use std::time::Duration;

use chrono::{DateTime, Utc};
use registry_storage::ServiceRecord;

pub use registry_client::wire::State;

/// The liveness rule with its setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    /// How long a service may stay silent and still be `up`.
    pub service_down_time: Duration,
}

impl Liveness {
    /// The state of `record` at `now`.
    pub fn state(&self, record: &ServiceRecord, now: DateTime<Utc>) -> State {
        self.at(now).state(record)
    }

    /// The rule at `now`, for judging many records (a list): two comparisons per record.
    pub fn at(&self, now: DateTime<Utc>) -> LivenessAt {
        let limit =
            chrono::Duration::from_std(self.service_down_time).unwrap_or(chrono::Duration::MAX);
        // abs(now - last_seen) <= limit  <=>  now - limit <= last_seen <= now + limit; a
        // bound past the range of times is no bound.
        LivenessAt {
            up_from: now.checked_sub_signed(limit),
            up_to: now.checked_add_signed(limit),
        }
    }
}

/// [`Liveness`] at one registry time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LivenessAt {
    /// Earliest `last_seen` that is up (`None`: no lower bound).
    up_from: Option<DateTime<Utc>>,
    /// Latest `last_seen` that is up (`None`: no upper bound).
    up_to: Option<DateTime<Utc>>,
}

impl LivenessAt {
    /// The state of `record`.
    pub fn state(&self, record: &ServiceRecord) -> State {
        let seen = record.last_seen;
        let up = !record.forced_down
            && self.up_from.is_none_or(|from| seen >= from)
            && self.up_to.is_none_or(|to| seen <= to);
        if up {
            State::Up
        } else {
            State::Down
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use registry_storage::{Command, Heartbeat, ServicesState};

    fn record_at(at: DateTime<Utc>) -> ServiceRecord {
        use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
        let mut state = ServicesState::default();
        let entry = Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), 1),
            payload: EntryPayload::Normal(Command::Heartbeats {
                at,
                beats: vec![Heartbeat::new("h", "cinder-volume")].into(),
            }),
        };
        state.apply_entry(&entry);
        let record = state.records().next().cloned();
        record.expect("the heartbeat created a record")
    }

    /// Up exactly up to `service_down_time` after the last heartbeat, down after; the
    /// difference is absolute, as in Cinder's API (a heartbeat "from the future" counts).
    #[test]
    fn up_until_service_down_time() {
        let t0 = DateTime::parse_from_rfc3339("2026-11-29T12:00:00Z")
            .expect("valid time")
            .with_timezone(&Utc);
        let rule = Liveness {
            service_down_time: Duration::from_secs(60),
        };
        let r = record_at(t0);
        let s = chrono::Duration::seconds;
        assert_eq!(rule.state(&r, t0), State::Up);
        assert_eq!(rule.state(&r, t0 + s(60)), State::Up);
        assert_eq!(rule.state(&r, t0 + s(61)), State::Down);
        assert_eq!(rule.state(&r, t0 - s(60)), State::Up);
        assert_eq!(rule.state(&r, t0 - s(61)), State::Down);
        let ns = chrono::Duration::nanoseconds;
        assert_eq!(rule.state(&r, t0 + s(60) + ns(1)), State::Down);
        assert_eq!(rule.state(&r, t0 - s(60) - ns(1)), State::Down);
        let forever = Liveness {
            service_down_time: Duration::MAX,
        };
        assert_eq!(forever.state(&r, t0 + s(1_000_000_000)), State::Up);
        assert_eq!(forever.state(&r, DateTime::<Utc>::MIN_UTC), State::Up);
        let mut forced = r.clone();
        forced.forced_down = true;
        assert_eq!(
            rule.state(&forced, t0),
            State::Down,
            "forced down overrides heartbeats"
        );
    }
}
