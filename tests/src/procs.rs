//! A cluster of `registry-node` processes, each with its own config, data directory, log
//! file and loopback port. Nodes can be SIGKILLed and restarted; every child is killed when
//! the cluster is dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use registry_api::wire::{ClusterOut, Consistency, ServicesOut};
use registry_client::RegistryClient;
use tempfile::TempDir;

/// Names a directory holding the `registry-node` and `registryctl` binaries to test instead
/// of the ones `cargo test` built (nothing is built then): to run the suite, or one test
/// many times, against a fixed build while the tree changes.
pub const BIN_DIR_ENV: &str = "REGISTRY_TEST_BIN_DIR";

/// Path of the `registry-node` binary built by `cargo test` for this profile (or the one in
/// [`BIN_DIR_ENV`]).
pub fn node_binary() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os(BIN_DIR_ENV) {
        let bin = Path::new(&dir).join("registry-node");
        anyhow::ensure!(bin.exists(), "{} not found ({BIN_DIR_ENV})", bin.display());
        return Ok(bin);
    }
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
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Its log file (stderr of every run, appended).
    pub log: PathBuf,
    /// The running process, if any.
    pub child: Option<Child>,
    /// libfaketime offset of its wall clock, if any.
    pub clock_offset: Option<String>,
    /// Whether its next start passes `--bootstrap` (a founding node's first start only).
    pub bootstrap: bool,
}

/// The process cluster.
pub struct ProcCluster {
    /// Configs, data and logs of every node.
    pub dir: TempDir,
    /// The nodes (index i is node id i + 1).
    pub nodes: Vec<ProcNode>,
    binary: PathBuf,
    /// The cluster's loopback /24, `127.X.Y`.
    net: String,
    /// Settings every node's config is written with.
    spec: ProcSpec,
    /// Firewall rules in force (arguments after `-I`/`-D`).
    cuts: Vec<Vec<String>>,
    /// The throwaway CA and the nodes' certificates, with [`ProcSpec::tls`].
    pki: Option<crate::tls::TestPki>,
    /// The CA of configs written elsewhere ([`ProcCluster::from_configs`]).
    ca_file: Option<PathBuf>,
    /// The token every client of the harness sends, if any.
    token: Option<String>,
}

/// A node whose config was written elsewhere (by `registryctl init-cluster`, say).
#[derive(Debug, Clone)]
pub struct ConfiguredNode {
    /// Node id.
    pub id: u64,
    /// Its address (as its config's peers name it).
    pub addr: SocketAddr,
    /// Its config file.
    pub config: PathBuf,
    /// Its data directory (as the config names it).
    pub data_dir: PathBuf,
}

/// `n` addresses free now, on a loopback /24 of their own (`127.X.Y.1` to `127.X.Y.n`).
pub fn free_loopback_addrs(n: usize) -> anyhow::Result<Vec<SocketAddr>> {
    let net = next_loopback_net();
    (1..=n)
        .map(|i| free_port_on(format!("{net}.{i}").parse()?))
        .collect()
}

/// A loopback /24 no other cluster of this test process uses.
fn next_loopback_net() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    format!("127.{}.{}", 100 + (pid % 100), (pid / 100 + n) % 250 + 1)
}

/// A port on `ip` that is free now.
fn free_port_on(ip: std::net::IpAddr) -> anyhow::Result<SocketAddr> {
    let l = std::net::TcpListener::bind((ip, 0))?;
    Ok(l.local_addr()?)
}

/// Runs `iptables -w OP ARGS`; partition tests need root and the Debian package `iptables`.
fn iptables(op: &str, args: &[String]) -> anyhow::Result<()> {
    let out = Command::new("iptables")
        .arg("-w")
        .arg(op)
        .args(args)
        .output()
        .map_err(|e| anyhow::anyhow!("running iptables (install the `iptables` package): {e}"))?;
    anyhow::ensure!(
        out.status.success(),
        "iptables {op} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
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
    /// Serve HTTPS only, nodes talking to each other over mutual TLS, with a throwaway CA
    /// ([`ProcCluster::ca`]); every client of the harness then trusts it.
    pub tls: bool,
    /// Data directories by node index, instead of `node{id}-data` in the cluster's directory:
    /// to give a node a disk of its own (a small tmpfs that fills up, say).
    pub data_dirs: Vec<(usize, PathBuf)>,
    /// Events each node keeps for watchers (`events.kept`).
    pub events_kept: usize,
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
            tls: false,
            data_dirs: Vec::new(),
            events_kept: registry_storage::event_log::DEFAULT_EVENTS_KEPT,
        }
    }
}

impl ProcCluster {
    /// Writes configs and starts every node, each bootstrapping the group on its first
    /// start. Each node gets an address of its own in a loopback /24 of its own
    /// (127.X.Y.n), so links between two nodes can be cut with firewall rules that touch
    /// nothing else.
    pub fn start(spec: ProcSpec) -> anyhow::Result<Self> {
        let mut cluster = Self::create(spec)?;
        for i in 0..cluster.nodes.len() {
            cluster.start_node(i)?;
        }
        Ok(cluster)
    }

    /// Writes the configs like [`ProcCluster::start`], starting no node.
    pub fn create(spec: ProcSpec) -> anyhow::Result<Self> {
        let dir = TempDir::new()?;
        let net = next_loopback_net();
        let addrs: Vec<SocketAddr> = (1..=spec.nodes)
            .map(|n| free_port_on(format!("{net}.{n}").parse()?))
            .collect::<anyhow::Result<_>>()?;
        let peers: Vec<(u64, SocketAddr)> = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| (i as u64 + 1, *a))
            .collect();
        let pki = if spec.tls {
            let ips: Vec<std::net::IpAddr> = addrs.iter().map(SocketAddr::ip).collect();
            Some(crate::tls::TestPki::for_ips(&ips)?)
        } else {
            None
        };
        let mut cluster = Self {
            dir,
            nodes: Vec::new(),
            binary: node_binary()?,
            net,
            spec: spec.clone(),
            cuts: Vec::new(),
            pki,
            ca_file: None,
            token: None,
        };
        for (id, addr) in &peers {
            cluster.add_proc_node(*id, *addr, &peers, true)?;
        }
        Ok(cluster)
    }

    /// A cluster of nodes whose configs exist already (in `dir`, which the cluster keeps),
    /// none started; each bootstraps on its first start. Every client of the harness trusts
    /// `ca` (with configs that have a `[tls]` section) and sends `token`.
    pub fn from_configs(
        dir: TempDir,
        nodes: Vec<ConfiguredNode>,
        ca: Option<PathBuf>,
        token: Option<String>,
    ) -> anyhow::Result<Self> {
        let first = nodes
            .first()
            .ok_or_else(|| anyhow::anyhow!("a cluster needs a node"))?;
        let ip = first.addr.ip().to_string();
        let net = ip
            .rsplit_once('.')
            .map(|(net, _)| net.to_string())
            .ok_or_else(|| anyhow::anyhow!("not an IPv4 address: {ip}"))?;
        let log_dir = dir.path().to_path_buf();
        Ok(Self {
            nodes: nodes
                .into_iter()
                .map(|n| ProcNode {
                    id: n.id,
                    addr: n.addr,
                    config: n.config,
                    data_dir: n.data_dir,
                    log: log_dir.join(format!("node{}.log", n.id)),
                    child: None,
                    clock_offset: None,
                    bootstrap: true,
                })
                .collect(),
            dir,
            binary: node_binary()?,
            net,
            spec: ProcSpec::default(),
            cuts: Vec::new(),
            pki: None,
            ca_file: ca,
            token,
        })
    }

    /// Writes the config of a node and records it (not started).
    fn add_proc_node(
        &mut self,
        id: u64,
        addr: SocketAddr,
        peers: &[(u64, SocketAddr)],
        bootstrap: bool,
    ) -> anyhow::Result<usize> {
        let index = self.nodes.len();
        let data_dir = self
            .spec
            .data_dirs
            .iter()
            .find(|(n, _)| *n == index)
            .map_or_else(
                || self.dir.path().join(format!("node{id}-data")),
                |(_, d)| d.clone(),
            );
        self.add_node_on(id, addr, data_dir, peers, bootstrap)
    }

    /// Writes the config of a node on data directory `data_dir` and records it (not started).
    fn add_node_on(
        &mut self,
        id: u64,
        addr: SocketAddr,
        data_dir: PathBuf,
        peers: &[(u64, SocketAddr)],
        bootstrap: bool,
    ) -> anyhow::Result<usize> {
        let spec = &self.spec;
        let peers: String = peers
            .iter()
            .map(|(id, a)| format!("[[peers]]\nid = {id}\naddr = \"{a}\"\n\n"))
            .collect();
        let config = self
            .dir
            .path()
            .join(format!("node{id}-{}.toml", self.nodes.len()));
        let index = self.nodes.len();
        let tls = match &self.pki {
            Some(pki) => {
                let t = pki.node_config(id);
                format!(
                    "[tls]\ncert = {:?}\nkey = {:?}\nca = {:?}\n\n",
                    t.cert.display().to_string(),
                    t.key.display().to_string(),
                    t.ca.display().to_string()
                )
            }
            None => String::new(),
        };
        let text = format!(
            "node_id = {id}\nlisten = \"{addr}\"\ndata_dir = {:?}\n\
             service_down_time = \"{}ms\"\nreport_interval = \"{}ms\"\n\
             write_timeout = \"5s\"\nread_timeout = \"2s\"\n\n\
             [raft]\nheartbeat_interval = \"50ms\"\nelection_timeout_min = \"150ms\"\n\
             election_timeout_max = \"300ms\"\nsnapshot_logs_since_last = {}\n\
             max_in_snapshot_log_to_keep = {}\n\n[events]\nkept = {}\n\n{peers}{tls}\
             [auth]\nmode = \"disabled\"\ncluster_secret = \"test-cluster-secret-0123\"\n",
            data_dir.display().to_string(),
            spec.service_down_time.as_millis(),
            spec.report_interval.as_millis(),
            spec.snapshot_logs_since_last,
            spec.max_in_snapshot_log_to_keep,
            spec.events_kept,
        );
        std::fs::write(&config, text)?;
        self.nodes.push(ProcNode {
            id,
            addr,
            config,
            data_dir,
            log: self.dir.path().join(format!("node{id}.log")),
            child: None,
            clock_offset: spec
                .clock_offsets
                .iter()
                .find(|(n, _)| *n == index)
                .map(|(_, o)| o.clone()),
            bootstrap,
        });
        Ok(index)
    }

    /// Creates and starts a new, empty node that does not bootstrap (it waits to be added
    /// by an operator); returns its index. Its data directory is its own, fresh.
    pub fn spawn_joiner(&mut self) -> anyhow::Result<usize> {
        let id = self.nodes.iter().map(|n| n.id).max().unwrap_or(0) + 1;
        let addr = free_port_on(format!("{}.{id}", self.net).parse()?)?;
        let i = self.add_proc_node(id, addr, &[(id, addr)], false)?;
        self.start_node(i)?;
        Ok(i)
    }

    /// Adds (not started) a node `id` on address `addr` and data directory `data_dir`, whose
    /// config lists the cluster's nodes as its peers: an old node pointed at this cluster,
    /// say. Returns its index.
    pub fn add_node_with_data(
        &mut self,
        id: u64,
        addr: SocketAddr,
        data_dir: PathBuf,
    ) -> anyhow::Result<usize> {
        let peers: Vec<(u64, SocketAddr)> = self
            .nodes
            .iter()
            .map(|n| (n.id, n.addr))
            .filter(|(pid, _)| *pid != id)
            .chain([(id, addr)])
            .collect();
        self.add_node_on(id, addr, data_dir, &peers, false)
    }

    /// A free port on the cluster's address for node `id` (`127.X.Y.id`).
    pub fn free_addr_for(&self, id: u64) -> anyhow::Result<SocketAddr> {
        free_port_on(format!("{}.{id}", self.net).parse()?)
    }

    /// Deletes the data directory of node index `i`, which must not be running: a lost disk.
    pub fn wipe(&mut self, i: usize) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.nodes[i].child.is_none(),
            "node {} is running",
            self.nodes[i].id
        );
        match std::fs::remove_dir_all(&self.nodes[i].data_dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Runs `registry-node ARGS` for node index `i` to completion (`restore`, say), with its
    /// output appended to the node's log; answers its exit status and standard output.
    pub fn run_command(
        &self,
        i: usize,
        args: &[&str],
    ) -> anyhow::Result<(std::process::ExitStatus, String)> {
        let node = &self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)?;
        let out = Command::new(&self.binary)
            .args(args)
            .arg("--config")
            .arg(&node.config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stderr(log)
            .output()?;
        Ok((
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
        ))
    }

    /// Cuts every link between node `i` and the others (both directions, packets dropped).
    pub fn isolate(&mut self, i: usize) -> anyhow::Result<()> {
        let me = self.nodes[i].addr.ip();
        let others: Vec<_> = (0..self.nodes.len())
            .filter(|j| *j != i)
            .map(|j| self.nodes[j].addr.ip())
            .collect();
        for other in others {
            self.cut(me, other)?;
            self.cut(other, me)?;
        }
        Ok(())
    }

    fn cut(&mut self, from: std::net::IpAddr, to: std::net::IpAddr) -> anyhow::Result<()> {
        let rule = vec![
            "INPUT".to_string(),
            "-s".into(),
            from.to_string(),
            "-d".into(),
            to.to_string(),
            "-j".into(),
            "DROP".into(),
        ];
        iptables("-I", &rule)?;
        self.cuts.push(rule);
        Ok(())
    }

    /// Restores every cut link.
    pub fn heal(&mut self) -> anyhow::Result<()> {
        for rule in std::mem::take(&mut self.cuts) {
            iptables("-D", &rule)?;
        }
        Ok(())
    }

    /// Replaces the `[auth]` section of node `i`'s config file (the last section) with
    /// `section` (the lines after the `[auth]` header); the node sees it on its next reload.
    pub fn set_auth(&self, i: usize, section: &str) -> anyhow::Result<()> {
        let path = &self.nodes[i].config;
        let text = std::fs::read_to_string(path)?;
        let at = text
            .find("[auth]\n")
            .ok_or_else(|| anyhow::anyhow!("{} has no [auth] section", path.display()))?;
        std::fs::write(path, format!("{}[auth]\n{section}", &text[..at]))?;
        Ok(())
    }

    /// The config file of node `i`.
    pub fn config_path(&self, i: usize) -> &Path {
        &self.nodes[i].config
    }

    /// Makes node `i` reload its settings (SIGHUP).
    pub fn reload(&self, i: usize) -> anyhow::Result<()> {
        self.signal(i, "-HUP")
    }

    /// Pauses node `i` (SIGSTOP).
    pub fn pause(&self, i: usize) -> anyhow::Result<()> {
        self.signal(i, "-STOP")
    }

    /// Resumes node `i` (SIGCONT).
    pub fn resume(&self, i: usize) -> anyhow::Result<()> {
        self.signal(i, "-CONT")
    }

    fn signal(&self, i: usize, sig: &str) -> anyhow::Result<()> {
        let child = self.nodes[i]
            .child
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("node {} is not running", self.nodes[i].id))?;
        let status = Command::new("kill")
            .arg(sig)
            .arg(child.id().to_string())
            .status()?;
        anyhow::ensure!(status.success(), "kill {sig} {} failed", child.id());
        Ok(())
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
        if std::mem::take(&mut node.bootstrap) {
            cmd.arg("--bootstrap");
        }
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

    /// If node index `i` has exited by itself, reaps it (it no longer counts as running) and
    /// returns its exit status.
    pub fn reap_exited(&mut self, i: usize) -> anyhow::Result<Option<std::process::ExitStatus>> {
        let Some(child) = self.nodes[i].child.as_mut() else {
            return Ok(None);
        };
        let status = child.try_wait()?;
        if status.is_some() {
            self.nodes[i].child = None;
        }
        Ok(status)
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
        self.client_to([self.nodes[i].addr.to_string()], Duration::from_secs(10))
    }

    /// A client of the nodes at indexes `order`, tried in that order.
    pub fn client_in_order(&self, order: &[usize]) -> RegistryClient {
        let endpoints = order.iter().map(|&i| self.nodes[i].addr.to_string());
        self.client_to(endpoints, Duration::from_secs(10))
    }

    /// A client of `endpoints` trusting the cluster's CA and sending its token, if any.
    fn client_to(
        &self,
        endpoints: impl IntoIterator<Item = String>,
        timeout: Duration,
    ) -> RegistryClient {
        let client = crate::client_tls(endpoints, timeout, self.ca().as_deref());
        match &self.token {
            Some(t) => client.with_token(t.clone()),
            None => client,
        }
    }

    /// A client that tries every node, in order.
    pub fn client_all(&self) -> RegistryClient {
        self.client_to(
            self.nodes.iter().map(|n| n.addr.to_string()),
            Duration::from_secs(10),
        )
    }

    /// One client per node, each trying that node first and then the others in turn, so
    /// reporters spread over them reach the cluster through every node. Each request is
    /// bounded by 2 s (a reporter must not hang on a paused node).
    pub fn clients_rotated(&self) -> Vec<RegistryClient> {
        let addrs: Vec<String> = self.nodes.iter().map(|n| n.addr.to_string()).collect();
        (0..addrs.len())
            .map(|k| {
                let order = addrs[k..].iter().chain(&addrs[..k]).cloned();
                self.client_to(order, Duration::from_secs(2))
            })
            .collect()
    }

    /// Scrapes node index `i`'s `/metrics` (over HTTPS trusting the cluster's CA when it has
    /// one, with the cluster's token) and parses it strictly.
    pub async fn metrics(&self, i: usize) -> anyhow::Result<crate::exposition::Exposition> {
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .no_proxy();
        let scheme = match self.ca() {
            Some(ca) => {
                for root in reqwest::Certificate::from_pem_bundle(&std::fs::read(ca)?)? {
                    builder = builder.add_root_certificate(root);
                }
                "https"
            }
            None => "http",
        };
        let mut request = builder
            .build()?
            .get(format!("{scheme}://{}/metrics", self.nodes[i].addr));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let resp = request.send().await?;
        anyhow::ensure!(
            resp.status() == 200,
            "node {} /metrics answered {}",
            self.nodes[i].id,
            resp.status()
        );
        let text = resp.text().await?;
        crate::exposition::Exposition::parse(&text)
            .map_err(|e| e.context(format!("node {} /metrics:\n{text}", self.nodes[i].id)))
    }

    /// Waits until node index `i` purged its log past `index`; answers its purge point.
    pub async fn wait_purged_past(
        &self,
        i: usize,
        index: u64,
        timeout: Duration,
    ) -> anyhow::Result<u64> {
        let what = format!("node {} purged its log past {index}", self.nodes[i].id);
        crate::wait::until(&what, timeout, || async {
            let cluster = self.client_of(i).cluster().await.ok()?;
            cluster.purged_index.filter(|p| *p > index)
        })
        .await
    }

    /// Waits until node index `i` holds a snapshot past `index` (one it built, or installed
    /// from the leader); answers the snapshot's index.
    pub async fn wait_snapshot_past(
        &self,
        i: usize,
        index: u64,
        timeout: Duration,
    ) -> anyhow::Result<u64> {
        let what = format!("node {} holds a snapshot past {index}", self.nodes[i].id);
        crate::wait::until(&what, timeout, || async {
            let cluster = self.client_of(i).cluster().await.ok()?;
            cluster.snapshot_index.filter(|s| *s > index)
        })
        .await
    }

    /// The throwaway CA and the nodes' certificates, with [`ProcSpec::tls`].
    pub fn pki(&self) -> Option<&crate::tls::TestPki> {
        self.pki.as_ref()
    }

    /// The cluster CA (PEM) every node's certificate is signed by, with [`ProcSpec::tls`].
    pub fn ca(&self) -> Option<PathBuf> {
        self.pki
            .as_ref()
            .map(crate::tls::TestPki::ca)
            .or_else(|| self.ca_file.clone())
    }

    /// Every node's address.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.addr).collect()
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

    /// Waits until a node other than index `not` says it leads (asking each node itself,
    /// so a cut-off or paused old leader's view does not count); returns its index.
    pub async fn wait_for_leader_besides(
        &self,
        not: usize,
        timeout: Duration,
    ) -> anyhow::Result<usize> {
        crate::wait::until("another node leads", timeout, || async {
            for i in self.running().into_iter().filter(|i| *i != not) {
                if self.client_of(i).cluster().await.ok()?.role == "Leader" {
                    return Some(i);
                }
            }
            None
        })
        .await
    }

    /// Waits until the leader lists node index `i` as a voter with the incarnation that node
    /// reports itself (so a node whose store was created anew is back in its place), in the
    /// node's own cluster; answers how long it took.
    pub async fn wait_voter(&self, i: usize, timeout: Duration) -> anyhow::Result<Duration> {
        let start = std::time::Instant::now();
        let id = self.nodes[i].id;
        let what = format!("node {id} is a voter with the incarnation of its store");
        crate::wait::until(&what, timeout, || async {
            let own = self.client_of(i).cluster().await.ok()?;
            let leader = self
                .wait_for_leader(Duration::from_millis(500))
                .await
                .ok()?;
            let view = self.client_of(leader).cluster().await.ok()?;
            let m = view.members.iter().find(|m| m.id == id)?;
            (m.voter && m.incarnation == own.incarnation && own.cluster_id == view.cluster_id)
                .then_some(())
        })
        .await?;
        Ok(start.elapsed())
    }

    /// Waits until node index `i` exits by itself; answers its exit status.
    pub async fn wait_exit(
        &mut self,
        i: usize,
        timeout: Duration,
    ) -> anyhow::Result<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.reap_exited(i)? {
                return Ok(status);
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "node {} still running after {timeout:?}",
                self.nodes[i].id
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the log of node index `i` holds `n` lines containing `needle` (over all
    /// its runs); answers the last.
    pub async fn wait_log_count(
        &self,
        i: usize,
        needle: &str,
        n: usize,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let what = format!("node {} logs {needle:?} {n} times", self.nodes[i].id);
        crate::wait::until(&what, timeout, || async {
            let text = std::fs::read_to_string(&self.nodes[i].log).ok()?;
            let found: Vec<&str> = text.lines().filter(|l| l.contains(needle)).collect();
            (found.len() >= n).then(|| found[n - 1].to_string())
        })
        .await
    }

    /// Waits until the log of node index `i` holds a line containing `needle`; answers it.
    pub async fn wait_log(
        &self,
        i: usize,
        needle: &str,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let what = format!("node {} logs {needle:?}", self.nodes[i].id);
        crate::wait::until(&what, timeout, || async {
            let text = std::fs::read_to_string(&self.nodes[i].log).ok()?;
            text.lines()
                .find(|l| l.contains(needle))
                .map(str::to_string)
        })
        .await
    }

    /// How many lines of the log of node index `i` (over all its starts) contain `needle`.
    pub fn log_count(&self, i: usize, needle: &str) -> usize {
        std::fs::read_to_string(&self.nodes[i].log)
            .map(|text| text.lines().filter(|l| l.contains(needle)).count())
            .unwrap_or(0)
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
    /// Kills every node and heals every cut. With `REGISTRY_KEEP_TEST_DIRS` set, the
    /// cluster's directory (configs, data, whole logs) is kept and its path printed.
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            let _ = self.resume(i);
            let _ = self.kill_node(i);
        }
        let _ = self.heal();
        if std::env::var_os("REGISTRY_KEEP_TEST_DIRS").is_some() {
            let dir = std::mem::replace(&mut self.dir, TempDir::new().expect("a temp dir"));
            eprintln!("kept the cluster's directory: {}", dir.keep().display());
        }
    }
}

/// Waits until every running node applied every entry the leader holds, then returns each
/// running node's own (stale) list.
pub async fn converged_lists(c: &ProcCluster) -> anyhow::Result<Vec<ServicesOut>> {
    let leader = c.wait_for_leader(Duration::from_secs(20)).await?;
    // Every entry the leader holds, not only what it applied: a leader that resumed its
    // term after a restart may not have applied all it had acknowledged yet.
    let target = c.client_of(leader).cluster().await?.last_log_index;
    crate::wait::until(
        "every running node applied every entry the leader held",
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

/// Waits until every running node reports the same applied index, then checks that their
/// state-machine digests are equal; returns that index. The nodes are asked at the same
/// time, since an idle leader still commits a tick every few hundred milliseconds.
pub async fn converged_digests(c: &ProcCluster, timeout: Duration) -> anyhow::Result<u64> {
    let (index, digests) = crate::wait::until(
        "every running node at the same applied index",
        timeout,
        || async {
            let asks = c.running().into_iter().map(|i| async move {
                let cl = c.client_of(i).cluster_with_digest().await.ok()?;
                Some((cl.applied_index?, cl.digest))
            });
            let seen: Vec<(u64, String)> = futures::future::join_all(asks)
                .await
                .into_iter()
                .collect::<Option<_>>()?;
            let first = seen.first()?.0;
            seen.iter()
                .all(|(a, _)| *a == first)
                .then(|| (first, seen.into_iter().map(|(_, d)| d).collect::<Vec<_>>()))
        },
    )
    .await?;
    anyhow::ensure!(
        digests.iter().all(|d| *d == digests[0]),
        "state machines differ at applied index {index}: digests {digests:?}"
    );
    Ok(index)
}

/// Runs a scenario `body` on the cluster and, when it fails, appends the tail of every
/// node's log to the error.
pub async fn with_logs<F>(c: &mut ProcCluster, body: F) -> anyhow::Result<()>
where
    F: AsyncFnOnce(&mut ProcCluster) -> anyhow::Result<()>,
{
    let res = body(c).await;
    res.map_err(|e| anyhow::anyhow!("{e:#}\n{}", c.log_tails(40)))
}
