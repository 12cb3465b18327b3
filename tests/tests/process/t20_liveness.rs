//! Liveness across registry outages, leader kills and skewed clocks. In every scenario the
//! observer watches the services that keep heartbeating: none may be listed `down`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use registry_api::wire::{Consistency, HeartbeatIn, ServicesOut};
use registry_client::wire::State;
use registry_storage::clock::OUTAGE_GRACE;
use registry_tests::history::Reporters;
use registry_tests::observer::Observer;
use registry_tests::procs::{converged_lists, with_logs, ProcCluster, ProcSpec};
use registry_tests::scenario::finish;
use registry_tests::{init_test_tracing, wait};

const DOWN_TIME: Duration = Duration::from_secs(3);

fn spec() -> ProcSpec {
    ProcSpec {
        service_down_time: DOWN_TIME,
        report_interval: Duration::from_secs(1),
        ..ProcSpec::default()
    }
}

fn state_of(list: &ServicesOut, host: &str) -> Option<State> {
    list.services
        .iter()
        .find(|s| s.host == host)
        .map(|s| s.state)
}

/// Stopping every registry node for longer than `service_down_time` and starting them again
/// leaves the services that were running `up` (the outage does not count against them), and
/// services that then stay silent (`host-*`) still go `down` within `service_down_time` of
/// registry time, while services that kept heartbeating through the outage (`live-*`) are
/// never listed `down`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn registry_outage_does_not_count_against_services() -> anyhow::Result<()> {
    init_test_tracing();
    let mut c = ProcCluster::start(spec())?;
    with_logs(&mut c, async |c| {
        c.wait_for_leader(Duration::from_secs(30)).await?;
        let silent = Reporters::start(c.client_all(), 5, Duration::from_millis(100));
        let live =
            Reporters::start_named(vec![c.client_all()], "live-", 2, Duration::from_millis(100));
        let observer = Observer::start(c.addrs(), "live-", Duration::from_millis(200)).await?;
        silent.wait_acked(50, Duration::from_secs(30)).await?;
        live.wait_acked(20, Duration::from_secs(30)).await?;
        let silent = silent.stop().await;
        c.kill_all()?;
        // The outage itself, twice as long as service_down_time: nothing is awaited here.
        tokio::time::sleep(DOWN_TIME * 2).await;
        c.start_all()?;
        let restarted = Instant::now();
        let lists = converged_lists(c).await?;
        for list in &lists {
            for s in &list.services {
                assert_eq!(
                    s.state,
                    State::Up,
                    "{} must still be up after a registry outage: the outage does not count",
                    s.host
                );
            }
        }
        let is_silent = |s: &&registry_api::wire::ServiceOut| s.host.starts_with("host-");
        let lin = c
            .client_all()
            .services(None, None, Consistency::Linearizable)
            .await?;
        assert_eq!(
            lin.services.iter().filter(is_silent).count(),
            5,
            "every silent service is listed after the restart"
        );
        assert!(
            lin.services.iter().all(|s| s.state == State::Up),
            "linearizable read: all up"
        );

        wait::until(
            "silent services go down after the restart",
            DOWN_TIME * 3,
            || async {
                let l = c
                    .client_all()
                    .services(None, None, Consistency::Linearizable)
                    .await
                    .ok()?;
                let silent: Vec<_> = l.services.iter().filter(is_silent).collect();
                (silent.len() == 5 && silent.iter().all(|s| s.state == State::Down)).then_some(())
            },
        )
        .await?;
        let took = restarted.elapsed();
        eprintln!("silent services went down {took:?} after the registry restarted");
        // Registry time may count up to OUTAGE_GRACE of the outage, never all of it.
        assert!(
            took >= DOWN_TIME - OUTAGE_GRACE - Duration::from_millis(500),
            "services went down {took:?} after the restart: too early, the outage counted"
        );
        // The live services still heartbeat, and are judged until they stop.
        let acked = live.history.acked();
        live.wait_acked(acked + 10, Duration::from_secs(30)).await?;
        finish(c, live, observer).await?;
        // The silent services' history, against the final state (the lists just after the
        // restart are stale reads of nodes that may not have re-applied everything yet).
        silent.check(&converged_lists(c).await?)?;
        Ok(())
    })
    .await
}

/// A service that stops heartbeating goes `down` within `service_down_time` of registry
/// time even while the leader is killed again and again: registry time stands still only
/// while there is no leader, so the wall time it takes is bounded by `service_down_time`
/// plus the measured leaderless time. Services that keep heartbeating are never listed
/// `down` by any node meanwhile (no flapping).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dead_service_goes_down_despite_repeated_leader_kills() -> anyhow::Result<()> {
    init_test_tracing();
    let mut c = ProcCluster::start(spec())?;
    with_logs(&mut c, async |c| {
        c.wait_for_leader(Duration::from_secs(30)).await?;
        let reporters = Reporters::start(c.client_all(), 4, Duration::from_millis(100));
        let observer = Observer::start(c.addrs(), "host-", Duration::from_millis(200)).await?;
        reporters.wait_acked(40, Duration::from_secs(30)).await?;
        let sent = Instant::now();
        c.client_all()
            .heartbeat(&[HeartbeatIn::new("dead-host", "cinder-volume")])
            .await?;

        let deadline = sent + DOWN_TIME + Duration::from_secs(15);
        let mut next_kill = Instant::now() + Duration::from_millis(700);
        let (mut kills, mut leaderless) = (0, Duration::ZERO);
        let down_at = loop {
            anyhow::ensure!(Instant::now() < deadline, "dead-host never went down");
            if Instant::now() >= next_kill {
                // Kill the leader and restart it only once another node leads: restarted at
                // once, it would resume leading from its persisted vote.
                let leader = c.wait_for_leader(Duration::from_secs(10)).await?;
                let killed = Instant::now();
                c.kill_node(leader)?;
                let new = c.wait_for_leader(Duration::from_secs(10)).await?;
                leaderless += killed.elapsed();
                anyhow::ensure!(new != leader, "a killed node cannot lead");
                c.start_node(leader)?;
                kills += 1;
                // Counted from the kill, not from when the new leader was seen: registry time
                // runs from the election on, and seeing the leader can lag it by a second on
                // a loaded machine, which let the service go down before a second kill.
                next_kill = killed + Duration::from_millis(1500);
            }
            let mut down_everywhere = true;
            for i in c.running() {
                let Ok(list) = c
                    .client_of(i)
                    .services(None, None, Consistency::Stale)
                    .await
                else {
                    down_everywhere = false;
                    continue;
                };
                for s in list.services.iter().filter(|s| s.host != "dead-host") {
                    assert_eq!(
                        s.state,
                        State::Up,
                        "node {} listed live {} down",
                        i + 1,
                        s.host
                    );
                }
                down_everywhere &= state_of(&list, "dead-host") == Some(State::Down);
            }
            if down_everywhere {
                break sent.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        finish(c, reporters, observer).await?;
        eprintln!(
            "dead service down on every node {down_at:?} after its last heartbeat; \
             {kills} leader kills, {leaderless:?} without a leader"
        );
        assert!(
            kills >= 2,
            "the leader was killed repeatedly while the service was dying"
        );
        assert!(
            down_at >= DOWN_TIME - Duration::from_millis(200),
            "down too early: {down_at:?}"
        );
        assert!(
            down_at <= DOWN_TIME + leaderless + Duration::from_millis(1500),
            "a dead service must go down within service_down_time of registry time; \
             took {down_at:?} with {leaderless:?} leaderless"
        );
        Ok(())
    })
    .await
}

/// A node whose wall clock is two minutes ahead reports the same states as the others,
/// whether it follows or leads: a silent service turns `down` on every node within
/// `report_interval` of each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_with_skewed_clock_reports_the_same_states() -> anyhow::Result<()> {
    init_test_tracing();
    let skewed = 2;
    let mut c = ProcCluster::start(ProcSpec {
        clock_offsets: vec![(skewed, "+120s".into())],
        ..spec()
    })?;
    with_logs(&mut c, async |c| {
        c.wait_for_leader(Duration::from_secs(30)).await?;
        let reporters = Reporters::start(c.client_all(), 2, Duration::from_millis(100));
        let observer = Observer::start(c.addrs(), "host-", Duration::from_millis(200)).await?;
        reporters.wait_acked(20, Duration::from_secs(30)).await?;
        check_flip_together(c, "dead-while-following").await?;

        // Now make the skewed node the leader: kill whichever other node leads until it is.
        let mut leaders = Vec::new();
        for _ in 0..16 {
            let leader = c.wait_for_leader(Duration::from_secs(10)).await?;
            leaders.push(leader);
            if leader == skewed {
                break;
            }
            c.kill_node(leader)?;
            c.wait_for_leader(Duration::from_secs(10)).await?;
            c.start_node(leader)?;
        }
        eprintln!("leaders while handing leadership to the skewed node: {leaders:?}");
        let leader = c.wait_for_leader(Duration::from_secs(10)).await?;
        anyhow::ensure!(leader == skewed, "could not make the skewed node leader");
        check_flip_together(c, "dead-while-leading").await?;
        finish(c, reporters, observer).await?;
        Ok(())
    })
    .await
}

/// Heartbeats `host` once, then polls every node's stale list until each reports it down;
/// the live reporters' services must be up on every node throughout, and the nodes must
/// flip within `report_interval` of each other.
async fn check_flip_together(c: &ProcCluster, host: &str) -> anyhow::Result<()> {
    let sent = Instant::now();
    c.client_all()
        .heartbeat(&[HeartbeatIn::new(host, "cinder-volume")])
        .await?;
    let mut flipped: BTreeMap<usize, Duration> = BTreeMap::new();
    let deadline = sent + DOWN_TIME + Duration::from_secs(6);
    while flipped.len() < c.nodes.len() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{host} not down on every node: {flipped:?}"
        );
        for i in 0..c.nodes.len() {
            let list = c
                .client_of(i)
                .services(None, None, Consistency::Stale)
                .await?;
            for s in list.services.iter().filter(|s| s.host.starts_with("host-")) {
                assert_eq!(
                    s.state,
                    State::Up,
                    "node {} lists live {} down",
                    i + 1,
                    s.host
                );
            }
            if state_of(&list, host) == Some(State::Down) {
                flipped.entry(i).or_insert_with(|| sent.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first = flipped.values().min().copied().unwrap_or_default();
    let last = flipped.values().max().copied().unwrap_or_default();
    eprintln!("{host}: down on each node after {flipped:?}");
    assert!(
        first >= DOWN_TIME - Duration::from_millis(200),
        "{host} down too early: {flipped:?}"
    );
    assert!(
        last - first <= Duration::from_secs(1),
        "nodes disagree on {host} for longer than report_interval: {flipped:?}"
    );
    Ok(())
}

/// A reporter whose own clock is a day behind is `up`, and its record's times are the
/// leader's: the reporter's clock never enters the registry (`registryctl report` run
/// under libfaketime).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reporter_with_a_wrong_clock_is_up() -> anyhow::Result<()> {
    init_test_tracing();
    let ctl = registry_tests::cli::registryctl_binary()?;
    let mut c = ProcCluster::start(spec())?;
    with_logs(&mut c, async |c| {
        c.wait_for_leader(Duration::from_secs(30)).await?;
        let endpoints: Vec<String> = c.addrs().iter().map(|a| a.to_string()).collect();
        let mut reporter = tokio::process::Command::new(&ctl)
            .args(["--endpoints", &endpoints.join(",")])
            .args([
                "report",
                "--host",
                "skewed-host",
                "--binary",
                "cinder-volume",
            ])
            .args(["--interval", "300ms"])
            .env("LD_PRELOAD", registry_tests::procs::faketime_library()?)
            .env("FAKETIME", "-1d")
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
            .kill_on_drop(true)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let observer =
            Observer::start(c.addrs(), "skewed-host", Duration::from_millis(200)).await?;
        let list = wait::until(
            "the skewed reporter's heartbeats land",
            Duration::from_secs(20),
            || async {
                let l = c
                    .client_all()
                    .services(Some("skewed-host"), None, Consistency::Linearizable)
                    .await
                    .ok()?;
                (l.services.first()?.report_count >= 3).then_some(l)
            },
        )
        .await?;
        let s = &list.services[0];
        assert_eq!(s.state, State::Up, "a reporter a day behind is up");
        let stamped = s.updated_at.expect("heartbeat time");
        let skew = (chrono::Utc::now() - stamped).num_seconds().abs();
        assert!(
            skew < 10,
            "updated_at is the leader's time, not the reporter's: {stamped}"
        );
        observer.stop().await?;
        reporter.kill().await?;
        Ok(())
    })
    .await
}
