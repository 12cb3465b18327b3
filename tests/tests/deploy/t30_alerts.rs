//! `deploy/prometheus/alerts.yml` against real nodes: `promtool check rules` accepts it, and
//! for each alert a cluster is put into the alert's condition, its nodes' `/metrics` are
//! scraped, and `promtool test rules` runs the rules on those samples: the alert fires (on
//! the zone, follower or instance it should), while on the scrapes of the same cluster taken
//! before the condition no alert fires. So the rules cannot drift from the names, labels and
//! values the nodes expose.
//!
//! Each case scrapes [`ROUNDS`] times while the condition holds; promtool sees round `k` at
//! minute `k` (every series labelled `job="registry"` and `instance="nodeN"`), so a rule's
//! `for:` is met by real samples, taken a few milliseconds apart rather than a minute.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use registry_api::wire::HeartbeatIn;
use registry_storage::headroom::{RESERVE_BYTES, START_FREE_BYTES};
use registry_tests::exposition::Exposition;
use registry_tests::history::Reporters;
use registry_tests::init_test_tracing;
use registry_tests::procs::{with_logs, ProcCluster, ProcSpec};
use registry_tests::tmpfs::Tmpfs;
use registry_tests::wait::until;

use crate::{generated, repo_file};

/// Scrapes per condition: promtool's minutes 0 to 11, more than any rule's `for:` (10m).
const ROUNDS: usize = 12;

/// The alerts each test below makes fire; [`every_alert_has_a_test`] checks that this is
/// every alert of the file.
const COVERED: [&str; 9] = [
    "RegistryNoLeader",
    "RegistryQuorumContactLost",
    "RegistryFollowerLagging",
    "RegistryDiskFilling",
    "RegistryServicesDownInZone",
    "RegistryZoneDown",
    "RegistryZoneDisrupted",
    "RegistrySuspect",
    "RegistryCertificateExpiresSoon",
];

fn alerts_file() -> std::path::PathBuf {
    repo_file("deploy/prometheus/alerts.yml")
}

/// Series scraped in rounds: each series' value at each round (`None`: not scraped then).
#[derive(Debug, Default)]
struct Scrapes {
    series: BTreeMap<String, Vec<Option<f64>>>,
    rounds: usize,
}

impl Scrapes {
    /// Records one scrape of node `instance` in round `round`.
    fn record(&mut self, round: usize, instance: &str, m: &Exposition) {
        self.rounds = self.rounds.max(round + 1);
        for s in &m.samples {
            let mut labels = s.labels.clone();
            labels.insert("job".into(), "registry".into());
            labels.insert("instance".into(), instance.into());
            let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={:?}", v)).collect();
            let key = format!("{}{{{}}}", s.name, inner.join(","));
            let values = self.series.entry(key).or_default();
            values.resize(ROUNDS, None);
            values[round] = Some(s.value);
        }
    }

    /// Scrapes every node index of `nodes` [`ROUNDS`] times.
    async fn take(c: &ProcCluster, nodes: &[usize]) -> anyhow::Result<Self> {
        let mut s = Self::default();
        for round in 0..ROUNDS {
            for &i in nodes {
                let m = c.metrics(i).await?;
                s.record(round, &format!("node{}", c.nodes[i].id), &m);
            }
        }
        Ok(s)
    }

    /// promtool's `input_series`.
    fn yaml(&self) -> String {
        let mut out = String::from("    input_series:\n");
        for (series, values) in &self.series {
            let values: Vec<String> = values
                .iter()
                .take(self.rounds)
                .map(|v| match v {
                    Some(v) if v.is_nan() => "NaN".into(),
                    Some(v) => format!("{v}"),
                    None => "_".into(),
                })
                .collect();
            let _ = writeln!(
                out,
                "      - series: '{}'\n        values: '{}'",
                series.replace('\'', "''"),
                values.join(" ")
            );
        }
        out
    }
}

/// Runs `promtool test rules` on the alert rules with two groups of scrapes: `healthy`, where
/// no alert may fire (but `RegistryDiskFilling`, which depends on the test machine's disk,
/// except on `disk_of`, the instance whose disk the test made), and `condition`, where
/// `alert` must fire once for each of `expected` (the values of the label `by`; for
/// `RegistryDiskFilling`, on `disk_of` only). Fails with promtool's output.
fn promtool_test(
    healthy: Option<&Scrapes>,
    condition: &Scrapes,
    alert: &str,
    by: &str,
    expected: &[&str],
    disk_of: Option<&str>,
) -> anyhow::Result<()> {
    let at = format!("{}m", ROUNDS - 1);
    let mut yaml = format!(
        "rule_files:\n  - {:?}\nevaluation_interval: 1m\ntests:\n",
        alerts_file().display().to_string()
    );
    if let Some(h) = healthy {
        let mut firing =
            String::from("ALERTS{alertstate=\"firing\",alertname!=\"RegistryDiskFilling\"}");
        if let Some(i) = disk_of {
            let _ = write!(
                firing,
                " or ALERTS{{alertstate=\"firing\",instance=\"{i}\"}}"
            );
        }
        let _ = write!(
            yaml,
            "  - name: healthy\n    interval: 1m\n{}    promql_expr_test:\n      \
             - expr: '{firing}'\n        eval_time: {at}\n        exp_samples: []\n",
            h.yaml()
        );
    }
    let only = match disk_of {
        Some(i) if alert == "RegistryDiskFilling" => format!(",instance=\"{i}\""),
        _ => String::new(),
    };
    let mut samples = String::new();
    for value in expected {
        let _ = write!(
            samples,
            "          - labels: '{{{by}=\"{value}\"}}'\n            value: 1\n"
        );
    }
    let _ = write!(
        yaml,
        "  - name: {alert}\n    interval: 1m\n{}    promql_expr_test:\n      \
         - expr: 'count by ({by}) (ALERTS{{alertname=\"{alert}\",alertstate=\"firing\"{only}}})'\n        \
         eval_time: {at}\n        exp_samples:\n{samples}",
        condition.yaml()
    );
    let dir = tempfile::tempdir()?;
    let file = dir.path().join(format!("{alert}.test.yml"));
    std::fs::write(&file, &yaml)?;
    let out = promtool(&["test", "rules"], &file)?;
    anyhow::ensure!(
        out.status.success(),
        "promtool test rules for {alert} failed:\n{}{}\n(the first lines of the test file:)\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        yaml.lines().take(40).collect::<Vec<_>>().join("\n")
    );
    Ok(())
}

fn promtool(args: &[&str], file: &Path) -> anyhow::Result<std::process::Output> {
    Command::new("promtool")
        .args(args)
        .arg(file)
        .output()
        .map_err(|e| anyhow::anyhow!("running promtool (Debian package prometheus): {e}"))
}

/// `promtool check rules` accepts the file.
#[test]
fn promtool_checks_the_rules() -> anyhow::Result<()> {
    let out = promtool(&["check", "rules"], &alerts_file())?;
    let said = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success() && said.contains(&format!("SUCCESS: {} rules found", COVERED.len())),
        "promtool check rules:\n{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// `promtool check config` accepts the example configuration (with its token and CA files
/// where it expects them: the file names it under `/etc/prometheus/` moved to a temporary
/// directory), which loads the alert rules.
#[test]
fn promtool_checks_the_scrape_config() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let text = std::fs::read_to_string(repo_file("deploy/prometheus/prometheus.yml"))?;
    let at = format!("{}/", dir.path().display());
    anyhow::ensure!(
        text.contains("/etc/prometheus/"),
        "the config names its files"
    );
    std::fs::write(
        dir.path().join("prometheus.yml"),
        text.replace("/etc/prometheus/", &at),
    )?;
    std::fs::copy(alerts_file(), dir.path().join("alerts.yml"))?;
    std::fs::write(dir.path().join("registry-reader.token"), "a-reader-token\n")?;
    std::fs::write(dir.path().join("registry-ca.pem"), "")?;
    let out = promtool(&["check", "config"], &dir.path().join("prometheus.yml"))?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    anyhow::ensure!(
        out.status.success() && said.contains(&format!("SUCCESS: {} rules found", COVERED.len())),
        "promtool check config:\n{said}"
    );
    Ok(())
}

/// Every alert of the file is one a test below makes fire.
#[test]
fn every_alert_has_a_test() -> anyhow::Result<()> {
    let text = std::fs::read_to_string(alerts_file())?;
    let mut names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(str::trim)
        .collect();
    names.sort_unstable();
    let mut covered = COVERED.to_vec();
    covered.sort_unstable();
    assert_eq!(
        names, covered,
        "the alerts of alerts.yml and those tested here"
    );
    Ok(())
}

/// Scrapes of every running node, once each answers `/health`.
async fn healthy_scrapes(c: &ProcCluster) -> anyhow::Result<Scrapes> {
    until("every node is healthy", Duration::from_secs(30), || async {
        for i in c.running() {
            if c.metrics(i).await.ok()?.get("registry_healthy", &[])? != 1.0 {
                return None;
            }
        }
        Some(())
    })
    .await?;
    Scrapes::take(c, &c.running()).await
}

/// Waits until node index `i`'s `/metrics` satisfies `check`.
async fn wait_metrics(
    c: &ProcCluster,
    i: usize,
    what: &str,
    timeout: Duration,
    check: impl Fn(&Exposition) -> bool,
) -> anyhow::Result<()> {
    until(what, timeout, || async {
        let m = c.metrics(i).await.ok()?;
        check(&m).then_some(())
    })
    .await
}

/// The leader and one follower SIGKILLed: the survivor cannot elect a leader, and
/// `RegistryNoLeader` fires for the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_leader_fires() -> anyhow::Result<()> {
    init_test_tracing();
    let mut c = ProcCluster::start(ProcSpec::default())?;
    with_logs(&mut c, async |c| {
        let leader = c.wait_for_leader(Duration::from_secs(30)).await?;
        let healthy = healthy_scrapes(c).await?;
        let follower = (leader + 1) % 3;
        let survivor = (leader + 2) % 3;
        c.kill_node(leader)?;
        c.kill_node(follower)?;
        wait_metrics(
            c,
            survivor,
            "the survivor knows no leader",
            Duration::from_secs(30),
            |m| {
                m.get("registry_raft_leader_id", &[]).is_none()
                    && m.get("registry_healthy", &[]) == Some(0.0)
            },
        )
        .await?;
        let lost = Scrapes::take(c, &[survivor]).await?;
        promtool_test(
            Some(&healthy),
            &lost,
            "RegistryNoLeader",
            "job",
            &["registry"],
            None,
        )
    })
    .await
}

/// Both followers SIGKILLed: the leader hears from no quorum, and `RegistryQuorumContactLost`
/// fires for it once its contact is over 5 s old.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_contact_lost_fires() -> anyhow::Result<()> {
    init_test_tracing();
    let mut c = ProcCluster::start(ProcSpec::default())?;
    with_logs(&mut c, async |c| {
        let leader = c.wait_for_leader(Duration::from_secs(30)).await?;
        let healthy = healthy_scrapes(c).await?;
        c.kill_node((leader + 1) % 3)?;
        c.kill_node((leader + 2) % 3)?;
        wait_metrics(
            c,
            leader,
            "the leader's contact is over 6 s old",
            Duration::from_secs(30),
            |m| {
                m.get("registry_leader_contact_age_seconds", &[])
                    .is_some_and(|age| age > 6.0)
            },
        )
        .await?;
        let lost = Scrapes::take(c, &[leader]).await?;
        let instance = format!("node{}", c.nodes[leader].id);
        promtool_test(
            Some(&healthy),
            &lost,
            "RegistryQuorumContactLost",
            "instance",
            &[&instance],
            None,
        )
    })
    .await
}

/// A follower SIGSTOPped while reporters keep the leader busy: once the leader's log is over
/// 1000 entries ahead of it, `RegistryFollowerLagging` fires for that follower.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_lagging_fires() -> anyhow::Result<()> {
    init_test_tracing();
    let mut c = ProcCluster::start(ProcSpec::default())?;
    with_logs(&mut c, async |c| {
        let leader = c.wait_for_leader(Duration::from_secs(30)).await?;
        let healthy = healthy_scrapes(c).await?;
        let paused = (leader + 1) % 3;
        let id = c.nodes[paused].id.to_string();
        let reporters = Reporters::start(c.client_of(leader), 8, Duration::ZERO);
        c.pause(paused)?;
        let lag = |m: &Exposition| {
            m.get(
                "registry_raft_replication_lag_entries",
                &[("follower", id.as_str())],
            )
        };
        let waited = wait_metrics(
            c,
            leader,
            "the paused follower is over 1100 entries behind",
            Duration::from_secs(120),
            |m| lag(m).is_some_and(|l| l > 1100.0),
        )
        .await;
        let lagging = match waited {
            Ok(()) => Scrapes::take(c, &[leader]).await,
            Err(e) => Err(e),
        };
        c.resume(paused)?;
        reporters.stop().await;
        let lagging = lagging?;
        promtool_test(
            Some(&healthy),
            &lagging,
            "RegistryFollowerLagging",
            "follower",
            &[&id],
            None,
        )
    })
    .await
}

/// Node 1's data directory on a small tmpfs (root needed), filled with a file until under 10%
/// of it is free: `RegistryDiskFilling` fires for node 1, and did not before the fill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_filling_fires() -> anyhow::Result<()> {
    init_test_tracing();
    let disk = Tmpfs::mount("64m")?;
    let mut c = ProcCluster::start(ProcSpec {
        data_dirs: vec![(0, disk.path().join("data"))],
        ..ProcSpec::default()
    })?;
    with_logs(&mut c, async |c| {
        c.wait_for_leader(Duration::from_secs(30)).await?;
        let healthy = healthy_scrapes(c).await?;
        let m = c.metrics(0).await?;
        let (size, available) = (
            m.value("registry_disk_size_bytes"),
            m.value("registry_disk_available_bytes"),
        );
        // Leave 6% free: under the alert's 10%, above what the node needs to keep running.
        let keep = (size * 0.06) as u64;
        anyhow::ensure!(
            keep > RESERVE_BYTES.max(START_FREE_BYTES) / 2,
            "a disk of {size} bytes is too small"
        );
        let fill = (available as u64).saturating_sub(keep);
        std::fs::write(disk.path().join("filler"), vec![1u8; fill as usize])?;
        wait_metrics(
            c,
            0,
            "node 1 has under 10% of its disk free",
            Duration::from_secs(30),
            |m| {
                m.value("registry_disk_available_bytes") / m.value("registry_disk_size_bytes")
                    < 0.10
            },
        )
        .await?;
        let full = Scrapes::take(c, &[0, 1, 2]).await?;
        let res = promtool_test(
            Some(&healthy),
            &full,
            "RegistryDiskFilling",
            "instance",
            &["node1"],
            Some("node1"),
        );
        std::fs::remove_file(disk.path().join("filler"))?;
        res
    })
    .await
}

/// Services in two zones; those of `az2` go silent while `az1`'s keep heartbeating: once every
/// node says `az2`'s are down, `RegistryServicesDownInZone`, `RegistryZoneDown` and
/// `RegistryZoneDisrupted` (full disruption) fire for `az2` only, and `RegistrySuspect` does
/// not; then `az1`'s go silent too, and `RegistrySuspect` fires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zone_alerts_fire() -> anyhow::Result<()> {
    init_test_tracing();
    let mut c = ProcCluster::start(ProcSpec::default())?;
    with_logs(&mut c, async |c| {
        c.wait_for_leader(Duration::from_secs(30)).await?;
        let beat = |host: &str, zone: &str| {
            let mut h = HeartbeatIn::new(host, "cinder-volume");
            h.availability_zone = Some(zone.into());
            h
        };
        let az1 = [beat("zone-a1", "az1"), beat("zone-a2", "az1")];
        let client = c.client_all();
        client.heartbeat(&az1).await?;
        client.heartbeat(&[beat("zone-b1", "az2")]).await?;
        let healthy = healthy_scrapes(c).await?;
        let zone = |m: &Exposition, zone: &str, state: &str| {
            m.get(
                "registry_zone_services",
                &[("zone", zone), ("state", state)],
            )
        };
        until(
            "every node says az2 is down and az1 up",
            Duration::from_secs(60),
            || async {
                client.heartbeat(&az1).await.ok()?;
                for i in 0..3 {
                    let m = c.metrics(i).await.ok()?;
                    if (
                        zone(&m, "az1", "up")?,
                        zone(&m, "az2", "down")?,
                        zone(&m, "az2", "up")?,
                    ) != (2.0, 1.0, 0.0)
                    {
                        return None;
                    }
                }
                Some(())
            },
        )
        .await?;
        let mut down = Scrapes::default();
        for round in 0..ROUNDS {
            client.heartbeat(&az1).await?;
            for i in 0..3 {
                down.record(round, &format!("node{}", i + 1), &c.metrics(i).await?);
            }
        }
        for alert in [
            "RegistryServicesDownInZone",
            "RegistryZoneDown",
            "RegistryZoneDisrupted",
        ] {
            promtool_test(Some(&healthy), &down, alert, "zone", &["az2"], None)?;
        }
        until(
            "every node says the registry is suspect",
            Duration::from_secs(60),
            || async {
                for i in 0..3 {
                    let m = c.metrics(i).await.ok()?;
                    if m.get("registry_suspect", &[])? != 1.0 {
                        return None;
                    }
                }
                Some(())
            },
        )
        .await?;
        let suspect = Scrapes::take(c, &[0, 1, 2]).await?;
        promtool_test(
            Some(&healthy),
            &suspect,
            "RegistrySuspect",
            "job",
            &["registry"],
            None,
        )?;
        Ok(())
    })
    .await
}

/// A cluster from `init-cluster --tls --cert-days 30` (no alert), then node 1's certificate
/// renewed for 10 days with the openssl commands of `scripts/tls-certs.sh` and the node
/// reloaded (SIGHUP): `RegistryCertificateExpiresSoon` fires for node 1's `node` certificate
/// only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_expiry_fires() -> anyhow::Result<()> {
    init_test_tracing();
    let mut g = generated::start(&["--tls", "--cert-days", "30"]).await?;
    let out = g.out.clone();
    let ip = g.cluster.nodes[0].addr.ip().to_string();
    with_logs(&mut g.cluster, async |c| {
        let healthy = healthy_scrapes(c).await?;
        let script = repo_file("scripts/tls-certs.sh");
        let status = Command::new("bash")
            .arg("-c")
            .arg(
                "set -e; die() { echo \"$*\" >&2; exit 1; }; info() { :; }; source \"$1\"; \
                 rm -f \"$TLS_DIR/node1.pem\" \"$TLS_DIR/node1-key.pem\"; \
                 make_cert node1 node1 \"IP:$2\"",
            )
            .arg("renew")
            .arg(&script)
            .arg(&ip)
            .env("TLS_DIR", &out)
            .env("TLS_DAYS", "10")
            .status()?;
        anyhow::ensure!(status.success(), "renewing node 1's certificate: {status}");
        c.reload(0)?;
        let expiry = |m: &Exposition| {
            m.get(
                "registry_tls_certificate_expires_in_seconds",
                &[("certificate", "node")],
            )
        };
        wait_metrics(
            c,
            0,
            "node 1 serves its 10-day certificate",
            Duration::from_secs(30),
            |m| expiry(m).is_some_and(|s| s < 11.0 * 86400.0),
        )
        .await?;
        let soon = Scrapes::take(c, &[0, 1, 2]).await?;
        promtool_test(
            Some(&healthy),
            &soon,
            "RegistryCertificateExpiresSoon",
            "instance",
            &["node1"],
            None,
        )
    })
    .await
}
