//! TLS: a cluster whose nodes serve HTTPS only and talk to each other over mutual TLS
//! (certificates of a throwaway CA, see `registry_tests::tls`).

use std::time::Duration;

use registry_api::auth::SECRET_HEADER;
use registry_api::transport::rpc;
use registry_api::wire::{HeartbeatIn, ServiceAction};
use registry_client::wire::Consistency;
use registry_client::{ClientTls, RegistryClient};
use registry_node::RaftSettings;
use registry_tests::cli::{parse_table, registryctl};
use registry_tests::init_test_tracing;
use registry_tests::inproc::{ClusterSpec, InProcCluster};
use registry_tests::tls::{CertFiles, TestPki};
use registry_tests::wait::until;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(20);
/// The secret of [`ClusterSpec::default`].
const SECRET: &str = "test-cluster-secret-0123";

/// A TLS cluster of `nodes` with `raft` settings.
async fn tls_cluster(nodes: usize, raft: RaftSettings) -> anyhow::Result<InProcCluster> {
    InProcCluster::start(ClusterSpec {
        nodes,
        raft,
        tls: Some(TestPki::new(nodes)?),
        ..ClusterSpec::default()
    })
    .await
}

/// The PKI of a TLS cluster.
fn pki(c: &InProcCluster) -> &TestPki {
    c.spec_tls().expect("a TLS cluster")
}

/// Whether every running node lists `host` (a stale read:
/// what the node itself applied).
async fn listed_everywhere(c: &InProcCluster, host: &str) -> Option<()> {
    for (i, node) in c.nodes.iter().enumerate() {
        if node.is_none() {
            continue;
        }
        let out = c
            .client_of(i)
            .services(Some(host), None, Consistency::Stale)
            .await
            .ok()?;
        if out.services.is_empty() {
            return None;
        }
    }
    Some(())
}

/// Over TLS only, a cluster forms, replicates heartbeats, forwards a write from a
/// follower, installs a snapshot on a node that was stopped while the others snapshotted and
/// purged their logs, and elects a new leader that acknowledges writes once the old one is
/// stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_cluster_replicates_forwards_snapshots_and_fails_over() -> anyhow::Result<()> {
    init_test_tracing();
    let mut c = tls_cluster(
        3,
        RaftSettings {
            snapshot_logs_since_last: 50,
            max_in_snapshot_log_to_keep: 0,
            ..RaftSettings::default()
        },
    )
    .await?;
    for (i, config) in c.configs.iter().enumerate() {
        anyhow::ensure!(config.tls.is_some(), "node {} has TLS", i + 1);
        let endpoints = c.client_of(i).endpoints().to_vec();
        anyhow::ensure!(
            endpoints.iter().all(|e| e.starts_with("https://")),
            "the test client talks HTTPS: {endpoints:?}"
        );
    }
    let leader = c.wait_for_leader(WAIT).await?;
    let follower = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    println!("formed over TLS: node {} leads", leader + 1);

    c.client_of(leader)
        .heartbeat(&[HeartbeatIn::new("tls-host-a", "cinder-volume")])
        .await?;
    until("every node lists tls-host-a", WAIT, || {
        listed_everywhere(&c, "tls-host-a")
    })
    .await?;
    println!("a heartbeat written on the leader is listed by all 3 nodes");

    let out = c
        .client_of(follower)
        .heartbeat(&[HeartbeatIn::new("tls-host-b", "cinder-volume")])
        .await?;
    anyhow::ensure!(
        out.services.len() == 1,
        "the follower forwarded the heartbeat and answered the committed record: {out:?}"
    );
    until("every node lists tls-host-b", WAIT, || {
        listed_everywhere(&c, "tls-host-b")
    })
    .await?;
    println!(
        "a heartbeat sent to follower node {} was forwarded to the leader and replicated",
        follower + 1
    );

    // Snapshot catch-up: `other` misses entries that the leader then compacts away.
    let gone_past = c
        .client_of(other)
        .cluster()
        .await?
        .last_log_index
        .unwrap_or(0);
    c.stop_node(other).await?;
    let writer = c.client_of(leader);
    for i in 0..120 {
        writer
            .heartbeat(&[HeartbeatIn::new(format!("tls-bulk-{i}"), "cinder-backup")])
            .await?;
    }
    writer.trigger_snapshot().await?;
    let purged = until(
        "the leader purged its log past the stopped node",
        WAIT,
        || async {
            let l = writer.cluster().await.ok()?;
            l.purged_index.filter(|p| *p > gone_past)
        },
    )
    .await?;
    c.start_node(other).await?;
    let installed = until(
        "the restarted node installed a snapshot past its old log",
        WAIT,
        || async {
            let o = c.client_of(other).cluster().await.ok()?;
            o.snapshot_index.filter(|s| *s > gone_past)
        },
    )
    .await?;
    until(
        "the restarted node lists the last bulk record",
        WAIT,
        || async {
            let out = c
                .client_of(other)
                .services(Some("tls-bulk-119"), None, Consistency::Stale)
                .await
                .ok()?;
            (!out.services.is_empty()).then_some(())
        },
    )
    .await?;
    println!(
        "node {} stopped at log index {gone_past}, the leader purged to {purged:?}; on restart \
         it installed a snapshot at index {installed} over TLS and lists the records",
        other + 1
    );

    // Failover: stop the leader; the others elect a new one and acknowledge writes.
    c.stop_node(leader).await?;
    let new_leader = c.wait_for_leader(WAIT).await?;
    anyhow::ensure!(new_leader != leader, "a new leader was elected");
    let out = until(
        "a write is acknowledged after the failover",
        WAIT,
        || async {
            c.client_of(follower)
                .heartbeat(&[HeartbeatIn::new("tls-host-c", "cinder-volume")])
                .await
                .ok()
        },
    )
    .await?;
    anyhow::ensure!(
        out.services.len() == 1,
        "the write was acknowledged: {out:?}"
    );
    println!(
        "node {} stopped; node {} leads and acknowledged a write sent to node {}",
        leader + 1,
        new_leader + 1,
        follower + 1
    );
    c.shutdown().await
}

/// An HTTPS client trusting the cluster CA, presenting `identity` if any.
fn peer_client(pki: &TestPki, identity: Option<&CertFiles>) -> anyhow::Result<reqwest::Client> {
    let ca = std::fs::read(pki.ca())?;
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca)?)
        .timeout(Duration::from_secs(5));
    if let Some(files) = identity {
        let mut pem = std::fs::read(&files.cert)?;
        pem.extend(std::fs::read(&files.key)?);
        b = b.identity(reqwest::Identity::from_pem(&pem)?);
    }
    Ok(b.build()?)
}

/// An error and its sources, as one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// What a node answered a Raft RPC: its status and body, or the transport error.
async fn rpc_answer(
    http: &reqwest::Client,
    url: &str,
    secret: &str,
) -> Result<(u16, String), String> {
    let resp = http
        .post(url)
        .header(SECRET_HEADER, secret)
        .header("content-type", rpc::CONTENT_TYPE)
        .body(vec![0u8; 4])
        .send()
        .await
        .map_err(|e| chain(&e))?;
    let status = resp.status().as_u16();
    Ok((status, resp.text().await.unwrap_or_default()))
}

/// On a TLS cluster, a peer's Raft RPCs (`/raft/vote`, `/raft/append`) are refused unless
/// it presents a client certificate the cluster CA signed *and* the cluster secret: no
/// certificate is 401 even with the secret; a certificate of another CA fails the
/// handshake; the right certificate with a wrong secret is 401. With both, the request
/// passes the gate (and fails only on its made-up body).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn peers_need_a_cluster_certificate_and_the_secret() -> anyhow::Result<()> {
    init_test_tracing();
    let c = tls_cluster(3, RaftSettings::default()).await?;
    c.wait_for_leader(WAIT).await?;
    let pki = pki(&c);
    let target = c.configs[1].listen;
    let none = peer_client(pki, None)?;
    let node = peer_client(pki, Some(&pki.node(1)))?;
    let foreign = peer_client(pki, Some(&pki.other_client()))?;
    let mut checked = 0;
    for path in ["/raft/vote", "/raft/append"] {
        let url = format!("https://{target}{path}");
        let (status, body) = rpc_answer(&none, &url, SECRET)
            .await
            .map_err(anyhow::Error::msg)?;
        anyhow::ensure!(
            status == 401 && body.contains("client certificate"),
            "{path} without a client certificate, with the secret: want 401 naming the \
             certificate, got {status} {body}"
        );
        println!("{path}: no client certificate, right secret -> {status} {body}");

        let refused = rpc_answer(&foreign, &url, SECRET).await;
        anyhow::ensure!(
            refused.is_err(),
            "{path} with a certificate of another CA: want the handshake refused, got {refused:?}"
        );
        println!(
            "{path}: certificate of another CA, right secret -> no answer ({})",
            refused.err().unwrap_or_default()
        );

        let (status, body) = rpc_answer(&node, &url, "not-the-cluster-secret")
            .await
            .map_err(anyhow::Error::msg)?;
        anyhow::ensure!(
            status == 401 && body.contains("secret"),
            "{path} with the node's certificate and a wrong secret: want 401, got {status} {body}"
        );
        println!("{path}: node certificate, wrong secret -> {status} {body}");

        let (status, body) = rpc_answer(&node, &url, SECRET)
            .await
            .map_err(anyhow::Error::msg)?;
        anyhow::ensure!(
            status != 401,
            "{path} with the node's certificate and the secret passes the gate: got {status} {body}"
        );
        println!("{path}: node certificate, right secret -> {status} (past the gate)");
        checked += 4;
    }
    anyhow::ensure!(checked == 8, "checked every case on both routes");
    println!("{checked} peer credential cases checked");
    let mut c = c;
    c.shutdown().await
}

/// Plain HTTP to a TLS node gets no HTTP answer (the connection is closed, or answered
/// with a TLS alert), and a client that connects and never finishes the handshake is
/// dropped after the header timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_gets_no_http_answer() -> anyhow::Result<()> {
    init_test_tracing();
    let header_timeout = Duration::from_millis(500);
    let mut c = InProcCluster::start(ClusterSpec {
        nodes: 1,
        tls: Some(TestPki::new(1)?),
        http_header_timeout: header_timeout,
        ..ClusterSpec::default()
    })
    .await?;
    c.wait_for_leader(WAIT).await?;
    let addr = c.configs[0].listen;

    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET /health HTTP/1.1\r\nhost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut got)).await;
    anyhow::ensure!(read.is_ok(), "the node closed the plain HTTP connection");
    anyhow::ensure!(
        !got.starts_with(b"HTTP/"),
        "plain HTTP got an HTTP answer: {}",
        String::from_utf8_lossy(&got)
    );
    println!(
        "plain HTTP to the TLS node: {} bytes back, none an HTTP status line ({:02x?}), then closed",
        got.len(),
        &got[..got.len().min(7)]
    );

    let started = std::time::Instant::now();
    let mut silent = TcpStream::connect(addr).await?;
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buf)).await;
    let after = started.elapsed();
    anyhow::ensure!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "a silent client is dropped: {closed:?}"
    );
    anyhow::ensure!(
        after >= header_timeout && after < header_timeout * 6,
        "dropped after about the header timeout ({header_timeout:?}): {after:?}"
    );
    println!("a client that never started the handshake was dropped after {after:?}");

    // The node still serves HTTPS.
    c.client_of(0).cluster().await?;
    c.shutdown().await
}

/// `registryctl --cacert` lists services over HTTPS; the client library (and a reporter)
/// presents a client certificate with `--cert`/`--key` to a node that requires one; with
/// client tokens disabled, a change it makes is recorded as made by its certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn registryctl_lists_over_https() -> anyhow::Result<()> {
    init_test_tracing();
    let mut pki = TestPki::new(3)?;
    pki.require_client_cert = true;
    let mut c = InProcCluster::start(ClusterSpec {
        tls: Some(pki.clone()),
        ..ClusterSpec::default()
    })
    .await?;
    let leader = c.wait_for_leader(WAIT).await?;
    let client_files = pki.client();
    let tls = ClientTls::from_files(
        Some(&pki.ca()),
        Some(&client_files.cert),
        Some(&client_files.key),
    )?;
    let endpoints: Vec<String> = c.configs.iter().map(|n| n.listen.to_string()).collect();
    let client = RegistryClient::with_tls(endpoints.clone(), Duration::from_secs(10), Some(&tls))?;
    client
        .heartbeat(&[HeartbeatIn::new("tls-ctl-host", "cinder-volume")])
        .await?;
    println!(
        "a client with the CA and a client certificate wrote through node {} (client \
         certificates required)",
        leader + 1
    );
    let disabled = client
        .action(
            ServiceAction::Disable,
            "tls-ctl-host",
            Some("cinder-volume"),
            None,
        )
        .await?;
    let by = disabled
        .services
        .first()
        .and_then(|s| s.modified_by.clone());
    anyhow::ensure!(
        by.as_deref() == Some("cert:registry test client"),
        "with client tokens disabled, a change is recorded as made by the client \
         certificate's subject: {by:?}"
    );

    let ca = pki.ca().display().to_string();
    let cert = client_files.cert.display().to_string();
    let key = client_files.key.display().to_string();
    let out = registryctl(
        &endpoints,
        &[
            "--cacert",
            &ca,
            "--cert",
            &cert,
            "--key",
            &key,
            "service-list",
        ],
    )
    .await?
    .ok()?;
    let rows = parse_table(&out.stdout);
    anyhow::ensure!(
        rows.iter()
            .any(|r| r.get("Host").map(String::as_str) == Some("tls-ctl-host")),
        "registryctl --cacert lists the service:\n{}",
        out.stdout
    );
    println!(
        "registryctl --cacert --cert --key service-list: {} row(s)",
        rows.len()
    );

    let reporter = registry_client::Reporter::new(registry_client::ReporterConfig {
        interval: Duration::from_millis(100),
        tls: Some(tls.clone()),
        ..registry_client::ReporterConfig::new(endpoints.clone(), "tls-reporter", "cinder-volume")
    })?
    .spawn(std::future::pending());
    let stats = reporter
        .wait_for("three acknowledged heartbeats over HTTPS", WAIT, |s| {
            s.acknowledged >= 3
        })
        .await?;
    println!(
        "a reporter with the CA and a client certificate: {} heartbeats acknowledged over HTTPS",
        stats.acknowledged
    );

    let without = registryctl(&endpoints, &["--cacert", &ca, "service-list"]).await?;
    anyhow::ensure!(
        without.code != Some(0),
        "without a client certificate, a node that requires one refuses: {without:?}"
    );
    println!(
        "registryctl --cacert without a client certificate is refused (exit {:?})",
        without.code
    );
    c.shutdown().await
}

/// The certificate node index `i` of `c` serves now (DER), as a client trusting the CA sees it.
async fn served_certificate(c: &InProcCluster, i: usize) -> anyhow::Result<Vec<u8>> {
    registry_tests::tls::served_certificate(c.configs[i].listen, &pki(c).ca()).await
}

/// A reload (what SIGHUP does) serves a renewed certificate from the next handshake on; a
/// reload from a broken file keeps the certificate in use, and the node goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_reload_keeps_the_old_one_on_a_bad_file() -> anyhow::Result<()> {
    init_test_tracing();
    let mut c = tls_cluster(1, RaftSettings::default()).await?;
    c.wait_for_leader(WAIT).await?;
    let first = served_certificate(&c, 0).await?;

    let renewed = pki(&c).reissue_node(1)?;
    let renewed_der = {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::CertificateDer::from_pem_file(&renewed.cert)?
            .as_ref()
            .to_vec()
    };
    anyhow::ensure!(renewed_der != first, "the renewal is a new certificate");
    let still_first = served_certificate(&c, 0).await?;
    anyhow::ensure!(still_first == first, "no reload, no change");
    c.node(0).reload_tls()?;
    let second = served_certificate(&c, 0).await?;
    anyhow::ensure!(
        second == renewed_der,
        "after a reload the renewed certificate is served"
    );
    println!("reload: the renewed certificate is served from the next handshake on");

    std::fs::write(&renewed.cert, b"-----BEGIN CERTIFICATE-----\nnot base64\n")?;
    let err = c
        .node(0)
        .reload_tls()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    let third = served_certificate(&c, 0).await?;
    anyhow::ensure!(
        third == renewed_der,
        "a reload from a broken file keeps the certificate in use"
    );
    anyhow::ensure!(
        err.contains("tls.cert") && err.contains(&renewed.cert.display().to_string()),
        "the error names the file: {err}"
    );
    c.client_of(0).cluster().await?;
    println!("reload from a broken file kept the certificate in use; it said: {err}");
    c.shutdown().await
}

/// The cluster CA rotated on a running cluster, by reloads only: a bundle of the old and the
/// next CA, node certificates from the next one, then the next CA alone. Each node then
/// serves its new certificate; a follower restarted afterwards (trusting the next CA alone)
/// catches up from the leader, which must present its new certificate and trust the
/// follower's; a write through it is forwarded to the leader, which must trust its new one;
/// and a client certificate of the old CA is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cluster_ca_rotates_by_reloads() -> anyhow::Result<()> {
    init_test_tracing();
    let mut c = tls_cluster(3, RaftSettings::default()).await?;
    let leader = c.wait_for_leader(WAIT).await?;
    let beat = |host: &str| [HeartbeatIn::new(host, "cinder-volume")];
    c.client_of(leader)
        .heartbeat(&beat("rotation-before"))
        .await?;
    let reload_all = |c: &InProcCluster| -> anyhow::Result<()> {
        for i in 0..3 {
            c.node(i).reload_tls()?;
        }
        Ok(())
    };

    let next = pki(&c).next_ca()?;
    let first = pki(&c).first_ca_pem();
    pki(&c).write_ca(&[&first, &next.pem()])?;
    reload_all(&c)?;
    for id in 1..=3 {
        pki(&c).reissue_node_with(id, &next)?;
    }
    reload_all(&c)?;
    pki(&c).write_ca(&[&next.pem()])?;
    reload_all(&c)?;
    for i in 0..3 {
        served_certificate(&c, i).await?;
    }
    println!("CA rotated by three reloads on 3 nodes; each serves a certificate of the next CA");

    let follower = (leader + 1) % 3;
    c.stop_node(follower).await?;
    c.client_of(leader)
        .heartbeat(&beat("rotation-after"))
        .await?;
    let index = c
        .last_applied(leader)
        .ok_or_else(|| anyhow::anyhow!("the leader applied"))?;
    c.start_node(follower).await?;
    c.wait_applied(index, WAIT).await?;
    c.client_of(follower)
        .heartbeat(&beat("rotation-forwarded"))
        .await?;
    registry_tests::wait::until("every node lists the forwarded write", WAIT, || {
        listed_everywhere(&c, "rotation-forwarded")
    })
    .await?;
    println!(
        "a follower restarted on the next CA caught up to index {index} and forwarded a write"
    );

    let old = pki(&c).client();
    let tls = ClientTls::from_files(Some(&pki(&c).ca()), Some(&old.cert), Some(&old.key))?;
    let endpoints = vec![c.configs[leader].listen.to_string()];
    let refused = RegistryClient::with_tls(endpoints, Duration::from_secs(5), Some(&tls))?
        .cluster()
        .await;
    anyhow::ensure!(
        refused.is_err(),
        "a client certificate of the old CA is refused once it is no longer trusted"
    );
    c.shutdown().await
}

/// The real python-cinderclient lists services over HTTPS through a follower, trusting the
/// cluster CA with `--os-cacert`; without it, it refuses the node's certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cinderclient_lists_over_https() -> anyhow::Result<()> {
    init_test_tracing();
    let (bin, version) = crate::cinderclient::cinder_cli().await?;
    let mut c = tls_cluster(3, RaftSettings::default()).await?;
    let leader = c.wait_for_leader(WAIT).await?;
    let follower = (leader + 1) % 3;
    c.client_of(leader)
        .heartbeat(&[HeartbeatIn::new("tls-cinder@lvm", "cinder-volume")])
        .await?;
    let endpoint = format!("https://{}/v3", c.configs[follower].listen);
    let ca = pki(&c).ca();
    let cinder = |cacert: Option<&std::path::Path>| {
        let mut cmd = tokio::process::Command::new(&bin);
        cmd.args(["--os-auth-type", "noauth", "--os-project-id", "admin"])
            .args(["--os-endpoint", &endpoint]);
        if let Some(ca) = cacert {
            cmd.arg("--os-cacert").arg(ca);
        }
        cmd.arg("service-list")
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("no_proxy", "127.0.0.1,localhost")
            .env_remove("REQUESTS_CA_BUNDLE")
            .env_remove("SSL_CERT_FILE");
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy().into_owned();
            if key.starts_with("OS_") || key.starts_with("CINDER") {
                cmd.env_remove(key);
            }
        }
        cmd
    };
    let (ok, out, err) =
        crate::cinderclient::run(&mut cinder(Some(&ca)), Duration::from_secs(120)).await?;
    anyhow::ensure!(
        ok,
        "cinder --os-cacert service-list over HTTPS failed:\n{out}\n{err}"
    );
    anyhow::ensure!(
        out.contains("tls-cinder@lvm") && out.contains("cinder-volume"),
        "cinder lists the service over HTTPS:\n{out}"
    );
    println!(
        "python-cinderclient {version} --os-cacert service-list over HTTPS through follower \
         node {}: lists tls-cinder@lvm",
        follower + 1
    );
    let (ok, out, err) =
        crate::cinderclient::run(&mut cinder(None), Duration::from_secs(120)).await?;
    anyhow::ensure!(
        !ok,
        "without --os-cacert the node's certificate is not trusted:\n{out}\n{err}"
    );
    println!(
        "without --os-cacert cinder fails: {}",
        err.lines().last().unwrap_or_default()
    );
    c.shutdown().await
}
