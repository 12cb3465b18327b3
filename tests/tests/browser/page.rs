//! What the tests read of the dashboard, and the cluster they open it on.

use std::time::Duration;

use registry_api::wire::HeartbeatIn;
use registry_tests::procs::{ProcCluster, ProcSpec};
use serde_json::Value;

use crate::driver::{Browser, WAIT};

/// Nodes of the tests' clusters keep a service `up` this long after its last heartbeat: long
/// enough that no service goes down by itself during a test.
pub const DOWN_TIME: Duration = Duration::from_secs(120);

/// A three-node cluster with a leader, every service up until forced down.
pub async fn cluster() -> anyhow::Result<ProcCluster> {
    let c = ProcCluster::start(spec())?;
    c.wait_for_leader(WAIT).await?;
    Ok(c)
}

/// The tests' cluster settings.
pub fn spec() -> ProcSpec {
    ProcSpec {
        service_down_time: DOWN_TIME,
        ..ProcSpec::default()
    }
}

/// A heartbeat of `host`/`binary` in `zone`.
pub fn beat(host: &str, binary: &str, zone: &str) -> HeartbeatIn {
    HeartbeatIn {
        availability_zone: Some(zone.into()),
        ..HeartbeatIn::new(host, binary)
    }
}

/// The dashboard's address on node index `i`.
pub fn url(c: &ProcCluster, i: usize) -> String {
    format!("http://{}/ui/", c.nodes[i].addr)
}

/// Script returning the drawn rows of the services table (and the page's counters).
pub const ROWS: &str = r#"
const rows = Array.from(document.querySelectorAll('#service-rows tr')).map((tr) => ({
  host: tr.dataset.host,
  binary: tr.dataset.binary,
  zone: tr.dataset.zone,
  state: tr.querySelector('td.state').dataset.state,
  status: tr.querySelector('td.status').dataset.status,
  reason: tr.querySelector('td.reason').dataset.reason,
}));
return {
  rows,
  live: document.getElementById('live').dataset.state,
  listed: Number(document.body.dataset.listed || 0),
  events: Number(document.body.dataset.events || 0),
  role: document.getElementById('role').dataset.role,
  csp: Number(document.body.dataset.cspViolations || 0),
  error: document.getElementById('error').hidden ? null : document.getElementById('error-text').textContent,
};
"#;

/// The drawn row of `host`/`binary` in what [`ROWS`] returned.
pub fn row<'a>(seen: &'a Value, host: &str, binary: &str) -> Option<&'a Value> {
    seen["rows"]
        .as_array()?
        .iter()
        .find(|r| r["host"] == host && r["binary"] == binary)
}

/// Waits until the page shows a row for each of `hosts` (binary `binary`) with `state`,
/// and its event stream is live; returns what [`ROWS`] saw.
pub async fn wait_rows(
    b: &Browser,
    hosts: &[&str],
    binary: &str,
    state: &str,
) -> anyhow::Result<Value> {
    b.wait_for(
        &format!("rows of {hosts:?} ({binary}) {state}, stream live"),
        ROWS,
        |seen| {
            let all = hosts
                .iter()
                .all(|h| row(seen, h, binary).is_some_and(|r| r["state"] == state));
            (all && seen["live"] == "live").then(|| seen.clone())
        },
    )
    .await
    .inspect(|seen| {
        assert_eq!(
            seen["csp"], 0,
            "the page does nothing its Content-Security-Policy blocks: {seen}"
        );
    })
}
