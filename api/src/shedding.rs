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
//! Requests a client gave up on before the node read them (kernel queues full) are not
//! counted: the node never saw them.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use openraft::ServerState;
use registry_storage::{ClockRate, Command};
use warp::http::HeaderMap;

use crate::shared::Shared;

/// The header a follower's forwarded heartbeats carry its counts in: `received,refused`.
pub const LOAD_HEADER: &str = "x-registry-heartbeat-load";

/// The first storage format that decodes `Command::ClockRate`.
const CLOCK_RATE_FORMAT: u8 = 4;

/// The window the refused share is taken over.
const WINDOW: Duration = Duration::from_secs(1);

/// Heartbeat requests received and refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Load {
    /// Heartbeat requests received from reporters (admitted or refused).
    pub received: u64,
    /// Of them, refused for overload.
    pub refused: u64,
}

impl Load {
    /// The header value carrying it.
    pub fn header_value(self) -> String {
        format!("{},{}", self.received, self.refused)
    }

    /// The load a [`LOAD_HEADER`] carries, if it is well formed.
    pub fn from_headers(headers: &HeaderMap) -> Option<Load> {
        let (received, refused) = headers.get(LOAD_HEADER)?.to_str().ok()?.split_once(',')?;
        let load = Load {
            received: received.trim().parse().ok()?,
            refused: refused.trim().parse().ok()?,
        };
        (load.refused <= load.received).then_some(load)
    }

    fn add(&mut self, other: Load) {
        self.received = self.received.saturating_add(other.received);
        self.refused = self.refused.saturating_add(other.refused);
    }
}

/// This node's counts of heartbeat requests from reporters since they were last taken.
#[derive(Debug, Default)]
pub struct ShedMeter {
    received: AtomicU64,
    refused: AtomicU64,
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

    /// Adds the counts another node handed over.
    pub fn add(&self, load: Load) {
        self.received.fetch_add(load.received, Ordering::Relaxed);
        self.refused.fetch_add(load.refused, Ordering::Relaxed);
    }

    /// The counts since they were last taken, and starts again from zero.
    pub fn take(&self) -> Load {
        Load {
            received: self.received.swap(0, Ordering::Relaxed),
            refused: self.refused.swap(0, Ordering::Relaxed),
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

/// The rate registry time runs at when `load` is what the registry received and refused over
/// the last second: full while under 1% is refused; else `1 − 2 × refused share`, rounded
/// down to a half, a quarter or [`ClockRate::SLOWEST`], so that the fewer heartbeats get
/// through, the more of them in a row must fail before a service is judged silent.
pub fn rate_for(load: Load) -> ClockRate {
    if load.refused == 0 || load.refused * 100 < load.received {
        return ClockRate::FULL;
    }
    let permille = 1000u64.saturating_sub(2000 * load.refused / load.received.max(1));
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
        Load { received, refused }
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
        let l = load(1234, 56);
        h.insert(
            LOAD_HEADER,
            l.header_value().parse().expect("a header value"),
        );
        assert_eq!(Load::from_headers(&h), Some(l));
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
        m.add(load(10, 1));
        assert_eq!(m.take(), load(13, 3));
        assert_eq!(m.take(), load(0, 0));
    }
}
