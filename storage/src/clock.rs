//! Registry time: the clock liveness is measured on.
//!
//! Every command carries the leader's wall-clock time (`at`). Applying it advances registry
//! time by the wall time elapsed since the previous stamped entry, but never backwards (a new
//! leader whose clock is behind) and by at most [`OUTAGE_GRACE`] (a registry outage, or a new
//! leader whose clock is ahead). Since the leader stamps an entry at least every
//! [`TICK_INTERVAL`], a longer gap means the registry had no leader: that time does not count
//! against any service. The rule reads nothing but the entry and the state, so every node
//! computes the same registry times.
//!
//! While the registry refuses heartbeats because it is overloaded, registry time runs slower
//! than the leader's clock ([`ClockRate`], set by [`crate::Command::ClockRate`] entries): a
//! refused heartbeat could not have landed, so the time it was refused in counts against a
//! service only in part, as the time of an outage does not count at all. The rate is part of
//! the state the log derives, so every node runs its clock at the same rate from the same
//! entry on.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// How often a leader stamps an entry when nothing else is written.
pub const TICK_INTERVAL: Duration = Duration::from_millis(300);

/// The longest gap between stamped entries that still counts in full: a tick interval, the
/// ticker's own period and a commit, with room to spare. Anything beyond it is time without
/// a leader (an outage, or an election), which does not count against any service.
pub const OUTAGE_GRACE: Duration = Duration::from_secs(1);

/// How fast registry time runs against the leader's clock, in thousandths: 1000 in normal
/// operation, less while the registry sheds heartbeats (format 4). Never zero: a service
/// that stopped must still go `down` while the registry is overloaded, within
/// `service_down_time` × 1000 ÷ the rate of wall time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ClockRate(u16);

impl ClockRate {
    /// Registry time runs with the leader's clock.
    pub const FULL: ClockRate = ClockRate(1000);
    /// The slowest rate a leader sets: an eighth, so a stopped service goes `down` within
    /// eight `service_down_time`s of wall time even under sustained overload.
    pub const SLOWEST: ClockRate = ClockRate(125);

    /// The rate of `permille` thousandths, if it is one a clock may run at (1 to 1000).
    pub fn from_permille(permille: u16) -> Option<ClockRate> {
        (1..=1000)
            .contains(&permille)
            .then_some(ClockRate(permille))
    }

    /// The rate in thousandths.
    pub fn permille(self) -> u16 {
        self.0
    }

    /// How much of `d` of the leader's clock counts as registry time at this rate.
    fn scale(self, d: chrono::Duration) -> chrono::Duration {
        if self == Self::FULL {
            return d;
        }
        let micros = d.num_microseconds().unwrap_or(i64::MAX);
        chrono::Duration::microseconds(micros / 1000 * i64::from(self.0))
    }
}

impl Default for ClockRate {
    fn default() -> Self {
        Self::FULL
    }
}

/// The registry clock as the state machine keeps it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryClock {
    /// Registry time of the last stamped entry applied.
    #[serde(with = "chrono::serde::ts_microseconds_option")]
    pub now: Option<DateTime<Utc>>,
    /// Leader wall time of that entry.
    #[serde(with = "chrono::serde::ts_microseconds_option")]
    pub last_wall: Option<DateTime<Utc>>,
    /// The rate it runs at from the last stamped entry on. Stored apart from the clock (the
    /// clock's encoding is that of format 1), by the state machine's store and snapshots.
    #[serde(skip)]
    pub rate: ClockRate,
}

fn grace() -> chrono::Duration {
    chrono::Duration::from_std(OUTAGE_GRACE).unwrap_or(chrono::Duration::MAX)
}

impl RegistryClock {
    /// Advances the clock to a stamped entry's leader time, the time since the previous one
    /// counted at the clock's rate; returns the entry's registry time.
    pub fn advance(&mut self, at: DateTime<Utc>) -> DateTime<Utc> {
        let reg = match (self.now, self.last_wall) {
            (Some(now), Some(last)) => {
                now + self
                    .rate
                    .scale((at - last).clamp(chrono::Duration::zero(), grace()))
            }
            _ => at,
        };
        self.now = Some(reg);
        self.last_wall = Some(at);
        reg
    }

    /// Registry time `elapsed` after the last stamped entry was applied, counting at most
    /// [`OUTAGE_GRACE`] of it (beyond that, no leader is stamping: time stands still), at
    /// the clock's rate.
    pub fn now_after(&self, elapsed: Duration) -> Option<DateTime<Utc>> {
        let counted = chrono::Duration::from_std(elapsed.min(OUTAGE_GRACE)).unwrap_or(grace());
        self.now.map(|n| n + self.rate.scale(counted))
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

    /// At a rate below full, every gap (and the extrapolation between entries) counts in
    /// part; the grace is applied to the leader's time first.
    #[test]
    fn a_slower_rate_counts_each_gap_in_part() {
        let ms = chrono::Duration::milliseconds;
        let mut c = RegistryClock::default();
        c.advance(t(0));
        c.rate = ClockRate::from_permille(250).expect("a valid rate");
        assert_eq!(c.advance(t(1)), t(0) + ms(250));
        assert_eq!(
            c.advance(t(101)),
            t(0) + ms(500),
            "an outage: a quarter of the grace"
        );
        assert_eq!(
            c.now_after(Duration::from_millis(400)),
            Some(t(0) + ms(600))
        );
        c.rate = ClockRate::FULL;
        assert_eq!(c.advance(t(102)), t(1) + ms(500));
        assert_eq!(ClockRate::from_permille(0), None);
        assert_eq!(ClockRate::from_permille(1001), None);
        assert_eq!(ClockRate::SLOWEST.permille(), 125);
    }
}
