//! The reporter, embedded as a library and run as `registryctl report`, against a
//! three-node in-process cluster.

use std::fs::File;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use registry_api::wire::{Consistency, ServiceOut};
use registry_client::reporter::{HealthCommand, Reporter, ReporterConfig, ReporterHandle};
use registry_client::wire::State;
use registry_tests::cli::registryctl_binary;
use registry_tests::inproc::{ClusterSpec, InProcCluster};
use registry_tests::{init_test_tracing, wait};

/// The tests' report interval: short, so that a test sees many ticks.
const INTERVAL: Duration = Duration::from_millis(200);
/// Bound on any wait.
const DEADLINE: Duration = Duration::from_secs(15);

fn endpoints(c: &InProcCluster) -> Vec<String> {
    c.configs.iter().map(|n| n.listen.to_string()).collect()
}

fn config(c: &InProcCluster, host: &str) -> ReporterConfig {
    ReporterConfig {
        interval: INTERVAL,
        topic: Some("cinder-volume".into()),
        availability_zone: Some("az1".into()),
        cluster: Some("cl1".into()),
        ..ReporterConfig::new(endpoints(c), host, "cinder-volume")
    }
}

/// The service `host`/cinder-volume as node `i` lists it (linearizable read).
async fn service(c: &InProcCluster, i: usize, host: &str) -> Option<ServiceOut> {
    c.client_of(i)
        .services(Some(host), Some("cinder-volume"), Consistency::Linearizable)
        .await
        .ok()?
        .services
        .into_iter()
        .next()
}

/// Starts every stopped node again on its port. A freed loopback port can be held for a
/// moment by a TCP self-connect of a client retrying it, so a refused bind is retried.
async fn restart_all(c: &mut InProcCluster) -> anyhow::Result<()> {
    for i in 0..c.nodes.len() {
        let deadline = Instant::now() + DEADLINE;
        loop {
            match c.start_node(i).await {
                Ok(()) => break,
                Err(e) if Instant::now() < deadline && is_addr_in_use(&e) => {
                    tracing::warn!(node = i + 1, "port still in use; retrying the restart");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

fn is_addr_in_use(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::AddrInUse)
    })
}

async fn stop_promptly(handle: ReporterHandle) -> anyhow::Result<()> {
    let stats = tokio::time::timeout(Duration::from_secs(2), handle.stop())
        .await
        .map_err(|_| anyhow::anyhow!("the reporter did not stop within 2 s"))??;
    assert!(stats.stopped, "the final counters say the loop stopped");
    Ok(())
}

/// The first heartbeat goes out one interval after the start, not before; then one per
/// tick, never faster; each is acknowledged and counted once by the registry, which lists
/// the service up with the reported zone and cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn first_heartbeat_after_one_interval_then_one_per_tick() -> anyhow::Result<()> {
    init_test_tracing();
    let mut c = InProcCluster::start(ClusterSpec::default()).await?;
    c.wait_for_leader(Duration::from_secs(10)).await?;

    let t0 = Instant::now();
    let handle = Reporter::new(config(&c, "host-tick"))?.spawn(std::future::pending());
    handle
        .wait_for("the first heartbeat is sent", DEADLINE, |s| s.sent >= 1)
        .await?;
    let first = t0.elapsed();
    assert!(
        first >= INTERVAL,
        "the first heartbeat waits one interval (initial delay = interval): sent after {first:?}"
    );

    let stats = handle
        .wait_for("five acknowledged heartbeats", DEADLINE, |s| {
            s.acknowledged >= 5
        })
        .await?;
    let elapsed = t0.elapsed();
    let most = (elapsed.as_millis() / INTERVAL.as_millis()) as u64;
    assert!(
        stats.sent <= most,
        "at most one heartbeat per tick: {} sent in {elapsed:?}",
        stats.sent
    );
    // A heartbeat may fail under load (an election, a timeout): the reporter's promise is
    // that the registry counts each acknowledged heartbeat once, and none that was not sent.
    let counted = stats.last_report_count.unwrap_or(0);
    assert!(
        stats.acknowledged <= counted && counted <= stats.sent,
        "the registry counted every acknowledged heartbeat and no more than were sent: \
         {stats:?}"
    );
    assert_eq!(stats.connected, Some(true), "{stats:?}");

    let s = service(&c, 2, "host-tick")
        .await
        .expect("the service is listed");
    assert_eq!(s.state, State::Up, "a reporting service is up");
    assert_eq!(s.availability_zone, "az1", "the reported zone is recorded");
    assert_eq!(
        s.cluster_name.as_deref(),
        Some("cl1"),
        "the reported cluster is recorded"
    );
    assert!(s.report_count >= 5);

    stop_promptly(handle).await?;
    c.shutdown().await
}

/// While the health check fails, no heartbeat is sent (each tick is counted as skipped) and
/// the service goes down once `service_down_time` has passed; when the check passes again,
/// heartbeats resume and the service is up again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failing_health_check_skips_heartbeats_and_the_service_goes_down() -> anyhow::Result<()> {
    init_test_tracing();
    let spec = ClusterSpec {
        service_down_time: Duration::from_millis(1500),
        ..ClusterSpec::default()
    };
    let mut c = InProcCluster::start(spec).await?;
    c.wait_for_leader(Duration::from_secs(10)).await?;

    let healthy = Arc::new(AtomicBool::new(true));
    let flag = healthy.clone();
    let handle = Reporter::new(config(&c, "host-health"))?.with_health_check(move || {
        if flag.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err("backend pool offline".to_string())
        }
    });
    let handle = handle.spawn(std::future::pending());
    handle
        .wait_for("two acknowledged heartbeats", DEADLINE, |s| {
            s.acknowledged >= 2
        })
        .await?;
    let s = service(&c, 0, "host-health").await.expect("listed");
    assert_eq!(s.state, State::Up);

    healthy.store(false, Ordering::SeqCst);
    let at_first_skip = handle
        .wait_for("a skipped tick", DEADLINE, |s| s.skipped >= 1)
        .await?;
    wait::until("the unhealthy service is listed down", DEADLINE, || async {
        (service(&c, 1, "host-health").await?.state == State::Down).then_some(())
    })
    .await?;
    let while_down = handle.stats();
    assert!(
        while_down.skipped >= 3,
        "every tick while unhealthy is skipped: {while_down:?}"
    );
    assert_eq!(
        while_down.sent, at_first_skip.sent,
        "no heartbeat is sent while the health check fails"
    );
    assert_eq!(
        while_down.last_error.as_deref(),
        Some("backend pool offline"),
        "the reason is kept"
    );

    healthy.store(true, Ordering::SeqCst);
    let after = handle
        .wait_for("heartbeats resume", DEADLINE, |s| {
            s.acknowledged >= while_down.acknowledged + 2
        })
        .await?;
    assert!(after.skipped >= while_down.skipped);
    wait::until("the recovered service is listed up", DEADLINE, || async {
        (service(&c, 2, "host-health").await?.state == State::Up).then_some(())
    })
    .await?;

    stop_promptly(handle).await?;
    c.shutdown().await
}

/// Stopping the node the reporter talks to (its first endpoint; the leader when it is
/// one) does not stop the reporter: it goes on through another endpoint, and the registry
/// keeps counting every acknowledged heartbeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stopping_the_node_it_talks_to_does_not_stop_it() -> anyhow::Result<()> {
    init_test_tracing();
    let mut c = InProcCluster::start(ClusterSpec::default()).await?;
    let leader = c.wait_for_leader(Duration::from_secs(10)).await?;
    // Put the leader first, so that losing the first endpoint also means an election.
    let mut cfg = config(&c, "host-failover");
    cfg.endpoints.rotate_left(leader);
    let handle = Reporter::new(cfg)?.spawn(std::future::pending());
    let before = handle
        .wait_for("three acknowledged heartbeats", DEADLINE, |s| {
            s.acknowledged >= 3
        })
        .await?;

    c.stop_node(leader).await?;
    let after = handle
        .wait_for(
            "five more acknowledged heartbeats after the first endpoint stopped",
            DEADLINE,
            |s| s.acknowledged >= before.acknowledged + 5,
        )
        .await?;
    assert!(!handle.is_finished(), "the reporter is still running");
    let other = (leader + 1) % 3;
    let s = wait::until("the survivors list the service", DEADLINE, || {
        service(&c, other, "host-failover")
    })
    .await?;
    assert!(
        s.report_count >= after.acknowledged,
        "every acknowledged heartbeat is counted: {} < {}",
        s.report_count,
        after.acknowledged
    );
    assert_eq!(
        s.state,
        State::Up,
        "the service stays up through the failover"
    );

    stop_promptly(handle).await?;
    c.shutdown().await
}

/// With the whole registry down the loop goes on: every tick fails, and the loss counts as
/// one outage (logged once); when the registry is back the reporter reconnects, counted as
/// one recovery, and the service's count goes on from where it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_registry_outage_is_one_outage_and_is_survived() -> anyhow::Result<()> {
    init_test_tracing();
    let mut c = InProcCluster::start(ClusterSpec::default()).await?;
    c.wait_for_leader(Duration::from_secs(10)).await?;
    let handle = Reporter::new(config(&c, "host-outage"))?.spawn(std::future::pending());
    let before = handle
        .wait_for("two acknowledged heartbeats", DEADLINE, |s| {
            s.acknowledged >= 2
        })
        .await?;

    c.shutdown().await?;
    let down = handle
        .wait_for("three failed heartbeats", DEADLINE, |s| {
            s.failed >= before.failed + 3
        })
        .await?;
    assert_eq!(
        down.outages,
        before.outages + 1,
        "however many heartbeats fail, the registry is lost once: {down:?}"
    );
    assert_eq!(down.connected, Some(false));
    assert!(
        u64::from(down.missed) >= down.failed - before.failed,
        "every failed heartbeat is missed: {down:?}"
    );
    assert!(!handle.is_finished(), "the loop survives registry errors");

    restart_all(&mut c).await?;
    let back = handle
        .wait_for("the reporter reconnected", Duration::from_secs(30), |s| {
            s.connected == Some(true) && s.acknowledged > before.acknowledged
        })
        .await?;
    // (A hiccup after the restart, such as an election, would be an outage of its own:
    // what matters is that each outage is counted, and logged, once and recovered once.)
    assert!(
        back.outages >= 1 && back.recoveries == back.outages,
        "one recovery per outage, not one per heartbeat: {back:?}"
    );
    assert!(
        back.last_report_count > before.last_report_count,
        "the count goes on from before the outage: {back:?} vs {before:?}"
    );
    // The heartbeat that landed told the registry how many had not (at most 8 counted).
    let mut told = 0.0;
    for i in 0..3 {
        told += crate::t60_observability::scrape(&c, i)
            .await?
            .value("registry_heartbeats_missed_reported_total");
    }
    assert!(
        told >= 3.0,
        "the missed heartbeats were told with the first one that landed: {told}"
    );

    stop_promptly(handle).await?;
    c.shutdown().await
}

/// Shutdown is prompt: through the shutdown future while waiting out a long interval, and
/// through `stop` while a health check hangs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_resolves_promptly() -> anyhow::Result<()> {
    init_test_tracing();
    let cfg = ReporterConfig {
        interval: Duration::from_secs(3600),
        ..ReporterConfig::new(["127.0.0.1:9"], "host-stop", "cinder-volume")
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = Reporter::new(cfg)?.spawn(async {
        let _ = rx.await;
    });
    let _ = tx.send(());
    let stats = tokio::time::timeout(Duration::from_secs(2), handle.join())
        .await
        .map_err(|_| anyhow::anyhow!("the shutdown future did not stop the reporter in 2 s"))??;
    assert_eq!(
        stats.sent, 0,
        "stopped before the first interval, nothing was sent"
    );

    let cfg = ReporterConfig {
        interval: Duration::from_millis(50),
        ..ReporterConfig::new(["127.0.0.1:9"], "host-stop", "cinder-volume")
    };
    let handle = Reporter::new(cfg)?
        .with_health_check(HealthCommand::new("sleep 30", Duration::from_secs(60)))
        .spawn(std::future::pending());
    // Let the first tick start its (hanging) health check.
    wait::until("the first tick started", DEADLINE, || async {
        (handle
            .stats()
            .started_at
            .is_some_and(|t| t.elapsed() > Duration::from_millis(100)))
        .then_some(())
    })
    .await?;
    stop_promptly(handle).await
}

/// Kills the child on drop, so a failing test leaves no process behind.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `registryctl report` as a process: its heartbeats land; a whole-registry outage is logged
/// once at error ("lost connection to the registry") however many heartbeats fail, and the
/// recovery once ("registry connection recovered"); SIGTERM ends it promptly with exit code 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn registryctl_report_survives_an_outage_and_exits_0_on_sigterm() -> anyhow::Result<()> {
    init_test_tracing();
    // Built (if it must be) before the cluster starts, so a build cannot stall the test.
    let bin = tokio::task::spawn_blocking(registryctl_binary).await??;
    let mut c = InProcCluster::start(ClusterSpec::default()).await?;
    c.wait_for_leader(Duration::from_secs(10)).await?;
    let log_path = c.dir.path().join("report.log");
    let log = File::create(&log_path)?;
    let child = Command::new(bin)
        .arg("--endpoints")
        .arg(endpoints(&c).join(","))
        .args([
            "report",
            "--host",
            "host-proc",
            "--binary",
            "cinder-volume",
            "--interval",
            "200ms",
            "--health-cmd",
            "test -d /",
        ])
        .env_remove("REGISTRY_ENDPOINTS")
        .env("RUST_LOG", "info,registry_client::reporter=debug")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?;
    let mut child = ChildGuard(child);
    let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    let count = wait::until("the process's heartbeats land", DEADLINE, || async {
        let s = service(&c, 0, "host-proc").await?;
        (s.report_count >= 2).then_some(s.report_count)
    })
    .await?;

    c.shutdown().await?;
    // The first failure is logged at error, each later one at debug.
    wait::until(
        "three heartbeats failed during the outage",
        DEADLINE,
        || async {
            let text = read_log();
            let failures = text.matches("lost connection to the registry").count()
                + text.matches("heartbeat failed").count();
            (failures >= 3).then_some(())
        },
    )
    .await?;
    restart_all(&mut c).await?;
    wait::until(
        "heartbeats land again after the outage",
        Duration::from_secs(30),
        || async {
            let s = service(&c, 1, "host-proc").await?;
            (s.report_count > count).then_some(())
        },
    )
    .await?;
    wait::until("the recovery is logged", DEADLINE, || async {
        read_log()
            .contains("registry connection recovered")
            .then_some(())
    })
    .await?;

    let term = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()?;
    assert!(term.success(), "kill -TERM was delivered");
    let sent = Instant::now();
    let status = wait::until(
        "registryctl report exits after SIGTERM",
        Duration::from_secs(5),
        || {
            let exited = child.0.try_wait().ok().flatten();
            async move { exited }
        },
    )
    .await?;
    assert!(
        sent.elapsed() < Duration::from_secs(2),
        "SIGTERM ends the reporter promptly: {:?}",
        sent.elapsed()
    );
    let text = read_log();
    assert_eq!(status.code(), Some(0), "SIGTERM is a clean exit:\n{text}");
    let lost = text.matches("lost connection to the registry").count();
    let recovered = text.matches("registry connection recovered").count();
    let quiet_failures = text.matches("heartbeat failed").count();
    assert!(
        lost >= 1 && quiet_failures >= 2,
        "the outage is logged at error once, later failures at debug:\n{text}"
    );
    assert_eq!(
        lost, recovered,
        "each loss is logged once and each recovery once, not per failed heartbeat:\n{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("ERROR") && l.contains("lost connection to the registry")),
        "the loss is logged at error:\n{text}"
    );
    assert!(
        text.contains("reporter stopped"),
        "the reporter says it stopped:\n{text}"
    );
    c.shutdown().await
}
