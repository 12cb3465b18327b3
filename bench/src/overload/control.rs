//! The control group: K services that heartbeat like the load (one request each, every
//! interval, their first heartbeats spread over the first interval) until a stop time, and
//! then fall silent. The observer lists them too; a service that really stopped must still
//! be listed `down`, and the delay from its last acknowledged heartbeat is what is reported.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::opts::ClusterArgs;
use crate::stats::{Failure, Stats};
use crate::target::registry::RegistryTarget;
use crate::target::Target;
use crate::workload::Groups;

/// The control group's senders and what they were told.
pub struct Control {
    target: RegistryTarget,
    timeout: Duration,
    services: usize,
    host_prefix: String,
    /// When each service's last acknowledged heartbeat was answered.
    last_ack: Mutex<Vec<Option<Instant>>>,
    /// Acknowledged and failed requests.
    stats: Mutex<Stats>,
}

impl Control {
    /// `services` services named with `prefix`, sent to the registry of `c`.
    pub fn new(c: &ClusterArgs, prefix: &str, services: usize) -> anyhow::Result<Self> {
        let services = services.max(1);
        Ok(Self {
            target: RegistryTarget::new(
                &c.registry,
                prefix,
                Groups::new(services, 1),
                c.timeout,
                c.registry_token.as_deref(),
                c.registry_cacert.as_deref(),
            )?,
            timeout: c.timeout,
            services,
            host_prefix: format!("{prefix}-h"),
            last_ack: Mutex::new(vec![None; services]),
            stats: Mutex::new(Stats::new()),
        })
    }

    /// Its services.
    pub fn services(&self) -> usize {
        self.services
    }

    /// The prefix of its services' hosts, as listed (`{prefix}-h`).
    pub fn host_prefix(&self) -> &str {
        &self.host_prefix
    }

    /// When service `j`'s last acknowledged heartbeat was answered, so far.
    pub fn last_ack(&self, j: usize) -> Option<Instant> {
        self.last_ack
            .lock()
            .ok()
            .and_then(|l| l.get(j).copied().flatten())
    }

    /// Every service's last acknowledged heartbeat.
    pub fn last_acks(&self) -> Vec<Option<Instant>> {
        self.last_ack
            .lock()
            .map(|l| l.clone())
            .unwrap_or_else(|_| vec![None; self.services])
    }

    /// Its requests: acknowledged, and failed by kind.
    pub fn stats(&self) -> Stats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Sends service `j`'s heartbeat at `start + j × interval / K` and then every
    /// `interval`, through endpoint `j` (modulo the endpoints), each send bounded by
    /// `timeout`; sends nothing scheduled at or after `stop`, and returns once every sent
    /// request was answered or timed out.
    pub async fn run(self: Arc<Self>, start: Instant, interval: Duration, stop: Instant) {
        let k = self.services as u64;
        let step_ns = (interval.as_nanos() / u128::from(k)).max(1) as u64;
        let endpoints = self.target.endpoints().max(1);
        let timeout = self.timeout;
        let mut sends = JoinSet::new();
        for n in 0u64.. {
            let scheduled = start + Duration::from_nanos(step_ns.saturating_mul(n));
            if scheduled >= stop {
                break;
            }
            tokio::time::sleep_until(scheduled).await;
            let j = (n % k) as usize;
            let me = Arc::clone(&self);
            sends.spawn(async move {
                let t0 = Instant::now();
                let res = match tokio::time::timeout(timeout, me.target.send(j, j % endpoints, j))
                    .await
                {
                    Ok(res) => res,
                    Err(_) => Err(Failure::new(
                        "timeout",
                        format!("no answer within {timeout:?}"),
                    )),
                };
                let at = Instant::now();
                if let (true, Ok(mut last)) = (res.is_ok(), me.last_ack.lock()) {
                    if let Some(slot) = last.get_mut(j) {
                        *slot = Some(slot.map_or(at, |s| s.max(at)));
                    }
                }
                if let Ok(mut stats) = me.stats.lock() {
                    match res {
                        Ok(()) => stats.record_ok(at - t0, 1),
                        Err(f) => stats.record_err(f),
                    }
                }
            });
        }
        while sends.join_next().await.is_some() {}
    }
}
