//! Observability: `/metrics` (Prometheus text) and its figures under load, `/ready`, request
//! ids, and the bound on concurrent requests.

use std::time::Duration;

use registry_api::auth::hash_token;
use registry_api::wire::{Consistency, HeartbeatIn};
use registry_node::config::{AuthMode, AuthSettings, TokenEntry};
use registry_node::RaftSettings;
use registry_tests::exposition::Exposition;
use registry_tests::init_test_tracing;
use registry_tests::inproc::{ClusterSpec, InProcCluster};
use registry_tests::wait::until;

const WAIT: Duration = Duration::from_secs(10);

/// Scrapes node `i`'s `/metrics` and parses it; the answer must say it is Prometheus text.
pub(crate) async fn scrape(c: &InProcCluster, i: usize) -> anyhow::Result<Exposition> {
    let resp = reqwest::get(format!("http://{}/metrics", c.configs[i].listen)).await?;
    anyhow::ensure!(resp.status() == 200, "/metrics answered {}", resp.status());
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    anyhow::ensure!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "/metrics content type is {content_type:?}"
    );
    let text = resp.text().await?;
    Exposition::parse(&text).map_err(|e| e.context(format!("node {} /metrics:\n{text}", i + 1)))
}

/// `/metrics` parses as Prometheus text on every node, and its figures move with the load:
/// exactly one node says it leads (the leader), every node names it; N heartbeats sent to
/// the leader and M through a follower raise the leader's accepted counter by N + M and the
/// follower's forwarded counter by M; the sizes of the committed batches add up to the
/// accepted heartbeats; the applied index grows by at least one entry per sequential
/// request; `services_up` equals the number of services heartbeated on every node; a
/// refused heartbeat counts as failed; latency is labelled by route template, never by the
/// raw path; the leader reports replication lag for each follower; and the clock offsets
/// of nodes sharing one clock are near zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_parse_and_move_with_the_load() -> anyhow::Result<()> {
    init_test_tracing();
    // Long election timeouts: the counters are per node, so the leader must not change
    // while the test runs beside many others on a loaded machine.
    let mut c = InProcCluster::start(ClusterSpec {
        raft: RaftSettings {
            heartbeat_interval: Duration::from_millis(100),
            election_timeout_min: Duration::from_millis(1500),
            election_timeout_max: Duration::from_millis(3000),
            ..RaftSettings::default()
        },
        ..ClusterSpec::default()
    })
    .await?;
    let leader = c.wait_for_leader(WAIT).await?;
    let follower = (leader + 1) % 3;
    let leader_id = leader as f64 + 1.0;

    let mut leaders = 0;
    for i in 0..3 {
        let m = scrape(&c, i).await?;
        assert_eq!(
            m.value("registry_raft_leader_id"),
            leader_id,
            "node {} names the leader",
            i + 1
        );
        let leads = m.value("registry_raft_is_leader");
        assert_eq!(
            leads,
            f64::from(u8::from(i == leader)),
            "node {} is_leader",
            i + 1
        );
        leaders += leads as usize;
        assert_eq!(m.value("registry_node_id"), i as f64 + 1.0);
        assert_eq!(
            m.get("registry_raft_server_state", &[("state", "leader")]),
            Some(f64::from(u8::from(i == leader)))
        );
    }
    assert_eq!(leaders, 1, "exactly one node says it is the leader");

    let before = scrape(&c, leader).await?;
    let before_f = scrape(&c, follower).await?;
    let term = before.value("registry_raft_term");
    let accepted0 = before.value("registry_heartbeats_accepted_total");
    let applied0 = before.value("registry_raft_applied_index");
    let forwarded0 = before_f.value("registry_heartbeats_forwarded_total");

    let services = 6;
    let (n, m) = (12, 6);
    let to_leader = c.client_of(leader);
    let to_follower = c.client_of(follower);
    for k in 0..n {
        let s = k % services;
        to_leader
            .heartbeat(&[HeartbeatIn::new(format!("host-{s}"), "cinder-volume")])
            .await?;
    }
    for k in 0..m {
        let s = k % services;
        to_follower
            .heartbeat(&[HeartbeatIn::new(format!("host-{s}"), "cinder-volume")])
            .await?;
    }
    let after = scrape(&c, leader).await?;
    let after_f = scrape(&c, follower).await?;
    assert_eq!(
        after.value("registry_raft_term"),
        term,
        "an election happened during the test: the figures moved to another leader"
    );
    assert_eq!(
        after.value("registry_heartbeats_accepted_total") - accepted0,
        (n + m) as f64,
        "the leader accepted every heartbeat, those forwarded by the follower included"
    );
    assert_eq!(
        after_f.value("registry_heartbeats_forwarded_total") - forwarded0,
        m as f64,
        "the follower forwarded every heartbeat it received"
    );
    assert_eq!(
        after_f.value("registry_heartbeats_accepted_total"),
        0.0,
        "a follower commits nothing itself"
    );
    assert_eq!(
        after.value("registry_heartbeat_batch_size_sum"),
        after.value("registry_heartbeats_accepted_total"),
        "the committed batches carry exactly the accepted heartbeats"
    );
    assert!(
        after.value("registry_heartbeat_batch_size_count") >= (n + m) as f64,
        "sequential requests are one entry each"
    );
    // The leader appends each sequential request's entry on its own; a follower may get two
    // in one AppendEntries when it is the slower one.
    let flushes = |x: &Exposition| x.value("registry_disk_flush_duration_seconds_count");
    for (node, was, now, least) in [
        ("leader", &before, &after, (n + m) as f64),
        ("follower", &before_f, &after_f, 1.0),
    ] {
        assert!(
            flushes(now) - flushes(was) >= least,
            "the {node} flushed its log for the entries it appended: {} -> {} flushes",
            flushes(was),
            flushes(now)
        );
        assert!(
            now.value("registry_disk_flush_duration_seconds_sum") > 0.0,
            "the {node}'s flushes took time"
        );
    }
    assert!(
        after.value("registry_raft_applied_index") >= applied0 + (n + m) as f64,
        "the applied index grows by at least one entry per sequential request: {} -> {}",
        applied0,
        after.value("registry_raft_applied_index")
    );
    assert!(
        after.value("registry_raft_committed_index") >= after.value("registry_raft_applied_index")
    );
    let posts = after
        .get(
            "registry_http_request_duration_seconds_count",
            &[
                ("route", "/v1/heartbeats"),
                ("method", "POST"),
                ("status", "200"),
            ],
        )
        .unwrap_or(0.0);
    assert!(
        posts >= (n + m) as f64,
        "every heartbeat request is timed under its route ({posts})"
    );

    // Every node lists the same up services once it applied the leader's entries.
    let applied = after.value("registry_raft_applied_index") as u64;
    c.wait_applied(applied, WAIT).await?;
    for i in 0..3 {
        let m = scrape(&c, i).await?;
        assert_eq!(
            m.value("registry_services_up"),
            services as f64,
            "node {} counts every heartbeated service up",
            i + 1
        );
        assert_eq!(m.value("registry_services_down"), 0.0);
        assert_eq!(m.value("registry_services_disabled"), 0.0);
        let offset = m.value("registry_clock_offset_seconds");
        assert!(
            offset.abs() < 5.0,
            "node {}: one shared clock and no outage, yet registry time is {offset} s off",
            i + 1
        );
        let leader_offset = m.value("registry_leader_clock_offset_seconds");
        assert!(
            leader_offset.abs() < 2.0,
            "node {}: nodes sharing one clock are {leader_offset} s apart",
            i + 1
        );
    }

    // An administrative action is timed under its template; a bad heartbeat counts as failed.
    c.client_of(leader)
        .action(
            registry_api::wire::ServiceAction::Disable,
            "host-0",
            Some("cinder-volume"),
            None,
        )
        .await?;
    let resp = reqwest::Client::new()
        .post(format!("http://{}/v1/heartbeats", c.configs[leader].listen))
        .body(r#"{"host":""}"#)
        .send()
        .await?;
    assert_eq!(resp.status(), 400);
    let m = scrape(&c, leader).await?;
    assert_eq!(
        m.get(
            "registry_heartbeats_failed_total",
            &[("reason", "bad_request")]
        ),
        Some(1.0),
        "a refused heartbeat request counts as failed"
    );
    assert_eq!(m.value("registry_services_disabled"), 1.0);
    assert_eq!(m.value("registry_services_up"), services as f64);
    assert!(
        m.get(
            "registry_http_request_duration_seconds_count",
            &[("route", "/v1/services/{action}"), ("method", "PUT")]
        )
        .is_some(),
        "an action is timed under the route template"
    );
    for s in m.all("registry_http_request_duration_seconds_count") {
        let route = &s.labels["route"];
        assert!(
            !route.contains("disable") && !route.contains("host-"),
            "a raw path leaked into a label: {route}"
        );
    }

    // Replication lag per follower, on the leader only.
    for f in (0..3).filter(|i| *i != leader) {
        let id = (f + 1).to_string();
        let lag = m
            .get(
                "registry_raft_replication_lag_entries",
                &[("follower", &id)],
            )
            .unwrap_or_else(|| panic!("the leader reports the lag of follower {id}"));
        assert!(lag >= 0.0);
    }
    let mf = scrape(&c, follower).await?;
    assert!(
        mf.all("registry_raft_replication_lag_entries").is_empty(),
        "a follower reports no replication"
    );
    assert!(mf.value("registry_leader_contact_age_seconds") < 1.5);
    assert_eq!(mf.value("registry_ready"), 1.0);
    c.shutdown().await
}

/// `/metrics` needs the reader role when tokens are required (401 without one, 403 with a
/// reporter's, 200 with a reader's); `/health` and `/ready` need no token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_a_reader_token_probes_none() -> anyhow::Result<()> {
    init_test_tracing();
    let entry = |role: &str, token: &str| TokenEntry {
        role: serde_json::from_value(serde_json::json!(role)).expect("role"),
        sha256: hash_token(token),
        name: None,
    };
    let auth = AuthSettings {
        mode: AuthMode::Tokens,
        tokens: vec![
            entry("reader", "reader-token-60"),
            entry("reporter", "reporter-token-60"),
        ],
        token_file: None,
        cluster_secret: Some("observability-cluster-secret".into()),
        cluster_secret_file: None,
        accepted_cluster_secrets: Vec::new(),
    };
    let mut c = InProcCluster::start(ClusterSpec {
        auth,
        ..ClusterSpec::default()
    })
    .await?;
    let leader = c.wait_for_leader(WAIT).await?;
    let base = format!("http://{}", c.configs[leader].listen);
    let http = reqwest::Client::new();
    let get = |path: &str, token: Option<&str>| {
        let mut r = http.get(format!("{base}{path}"));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    assert_eq!(get("/metrics", None).await?.status(), 401);
    assert_eq!(
        get("/metrics", Some("reporter-token-60")).await?.status(),
        403
    );
    let ok = get("/metrics", Some("reader-token-60")).await?;
    assert_eq!(ok.status(), 200);
    Exposition::parse(&ok.text().await?)?;
    assert_eq!(get("/health", None).await?.status(), 200);
    until("/ready answers 200 without a token", WAIT, || async {
        let r = get("/ready", None).await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await?;
    c.shutdown().await
}

/// `/ready` is 200 on every node of a caught-up cluster, saying which indexes it compared,
/// and 503 with a reason on a node whose peers are all stopped (no leader heard from), as
/// is `/health`; the `registry_ready` gauge agrees.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ready_only_when_in_touch_and_caught_up() -> anyhow::Result<()> {
    init_test_tracing();
    let mut c = InProcCluster::start(ClusterSpec::default()).await?;
    let leader = c.wait_for_leader(WAIT).await?;
    c.client_of(leader)
        .heartbeat(&[HeartbeatIn::new("host-r", "cinder-volume")])
        .await?;
    let http = reqwest::Client::new();
    for i in 0..3 {
        let url = format!("http://{}/ready", c.configs[i].listen);
        let body: serde_json::Value = until("a node of a healthy cluster is ready", WAIT, || {
            let req = http.get(&url).send();
            async move {
                let r = req.await.ok()?;
                if r.status() != 200 {
                    return None;
                }
                r.json().await.ok()
            }
        })
        .await?;
        let r = &body["ready"];
        assert_eq!(body["status"], "ready");
        assert_eq!(
            r["leader_id"],
            leader as u64 + 1,
            "node {} names the leader",
            i + 1
        );
        let lag = r["lag_entries"].as_u64().unwrap_or(u64::MAX);
        assert!(
            lag <= r["max_lag_entries"].as_u64().unwrap_or(0),
            "a ready node is within the bound: {body}"
        );
        assert_eq!(
            r["leader_commit_index"].as_u64().unwrap_or(0)
                - r["applied_index"].as_u64().unwrap_or(0),
            lag
        );
    }

    let keep = (leader + 1) % 3;
    for i in (0..3).filter(|i| *i != keep) {
        c.stop_node(i).await?;
    }
    let url = format!("http://{}/ready", c.configs[keep].listen);
    let message = until("a node cut off from its peers is not ready", WAIT, || {
        let req = http.get(&url).send();
        async move {
            let r = req.await.ok()?;
            if r.status() != 503 {
                return None;
            }
            let body: serde_json::Value = r.json().await.ok()?;
            body["error"]["message"].as_str().map(str::to_string)
        }
    })
    .await?;
    assert!(
        message.starts_with("not ready: ") && message.len() > "not ready: ".len(),
        "the 503 says why: {message}"
    );
    assert!(
        message.contains("leader"),
        "the reason is the missing leader: {message}"
    );
    let health = http
        .get(format!("http://{}/health", c.configs[keep].listen))
        .send()
        .await?;
    assert_eq!(health.status(), 503, "liveness agrees: no leader");
    let m = scrape(&c, keep).await?;
    assert_eq!(m.value("registry_ready"), 0.0);
    assert_eq!(m.value("registry_healthy"), 0.0);
    c.shutdown().await
}

/// Every answer carries `x-request-id`: the client's when valid (kept verbatim, also when
/// the request is forwarded to the leader and on errors), else a new `req-<uuid>` one, a
/// different one per request; Cinder's `x-openstack-request-id` is the same id.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn request_ids_are_kept_or_made() -> anyhow::Result<()> {
    init_test_tracing();
    let mut c = InProcCluster::start(ClusterSpec::default()).await?;
    let leader = c.wait_for_leader(WAIT).await?;
    let follower = (leader + 1) % 3;
    let base = format!("http://{}", c.configs[follower].listen);
    let http = reqwest::Client::new();
    let id_of = |r: &reqwest::Response| {
        r.headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };

    let a = http.get(format!("{base}/v1/services")).send().await?;
    let b = http.get(format!("{base}/v1/services")).send().await?;
    let (a, b) = (id_of(&a), id_of(&b));
    let a = a.expect("an answer without x-request-id");
    assert!(
        a.starts_with("req-") && a.len() == 40,
        "a generated id: {a}"
    );
    assert_ne!(Some(a), b, "each request gets its own id");

    let mine = "client-Chosen_id-0042";
    let forwarded = http
        .post(format!("{base}/v1/heartbeats"))
        .header("x-request-id", mine)
        .json(&HeartbeatIn::new("host-id", "cinder-volume"))
        .send()
        .await?;
    assert_eq!(forwarded.status(), 200, "a follower forwards the heartbeat");
    assert_eq!(
        id_of(&forwarded).as_deref(),
        Some(mine),
        "a valid client id is kept"
    );
    let missing = http
        .get(format!("{base}/no/such/route"))
        .header("x-request-id", mine)
        .send()
        .await?;
    assert_eq!(missing.status(), 404);
    assert_eq!(
        id_of(&missing).as_deref(),
        Some(mine),
        "errors carry it too"
    );

    for bad in ["x".repeat(65), "has space".into(), "semi;colon".into()] {
        let r = http
            .get(format!("{base}/health"))
            .header("x-request-id", bad.as_str())
            .send()
            .await?;
        let id = id_of(&r).unwrap_or_default();
        assert!(
            id.starts_with("req-") && id != bad,
            "an invalid id {bad:?} is replaced, got {id:?}"
        );
    }

    let cinder = http
        .get(format!("{base}/v3/admin/os-services"))
        .send()
        .await?;
    let rid = id_of(&cinder);
    assert!(rid.is_some());
    assert_eq!(
        cinder
            .headers()
            .get("x-openstack-request-id")
            .and_then(|v| v.to_str().ok()),
        rid.as_deref(),
        "Cinder's request id is the request's id"
    );
    c.shutdown().await
}

/// With `max_concurrent_requests = 2`, two requests held in flight (linearizable reads on
/// a node whose peers are stopped, waiting for a leader) make a third public request fail
/// at once with 503, `Retry-After: 1` and a JSON error (a Cinder fault under `/v3`), while
/// the probes still answer; once
/// the held requests end, requests are served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrency_bound_answers_503_with_retry_after() -> anyhow::Result<()> {
    init_test_tracing();
    let mut c = InProcCluster::start(ClusterSpec {
        max_concurrent_requests: 2,
        ..ClusterSpec::default()
    })
    .await?;
    let leader = c.wait_for_leader(WAIT).await?;
    let keep = (leader + 1) % 3;
    for i in (0..3).filter(|i| *i != keep) {
        c.stop_node(i).await?;
    }
    let base = format!("http://{}", c.configs[keep].listen);
    let held: Vec<_> = (0..2)
        .map(|_| {
            let client = c.client_of(keep);
            tokio::spawn(
                async move { client.services(None, None, Consistency::Linearizable).await },
            )
        })
        .collect();
    until("two requests in flight", WAIT, || async {
        let m = scrape(&c, keep).await.ok()?;
        (m.value("registry_http_requests_in_flight") == 2.0).then_some(())
    })
    .await?;

    let http = reqwest::Client::new();
    let refused = http
        .get(format!("{base}/v1/services?consistency=stale"))
        .send()
        .await?;
    assert_eq!(refused.status(), 503, "a third request is refused");
    assert_eq!(
        refused
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1"),
        "the refusal says when to retry"
    );
    assert!(refused.headers().contains_key("x-request-id"));
    let body: serde_json::Value = refused.json().await?;
    assert_eq!(body["error"]["code"], 503);
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("maximum of 2 concurrent requests"),
        "the refusal says why: {message}"
    );
    // Under /v3 the refusal is a Cinder fault, with the same Retry-After.
    let cinder = http.get(format!("{base}/v3/os-services")).send().await?;
    assert_eq!(cinder.status(), 503, "a Cinder request is refused too");
    assert_eq!(
        cinder
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1"),
        "the Cinder refusal says when to retry"
    );
    let fault: serde_json::Value = cinder.json().await?;
    assert_eq!(
        fault["serviceUnavailable"]["code"], 503,
        "the refusal is Cinder's fault document: {fault}"
    );
    // Probes are never refused for load.
    let m = scrape(&c, keep).await?;
    assert_eq!(m.value("registry_http_requests_overloaded_total"), 2.0);
    assert_eq!(m.value("registry_http_max_concurrent_requests"), 2.0);
    for probe in ["/health", "/ready"] {
        let r = http.get(format!("{base}{probe}")).send().await?;
        let body: serde_json::Value = r.json().await?;
        let msg = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            !msg.contains("concurrent"),
            "{probe} is exempt from the bound: {msg}"
        );
    }

    for h in held {
        let res = h.await?;
        assert_eq!(
            res.err().and_then(|e| e.status()),
            Some(503),
            "a linearizable read without a quorum fails with 503"
        );
    }
    until("the held requests released their permits", WAIT, || async {
        let m = scrape(&c, keep).await.ok()?;
        (m.value("registry_http_requests_in_flight") == 0.0).then_some(())
    })
    .await?;
    let served = http
        .get(format!("{base}/v1/services?consistency=stale"))
        .send()
        .await?;
    assert_eq!(served.status(), 200, "below the bound, requests are served");
    c.shutdown().await
}

/// The services of each availability zone by state, the data directory's filesystem and the
/// process's memory in `/metrics`: every node counts each zone's up and down services (a
/// zone whose services all went silent shows them down, the others stay up), shows both
/// states of every zone, and reports the size and free space of its data directory's
/// filesystem as statvfs does.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn zones_disk_and_memory_in_metrics() -> anyhow::Result<()> {
    init_test_tracing();
    let mut c = InProcCluster::start(ClusterSpec {
        service_down_time: Duration::from_secs(3),
        ..ClusterSpec::default()
    })
    .await?;
    c.wait_for_leader(WAIT).await?;
    let client = c.client_of(0);
    let beat = |host: &str, zone: &str| {
        let mut h = HeartbeatIn::new(host, "cinder-volume");
        h.availability_zone = Some(zone.into());
        h
    };
    let az1 = [beat("zone-a1", "az1"), beat("zone-a2", "az1")];
    client.heartbeat(&az1).await?;
    client.heartbeat(&[beat("zone-b1", "az2")]).await?;
    let zone = |m: &Exposition, zone: &str, state: &str| {
        m.get(
            "registry_zone_services",
            &[("zone", zone), ("state", state)],
        )
    };
    // az2 goes silent; az1 keeps heartbeating until every node shows az2 down.
    until(
        "every node shows az2's service down and az1's up",
        WAIT,
        || async {
            client.heartbeat(&az1).await.ok()?;
            for i in 0..3 {
                let m = scrape(&c, i).await.ok()?;
                let seen = (
                    zone(&m, "az1", "up")?,
                    zone(&m, "az1", "down")?,
                    zone(&m, "az2", "up")?,
                    zone(&m, "az2", "down")?,
                );
                if seen != (2.0, 0.0, 0.0, 1.0) {
                    return None;
                }
            }
            Some(())
        },
    )
    .await?;
    for i in 0..3 {
        let m = scrape(&c, i).await?;
        let dir = &c.configs[i].data_dir;
        assert_eq!(
            m.value("registry_disk_size_bytes"),
            fs2::total_space(dir)? as f64,
            "node {}: the size of its data directory's filesystem",
            i + 1
        );
        let available = m.value("registry_disk_available_bytes");
        assert!(
            available > 0.0 && available <= m.value("registry_disk_size_bytes"),
            "node {}: free space {available} within the filesystem",
            i + 1
        );
        let rss = m.value("registry_process_resident_memory_bytes");
        assert!(
            (1e6..64e9).contains(&rss),
            "node {}: resident memory {rss} bytes",
            i + 1
        );
        assert_eq!(
            m.all("registry_zone_services").len(),
            4,
            "two zones, two states each"
        );
    }
    c.shutdown().await
}
