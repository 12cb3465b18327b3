//! etcd v3 over gRPC (crate `etcd-client`): the same services as puts of their record to
//! their own key (a txn of puts for a batch), or as leases kept alive; and ranges for the
//! service-list comparison.

use std::time::Duration;

use etcd_client::{
    Client, ConnectOptions, GetOptions, KvClient, LeaseClient, LeaseKeepAliveStream, LeaseKeeper,
    MaintenanceClient, Txn, TxnOp,
};
use futures::stream::{self, StreamExt, TryStreamExt};
use tokio::sync::Mutex;

use super::Target;
use crate::stats::Failure;
use crate::workload::{etcd_key, etcd_value, Groups};

/// Largest range answer a client accepts (100k records are about 60 MB).
const MAX_DECODING: usize = 1 << 30;

/// Groups an etcd client error into a kind.
pub fn failure(e: &etcd_client::Error) -> Failure {
    let kind = match e {
        etcd_client::Error::GRpcStatus(s) => format!("grpc {:?}", s.code()),
        etcd_client::Error::TransportError(_) => "transport".into(),
        etcd_client::Error::LeaseKeepAliveError(_) => "lease keep-alive".into(),
        other => {
            let s = format!("{other:?}");
            s.split(['(', ' ', '{'])
                .next()
                .unwrap_or("other")
                .to_string()
        }
    };
    Failure::new(kind, e)
}

/// `conns` clients (each its own connection) to every endpoint, endpoint-major.
pub async fn connect(
    endpoints: &[String],
    conns: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<Vec<Client>>> {
    anyhow::ensure!(!endpoints.is_empty(), "no etcd endpoint (--etcd)");
    let mut all = Vec::with_capacity(endpoints.len());
    for ep in endpoints {
        let url = if ep.starts_with("http://") {
            ep.clone()
        } else {
            format!("http://{ep}")
        };
        let mut per = Vec::with_capacity(conns.max(1));
        for _ in 0..conns.max(1) {
            let opts = ConnectOptions::new()
                .with_timeout(timeout)
                .with_connect_timeout(Duration::from_secs(5));
            let client = Client::connect([url.as_str()], Some(opts))
                .await
                .map_err(|e| anyhow::anyhow!("cannot connect to etcd at {url}: {e}"))?;
            per.push(client);
        }
        all.push(per);
    }
    Ok(all)
}

/// One maintenance client per endpoint (on its first connection), for the Raft term.
fn maintenance(clients: &[Vec<Client>]) -> Vec<MaintenanceClient> {
    clients
        .iter()
        .filter_map(|per| per.first().map(Client::maintenance_client))
        .collect()
}

/// The highest `raft_term` of the members' status answers (`None` when none answered).
pub(crate) async fn raft_term(members: &[MaintenanceClient]) -> Option<u64> {
    let reads = members.iter().map(|m| {
        let mut m = m.clone();
        async move { m.status().await.ok().map(|s| s.raft_term()) }
    });
    futures::future::join_all(reads)
        .await
        .into_iter()
        .flatten()
        .max()
}

/// etcd puts as a [`Target`].
pub struct EtcdPutTarget {
    kv: Vec<Vec<KvClient>>,
    maintenance: Vec<MaintenanceClient>,
    groups: Groups,
    keys: Vec<Vec<u8>>,
    values: Vec<Vec<u8>>,
}

impl EtcdPutTarget {
    /// Connects and prepares the keys and values of `groups`.
    pub async fn new(
        endpoints: &[String],
        conns: usize,
        prefix: &str,
        groups: Groups,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let clients = connect(endpoints, conns, timeout).await?;
        Ok(Self {
            kv: clients
                .iter()
                .map(|per| per.iter().map(Client::kv_client).collect())
                .collect(),
            maintenance: maintenance(&clients),
            groups,
            keys: (0..groups.services)
                .map(|i| etcd_key(prefix, i).into_bytes())
                .collect(),
            values: (0..groups.services)
                .map(|i| etcd_value(prefix, i))
                .collect(),
        })
    }
}

impl Target for EtcdPutTarget {
    fn label(&self) -> String {
        if self.groups.batch == 1 {
            "etcd-put".into()
        } else {
            format!("etcd-txn({} puts)", self.groups.batch)
        }
    }

    fn groups(&self) -> usize {
        self.groups.count()
    }

    fn beats_in(&self, group: usize) -> usize {
        self.groups.members(group).len()
    }

    fn endpoints(&self) -> usize {
        self.kv.len()
    }

    async fn send(&self, lane: usize, endpoint: usize, group: usize) -> Result<(), Failure> {
        let per = &self.kv[endpoint % self.kv.len()];
        let mut kv = per[lane % per.len()].clone();
        let members = self.groups.members(group);
        if members.len() == 1 {
            let i = members.start;
            kv.put(self.keys[i].clone(), self.values[i].clone(), None)
                .await
                .map(|_| ())
                .map_err(|e| failure(&e))
        } else {
            let ops: Vec<TxnOp> = members
                .map(|i| TxnOp::put(self.keys[i].clone(), self.values[i].clone(), None))
                .collect();
            let resp = kv
                .txn(Txn::new().and_then(ops))
                .await
                .map_err(|e| failure(&e))?;
            if resp.succeeded() {
                Ok(())
            } else {
                Err(Failure::new(
                    "txn not succeeded",
                    "txn answered succeeded=false",
                ))
            }
        }
    }

    async fn raft_term(&self) -> Option<u64> {
        raft_term(&self.maintenance).await
    }
}

/// A lease's keep-alive stream, opened at its first keep-alive.
type Keeper = (LeaseKeeper, LeaseKeepAliveStream);

/// etcd lease keep-alives as a [`Target`]: one lease per service, granted up front; each
/// heartbeat is one keep-alive request and its answer on the lease's own stream.
pub struct EtcdLeaseTarget {
    lease: Vec<Vec<LeaseClient>>,
    maintenance: Vec<MaintenanceClient>,
    ids: Vec<i64>,
    keepers: Vec<Mutex<Option<Keeper>>>,
}

impl EtcdLeaseTarget {
    /// Connects and grants one lease of `ttl` seconds per service.
    pub async fn new(
        endpoints: &[String],
        conns: usize,
        services: usize,
        ttl: i64,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let clients = connect(endpoints, conns, timeout).await?;
        let lease: Vec<Vec<LeaseClient>> = clients
            .iter()
            .map(|per| per.iter().map(Client::lease_client).collect())
            .collect();
        let granter = lease[0][0].clone();
        let ids: Vec<i64> = stream::iter(0..services)
            .map(|_| {
                let mut c = granter.clone();
                async move { c.grant(ttl, None).await.map(|r| r.id()) }
            })
            .buffered(64)
            .try_collect()
            .await
            .map_err(|e| anyhow::anyhow!("granting {services} etcd leases: {e}"))?;
        Ok(Self {
            lease,
            maintenance: maintenance(&clients),
            keepers: ids.iter().map(|_| Mutex::new(None)).collect(),
            ids,
        })
    }
}

impl Target for EtcdLeaseTarget {
    fn label(&self) -> String {
        "etcd-lease".into()
    }

    fn groups(&self) -> usize {
        self.ids.len()
    }

    fn beats_in(&self, _group: usize) -> usize {
        1
    }

    fn endpoints(&self) -> usize {
        self.lease.len()
    }

    async fn send(&self, lane: usize, endpoint: usize, group: usize) -> Result<(), Failure> {
        let mut slot = self.keepers[group].lock().await;
        let res = match slot.as_mut() {
            None => {
                // Opening the stream sends the first keep-alive and waits for its answer.
                let per = &self.lease[endpoint % self.lease.len()];
                let mut client = per[lane % per.len()].clone();
                client
                    .keep_alive(self.ids[group])
                    .await
                    .map(|k| *slot = Some(k))
                    .map_err(|e| failure(&e))
            }
            Some((keeper, stream)) => match keeper.keep_alive().await {
                Err(e) => Err(failure(&e)),
                Ok(()) => match stream.message().await {
                    Ok(Some(r)) if r.ttl() > 0 => Ok(()),
                    Ok(Some(_)) => Err(Failure::new("lease expired", "keep-alive answered ttl 0")),
                    Ok(None) => Err(Failure::new("stream closed", "keep-alive stream ended")),
                    Err(e) => Err(failure(&e)),
                },
            },
        };
        if res.is_err() {
            *slot = None;
        }
        res
    }

    async fn raft_term(&self) -> Option<u64> {
        raft_term(&self.maintenance).await
    }
}

/// The member id of the leader, and the id of the member behind each endpoint.
pub async fn members(clients: &[Vec<Client>]) -> anyhow::Result<(u64, Vec<u64>)> {
    let mut leader = 0;
    let mut ids = Vec::new();
    for per in clients {
        let mut c = per[0].clone();
        let status = c.status().await?;
        leader = status.leader();
        ids.push(status.header().map_or(0, |h| h.member_id()));
    }
    Ok((leader, ids))
}

/// A range of every key under `prefix`: the number of keys and the bytes of their values.
pub async fn range(
    client: &Client,
    prefix: &str,
    serializable: bool,
) -> Result<(usize, usize), Failure> {
    let mut kv = client.kv_client().max_decoding_message_size(MAX_DECODING);
    let mut opts = GetOptions::new().with_prefix();
    if serializable {
        opts = opts.with_serializable();
    }
    let resp = kv.get(prefix, Some(opts)).await.map_err(|e| failure(&e))?;
    let bytes = resp.kvs().iter().map(|kv| kv.value().len()).sum();
    Ok((resp.kvs().len(), bytes))
}

/// Puts services `range` (records of `prefix`) in txns of `batch` puts, `concurrency` at a
/// time, through the first endpoint.
pub async fn register(
    client: &Client,
    prefix: &str,
    range: std::ops::Range<usize>,
    batch: usize,
    concurrency: usize,
) -> anyhow::Result<()> {
    let batch = batch.clamp(1, 128);
    let starts: Vec<usize> = range.clone().step_by(batch).collect();
    let end = range.end;
    stream::iter(starts)
        .map(|start| {
            let mut kv = client.kv_client();
            async move {
                let ops: Vec<TxnOp> = (start..(start + batch).min(end))
                    .map(|i| TxnOp::put(etcd_key(prefix, i), etcd_value(prefix, i), None))
                    .collect();
                kv.txn(Txn::new().and_then(ops)).await.map(|_| ())
            }
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect::<Vec<()>>()
        .await
        .map_err(|e| anyhow::anyhow!("registering services in etcd: {e}"))?;
    Ok(())
}
