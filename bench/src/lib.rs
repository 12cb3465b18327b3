//! `registry-bench`: drives a running registry cluster over HTTP like real reporters do, and
//! the same workload against a running etcd cluster, and reports throughput, latency,
//! errors, memory and disk side by side.
//!
//! - [`opts`]: the command line ([`Options`]);
//! - [`workload`]: the simulated services and their request bodies, etcd keys and values;
//! - [`target`]: the systems under test behind one interface ([`target::Target`]);
//! - [`driver`]: the closed loop (C reporters at max rate) and the open loop (N services on a
//!   fixed schedule, latency from the scheduled send time);
//! - [`list`]: service-list timing at 1k, 10k, 100k services, with the term changes around
//!   each timed list;
//! - [`watch`]: events streamed to watchers, and what watching costs the write path;
//! - [`failover`]: leader kills under steady writes: time to the first acknowledged write,
//!   Raft term changes;
//! - [`overload`]: an open loop past capacity, counting the services that kept heartbeating
//!   but were listed `down`, with a control group that stops and must go `down`;
//! - [`stats`], [`procs`], [`report`]: histograms, RSS and disk, Markdown tables.
//!
//! [`run`] is the entry point; the binary only parses the command line and prints.
#![deny(missing_docs)]

pub mod driver;
pub mod failover;
pub mod list;
pub mod opts;
pub mod overload;
pub mod procs;
pub mod report;
pub mod stats;
pub mod target;
pub mod watch;
pub mod workload;

use std::sync::Arc;

pub use opts::Options;
pub use report::Report;

use driver::{ClosedSpec, OpenSpec};
use opts::{ClusterArgs, Command, TargetKind};
use procs::NodeProc;
use report::RunResult;
use target::registry::RegistryTarget;
use target::Target;
use workload::Groups;

/// How a target is driven.
enum Workload {
    Closed(ClosedSpec),
    Open(OpenSpec),
}

/// Runs what `opts` asks for against the running clusters it names.
pub async fn run(opts: &Options) -> anyhow::Result<Report> {
    let c = &opts.cluster;
    let mut report = Report::default();
    match &opts.command {
        Command::Closed(a) => {
            let services = a.services.unwrap_or(a.concurrency * a.batch).max(1);
            let groups = Groups::new(services, a.batch);
            report.title = format!(
                "closed loop: {} reporters, {} heartbeat(s)/request, {} services, {} s measured after {} s warm-up",
                a.concurrency,
                a.batch,
                services,
                a.duration.as_secs_f64(),
                a.warmup.as_secs_f64()
            );
            report.notes.push(
                "latency: from sending a request to its answer; each reporter has one request \
                 in flight"
                    .into(),
            );
            let spec = ClosedSpec {
                concurrency: a.concurrency.max(1),
                duration: a.duration,
                warmup: a.warmup,
                timeout: c.timeout,
            };
            let mode = format!("closed c={} b={}", a.concurrency, a.batch);
            run_targets(c, &Workload::Closed(spec), groups, &mode, &mut report).await?;
        }
        Command::Open(a) => {
            let groups = Groups::new(a.services, a.batch);
            let warmup = a.warmup.unwrap_or(a.interval);
            let sample_every = a.sample_every.unwrap_or(a.duration / 6);
            report.title = format!(
                "open loop: {} services every {} s, {} heartbeat(s)/request ({:.0} requests/s scheduled), {} s measured after {} s warm-up",
                a.services,
                a.interval.as_secs_f64(),
                a.batch,
                groups.count() as f64 / a.interval.as_secs_f64().max(1e-9),
                a.duration.as_secs_f64(),
                warmup.as_secs_f64()
            );
            report.notes.push(
                "latency: from the scheduled send time to the answer (a send delayed by \
                 overload counts its delay)"
                    .into(),
            );
            let spec = OpenSpec {
                interval: a.interval,
                duration: a.duration,
                warmup,
                max_in_flight: a.max_in_flight,
                sample_every,
                timeout: c.timeout,
                skip_when_full: None,
            };
            let mode = format!(
                "open n={} i={}s b={}",
                a.services,
                a.interval.as_secs_f64(),
                a.batch
            );
            run_targets(c, &Workload::Open(spec), groups, &mode, &mut report).await?;
        }
        Command::List(a) => {
            report.title = format!(
                "service list: {} timed requests per list, after registering {:?} services",
                a.repeat, a.sizes
            );
            report.notes.push(
                "registry: time to the last byte of the JSON answer, read as it streams in (not \
                 parsed, not gathered into one buffer); etcd: time to the decoded range answer; \
                 `stale` is etcd's serializable read"
                    .into(),
            );
            for kind in &c.targets {
                match kind {
                    TargetKind::Registry => report.lists.extend(
                        list::registry(
                            &c.registry,
                            &c.prefix,
                            a,
                            c.timeout,
                            c.registry_token.as_deref(),
                            c.registry_cacert.as_deref(),
                        )
                        .await?,
                    ),
                    TargetKind::EtcdPut => report.lists.extend(etcd_lists(c, a).await?),
                    TargetKind::EtcdLease => {
                        report.notes.push("etcd-lease has no list: skipped".into())
                    }
                }
            }
        }
        Command::Watch(a) => {
            report.title = format!(
                "watching: {} watchers of one follower at {} services; {} s streaming, \
                 write path {} s per case after {} s warm-up",
                a.watchers,
                a.services,
                a.duration.as_secs_f64(),
                a.cost_duration.as_secs_f64(),
                a.cost_warmup.as_secs_f64()
            );
            if c.targets.iter().any(|t| *t != TargetKind::Registry) {
                report.notes.push(
                    "etcd: no watch scenario (its watch streams key revisions, not liveness \
                     events derived from a log: not comparable): skipped"
                        .into(),
                );
            }
            if c.targets.contains(&TargetKind::Registry) {
                watch::registry(c, a, &mut report).await?;
            }
        }
        Command::Failover(a) => {
            report.title = format!(
                "failover: {} SIGKILLs of the registry leader under steady writes ({} writers)",
                a.kills, a.writers
            );
            if c.targets.iter().any(|t| *t != TargetKind::Registry) {
                report.notes.push(
                    "etcd: no failover scenario (its members are not killed): skipped".into(),
                );
            }
            if c.targets.contains(&TargetKind::Registry) {
                failover::registry(c, a, &mut report).await?;
            }
        }
        Command::Overload(a) => {
            let load = match a.services {
                Some(n) => format!("of {n} services"),
                None => format!("at {:.2} × the measured capacity", a.overload),
            };
            report.title = format!(
                "overload: an open loop {load}, one heartbeat per request every {} s, with \
                 a false-down observer and a control group of {}",
                a.interval.as_secs_f64(),
                a.control
            );
            if c.targets.iter().any(|t| *t != TargetKind::Registry) {
                report.notes.push(
                    "etcd: no overload scenario (it lists no service up or down): skipped".into(),
                );
            }
            if c.targets.contains(&TargetKind::Registry) {
                overload::registry(c, a, &mut report).await?;
            }
        }
    }
    Ok(report)
}

async fn run_targets(
    c: &ClusterArgs,
    workload: &Workload,
    groups: Groups,
    mode: &str,
    report: &mut Report,
) -> anyhow::Result<()> {
    let reg_nodes = NodeProc::list(
        "registry",
        c.registry.len(),
        &c.registry_pids,
        &c.registry_pid_files,
        &c.registry_data_dirs,
    );
    for kind in &c.targets {
        match kind {
            TargetKind::Registry => {
                let t = RegistryTarget::of_cluster(c, groups)?;
                report.notes.push(format!(
                    "registry: requests spread over {} node(s); a follower forwards to the leader",
                    c.registry.len()
                ));
                report
                    .runs
                    .push(drive(Arc::new(t), workload, &reg_nodes, mode).await);
            }
            TargetKind::EtcdPut | TargetKind::EtcdLease => {
                if let Some(r) = etcd_run(c, *kind, workload, groups, mode, report).await? {
                    report.runs.push(r);
                }
            }
        }
    }
    Ok(())
}

async fn drive<T: Target>(
    target: Arc<T>,
    workload: &Workload,
    nodes: &[NodeProc],
    mode: &str,
) -> RunResult {
    match workload {
        Workload::Closed(spec) => driver::closed(target, spec, nodes, mode.to_string()).await,
        Workload::Open(spec) => driver::open(target, spec, nodes, mode.to_string()).await,
    }
}

#[cfg(feature = "etcd")]
async fn etcd_run(
    c: &ClusterArgs,
    kind: TargetKind,
    workload: &Workload,
    groups: Groups,
    mode: &str,
    report: &mut Report,
) -> anyhow::Result<Option<RunResult>> {
    use target::etcd::{EtcdLeaseTarget, EtcdPutTarget};
    let nodes = NodeProc::list(
        "etcd",
        c.etcd.len(),
        &c.etcd_pids,
        &c.etcd_pid_files,
        &c.etcd_data_dirs,
    );
    let conns = c.etcd_conns.max(1);
    Ok(Some(match kind {
        TargetKind::EtcdLease => {
            if groups.batch != 1 {
                report.notes.push(
                    "etcd-lease: one keep-alive per request only (--batch 1): skipped".into(),
                );
                return Ok(None);
            }
            report.notes.push(
                "etcd-lease: one lease per service, each kept alive on its own stream; etcd's \
                 leader renews leases in memory (not through its Raft log): not durable"
                    .into(),
            );
            let t = EtcdLeaseTarget::new(&c.etcd, conns, groups.services, c.lease_ttl, c.timeout)
                .await?;
            drive(Arc::new(t), workload, &nodes, mode).await
        }
        _ => {
            report.notes.push(format!(
                "etcd-put: one put (a txn of puts for a batch) of a {}-byte JSON record per \
                 service to its own key; {} gRPC connection(s) per member; fsync on",
                workload::etcd_value(&c.prefix, 0).len(),
                conns
            ));
            let t = EtcdPutTarget::new(&c.etcd, conns, &c.prefix, groups, c.timeout).await?;
            drive(Arc::new(t), workload, &nodes, mode).await
        }
    }))
}

#[cfg(not(feature = "etcd"))]
async fn etcd_run(
    _c: &ClusterArgs,
    _kind: TargetKind,
    _workload: &Workload,
    _groups: Groups,
    _mode: &str,
    _report: &mut Report,
) -> anyhow::Result<Option<RunResult>> {
    Err(no_etcd())
}

#[cfg(feature = "etcd")]
async fn etcd_lists(c: &ClusterArgs, a: &opts::ListArgs) -> anyhow::Result<Vec<report::ListRow>> {
    list::etcd(&c.etcd, &c.prefix, a, c.timeout).await
}

#[cfg(not(feature = "etcd"))]
async fn etcd_lists(_c: &ClusterArgs, _a: &opts::ListArgs) -> anyhow::Result<Vec<report::ListRow>> {
    Err(no_etcd())
}

#[cfg(not(feature = "etcd"))]
fn no_etcd() -> anyhow::Error {
    anyhow::anyhow!(
        "this registry-bench was built without the etcd targets: \
         cargo build --release -p bench --features etcd (needs protoc)"
    )
}

/// The words of a command line, quoted for a POSIX shell where needed.
pub fn shell_join(args: impl IntoIterator<Item = String>) -> String {
    args.into_iter()
        .map(|a| {
            let plain = !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c));
            if plain {
                a
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
