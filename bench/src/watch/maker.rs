//! The event maker: requests of `batch` heartbeats of services never seen before, each
//! service's first heartbeat being one `created` event. Its requests are numbered across
//! runs (request `k` holds services `k × batch .. (k + 1) × batch`), so that a watcher can
//! tell, from a service's host, which request made an event.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::stats::{Failure, Stats};
use crate::target::registry::{check_answer, transport_failure};
use crate::workload::heartbeat;

/// One acknowledged event-making request.
#[derive(Debug, Clone, Copy)]
pub struct Ack {
    /// Its number.
    pub batch: usize,
    /// When it was sent.
    pub sent: Instant,
    /// When its answer was read.
    pub acked: Instant,
}

/// What one run of the maker did.
#[derive(Debug, Default)]
pub struct MakerRun {
    /// Its acknowledged requests, in no order.
    pub acks: Vec<Ack>,
    /// Its failed requests.
    pub failures: Stats,
}

/// Makes `created` events through one node (the leader).
pub struct Maker {
    http: reqwest::Client,
    url: String,
    prefix: String,
    batch: usize,
    next: AtomicUsize,
}

impl Maker {
    /// A maker of services named with `prefix`, `batch` per request, sent to `base`.
    pub fn new(http: reqwest::Client, base: &str, prefix: String, batch: usize) -> Self {
        Self {
            http,
            url: format!("{base}/v1/heartbeats"),
            prefix,
            batch: batch.clamp(1, registry_api::wire::MAX_BATCH),
            next: AtomicUsize::new(0),
        }
    }

    /// Services per request.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// The prefix of its services' hosts, as a watcher reads them (`{prefix}-h`).
    pub fn host_prefix(&self) -> String {
        format!("{}-h", self.prefix)
    }

    /// Sends requests from `writers` concurrent tasks until `end` (a request answered after
    /// it is still recorded): as fast as they are answered, or at `rate` events per second
    /// spread over the writers when given.
    pub async fn run(
        self: &Arc<Self>,
        writers: usize,
        rate: Option<f64>,
        end: Instant,
    ) -> MakerRun {
        let start = Instant::now();
        let first = self.next.load(Ordering::Relaxed);
        let out = Arc::new(Mutex::new(MakerRun::default()));
        let tasks: Vec<_> = (0..writers.max(1))
            .map(|_| {
                let me = Arc::clone(self);
                let out = Arc::clone(&out);
                tokio::spawn(async move {
                    loop {
                        let k = me.next.fetch_add(1, Ordering::Relaxed);
                        if let Some(rate) = rate.filter(|r| *r > 0.0) {
                            let due = (k - first) as f64 * me.batch as f64 / rate;
                            let at = (start + Duration::from_secs_f64(due)).min(end);
                            tokio::time::sleep_until(at).await;
                        }
                        let sent = Instant::now();
                        if sent >= end {
                            break;
                        }
                        let res = me.send(k).await;
                        let acked = Instant::now();
                        if let Ok(mut o) = out.lock() {
                            match res {
                                Ok(()) => o.acks.push(Ack {
                                    batch: k,
                                    sent,
                                    acked,
                                }),
                                Err(f) => o.failures.record_err(f),
                            }
                        }
                    }
                })
            })
            .collect();
        let mut joined = MakerRun::default();
        for t in tasks {
            if let Err(e) = t.await {
                joined.failures.record_err(Failure::new("writer task", e));
            }
        }
        if let Ok(mut o) = out.lock() {
            joined.acks.append(&mut o.acks);
            joined.failures.merge(&o.failures);
        }
        joined
    }

    /// Sends request `k`: the first heartbeat of each of its services.
    async fn send(&self, k: usize) -> Result<(), Failure> {
        let beats: Vec<_> = (k * self.batch..(k + 1) * self.batch)
            .map(|i| heartbeat(&self.prefix, i))
            .collect();
        let body = serde_json::to_vec(&beats).map_err(|e| Failure::new("encode", e))?;
        let resp = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .body(Bytes::from(body))
            .send()
            .await
            .map_err(|e| transport_failure(&e))?;
        check_answer(resp).await.map(|_| ())
    }
}
