//! A cluster of `registry-node` processes, each with its own config, data directory, log
//! file and loopback port. Nodes can be SIGKILLed and restarted; every child is killed when
//! the cluster is dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use registry_api::client::RegistryClient;
use registry_api::wire::{ClusterOut, Consistency, ServicesOut};
use tempfile::TempDir;

/// Path of the `registry-node` binary built by `cargo test` for this profile.
pub fn node_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<test binary> -> target/<profile>/registry-node
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| anyhow::anyhow!("unexpected test binary location {}", exe.display()))?;
    let bin = profile_dir.join("registry-node");
    anyhow::ensure!(
        bin.exists(),
        "{} not found: build it with `cargo build -p registry-node` (cargo test --workspace does)",
        bin.display()
    );
    Ok(bin)
}

/// libfaketime's multi-threaded preload library (Debian package `faketime`).
pub fn faketime_library() -> anyhow::Result<PathBuf> {
    let candidates = [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
        "/usr/lib/faketime/libfaketimeMT.so.1",
    ];
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or_else(|| {
            anyhow::anyhow!("libfaketime not found: install the Debian package `faketime`")
        })
}

/// One node process.
pub struct ProcNode {
    /// Node id.
    pub id: u64,
    /// Its HTTP address.
    pub addr: SocketAddr,
    /// Its config file.
    pub config: PathBuf,
    /// Its log file (stderr of every run, appended).
    pub log: PathBuf,
    /// The running process, if any.
    pub child: Option<Child>,
    /// libfaketime offset of its wall clock, if any.
    pub clock_offset: Option<String>,
}

/// The process cluster.
pub struct ProcCluster {
    /// Configs, data and logs of every node.
    pub dir: TempDir,
    /// The nodes (index i is node id i + 1).
    pub nodes: Vec<ProcNode>,
    binary: PathBuf,
}

/// Timing settings written into every node's config.
#[derive(Debug, Clone)]
pub struct ProcSpec {
    /// Number of nodes.
    pub nodes: usize,
    /// `service_down_time`.
    pub service_down_time: Duration,
    /// `report_interval`.
    pub report_interval: Duration,
    /// Build a snapshot every this many applied entries.
    pub snapshot_logs_since_last: u64,
    /// Entries kept behind a snapshot.
    pub max_in_snapshot_log_to_keep: u64,
    /// Wall-clock offsets (libfaketime `FAKETIME` values such as `+120s`) by node index, to
    /// run a node whose clock is off.
    pub clock_offsets: Vec<(usize, String)>,
}

impl Default for ProcSpec {
    fn default() -> Self {
        Self {
            nodes: 3,
            service_down_time: Duration::from_secs(5),
            report_interval: Duration::from_secs(1),
            snapshot_logs_since_last: 5000,
            max_in_snapshot_log_to_keep: 1000,
            clock_offsets: Vec::new(),
        }
    }
}

impl ProcCluster {
    /// Writes configs and starts every node.
    pub fn start(spec: ProcSpec) -> anyhow::Result<Self> {
        let dir = TempDir::new()?;
        let addrs = crate::free_loopback_addrs(spec.nodes);
        let peers: String = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("[[peers]]\nid = {}\naddr = \"{a}\"\n\n", i + 1))
            .collect();
        let mut nodes = Vec::new();
        for (i, addr) in addrs.iter().enumerate() {
            let id = i as u64 + 1;
            let config = dir.path().join(format!("node{id}.toml"));
            let text = format!(
                "node_id = {id}\nlisten = \"{addr}\"\ndata_dir = \"node{id}-data\"\n\
                 service_down_time = \"{}ms\"\nreport_interval = \"{}ms\"\n\
                 write_timeout = \"5s\"\nread_timeout = \"2s\"\n\n\
                 [raft]\nheartbeat_interval = \"50ms\"\nelection_timeout_min = \"150ms\"\n\
                 election_timeout_max = \"300ms\"\nsnapshot_logs_since_last = {}\n\
                 max_in_snapshot_log_to_keep = {}\n\n{peers}",
                spec.service_down_time.as_millis(),
                spec.report_interval.as_millis(),
                spec.snapshot_logs_since_last,
                spec.max_in_snapshot_log_to_keep,
            );
            std::fs::write(&config, text)?;
            nodes.push(ProcNode {
                id,
                addr: *addr,
                config,
                log: dir.path().join(format!("node{id}.log")),
                child: None,
                clock_offset: spec
                    .clock_offsets
                    .iter()
                    .find(|(n, _)| *n == i)
                    .map(|(_, o)| o.clone()),
            });
        }
        let mut cluster = Self {
            dir,
            nodes,
            binary: node_binary()?,
        };
        for i in 0..cluster.nodes.len() {
            cluster.start_node(i)?;
        }
        Ok(cluster)
    }

    /// Starts node index `i` (again).
    pub fn start_node(&mut self, i: usize) -> anyhow::Result<()> {
        let node = &mut self.nodes[i];
        anyhow::ensure!(node.child.is_none(), "node {} already running", node.id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)?;
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--config")
            .arg(&node.config)
            .env("RUST_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(offset) = &node.clock_offset {
            cmd.env("LD_PRELOAD", faketime_library()?)
                .env("FAKETIME", offset)
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
                .env("FAKETIME_NO_CACHE", "1");
        }
        let child = cmd.spawn()?;
        node.child = Some(child);
        Ok(())
    }

    /// SIGKILLs node index `i` and reaps it.
    pub fn kill_node(&mut self, i: usize) -> anyhow::Result<()> {
        if let Some(mut child) = self.nodes[i].child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// SIGKILLs every node.
    pub fn kill_all(&mut self) -> anyhow::Result<()> {
        for i in 0..self.nodes.len() {
            self.kill_node(i)?;
        }
        Ok(())
    }

    /// Starts every stopped node.
    pub fn start_all(&mut self) -> anyhow::Result<()> {
        for i in 0..self.nodes.len() {
            if self.nodes[i].child.is_none() {
                self.start_node(i)?;
            }
        }
        Ok(())
    }

    /// A client of node index `i` only.
    pub fn client_of(&self, i: usize) -> RegistryClient {
        RegistryClient::new([self.nodes[i].addr.to_string()], Duration::from_secs(10))
    }

    /// A client that tries every node, in order.
    pub fn client_all(&self) -> RegistryClient {
        RegistryClient::new(
            self.nodes.iter().map(|n| n.addr.to_string()),
            Duration::from_secs(10),
        )
    }

    /// Indexes of the running nodes.
    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].child.is_some())
            .collect()
    }

    /// Waits until every running node names the same running leader, and that node says it
    /// leads (a restarted node may still name itself from its persisted vote); returns its
    /// index.
    pub async fn wait_for_leader(&self, timeout: Duration) -> anyhow::Result<usize> {
        crate::wait::until(
            "every running node agrees on a running leader",
            timeout,
            || async {
                let mut leader = None;
                for i in self.running() {
                    let c: ClusterOut = self.client_of(i).cluster().await.ok()?;
                    let l = c.leader_id?;
                    if leader.is_some_and(|x| x != l) {
                        return None;
                    }
                    leader = Some(l);
                }
                let idx = (leader? - 1) as usize;
                self.nodes[idx].child.as_ref()?;
                let own = self.client_of(idx).cluster().await.ok()?;
                (own.role == "Leader").then_some(idx)
            },
        )
        .await
    }

    /// The last lines of every node's log, for failure messages.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            let text = std::fs::read_to_string(&n.log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(lines).collect();
            out.push_str(&format!("--- node{} log ---\n", n.id));
            for l in tail.iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for ProcCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            let _ = self.kill_node(i);
        }
    }
}

/// Waits until every running node applied what the leader applied, then returns each
/// running node's own (stale) list.
pub async fn converged_lists(c: &ProcCluster) -> anyhow::Result<Vec<ServicesOut>> {
    let leader = c.wait_for_leader(Duration::from_secs(20)).await?;
    let target = c.client_of(leader).cluster().await?.applied_index;
    crate::wait::until(
        "every running node applied the leader's entries",
        Duration::from_secs(20),
        || async {
            for i in c.running() {
                let applied = c.client_of(i).cluster().await.ok()?.applied_index;
                if applied < target {
                    return None;
                }
            }
            Some(())
        },
    )
    .await?;
    let mut lists = Vec::new();
    for i in c.running() {
        lists.push(
            c.client_of(i)
                .services(None, None, Consistency::Stale)
                .await?,
        );
    }
    Ok(lists)
}
