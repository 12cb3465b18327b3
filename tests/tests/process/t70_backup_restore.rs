//! Backup and restore, as an operator does them: `registryctl snapshot save` on a running
//! cluster, `registryctl snapshot status`, then every node's data directory replaced by
//! `registry-node restore` from the same file.
//!
//! Invariants: the backup checks itself (a damaged copy is refused by `status` and by
//! `restore`, which then leaves the data directory untouched); the restored nodes form a
//! **new** cluster (a new cluster id) holding every record with its count, disabled state,
//! reason and flags; services that were up at the save are up after the restore, although the
//! cluster was down for longer than `service_down_time` (registry time resumes from the
//! backup's); later heartbeats count on from the saved count; and an old node of the former
//! cluster, started next to the new one, cannot mix with it.

use std::time::Duration;

use registry_api::wire::{Consistency, HeartbeatIn, ServiceAction, ServiceOut, ServicesOut};
use registry_tests::cli::{registryctl, registryctl_binary};
use registry_tests::init_test_tracing;
use registry_tests::procs::{converged_digests, converged_lists, with_logs, ProcCluster, ProcSpec};

/// `service_down_time` is 8 s: the cluster is down for longer than that, and the services,
/// heartbeated just before the save, must still be up after the restore with seconds to
/// spare on a loaded machine.
fn spec() -> ProcSpec {
    ProcSpec {
        service_down_time: Duration::from_secs(8),
        report_interval: Duration::from_secs(1),
        ..ProcSpec::default()
    }
}

/// What a restore must keep of a service (its id, counts, status and flags, its state).
fn kept(s: &ServiceOut) -> impl PartialEq + std::fmt::Debug {
    (
        (s.host.clone(), s.binary.clone(), s.id, s.report_count),
        (
            s.disabled,
            s.disabled_reason.clone(),
            s.forced_down,
            s.frozen,
        ),
        (s.state, s.status, s.updated_at, s.modified_at),
    )
}

fn by_key(list: &ServicesOut) -> Vec<(String, String, u64)> {
    let mut v: Vec<_> = list
        .services
        .iter()
        .map(|s| (s.host.clone(), s.binary.clone(), s.report_count))
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_restores_a_new_cluster_with_every_record() -> anyhow::Result<()> {
    init_test_tracing();
    // registryctl is built (if it must be) before the scenario: its first run must not take
    // the time of a build between the heartbeats and the save that should still see them up.
    tokio::task::spawn_blocking(registryctl_binary).await??;
    let mut c = ProcCluster::start(spec())?;
    with_logs(&mut c, async |c| {
        c.wait_for_leader(Duration::from_secs(30)).await?;
        let client = c.client_all();
        for _ in 0..5 {
            client
                .heartbeat(&[HeartbeatIn::new("node1@lvm", "cinder-volume")])
                .await?;
        }
        let others =
            ["b", "c", "f", "d"].map(|h| HeartbeatIn::new(format!("host-{h}"), "cinder-backup"));
        client.heartbeat(&others).await?;
        client
            .action(
                ServiceAction::Disable,
                "host-b",
                Some("cinder-backup"),
                Some("disk replacement"),
            )
            .await?;
        client
            .action(
                ServiceAction::ForceDown,
                "host-c",
                Some("cinder-backup"),
                None,
            )
            .await?;
        client
            .action(ServiceAction::Freeze, "host-f", None, None)
            .await?;
        client
            .action(ServiceAction::Remove, "host-d", Some("cinder-backup"), None)
            .await?;
        // Every live service heartbeats once more just before the save.
        let live = ["b", "c", "f"].map(|h| HeartbeatIn::new(format!("host-{h}"), "cinder-backup"));
        client.heartbeat(&live).await?;
        client
            .heartbeat(&[HeartbeatIn::new("node1@lvm", "cinder-volume")])
            .await?;
        let saved = client
            .services(None, None, Consistency::Linearizable)
            .await?;
        anyhow::ensure!(saved.services.len() == 4, "four live services: {saved:?}");
        let old_cluster = client.cluster().await?.cluster_id;

        let endpoints: Vec<String> = c.addrs().iter().map(ToString::to_string).collect();
        let file = c.dir.path().join("registry.backup");
        let file_arg = file.display().to_string();
        let out = registryctl(&endpoints, &["snapshot", "save", &file_arg])
            .await?
            .ok()?;
        eprintln!("RESULT snapshot save:\n{}", out.stdout);
        let out = registryctl(&endpoints, &["snapshot", "status", &file_arg])
            .await?
            .ok()?;
        anyhow::ensure!(
            out.stdout.contains("Record count:  5")
                && out.stdout.contains("4 live, 1 removed")
                && out.stdout.contains(old_cluster.as_deref().unwrap_or("?")),
            "status shows the records and the cluster:\n{}",
            out.stdout
        );

        // Damaged copies are refused by `status`, and by `restore` before it touches anything.
        let bytes = std::fs::read(&file)?;
        let damaged = c.dir.path().join("damaged.backup");
        let damaged_arg = damaged.display().to_string();
        let offsets = [
            0,
            8,
            12,
            bytes.len() / 3,
            bytes.len() / 2,
            bytes.len() - 5,
            bytes.len() - 1,
        ];
        for at in offsets {
            let mut bad = bytes.clone();
            bad[at] ^= 0x20;
            std::fs::write(&damaged, &bad)?;
            let out = registryctl(&endpoints, &["snapshot", "status", &damaged_arg]).await?;
            anyhow::ensure!(
                out.code == Some(1) && out.stderr.contains("not a usable backup"),
                "a backup with byte {at} flipped: status exited {:?}: {}",
                out.code,
                out.stderr
            );
        }
        let cut = c.dir.path().join("cut.backup");
        std::fs::write(&cut, &bytes[..bytes.len() / 2])?;
        let cut_arg = cut.display().to_string();
        let out = registryctl(&endpoints, &["snapshot", "status", &cut_arg]).await?;
        anyhow::ensure!(
            out.code == Some(1),
            "a backup cut in half: status exited {:?}",
            out.code
        );

        // The whole cluster goes down, for longer than service_down_time.
        c.kill_all()?;
        for n in &c.nodes {
            let mut old = n.data_dir.clone().into_os_string();
            old.push(".old");
            std::fs::rename(&n.data_dir, &old)?;
        }
        let (status, _) = c.run_command(0, &["restore", "--snapshot", &damaged_arg])?;
        anyhow::ensure!(!status.success(), "restoring a damaged backup is refused");
        anyhow::ensure!(
            !c.nodes[0].data_dir.exists(),
            "a refused restore leaves the data directory untouched"
        );
        for i in 0..c.nodes.len() {
            let (status, stdout) = c.run_command(i, &["restore", "--snapshot", &file_arg])?;
            anyhow::ensure!(
                status.success(),
                "restore of node {} failed: {stdout}",
                i + 1
            );
            if i == 0 {
                eprintln!("RESULT registry-node restore:\n{stdout}");
            }
        }
        // The outage must outlast service_down_time for "still up" to mean anything.
        tokio::time::sleep(spec().service_down_time + Duration::from_secs(1)).await;
        c.start_all()?;
        let leader = c.wait_for_leader(Duration::from_secs(30)).await?;
        let new_cluster = c.client_of(leader).cluster().await?.cluster_id;
        anyhow::ensure!(
            new_cluster.is_some() && new_cluster != old_cluster,
            "a restore makes a new cluster: {old_cluster:?} -> {new_cluster:?}"
        );
        for i in 0..c.nodes.len() {
            anyhow::ensure!(
                c.client_of(i).cluster().await?.cluster_id == new_cluster,
                "node {} is in the new cluster",
                i + 1
            );
        }
        let restored = c
            .client_of(leader)
            .services(None, None, Consistency::Linearizable)
            .await?;
        let want: Vec<_> = saved.services.iter().map(kept).collect();
        let got: Vec<_> = restored.services.iter().map(kept).collect();
        anyhow::ensure!(
            got == want,
            "the restore holds every record as saved, each in the state it had:\n saved: \
             {want:?}\n restored: {got:?}"
        );
        for l in converged_lists(c).await? {
            anyhow::ensure!(
                by_key(&l) == by_key(&saved),
                "every node holds the restored records"
            );
        }
        let out = client
            .heartbeat(&[HeartbeatIn::new("node1@lvm", "cinder-volume")])
            .await?;
        anyhow::ensure!(
            out.services[0].report_count == 7,
            "a heartbeat after the restore counts on from the saved 6: {}",
            out.services[0].report_count
        );

        // An old node of the former cluster, started next to the new one, cannot mix with it.
        let term_before = c.client_of(leader).cluster().await?.term;
        let addr = c.free_addr_for(3)?;
        let mut old_dir = c.nodes[2].data_dir.clone().into_os_string();
        old_dir.push(".old");
        let old = c.add_node_with_data(3, addr, old_dir.into())?;
        c.start_node(old)?;
        // Node 1 is not the old node itself, so the old node's requests reach it (votes, or
        // appends when it still holds a leader's vote from before the restore).
        let refused = c
            .wait_log(0, "refused a request from a peer", Duration::from_secs(20))
            .await?;
        eprintln!("RESULT an old node next to the restored cluster is refused: {refused}");
        let view = c.client_of(old).cluster().await?;
        anyhow::ensure!(
            view.cluster_id == old_cluster,
            "the old node stays in its own cluster: {view:?}"
        );
        let health = reqwest::get(format!("http://{addr}/health")).await?;
        anyhow::ensure!(
            health.status().as_u16() == 503,
            "the old node has no quorum: /health answered {}",
            health.status()
        );
        let now = c.client_of(leader).cluster().await?;
        anyhow::ensure!(
            now.term == term_before && now.members.len() == 3,
            "the restored cluster is untouched by the old node (term {term_before} -> {}, \
             {} members)",
            now.term,
            now.members.len()
        );
        c.kill_node(old)?;
        converged_digests(c, Duration::from_secs(30)).await?;
        Ok(())
    })
    .await
}
