//! Authentication: client tokens with roles, and the cluster secret between nodes.

use std::collections::BTreeMap;
use std::time::Duration;

use registry_api::auth::hash_token;
use registry_api::wire::HeartbeatIn;
use registry_node::config::{AuthMode, AuthSettings, TokenEntry};
use registry_node::{Node, NodeConfig, Peer, StartOptions};
use registry_storage::{Incarnation, RegistryNode};
use registry_tests::init_test_tracing;
use registry_tests::inproc::{ClusterSpec, InProcCluster};
use registry_tests::raw_http;

use crate::cinderclient::{cinder_cli, run};

const READER: &str = "reader-token-1";
const REPORTER: &str = "reporter-token-1";
const ADMIN: &str = "admin-token-1";
const SECRET: &str = "the-cluster-secret-0001";

fn token_auth() -> AuthSettings {
    let entry = |role: &str, token: &str| TokenEntry {
        role: serde_json::from_value(serde_json::json!(role)).expect("role"),
        sha256: hash_token(token),
        name: None,
    };
    AuthSettings {
        mode: AuthMode::Tokens,
        tokens: vec![
            entry("reader", READER),
            entry("reporter", REPORTER),
            entry("admin", ADMIN),
        ],
        token_file: None,
        cluster_secret: Some(SECRET.into()),
        cluster_secret_file: None,
        accepted_cluster_secrets: Vec::new(),
    }
}

async fn status(req: reqwest::RequestBuilder) -> anyhow::Result<(u16, serde_json::Value)> {
    let resp = req.send().await?;
    let code = resp.status().as_u16();
    let body = resp.json().await.unwrap_or(serde_json::Value::Null);
    Ok((code, body))
}

/// Each role can do exactly what it may, on every node (followers forward what they
/// authorised): reader lists, reporter heartbeats, admin does both and administers; no token
/// or an unknown one is 401, the wrong role 403, each with a JSON message.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_role_does_exactly_what_it_may() -> anyhow::Result<()> {
    init_test_tracing();
    let mut c = InProcCluster::start(ClusterSpec {
        auth: token_auth(),
        ..ClusterSpec::default()
    })
    .await?;
    let leader = c.wait_for_leader(Duration::from_secs(10)).await?;
    let http = reqwest::Client::new();
    for node in [leader, (leader + 1) % 3] {
        let base = format!("http://{}", c.configs[node].listen);
        let beat = |token: Option<&str>| {
            let mut r = http
                .post(format!("{base}/v1/heartbeats"))
                .json(&HeartbeatIn::new("host-a", "cinder-volume"));
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            r
        };
        let list = |token: &str| http.get(format!("{base}/v1/services")).bearer_auth(token);
        let disable = |token: &str| {
            http.put(format!("{base}/v1/services/disable"))
                .header("x-auth-token", token)
                .json(&serde_json::json!({"host": "host-a", "binary": "cinder-volume"}))
        };
        let (code, body) = status(beat(None)).await?;
        assert_eq!(code, 401, "no token: {body}");
        assert!(body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("token"));
        assert_eq!(status(beat(Some("wrong"))).await?.0, 401, "unknown token");
        assert_eq!(
            status(beat(Some(READER))).await?.0,
            403,
            "a reader may not heartbeat"
        );
        assert_eq!(
            status(beat(Some(REPORTER))).await?.0,
            200,
            "a reporter heartbeats"
        );
        assert_eq!(
            status(beat(Some(ADMIN))).await?.0,
            200,
            "an admin may heartbeat"
        );
        assert_eq!(status(list(READER)).await?.0, 200, "a reader lists");
        assert_eq!(
            status(list(REPORTER)).await?.0,
            403,
            "a reporter may not list"
        );
        assert_eq!(status(list(ADMIN)).await?.0, 200);
        assert_eq!(
            status(disable(READER)).await?.0,
            403,
            "a reader may not disable"
        );
        assert_eq!(
            status(disable(REPORTER)).await?.0,
            403,
            "a reporter may not disable"
        );
        assert_eq!(status(disable(ADMIN)).await?.0, 200, "an admin disables");
        let learner = http
            .post(format!("{base}/v1/cluster/learners"))
            .bearer_auth(REPORTER)
            .json(&serde_json::json!({"id": 9, "addr": "127.0.0.1:1"}));
        assert_eq!(status(learner).await?.0, 403, "membership is for admins");
        let cinder_list = http
            .get(format!("{base}/v3/admin/os-services"))
            .header("x-auth-token", REPORTER);
        assert_eq!(
            status(cinder_list).await?.0,
            403,
            "Cinder API checks roles too"
        );
        let cinder_list = http
            .get(format!("{base}/v3/admin/os-services"))
            .header("x-auth-token", READER);
        assert_eq!(status(cinder_list).await?.0, 200);
        assert_eq!(
            status(http.get(format!("{base}/health"))).await?.0,
            200,
            "health is open"
        );
        for (token, role) in [(READER, "reader"), (REPORTER, "reporter"), (ADMIN, "admin")] {
            let (code, body) =
                status(http.get(format!("{base}/v1/whoami")).bearer_auth(token)).await?;
            assert_eq!(
                (code, body["role"].as_str()),
                (200, Some(role)),
                "whoami: {body}"
            );
        }
        let (code, body) = status(http.get(format!("{base}/v1/whoami"))).await?;
        assert_eq!(code, 401, "whoami without a token: {body}");
    }
    c.shutdown().await
}

/// The real python-cinderclient works against a cluster with tokens, with its
/// `admin_token` auth type, through a follower.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cinderclient_works_with_a_token() -> anyhow::Result<()> {
    init_test_tracing();
    let (bin, _version) = cinder_cli().await?;
    let mut c = InProcCluster::start(ClusterSpec {
        auth: token_auth(),
        ..ClusterSpec::default()
    })
    .await?;
    let leader = c.wait_for_leader(Duration::from_secs(10)).await?;
    let follower = (leader + 1) % 3;
    let http = reqwest::Client::new();
    let base = format!("http://{}", c.configs[follower].listen);
    http.post(format!("{base}/v1/heartbeats"))
        .bearer_auth(REPORTER)
        .json(&HeartbeatIn::new("node1@lvm", "cinder-volume"))
        .send()
        .await?
        .error_for_status()?;
    let cinder = |token: &'static str, args: &'static [&'static str]| {
        let mut cmd = tokio::process::Command::new(&bin);
        cmd.args(["--os-auth-type", "admin_token", "--os_token", token])
            .args(["--os-project-id", "admin"])
            .args(["--os-endpoint", &format!("{base}/v3")])
            .args(args);
        cmd
    };
    let (ok, out, err) = run(
        &mut cinder(ADMIN, &["service-list"]),
        Duration::from_secs(60),
    )
    .await?;
    assert!(
        ok,
        "cinder service-list with an admin token failed: {out}{err}"
    );
    assert!(
        out.contains("node1@lvm") && out.contains("cinder-volume"),
        "{out}"
    );
    let (ok, out, err) = run(
        &mut cinder(
            ADMIN,
            &[
                "service-disable",
                "node1@lvm",
                "cinder-volume",
                "--reason",
                "maint",
            ],
        ),
        Duration::from_secs(60),
    )
    .await?;
    assert!(ok, "service-disable with an admin token failed: {out}{err}");
    let (ok, out, err) = run(
        &mut cinder(READER, &["service-disable", "node1@lvm", "cinder-volume"]),
        Duration::from_secs(60),
    )
    .await?;
    assert!(!ok, "a reader token must not disable: {out}");
    assert!(format!("{out}{err}").contains("HTTP 403"), "{out}{err}");
    c.shutdown().await
}

/// A node without the cluster secret cannot join or disrupt the group: its Raft RPCs are
/// refused with 401, and the leader and term stay as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_without_the_secret_cannot_disrupt() -> anyhow::Result<()> {
    init_test_tracing();
    let mut c = InProcCluster::start(ClusterSpec::default()).await?;
    let leader = c.wait_for_leader(Duration::from_secs(10)).await?;
    let before = c.node(leader).raft.metrics().borrow().current_term;

    // An intruder that lists the group's nodes as its peers and campaigns with a wrong
    // secret: every vote request it sends carries a higher term.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let mut peers: Vec<Peer> = c.configs[0].peers.clone();
    peers.push(Peer {
        id: 4,
        addr: addr.to_string(),
    });
    let mut auth = ClusterSpec::default().auth;
    auth.cluster_secret = Some("not-the-cluster-secret".into());
    let config = NodeConfig {
        node_id: 4,
        listen: addr,
        data_dir: c.dir.path().join("intruder"),
        peers,
        auth,
        ..c.configs[0].clone()
    };
    let intruder = Node::start(config, listener, StartOptions::default()).await?;
    // Its peers never answer it (wrong secret), so it forms no group by itself: make it
    // campaign with the group's membership, as a node of the group would.
    let members: BTreeMap<u64, RegistryNode> = (1..=4)
        .map(|id| {
            let addr = if id == 4 {
                addr.to_string()
            } else {
                c.configs[id as usize - 1].listen.to_string()
            };
            (id, RegistryNode::new(addr, Incarnation(id)))
        })
        .collect();
    intruder.raft.initialize(members).await?;
    intruder
        .raft
        .wait(Some(Duration::from_secs(10)))
        .metrics(|m| m.current_term >= before + 3, "the intruder campaigned")
        .await?;

    let m = c.node(leader).raft.metrics().borrow().clone();
    assert_eq!(
        m.current_leader,
        Some(leader as u64 + 1),
        "the leader stays"
    );
    assert_eq!(
        m.current_term, before,
        "the intruder's votes never reached the group"
    );
    // And a raw RPC without the secret is a 401.
    let resp = reqwest::Client::new()
        .post(format!("http://{}/raft/vote", c.configs[leader].listen))
        .body(vec![0u8; 8])
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 401);
    intruder.shutdown().await?;
    c.shutdown().await
}

/// Credentials are checked before a single body byte is read: a request that declares a
/// body of 1 MiB (within every route's limit) and sends none is answered at once, on every
/// route that takes a body, Raft RPCs included; a wrong role is a 403 just as early, and
/// under `/v3` the refusal is Cinder's fault document. (A server that read the body first
/// would wait for it, and `head_only` would time out.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn credentials_are_checked_before_the_body_is_read() -> anyhow::Result<()> {
    init_test_tracing();
    let mut c = InProcCluster::start(ClusterSpec {
        auth: token_auth(),
        ..ClusterSpec::default()
    })
    .await?;
    c.wait_for_leader(Duration::from_secs(10)).await?;
    let addr = c.configs[0].listen;
    let declared = 1024 * 1024;
    let json = ("content-type", "application/json");
    let reader = format!("Bearer {READER}");
    let routes = [
        ("POST", "/v1/heartbeats"),
        ("PUT", "/v1/services/disable"),
        ("POST", "/v1/cluster/learners"),
        ("POST", "/v1/cluster/voters"),
        ("PUT", "/v3/os-services/disable"),
        ("PUT", "/v3/admin/os-services/enable"),
    ];
    let mut checked = 0;
    for (method, path) in routes {
        let cinder = path.starts_with("/v3");
        for (token, status) in [(None, 401), (Some(reader.as_str()), 403)] {
            let mut headers = vec![json];
            if let Some(t) = token {
                headers.push(("authorization", t));
            }
            let resp = raw_http::head_only(addr, method, path, &headers, declared).await?;
            assert_eq!(resp.status, status, "{method} {path}: {}", resp.text());
            let body: serde_json::Value = serde_json::from_slice(&resp.body)?;
            let code = if cinder {
                let fault = if status == 401 {
                    "unauthorized"
                } else {
                    "forbidden"
                };
                &body[fault]["code"]
            } else {
                &body["error"]["code"]
            };
            assert_eq!(*code, status, "{method} {path}: the error document: {body}");
            checked += 1;
        }
    }
    // Between nodes: no cluster secret, no read of the RPC body.
    for path in [
        "/raft/append",
        "/raft/vote",
        "/raft/snapshot",
        "/raft/join",
        "/raft/read-index",
    ] {
        let resp = raw_http::head_only(addr, "POST", path, &[], declared).await?;
        assert_eq!(resp.status, 401, "POST {path}: {}", resp.text());
        checked += 1;
    }
    println!("credentials checked before the body on {checked} route and credential pairs");
    c.shutdown().await
}

/// A Raft RPC from a peer (the cluster secret and identity headers right) that declares a
/// body past its route's limit is answered 413 before a byte of it is read; one at the limit
/// is read (the server then waits for it). The limits are those the node's Raft settings
/// need: RequestVote 64 KiB, AppendEntries `max_payload_entries` of the largest entries,
/// InstallSnapshot one chunk.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn raft_rpc_bodies_past_their_limits_are_refused_before_they_are_read() -> anyhow::Result<()>
{
    use registry_api::transport::identity::{CLUSTER_ID_HEADER, TARGET_HEADER};
    use registry_api::transport::rpc::{RpcLimits, VOTE_MAX_BYTES};

    init_test_tracing();
    let mut c = InProcCluster::start(ClusterSpec::default()).await?;
    c.wait_for_leader(Duration::from_secs(10)).await?;
    let who = c.client_of(0).cluster().await?;
    let cluster = who
        .cluster_id
        .ok_or_else(|| anyhow::anyhow!("the node has a cluster"))?;
    let target = format!("{}/{}", who.node_id, who.incarnation);
    let secret = c.configs[0]
        .auth
        .cluster_secret
        .clone()
        .ok_or_else(|| anyhow::anyhow!("a secret"))?;
    let headers = [
        (registry_api::auth::SECRET_HEADER, secret.as_str()),
        (CLUSTER_ID_HEADER, cluster.as_str()),
        (TARGET_HEADER, target.as_str()),
        ("content-type", "application/x-bincode"),
    ];
    let limits = RpcLimits::new(
        c.configs[0].raft.max_payload_entries,
        openraft::Config::default().snapshot_max_chunk_size,
    );
    assert!(
        limits.append < 16 * 1024 * 1024 && limits.snapshot < 4 * 1024 * 1024,
        "bounded by what the protocol needs: {limits:?}"
    );
    let addr = c.configs[0].listen;
    for (path, limit) in [
        ("/raft/vote", VOTE_MAX_BYTES),
        ("/raft/append", limits.append),
        ("/raft/snapshot", limits.snapshot),
    ] {
        let over = raw_http::head_only(addr, "POST", path, &headers, limit + 1).await?;
        assert_eq!(
            over.status,
            413,
            "POST {path} past {limit}: {}",
            over.text()
        );
    }
    println!(
        "Raft RPC bodies refused past vote {VOTE_MAX_BYTES}, append {}, snapshot {} bytes",
        limits.append, limits.snapshot
    );
    c.shutdown().await
}
