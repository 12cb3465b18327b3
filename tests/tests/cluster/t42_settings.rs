//! The cluster-wide liveness settings: the first leader writes its file's into the log,
//! `registryctl settings` shows and changes them for every node, reads judge by the log's
//! values rather than each node's file, and bad values get a 400 saying what is wrong.

use std::time::Duration;

use registry_api::wire::{Consistency, HeartbeatIn, SettingsIn, State};
use registry_tests::cli::{registryctl, registryctl_binary};
use registry_tests::inproc::{ClusterSpec, InProcCluster};
use registry_tests::{init_test_tracing, wait};

/// The log carries the first leader's settings (60 s, 0.55) on every node; a change through a
/// follower reaches every node, and a service silent for longer than the new
/// `service_down_time` (2 s, where every file still says 60 s) is listed `down` by every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn settings_are_the_logs_on_every_node_and_change_for_all() -> anyhow::Result<()> {
    init_test_tracing();
    tokio::task::spawn_blocking(registryctl_binary).await??;
    let mut c = InProcCluster::start(ClusterSpec::default()).await?;
    let leader = c.wait_for_leader(Duration::from_secs(10)).await?;
    let follower = (leader + 1) % 3;
    let eps: Vec<String> = c.configs.iter().map(|n| n.listen.to_string()).collect();
    for i in 0..3 {
        let s = wait::until("the log's settings", Duration::from_secs(10), || async {
            let s = c.client_of(i).settings().await.ok()?;
            (s.source == "log").then_some(s)
        })
        .await?;
        assert_eq!(
            (s.service_down_time, s.unhealthy_zone_threshold),
            (60.0, 0.55)
        );
    }
    let shown = registryctl(&eps[follower..=follower], &["settings"])
        .await?
        .ok()?;
    assert!(
        shown.stdout.contains("service_down_time: 60s"),
        "{}",
        shown.stdout
    );
    assert!(shown.stdout.contains("source: log"), "{}", shown.stdout);

    c.client_of(leader)
        .heartbeat(&[HeartbeatIn::new("quiet", "cinder-volume")])
        .await?;
    let changed = registryctl(
        &eps[follower..=follower],
        &[
            "settings",
            "--service-down-time",
            "2s",
            "--unhealthy-zone-threshold",
            "0.7",
        ],
    )
    .await?
    .ok()?;
    assert!(
        changed.stdout.contains("service_down_time: 2s"),
        "{}",
        changed.stdout
    );
    for i in 0..3 {
        wait::until(
            "node's settings changed",
            Duration::from_secs(10),
            || async {
                let s = c.client_of(i).settings().await.ok()?;
                (s.service_down_time == 2.0 && s.unhealthy_zone_threshold == 0.7).then_some(())
            },
        )
        .await?;
    }
    for i in 0..3 {
        wait::until(
            "quiet listed down after 2 s (every file says 60 s)",
            Duration::from_secs(20),
            || async {
                let list = c
                    .client_of(i)
                    .services(None, None, Consistency::Stale)
                    .await
                    .ok()?;
                let s = list.services.iter().find(|s| s.host == "quiet")?;
                (s.state == State::Down).then_some(())
            },
        )
        .await?;
    }
    for (body, what) in [
        (
            SettingsIn {
                service_down_time: Some(0.0),
                ..SettingsIn::default()
            },
            "service_down_time",
        ),
        (
            SettingsIn {
                unhealthy_zone_threshold: Some(1.5),
                ..SettingsIn::default()
            },
            "unhealthy_zone_threshold",
        ),
    ] {
        match c.client_of(follower).set_settings(&body).await {
            Err(registry_client::ClientError::Api {
                status: 400,
                message,
            }) => {
                assert!(message.contains(what), "{message}");
            }
            other => anyhow::bail!("{body:?} must be a 400, got {other:?}"),
        }
    }
    let s = c.client_of(leader).settings().await?;
    assert_eq!(s.service_down_time, 2.0, "a refused change changes nothing");
    c.shutdown().await?;
    Ok(())
}
