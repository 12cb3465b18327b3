//! Overload must not make a healthy service look dead: while the registry refuses heartbeats
//! for load, registry time runs slower (the log's clock rate), so a heartbeat that could not
//! land counts against its service only in part; a service that really stopped still goes
//! `down` once the registry takes what it is sent again.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use registry_tests::inproc::{ClusterSpec, InProcCluster};
use registry_tests::{init_test_tracing, wait};

use crate::t60_observability::scrape;

const WAIT: Duration = Duration::from_secs(15);
const DOWN_TIME: Duration = Duration::from_secs(3);

/// What the flood's requests were answered.
#[derive(Default)]
struct Answers {
    accepted: AtomicU64,
    overloaded: AtomicU64,
    other: AtomicU64,
}

/// 24 reporters sending heartbeats to `nodes` (in turn) as fast as they are answered.
struct Flood {
    stop: Arc<AtomicBool>,
    answers: Arc<Answers>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Flood {
    fn start(c: &InProcCluster, http: &reqwest::Client, nodes: &[usize]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(Answers::default());
        let tasks = (0..24)
            .map(|r| {
                let (stop, answers) = (Arc::clone(&stop), Arc::clone(&answers));
                let node = nodes[r % nodes.len()];
                let (http, url) = (
                    http.clone(),
                    format!("http://{}/v1/heartbeats", c.configs[node].listen),
                );
                let body =
                    serde_json::json!({"host": format!("flood-{r}"), "binary": "cinder-volume"});
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let sent = http.post(&url).json(&body).send().await;
                        let counter = match sent.map(|r| r.status().as_u16()) {
                            Ok(200) => &answers.accepted,
                            Ok(503) => &answers.overloaded,
                            _ => &answers.other,
                        };
                        counter.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                })
            })
            .collect();
        Self {
            stop,
            answers,
            tasks,
        }
    }

    /// Stops it; what its requests were answered: accepted, overloaded, other.
    async fn stop(self) -> anyhow::Result<(u64, u64, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await?;
        }
        let a = &self.answers;
        Ok((
            a.accepted.load(Ordering::Relaxed),
            a.overloaded.load(Ordering::Relaxed),
            a.other.load(Ordering::Relaxed),
        ))
    }
}

/// A cluster whose nodes take at most 2 requests at once, its leader and a follower.
async fn bounded_cluster() -> anyhow::Result<(InProcCluster, usize, usize)> {
    init_test_tracing();
    let c = InProcCluster::start(ClusterSpec {
        max_concurrent_requests: 2,
        ..ClusterSpec::default()
    })
    .await?;
    let leader = c.wait_for_leader(WAIT).await?;
    Ok((c, leader, (leader + 1) % 3))
}

/// Holds node `i`'s bound of 2 with two uploads whose bodies are sent in part; it is free
/// again once they are dropped.
async fn hold_the_bound(c: &InProcCluster, i: usize) -> anyhow::Result<Vec<tokio::net::TcpStream>> {
    use tokio::io::AsyncWriteExt;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(c.configs[i].listen).await?;
        s.write_all(
            b"POST /v1/heartbeats HTTP/1.1\r\nhost: registry\r\ncontent-type: application/json\r\n\
              content-length: 1000\r\n\r\n{\"host\": \"slow\", ",
        )
        .await?;
        held.push(s);
    }
    wait::until("two uploads held on the node", WAIT, || async {
        let m = scrape(c, i).await.ok()?;
        (m.value("registry_http_requests_in_flight") == 2.0).then_some(())
    })
    .await?;
    Ok(held)
}

/// Every node's `/metrics` value of `name`.
async fn values(c: &InProcCluster, name: &str) -> anyhow::Result<Vec<f64>> {
    let mut out = Vec::new();
    for i in 0..3 {
        out.push(scrape(c, i).await?.value(name));
    }
    Ok(out)
}

/// With every node bounded to 2 requests at once and 24 reporters sending heartbeats as fast
/// as they are answered, most are refused (503 `overloaded`): the leader slows the registry
/// clock to at most a quarter on every node. A service whose last heartbeat landed just
/// before the flood is still `up` on every node after twice `service_down_time` of wall
/// time under it; once the flood ends the clock runs at full rate again and the service goes
/// `down` within `service_down_time`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn time_under_load_shedding_counts_in_part() -> anyhow::Result<()> {
    init_test_tracing();
    let mut c = InProcCluster::start(ClusterSpec {
        max_concurrent_requests: 2,
        service_down_time: DOWN_TIME,
        ..ClusterSpec::default()
    })
    .await?;
    let leader = c.wait_for_leader(WAIT).await?;
    for i in 0..3 {
        wait::until("the log's settings", WAIT, || async {
            let s = c.client_of(i).settings().await.ok()?;
            (s.source == "log").then_some(())
        })
        .await?;
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let first = http
        .post(format!("http://{}/v1/heartbeats", c.configs[leader].listen))
        .json(&serde_json::json!({"host": "victim", "binary": "cinder-volume"}))
        .send()
        .await?;
    assert_eq!(first.status(), 200, "the victim's last heartbeat lands");
    let silent_since = Instant::now();
    assert_eq!(values(&c, "registry_clock_rate").await?, vec![1.0; 3]);

    let flood = Flood::start(&c, &http, &[0, 1, 2]);

    let slowed = wait::until("the clock slowed on every node", WAIT, || async {
        let rates = values(&c, "registry_clock_rate").await.ok()?;
        rates.iter().all(|r| *r <= 0.25).then_some(rates)
    })
    .await?;
    let silent_at_slowdown = silent_since.elapsed();
    tokio::time::sleep((2 * DOWN_TIME).saturating_sub(silent_since.elapsed())).await;
    let silent_for = silent_since.elapsed();
    let downs = values(&c, "registry_services_down").await?;
    let rates = values(&c, "registry_clock_rate").await?;
    let (accepted, overloaded, other) = flood.stop().await?;
    tracing::info!(
        accepted,
        overloaded,
        other,
        ?slowed,
        ?silent_at_slowdown,
        ?rates,
        "flood over"
    );
    assert!(
        overloaded > accepted,
        "the flood was mostly refused: {accepted} accepted, {overloaded} overloaded, {other} other"
    );
    assert!(accepted > 0, "some of the flood landed");
    assert!(silent_for >= 2 * DOWN_TIME);
    assert_eq!(
        downs,
        vec![0.0; 3],
        "no node lists the victim down after {silent_for:?} of silence under the flood \
         (clock rates {rates:?})"
    );

    wait::until("the clock back at full rate", WAIT, || async {
        let rates = values(&c, "registry_clock_rate").await.ok()?;
        rates.iter().all(|r| *r == 1.0).then_some(())
    })
    .await?;
    let back = Instant::now();
    wait::until("the victim down on every node", WAIT, || async {
        let downs = values(&c, "registry_services_down").await.ok()?;
        (downs == vec![1.0; 3]).then_some(())
    })
    .await?;
    tracing::info!(took = ?back.elapsed(), "the victim went down after the clock ran at full rate again");
    c.shutdown().await
}

/// The counts of a follower that refuses reach the leader with the heartbeats it forwards:
/// a flood of one follower only (the leader refuses nothing of its own) slows the clock on
/// every node, and it runs at full rate again once the flood ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_that_refuses_slows_the_clock() -> anyhow::Result<()> {
    let (mut c, leader, follower) = bounded_cluster().await?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let before = scrape(&c, leader)
        .await?
        .value("registry_http_requests_overloaded_total");
    let flood = Flood::start(&c, &http, &[follower]);
    let slowed = wait::until("the clock slowed on every node", WAIT, || async {
        let rates = values(&c, "registry_clock_rate").await.ok()?;
        rates.iter().all(|r| *r <= 0.25).then_some(rates)
    })
    .await?;
    let (accepted, overloaded, other) = flood.stop().await?;
    let after = scrape(&c, leader)
        .await?
        .value("registry_http_requests_overloaded_total");
    tracing::info!(
        accepted,
        overloaded,
        other,
        ?slowed,
        "flood of one follower over"
    );
    assert!(overloaded > 0, "the follower refused some of the flood");
    assert_eq!(after, before, "the leader refused nothing itself");
    wait::until("the clock back at full rate", WAIT, || async {
        let rates = values(&c, "registry_clock_rate").await.ok()?;
        rates.iter().all(|r| *r == 1.0).then_some(())
    })
    .await?;
    c.shutdown().await
}

/// A leader serving its maximum of requests at once still takes the heartbeats a follower
/// forwards: the follower admitted each of them under its own bound, and refusing the batch
/// would refuse every one. Two uploads the leader is still reading (their bodies sent in
/// part) hold its bound of 2; a heartbeat sent straight to it is refused with 503, one sent
/// to a follower is forwarded and acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_at_its_bound_takes_forwarded_heartbeats() -> anyhow::Result<()> {
    let (mut c, leader, follower) = bounded_cluster().await?;
    let held = hold_the_bound(&c, leader).await?;
    let http = reqwest::Client::new();
    let beat = serde_json::json!({"host": "h1", "binary": "cinder-volume"});
    let direct = http
        .post(format!("http://{}/v1/heartbeats", c.configs[leader].listen))
        .json(&beat)
        .send()
        .await?;
    assert_eq!(direct.status(), 503, "the leader is at its bound");
    let forwarded = http
        .post(format!(
            "http://{}/v1/heartbeats",
            c.configs[follower].listen
        ))
        .json(&beat)
        .send()
        .await?;
    let status = forwarded.status();
    let body = forwarded.text().await?;
    assert_eq!(
        status, 200,
        "forwarded through the leader at its bound: {body}"
    );
    let m = scrape(&c, leader).await?;
    assert_eq!(
        m.value("registry_http_requests_in_flight"),
        2.0,
        "the uploads still hold the bound"
    );
    drop(held);
    c.shutdown().await
}

/// Heartbeats a reporter says it missed (`x-registry-missed-heartbeats`) count as lost ones.
/// A few (one reporter telling of 8 every 250 ms) leave every node's clock at full rate. With
/// the leader's bound held by two unfinished uploads, nine heartbeats land through a
/// follower for each one the leader refuses: 10% refused alone slows the clock to a half;
/// with each landed heartbeat telling of 8 missed, 73 of 82 are lost and the clock goes to
/// an eighth. Many missed with nothing refused (a registry that queues instead of refusing)
/// slow it to an eighth as well. A malformed count is answered 400 and nothing of it counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn missed_heartbeats_slow_the_clock_when_there_are_many() -> anyhow::Result<()> {
    use registry_client::wire::MISSED_HEADER;
    let (mut c, leader, follower) = bounded_cluster().await?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let via_follower = format!("http://{}/v1/heartbeats", c.configs[follower].listen);
    let to_leader = format!("http://{}/v1/heartbeats", c.configs[leader].listen);
    let beat = |i: usize| serde_json::json!({"host": format!("m-{i}"), "binary": "cinder-volume"});
    let missed_told = || async {
        anyhow::Ok(
            scrape(&c, follower)
                .await?
                .value("registry_heartbeats_missed_reported_total"),
        )
    };
    // `k` heartbeats through the follower, each telling of `missed` (none: no header).
    let through_follower = |k: usize, missed: u32| {
        let (http, url) = (http.clone(), via_follower.clone());
        async move {
            for i in 0..k {
                let mut req = http.post(&url).json(&beat(i));
                if missed > 0 {
                    req = req.header(MISSED_HEADER, missed);
                }
                let resp = req.send().await?;
                anyhow::ensure!(resp.status() == 200, "a heartbeat did not land: {resp:?}");
            }
            anyhow::Ok(())
        }
    };
    let rates_are = |want: f64| {
        let c = &c;
        async move {
            let rates = values(c, "registry_clock_rate").await.ok()?;
            rates.iter().all(|r| *r == want).then_some(rates)
        }
    };

    let bad = http
        .post(&via_follower)
        .header(MISSED_HEADER, "many")
        .json(&beat(0))
        .send()
        .await?;
    assert_eq!(bad.status(), 400);
    let body = bad.text().await?;
    assert!(
        body.contains(MISSED_HEADER),
        "the error names the header: {body}"
    );
    assert_eq!(
        missed_told().await?,
        0.0,
        "nothing of a refused request is counted"
    );

    // A few missed, nothing refused: for over two of the leader's one-second windows (at
    // most 40 missed in each, under the floor of 100), every clock stays at full rate.
    let quiet_until = Instant::now() + Duration::from_millis(2500);
    let mut told = 0;
    while Instant::now() < quiet_until {
        let next = tokio::time::Instant::now() + Duration::from_millis(250);
        through_follower(1, 8).await?;
        told += 8;
        let rates = values(&c, "registry_clock_rate").await?;
        assert_eq!(
            rates,
            vec![1.0; 3],
            "after {told} missed told, none refused"
        );
        tokio::time::sleep_until(next).await;
    }
    assert_eq!(
        missed_told().await?,
        f64::from(told),
        "every missed heartbeat told was counted"
    );

    // The leader's bound held: each round, one heartbeat refused by it, nine landed.
    let held = hold_the_bound(&c, leader).await?;
    let round = |missed: u32| {
        let (http, to_leader) = (http.clone(), to_leader.clone());
        let nine = through_follower(9, missed);
        async move {
            let refused = http.post(&to_leader).json(&beat(99)).send().await?;
            anyhow::ensure!(refused.status() == 503, "the leader refuses: {refused:?}");
            nine.await
        }
    };
    wait::until("a half on every node: 1 of 10 refused", WAIT, || async {
        round(0).await.ok()?;
        rates_are(0.5).await
    })
    .await?;
    wait::until("an eighth on every node: 73 of 82 lost", WAIT, || async {
        round(8).await.ok()?;
        rates_are(0.125).await
    })
    .await?;
    assert_eq!(
        scrape(&c, leader)
            .await?
            .value("registry_http_requests_in_flight"),
        2.0,
        "the uploads held the leader's bound to the end"
    );
    drop(held);

    // Nothing refused any more: full rate, then many missed alone slow it again.
    wait::until("the clock back at full rate", WAIT, || async {
        through_follower(9, 0).await.ok()?;
        rates_are(1.0).await
    })
    .await?;
    // 240 missed told per round, over the floor whatever the round's pace.
    wait::until(
        "an eighth on every node: many missed, none refused",
        WAIT,
        || async {
            through_follower(30, 8).await.ok()?;
            rates_are(0.125).await
        },
    )
    .await?;
    wait::until("the clock back at full rate", WAIT, || async {
        through_follower(9, 0).await.ok()?;
        rates_are(1.0).await
    })
    .await?;
    c.shutdown().await
}
