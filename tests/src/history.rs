//! What reporters were told, and the checks run on it afterwards.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use registry_api::wire::{ServiceOut, ServicesOut};

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
