//! The steady writers of the failover scenario: a few closed-loop reporters sending single
//! heartbeats to every endpoint for the whole run, and the watch for the first write a
//! surviving node acknowledges after a kill.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::stats::{Failure, Stats};
use crate::target::registry::RegistryTarget;
use crate::target::Target;

/// Pause after a failed write, so that a dead endpoint is not hammered (it refuses
/// connections at once).
const ERROR_PAUSE: Duration = Duration::from_millis(5);

/// An acknowledged write.
#[derive(Debug, Clone, Copy)]
pub struct Ack {
    /// When it was sent.
    pub sent: Instant,
    /// When its HTTP 200 arrived.
    pub acked: Instant,
    /// The endpoint (position in `--registry`) that acknowledged it.
    pub endpoint: usize,
}

/// What the writers report to the scenario: since which instant acknowledgements count, and
/// the first one that did.
#[derive(Debug, Default)]
struct AckState {
    /// Only writes sent at or after this instant count (the kill); `None`: none counts.
    after: Option<Instant>,
    /// The first counted acknowledgement.
    first: Option<Ack>,
}

impl AckState {
    /// Takes `ack` as the first one if it counts and none did before; whether it did.
    fn offer(&mut self, ack: Ack) -> bool {
        match self.after {
            Some(after) if self.first.is_none() && ack.sent >= after => {
                self.first = Some(ack);
                true
            }
            _ => false,
        }
    }
}

/// The closed-loop writers, running until [`Writers::stop`].
pub struct Writers {
    acks: Arc<watch::Sender<AckState>>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<Stats>>,
}

impl Writers {
    /// Starts `count` writers on `target`: writer `w` sends through endpoint `w` (modulo the
    /// endpoints) the groups `w`, `w + count`, ... in turn, each request bounded by
    /// `timeout`, and sends its next request as soon as the previous one is answered (5 ms
    /// after a failure).
    pub fn start(target: Arc<RegistryTarget>, count: usize, timeout: Duration) -> Self {
        let acks = Arc::new(watch::Sender::new(AckState::default()));
        let (stop, _) = watch::channel(false);
        let count = count.max(1);
        let groups = target.groups().max(1);
        let endpoints = target.endpoints().max(1);
        let tasks = (0..count)
            .map(|w| {
                let target = target.clone();
                let acks = acks.clone();
                let mut stop = stop.subscribe();
                tokio::spawn(async move {
                    let mut stats = Stats::new();
                    let mut group = w % groups;
                    let endpoint = w % endpoints;
                    while !*stop.borrow_and_update() {
                        let sent = Instant::now();
                        let res = tokio::select! {
                            res = tokio::time::timeout(timeout, target.send(w, endpoint, group)) => res,
                            _ = stop.changed() => break,
                        };
                        let res = res.unwrap_or_else(|_| {
                            Err(Failure::new("timeout", format!("no answer within {timeout:?}")))
                        });
                        let acked = Instant::now();
                        match res {
                            Ok(()) => {
                                stats.record_ok(acked - sent, 1);
                                acks.send_if_modified(|s| {
                                    s.offer(Ack {
                                        sent,
                                        acked,
                                        endpoint,
                                    })
                                });
                            }
                            Err(f) => {
                                stats.record_err(f);
                                tokio::time::sleep(ERROR_PAUSE).await;
                            }
                        }
                        group = (group + count) % groups;
                    }
                    stats
                })
            })
            .collect();
        Self { acks, stop, tasks }
    }

    /// From now on, the first acknowledgement of a write sent at or after `kill` is kept
    /// (the one kept before is forgotten).
    pub fn arm(&self, kill: Instant) {
        self.acks.send_modify(|s| {
            s.after = Some(kill);
            s.first = None;
        });
    }

    /// Waits, until `deadline`, for the first acknowledgement counted since [`Writers::arm`].
    pub async fn first_ack(&self, deadline: Instant) -> Option<Ack> {
        let mut rx = self.acks.subscribe();
        let found = tokio::time::timeout_at(deadline, rx.wait_for(|s| s.first.is_some())).await;
        match found {
            Ok(Ok(state)) => state.first,
            _ => None,
        }
    }

    /// Stops every writer and adds up what they measured.
    pub async fn stop(self) -> Stats {
        let _ = self.stop.send(true);
        let mut stats = Stats::new();
        for t in self.tasks {
            match t.await {
                Ok(s) => stats.merge(&s),
                Err(e) => stats.record_err(Failure::new("writer task", e)),
            }
        }
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_write_sent_after_the_kill_counts_and_only_the_first() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let ack = |sent, acked| Ack {
            sent: at(sent),
            acked: at(acked),
            endpoint: 0,
        };
        let mut s = AckState::default();
        assert!(
            !s.offer(ack(0, 1)),
            "nothing counts before the kill is armed"
        );
        s.after = Some(at(10));
        assert!(!s.offer(ack(5, 20)), "sent before the kill");
        assert!(s.offer(ack(10, 30)));
        assert!(!s.offer(ack(12, 35)), "only the first one is kept");
        assert_eq!(s.first.map(|a| a.acked), Some(at(30)));
    }
}
