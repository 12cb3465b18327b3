//! `registryctl` run as a process against a three-node in-process cluster: what it prints,
//! what it changes, and its exit codes.

use std::collections::BTreeMap;
use std::time::Duration;

use registry_api::wire::{HeartbeatIn, ServiceOut};
use registry_tests::cli::{parse_table, registryctl, registryctl_binary, table_headers};
use registry_tests::init_test_tracing;
use registry_tests::inproc::{ClusterSpec, InProcCluster};

type Row = BTreeMap<String, String>;

fn endpoints(c: &InProcCluster) -> Vec<String> {
    c.configs.iter().map(|n| n.listen.to_string()).collect()
}

/// A loopback address nothing listens on (connections are refused).
fn dead_endpoint() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("address").to_string()
}

fn row<'a>(rows: &'a [Row], host: &str, binary: &str) -> Option<&'a Row> {
    rows.iter()
        .find(|r| r.get("Host").map(String::as_str) == Some(host) && r["Binary"] == binary)
}

async fn list(eps: &[String], extra: &[&str]) -> anyhow::Result<Vec<Row>> {
    let mut args = vec!["service-list"];
    args.extend_from_slice(extra);
    let out = registryctl(eps, &args).await?.ok()?;
    Ok(parse_table(&out.stdout))
}

/// A running cluster and its endpoints. `registryctl` is built (if it must be) before the
/// cluster starts, so a build cannot eat into the services' `service_down_time`.
async fn started() -> anyhow::Result<(InProcCluster, Vec<String>)> {
    init_test_tracing();
    tokio::task::spawn_blocking(registryctl_binary).await??;
    let c = InProcCluster::start(ClusterSpec::default()).await?;
    c.wait_for_leader(Duration::from_secs(10)).await?;
    let eps = endpoints(&c);
    Ok((c, eps))
}

/// `service-list` prints Cinder's columns with one row per service and `-` for null;
/// `--detailed` adds the report count, forced down, frozen and id; `--json` is the list as
/// JSON with the same records; `--host` and `--binary` are exact-match filters.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn service_list_prints_the_cinder_table_json_and_filters() -> anyhow::Result<()> {
    let (mut c, eps) = started().await?;
    let client = c.client_of(1);
    let mut vol = HeartbeatIn::new("host-a@lvm", "cinder-volume");
    vol.availability_zone = Some("az1".into());
    vol.cluster_name = Some("cl1@lvm".into());
    client.heartbeat(&[vol.clone()]).await?;
    client.heartbeat(&[vol]).await?;
    client
        .heartbeat(&[
            HeartbeatIn::new("host-a", "cinder-backup"),
            HeartbeatIn::new("host-b", "cinder-scheduler"),
        ])
        .await?;

    let out = registryctl(&eps, &["service-list"]).await?.ok()?;
    assert_eq!(
        table_headers(&out.stdout),
        [
            "Binary",
            "Host",
            "Zone",
            "Status",
            "State",
            "Updated At",
            "Cluster",
            "Disabled Reason"
        ],
        "service-list has cinder service-list's columns:\n{}",
        out.stdout
    );
    let rows = parse_table(&out.stdout);
    assert_eq!(rows.len(), 3, "one row per service:\n{}", out.stdout);
    let v = row(&rows, "host-a@lvm", "cinder-volume").expect("the volume service is listed");
    assert_eq!(v["Zone"], "az1", "the zone is the reported one");
    assert_eq!(v["Cluster"], "cl1@lvm", "the cluster is the reported one");
    assert_eq!(v["Status"], "enabled");
    assert_eq!(v["State"], "up", "a service that just reported is up");
    assert_eq!(v["Disabled Reason"], "-", "null prints as -");
    assert!(
        v["Updated At"].len() == "2012-10-29T13:42:05.000000".len()
            && v["Updated At"].contains('T'),
        "updated at is Cinder's naive UTC time: {:?}",
        v["Updated At"]
    );
    let b = row(&rows, "host-a", "cinder-backup").expect("the backup service is listed");
    assert_eq!(b["Cluster"], "-", "a service with no cluster prints -");

    let detailed = list(&eps, &["--detailed"]).await?;
    let v = row(&detailed, "host-a@lvm", "cinder-volume").expect("listed in detail");
    assert_eq!(v["Report Count"], "2", "--detailed shows the report count");
    assert_eq!(v["Forced Down"], "false");
    assert_eq!(v["Frozen"], "false");

    let json = registryctl(&eps, &["service-list", "--json"]).await?.ok()?;
    let services: Vec<ServiceOut> = serde_json::from_str(&json.stdout).map_err(|e| {
        anyhow::anyhow!(
            "--json prints a JSON list of services ({e}):\n{}",
            json.stdout
        )
    })?;
    assert_eq!(services.len(), 3, "--json lists every service");
    let v = services
        .iter()
        .find(|s| s.binary == "cinder-volume")
        .expect("volume in JSON");
    assert_eq!(v.report_count, 2);
    assert_eq!(
        v.id.to_string(),
        row(&detailed, "host-a@lvm", "cinder-volume").expect("listed")["Id"],
        "the table and the JSON show the same record"
    );

    let host_a = list(&eps, &["--host", "host-a"]).await?;
    assert_eq!(host_a.len(), 1, "--host is an exact match: {host_a:?}");
    assert_eq!(host_a[0]["Binary"], "cinder-backup");
    let sched = list(&eps, &["--binary", "cinder-scheduler", "--stale"]).await?;
    assert_eq!(sched.len(), 1, "--binary filters (also on a stale read)");
    assert_eq!(sched[0]["Host"], "host-b");
    let none = list(&eps, &["--host", "host-a", "--binary", "cinder-volume"]).await?;
    assert!(none.is_empty(), "both filters apply together: {none:?}");

    c.shutdown().await
}

/// The administrative commands change what the list shows: disable records the reason,
/// enable keeps it, force-down makes the service `down` until unset, freeze and thaw
/// flip `frozen`; remove prints cinder-manage's message and the service disappears until
/// its next heartbeat re-creates it as a new record; an unknown service exits 2 with
/// cinder-manage's exact message.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_commands_change_the_list_and_not_found_exits_2() -> anyhow::Result<()> {
    let (mut c, eps) = started().await?;
    let client = c.client_of(0);
    let (host, binary) = ("host-a@lvm", "cinder-volume");
    client.heartbeat(&[HeartbeatIn::new(host, binary)]).await?;
    client.heartbeat(&[HeartbeatIn::new(host, binary)]).await?;
    client
        .heartbeat(&[HeartbeatIn::new("host-b", "cinder-scheduler")])
        .await?;
    let before = list(&eps, &["--detailed"]).await?;
    let old_id = row(&before, host, binary).expect("listed")["Id"].clone();

    let out = registryctl(
        &eps,
        &["service-disable", host, binary, "--reason", "disk swap"],
    )
    .await?
    .ok()?;
    let changed = parse_table(&out.stdout);
    assert_eq!(
        changed.len(),
        1,
        "disable prints the changed service:\n{}",
        out.stdout
    );
    assert_eq!(changed[0]["Status"], "disabled");
    let rows = list(&eps, &[]).await?;
    let r = row(&rows, host, binary).expect("listed");
    assert_eq!(r["Status"], "disabled", "service-disable disables");
    assert_eq!(r["Disabled Reason"], "disk swap", "the reason is recorded");
    assert_eq!(r["State"], "up", "disabling does not change liveness");

    registryctl(&eps, &["service-enable", host, binary])
        .await?
        .ok()?;
    let rows = list(&eps, &[]).await?;
    let r = row(&rows, host, binary).expect("listed");
    assert_eq!(r["Status"], "enabled", "service-enable enables");
    assert_eq!(
        r["Disabled Reason"], "disk swap",
        "enable keeps the reason, as Cinder"
    );

    registryctl(&eps, &["service-force-down", host, binary])
        .await?
        .ok()?;
    let rows = list(&eps, &["--detailed"]).await?;
    let r = row(&rows, host, binary).expect("listed");
    assert_eq!(
        r["State"], "down",
        "a forced-down service is down despite heartbeats"
    );
    assert_eq!(r["Forced Down"], "true");
    registryctl(&eps, &["service-force-down", host, binary, "--unset"])
        .await?
        .ok()?;
    let rows = list(&eps, &["--detailed"]).await?;
    assert_eq!(
        row(&rows, host, binary).expect("listed")["State"],
        "up",
        "--unset gives liveness back to the heartbeats"
    );

    registryctl(&eps, &["service-freeze", host]).await?.ok()?;
    let rows = list(&eps, &["--detailed"]).await?;
    assert_eq!(row(&rows, host, binary).expect("listed")["Frozen"], "true");
    assert_eq!(
        row(&rows, "host-b", "cinder-scheduler").expect("listed")["Frozen"],
        "false",
        "freeze touches only the named host"
    );
    registryctl(&eps, &["service-thaw", host]).await?.ok()?;
    let rows = list(&eps, &["--detailed"]).await?;
    assert_eq!(row(&rows, host, binary).expect("listed")["Frozen"], "false");

    // remove takes BINARY HOST, as cinder-manage.
    let out = registryctl(&eps, &["service-remove", binary, host])
        .await?
        .ok()?;
    assert_eq!(
        out.stdout,
        format!("Service {binary} on host {host} removed.\n"),
        "remove prints cinder-manage's message"
    );
    let rows = list(&eps, &[]).await?;
    assert!(
        row(&rows, host, binary).is_none(),
        "a removed service is not listed: {rows:?}"
    );
    assert_eq!(rows.len(), 1, "the other service stays");

    let out = registryctl(&eps, &["service-remove", binary, host]).await?;
    assert_eq!(
        out.code,
        Some(2),
        "removing a missing service exits 2: {out:?}"
    );
    assert_eq!(
        out.stderr.trim_end(),
        format!("Host not found. Failed to remove {binary} on {host}."),
        "cinder-manage's exact message"
    );
    assert!(out.stdout.is_empty(), "nothing on stdout: {out:?}");
    let out = registryctl(&eps, &["service-remove", "cinder-nothing", "host-z"]).await?;
    assert_eq!(out.code, Some(2));
    assert_eq!(
        out.stderr.trim_end(),
        "Host not found. Failed to remove cinder-nothing on host-z."
    );
    let out = registryctl(&eps, &["service-disable", "host-z", "cinder-nothing"]).await?;
    assert_eq!(
        out.code,
        Some(2),
        "any action on a missing service exits 2: {out:?}"
    );
    assert_eq!(
        out.stderr.trim_end(),
        "Service cinder-nothing could not be found on host host-z."
    );

    // The still-running service comes back at its next heartbeat, as a new record.
    client.heartbeat(&[HeartbeatIn::new(host, binary)]).await?;
    let rows = list(&eps, &["--detailed"]).await?;
    let r = row(&rows, host, binary).expect("a heartbeat re-creates a removed service");
    assert_ne!(r["Id"], old_id, "the re-created service is a fresh record");
    assert_eq!(r["Report Count"], "1", "its count starts again at 1");
    assert_eq!(r["Status"], "enabled", "and it starts enabled");
    assert_eq!(r["Disabled Reason"], "-", "with no reason");

    c.shutdown().await
}

/// A dead first endpoint does not stop a command (the next one is tried); `cluster status`
/// lists the three members, names the leader and marks a stopped node unreachable; with
/// no endpoint reachable a command fails with one line on stderr and exit code 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dead_endpoints_and_cluster_status() -> anyhow::Result<()> {
    let (mut c, eps) = started().await?;
    c.client_of(2)
        .heartbeat(&[HeartbeatIn::new("host-a", "cinder-volume")])
        .await?;

    let mut with_dead = vec![dead_endpoint()];
    with_dead.extend(eps.iter().cloned());
    let rows = list(&with_dead, &[]).await?;
    assert_eq!(rows.len(), 1, "a dead first endpoint is skipped: {rows:?}");

    let leader = c.wait_for_leader(Duration::from_secs(10)).await?;
    let leader_id = leader + 1;
    let out = registryctl(&with_dead, &["cluster", "status"])
        .await?
        .ok()?;
    let text = &out.stdout;
    let cluster_id = c
        .client_of(leader)
        .cluster()
        .await?
        .cluster_id
        .ok_or_else(|| anyhow::anyhow!("the leader belongs to no cluster"))?;
    assert!(
        text.starts_with(&format!(
            "Cluster: {cluster_id}\nLeader: node {leader_id} at {}",
            eps[leader]
        )),
        "cluster status names the cluster and the leader:\n{text}"
    );
    let members = parse_table(text);
    assert_eq!(members.len(), 3, "three members:\n{text}");
    for (i, m) in members.iter().enumerate() {
        assert_eq!(m["Id"], (i + 1).to_string());
        assert_eq!(m["Address"], eps[i], "member addresses are the nodes'");
        assert_eq!(m["Voter"], "true");
        let role = if i == leader { "Leader" } else { "Follower" };
        assert_eq!(
            m["Role"], role,
            "each node's role as it sees itself:\n{text}"
        );
        assert_ne!(
            m["Applied Index"], "-",
            "every node tells its applied index"
        );
        assert_ne!(m["Lag"], "-", "and its lag");
    }
    assert_eq!(
        members[leader]["Lag"], "0",
        "the leader is not behind itself"
    );

    // Stop a follower: it is shown unreachable and the command still succeeds.
    let follower = (leader + 1) % 3;
    c.stop_node(follower).await?;
    let out = registryctl(&eps, &["cluster", "status"]).await?.ok()?;
    let members = parse_table(&out.stdout);
    assert_eq!(
        members.len(),
        3,
        "a stopped member is still listed:\n{}",
        out.stdout
    );
    assert_eq!(
        members[follower]["Role"], "unreachable",
        "a stopped node is shown unreachable:\n{}",
        out.stdout
    );
    assert_eq!(members[follower]["Lag"], "-");

    let out = registryctl(&[dead_endpoint(), dead_endpoint()], &["service-list"]).await?;
    assert_eq!(
        out.code,
        Some(1),
        "an unreachable registry exits 1: {out:?}"
    );
    assert_eq!(
        out.stderr.lines().count(),
        1,
        "the error is one line on stderr: {:?}",
        out.stderr
    );
    assert!(
        out.stderr.contains("no registry endpoint reachable"),
        "the error says what is wrong: {:?}",
        out.stderr
    );
    assert!(out.stdout.is_empty());

    c.shutdown().await
}
