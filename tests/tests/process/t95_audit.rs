//! The audit trail on a running cluster: every administrative change records who made it,
//! on every node, whichever node it was sent to, and the leader writes an `audit` line.

use std::time::Duration;

use registry_api::auth::hash_token;
use registry_api::wire::{Consistency, HeartbeatIn, ServiceAction};
use registry_tests::cli::{parse_table, registryctl};
use registry_tests::init_test_tracing;
use registry_tests::procs::{ProcCluster, ProcSpec};

const SECRET: &str = "test-cluster-secret-0123";
const ALICE: &str = "admin-token-of-alice";
const UNNAMED: &str = "an-admin-token-without-a-name";
const RELOADED: &str = "authentication settings reloaded";
const WAIT: Duration = Duration::from_secs(20);
const HOST: &str = "audit-host";
const BINARY: &str = "cinder-volume";

/// Waits until every node lists the audited service as changed by `by`.
async fn wait_modified_by(c: &ProcCluster, by: &str, token: &str) -> anyhow::Result<()> {
    for i in 0..3 {
        let client = c.client_of(i).with_token(token);
        registry_tests::wait::until(&format!("node {i} lists {by}"), WAIT, || async {
            let out = client
                .services(Some(HOST), Some(BINARY), Consistency::Stale)
                .await
                .ok()?;
            let s = out.services.first()?;
            (s.modified_by.as_deref() == Some(by)).then_some(())
        })
        .await?;
    }
    Ok(())
}

/// Changes made anonymously (tokens disabled), with a named token through a follower (so
/// forwarded to the leader), and with an unnamed token through the leader: each is listed
/// with who made it on all three nodes and in `registryctl service-list --detailed`, and
/// logged as an `audit` line by the leader; the Cinder view shows no such field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_records_who_made_each_change() -> anyhow::Result<()> {
    init_test_tracing();
    let c = ProcCluster::start(ProcSpec::default())?;
    let leader = c.wait_for_leader(WAIT).await?;
    let follower = (leader + 1) % 3;
    c.client_of(follower)
        .heartbeat(&[HeartbeatIn::new(HOST, BINARY)])
        .await?;

    c.client_of(follower)
        .action(ServiceAction::Disable, HOST, Some(BINARY), Some("audit"))
        .await?;
    wait_modified_by(&c, "anonymous", "").await?;

    let tokens = c.config_path(0).with_file_name("audit-tokens");
    std::fs::write(
        &tokens,
        format!(
            "admin {} ops alice\nadmin {}\n",
            hash_token(ALICE),
            hash_token(UNNAMED)
        ),
    )?;
    let section =
        format!("mode = \"tokens\"\ntoken_file = {tokens:?}\ncluster_secret = {SECRET:?}\n");
    for i in 0..3 {
        c.set_auth(i, &section)?;
        c.reload(i)?;
        c.wait_log(i, RELOADED, WAIT).await?;
    }

    c.client_of(follower)
        .with_token(ALICE)
        .action(ServiceAction::Enable, HOST, Some(BINARY), None)
        .await?;
    wait_modified_by(&c, "token:ops alice", ALICE).await?;
    let line = c.wait_log(leader, "token:ops alice", WAIT).await?;
    assert!(
        line.contains("audit") && line.contains("enable cinder-volume on host audit-host"),
        "the leader's audit line says who did what: {line}"
    );

    c.client_of(leader)
        .with_token(UNNAMED)
        .action(ServiceAction::ForceDown, HOST, Some(BINARY), None)
        .await?;
    let unnamed = format!("token:sha256:{}", &hash_token(UNNAMED)[..12]);
    wait_modified_by(&c, &unnamed, UNNAMED).await?;
    let line = c.wait_log(leader, &unnamed, WAIT).await?;
    assert!(line.contains("force-down"), "{line}");

    let endpoints: Vec<String> = c.addrs().iter().map(|a| a.to_string()).collect();
    let out = registryctl(
        &endpoints,
        &[
            "--token",
            ALICE,
            "service-list",
            "--detailed",
            "--host",
            HOST,
        ],
    )
    .await?
    .ok()?;
    let rows = parse_table(&out.stdout);
    assert_eq!(
        rows.first()
            .and_then(|r| r.get("Modified By"))
            .map(String::as_str),
        Some(unnamed.as_str()),
        "{}",
        out.stdout
    );

    let cinder: serde_json::Value = reqwest::Client::new()
        .get(format!(
            "http://{}/v3/admin/os-services",
            c.addrs()[follower]
        ))
        .header("X-Auth-Token", ALICE)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let listed = cinder["services"]
        .as_array()
        .and_then(|s| s.first())
        .ok_or_else(|| anyhow::anyhow!("no service in the Cinder list: {cinder}"))?;
    assert!(
        listed.get("modified_by").is_none() && listed.get("host").is_some(),
        "the Cinder view stays Cinder's: {listed}"
    );
    println!("audit: 3 changes (anonymous, named token via a follower, unnamed token) recorded on 3 nodes and logged by the leader");
    Ok(())
}
