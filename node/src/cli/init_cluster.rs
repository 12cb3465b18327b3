//! `registryctl init-cluster`: the files a new cluster needs, from its list of members.
//!
//! For `--node ID=HOST:PORT` (repeated) it writes into `--out DIR`:
//! - `nodeN.toml`, one config per machine, in the format of [`crate::config::NodeConfig`]
//!   (every member in `peers`, the defaults of the code spelled out, `[auth]` reading the
//!   secret from `cluster-secret` beside it and the SHA-256 of each token);
//! - `cluster-secret` (mode 0600): a fresh random cluster secret, the same on every machine;
//! - `client.env`: `REGISTRY_ENDPOINTS` (and with `--tls` the CA and client certificate)
//!   for `registryctl`, as an environment file (systemd's `EnvironmentFile=`, or `set -a; .`);
//! - `first-start.env`: `REGISTRY_NODE_ARGS=--bootstrap`, which the systemd unit passes to
//!   `registry-node` while the file exists: the founding members' first start forms the
//!   group; once it is formed the file is removed (a node holding data ignores the flag, and a
//!   node with an empty store refuses it while its peers form a group, so a forgotten file
//!   never forms a second group);
//! - with `--tls`: a CA (`ca.pem`, `ca-key.pem`), each node's certificate naming its host
//!   (`nodeN.pem`, `nodeN-key.pem`, server and client use) and a client certificate
//!   (`client.pem`, `client-key.pem`), made with rcgen (the keys mode 0600);
//! - with `--write-tokens`: `tokens/ROLE.env` (mode 0600), `REGISTRY_TOKEN=...` for each role.
//!
//! Fresh admin, reporter and reader tokens are made unless `--no-client-tokens`; only their
//! digests go into the configs, and the tokens are printed once. Nothing is overwritten: when
//! any of the files exists already, nothing is written.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use clap::Args;
use rand::RngCore;
use registry_api::auth::{hash_token, Role};

use super::CliError;
use crate::config::{self, RaftSettings};

/// Arguments of `init-cluster`.
#[derive(Debug, Clone, Args)]
pub struct InitClusterArgs {
    /// A founding member, `ID=HOST:PORT` (repeat for each: 3 or 5 of them). HOST is what
    /// peers and clients connect to (an IP address or a DNS name); the node listens on
    /// HOST:PORT when HOST is an IP address, else on 0.0.0.0:PORT.
    #[arg(long = "node", value_name = "ID=HOST:PORT", required = true, value_parser = parse_member)]
    pub nodes: Vec<Member>,
    /// The directory the files are written to (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Each node's `data_dir`; `{id}` in it is replaced by the node's id.
    #[arg(long, value_name = "PATH", default_value = "/var/lib/registry-node")]
    pub data_dir: String,
    /// Where the files of DIR will be on the machines (the paths `client.env` names)
    /// [default: DIR, made absolute].
    #[arg(long, value_name = "DIR")]
    pub install_dir: Option<PathBuf>,
    /// Make a CA, a certificate per node and a client certificate: the nodes serve HTTPS
    /// only and talk to each other over mutual TLS.
    #[arg(long)]
    pub tls: bool,
    /// How many days the certificates of `--tls` are valid.
    #[arg(long, value_name = "DAYS", default_value_t = 365, requires = "tls")]
    pub cert_days: u32,
    /// With `--tls`: nodes refuse clients without a certificate the CA signed.
    #[arg(long, requires = "tls")]
    pub require_client_cert: bool,
    /// No client tokens (`mode = "disabled"`: anyone who reaches a node may do anything).
    /// For a local demo only; the cluster secret is made all the same.
    #[arg(long)]
    pub no_client_tokens: bool,
    /// Also write each token to `DIR/tokens/ROLE.env` (`REGISTRY_TOKEN=...`, mode 0600).
    #[arg(long, conflicts_with = "no_client_tokens")]
    pub write_tokens: bool,
}

/// One founding member, as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its node id.
    pub id: u64,
    /// The host peers and clients connect to.
    pub host: String,
    /// Its port.
    pub port: u16,
}

impl Member {
    /// `host:port`, bracketing an IPv6 address.
    pub fn addr(&self) -> String {
        match self.host.parse::<IpAddr>() {
            Ok(IpAddr::V6(ip)) => format!("[{ip}]:{}", self.port),
            _ => format!("{}:{}", self.host, self.port),
        }
    }

    /// The address the node binds: its host when that is an IP address, else every IPv4
    /// address.
    fn listen(&self) -> SocketAddr {
        let ip = self
            .host
            .parse::<IpAddr>()
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        SocketAddr::new(ip, self.port)
    }
}

/// Parses `ID=HOST:PORT`.
pub fn parse_member(s: &str) -> Result<Member, String> {
    let usage = || format!("expected ID=HOST:PORT (e.g. 1=10.0.0.1:21001), got {s:?}");
    let (id, addr) = s.split_once('=').ok_or_else(usage)?;
    let id: u64 = id.trim().parse().map_err(|_| usage())?;
    let (host, port) = addr.trim().rsplit_once(':').ok_or_else(usage)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port: u16 = port.parse().map_err(|_| usage())?;
    if host.is_empty() || port == 0 || host.chars().any(|c| c.is_whitespace() || c == '"') {
        return Err(usage());
    }
    Ok(Member {
        id,
        host: host.to_string(),
        port,
    })
}

/// A token of each role, made fresh.
struct Tokens(Vec<(Role, String)>);

/// The roles, in the order they are printed.
const ROLES: [(Role, &str); 3] = [
    (Role::Admin, "admin"),
    (Role::Reporter, "reporter"),
    (Role::Reader, "reader"),
];

/// `n` random bytes from the operating system, in hex.
fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// A file to write: its name in the output directory, its contents, whether only its owner
/// may read it.
pub(super) struct OutFile {
    /// Its path relative to the output directory.
    pub(super) name: String,
    /// What it holds.
    pub(super) contents: String,
    /// Mode 0600 (else 0644).
    pub(super) private: bool,
}

/// Runs `init-cluster`; answers the summary to print (the tokens included, once).
pub fn run(args: &InitClusterArgs) -> Result<String, CliError> {
    check_members(&args.nodes)?;
    let install_dir = match &args.install_dir {
        Some(d) => d.clone(),
        None => std::path::absolute(&args.out)
            .map_err(|e| CliError::Invalid(format!("{}: {e}", args.out.display())))?,
    };
    let tokens = (!args.no_client_tokens).then(|| {
        Tokens(
            ROLES
                .iter()
                .map(|(role, _)| (*role, random_hex(32)))
                .collect(),
        )
    });
    let mut files = vec![OutFile {
        name: SECRET_FILE.into(),
        contents: format!("{}\n", random_hex(32)),
        private: true,
    }];
    for m in &args.nodes {
        files.push(OutFile {
            name: format!("node{}.toml", m.id),
            contents: node_config(args, m, tokens.as_ref()),
            private: false,
        });
    }
    files.push(OutFile {
        name: "client.env".into(),
        contents: client_env(args, &install_dir),
        private: false,
    });
    files.push(OutFile {
        name: "first-start.env".into(),
        contents: FIRST_START_ENV.into(),
        private: false,
    });
    if args.tls {
        files.extend(super::init_pki::make(&args.nodes, args.cert_days)?);
    }
    if let (true, Some(tokens)) = (args.write_tokens, &tokens) {
        for ((_, name), (_, token)) in ROLES.iter().zip(&tokens.0) {
            files.push(OutFile {
                name: format!("tokens/{name}.env"),
                contents: format!("REGISTRY_TOKEN={token}\n"),
                private: true,
            });
        }
    }
    write_all(&args.out, &files)?;
    Ok(summary(args, &files, tokens.as_ref()))
}

/// The cluster secret's file name, beside the configs.
const SECRET_FILE: &str = "cluster-secret";

/// `first-start.env`.
const FIRST_START_ENV: &str = "\
# Read by registry-node.service while it exists: the founding members' first start forms the
# group. Remove it from every machine once `registryctl cluster status` lists every member.
REGISTRY_NODE_ARGS=--bootstrap
";

fn check_members(nodes: &[Member]) -> Result<(), CliError> {
    let invalid = |m: String| Err(CliError::Invalid(m));
    let mut ids: Vec<u64> = nodes.iter().map(|m| m.id).collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.len() != nodes.len() {
        return invalid("--node: node ids must be unique".into());
    }
    let mut addrs: Vec<String> = nodes.iter().map(Member::addr).collect();
    addrs.sort_unstable();
    addrs.dedup();
    if addrs.len() != nodes.len() {
        return invalid("--node: addresses must be unique".into());
    }
    if nodes.len().is_multiple_of(2) {
        tracing::warn!(
            members = nodes.len(),
            "an even number of members tolerates no more failures than one fewer"
        );
    }
    Ok(())
}

/// A TOML string literal.
fn quoted(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn duration(d: std::time::Duration) -> String {
    quoted(&humantime_serde::re::humantime::format_duration(d).to_string())
}

/// The config of member `m`. Sections in a fixed order: the settings, `[raft]`, the
/// `[[peers]]`, `[tls]`, then `[auth]` last.
fn node_config(args: &InitClusterArgs, m: &Member, tokens: Option<&Tokens>) -> String {
    let raft = RaftSettings::default();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Node {} of the cluster {}, written by registryctl init-cluster.",
        m.id,
        args.nodes
            .iter()
            .map(|n| format!("{}={}", n.id, n.addr()))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let _ = writeln!(s, "node_id = {}", m.id);
    let _ = writeln!(s, "listen = {}", quoted(&m.listen().to_string()));
    let _ = writeln!(
        s,
        "data_dir = {}",
        quoted(&args.data_dir.replace("{id}", &m.id.to_string()))
    );
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "service_down_time = {}",
        duration(config::default_service_down_time())
    );
    let _ = writeln!(
        s,
        "report_interval = {}",
        duration(config::default_report_interval())
    );
    let _ = writeln!(
        s,
        "write_timeout = {}",
        duration(config::default_write_timeout())
    );
    let _ = writeln!(
        s,
        "read_timeout = {}",
        duration(config::default_read_timeout())
    );
    let _ = writeln!(s);
    let _ = writeln!(s, "[raft]");
    let _ = writeln!(
        s,
        "heartbeat_interval = {}",
        duration(raft.heartbeat_interval)
    );
    let _ = writeln!(
        s,
        "election_timeout_min = {}",
        duration(raft.election_timeout_min)
    );
    let _ = writeln!(
        s,
        "election_timeout_max = {}",
        duration(raft.election_timeout_max)
    );
    let _ = writeln!(
        s,
        "snapshot_logs_since_last = {}",
        raft.snapshot_logs_since_last
    );
    let _ = writeln!(
        s,
        "max_in_snapshot_log_to_keep = {}",
        raft.max_in_snapshot_log_to_keep
    );
    let _ = writeln!(
        s,
        "install_snapshot_timeout = {}",
        duration(raft.install_snapshot_timeout)
    );
    let _ = writeln!(s, "max_payload_entries = {}", raft.max_payload_entries);
    for p in &args.nodes {
        let _ = write!(
            s,
            "\n[[peers]]\nid = {}\naddr = {}\n",
            p.id,
            quoted(&p.addr())
        );
    }
    if args.tls {
        let _ = write!(
            s,
            "\n# Paths relative to this file.\n[tls]\ncert = {}\nkey = {}\nca = \"ca.pem\"\n\
             require_client_cert = {}\n",
            quoted(&format!("node{}.pem", m.id)),
            quoted(&format!("node{}-key.pem", m.id)),
            args.require_client_cert
        );
    }
    let _ = writeln!(
        s,
        "\n# Reloaded on SIGHUP (systemctl reload registry-node)."
    );
    let _ = writeln!(s, "[auth]");
    match tokens {
        Some(_) => {
            let _ = writeln!(s, "mode = \"tokens\"");
        }
        None => {
            let _ = writeln!(
                s,
                "# No client tokens: anyone who reaches the node may do anything (demo only)."
            );
            let _ = writeln!(s, "mode = \"disabled\"");
        }
    }
    let _ = writeln!(
        s,
        "# The same secret on every node (mode 0600); a relative path is taken from here."
    );
    let _ = writeln!(s, "cluster_secret_file = {}", quoted(SECRET_FILE));
    if let Some(tokens) = tokens {
        for ((_, name), (role, token)) in ROLES.iter().zip(&tokens.0) {
            let _ = write!(
                s,
                "\n# the {name} token (registryctl hash-token); changes made with it are\n\
                 # recorded as made by token:{name} (modified_by)\n[[auth.tokens]]\n\
                 role = {}\nsha256 = {}\nname = {}\n",
                quoted(role_name(*role)),
                quoted(&hash_token(token)),
                quoted(name)
            );
        }
    }
    s
}

fn role_name(role: Role) -> &'static str {
    ROLES
        .iter()
        .find(|(r, _)| *r == role)
        .map_or("reader", |(_, n)| n)
}

/// `client.env`: the endpoints and, with TLS, the CA and client certificate.
fn client_env(args: &InitClusterArgs, install_dir: &Path) -> String {
    let endpoints: Vec<String> = args.nodes.iter().map(Member::addr).collect();
    let mut s = String::from(
        "# registryctl's settings for this cluster (written by registryctl init-cluster); the\n\
         # token goes in REGISTRY_TOKEN (tokens/ROLE.env with --write-tokens).\n",
    );
    let _ = writeln!(s, "REGISTRY_ENDPOINTS={}", endpoints.join(","));
    if args.tls {
        for (var, file) in [
            ("REGISTRY_CACERT", "ca.pem"),
            ("REGISTRY_CERT", "client.pem"),
            ("REGISTRY_KEY", "client-key.pem"),
        ] {
            let _ = writeln!(s, "{var}={}", install_dir.join(file).display());
        }
    }
    s
}

/// Writes every file, or none when one of them exists already.
fn write_all(out: &Path, files: &[OutFile]) -> Result<(), CliError> {
    let err = |what: &str, p: &Path, e: std::io::Error| {
        CliError::Invalid(format!("{what} {}: {e}", p.display()))
    };
    if let Some(f) = files.iter().find(|f| out.join(&f.name).exists()) {
        return Err(CliError::Invalid(format!(
            "{} exists already: init-cluster never overwrites a file (choose another --out)",
            out.join(&f.name).display()
        )));
    }
    for f in files {
        let path = out.join(&f.name);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| err("creating", dir, e))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(if f.private { 0o600 } else { 0o644 })
            .open(&path)
            .map_err(|e| err("creating", &path, e))?;
        file.write_all(f.contents.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| err("writing", &path, e))?;
    }
    Ok(())
}

/// What was written, where each file goes, and the tokens (printed this once).
fn summary(args: &InitClusterArgs, files: &[OutFile], tokens: Option<&Tokens>) -> String {
    let mut s = format!(
        "Wrote {} files to {} for the cluster of {} nodes.\n",
        files.len(),
        args.out.display(),
        args.nodes.len()
    );
    for m in &args.nodes {
        let mut own = vec![format!("node{}.toml", m.id), SECRET_FILE.to_string()];
        if args.tls {
            own.extend([
                format!("node{}.pem", m.id),
                format!("node{}-key.pem", m.id),
                "ca.pem".into(),
            ]);
        }
        let _ = writeln!(
            s,
            "  node {} ({}): {}, first-start.env",
            m.id,
            m.addr(),
            own.join(", ")
        );
    }
    let _ = writeln!(
        s,
        "  clients: client.env{}",
        if args.tls {
            ", ca.pem, client.pem, client-key.pem"
        } else {
            ""
        }
    );
    if args.tls {
        let _ = writeln!(
            s,
            "  keep ca-key.pem off the nodes: it signs new certificates"
        );
    }
    let _ = writeln!(
        s,
        "First start: start every node with --bootstrap (first-start.env does it for \
         registry-node.service), then remove first-start.env."
    );
    match tokens {
        Some(tokens) => {
            let _ = writeln!(
                s,
                "Tokens (shown once{}; the configs hold only their SHA-256):",
                if args.write_tokens {
                    ", also in tokens/ROLE.env"
                } else {
                    ""
                }
            );
            for ((_, name), (_, token)) in ROLES.iter().zip(&tokens.0) {
                let _ = writeln!(s, "  {name:<8} {token}");
            }
        }
        None => {
            let _ = writeln!(
                s,
                "No client tokens (--no-client-tokens): mode = \"disabled\"."
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_parse() {
        assert_eq!(
            parse_member("2=10.0.0.2:21002"),
            Ok(Member {
                id: 2,
                host: "10.0.0.2".into(),
                port: 21002
            })
        );
        let m = parse_member("3=[::1]:7").expect("IPv6");
        assert_eq!(
            (m.addr().as_str(), m.listen().to_string()),
            ("[::1]:7", "[::1]:7".into())
        );
        let m = parse_member("4=registry-4.example:21004").expect("a DNS name");
        assert_eq!(
            m.listen().to_string(),
            "0.0.0.0:21004",
            "a name listens everywhere"
        );
        for bad in [
            "10.0.0.1:1",
            "x=h:1",
            "1=h",
            "1=h:0",
            "1=:5",
            "1=h:99999",
            "1=a b:1",
        ] {
            assert!(parse_member(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
