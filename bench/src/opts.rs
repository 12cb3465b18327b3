//! The command line: which cluster to drive, which targets, and the workload.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Drives a running registry cluster (and, to compare, a running etcd cluster) over the
/// network like real reporters do, and prints throughput, latency, memory and disk figures.
#[derive(Debug, Clone, Parser)]
#[command(name = "registry-bench", version)]
pub struct Options {
    /// The clusters and the targets.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// The workload.
    #[command(subcommand)]
    pub command: Command,
}

/// What to drive: endpoints, the processes behind them, the targets.
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// Registry endpoints (`host:port`, comma separated); reporters are spread across them.
    #[arg(long, value_delimiter = ',', global = true)]
    pub registry: Vec<String>,
    /// PIDs of the registry nodes, in endpoint order (for their RSS).
    #[arg(long = "registry-pid", value_delimiter = ',', global = true)]
    pub registry_pids: Vec<u32>,
    /// PID files of the registry nodes, in endpoint order (read at every sample).
    #[arg(long = "registry-pid-file", value_delimiter = ',', global = true)]
    pub registry_pid_files: Vec<PathBuf>,
    /// Data directories of the registry nodes, in endpoint order (for their size on disk).
    #[arg(long = "registry-data-dir", value_delimiter = ',', global = true)]
    pub registry_data_dirs: Vec<PathBuf>,
    /// Token sent to the registry as `Authorization: Bearer TOKEN` (a `reporter` or `admin`
    /// token, where the cluster requires one).
    #[arg(
        long,
        env = "REGISTRY_BENCH_TOKEN",
        global = true,
        hide_env_values = true
    )]
    pub registry_token: Option<String>,
    /// PEM bundle of the CA that signed the registry nodes' certificates, for `https://`
    /// endpoints (the only root trusted).
    #[arg(long, global = true)]
    pub registry_cacert: Option<PathBuf>,
    /// etcd client endpoints (`host:port`, comma separated).
    #[arg(long, value_delimiter = ',', global = true)]
    pub etcd: Vec<String>,
    /// PIDs of the etcd members, in endpoint order.
    #[arg(long = "etcd-pid", value_delimiter = ',', global = true)]
    pub etcd_pids: Vec<u32>,
    /// PID files of the etcd members, in endpoint order.
    #[arg(long = "etcd-pid-file", value_delimiter = ',', global = true)]
    pub etcd_pid_files: Vec<PathBuf>,
    /// Data directories of the etcd members, in endpoint order.
    #[arg(long = "etcd-data-dir", value_delimiter = ',', global = true)]
    pub etcd_data_dirs: Vec<PathBuf>,
    /// The systems to run the workload against, one after the other (comma separated).
    #[arg(long, value_delimiter = ',', default_value = "registry", global = true)]
    pub targets: Vec<TargetKind>,
    /// Bound on every request; a request not answered by then counts as a `timeout` error.
    #[arg(long, default_value = "10s", value_parser = parse_duration, global = true)]
    pub timeout: Duration,
    /// gRPC connections per etcd endpoint (the reporters share them).
    #[arg(long, default_value_t = 4, global = true)]
    pub etcd_conns: usize,
    /// TTL, in seconds, of the etcd leases of the lease keep-alive workload.
    #[arg(long, default_value_t = 60, global = true)]
    pub lease_ttl: i64,
    /// Prefix of the simulated hosts' names (and of the etcd keys), so that two runs
    /// against the same cluster can use distinct services.
    #[arg(long, default_value = "bench", global = true)]
    pub prefix: String,
}

/// A system the workload runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TargetKind {
    /// The registry: `POST /v1/heartbeats` (one object, or an array of `--batch`).
    Registry,
    /// etcd: a put of the service's record to its own key (a txn of `--batch` puts).
    EtcdPut,
    /// etcd: one lease per service, kept alive at each heartbeat (not durable in etcd).
    EtcdLease,
}

impl TargetKind {
    /// The name printed in tables.
    pub fn label(self) -> &'static str {
        match self {
            TargetKind::Registry => "registry",
            TargetKind::EtcdPut => "etcd-put",
            TargetKind::EtcdLease => "etcd-lease",
        }
    }
}

/// The workloads.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Closed loop: C concurrent reporters, each sending its next request as soon as the
    /// previous one is answered.
    Closed(ClosedArgs),
    /// Open loop: N services, each heartbeating every interval on a fixed schedule;
    /// latency is measured from the scheduled send time, so overload shows as latency.
    Open(OpenArgs),
    /// Service-list timing after registering 1k, 10k, 100k services.
    List(ListArgs),
    /// Watching (registry only): events streamed to W watchers of one follower while new
    /// services are created, and the cost of those watchers to the heartbeat write path.
    Watch(WatchArgs),
    /// Failover (registry only; etcd is not killed, an etcd target is skipped): SIGKILLs the
    /// leader of a running group `--kills` times (by the PID in its `--registry-pid-file`),
    /// each time measuring from the kill to the first heartbeat write a surviving node
    /// acknowledges, and the Raft term changes it took; restarts the killed node with
    /// `--restart-cmd` and waits for it to catch up before the next kill.
    Failover(FailoverArgs),
    /// Overload (registry only): an open loop at a multiple of the measured capacity for a
    /// few `service_down_time`s, with an observer counting the services that kept
    /// heartbeating but were listed `down`, and a control group that stops and must go down.
    Overload(OverloadArgs),
}

/// Closed-loop workload.
#[derive(Debug, Clone, Args)]
pub struct ClosedArgs {
    /// Concurrent reporters.
    #[arg(long, short = 'c', default_value_t = 256)]
    pub concurrency: usize,
    /// Heartbeats per request.
    #[arg(long, short = 'b', default_value_t = 1)]
    pub batch: usize,
    /// Distinct services (default: concurrency × batch, each reporter its own).
    #[arg(long, short = 'n')]
    pub services: Option<usize>,
    /// Measured time.
    #[arg(long, short = 'd', default_value = "20s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Unmeasured time before it.
    #[arg(long, short = 'w', default_value = "5s", value_parser = parse_duration)]
    pub warmup: Duration,
}

/// Open-loop workload.
#[derive(Debug, Clone, Args)]
pub struct OpenArgs {
    /// Simulated services.
    #[arg(long, short = 'n', default_value_t = 100_000)]
    pub services: usize,
    /// Each service's heartbeat interval.
    #[arg(long, short = 'i', default_value = "10s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Services per request (a host's agent reporting its services together); 1 is one
    /// request per service.
    #[arg(long, short = 'b', default_value_t = 1)]
    pub batch: usize,
    /// Measured time.
    #[arg(long, short = 'd', default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Unmeasured time before it (default: one interval, so every service exists).
    #[arg(long, short = 'w', value_parser = parse_duration)]
    pub warmup: Option<Duration>,
    /// Most requests in flight (for the registry, each holds a connection); past it the
    /// schedule waits, and the wait counts as latency.
    #[arg(long, default_value_t = 4096)]
    pub max_in_flight: usize,
    /// Period of the timeline samples (rate, p99, RSS, data size) (default: duration / 6).
    #[arg(long, value_parser = parse_duration)]
    pub sample_every: Option<Duration>,
}

/// Service-list timing.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Numbers of registered services to time the list at, ascending (comma separated).
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,100000")]
    pub sizes: Vec<usize>,
    /// Timed requests per variant and size.
    #[arg(long, short = 'r', default_value_t = 20)]
    pub repeat: usize,
    /// Heartbeats per registering request (etcd: puts per txn, at most 128).
    #[arg(long, default_value_t = 1000)]
    pub register_batch: usize,
    /// Concurrent registering requests.
    #[arg(long, default_value_t = 8)]
    pub register_concurrency: usize,
}

/// Watching: `GET /v1/events` under load.
#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// Services registered (batched heartbeats) before anything is measured; they are not
    /// heartbeated again, so run the cluster with a `service_down_time` longer than the run
    /// (bench/run.sh does), or their `down` events join the stream.
    #[arg(long, short = 'n', default_value_t = 100_000)]
    pub services: usize,
    /// Event streams opened on one follower, each from the position it was opened at.
    #[arg(long, short = 'w', default_value_t = 100)]
    pub watchers: usize,
    /// Measured time of the streaming run (new services created as fast as they are taken).
    #[arg(long, short = 'd', default_value = "20s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Concurrent event-making requests (each creates `--event-batch` new services, one
    /// `created` event each), sent to the leader.
    #[arg(long, default_value_t = 4)]
    pub writers: usize,
    /// New services per event-making request.
    #[arg(long, default_value_t = 1000)]
    pub event_batch: usize,
    /// Reporters of the closed single-heartbeat loop that measures the write path's cost
    /// (heartbeats of registered services: they make no event).
    #[arg(long, default_value_t = 256)]
    pub cost_concurrency: usize,
    /// Measured time of each write-path run.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub cost_duration: Duration,
    /// Unmeasured time before each write-path run.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub cost_warmup: Duration,
    /// Events per second made during the write-path runs "with events" (0: skip them).
    #[arg(long, default_value_t = 1000.0)]
    pub cost_event_rate: f64,
    /// Longest wait, after the streaming run, for every watcher to receive what was
    /// committed.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub catch_up: Duration,
    /// Heartbeats per registering request.
    #[arg(long, default_value_t = 1000)]
    pub register_batch: usize,
    /// Concurrent registering requests.
    #[arg(long, default_value_t = 8)]
    pub register_concurrency: usize,
}

/// Failover: leader kills under steady writes.
#[derive(Debug, Clone, Args)]
pub struct FailoverArgs {
    /// Leader kills.
    #[arg(long, default_value_t = 20)]
    pub kills: usize,
    /// Command that restarts a killed node, run with `sh -c` once the killed process has
    /// exited; `{node}` is replaced by the node's position in `--registry` (from 1). It must
    /// start the node in the background on its old config and data, write the new PID to the
    /// node's `--registry-pid-file`, and return (bench/run.sh writes such a script).
    #[arg(long)]
    pub restart_cmd: String,
    /// Closed-loop writers of single heartbeats, running the whole time; writer `w` sends to
    /// endpoint `w` modulo the endpoints.
    #[arg(long, default_value_t = 6)]
    pub writers: usize,
    /// Client timeout of each write: a request to the dead node, or one a node holds while
    /// it waits for a leader, gives up then and the writer sends the next.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub write_timeout: Duration,
    /// Longest wait after a kill for the first acknowledged write.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub failover_deadline: Duration,
    /// Longest wait, at the start and after each restart, for the group to be whole: every
    /// node answering `GET /v1/cluster`, all naming one leader in one term, every applied
    /// index within `--max-lag` of the leader's.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub recover_deadline: Duration,
    /// How many entries behind the leader's applied index a node may be and count as caught
    /// up.
    #[arg(long, default_value_t = 50)]
    pub max_lag: u64,
    /// Steady writes once the group is whole before the next kill, so that every node has
    /// heard the current leader for a while and the next kill is a fair one.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub settle: Duration,
    /// Period of the polls of the survivors' `GET /v1/cluster` after a kill (when the new
    /// leader became visible).
    #[arg(long, default_value = "10ms", value_parser = parse_duration)]
    pub poll_every: Duration,
}

/// Overload: false downs under an open loop past capacity.
#[derive(Debug, Clone, Args)]
pub struct OverloadArgs {
    /// Each service's heartbeat interval (load and control group), one heartbeat per
    /// request.
    #[arg(long, short = 'i', default_value = "2s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Offered heartbeats per second as a multiple of the measured capacity: the load has
    /// `overload × capacity × interval` services.
    #[arg(long, default_value_t = 2.0)]
    pub overload: f64,
    /// Load services, instead of `overload × capacity × interval`.
    #[arg(long, short = 'n')]
    pub services: Option<usize>,
    /// Time of the overload run (default: 4 × the cluster's service_down_time in force).
    #[arg(long, short = 'd', value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Measured time of the capacity run, a closed loop of single heartbeats (0: no
    /// capacity run; `--services` is then needed).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub capacity_duration: Duration,
    /// Unmeasured time before the capacity run's measured time.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub capacity_warmup: Duration,
    /// Reporters of the capacity run.
    #[arg(long, default_value_t = 256)]
    pub capacity_concurrency: usize,
    /// Services of the control group: they heartbeat like the load, stop at
    /// `--control-stop`, and must then be listed `down`.
    #[arg(long, default_value_t = 50)]
    pub control: usize,
    /// When the control group stops, from the start of the overload run (default: a
    /// quarter of the run).
    #[arg(long, value_parser = parse_duration)]
    pub control_stop: Option<Duration>,
    /// Period of the observer's rounds of reads.
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    pub observe_every: Duration,
    /// Read every node at each round (default: one node per round, in rotation: a full
    /// list at 100k services is tens of MiB).
    #[arg(long)]
    pub observe_all: bool,
    /// Bound on each of the observer's list reads.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub observe_timeout: Duration,
    /// How long the observer keeps reading after the run (default: half the
    /// service_down_time; at most service_down_time − interval, so that no load service
    /// can rightly be `down` yet).
    #[arg(long, value_parser = parse_duration)]
    pub margin: Option<Duration>,
    /// Most load requests in flight (each holds a connection). The schedule never waits for
    /// one to end: a send that finds them all busy is skipped and counted as `not sent`.
    /// The default stays just under three nodes' default `max_connections` (4096 each).
    #[arg(long, default_value_t = 12_000)]
    pub max_in_flight: usize,
    /// Period of the timeline (default: half the service_down_time).
    #[arg(long, value_parser = parse_duration)]
    pub sample_every: Option<Duration>,
}

/// Parses `250ms`, `10s`, `10m`, `1h` or a number of seconds (`1.5`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration (e.g. 250ms, 10s, 10m)"))?;
    let secs = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown unit '{other}' in '{s}' (ms, s, m, h)")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("'{s}' is not a duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}
