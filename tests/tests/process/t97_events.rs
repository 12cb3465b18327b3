//! Watching: the events every node derives from the log, read over `GET /v1/events`.
//! - every node streams the same sequence, and a silent service's `down` is in it, while the
//!   services that keep heartbeating get none;
//! - a watch resumes on another node after the leader is killed, with no gap and no
//!   duplicate;
//! - a position no longer kept is answered `410`, and a list then a watch from its applied
//!   index misses nothing;
//! - zones go into partial and full disruption, and every zone down sets the suspect flag.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use registry_api::wire::{Consistency, HeartbeatIn};
use registry_client::events::{EventKind, EventOut, Position, ZoneState, EVENTS_FROM_HEADER};
use registry_client::watch::WatchFilter;
use registry_client::RegistryClient;
use registry_tests::procs::{with_logs, ProcCluster, ProcSpec};
use registry_tests::{init_test_tracing, wait};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const DOWN_TIME: Duration = Duration::from_secs(3);

fn spec() -> ProcSpec {
    ProcSpec {
        service_down_time: DOWN_TIME,
        report_interval: Duration::from_secs(1),
        ..ProcSpec::default()
    }
}

/// Heartbeats of `hosts` (binary `cinder-volume`, in `zone`) every 200 ms until `stop`.
fn beat(
    client: RegistryClient,
    hosts: Vec<String>,
    zone: &str,
    stop: CancellationToken,
) -> JoinHandle<()> {
    let beats: Vec<HeartbeatIn> = hosts
        .iter()
        .map(|h| HeartbeatIn {
            availability_zone: Some(zone.to_string()),
            ..HeartbeatIn::new(h.clone(), "cinder-volume")
        })
        .collect();
    tokio::spawn(async move {
        while !stop.is_cancelled() {
            let _ = client.heartbeat(&beats).await;
            tokio::select! {
                () = stop.cancelled() => {}
                () = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    })
}

/// Sends `host`'s first heartbeat until it is accepted (a 503 during a leader change is sent
/// again, as a reporter would).
async fn create(client: &RegistryClient, host: &str) -> anyhow::Result<()> {
    wait::until(
        &format!("{host}'s heartbeat accepted"),
        Duration::from_secs(20),
        || async {
            client
                .heartbeat(&[HeartbeatIn::new(host, "cinder-volume")])
                .await
                .ok()
        },
    )
    .await
    .map(|_| ())
}

fn hosts(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

/// Reads events from `client` after `since` until `done` holds for what was read.
async fn read_until(
    client: &RegistryClient,
    since: Option<Position>,
    timeout: Duration,
    what: &str,
    mut done: impl FnMut(&[EventOut]) -> bool,
) -> anyhow::Result<Vec<EventOut>> {
    let mut watch = client.watch(since, WatchFilter::default());
    let mut seen = Vec::new();
    let read = async {
        while !done(&seen) {
            seen.push(watch.next().await?);
        }
        anyhow::Ok(())
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(r) => r?,
        Err(_) => anyhow::bail!(
            "timed out after {timeout:?} waiting for {what}; read {} events: {:?}",
            seen.len(),
            seen.iter()
                .map(|e| format!("{} {} {:?}", e.position, e.kind.name(), e.host))
                .collect::<Vec<_>>()
        ),
    }
    Ok(seen)
}

fn is_down_of(e: &EventOut, host: &str) -> bool {
    e.kind == EventKind::Down && e.host.as_deref() == Some(host)
}

/// Every node streams the same events from the start of the log; the service that stopped
/// heartbeating goes `down` (once, `service_down_time` of registry time after its last
/// heartbeat), and those that kept on get no `down`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_node_streams_the_same_events_and_a_silent_service_goes_down() -> anyhow::Result<()> {
    init_test_tracing();
    let mut c = ProcCluster::start(spec())?;
    with_logs(&mut c, async |c| {
        c.wait_for_leader(Duration::from_secs(30)).await?;
        let stop = CancellationToken::new();
        let live = beat(c.client_all(), hosts("live-", 3), "az1", stop.clone());
        let silent_stop = CancellationToken::new();
        let silent = beat(
            c.client_all(),
            vec!["quiet-0".into()],
            "az1",
            silent_stop.clone(),
        );
        let origin = Some(Position::end_of(0));
        read_until(
            &c.client_of(0),
            origin,
            Duration::from_secs(20),
            "4 created",
            |s| s.iter().filter(|e| e.kind == EventKind::Created).count() == 4,
        )
        .await?;
        silent_stop.cancel();
        silent.await?;
        let mut sequences = Vec::new();
        for i in 0..3 {
            let seq = read_until(
                &c.client_of(i),
                origin,
                Duration::from_secs(20),
                "quiet-0 down",
                |s| s.iter().any(|e| is_down_of(e, "quiet-0")),
            )
            .await?;
            sequences.push(seq);
        }
        stop.cancel();
        live.await?;
        let first = &sequences[0];
        for (i, s) in sequences.iter().enumerate() {
            assert_eq!(s, first, "node {} streams the same events as node 1", i + 1);
        }
        let downs: Vec<&EventOut> = first.iter().filter(|e| e.kind == EventKind::Down).collect();
        assert_eq!(downs.len(), 1, "one down, of the silent service: {downs:?}");
        let created = first
            .iter()
            .find(|e| e.kind == EventKind::Created && e.host.as_deref() == Some("quiet-0"))
            .map(|e| e.registry_time);
        let silent_for = downs[0].registry_time - created.unwrap_or(downs[0].registry_time);
        assert!(
            silent_for.to_std().is_ok_and(|d| d > DOWN_TIME),
            "down only past service_down_time of registry time ({silent_for})"
        );
        let positions: Vec<Position> = first.iter().map(|e| e.position).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "positions rise");
        println!(
            "checked: {} events, identical on 3 nodes, {} down (quiet-0), none of live-*",
            first.len(),
            downs.len()
        );
        Ok(())
    })
    .await
}

/// A watch on the leader goes on from another node when the leader is killed: the events it
/// read are exactly those a surviving node streams from the start, each once, and every
/// service created through the kill is in them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watch_resumes_after_a_leader_kill_without_gap_or_duplicate() -> anyhow::Result<()> {
    init_test_tracing();
    let mut c = ProcCluster::start(spec())?;
    with_logs(&mut c, async |c| {
        let leader = c.wait_for_leader(Duration::from_secs(30)).await?;
        let order: Vec<usize> = std::iter::once(leader)
            .chain((0..3).filter(|&i| i != leader))
            .collect();
        // A new service every 50 ms: a steady stream of `created` events.
        let stop = CancellationToken::new();
        let acked_count = Arc::new(AtomicUsize::new(0));
        let writer = {
            let client = c.client_all();
            let stop = stop.clone();
            let acked_count = Arc::clone(&acked_count);
            tokio::spawn(async move {
                let mut acked = Vec::new();
                let mut n = 0;
                while !stop.is_cancelled() {
                    let host = format!("new-{n}");
                    if client
                        .heartbeat(&[HeartbeatIn::new(host.clone(), "cinder-volume")])
                        .await
                        .is_ok()
                    {
                        acked.push(host);
                        acked_count.fetch_add(1, Ordering::Relaxed);
                    }
                    n += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                acked
            })
        };
        let mut watch = c
            .client_in_order(&order)
            .watch(Some(Position::end_of(0)), WatchFilter::default())
            .idle_timeout(Duration::from_secs(5));
        let mut seen = Vec::new();
        let mut resumes = Vec::new();
        while seen
            .iter()
            .filter(|e: &&EventOut| e.kind == EventKind::Created)
            .count()
            < 20
        {
            seen.push(watch.next().await?);
        }
        c.kill_node(leader)?;
        let at_kill = acked_count.load(Ordering::Relaxed);
        let before_kill = seen.len();
        let new_leader = c
            .wait_for_leader_besides(leader, Duration::from_secs(30))
            .await?;
        wait::until(
            "20 services created after the kill",
            Duration::from_secs(30),
            || async { (acked_count.load(Ordering::Relaxed) >= at_kill + 20).then_some(()) },
        )
        .await?;
        stop.cancel();
        let acked = writer.await?;
        let last_acked = acked.last().cloned().unwrap_or_default();
        let read = async {
            while !seen.iter().any(|e| {
                e.host.as_deref() == Some(last_acked.as_str()) && e.kind == EventKind::Created
            }) {
                let e = watch.next_with(|r| resumes.push(r)).await?;
                seen.push(e);
            }
            anyhow::Ok(())
        };
        tokio::time::timeout(Duration::from_secs(30), read).await??;
        assert!(!resumes.is_empty(), "the watch resumed on another node");
        assert!(seen.len() > before_kill, "events after the kill were read");
        let end = seen.last().map(|e| e.position);
        let reference = read_until(
            &c.client_of(new_leader),
            Some(Position::end_of(0)),
            Duration::from_secs(20),
            "the same range from the new leader",
            |s| s.last().map(|e| e.position) >= end,
        )
        .await?;
        assert_eq!(
            seen, reference,
            "the resumed watch read exactly the node's events"
        );
        let created: BTreeSet<&str> = seen
            .iter()
            .filter(|e| e.kind == EventKind::Created)
            .filter_map(|e| e.host.as_deref())
            .collect();
        for host in &acked {
            assert!(
                created.contains(host.as_str()),
                "{host} was acknowledged: its created event is there"
            );
        }
        println!(
            "checked: {} events ({} before the kill), {} acknowledged services all created once, \
             resumed {} time(s): {resumes:?}",
            seen.len(),
            before_kill,
            acked.len(),
            resumes.len()
        );
        Ok(())
    })
    .await
}

/// With few events kept, a watch from the start is answered `410` naming the oldest position
/// kept; a list, then a watch from the list's applied index, sees the next change and
/// nothing older.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_position_no_longer_kept_is_gone_and_a_relist_resumes() -> anyhow::Result<()> {
    init_test_tracing();
    // No service goes silent during the test: only the writes make events.
    let mut c = ProcCluster::start(ProcSpec {
        events_kept: 5,
        service_down_time: Duration::from_secs(60),
        ..spec()
    })?;
    with_logs(&mut c, async |c| {
        c.wait_for_leader(Duration::from_secs(30)).await?;
        let client = c.client_all();
        for i in 0..12 {
            create(&client, &format!("old-{i}")).await?;
        }
        let url = format!("http://{}/v1/events?since=0", c.addrs()[0]);
        let gone = wait::until("node 1 let the oldest events go", Duration::from_secs(20), || async {
            let resp = reqwest::get(&url).await.ok()?;
            (resp.status() == 410).then_some(resp)
        })
        .await?;
        let floor = gone
            .headers()
            .get(EVENTS_FROM_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body: serde_json::Value = gone.json().await?;
        let message = body["error"]["message"].as_str().unwrap_or_default().to_string();
        assert!(floor.is_some(), "the 410 names the oldest position kept");
        assert!(message.contains("list the services again"), "{message}");
        // A stale list is node 1's own state: the last acknowledged create may still be on
        // its way to node 1 (the leader acknowledges once a majority has it).
        let list = wait::until("node 1 lists the 12 services", Duration::from_secs(20), || async {
            let list = c.client_of(0).services(None, None, Consistency::Stale).await.ok()?;
            (list.services.len() == 12).then_some(list)
        })
        .await?;
        let applied = list.applied_index.ok_or_else(|| anyhow::anyhow!("the list's applied index"))?;
        create(&client, "after-list").await?;
        let seen = read_until(
            &c.client_of(0),
            Some(Position::end_of(applied)),
            Duration::from_secs(20),
            "after-list created",
            |s| s.iter().any(|e| e.host.as_deref() == Some("after-list")),
        )
        .await?;
        assert!(
            seen.iter().all(|e| e.host.as_deref().is_none_or(|h| !h.starts_with("old-")) || e.kind != EventKind::Created),
            "nothing the list already held comes again: {seen:?}"
        );
        println!("checked: 410 with {EVENTS_FROM_HEADER}: {floor:?}; list at {applied}, then {} event(s)", seen.len());
        Ok(())
    })
    .await
}

/// Zone `az1` (5 services) goes into partial disruption when 3 stop, `az2` (2 services) into
/// full disruption when both stop; with every service of `az1` stopped too, both zones are
/// fully disrupted and the registry is suspect; services coming back clear both. Read from
/// `/v1/zones`, the zone events and `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn zones_disrupt_under_mass_failure_and_every_zone_down_is_suspect() -> anyhow::Result<()> {
    init_test_tracing();
    let mut c = ProcCluster::start(spec())?;
    with_logs(&mut c, async |c| {
        c.wait_for_leader(Duration::from_secs(30)).await?;
        let client = c.client_all();
        let a_keep = CancellationToken::new();
        let a_drop = CancellationToken::new();
        let b = CancellationToken::new();
        let tasks = [
            beat(client.clone(), hosts("a-keep-", 2), "az1", a_keep.clone()),
            beat(client.clone(), hosts("a-drop-", 3), "az1", a_drop.clone()),
            beat(client.clone(), hosts("b-", 2), "az2", b.clone()),
        ];
        let zone = |name: &'static str| {
            let client = client.clone();
            move || {
                let client = client.clone();
                async move {
                    let z = client.zones().await.ok()?;
                    let found = z.zones.iter().find(|x| x.name == name).cloned()?;
                    Some((found, z.suspect))
                }
            }
        };
        wait::until(
            "7 services up in two zones",
            Duration::from_secs(20),
            || async {
                let z = client.zones().await.ok()?;
                (z.zones.iter().map(|x| x.up).sum::<u64>() == 7).then_some(())
            },
        )
        .await?;
        let start = client
            .services(None, None, Consistency::Linearizable)
            .await?
            .applied_index;
        a_drop.cancel();
        let (az1, suspect) =
            wait::until("az1 partially disrupted", Duration::from_secs(20), || {
                let z = zone("az1");
                async move {
                    z().await
                        .filter(|(z, _)| z.state == ZoneState::PartialDisruption)
                }
            })
            .await?;
        assert_eq!((az1.total, az1.up, az1.down), (5, 2, 3));
        assert!(!suspect);
        b.cancel();
        wait::until("az2 fully disrupted", Duration::from_secs(20), || {
            let z = zone("az2");
            async move {
                z().await
                    .filter(|(z, _)| z.state == ZoneState::FullDisruption)
            }
        })
        .await?;
        a_keep.cancel();
        wait::until("every zone down: suspect", Duration::from_secs(20), || {
            let z = zone("az1");
            async move {
                z().await
                    .filter(|(z, s)| z.state == ZoneState::FullDisruption && *s)
            }
        })
        .await?;
        let m = c.metrics(0).await?;
        assert_eq!(
            m.get("registry_suspect", &[]),
            Some(1.0),
            "the suspect gauge"
        );
        let back = CancellationToken::new();
        let returning = beat(client.clone(), hosts("b-", 2), "az2", back.clone());
        wait::until(
            "az2 back to normal, no longer suspect",
            Duration::from_secs(20),
            || {
                let z = zone("az2");
                async move {
                    z().await
                        .filter(|(z, s)| z.state == ZoneState::Normal && !*s)
                }
            },
        )
        .await?;
        back.cancel();
        returning.await?;
        for t in tasks {
            t.await?;
        }
        let zone_events = read_until(
            &c.client_of(1),
            start.map(Position::end_of),
            Duration::from_secs(20),
            "the zone events back to normal",
            |s| {
                s.iter().any(|e| {
                    e.kind == EventKind::Zone
                        && e.zone == "az2"
                        && e.zone_state == Some(ZoneState::Normal)
                })
            },
        )
        .await?;
        let zones: Vec<(String, Option<ZoneState>, Option<bool>)> = zone_events
            .iter()
            .filter(|e| e.kind == EventKind::Zone)
            .map(|e| (e.zone.clone(), e.zone_state, e.suspect))
            .collect();
        use ZoneState::*;
        assert_eq!(
            zones,
            [
                ("az1".into(), Some(PartialDisruption), Some(false)),
                ("az2".into(), Some(FullDisruption), Some(false)),
                ("az1".into(), Some(FullDisruption), Some(true)),
                ("az2".into(), Some(Normal), Some(false)),
            ],
            "the zone events, in order"
        );
        println!(
            "checked: {} zone events in order, /v1/zones and registry_suspect",
            zones.len()
        );
        Ok(())
    })
    .await
}

/// `registryctl watch --json` prints every event once, in order, going on from the next node
/// when the one it watches is killed; `registryctl zones` shows the zones.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn registryctl_watch_resumes_by_itself_after_its_node_dies() -> anyhow::Result<()> {
    init_test_tracing();
    let mut c = ProcCluster::start(spec())?;
    with_logs(&mut c, async |c| {
        let leader = c.wait_for_leader(Duration::from_secs(30)).await?;
        let first = (leader + 1) % 3;
        let order: Vec<String> = [first, (first + 1) % 3, (first + 2) % 3]
            .iter()
            .map(|&i| c.addrs()[i].to_string())
            .collect();
        let total = 30;
        let child = tokio::process::Command::new(registry_tests::cli::registryctl_binary()?)
            .args([
                "--endpoints",
                &order.join(","),
                "watch",
                "--since",
                "0",
                "--json",
            ])
            .args(["--kinds", "created", "--count", &total.to_string()])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let client = c.client_all();
        for i in 0..total / 2 {
            create(&client, &format!("w-{i}")).await?;
        }
        c.kill_node(first)?;
        for i in total / 2..total {
            create(&client, &format!("w-{i}")).await?;
        }
        let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await??;
        let stderr = String::from_utf8_lossy(&out.stderr);
        anyhow::ensure!(out.status.success(), "registryctl watch failed: {stderr}");
        let events: Vec<EventOut> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()?;
        let hosts: Vec<String> = events.iter().filter_map(|e| e.host.clone()).collect();
        let expected: Vec<String> = (0..total).map(|i| format!("w-{i}")).collect();
        assert_eq!(hosts, expected, "every service created, once, in order");
        assert!(
            stderr.contains("resuming after"),
            "it said it resumed: {stderr}"
        );
        let zones = registry_tests::cli::registryctl(&order[1..], &["zones"])
            .await?
            .ok()?;
        assert!(zones.stdout.contains("nova"), "{}", zones.stdout);
        println!(
            "checked: {} events through a kill of the watched node; stderr: {stderr}",
            events.len()
        );
        Ok(())
    })
    .await
}

/// Changed with `registryctl settings`, the log's settings disagree with every node's file:
/// each node logs so. (That reads then judge by the log's values is shown by `t42_settings`,
/// with files of 60 s and a log of 2 s.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_whose_file_disagrees_with_the_log_says_so() -> anyhow::Result<()> {
    init_test_tracing();
    let mut c = ProcCluster::start(spec())?;
    with_logs(&mut c, async |c| {
        c.wait_for_leader(Duration::from_secs(30)).await?;
        let eps: Vec<String> = c.addrs().iter().map(ToString::to_string).collect();
        wait::until(
            "the log carries the settings",
            Duration::from_secs(20),
            || async {
                let s = c.client_all().settings().await.ok()?;
                (s.source == "log").then_some(())
            },
        )
        .await?;
        for node in &c.nodes {
            let log = std::fs::read_to_string(&node.log)?;
            anyhow::ensure!(
                !log.contains("disagrees with the cluster's liveness settings"),
                "no warning while the files and the log agree"
            );
        }
        registry_tests::cli::registryctl(&eps, &["settings", "--service-down-time", "1s"])
            .await?
            .ok()?;
        for i in 0..3 {
            c.wait_log(
                i,
                "disagrees with the cluster's liveness settings",
                Duration::from_secs(20),
            )
            .await?;
        }
        Ok(())
    })
    .await
}
