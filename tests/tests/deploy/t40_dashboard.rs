//! `deploy/grafana/registry.json` uses only metrics the nodes expose: every metric name in
//! every panel's queries (and in the dashboard's variables) is found in the `/metrics` of a
//! real cluster's nodes, one that has TLS, a leader with followers, and services in zones, so
//! that every metric a node can show is there.

use std::collections::BTreeSet;
use std::time::Duration;

use registry_api::wire::HeartbeatIn;
use registry_tests::init_test_tracing;
use registry_tests::procs::{with_logs, ProcCluster, ProcSpec};

use crate::repo_file;

/// The `registry_*` names in a query.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("registry_") {
        let before = rest[..at].chars().next_back();
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(tail.len());
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            names.push(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    names
}

/// Every query string of the dashboard: panels' (rows' nested ones too) targets' `expr`, and
/// the query variables' `query` and `definition`; with the title of what holds it.
fn queries(dashboard: &serde_json::Value) -> Vec<(String, String)> {
    fn panels(list: &serde_json::Value, out: &mut Vec<(String, String)>) {
        for p in list.as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or("?").to_string();
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(e) = t["expr"].as_str() {
                    out.push((title.clone(), e.to_string()));
                }
            }
            panels(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    panels(&dashboard["panels"], &mut out);
    // A `datasource` variable's query is a plugin's name, not PromQL.
    let variables = dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten();
    for v in variables.filter(|v| v["type"] == "query") {
        let name = format!("variable {}", v["name"].as_str().unwrap_or("?"));
        for q in [&v["query"]["query"], &v["query"], &v["definition"]] {
            if let Some(q) = q.as_str() {
                out.push((name.clone(), q.to_string()));
            }
        }
    }
    out
}

#[test]
fn metric_names_are_found_in_queries() {
    assert_eq!(
        metric_names(
            "sum(rate(registry_a_total{x=\"registry_no\"}[1m])) / registry_b:c + xregistry_d"
        ),
        ["registry_a_total", "registry_no", "registry_b:c"]
    );
}

/// Every panel has a query, every query names a `registry_` metric, and every name is in the
/// scraped `/metrics` of a TLS cluster (all three nodes, after heartbeats in two zones, so the
/// leader's replication figures, the zones and the certificates are there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_metrics_exist_on_real_nodes() -> anyhow::Result<()> {
    init_test_tracing();
    let text = std::fs::read_to_string(repo_file("deploy/grafana/registry.json"))?;
    let dashboard: serde_json::Value = serde_json::from_str(&text)?;
    let all = queries(&dashboard);
    let graphs = dashboard["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["type"] != "row")
        .count();
    let with_query: BTreeSet<&str> = all.iter().map(|(t, _)| t.as_str()).collect();
    assert!(graphs >= 10, "the dashboard has its panels ({graphs})");
    for p in dashboard["panels"].as_array().into_iter().flatten() {
        if p["type"] != "row" {
            let title = p["title"].as_str().unwrap_or("?");
            assert!(with_query.contains(title), "panel {title:?} has a query");
        }
    }

    let mut c = ProcCluster::start(ProcSpec {
        tls: true,
        ..ProcSpec::default()
    })?;
    let mut names = BTreeSet::new();
    with_logs(&mut c, async |c| {
        c.wait_for_leader(Duration::from_secs(30)).await?;
        for (host, zone) in [("dash-a", "az1"), ("dash-b", "az2")] {
            let mut h = HeartbeatIn::new(host, "cinder-volume");
            h.availability_zone = Some(zone.into());
            c.client_all().heartbeat(&[h]).await?;
        }
        for i in 0..3 {
            names.extend(c.metrics(i).await?.samples.into_iter().map(|s| s.name));
        }
        Ok(())
    })
    .await?;
    let mut checked = 0;
    for (title, expr) in &all {
        let used = metric_names(expr);
        assert!(
            !used.is_empty(),
            "{title}: {expr:?} names no registry metric"
        );
        for name in used {
            assert!(
                names.contains(&name),
                "{title}: {name} is not in any node's /metrics (exposed: {names:?})"
            );
            checked += 1;
        }
    }
    println!(
        "{checked} metric names in {} queries of {graphs} panels, all in /metrics",
        all.len()
    );
    Ok(())
}
