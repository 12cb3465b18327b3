//! `registryctl init-cluster`'s configs form a cluster: three node processes started from
//! them (with `--bootstrap`, as `first-start.env` asks) elect a leader, and `client.env` with
//! each printed token does what that token's role may, and no more; with `--tls` the nodes
//! talk to each other over mutual TLS and serve HTTPS with certificates of the validity asked.

use std::path::Path;
use std::time::Duration;

use registry_api::wire::HeartbeatIn;
use registry_client::{ClientTls, RegistryClient};
use registry_tests::init_test_tracing;

use crate::generated::{self, ctl, Generated};

/// A client of `client.env`'s endpoints (or of `only`), with its TLS files, sending `token`.
fn client_of_env(
    g: &Generated,
    token: &str,
    only: Option<String>,
) -> anyhow::Result<RegistryClient> {
    let var = |name: &str| {
        g.client_env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let endpoints: Vec<String> = var("REGISTRY_ENDPOINTS")
        .ok_or_else(|| anyhow::anyhow!("client.env has no REGISTRY_ENDPOINTS"))?
        .split(',')
        .map(str::to_string)
        .collect();
    let endpoints = only.map_or(endpoints, |e| vec![e]);
    let (ca, cert, key) = (
        var("REGISTRY_CACERT"),
        var("REGISTRY_CERT"),
        var("REGISTRY_KEY"),
    );
    let tls = match &ca {
        Some(_) => Some(ClientTls::from_files(
            ca.as_deref().map(Path::new),
            cert.as_deref().map(Path::new),
            key.as_deref().map(Path::new),
        )?),
        None => None,
    };
    Ok(
        RegistryClient::with_tls(endpoints, Duration::from_secs(10), tls.as_ref())?
            .with_token(token),
    )
}

/// Each role through `client.env`: the reporter token heartbeats (through every node) but
/// cannot list; the reader lists and shows the cluster but cannot disable; no token is
/// refused; the admin disables, recorded as made by `token:admin`. Answers a line saying what was checked.
async fn roles_through_client_env(g: &Generated) -> anyhow::Result<String> {
    let t = &g.tokens;
    for (n, node) in g.cluster.nodes.iter().enumerate() {
        client_of_env(g, &t.reporter, Some(node.addr.to_string()))?
            .heartbeat(&[HeartbeatIn::new(format!("init-host-{n}"), "cinder-volume")])
            .await?;
    }
    client_of_env(g, &t.reporter, None)?
        .heartbeat(&[HeartbeatIn::new("init-host-0", "cinder-volume")])
        .await?;

    let list = ctl(&g.env_with(Some(&t.reader)), &["service-list"])
        .await?
        .ok()?;
    for n in 0..3 {
        anyhow::ensure!(
            list.stdout.contains(&format!("init-host-{n}")),
            "the reader lists init-host-{n}:\n{}",
            list.stdout
        );
    }
    let status = ctl(&g.env_with(Some(&t.reader)), &["cluster", "status"])
        .await?
        .ok()?;
    for node in &g.cluster.nodes {
        anyhow::ensure!(
            status.stdout.contains(&node.addr.to_string()),
            "cluster status shows node {} at {}:\n{}",
            node.id,
            node.addr,
            status.stdout
        );
    }
    let refused = |out: &registry_tests::cli::CtlOutput, code: &str| {
        out.code == Some(1) && out.stderr.contains(code)
    };
    let out = ctl(&g.env_with(Some(&t.reporter)), &["service-list"]).await?;
    anyhow::ensure!(refused(&out, "403"), "a reporter cannot list: {out:?}");
    let disable = [
        "service-disable",
        "init-host-1",
        "cinder-volume",
        "--reason",
        "init test",
    ];
    let out = ctl(&g.env_with(Some(&t.reader)), &disable).await?;
    anyhow::ensure!(refused(&out, "403"), "a reader cannot disable: {out:?}");
    let out = ctl(&g.env_with(None), &["service-list"]).await?;
    anyhow::ensure!(refused(&out, "401"), "no token, no list: {out:?}");
    ctl(&g.env_with(Some(&t.admin)), &disable).await?.ok()?;
    let list = ctl(
        &g.env_with(Some(&t.reader)),
        &["service-list", "--detailed", "--host", "init-host-1"],
    )
    .await?
    .ok()?;
    anyhow::ensure!(list.stdout.contains("disabled"), "{}", list.stdout);
    anyhow::ensure!(
        list.stdout.contains("token:admin"),
        "the disable is recorded as made by the admin token's name: {}",
        list.stdout
    );
    Ok(
        "3 heartbeats through 3 nodes, list, status, 3 refusals, a disable recorded as token:admin"
            .into(),
    )
}

/// Without TLS: the generated configs form a cluster and the tokens work by role.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_configs_form_a_cluster() -> anyhow::Result<()> {
    init_test_tracing();
    let g = generated::start(&[]).await?;
    let what = roles_through_client_env(&g).await;
    let what = what.map_err(|e| anyhow::anyhow!("{e:#}\n{}", g.cluster.log_tails(30)))?;
    println!("plain init-cluster: {what}");
    Ok(())
}

/// With `--tls --cert-days 30`: the nodes form their cluster over mutual TLS (a bootstrap
/// asks every peer over HTTPS with its certificate), `client.env` names the CA and client
/// certificate, the tokens work by role over HTTPS, and every node's `/metrics` says its
/// certificate and the CA expire in 30 days.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_tls_configs_form_a_cluster() -> anyhow::Result<()> {
    init_test_tracing();
    let g = generated::start(&["--tls", "--cert-days", "30"]).await?;
    let what = async {
        let what = roles_through_client_env(&g).await?;
        for i in 0..3 {
            let m = g.cluster.metrics(i).await?;
            for certificate in ["node", "ca"] {
                let left = m
                    .get(
                        "registry_tls_certificate_expires_in_seconds",
                        &[("certificate", certificate)],
                    )
                    .ok_or_else(|| anyhow::anyhow!("node {}: no {certificate} expiry", i + 1))?;
                let want = 30.0 * 86400.0;
                anyhow::ensure!(
                    (left - want).abs() < 600.0,
                    "node {}: the {certificate} certificate expires in {left} s, not about {want}",
                    i + 1
                );
            }
        }
        anyhow::Ok(what)
    }
    .await
    .map_err(|e| anyhow::anyhow!("{e:#}\n{}", g.cluster.log_tails(30)))?;
    println!("TLS init-cluster: {what}; 6 certificate expiries at 30 days");
    Ok(())
}
