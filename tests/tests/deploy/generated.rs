//! A cluster made the way an operator makes one: `registryctl init-cluster` writes the
//! configs, each node is started from its own with `--bootstrap`, as `first-start.env` has the
//! systemd unit do.

use std::path::PathBuf;
use std::time::Duration;

use registry_node::NodeConfig;
use registry_tests::cli::{registryctl_with_env, CtlOutput};
use registry_tests::procs::{free_loopback_addrs, ConfiguredNode, ProcCluster};
use tempfile::TempDir;

/// The tokens init-cluster printed.
#[derive(Debug, Clone)]
pub struct Tokens {
    /// The admin token.
    pub admin: String,
    /// The reporter token.
    pub reporter: String,
    /// The reader token.
    pub reader: String,
}

/// A running cluster of init-cluster's configs.
pub struct Generated {
    /// The node processes (the harness's clients send the admin token).
    pub cluster: ProcCluster,
    /// The directory init-cluster wrote.
    pub out: PathBuf,
    /// The tokens it printed.
    pub tokens: Tokens,
    /// The variables of its `client.env`.
    pub client_env: Vec<(String, String)>,
}

/// Runs `registryctl ARGS` with the variables `env` (and none of the `REGISTRY_*` variables
/// of the test's own environment), bounded by a deadline.
pub async fn ctl(env: &[(String, String)], args: &[&str]) -> anyhow::Result<CtlOutput> {
    registryctl_with_env(env, args).await
}

/// The `KEY=VALUE` lines of an environment file (comments and blank lines skipped).
pub fn env_file(path: &std::path::Path) -> anyhow::Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path)?;
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| anyhow::anyhow!("{}: not KEY=VALUE: {l:?}", path.display()))
        })
        .collect()
}

/// The token printed for `role` (`  admin    TOKEN`).
fn printed_token(summary: &str, role: &str) -> anyhow::Result<String> {
    summary
        .lines()
        .find_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some(role)).then(|| words.next().map(str::to_string))?
        })
        .ok_or_else(|| anyhow::anyhow!("no {role} token in:\n{summary}"))
}

/// Runs `registryctl init-cluster` for three nodes on loopback addresses of their own (with
/// `extra` arguments), loads each config through the node's loader, starts every node from
/// its config with `--bootstrap` and waits until they agree on a leader.
pub async fn start(extra: &[&str]) -> anyhow::Result<Generated> {
    let dir = TempDir::new()?;
    let out = dir.path().join("cluster");
    let addrs = free_loopback_addrs(3)?;
    let members: Vec<String> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}={a}", i + 1))
        .collect();
    let data_dir = dir.path().join("node{id}-data").display().to_string();
    let out_s = out.display().to_string();
    let mut args = vec!["init-cluster"];
    for m in &members {
        args.extend(["--node", m.as_str()]);
    }
    args.extend(["--out", &out_s, "--data-dir", &data_dir, "--write-tokens"]);
    args.extend(extra);
    let summary = ctl(&[], &args).await?.ok()?.stdout;
    let tokens = Tokens {
        admin: printed_token(&summary, "admin")?,
        reporter: printed_token(&summary, "reporter")?,
        reader: printed_token(&summary, "reader")?,
    };
    let mut nodes = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let id = i as u64 + 1;
        let config = out.join(format!("node{id}.toml"));
        let loaded = NodeConfig::load(&config)?;
        anyhow::ensure!(
            loaded.node_id == id && loaded.listen == *addr && loaded.peers.len() == 3,
            "{}: {loaded:?}",
            config.display()
        );
        nodes.push(ConfiguredNode {
            id,
            addr: *addr,
            config,
            data_dir: loaded.data_dir,
        });
    }
    let tls = extra.contains(&"--tls");
    let ca = tls.then(|| out.join("ca.pem"));
    let client_env = env_file(&out.join("client.env"))?;
    let mut cluster = ProcCluster::from_configs(dir, nodes, ca, Some(tokens.admin.clone()))?;
    cluster.start_all()?;
    cluster.wait_for_leader(Duration::from_secs(60)).await?;
    Ok(Generated {
        cluster,
        out,
        tokens,
        client_env,
    })
}

impl Generated {
    /// `client.env`'s variables, with `REGISTRY_TOKEN` set to `token` if given.
    pub fn env_with(&self, token: Option<&str>) -> Vec<(String, String)> {
        let mut env = self.client_env.clone();
        if let Some(t) = token {
            env.push(("REGISTRY_TOKEN".into(), t.to_string()));
        }
        env
    }
}
