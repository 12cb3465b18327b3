//! Rotating the cluster secret and the client tokens on a running cluster, one SIGHUP at a
//! time, as the README's procedure says, while reporters heartbeat through every node.

use std::net::SocketAddr;
use std::time::Duration;

use registry_tests::history::Reporters;
use registry_tests::init_test_tracing;
use registry_tests::observer::Observer;
use registry_tests::procs::{ProcCluster, ProcSpec};
use registry_tests::scenario::finish;

const OLD: &str = "test-cluster-secret-0123";
const NEW: &str = "the-next-cluster-secret-4567";
const RELOADED: &str = "authentication settings reloaded";
const WAIT: Duration = Duration::from_secs(20);

/// The `[auth]` section with `secret` sent and `accepted` also accepted.
fn secret_section(secret: &str, accepted: &[&str]) -> String {
    let accepted: Vec<String> = accepted.iter().map(|s| format!("{s:?}")).collect();
    format!(
        "mode = \"disabled\"\ncluster_secret = {secret:?}\naccepted_cluster_secrets = [{}]\n",
        accepted.join(", ")
    )
}

/// The status of a Raft vote request with `secret` to `addr` and nothing else: a node that
/// does not accept the secret answers 401; one that does goes on to refuse the request for
/// what it lacks (its identity headers, its body) with another status.
async fn vote_status(addr: SocketAddr, secret: &str) -> anyhow::Result<u16> {
    let resp = reqwest::Client::new()
        .post(format!("http://{addr}/raft/vote"))
        .header(registry_api::auth::SECRET_HEADER, secret)
        .send()
        .await?;
    Ok(resp.status().as_u16())
}

/// Every node is reloaded with its `[auth]` set to `section`, one after the other, each
/// waited for until it logged its `n`-th reload.
async fn reload_all(c: &ProcCluster, section: &str, n: usize) -> anyhow::Result<()> {
    for i in 0..3 {
        c.set_auth(i, section)?;
        c.reload(i)?;
        c.wait_log_count(i, RELOADED, n, WAIT).await?;
    }
    Ok(())
}

/// The three steps of a secret rotation (accept the new one everywhere; send it everywhere;
/// stop accepting the old one) with reporters running: no heartbeat fails or goes
/// unanswered, the observer sees no false `down`, the history checks, the old secret is
/// refused at the end and the new one accepted. Then a reload with a bad secret is refused
/// and changes nothing, and on one node tokens are turned on and one replaces another.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn secret_and_token_rotation_fail_no_heartbeat() -> anyhow::Result<()> {
    init_test_tracing();
    let c = ProcCluster::start(ProcSpec::default())?;
    c.wait_for_leader(WAIT).await?;
    let reporters = Reporters::start_spread(c.clients_rotated(), 8, Duration::from_millis(20));
    let observer = Observer::start(c.addrs(), "host-", Duration::from_millis(200)).await?;
    reporters.wait_acked(100, WAIT).await?;

    let steps = [
        secret_section(OLD, &[NEW]),
        secret_section(NEW, &[OLD]),
        secret_section(NEW, &[]),
    ];
    for (n, section) in steps.iter().enumerate() {
        reload_all(&c, section, n + 1).await?;
        let acked = reporters.history.acked();
        reporters.wait_acked(acked + 100, WAIT).await?;
    }
    for (i, addr) in c.addrs().into_iter().enumerate() {
        assert_eq!(
            vote_status(addr, OLD).await?,
            401,
            "node {i} refuses the old secret"
        );
        assert_ne!(
            vote_status(addr, NEW).await?,
            401,
            "node {i} accepts the new secret"
        );
    }

    let (observed, checked) = finish(&c, reporters, observer).await?;
    assert_eq!(
        (checked.refused, checked.unknown),
        (0, 0),
        "no heartbeat failed or went unanswered during the rotation: {checked}"
    );
    println!("secret rotation: 3 steps on 3 nodes with reporters running; {checked}; {observed}");

    // A reload that cannot be put in force keeps the settings in force.
    c.set_auth(0, &secret_section("short", &[]))?;
    c.reload(0)?;
    c.wait_log(0, "reload refused", WAIT).await?;
    assert_ne!(
        vote_status(c.addrs()[0], NEW).await?,
        401,
        "the new secret still works"
    );
    c.set_auth(0, &secret_section(NEW, &[]))?;

    // Tokens: node 1 starts asking for them, then one token replaces another.
    let token_file = c.config_path(1).with_file_name("tokens");
    let token = |t: &str| format!("admin {}\n", registry_api::auth::hash_token(t));
    let tokens_section =
        format!("mode = \"tokens\"\ntoken_file = {token_file:?}\ncluster_secret = {NEW:?}\n");
    let list = |token: Option<&str>| {
        let mut req = reqwest::Client::new().get(format!(
            "http://{}/v1/services?consistency=stale",
            c.addrs()[1]
        ));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move { anyhow::Ok(req.send().await?.status().as_u16()) }
    };
    std::fs::write(&token_file, token("first-admin-token"))?;
    c.set_auth(1, &tokens_section)?;
    c.reload(1)?;
    c.wait_log_count(1, RELOADED, 4, WAIT).await?;
    assert_eq!(
        list(None).await?,
        401,
        "tokens are required after the reload"
    );
    assert_eq!(list(Some("first-admin-token")).await?, 200);
    std::fs::write(&token_file, token("second-admin-token"))?;
    c.reload(1)?;
    c.wait_log_count(1, RELOADED, 5, WAIT).await?;
    assert_eq!(
        list(Some("first-admin-token")).await?,
        401,
        "the old token is gone"
    );
    assert_eq!(
        list(Some("second-admin-token")).await?,
        200,
        "the new one works"
    );

    println!("token rotation: 2 reloads; a refused reload kept the settings in force");
    Ok(())
}
