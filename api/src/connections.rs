//! Bounds on a node's HTTP connections, so that clients that open connections and never
//! finish a request cannot take the node's file descriptors or its memory:
//! - at most [`ConnectionLimits::max_connections`] are open at once; a connection accepted
//!   past the cap is closed at once, counted in `registry_http_connections_refused_total`,
//!   and logged at most once per [`REFUSAL_LOG_INTERVAL`];
//! - a client has [`ConnectionLimits::header_timeout`] to send each request's head, and an
//!   idle keep-alive connection waits that long for its next request, before the connection
//!   is closed (hyper's header-read timeout, armed whenever a connection waits for a head).
//!
//! Connections between nodes count against the cap like any other: the cap is sized for
//! many clients, far above what the peers hold.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How often a refused connection is logged at most.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The bounds (from the node's config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// How long a request's head may take to arrive, and how long an idle connection waits
    /// for the next request.
    pub header_timeout: Duration,
}

/// The open connections of a node, under its cap.
#[derive(Debug)]
pub struct Connections {
    /// One permit per open connection.
    slots: Arc<Semaphore>,
    /// The cap.
    max: usize,
    /// When a refusal was last logged.
    last_logged: Mutex<Option<Instant>>,
}

impl Connections {
    /// At most `max` connections at once.
    pub fn new(max: usize) -> Self {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            slots: Arc::new(Semaphore::new(max)),
            max,
            last_logged: Mutex::new(None),
        }
    }

    /// A slot for a connection just accepted, held until it closes; `None` at the cap (the
    /// caller closes the connection), logged at most once per [`REFUSAL_LOG_INTERVAL`].
    pub fn open(&self) -> Option<OwnedSemaphorePermit> {
        let slot = self.slots.clone().try_acquire_owned().ok();
        if slot.is_none() {
            let mut last = self
                .last_logged
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if last.is_none_or(|t| t.elapsed() >= REFUSAL_LOG_INTERVAL) {
                *last = Some(Instant::now());
                tracing::warn!(
                    max_connections = self.max,
                    "closing new connections: the node has its maximum open"
                );
            }
        }
        slot
    }

    /// Connections open now.
    pub fn open_now(&self) -> usize {
        self.max.saturating_sub(self.slots.available_permits())
    }

    /// The cap.
    pub fn max(&self) -> usize {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cap is exact, and a closed connection frees its slot.
    #[test]
    fn the_cap_is_exact_and_slots_come_back() {
        let c = Connections::new(2);
        let a = c.open().expect("first");
        let _b = c.open().expect("second");
        assert!(c.open().is_none(), "a third is refused");
        assert_eq!(c.open_now(), 2);
        drop(a);
        assert_eq!(c.open_now(), 1);
        assert!(c.open().is_some(), "a closed connection frees its slot");
    }
}
