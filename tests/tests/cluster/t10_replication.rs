//! Writes through any node, reads from every node.

use std::time::Duration;

use registry_api::wire::{Consistency, HeartbeatIn, ServicesOut};
use registry_client::wire::State;
use registry_tests::init_test_tracing;
use registry_tests::inproc::{ClusterSpec, InProcCluster};
use registry_tests::raw_http;

const SERVICES: [(&str, &str); 3] = [
    ("host-a@lvm", "cinder-volume"),
    ("host-a", "cinder-backup"),
    ("host-b", "cinder-scheduler"),
];

/// Heartbeats sent to a follower are forwarded to and committed by the leader; every node
/// then lists the same records, and `report_count` counts every acknowledged heartbeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn heartbeats_via_a_follower_land_on_every_node() -> anyhow::Result<()> {
    init_test_tracing();
    let mut c = InProcCluster::start(ClusterSpec::default()).await?;
    let leader = c.wait_for_leader(Duration::from_secs(10)).await?;
    let follower = (leader + 1) % 3;
    let client = c.client_of(follower);

    let rounds = 10u64;
    for round in 1..=rounds {
        for (h, b) in SERVICES {
            let out = client.heartbeat(&[HeartbeatIn::new(h, b)]).await?;
            assert_eq!(
                out.services[0].report_count, round,
                "report_count must count each acknowledged heartbeat of {h}/{b}"
            );
        }
    }
    let batch: Vec<HeartbeatIn> = SERVICES
        .iter()
        .map(|(h, b)| HeartbeatIn::new(*h, *b))
        .collect();
    let out = client.heartbeat(&batch).await?;
    assert!(
        out.services.iter().all(|s| s.report_count == rounds + 1),
        "a batched request counts one heartbeat per item: {out:?}"
    );

    let applied = c.last_applied(leader).expect("leader applied entries");
    c.wait_applied(applied, Duration::from_secs(10)).await?;

    let mut lists: Vec<ServicesOut> = Vec::new();
    for i in 0..3 {
        lists.push(
            c.client_of(i)
                .services(None, None, Consistency::Stale)
                .await?,
        );
    }
    for (i, list) in lists.iter().enumerate() {
        assert_eq!(
            list.services.len(),
            SERVICES.len(),
            "node {} lists every service",
            i + 1
        );
        for s in &list.services {
            assert_eq!(
                s.report_count,
                rounds + 1,
                "node {} has every heartbeat of {}/{}",
                i + 1,
                s.host,
                s.binary
            );
            assert_eq!(s.state, State::Up, "a service that just reported is up");
        }
        let ids: Vec<u64> = list.services.iter().map(|s| s.id).collect();
        let first: Vec<u64> = lists[0].services.iter().map(|s| s.id).collect();
        assert_eq!(
            ids, first,
            "record ids are the same on every node (assigned in apply)"
        );
        assert_eq!(
            list.services
                .iter()
                .map(|s| s.updated_at)
                .collect::<Vec<_>>(),
            lists[0]
                .services
                .iter()
                .map(|s| s.updated_at)
                .collect::<Vec<_>>(),
            "leader-stamped times are the same on every node"
        );
    }

    // A linearizable read at a follower is confirmed by the leader and sees every write.
    let lin = c
        .client_of(follower)
        .services(None, None, Consistency::Linearizable)
        .await?;
    assert_eq!(lin.services.len(), SERVICES.len());
    assert!(lin.services.iter().all(|s| s.report_count == rounds + 1));

    // Exact-match filters.
    let host_a = client
        .services(Some("host-a"), None, Consistency::Linearizable)
        .await?;
    assert_eq!(
        host_a.services.len(),
        1,
        "host filter is an exact match: {host_a:?}"
    );
    assert_eq!(host_a.services[0].binary, "cinder-backup");
    let sched = client
        .services(None, Some("cinder-scheduler"), Consistency::Stale)
        .await?;
    assert_eq!(sched.services.len(), 1);
    assert_eq!(sched.services[0].host, "host-b");
    let none = client
        .services(Some("host-a"), Some("cinder-volume"), Consistency::Stale)
        .await?;
    assert!(none.services.is_empty(), "both filters apply together");

    c.shutdown().await
}

/// A follower serves a linearizable read itself, once it has applied the read index the
/// leader confirmed with a quorum: each read, sent right after a heartbeat the leader
/// acknowledged, is served by the follower asked and lists that heartbeat, including when the
/// follower had not applied it yet when the read was sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_serves_a_linearizable_read_after_the_leaders_read_index() -> anyhow::Result<()>
{
    const ROUNDS: u64 = 60;
    init_test_tracing();
    let mut c = InProcCluster::start(ClusterSpec::default()).await?;
    let leader = c.wait_for_leader(Duration::from_secs(10)).await?;
    let follower = (leader + 1) % 3;
    let lead = c.client_of(leader);
    let http = reqwest::Client::new();
    let url = format!(
        "http://{}/v1/services?host=read-index-host",
        c.configs[follower].listen
    );
    let mut behind = 0;
    for round in 1..=ROUNDS {
        lead.heartbeat(&[HeartbeatIn::new("read-index-host", "cinder-volume")])
            .await?;
        // The leader applied the heartbeat before it answered.
        if c.last_applied(follower) < c.last_applied(leader) {
            behind += 1;
        }
        let resp = http.get(&url).send().await?;
        assert_eq!(resp.status(), 200);
        let served_by = resp
            .headers()
            .get(registry_api::read::SERVED_BY_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        assert_eq!(
            served_by,
            Some((follower + 1).to_string()),
            "round {round}: the follower asked serves the read"
        );
        let out: ServicesOut = resp.json().await?;
        assert_eq!(
            out.services.first().map(|s| s.report_count),
            Some(round),
            "round {round}: the read lists every heartbeat acknowledged before it"
        );
    }
    println!(
        "{ROUNDS} linearizable reads at follower {}, each after an acknowledged heartbeat; \
         {behind} of them sent while the follower had not applied that heartbeat",
        follower + 1
    );
    c.shutdown().await
}

/// Bad input is refused with a 400 and a JSON message, and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_heartbeats_are_refused_and_change_nothing() -> anyhow::Result<()> {
    init_test_tracing();
    let mut c = InProcCluster::start(ClusterSpec::default()).await?;
    c.wait_for_leader(Duration::from_secs(10)).await?;
    let base = format!("http://{}", c.configs[0].listen);
    let http = reqwest::Client::new();
    let long = "x".repeat(256);
    let cases: Vec<(String, &str)> = vec![
        ("not json".into(), "not valid JSON"),
        ("42".into(), "object or an array"),
        ("[]".into(), "no heartbeat"),
        (r#"{"host":"h"}"#.into(), "missing field `binary`"),
        (
            r#"{"host":"h","binary":"b","colour":"red"}"#.into(),
            "unknown field `colour`",
        ),
        (
            r#"{"host":"","binary":"b"}"#.into(),
            "'host' must be 1 to 255",
        ),
        (
            format!(r#"{{"host":"{long}","binary":"b"}}"#),
            "'host' must be 1 to 255",
        ),
        (
            r#"{"host":"h\u0007","binary":"b"}"#.into(),
            "control characters",
        ),
        (
            r#"[{"host":"ok","binary":"b"},{"host":"ok2"}]"#.into(),
            "missing field `binary`",
        ),
    ];
    for (body, expect) in cases {
        let resp = http
            .post(format!("{base}/v1/heartbeats"))
            .body(body.clone())
            .send()
            .await?;
        assert_eq!(resp.status().as_u16(), 400, "body {body:?} must be refused");
        let json: serde_json::Value = resp.json().await?;
        let msg = json["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            msg.contains(expect),
            "error for {body:?} should say {expect:?}, said {msg:?}"
        );
        assert_eq!(json["error"]["code"], 400);
    }
    let too_big = format!("[{}]", vec![r#"{"host":"h","binary":"b"}"#; 1001].join(","));
    let resp = http
        .post(format!("{base}/v1/heartbeats"))
        .body(too_big)
        .send()
        .await?;
    assert_eq!(
        resp.status().as_u16(),
        400,
        "more than 1000 heartbeats per request is refused"
    );
    // A 2 MiB body is refused from its Content-Length, before it is read. Only the head is
    // sent (see `raw_http`): sending the body races the server's close of the connection.
    let resp = raw_http::head_only(
        c.configs[0].listen,
        "POST",
        "/v1/heartbeats",
        &[("content-type", "application/json")],
        2 * 1024 * 1024,
    )
    .await?;
    assert_eq!(
        resp.status,
        413,
        "bodies over 1 MiB are refused: {}",
        resp.text()
    );
    let json: serde_json::Value = serde_json::from_slice(&resp.body)?;
    assert_eq!(
        json["error"]["code"],
        413,
        "the 413 is the JSON error document: {}",
        resp.text()
    );
    let resp = http
        .get(format!("{base}/v1/services?consistency=eventual"))
        .send()
        .await?;
    assert_eq!(
        resp.status().as_u16(),
        400,
        "an unknown consistency level is refused"
    );
    let resp = http.get(format!("{base}/v1/nothing")).send().await?;
    assert_eq!(resp.status().as_u16(), 404);
    let json: serde_json::Value = resp.json().await?;
    assert_eq!(json["error"]["code"], 404);
    let secret = c.configs[0].auth.cluster_secret.clone().unwrap_or_default();
    let resp = http
        .post(format!("{base}/raft/append"))
        .header(registry_api::auth::SECRET_HEADER, &secret)
        .body("garbage")
        .send()
        .await?;
    assert_eq!(
        resp.status().as_u16(),
        421,
        "a Raft RPC that does not name this node's cluster and incarnation is refused"
    );
    let me = c.client_of(0).cluster().await?;
    let resp = http
        .post(format!("{base}/raft/append"))
        .header(registry_api::auth::SECRET_HEADER, &secret)
        .header(
            registry_api::transport::identity::CLUSTER_ID_HEADER,
            me.cluster_id.clone().unwrap_or_default(),
        )
        .header(
            registry_api::transport::identity::TARGET_HEADER,
            format!("{}/{}", me.node_id, me.incarnation),
        )
        .body("garbage")
        .send()
        .await?;
    assert_eq!(
        resp.status().as_u16(),
        400,
        "an undecodable Raft RPC (from a peer with the secret) is refused"
    );

    let list = c
        .client_of(1)
        .services(None, None, Consistency::Linearizable)
        .await?;
    assert!(
        list.services.is_empty(),
        "refused requests wrote nothing: {list:?}"
    );
    c.shutdown().await
}

/// `GET /v1/cluster` leaves the digest out (a status poll must not walk the whole table
/// under the state's lock); `?digest=true` adds it, equal on every node at one applied
/// index and different once a heartbeat changed a record; a bad or unknown query is a 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cluster_view_has_the_digest_only_when_asked() -> anyhow::Result<()> {
    init_test_tracing();
    let mut c = InProcCluster::start(ClusterSpec::default()).await?;
    let leader = c.wait_for_leader(Duration::from_secs(10)).await?;
    let batch: Vec<HeartbeatIn> = SERVICES
        .iter()
        .map(|(h, b)| HeartbeatIn::new(*h, *b))
        .collect();
    c.client_of(leader).heartbeat(&batch).await?;

    for i in 0..3 {
        let plain = c.client_of(i).cluster().await?;
        assert!(plain.digest.is_empty(), "no digest unless asked: {plain:?}");
    }
    // The leader commits a tick now and then: ask until the three agree on the index.
    let seen = registry_tests::wait::until(
        "every node at the same applied index",
        Duration::from_secs(10),
        || async {
            let mut seen = Vec::new();
            for i in 0..3 {
                let with = c.client_of(i).cluster_with_digest().await.ok()?;
                seen.push((with.applied_index, with.records, with.digest));
            }
            seen.iter().all(|s| s.0 == seen[0].0).then_some(seen)
        },
    )
    .await?;
    let first = seen[0].2.clone();
    assert_eq!(first.len(), 16, "a 64-bit digest in hex: {seen:?}");
    assert!(
        seen.iter().all(|s| s.1 == SERVICES.len() && s.2 == first),
        "every node at one applied index has the same records and digest: {seen:?}"
    );

    c.client_of(leader).heartbeat(&batch[..1]).await?;
    let applied = c.last_applied(leader).expect("leader applied entries");
    c.wait_applied(applied, Duration::from_secs(10)).await?;
    let after = c.client_of(leader).cluster_with_digest().await?;
    assert_ne!(
        after.digest, first,
        "a counted heartbeat changes the digest"
    );

    let http = reqwest::Client::new();
    let base = format!("http://{}", c.configs[0].listen);
    for query in ["digest=maybe", "digests=true"] {
        let resp = http
            .get(format!("{base}/v1/cluster?{query}"))
            .send()
            .await?;
        assert_eq!(resp.status().as_u16(), 400, "?{query} is refused");
        let json: serde_json::Value = resp.json().await?;
        assert_eq!(json["error"]["code"], 400, "a JSON error document: {json}");
    }
    c.shutdown().await
}
