//! Registry time: the clock liveness is measured on.
//!
//! Every command carries the leader's wall-clock time (`at`). Applying it advances registry
//! time by the wall time elapsed since the previous stamped entry, but never backwards (a new
//! leader whose clock is behind) and by at most [`OUTAGE_GRACE`] (a registry outage, or a new
//! leader whose clock is ahead). Since the leader stamps an entry at least every
//! [`TICK_INTERVAL`], a longer gap means the registry had no leader: that time does not count
//! against any service. The rule reads nothing but the entry and the state, so every node
//! computes the same registry times.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// How often a leader stamps an entry when nothing else is written.
pub const TICK_INTERVAL: Duration = Duration::from_millis(300);

/// The longest gap between stamped entries that still counts in full: a tick interval, the
/// ticker's own period and a commit, with room to spare. Anything beyond it is time without
/// a leader (an outage, or an election), which does not count against any service.
pub const OUTAGE_GRACE: Duration = Duration::from_secs(1);

/// The registry clock as the state machine keeps it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryClock {
    /// Registry time of the last stamped entry applied.
    #[serde(with = "chrono::serde::ts_microseconds_option")]
    pub now: Option<DateTime<Utc>>,
    /// Leader wall time of that entry.
    #[serde(with = "chrono::serde::ts_microseconds_option")]
    pub last_wall: Option<DateTime<Utc>>,
}

fn grace() -> chrono::Duration {
    chrono::Duration::from_std(OUTAGE_GRACE).unwrap_or(chrono::Duration::MAX)
}

impl RegistryClock {
    /// Advances the clock to a stamped entry's leader time; returns the entry's registry
    /// time.
    pub fn advance(&mut self, at: DateTime<Utc>) -> DateTime<Utc> {
        let reg = match (self.now, self.last_wall) {
            (Some(now), Some(last)) => now + (at - last).clamp(chrono::Duration::zero(), grace()),
            _ => at,
        };
        self.now = Some(reg);
        self.last_wall = Some(at);
        reg
    }

    /// Registry time `elapsed` after the last stamped entry was applied, counting at most
    /// [`OUTAGE_GRACE`] of it (beyond that, no leader is stamping: time stands still).
    pub fn now_after(&self, elapsed: Duration) -> Option<DateTime<Utc>> {
        let counted = chrono::Duration::from_std(elapsed.min(OUTAGE_GRACE)).unwrap_or(grace());
        self.now.map(|n| n + counted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).expect("valid timestamp")
    }

    /// Registry time follows leader time in normal operation, never goes backwards, and
    /// counts at most the grace of a gap.
    #[test]
    fn advances_like_the_leader_but_skips_outages() {
        let mut c = RegistryClock::default();
        assert_eq!(c.advance(t(0)), t(0));
        assert_eq!(c.advance(t(1)), t(1), "normal ticks count in full");
        assert_eq!(
            c.advance(t(0)),
            t(1),
            "a leader clock behind never moves time back"
        );
        assert_eq!(
            c.advance(t(1)),
            t(2),
            "time resumes from the new leader's clock"
        );
        assert_eq!(
            c.advance(t(101)),
            t(3),
            "a 100 s outage counts only the grace (1 s)"
        );
        assert_eq!(c.advance(t(102)), t(4));
    }

    /// Between entries, a node extrapolates registry time, but freezes it after the grace.
    #[test]
    fn extrapolation_stops_at_the_grace() {
        let mut c = RegistryClock::default();
        assert_eq!(c.now_after(Duration::from_secs(1)), None);
        c.advance(t(10));
        assert_eq!(
            c.now_after(Duration::from_millis(700)),
            Some(t(10) + chrono::Duration::milliseconds(700))
        );
        assert_eq!(c.now_after(Duration::from_secs(3600)), Some(t(11)));
    }
}
