//! Overload must not make a healthy service look dead.
//!
//! A heartbeat the registry refuses because it is overloaded (503 `overloaded` at admission,
//! or not committed within `write_timeout`) could not have landed: like time without a
//! leader, the time it was refused in must not count in full against the service. So every
//! node counts the heartbeat requests it received and refused ([`ShedMeter`]); a follower
//! hands its counts to the leader with the heartbeats it forwards ([`LOAD_HEADER`]); and the
//! leader's ticker sets the registry clock's rate from the share refused over the last second
//! ([`ClockKeeper`], [`rate_for`]) by committing `Command::ClockRate`. The rate is in the
//! log, so every node runs its clock at the same rate from the same entry on.
//!
//! The rate is never zero ([`ClockRate::SLOWEST`] is an eighth): a service that stopped
//! still goes `down` during an overload, within 8 × `service_down_time` of wall time at
//! worst. At that rate a service heartbeating every `report_interval` (a sixth of
//! `service_down_time` by default) is listed `down` only if 48 of its heartbeats in a row
//! were refused.
//!
//! Heartbeats the node never read (waiting in kernel or client queues, or never sent
//! because the reporter's previous heartbeat was still unanswered) are invisible to these
//! counts, and at twice its capacity they outnumber the ones it refuses. So a reporter says,
//! with the next heartbeat that lands, how many it missed since its last acknowledged one
//! ([`MISSED_HEADER`], at most [`MAX_MISSED_COUNTED`] per request); they count as heartbeats
//! received and refused. A registry that queues rather than refuses (the requests wait in
//! kernel and client queues, and its own bound is not reached) refuses nothing for seconds at
//! a time while most heartbeats are lost, so missed heartbeats alone slow the clock too, but
//! only when there are many: at least [`MISSED_FLOOR`] in the window and 1% of the requests
//! read. A few reporters back from a network fault tell a few missed heartbeats each, which
//! must not slow the clock for every other service.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use openraft::ServerState;
use registry_client::wire::{MAX_MISSED_COUNTED, MISSED_HEADER};
use registry_storage::{ClockRate, Command};
use warp::http::HeaderMap;

use crate::shared::Shared;

/// The header a follower's forwarded heartbeats carry its counts in: `received,refused`.
pub const LOAD_HEADER: &str = "x-registry-heartbeat-load";

/// The header a follower's forwarded heartbeats carry the heartbeats its reporters said
/// they missed in, when there were any (a header of its own: a leader of an older build
/// ignores it and still reads [`LOAD_HEADER`]).
pub const MISSED_LOAD_HEADER: &str = "x-registry-heartbeat-missed";

/// The first storage format that decodes `Command::ClockRate`.
const CLOCK_RATE_FORMAT: u8 = 4;

/// The window the refused share is taken over.
const WINDOW: Duration = Duration::from_secs(1);

/// The fewest missed heartbeats in the window (a second) that slow the clock when the registry
/// refused none: at least 13 reporters (8 counted per request) late in the same second.
pub const MISSED_FLOOR: u64 = 100;

/// Heartbeat requests received and refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Load {
    /// Heartbeat requests received from reporters (admitted or refused).
    pub received: u64,
    /// Of them, refused for overload.
    pub refused: u64,
    /// Heartbeats reporters said they missed (not among `received`).
    pub missed: u64,
}

impl Load {
    /// The headers carrying it.
    pub fn headers(self) -> Vec<(&'static str, String)> {
        let mut h = vec![(LOAD_HEADER, format!("{},{}", self.received, self.refused))];
        if self.missed > 0 {
            h.push((MISSED_LOAD_HEADER, self.missed.to_string()));
        }
        h
    }

    /// The load the headers [`LOAD_HEADER`] and [`MISSED_LOAD_HEADER`] carry, if the first
    /// is there and well formed (a malformed second counts as none missed).
    pub fn from_headers(headers: &HeaderMap) -> Option<Load> {
        let (received, refused) = headers.get(LOAD_HEADER)?.to_str().ok()?.split_once(',')?;
        let missed = headers
            .get(MISSED_LOAD_HEADER)
            .and_then(|v| v.to_str().ok()?.trim().parse().ok())
            .unwrap_or(0);
        let load = Load {
            received: received.trim().parse().ok()?,
            refused: refused.trim().parse().ok()?,
            missed,
        };
        (load.refused <= load.received).then_some(load)
    }

    fn add(&mut self, other: Load) {
        self.received = self.received.saturating_add(other.received);
        self.refused = self.refused.saturating_add(other.refused);
        self.missed = self.missed.saturating_add(other.missed);
    }
}

/// The missed heartbeats a reporter's request says (its [`MISSED_HEADER`]), counted up to
/// [`MAX_MISSED_COUNTED`]; `Err` with what is wrong when the header is not a whole number.
pub fn missed_of(headers: &HeaderMap) -> Result<u32, String> {
    let Some(v) = headers.get(MISSED_HEADER) else {
        return Ok(0);
    };
    let n: u64 = v
        .to_str()
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .ok_or_else(|| {
            format!(
                "{MISSED_HEADER} must be a whole number of heartbeats, got {:?}",
                String::from_utf8_lossy(v.as_bytes())
            )
        })?;
    Ok(n.min(u64::from(MAX_MISSED_COUNTED)) as u32)
}

/// This node's counts of heartbeat requests from reporters since they were last taken.
#[derive(Debug, Default)]
pub struct ShedMeter {
    received: AtomicU64,
    refused: AtomicU64,
    missed: AtomicU64,
}

impl ShedMeter {
    /// A heartbeat request from a reporter was admitted.
    pub fn admitted(&self) {
        self.received.fetch_add(1, Ordering::Relaxed);
    }

    /// A heartbeat request from a reporter was refused for overload (it may have been
    /// admitted and counted before).
    pub fn refused(&self, admitted: bool) {
        if !admitted {
            self.received.fetch_add(1, Ordering::Relaxed);
        }
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// A heartbeat that landed came with `n` its reporter said it missed before it.
    pub fn missed(&self, n: u32) {
        self.missed.fetch_add(u64::from(n), Ordering::Relaxed);
    }

    /// Adds the counts another node handed over.
    pub fn add(&self, load: Load) {
        self.received.fetch_add(load.received, Ordering::Relaxed);
        self.refused.fetch_add(load.refused, Ordering::Relaxed);
        self.missed.fetch_add(load.missed, Ordering::Relaxed);
    }

    /// The counts since they were last taken, and starts again from zero.
    pub fn take(&self) -> Load {
        Load {
            received: self.received.swap(0, Ordering::Relaxed),
            refused: self.refused.swap(0, Ordering::Relaxed),
            missed: self.missed.swap(0, Ordering::Relaxed),
        }
    }
}

/// Whether a heartbeat request that failed with `e` was refused for the registry's load (or
/// its unavailability): it could not have landed.
pub fn refused_for_load(e: &crate::error::ApiError) -> bool {
    matches!(
        e,
        crate::error::ApiError::Overloaded(_) | crate::error::ApiError::Unavailable(_)
    )
}

/// The rate registry time runs at when `load` is what the registry received, refused and
/// was told was missed over the last second: full while under 1% of the requests it read is
/// refused and fewer than [`MISSED_FLOOR`] (or 1% of the requests read) were missed; else
/// `1 − 2 × the share lost` (refused and missed, of received and missed), rounded down to a
/// half, a quarter or [`ClockRate::SLOWEST`], so that the fewer heartbeats get through, the
/// more of them in a row must fail before a service is judged silent.
pub fn rate_for(load: Load) -> ClockRate {
    let refusing = load.refused > 0 && load.refused.saturating_mul(100) >= load.received;
    let losing = load.missed >= MISSED_FLOOR && load.missed.saturating_mul(100) >= load.received;
    if !(refusing || losing) {
        return ClockRate::FULL;
    }
    let lost = u128::from(load.refused) + u128::from(load.missed);
    let offered = (u128::from(load.received) + u128::from(load.missed)).max(1);
    let permille = 1000u128.saturating_sub(2000 * lost / offered);
    let rate = match permille {
        500.. => 500,
        250.. => 250,
        _ => ClockRate::SLOWEST.permille(),
    };
    ClockRate::from_permille(rate).unwrap_or(ClockRate::SLOWEST)
}

/// The leader's keeper of the clock's rate: called by the ticker.
pub struct ClockKeeper {
    shared: Arc<Shared>,
    /// The loads taken in the last [`WINDOW`], newest last, with the interval each covers.
    window: Mutex<VecDeque<(Duration, Load)>>,
}

impl ClockKeeper {
    /// A keeper of `shared`'s clock.
    pub fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            window: Mutex::new(VecDeque::new()),
        }
    }

    /// On the leader, takes the counts of the last `interval` and returns the command that
    /// sets the rate they call for, when it differs from the log's and every member decodes
    /// the command; `None` otherwise. Elsewhere the counts are left to the forwarder, which
    /// hands them to the leader.
    pub fn check(&self, interval: Duration) -> Option<Command> {
        let mut window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        if self.shared.raft.metrics().borrow().state != ServerState::Leader {
            window.clear();
            return None;
        }
        window.push_back((interval, self.shared.shed.take()));
        let mut covered: Duration = window.iter().map(|(d, _)| *d).sum();
        while covered > WINDOW && window.len() > 1 {
            if let Some((d, _)) = window.pop_front() {
                covered = covered.saturating_sub(d);
            }
        }
        let mut total = Load::default();
        for (_, l) in window.iter() {
            total.add(*l);
        }
        let want = rate_for(total);
        let now = self.shared.view.read(|s| s.clock.rate);
        if want == now || self.shared.common_format() < CLOCK_RATE_FORMAT {
            return None;
        }
        tracing::info!(
            from_per_mille = now.permille(),
            to_per_mille = want.permille(),
            received = total.received,
            refused = total.refused,
            missed = total.missed,
            "heartbeat requests refused for load in the last second: setting the registry \
             clock's rate"
        );
        Some(Command::ClockRate {
            at: chrono::Utc::now(),
            rate: want,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(received: u64, refused: u64) -> Load {
        Load {
            received,
            refused,
            missed: 0,
        }
    }

    fn with_missed(received: u64, refused: u64, missed: u64) -> Load {
        Load {
            missed,
            ..load(received, refused)
        }
    }

    /// Missed heartbeats count as lost ones; with nothing refused, only when there are many.
    #[test]
    fn missed_heartbeats_slow_the_clock_when_there_are_many() {
        let rate = |r, f, m| rate_for(with_missed(r, f, m)).permille();
        assert_eq!(
            rate(10, 0, 99),
            1000,
            "a few reporters back from a network fault"
        );
        assert_eq!(rate(20_000, 0, 199), 1000, "under 1% of what was read");
        assert_eq!(rate(10, 0, 100), 125, "the floor, most lost");
        assert_eq!(
            rate(6_930, 0, 9_081),
            125,
            "nothing refused, more lost than read: a registry that queues (a window of the \
             overload bench)"
        );
        assert_eq!(rate(10_000, 0, 200), 500, "2% lost unseen");
        assert_eq!(rate(10_000, 1_000, 0), 500, "10% refused alone: a half");
        assert_eq!(
            rate(10_000, 1_000, 3_000),
            250,
            "4,000 of 13,000 lost: a quarter"
        );
        assert_eq!(
            rate(10_000, 1_500, 30_000),
            125,
            "the overload of the bench: most heartbeats never read"
        );
        assert_eq!(rate(0, 0, 0), 1000);
        assert_eq!(rate(u64::MAX, u64::MAX, u64::MAX), 125, "no overflow");
    }

    /// A reporter's header is counted up to the cap; a malformed one is an error to answer.
    #[test]
    fn a_reporters_missed_heartbeats_are_read_and_capped() {
        let mut h = HeaderMap::new();
        assert_eq!(missed_of(&h), Ok(0), "absent: none");
        for (v, n) in [("0", 0), ("3", 3), (" 8 ", 8), ("9", 8), ("99999999999", 8)] {
            h.insert(MISSED_HEADER, v.parse().expect("a header value"));
            assert_eq!(missed_of(&h), Ok(n), "{v:?}");
        }
        for bad in ["", "-1", "two", "1.5"] {
            h.insert(MISSED_HEADER, bad.parse().expect("a header value"));
            let e = missed_of(&h).expect_err(bad);
            assert!(e.contains(MISSED_HEADER), "{e}");
        }
    }

    /// The rate falls with the share refused, never to zero, and is full when nothing (or
    /// under 1%) is refused.
    #[test]
    fn the_rate_falls_with_the_share_refused() {
        let rate = |r, f| rate_for(load(r, f)).permille();
        assert_eq!(rate(0, 0), 1000);
        assert_eq!(rate(10_000, 0), 1000);
        assert_eq!(rate(10_000, 99), 1000, "under 1%");
        assert_eq!(rate(10_000, 100), 500);
        assert_eq!(rate(10_000, 2_500), 500);
        assert_eq!(rate(10_000, 2_510), 250);
        assert_eq!(rate(10_000, 3_750), 250);
        assert_eq!(rate(10_000, 3_760), 125);
        assert_eq!(rate(10_000, 10_000), 125, "never zero");
        assert_eq!(rate(0, 5), 125, "refusals of requests counted elsewhere");
    }

    /// The header carries both counts and a malformed or impossible one is ignored.
    #[test]
    fn the_header_round_trips() {
        let mut h = HeaderMap::new();
        let put = |h: &mut HeaderMap, l: Load| {
            h.clear();
            for (name, value) in l.headers() {
                h.insert(name, value.parse().expect("a header value"));
            }
        };
        for l in [load(1234, 56), with_missed(1234, 56, 789)] {
            put(&mut h, l);
            assert_eq!(Load::from_headers(&h), Some(l));
        }
        assert_eq!(load(1, 0).headers().len(), 1, "no missed header when none");
        h.insert(MISSED_LOAD_HEADER, "x".parse().expect("a header value"));
        assert_eq!(
            Load::from_headers(&h),
            Some(load(1234, 56)),
            "a malformed missed count is none"
        );
        for bad in ["", "1", "a,b", "1,2", "-1,0"] {
            h.insert(LOAD_HEADER, bad.parse().expect("a header value"));
            assert_eq!(Load::from_headers(&h), None, "{bad:?}");
        }
    }

    /// A meter counts refusals of requests it admitted once, and starts again when taken.
    #[test]
    fn the_meter_counts_each_request_once() {
        let m = ShedMeter::default();
        m.admitted();
        m.admitted();
        m.refused(true);
        m.refused(false);
        m.add(with_missed(10, 1, 4));
        m.missed(3);
        assert_eq!(m.take(), with_missed(13, 3, 7));
        assert_eq!(m.take(), load(0, 0));
    }
}
