//! The benchmark tool runs on a tiny workload against an in-process three-node cluster:
//! a one-second closed loop with a few reporters (and the Raft term read at both ends of
//! it), a list run on 100 services, and a watch run with three watchers. Nothing here
//! asserts a timing.
//! a one-second closed loop with a few reporters, a list run on 100 services, and a watch
//! run with three watchers; and, on a cluster of its own with a short service_down_time, an
//! overload run of a few services. Nothing here asserts a timing.

use std::time::Duration;

use clap::Parser;
use registry_tests::inproc::{ClusterSpec, InProcCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_runs_on_a_tiny_workload() -> anyhow::Result<()> {
    registry_tests::init_test_tracing();
    let mut cluster = InProcCluster::start(ClusterSpec::default()).await?;
    cluster.wait_for_leader(Duration::from_secs(20)).await?;
    let join = |items: Vec<String>| items.join(",");
    let endpoints = join(
        cluster
            .configs
            .iter()
            .map(|c| c.listen.to_string())
            .collect(),
    );
    let dirs = join(
        cluster
            .configs
            .iter()
            .map(|c| c.data_dir.display().to_string())
            .collect(),
    );
    let pid = std::process::id().to_string();
    let cluster_args = [
        "--registry",
        endpoints.as_str(),
        "--registry-data-dir",
        dirs.as_str(),
        "--registry-pid",
        pid.as_str(),
    ];

    let closed = bench::Options::try_parse_from(
        ["registry-bench"].into_iter().chain(cluster_args).chain([
            "closed",
            "--concurrency",
            "4",
            "--duration",
            "1s",
            "--warmup",
            "200ms",
        ]),
    )?;
    let report = bench::run(&closed).await?;
    println!("{report}");
    assert!(
        report.acked_beats() > 0,
        "no heartbeat acknowledged:\n{report}"
    );
    assert_eq!(report.error_count(), 0, "errors:\n{report}");
    assert!(report.render().contains("heartbeats/s"));
    // The Raft term is read from the nodes at both ends of the measured window.
    let run = &report.runs[0];
    assert!(
        run.term_at_start.is_some() && run.term_changes().is_some(),
        "no Raft term read:\n{report}"
    );

    let list = bench::Options::try_parse_from(
        ["registry-bench"].into_iter().chain(cluster_args).chain([
            "--prefix", "list", "list", "--sizes", "100", "--repeat", "2",
        ]),
    )?;
    let report = bench::run(&list).await?;
    println!("{report}");
    assert_eq!(report.error_count(), 0, "errors:\n{report}");
    let host_rows = report
        .lists
        .iter()
        .filter(|l| l.variant.starts_with("host"));
    assert!(host_rows.clone().count() > 0 && host_rows.clone().all(|l| l.count == 4));
    // The full list holds the 100 listed services and the closed loop's 4.
    assert!(
        report
            .lists
            .iter()
            .filter(|l| l.variant.starts_with("full"))
            .all(|l| l.count == 104),
        "unexpected list sizes:\n{report}"
    );
    // The term was read around every row (not whether it moved: the machine may be busy).
    assert!(
        report.lists.iter().all(|l| l.term_changes.is_some()),
        "a row without its term changes:\n{report}"
    );
    assert!(report.render().contains("term changes"));

    // Watching: a few streams, services created 20 per request; every stream must have
    // every acknowledged event by the end (a deadline, not a timing).
    let watch = bench::Options::try_parse_from(
        ["registry-bench"].into_iter().chain(cluster_args).chain([
            "--prefix",
            "watch",
            "watch",
            "--services",
            "40",
            "--watchers",
            "3",
            "--duration",
            "1s",
            "--writers",
            "1",
            "--event-batch",
            "20",
            "--cost-concurrency",
            "4",
            "--cost-duration",
            "500ms",
            "--cost-warmup",
            "100ms",
            "--cost-event-rate",
            "100",
        ]),
    )?;
    let report = bench::run(&watch).await?;
    println!("{report}");
    assert_eq!(report.error_count(), 0, "errors:\n{report}");
    let w = report
        .watch
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("no watch figures:\n{report}"))?;
    assert_eq!(w.costs.len(), 4, "write-path runs:\n{report}");
    assert_eq!(w.stream.watchers, 3, "watchers:\n{report}");
    assert!(
        w.stream.committed > 0 && w.stream.lag_from_ack.requests > 0,
        "no event committed or none seen by a watcher:\n{report}"
    );
    assert_eq!(
        (w.stream.cut_off, w.stream.failed),
        (0, 0),
        "streams cut off or failed:\n{report}"
    );
    assert!(
        w.stream.caught_up.is_some(),
        "a watcher missed acknowledged events:\n{report}"
    );
    assert!(report.render().contains("events delivered/s"));

    cluster.shutdown().await?;
    Ok(())
}

/// The overload scenario, tiny: a one-second capacity run, 8 load services and 3 control
/// services for a couple of seconds. Only that it runs and reports what it looked at: no
/// count of false downs or delay is asserted (the machine may be busy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_runs_on_a_tiny_workload() -> anyhow::Result<()> {
    registry_tests::init_test_tracing();
    let mut cluster = InProcCluster::start(ClusterSpec {
        service_down_time: Duration::from_secs(3),
        ..ClusterSpec::default()
    })
    .await?;
    cluster.wait_for_leader(Duration::from_secs(20)).await?;
    let endpoints = cluster
        .configs
        .iter()
        .map(|c| c.listen.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let opts = bench::Options::try_parse_from([
        "registry-bench",
        "--registry",
        endpoints.as_str(),
        "overload",
        "--capacity-duration",
        "1s",
        "--capacity-warmup",
        "200ms",
        "--capacity-concurrency",
        "2",
        "--services",
        "8",
        "--interval",
        "500ms",
        "--duration",
        "2s",
        "--control",
        "3",
        "--control-stop",
        "500ms",
        "--margin",
        "2500ms",
        "--observe-every",
        "200ms",
    ])?;
    let report = bench::run(&opts).await?;
    println!("{report}");
    let o = report
        .overload
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("no overload figures:\n{report}"))?;
    assert_eq!((o.services, o.control.services), (8, 3), "{report}");
    assert_eq!(o.down_time, Duration::from_secs(3), "{report}");
    assert!(o.capacity.is_some_and(|c| c > 0.0), "{report}");
    assert_eq!(o.observed.nodes.len(), 3, "{report}");
    assert!(
        o.observed.looked(),
        "the observer did not list every node, or judged no load service:\n{report}"
    );
    assert_eq!(
        report.runs.len(),
        2,
        "capacity and overload runs:\n{report}"
    );
    let text = report.render();
    assert!(text.contains("false downs: services") && text.contains("control group"));

    cluster.shutdown().await?;
    Ok(())
}
