//! Fault-tolerance scenarios on `registry-node` processes: repeated leader kills under load,
//! loss of quorum, a partitioned or paused leader, snapshot catch-up and crashes around
//! snapshots. After each, the history checker runs: acknowledged counts strictly increase,
//! nothing acknowledged is lost and nothing is applied twice, linearizable reads saw every
//! earlier acknowledgement and nothing that was not sent, every node's state machine is
//! identical, and the observer saw no service that kept heartbeating listed `down`.
//!
//! Process kills, pauses and restarts are real signals; partitions are firewall rules
//! (iptables, root) dropping packets between the nodes' own loopback addresses.
//! `REGISTRY_SOAK=1` runs the long version of the leader-kill scenario (50 kills).

use std::time::{Duration, Instant};

use registry_api::wire::{Consistency, HeartbeatIn};
use registry_client::ClientError;
use registry_tests::history::{Reporters, BINARY};
use registry_tests::observer::Observer;
use registry_tests::procs::{converged_digests, converged_lists, with_logs, ProcCluster, ProcSpec};
use registry_tests::scenario::{finish, stop};
use registry_tests::{init_test_tracing, wait};

fn spec() -> ProcSpec {
    ProcSpec {
        service_down_time: Duration::from_secs(5),
        report_interval: Duration::from_secs(1),
        ..ProcSpec::default()
    }
}

/// Sends the scenario's own `beats` until they are acknowledged, within 30 s: an answer
/// that is not a refusal (a 503 while a loaded cluster changes leader, or no answer) is tried
/// again, as any client does; a 4xx fails. For setup writes whose count is not checked (a
/// retry after an unknown outcome may count a record twice).
async fn write_retrying(
    client: &registry_client::RegistryClient,
    beats: &[HeartbeatIn],
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client.heartbeat(beats).await {
            Ok(_) => return Ok(()),
            Err(
                e @ ClientError::Api {
                    status: 400..=499, ..
                },
            ) => return Err(e.into()),
            Err(e) if Instant::now() >= deadline => {
                anyhow::bail!("a setup write was not acknowledged within 30 s: {e}")
            }
            Err(e) => {
                tracing::info!(error = %e, "setup write not acknowledged; trying again");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

fn summary(mut d: Vec<Duration>) -> String {
    d.sort();
    match (d.first(), d.get(d.len() / 2), d.last()) {
        (Some(min), Some(med), Some(max)) => {
            format!("n={} min={min:?} median={med:?} max={max:?}", d.len())
        }
        _ => "none".into(),
    }
}

/// Scenario 1: the leader is SIGKILLed again and again (10 times; 50 with REGISTRY_SOAK=1)
/// while 24 reporters heartbeat once a second through every node; each killed node is
/// restarted once a new leader took over. Nothing acknowledged is lost, nothing flaps.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn repeated_leader_kills_under_load() -> anyhow::Result<()> {
    init_test_tracing();
    let kills_wanted = if std::env::var_os("REGISTRY_SOAK").is_some() {
        50
    } else {
        10
    };
    let mut c = ProcCluster::start(spec())?;
    with_logs(&mut c, async |c| {
        c.wait_for_leader(Duration::from_secs(30)).await?;
        let reporters = Reporters::start_spread(c.clients_rotated(), 24, Duration::from_secs(1));
        let observer = Observer::start(c.addrs(), "host-", Duration::from_millis(200)).await?;
        reporters.wait_acked(48, Duration::from_secs(30)).await?;
        let mut unavailable = Vec::new();
        for _ in 0..kills_wanted {
            let leader = c.wait_for_leader(Duration::from_secs(20)).await?;
            let acked = reporters.history.acked();
            let survivor = c.client_of((leader + 1) % 3);
            let killed = Instant::now();
            c.kill_node(leader)?;
            // A probe writes through a survivor until a write is accepted again.
            wait::until(
                "a write accepted after the leader kill",
                Duration::from_secs(20),
                || async {
                    let probe = HeartbeatIn::new("probe", "cinder-volume");
                    survivor.heartbeat(&[probe]).await.ok().map(|_| ())
                },
            )
            .await?;
            unavailable.push(killed.elapsed());
            c.wait_for_leader(Duration::from_secs(20)).await?;
            c.start_node(leader)?;
            // Let the reporters get through again before the next kill.
            reporters
                .wait_acked(acked + 24, Duration::from_secs(30))
                .await?;
        }
        eprintln!(
            "RESULT leader kills: {}; kill to first accepted write: {}",
            unavailable.len(),
            summary(unavailable),
        );
        finish(c, reporters, observer).await?;
        Ok(())
    })
    .await
}

/// Scenario 2: with two of three nodes killed, writes fail fast with a 503 that says why,
/// linearizable reads too, and stale reads still answer; once the nodes are back, writes
/// resume and nothing acknowledged before is lost. The reporters keep heartbeating
/// throughout: their services are never listed `down`, and their writes refused or left
/// unknown while there was no quorum are applied at most once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quorum_loss_fails_fast_and_recovers() -> anyhow::Result<()> {
    init_test_tracing();
    let mut c = ProcCluster::start(spec())?;
    with_logs(&mut c, async |c| {
        c.wait_for_leader(Duration::from_secs(30)).await?;
        let reporters = Reporters::start_spread(c.clients_rotated(), 6, Duration::from_millis(50));
        let observer = Observer::start(c.addrs(), "host-", Duration::from_millis(200)).await?;
        reporters.wait_acked(60, Duration::from_secs(30)).await?;
        c.kill_node(1)?;
        c.kill_node(2)?;
        let survivor = c.client_of(0);
        // The scenario's own writes go to a service of their own (a reporter waits for each
        // answer; a second writer would reorder its acknowledgements), in the same history.
        let history = &reporters.history;

        let started = Instant::now();
        let err = history
            .heartbeat(&survivor, "quorum-probe", BINARY)
            .await
            .expect_err("a write without a quorum must fail");
        let took = started.elapsed();
        eprintln!("RESULT write without quorum failed after {took:?}: {err}");
        assert_eq!(err.status(), Some(503), "no quorum is a 503: {err}");
        assert!(
            took <= Duration::from_secs(3),
            "a write without quorum fails fast, not after write_timeout: {took:?}"
        );
        assert!(
            err.to_string().contains("quorum") || err.to_string().contains("leader"),
            "the 503 says why: {err}"
        );
        let err = survivor
            .services(None, None, Consistency::Linearizable)
            .await
            .expect_err("a linearizable read without a quorum must fail");
        assert_eq!(err.status(), Some(503), "{err}");
        // A stale read is this node's state, which need not hold the last acknowledgements
        // (the survivor may not have learned their commit): it answers, listing every
        // reporter's service.
        let stale = survivor.services(None, None, Consistency::Stale).await?;
        assert_eq!(
            stale
                .services
                .iter()
                .filter(|s| s.host.starts_with("host-"))
                .count(),
            6,
            "a stale read answers without a quorum"
        );

        c.start_node(1)?;
        c.start_node(2)?;
        c.wait_for_leader(Duration::from_secs(30)).await?;
        // A 503 is retryable: the leader may not have heard from the returning quorum yet.
        let out = wait::until("writes resume", Duration::from_secs(20), || async {
            history
                .heartbeat(&c.client_all(), "quorum-probe", BINARY)
                .await
                .ok()
        })
        .await?;
        assert!(out.services[0].report_count > 0);
        let acked = history.acked();
        reporters
            .wait_acked(acked + 60, Duration::from_secs(30))
            .await?;
        finish(c, reporters, observer).await?;
        Ok(())
    })
    .await
}

/// Scenario 3: the leader is cut off from both followers. The majority elects a new leader
/// and takes writes; the old leader acknowledges nothing from then on; once the partition
/// heals, every node converges to the same state.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn isolated_leader_acknowledges_nothing_and_converges() -> anyhow::Result<()> {
    init_test_tracing();
    let mut c = ProcCluster::start(spec())?;
    with_logs(&mut c, async |c| {
        let old = c.wait_for_leader(Duration::from_secs(30)).await?;
        let reporters = Reporters::start_spread(c.clients_rotated(), 6, Duration::from_millis(100));
        let observer = Observer::start(c.addrs(), "host-", Duration::from_millis(200)).await?;
        reporters.wait_acked(30, Duration::from_secs(30)).await?;
        c.isolate(old)?;
        let isolated_at = Instant::now();

        // Writes sent straight to the isolated leader must not be acknowledged.
        let old_client = c.client_of(old);
        let mut refused = 0;
        let new = c
            .wait_for_leader_besides(old, Duration::from_secs(20))
            .await?;
        eprintln!(
            "RESULT new leader elected {:?} after isolating the old one",
            isolated_at.elapsed()
        );
        for _ in 0..3 {
            match old_client
                .heartbeat(&[HeartbeatIn::new("probe-isolated", BINARY)])
                .await
            {
                Ok(out) => anyhow::bail!("the isolated old leader acknowledged a write: {out:?}"),
                Err(ClientError::Api { status: 503, .. }) => refused += 1,
                Err(e) => anyhow::bail!("unexpected answer from the isolated leader: {e}"),
            }
        }
        assert_eq!(refused, 3);
        // The majority keeps taking writes.
        let out = c
            .client_of(new)
            .heartbeat(&[HeartbeatIn::new("probe-majority", BINARY)])
            .await?;
        assert_eq!(out.services[0].report_count, 1);

        c.heal()?;
        let healed = Instant::now();
        let (_, history) = stop(reporters, observer).await?;
        let index = converged_digests(c, Duration::from_secs(30)).await?;
        eprintln!(
            "RESULT converged at index {index} {:?} after the partition healed",
            healed.elapsed()
        );
        let lists = converged_lists(c).await?;
        history.check(&lists)?;
        for l in &lists {
            assert!(
                !l.services.iter().any(|s| s.host == "probe-isolated"),
                "a write refused by the isolated leader must not appear later"
            );
        }
        Ok(())
    })
    .await
}

/// Scenario 4: the leader is paused (SIGSTOP) for longer than the election timeout, then
/// resumed: a new leader takes over meanwhile, the old one steps down when it wakes, and
/// nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn paused_leader_steps_down_on_resume() -> anyhow::Result<()> {
    init_test_tracing();
    let mut c = ProcCluster::start(spec())?;
    with_logs(&mut c, async |c| {
        let old = c.wait_for_leader(Duration::from_secs(30)).await?;
        let reporters = Reporters::start_spread(c.clients_rotated(), 6, Duration::from_millis(100));
        let observer = Observer::start(c.addrs(), "host-", Duration::from_millis(200)).await?;
        reporters.wait_acked(30, Duration::from_secs(30)).await?;
        c.pause(old)?;
        c.wait_for_leader_besides(old, Duration::from_secs(20))
            .await?;
        let acked = reporters.history.acked();
        reporters
            .wait_acked(acked + 30, Duration::from_secs(30))
            .await?;
        c.resume(old)?;
        let leader = c.wait_for_leader(Duration::from_secs(20)).await?;
        assert_ne!(
            leader, old,
            "the resumed node found a newer term and stepped down"
        );
        let acked = reporters.history.acked();
        reporters
            .wait_acked(acked + 30, Duration::from_secs(30))
            .await?;
        finish(c, reporters, observer).await?;
        Ok(())
    })
    .await
}

/// Scenario 6: a follower is down while the leader snapshots and purges its log past the
/// follower's last entry; on return it catches up through a snapshot install, with records
/// identical to the leader's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lagging_follower_catches_up_by_snapshot() -> anyhow::Result<()> {
    init_test_tracing();
    let mut c = ProcCluster::start(ProcSpec {
        snapshot_logs_since_last: 100,
        max_in_snapshot_log_to_keep: 0,
        ..spec()
    })?;
    with_logs(&mut c, async |c| {
        let leader = c.wait_for_leader(Duration::from_secs(30)).await?;
        let follower = (leader + 1) % 3;
        let reporters = Reporters::start_spread(c.clients_rotated(), 6, Duration::ZERO);
        let observer = Observer::start(c.addrs(), "host-", Duration::from_millis(200)).await?;
        reporters.wait_acked(30, Duration::from_secs(30)).await?;
        let before = c.client_of(follower).cluster().await?;
        c.kill_node(follower)?;
        let acked = reporters.history.acked();
        reporters
            .wait_acked(acked + 600, Duration::from_secs(60))
            .await?;
        let gone_past = before.last_log_index.unwrap_or(0);
        c.wait_purged_past(leader, gone_past, Duration::from_secs(30))
            .await?;
        c.start_node(follower)?;
        let acked = reporters.history.acked();
        reporters
            .wait_acked(acked + 50, Duration::from_secs(30))
            .await?;
        // The leader no longer has the entries after the follower's last one: the follower
        // can only catch up by installing a snapshot past it.
        c.wait_snapshot_past(follower, gone_past, Duration::from_secs(30))
            .await?;
        finish(c, reporters, observer).await?;
        Ok(())
    })
    .await
}

/// Scenario 7: nodes SIGKILLed while building a snapshot, and a follower killed three times
/// while installing one, restart cleanly and converge to the same state. A few reporters heartbeat throughout, watched by
/// the observer; the bulk records are of another binary, so that the observer and the
/// reader list only the reporters' services rather than 40,000 records each time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_during_snapshot_build_and_install_restarts_cleanly() -> anyhow::Result<()> {
    init_test_tracing();
    let mut c = ProcCluster::start(ProcSpec {
        snapshot_logs_since_last: 200,
        max_in_snapshot_log_to_keep: 0,
        ..spec()
    })?;
    with_logs(&mut c, async |c| {
        c.wait_for_leader(Duration::from_secs(30)).await?;
        let reporters = Reporters::start_spread(c.clients_rotated(), 3, Duration::from_millis(200));
        let observer =
            Observer::start_binary(c.addrs(), BINARY, "host-", Duration::from_millis(200)).await?;
        const BULK: &str = "cinder-backup";
        // Enough records that building and installing a snapshot takes a while.
        let client = c.client_all();
        for chunk in 0..40 {
            let batch: Vec<HeartbeatIn> = (0..1000)
                .map(|i| HeartbeatIn::new(format!("bulk-{chunk}-{i}"), BULK))
                .collect();
            write_retrying(&client, &batch).await?;
        }
        // Killed right after being asked to build a snapshot, at several points.
        for delay_ms in [0u64, 5, 20, 60] {
            let victim = (delay_ms as usize) % 3;
            c.client_of(victim).trigger_snapshot().await?;
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            c.kill_node(victim)?;
            c.start_node(victim)?;
            c.wait_for_leader(Duration::from_secs(30)).await?;
        }
        // A follower is killed while it installs a snapshot, three times. Each time the
        // leader first snapshots and purges its log past the follower, so that it needs a
        // snapshot, and the follower is killed as soon as it says it has one whole and starts
        // installing it (openraft purges its log up to the snapshot at that moment).
        let leader = c.wait_for_leader(Duration::from_secs(30)).await?;
        let follower = (leader + 1) % 3;
        let installing = "received a whole snapshot; installing it";
        for round in 0..3 {
            c.kill_node(follower)?;
            for i in 0..100 {
                let beat = HeartbeatIn::new(format!("late-{round}-{i}"), BULK);
                write_retrying(&client, &[beat]).await?;
            }
            let leader = c.wait_for_leader(Duration::from_secs(30)).await?;
            let applied = c.client_of(leader).cluster().await?.applied_index;
            c.client_of(leader).trigger_snapshot().await?;
            wait::until(
                "the leader purged its log past the follower",
                Duration::from_secs(60),
                || async {
                    let l = c.client_of(leader).cluster().await.ok()?;
                    (l.purged_index >= applied).then_some(())
                },
            )
            .await?;
            c.start_node(follower)?;
            let said = c
                .wait_log_count(follower, installing, round + 1, Duration::from_secs(60))
                .await?;
            c.kill_node(follower)?;
            eprintln!("RESULT round {round}: killed the follower as it said: {said}");
        }
        c.start_node(follower)?;
        // Caught up while the reporters still heartbeat, so the observer watches it return.
        let leader = c.wait_for_leader(Duration::from_secs(30)).await?;
        let target = c.client_of(leader).cluster().await?.applied_index;
        wait::until(
            "the follower applied what the leader had applied",
            Duration::from_secs(60),
            || async {
                let f = c.client_of(follower).cluster().await.ok()?;
                (f.applied_index >= target).then_some(())
            },
        )
        .await?;
        let (_, history) = stop(reporters, observer).await?;
        let index = converged_digests(c, Duration::from_secs(60)).await?;
        let lists = converged_lists(c).await?;
        for l in &lists {
            let bulk = l.services.iter().filter(|s| s.binary == BULK).count();
            assert_eq!(bulk, 40_300, "every bulk record on every node");
        }
        history.check(&lists)?;
        eprintln!("RESULT converged at index {index} after kills around snapshots");
        Ok(())
    })
    .await
}

/// Scenario 7b: followers SIGKILLed at seven moments of the second after a bulk registration
/// (4,000 new records and 4,000 heartbeats to the previous round's) restart, load their last
/// snapshot file and apply the log after it again, and every node converges to the same
/// state: equal digests (report counts included), so no entry was applied twice and none was
/// skipped, and every bulk record on every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_after_a_bulk_registration_restarts_and_converges() -> anyhow::Result<()> {
    init_test_tracing();
    let mut c = ProcCluster::start(spec())?;
    with_logs(&mut c, async |c| {
        c.wait_for_leader(Duration::from_secs(30)).await?;
        const BULK: &str = "cinder-backup";
        const PER_REQUEST: usize = 1000;
        const REQUESTS: usize = 4;
        let delays_ms = [0u64, 150, 300, 450, 600, 750, 900];
        let client = c.client_all();
        for (round, delay_ms) in delays_ms.iter().enumerate() {
            for r in [Some(round), round.checked_sub(1)].into_iter().flatten() {
                for req in 0..REQUESTS {
                    let batch: Vec<HeartbeatIn> = (0..PER_REQUEST)
                        .map(|i| HeartbeatIn::new(format!("bulk-{r}-{req}-{i}"), BULK))
                        .collect();
                    write_retrying(&client, &batch).await?;
                }
            }
            let leader = c.wait_for_leader(Duration::from_secs(30)).await?;
            let victim = (leader + 1 + round % 2) % 3;
            tokio::time::sleep(Duration::from_millis(*delay_ms)).await;
            c.kill_node(victim)?;
            c.start_node(victim)?;
        }
        c.wait_for_leader(Duration::from_secs(30)).await?;
        let index = converged_digests(c, Duration::from_secs(60)).await?;
        let lists = converged_lists(c).await?;
        let expected = delays_ms.len() * REQUESTS * PER_REQUEST;
        for l in &lists {
            let bulk = l.services.iter().filter(|s| s.binary == BULK).count();
            assert_eq!(bulk, expected, "every bulk record on every node");
        }
        eprintln!(
            "RESULT {} kills after bulk writes of {} records each; every node converged at \
             index {index} with {expected} bulk records",
            delays_ms.len(),
            2 * REQUESTS * PER_REQUEST
        );
        Ok(())
    })
    .await
}

/// Scenario 8: a dead node is replaced by a new, empty one while reporters keep going: the
/// new node joins as a learner, is promoted, the dead one is removed; the group then
/// survives a leader kill with its new membership.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dead_node_replaced_online() -> anyhow::Result<()> {
    init_test_tracing();
    let mut c = ProcCluster::start(spec())?;
    with_logs(&mut c, async |c| {
        let leader = c.wait_for_leader(Duration::from_secs(30)).await?;
        let reporters = Reporters::start_spread(c.clients_rotated(), 6, Duration::from_millis(100));
        let observer = Observer::start(c.addrs(), "host-", Duration::from_millis(200)).await?;
        reporters.wait_acked(30, Duration::from_secs(30)).await?;
        let dead = (leader + 1) % 3;
        c.kill_node(dead)?;
        let fresh = c.spawn_joiner()?;
        let (fresh_id, fresh_addr) = (c.nodes[fresh].id, c.nodes[fresh].addr);
        let dead_id = c.nodes[dead].id;
        let admin = c.client_of(leader);
        // The leader asks the new node who it is before adding it: it must be listening.
        wait::until("the new node answers", Duration::from_secs(20), || async {
            c.client_of(fresh).cluster().await.ok()
        })
        .await?;
        admin.add_learner(fresh_id, &fresh_addr.to_string()).await?;
        admin.promote(fresh_id).await?;
        // The new node, caught up, is watched as well.
        let fresh_observer =
            Observer::start(vec![fresh_addr], "host-", Duration::from_millis(200)).await?;
        admin.remove_member(dead_id).await?;
        // The leader answers once the change is committed by a quorum, which need not include
        // the new node: it learns of it from the leader's next AppendEntries.
        let ids = wait::until(
            "the new node sees the dead one removed",
            Duration::from_secs(10),
            || async {
                let cl = c.client_of(fresh).cluster().await.ok()?;
                let ids: Vec<u64> = cl
                    .members
                    .iter()
                    .filter(|m| m.voter)
                    .map(|m| m.id)
                    .collect();
                (!ids.contains(&dead_id)).then_some(ids)
            },
        )
        .await?;
        assert!(
            ids.contains(&fresh_id) && ids.len() == 3,
            "the new node is one of three voters once the dead one is removed: {ids:?}"
        );

        let acked = reporters.history.acked();
        reporters
            .wait_acked(acked + 30, Duration::from_secs(30))
            .await?;
        let leader = c.wait_for_leader(Duration::from_secs(20)).await?;
        c.kill_node(leader)?;
        c.wait_for_leader(Duration::from_secs(20)).await?;
        let acked = reporters.history.acked();
        reporters
            .wait_acked(acked + 30, Duration::from_secs(30))
            .await?;
        c.start_node(leader)?;
        fresh_observer.stop().await?;
        finish(c, reporters, observer).await?;
        Ok(())
    })
    .await
}
