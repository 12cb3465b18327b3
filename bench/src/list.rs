//! Service-list timing: register services with batched heartbeats (etcd: txns of puts) up
//! to each size, then time the full list (linearizable and stale, on the leader and on a
//! follower) and a host-filtered list.

use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt, TryStreamExt};
use registry_api::wire::{ClusterOut, ServicesOut};

use crate::opts::ListArgs;
use crate::report::{term_changes, ListRow};
use crate::stats::{Failure, Stats};
use crate::target::registry::{
    base_url, check_answer, highest_term, http_client, transport_failure,
};
use crate::workload::{host, registry_bodies, Groups};

/// How long the nodes may take to apply what was registered.
const CATCH_UP: Duration = Duration::from_secs(60);

/// One list to time: its name, the node that serves it, and its query string.
struct Variant {
    name: &'static str,
    served_by: &'static str,
    base: String,
    query: String,
}

/// Times the registry's lists at every size of `args.sizes`.
pub async fn registry(
    endpoints: &[String],
    prefix: &str,
    args: &ListArgs,
    timeout: Duration,
    token: Option<&str>,
    ca: Option<&std::path::Path>,
) -> anyhow::Result<Vec<ListRow>> {
    anyhow::ensure!(!endpoints.is_empty(), "no registry endpoint (--registry)");
    let http = http_client(timeout.max(Duration::from_secs(60)), token, ca)?;
    let bases: Vec<String> = endpoints.iter().map(|e| base_url(e)).collect();
    let (leader, follower) = leader_and_follower(&http, &bases).await?;

    let mut rows = Vec::new();
    let mut registered = 0;
    let cluster_urls: Vec<String> = bases.iter().map(|b| format!("{b}/v1/cluster")).collect();
    let mut term = highest_term(&http, &cluster_urls).await;
    for &size in &args.sizes {
        if size > registered {
            register(
                &http,
                &leader,
                prefix,
                registered..size,
                args.register_batch,
                args.register_concurrency,
            )
            .await?;
            registered = size;
        }
        wait_applied(&http, &bases, size).await?;
        let host = host(prefix, size / 2);
        let variants = [
            ("full linearizable", "leader", &leader, String::new()),
            ("full stale", "leader", &leader, "consistency=stale".into()),
            ("full linearizable", "follower", &follower, String::new()),
            (
                "full stale",
                "follower",
                &follower,
                "consistency=stale".into(),
            ),
            (
                "host linearizable",
                "leader",
                &leader,
                format!("host={host}"),
            ),
            (
                "host stale",
                "leader",
                &leader,
                format!("host={host}&consistency=stale"),
            ),
        ]
        .map(|(name, served_by, base, query)| Variant {
            name,
            served_by,
            base: base.clone(),
            query,
        });
        for v in variants {
            let mut row = time_registry_list(&http, size, &v, args.repeat).await?;
            let now = highest_term(&http, &cluster_urls).await;
            row.term_changes = term_changes(term, now);
            term = now.or(term);
            rows.push(row);
        }
    }
    Ok(rows)
}

/// The base URLs of the leader and of a follower (the first of `bases` that is not the
/// leader; the leader itself in a one-node cluster), as the first node sees them.
pub(crate) async fn leader_and_follower(
    http: &reqwest::Client,
    bases: &[String],
) -> anyhow::Result<(String, String)> {
    let first = bases
        .first()
        .ok_or_else(|| anyhow::anyhow!("no registry endpoint (--registry)"))?;
    let cluster: ClusterOut = get_json(http, &format!("{first}/v1/cluster")).await?;
    let leader_addr = cluster
        .leader_addr
        .ok_or_else(|| anyhow::anyhow!("the registry has no leader"))?;
    let leader = base_url(&leader_addr);
    let follower = bases
        .iter()
        .find(|b| **b != leader)
        .cloned()
        .unwrap_or_else(|| leader.clone());
    Ok((leader, follower))
}

pub(crate) async fn get_json<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
) -> anyhow::Result<T> {
    let resp = http.get(url).send().await?;
    let body = check_answer(resp)
        .await
        .map_err(|f| anyhow::anyhow!("GET {url}: {}: {}", f.kind, f.detail))?;
    Ok(serde_json::from_slice(&body)?)
}

/// Registers services `range` (`from..to`) through the leader, in heartbeats of `batch`
/// services per request, `concurrency` requests at once.
pub(crate) async fn register(
    http: &reqwest::Client,
    leader: &str,
    prefix: &str,
    range: std::ops::Range<usize>,
    batch: usize,
    concurrency: usize,
) -> anyhow::Result<()> {
    let (from, to) = (range.start, range.end);
    let batch = batch.clamp(1, registry_api::wire::MAX_BATCH);
    // Bodies for services 0..to, of which only the groups at or past `from` are sent.
    let groups = Groups::new(to, batch);
    let first = from / batch;
    let bodies = registry_bodies(prefix, groups);
    let url = format!("{leader}/v1/heartbeats");
    stream::iter(bodies.into_iter().skip(first))
        .map(|body| {
            let req = http
                .post(&url)
                .header("content-type", "application/json")
                .body(body);
            async move {
                let resp = req.send().await.map_err(|e| transport_failure(&e))?;
                check_answer(resp).await.map(|_| ())
            }
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect::<Vec<()>>()
        .await
        .map_err(|f: Failure| anyhow::anyhow!("registering services: {}: {}", f.kind, f.detail))?;
    Ok(())
}

/// Waits until every node's state machine holds at least `records` records.
pub(crate) async fn wait_applied(
    http: &reqwest::Client,
    bases: &[String],
    records: usize,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + CATCH_UP;
    for base in bases {
        loop {
            let c: ClusterOut = get_json(http, &format!("{base}/v1/cluster")).await?;
            if c.records >= records {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{base} holds {} records, not {records}, after {CATCH_UP:?}",
                c.records
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

/// Reads a timed answer to its last byte as it arrives, counting the bytes without keeping
/// them, and returns the count: the time of a list is the server's and the connection's,
/// not that of gathering 48 MiB into one buffer (`reqwest`'s `bytes()` grows one as the
/// chunks arrive, which on the machine of `BENCHMARKS.md` took as long again as the
/// transfer). A cut answer fails (`chunk` errs on a chunked body that ends early); one that
/// is not a success is read whole for its error.
async fn drain_answer(mut resp: reqwest::Response) -> Result<usize, Failure> {
    if !resp.status().is_success() {
        return check_answer(resp).await.map(|b| b.len());
    }
    let mut n = 0;
    while let Some(chunk) = resp.chunk().await.map_err(|e| transport_failure(&e))? {
        n += chunk.len();
    }
    Ok(n)
}

async fn time_registry_list(
    http: &reqwest::Client,
    services: usize,
    v: &Variant,
    repeat: usize,
) -> anyhow::Result<ListRow> {
    let url = if v.query.is_empty() {
        format!("{}/v1/services", v.base)
    } else {
        format!("{}/v1/services?{}", v.base, v.query)
    };
    // One untimed request, parsed, to check the answer (and warm the connection).
    let resp = http.get(&url).send().await?;
    let body = check_answer(resp)
        .await
        .map_err(|f| anyhow::anyhow!("GET {url}: {}: {}", f.kind, f.detail))?;
    let count = serde_json::from_slice::<ServicesOut>(&body)?.services.len();
    let bytes = body.len();
    let mut stats = Stats::new();
    for _ in 0..repeat {
        let t0 = Instant::now();
        let res = match http.get(&url).send().await {
            Ok(resp) => drain_answer(resp).await,
            Err(e) => Err(transport_failure(&e)),
        };
        match res {
            Ok(_) => stats.record_ok(t0.elapsed(), 0),
            Err(f) => stats.record_err(f),
        }
    }
    Ok(ListRow {
        target: "registry".into(),
        services,
        variant: v.name.into(),
        served_by: v.served_by.into(),
        count,
        bytes,
        stats,
        term_changes: None,
    })
}

/// Times etcd's ranges at every size of `args.sizes`: the whole service prefix
/// (linearizable, serializable) on the leader and on a follower, and one host's prefix.
#[cfg(feature = "etcd")]
pub async fn etcd(
    endpoints: &[String],
    prefix: &str,
    args: &ListArgs,
    timeout: Duration,
) -> anyhow::Result<Vec<ListRow>> {
    use crate::target::etcd::{connect, members, raft_term, range, register};
    use crate::workload::{etcd_host_prefix, ETCD_PREFIX};

    let clients = connect(endpoints, 1, timeout.max(Duration::from_secs(60))).await?;
    let (leader_id, ids) = members(&clients).await?;
    let leader_i = ids.iter().position(|id| *id == leader_id).unwrap_or(0);
    let follower_i = (0..clients.len()).find(|i| *i != leader_i).unwrap_or(0);
    let leader = &clients[leader_i][0];
    let follower = &clients[follower_i][0];
    let maintenance: Vec<_> = clients.iter().map(|c| c[0].maintenance_client()).collect();

    let mut rows = Vec::new();
    let mut registered = 0;
    let mut term = raft_term(&maintenance).await;
    for &size in &args.sizes {
        if size > registered {
            register(
                leader,
                prefix,
                registered..size,
                args.register_batch,
                args.register_concurrency,
            )
            .await?;
            registered = size;
        }
        let host_prefix = etcd_host_prefix(prefix, size / 2);
        let variants: [(&str, &str, &etcd_client::Client, &str, bool); 6] = [
            ("full linearizable", "leader", leader, ETCD_PREFIX, false),
            ("full stale", "leader", leader, ETCD_PREFIX, true),
            (
                "full linearizable",
                "follower",
                follower,
                ETCD_PREFIX,
                false,
            ),
            ("full stale", "follower", follower, ETCD_PREFIX, true),
            ("host linearizable", "leader", leader, &host_prefix, false),
            ("host stale", "leader", leader, &host_prefix, true),
        ];
        for (name, served_by, client, key_prefix, serializable) in variants {
            let (count, bytes) = range(client, key_prefix, serializable).await.map_err(|f| {
                anyhow::anyhow!("etcd range {key_prefix}: {}: {}", f.kind, f.detail)
            })?;
            let mut stats = Stats::new();
            for _ in 0..args.repeat {
                let t0 = Instant::now();
                match range(client, key_prefix, serializable).await {
                    Ok(_) => stats.record_ok(t0.elapsed(), 0),
                    Err(f) => stats.record_err(f),
                }
            }
            let now = raft_term(&maintenance).await;
            rows.push(ListRow {
                target: "etcd".into(),
                services: size,
                variant: name.into(),
                served_by: served_by.into(),
                count,
                bytes,
                stats,
                term_changes: term_changes(term, now),
            });
            term = now.or(term);
        }
    }
    Ok(rows)
}
