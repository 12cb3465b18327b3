//! A process-level cluster over TLS: HTTPS only on every node, mutual TLS between them.
//! The leader is SIGKILLed while reporters heartbeat through every node, and it comes back
//! behind a purged log, so it catches up by a snapshot sent over TLS. And every node's
//! certificate is renewed by SIGHUP with reporters running.

use std::path::PathBuf;
use std::time::Duration;

use registry_tests::history::Reporters;
use registry_tests::init_test_tracing;
use registry_tests::observer::Observer;
use registry_tests::procs::{with_logs, ProcCluster, ProcSpec};
use registry_tests::scenario::finish;
use registry_tests::tls::served_certificate;

/// The load both scenarios run under, over TLS: 6 reporters spread over every node and an
/// observer of every node, both trusting the cluster CA (returned); answers once 50
/// heartbeats were acknowledged.
async fn tls_load(c: &ProcCluster) -> anyhow::Result<(PathBuf, Reporters, Observer)> {
    let ca = c
        .ca()
        .ok_or_else(|| anyhow::anyhow!("a TLS cluster has a CA"))?;
    let reporters = Reporters::start_spread_tls(c.clients_rotated(), 6, Duration::ZERO, &ca)?;
    let observer = Observer::start_tls(c.addrs(), "host-", Duration::from_millis(200), &ca).await?;
    reporters.wait_acked(50, Duration::from_secs(30)).await?;
    Ok((ca, reporters, observer))
}

/// Over TLS: reporters through every node (followers forward to the leader over mutual TLS);
/// the leader SIGKILLed, a new one elected and taking heartbeats; while the old leader is
/// down the new one snapshots and purges past it, so on restart it installs a snapshot; the
/// history checks, the observer sees no false `down`, every node's state is identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_kill_and_snapshot_catch_up_over_tls() -> anyhow::Result<()> {
    init_test_tracing();
    let mut c = ProcCluster::start(ProcSpec {
        tls: true,
        snapshot_logs_since_last: 100,
        max_in_snapshot_log_to_keep: 0,
        ..ProcSpec::default()
    })?;
    with_logs(&mut c, async |c| {
        let leader = c.wait_for_leader(Duration::from_secs(30)).await?;
        let (_, reporters, observer) = tls_load(c).await?;
        let before = c.client_of(leader).cluster().await?;

        c.kill_node(leader)?;
        let new_leader = c.wait_for_leader(Duration::from_secs(15)).await?;
        assert_ne!(new_leader, leader, "a killed node cannot lead");
        let acked = reporters.history.acked();
        reporters
            .wait_acked(acked + 600, Duration::from_secs(60))
            .await?;
        let gone_past = before.last_log_index.unwrap_or(0);
        c.wait_purged_past(new_leader, gone_past, Duration::from_secs(30))
            .await?;

        // The old leader can only catch up by installing a snapshot, sent over TLS.
        c.start_node(leader)?;
        let snapshot = c
            .wait_snapshot_past(leader, gone_past, Duration::from_secs(30))
            .await?;
        let acked = reporters.history.acked();
        reporters
            .wait_acked(acked + 50, Duration::from_secs(30))
            .await?;
        let (observed, checked) = finish(c, reporters, observer).await?;
        println!(
            "over TLS: node {} killed while leading (log at {gone_past}), node {} led; the \
             killed node came back and installed a snapshot at {snapshot}; {checked}; {observed}",
            leader + 1,
            new_leader + 1
        );
        Ok(())
    })
    .await
}

/// Every node's certificate renewed while reporters heartbeat through every node over TLS:
/// new files, one SIGHUP per node, waited for in its log. Each node then serves its renewed
/// certificate, no heartbeat failed or went unanswered, and the observer saw no false `down`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn certificates_renew_by_sighup_without_a_failed_heartbeat() -> anyhow::Result<()> {
    init_test_tracing();
    let mut c = ProcCluster::start(ProcSpec {
        tls: true,
        ..ProcSpec::default()
    })?;
    with_logs(&mut c, async |c| {
        c.wait_for_leader(Duration::from_secs(30)).await?;
        let (ca, reporters, observer) = tls_load(c).await?;
        let pki = c
            .pki()
            .ok_or_else(|| anyhow::anyhow!("a TLS cluster has its certificates"))?
            .clone();
        for (i, addr) in c.addrs().into_iter().enumerate() {
            let before = served_certificate(addr, &ca).await?;
            pki.reissue_node(i as u64 + 1)?;
            c.reload(i)?;
            c.wait_log(i, "reloaded the TLS certificate and CA", Duration::from_secs(20))
                .await?;
            let after = served_certificate(addr, &ca).await?;
            anyhow::ensure!(after != before, "node {} serves its renewed certificate", i + 1);
            let acked = reporters.history.acked();
            reporters
                .wait_acked(acked + 100, Duration::from_secs(30))
                .await?;
        }
        let (observed, checked) = finish(c, reporters, observer).await?;
        anyhow::ensure!(
            (checked.refused, checked.unknown) == (0, 0),
            "no heartbeat failed or went unanswered while certificates were renewed: {checked}"
        );
        println!("certificates of 3 nodes renewed by SIGHUP with 6 reporters over TLS; {checked}; {observed}");
        Ok(())
    })
    .await
}
