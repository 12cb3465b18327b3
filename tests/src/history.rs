//! What reporters were told, and the checks run on it afterwards.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use registry_api::client::{ClientError, RegistryClient};
use registry_api::wire::{HeartbeatIn, ServiceOut, ServicesOut};

use crate::wait;

/// The outcome of one heartbeat request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged: committed with this `report_count`.
    Acked(u64),
    /// Refused with an error status: not applied (or applied without acknowledgement).
    Failed(String),
    /// No answer: may or may not have been applied.
    Unknown(String),
}

/// One heartbeat request and what came of it.
#[derive(Debug, Clone)]
pub struct Event {
    /// The service (host, binary).
    pub service: (String, String),
    /// When the request was sent.
    pub sent: Instant,
    /// When its outcome was known.
    pub done: Instant,
    /// The outcome.
    pub outcome: Outcome,
}

/// A shared, append-only history.
#[derive(Debug, Clone, Default)]
pub struct History {
    events: Arc<Mutex<Vec<Event>>>,
}

impl History {
    /// Records an event.
    pub fn record(&self, event: Event) {
        self.events.lock().expect("history lock").push(event);
    }

    /// Every event so far.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().expect("history lock").clone()
    }

    /// The largest acknowledged `report_count` per service.
    pub fn max_acked(&self) -> BTreeMap<(String, String), u64> {
        let mut out = BTreeMap::new();
        for e in self.events() {
            if let Outcome::Acked(c) = e.outcome {
                let m = out.entry(e.service.clone()).or_insert(0);
                *m = (*m).max(c);
            }
        }
        out
    }

    /// Number of acknowledged heartbeats.
    pub fn acked(&self) -> usize {
        self.events()
            .iter()
            .filter(|e| matches!(e.outcome, Outcome::Acked(_)))
            .count()
    }

    /// Checks that, per service, acknowledged counts strictly increase in the order the
    /// acknowledgements arrived (a reporter waits for each answer before the next request),
    /// and that `final_list` holds a count at least as large as every acknowledged one.
    pub fn check(&self, final_list: &ServicesOut) -> anyhow::Result<()> {
        let mut last: BTreeMap<(String, String), u64> = BTreeMap::new();
        for e in self.events() {
            if let Outcome::Acked(c) = e.outcome {
                if let Some(prev) = last.get(&e.service) {
                    anyhow::ensure!(
                        c > *prev,
                        "report_count went backwards for {:?}: acknowledged {c} after {prev}",
                        e.service
                    );
                }
                last.insert(e.service.clone(), c);
            }
        }
        let listed: BTreeMap<(String, String), &ServiceOut> = final_list
            .services
            .iter()
            .map(|s| ((s.host.clone(), s.binary.clone()), s))
            .collect();
        for (svc, acked) in self.max_acked() {
            let Some(rec) = listed.get(&svc) else {
                anyhow::bail!("acknowledged heartbeats lost: {svc:?} is not listed at all");
            };
            anyhow::ensure!(
                rec.report_count >= acked,
                "acknowledged heartbeats lost for {svc:?}: report_count {} < acknowledged {acked}",
                rec.report_count
            );
        }
        Ok(())
    }
}

/// Reporters, one task per service, each waiting for an answer before its next heartbeat.
pub struct Reporters {
    /// Set to stop the reporters.
    stop: Arc<AtomicBool>,
    /// One task per service.
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// What the reporters were told so far.
    pub history: History,
}

impl Reporters {
    /// Starts one reporter per service (`host-0`..), each pausing `pace` between requests.
    pub fn start(client: RegistryClient, services: usize, pace: Duration) -> Self {
        Self::start_spread(vec![client], services, pace)
    }

    /// Like [`Reporters::start`], reporter `i` starting with `clients[i % clients.len()]`
    /// (so reporters are spread over every node) and moving on to the next client after a
    /// request that failed or got no answer, as a reporter that follows the cluster does.
    pub fn start_spread(clients: Vec<RegistryClient>, services: usize, pace: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let history = History::default();
        let tasks = (0..services)
            .map(|i| {
                let clients = clients.clone();
                let mut current = i % clients.len();
                let (stop, history) = (stop.clone(), history.clone());
                tokio::spawn(async move {
                    let host = format!("host-{i}");
                    let binary = "cinder-volume".to_string();
                    while !stop.load(Ordering::Relaxed) {
                        let sent = Instant::now();
                        let client = &clients[current];
                        let res = client.heartbeat(&[HeartbeatIn::new(&host, &binary)]).await;
                        if res.is_err() {
                            current = (current + 1) % clients.len();
                        }
                        let outcome = match res {
                            Ok(out) => Outcome::Acked(out.services[0].report_count),
                            Err(e @ ClientError::Api { .. }) => Outcome::Failed(e.to_string()),
                            Err(e) => Outcome::Unknown(e.to_string()),
                        };
                        history.record(Event {
                            service: (host.clone(), binary.clone()),
                            sent,
                            done: Instant::now(),
                            outcome,
                        });
                        tokio::time::sleep(pace).await;
                    }
                })
            })
            .collect();
        Self {
            stop,
            tasks,
            history,
        }
    }

    /// Waits until at least `n` heartbeats were acknowledged in all.
    pub async fn wait_acked(&self, n: usize, timeout: Duration) -> anyhow::Result<()> {
        let what = format!("{n} acknowledged heartbeats");
        wait::until(&what, timeout, || async {
            (self.history.acked() >= n).then_some(())
        })
        .await
    }

    /// Stops every reporter and returns the history.
    pub async fn stop(self) -> History {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        self.history
    }
}
