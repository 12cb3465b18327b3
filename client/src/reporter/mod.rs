//! The reporter: the loop every service runs to tell the registry it is alive (Cinder's
//! `Service.report_state`), as a library so that a Rust service can embed it and
//! `registryctl report` can run it for any other program.
//!
//! Behaviour kept from Cinder, and made robust where Cinder was not:
//! - the first heartbeat goes out one interval after the start (initial delay = interval),
//!   then one per tick; a tick that comes while a heartbeat is still in flight is delayed,
//!   never doubled;
//! - before each heartbeat an optional [`HealthCheck`] runs; when it fails, that heartbeat is
//!   skipped (logged at warn with the reason), so the registry lists the service `down` once
//!   `service_down_time` has passed;
//! - each heartbeat says how many since the last acknowledged one did not land
//!   ([`MISSED_HEADER`](crate::wire::MISSED_HEADER): failed, or never sent because a
//!   heartbeat was still in flight at their tick), so that a registry shedding load knows
//!   how many heartbeats it lost, not only how many it read and refused;
//! - every endpoint is tried (by [`RegistryClient`]); any node forwards the write to the
//!   leader; after an answer that another node may not give (a timeout, a 5xx) the next tick
//!   starts with the next endpoint, so a node that is up but cut off is not asked forever;
//! - the loop never ends on an error: losing the registry is logged once at error
//!   (`lost connection to the registry`), each later failure only at debug, and the
//!   recovery once at warn (`registry connection recovered`);
//! - it stops, promptly, when its shutdown future resolves or [`ReporterHandle::stop`] is
//!   called, even in the middle of a heartbeat.
//!
//! Counters ([`ReporterStats`]) are published through a `watch` channel, so an embedding
//! program (or a test) can wait on them instead of sleeping.

mod health;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::client::RegistryClient;
use crate::error::ClientError;
use crate::tls::ClientTls;
use crate::wire::HeartbeatIn;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

pub use health::{HealthCheck, HealthCommand, HealthFuture};

/// Cinder's default `report_interval`.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

/// What the reporter reports, and where to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReporterConfig {
    /// Registry nodes (`host:port` or `http://host:port`), tried in order.
    pub endpoints: Vec<String>,
    /// Host the service runs on (`host@backend` for Cinder volume backends).
    pub host: String,
    /// The service's binary, e.g. `cinder-volume`.
    pub binary: String,
    /// RPC topic; the registry keeps its own default when absent.
    pub topic: Option<String>,
    /// Availability zone; the registry keeps its own default when absent.
    pub availability_zone: Option<String>,
    /// Cluster name (Cinder's `cluster`), if the service is part of one.
    pub cluster: Option<String>,
    /// Time between heartbeats, and before the first one (Cinder's `report_interval`).
    pub interval: Duration,
    /// Bound on one heartbeat request; `None` means the interval, clamped to 1–10 s, so a
    /// hung node cannot hold the loop for long.
    pub request_timeout: Option<Duration>,
    /// Token with the `reporter` role, when the registry requires tokens.
    pub token: Option<String>,
    /// The CA to trust and the certificate to present, for HTTPS endpoints.
    pub tls: Option<ClientTls>,
}

impl ReporterConfig {
    /// A configuration with Cinder's default interval and no optional field set.
    pub fn new(
        endpoints: impl IntoIterator<Item = impl Into<String>>,
        host: impl Into<String>,
        binary: impl Into<String>,
    ) -> Self {
        Self {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            host: host.into(),
            binary: binary.into(),
            topic: None,
            availability_zone: None,
            cluster: None,
            interval: DEFAULT_INTERVAL,
            request_timeout: None,
            token: None,
            tls: None,
        }
    }

    /// The bound on one heartbeat request.
    pub fn effective_request_timeout(&self) -> Duration {
        self.request_timeout.unwrap_or_else(|| {
            self.interval
                .clamp(Duration::from_secs(1), Duration::from_secs(10))
        })
    }

    /// The heartbeat this configuration sends.
    pub fn heartbeat(&self) -> HeartbeatIn {
        HeartbeatIn {
            topic: self.topic.clone(),
            availability_zone: self.availability_zone.clone(),
            cluster_name: self.cluster.clone(),
            ..HeartbeatIn::new(self.host.clone(), self.binary.clone())
        }
    }

    /// Checks what the registry would refuse, so that a bad field fails at start-up rather
    /// than at every tick.
    pub fn validate(&self) -> Result<(), ClientError> {
        let invalid = |m: String| Err(ClientError::Invalid(m));
        if self.endpoints.iter().all(|e| e.trim().is_empty()) {
            return invalid("at least one registry endpoint is needed".into());
        }
        if self.interval.is_zero() {
            return invalid("the interval must be more than zero".into());
        }
        if self.request_timeout.is_some_and(|t| t.is_zero()) {
            return invalid("the request timeout must be more than zero".into());
        }
        self.heartbeat().check()
    }
}

/// The reporter's counters, published after every change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReporterStats {
    /// Heartbeat requests sent: `acknowledged + failed`, plus one while a request is in
    /// flight (or was cut short by the shutdown).
    pub sent: u64,
    /// Heartbeats the registry committed.
    pub acknowledged: u64,
    /// Heartbeats that failed (unreachable registry, no quorum, timeout, refusal).
    pub failed: u64,
    /// Ticks on which the health check failed, so no heartbeat was sent.
    pub skipped: u64,
    /// Heartbeats missed since the last acknowledged one: failed, or due while one was in
    /// flight (the registry is told with the next heartbeat; zero again once one lands).
    pub missed: u32,
    /// Whether the latest heartbeat reached the registry; `None` before the first.
    pub connected: Option<bool>,
    /// How many times the registry was lost (each logged once, at error).
    pub outages: u64,
    /// How many times it came back after being lost (each logged once).
    pub recoveries: u64,
    /// The `report_count` the registry answered to the latest acknowledged heartbeat.
    pub last_report_count: Option<u64>,
    /// The latest heartbeat or health-check error.
    pub last_error: Option<String>,
    /// When the reporter started.
    pub started_at: Option<Instant>,
    /// When its first heartbeat was sent.
    pub first_sent_at: Option<Instant>,
    /// Whether the loop has ended.
    pub stopped: bool,
}

/// A reporter, ready to be spawned.
pub struct Reporter {
    /// What to report and where.
    config: ReporterConfig,
    /// Run before every heartbeat, if set.
    health: Option<Arc<dyn HealthCheck>>,
    /// One client per endpoint, each trying that endpoint first and then the others.
    clients: Vec<RegistryClient>,
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reporter")
            .field("config", &self.config)
            .field("health", &self.health.as_ref().map(|_| "set"))
            .finish()
    }
}

impl Reporter {
    /// A reporter for `config`, validated.
    pub fn new(config: ReporterConfig) -> Result<Self, ClientError> {
        config.validate()?;
        let endpoints: Vec<String> = config
            .endpoints
            .iter()
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty())
            .collect();
        let timeout = config.effective_request_timeout();
        let clients = (0..endpoints.len())
            .map(|i| {
                let mut rotated = endpoints.clone();
                rotated.rotate_left(i);
                let client = RegistryClient::with_tls(rotated, timeout, config.tls.as_ref())?;
                Ok(match &config.token {
                    Some(t) => client.with_token(t.clone()),
                    None => client,
                })
            })
            .collect::<Result<_, ClientError>>()?;
        Ok(Self {
            config,
            health: None,
            clients,
        })
    }

    /// Runs `check` before every heartbeat; a failure skips that heartbeat.
    pub fn with_health_check(mut self, check: impl HealthCheck) -> Self {
        self.health = Some(Arc::new(check));
        self
    }

    /// Starts the loop on the current Tokio runtime. It runs until `shutdown` resolves or
    /// [`ReporterHandle::stop`] is called; dropping the handle detaches it.
    pub fn spawn(self, shutdown: impl Future<Output = ()> + Send + 'static) -> ReporterHandle {
        let (stats_tx, stats_rx) = watch::channel(ReporterStats {
            started_at: Some(Instant::now()),
            ..ReporterStats::default()
        });
        let (stop_tx, mut stop_rx) = watch::channel(false);
        let stop = async move {
            tokio::select! {
                _ = shutdown => {}
                gone = async { stop_rx.wait_for(|s| *s).await.is_err() } => {
                    if gone {
                        // The handle was dropped: only `shutdown` can stop the loop now.
                        std::future::pending::<()>().await;
                    }
                }
            }
        };
        let task = tokio::spawn(Loop::new(self, stats_tx).run(stop));
        ReporterHandle {
            stats: stats_rx,
            stop: stop_tx,
            task,
        }
    }
}

/// A running reporter: its counters, and the means to stop it.
#[derive(Debug)]
pub struct ReporterHandle {
    /// The counters, as last published.
    stats: watch::Receiver<ReporterStats>,
    /// Asks the loop to stop.
    stop: watch::Sender<bool>,
    /// The loop's task; answers the final counters.
    task: JoinHandle<ReporterStats>,
}

impl ReporterHandle {
    /// The counters now.
    pub fn stats(&self) -> ReporterStats {
        self.stats.borrow().clone()
    }

    /// A receiver of every change of the counters.
    pub fn subscribe(&self) -> watch::Receiver<ReporterStats> {
        self.stats.clone()
    }

    /// Waits until the counters satisfy `cond`, at most `timeout`; `what` names the
    /// condition in the error.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        cond: impl FnMut(&ReporterStats) -> bool,
    ) -> Result<ReporterStats, ClientError> {
        let mut rx = self.stats.clone();
        let waited = tokio::time::timeout(timeout, async {
            rx.wait_for(cond).await.map(|s| s.clone())
        })
        .await;
        match waited {
            Ok(Ok(stats)) => Ok(stats),
            Ok(Err(_)) => Err(ClientError::Ended(what.to_string())),
            Err(_) => Err(ClientError::Timeout {
                timeout,
                what: what.to_string(),
            }),
        }
    }

    /// Whether the loop has ended.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops the loop (an in-flight heartbeat is abandoned) and answers the final counters.
    pub async fn stop(self) -> Result<ReporterStats, ClientError> {
        let _ = self.stop.send(true);
        self.join().await
    }

    /// Waits for the loop to end (its shutdown future resolved) and answers the final
    /// counters.
    pub async fn join(self) -> Result<ReporterStats, ClientError> {
        Ok(self.task.await?)
    }
}

/// Whether the link to the registry is up, as far as the heartbeats tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    /// No heartbeat sent yet.
    Unknown,
    /// The latest heartbeat was acknowledged.
    Up,
    /// The latest heartbeat failed; the loss was logged.
    Lost,
}

/// The state of a running reporter loop.
struct Loop {
    /// What to report.
    config: ReporterConfig,
    /// The heartbeat sent each tick.
    beat: HeartbeatIn,
    /// Run before each heartbeat.
    health: Option<Arc<dyn HealthCheck>>,
    /// One client per starting endpoint (the endpoint list rotated by i).
    clients: Vec<RegistryClient>,
    /// The client used next.
    start: usize,
    /// The link as last seen.
    link: Link,
    /// Failures since the link was lost (for the recovery message).
    failures_in_outage: u64,
    /// Where the counters are published.
    stats: watch::Sender<ReporterStats>,
}

impl Loop {
    fn new(reporter: Reporter, stats: watch::Sender<ReporterStats>) -> Self {
        let config = reporter.config;
        Self {
            beat: config.heartbeat(),
            config,
            health: reporter.health,
            clients: reporter.clients,
            start: 0,
            link: Link::Unknown,
            failures_in_outage: 0,
            stats,
        }
    }

    async fn run(mut self, stop: impl Future<Output = ()>) -> ReporterStats {
        let interval = self.config.interval;
        tracing::info!(
            host = %self.config.host,
            binary = %self.config.binary,
            ?interval,
            endpoints = ?self.config.endpoints,
            "reporter started; first heartbeat after one interval"
        );
        let mut ticks = tokio::time::interval_at(Instant::now() + interval, interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                biased;
                _ = &mut stop => break,
                _ = ticks.tick() => {}
            }
            tokio::select! {
                biased;
                _ = &mut stop => break,
                _ = self.tick() => {}
            }
        }
        self.stats.send_modify(|s| s.stopped = true);
        let stats = self.stats.borrow().clone();
        tracing::info!(
            host = %self.config.host,
            binary = %self.config.binary,
            acknowledged = stats.acknowledged,
            failed = stats.failed,
            skipped = stats.skipped,
            "reporter stopped"
        );
        stats
    }

    /// One tick: the health check, then one heartbeat.
    async fn tick(&mut self) {
        if let Some(check) = &self.health {
            if let Err(why) = check.check().await {
                tracing::warn!(
                    host = %self.config.host,
                    binary = %self.config.binary,
                    reason = %why,
                    "service reports a problem; not sending this heartbeat (it will be listed down)"
                );
                self.stats.send_modify(|s| {
                    s.skipped += 1;
                    s.last_error = Some(why);
                });
                return;
            }
        }
        let now = Instant::now();
        self.stats.send_modify(|s| {
            s.sent += 1;
            s.first_sent_at.get_or_insert(now);
        });
        let client = &self.clients[self.start];
        let missed = self.stats.borrow().missed;
        let answer = client
            .heartbeat_after_missed(std::slice::from_ref(&self.beat), missed)
            .await;
        // Ticks that came while it was in flight were delayed, not sent: missed as well.
        let overdue = due_while_in_flight(now.elapsed(), self.config.interval);
        match answer {
            Ok(out) => self.acknowledged(out.services.first().map(|s| s.report_count), overdue),
            Err(e) => self.failed(e, overdue),
        }
    }

    fn acknowledged(&mut self, report_count: Option<u64>, overdue: u32) {
        let recovered = self.link == Link::Lost;
        if recovered {
            tracing::warn!(
                host = %self.config.host,
                binary = %self.config.binary,
                failed_heartbeats = self.failures_in_outage,
                "registry connection recovered"
            );
        }
        self.link = Link::Up;
        self.failures_in_outage = 0;
        self.stats.send_modify(|s| {
            s.acknowledged += 1;
            s.missed = overdue;
            s.connected = Some(true);
            s.recoveries += u64::from(recovered);
            if report_count.is_some() {
                s.last_report_count = report_count;
            }
        });
    }

    fn failed(&mut self, e: ClientError, overdue: u32) {
        let lost = self.link != Link::Lost;
        if lost {
            let what = match &e {
                ClientError::Api { status, .. } if *status < 500 => {
                    "lost connection to the registry: it refuses the heartbeat"
                }
                _ => "lost connection to the registry",
            };
            tracing::error!(
                host = %self.config.host,
                binary = %self.config.binary,
                error = %e,
                "{what}; retrying every interval (further failures are logged at debug)"
            );
        } else {
            tracing::debug!(
                host = %self.config.host,
                binary = %self.config.binary,
                error = %e,
                "heartbeat failed"
            );
        }
        self.link = Link::Lost;
        self.failures_in_outage += 1;
        // An endpoint that answered with a timeout or a 5xx may be cut off from the leader:
        // start with the next one next time. (An unreachable registry was tried whole.)
        let move_on = match &e {
            ClientError::Unknown(_) => true,
            ClientError::Api { status, .. } => *status >= 500,
            _ => false,
        };
        if move_on {
            self.start = (self.start + 1) % self.clients.len();
        }
        // A heartbeat the registry refused as invalid (4xx) is the reporter's own doing.
        let lost_to_registry = !matches!(&e, ClientError::Api { status, .. } if *status < 500);
        self.stats.send_modify(|s| {
            s.failed += 1;
            s.missed = s
                .missed
                .saturating_add(u32::from(lost_to_registry))
                .saturating_add(overdue);
            s.connected = Some(false);
            s.outages += u64::from(lost);
            s.last_error = Some(e.to_string());
        });
    }
}

/// The ticks of `interval` that fell due while a heartbeat took `took`: with
/// [`MissedTickBehavior::Delay`] each is delayed to the end of the heartbeat, and all but
/// the next are lost.
fn due_while_in_flight(took: Duration, interval: Duration) -> u32 {
    let whole = took.as_nanos() / interval.as_nanos().max(1);
    u32::try_from(whole).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_due_while_a_heartbeat_was_in_flight_are_missed() {
        let i = Duration::from_secs(10);
        assert_eq!(due_while_in_flight(Duration::from_millis(30), i), 0);
        assert_eq!(due_while_in_flight(Duration::from_millis(9_999), i), 0);
        assert_eq!(due_while_in_flight(Duration::from_secs(10), i), 1);
        assert_eq!(due_while_in_flight(Duration::from_secs(35), i), 3);
    }

    #[test]
    fn config_is_validated_before_start() {
        let ok = ReporterConfig::new(["127.0.0.1:1"], "h", "b");
        assert!(ok.validate().is_ok());
        let none = ReporterConfig::new(Vec::<String>::new(), "h", "b");
        assert!(none.validate().is_err(), "no endpoint is refused");
        let zero = ReporterConfig {
            interval: Duration::ZERO,
            ..ok.clone()
        };
        assert!(zero.validate().is_err(), "a zero interval is refused");
        let long = ReporterConfig::new(["e"], "h".repeat(256), "b");
        assert!(
            long.validate().is_err(),
            "fields the registry refuses fail early"
        );
    }

    #[test]
    fn request_timeout_defaults_to_the_interval_clamped() {
        let mut c = ReporterConfig::new(["e"], "h", "b");
        assert_eq!(c.effective_request_timeout(), Duration::from_secs(10));
        c.interval = Duration::from_millis(200);
        assert_eq!(c.effective_request_timeout(), Duration::from_secs(1));
        c.interval = Duration::from_secs(60);
        assert_eq!(c.effective_request_timeout(), Duration::from_secs(10));
        c.request_timeout = Some(Duration::from_secs(3));
        assert_eq!(c.effective_request_timeout(), Duration::from_secs(3));
    }

    #[tokio::test]
    async fn health_command_reports_exit_status_and_output() {
        let ok = HealthCommand::new("true", Duration::from_secs(5));
        assert_eq!(ok.check().await, Ok(()));
        let bad = HealthCommand::new("echo disk full >&2; exit 3", Duration::from_secs(5));
        let err = bad.check().await.expect_err("exit 3 is unhealthy");
        assert!(
            err.contains("disk full"),
            "the reason is the command's output: {err}"
        );
        let slow = HealthCommand::new("sleep 5", Duration::from_millis(100));
        let err = slow.check().await.expect_err("a hung check is unhealthy");
        assert!(err.contains("did not finish"), "{err}");
    }

    /// With no registry at all, the loop keeps going: every tick fails, the loss is
    /// counted once, and stop is prompt.
    #[tokio::test]
    async fn unreachable_registry_is_one_outage_and_the_loop_survives() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let config = ReporterConfig {
            interval: Duration::from_millis(20),
            ..ReporterConfig::new([format!("127.0.0.1:{port}")], "h", "b")
        };
        let handle = Reporter::new(config)
            .expect("valid")
            .spawn(std::future::pending());
        let stats = handle
            .wait_for("three failed heartbeats", Duration::from_secs(10), |s| {
                s.failed >= 3
            })
            .await
            .expect("the loop keeps ticking");
        assert_eq!(stats.outages, 1, "one outage however many failures");
        assert!(
            stats.missed as u64 >= stats.failed,
            "every failed heartbeat is missed: {stats:?}"
        );
        assert_eq!(stats.connected, Some(false));
        let end = tokio::time::timeout(Duration::from_secs(2), handle.stop())
            .await
            .expect("stop is prompt")
            .expect("the loop ends cleanly");
        assert!(end.stopped);
    }
}
