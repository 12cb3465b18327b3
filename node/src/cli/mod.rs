//! `registryctl`, the operator's command line: list services like `cinder service-list`,
//! run the administrative actions of `cinder service-*` and `cinder-manage service remove`,
//! show the cluster, and run a reporter for a service that cannot embed one.
//!
//! One file per command group: [`services`] (listing and the table), [`actions`] (disable,
//! enable, freeze, thaw, force-down, remove), [`cluster`] (`cluster status`), [`report`]
//! (the reporter loop), [`init_cluster`] (the files of a new cluster). Each command answers the text to print, so the binary only prints
//! it and maps a [`CliError`] to an exit code.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use registry_client::{ClientError, ClientTls, RegistryClient};

pub mod actions;
pub mod cluster;
pub mod init_cluster;
mod init_pki;
pub mod report;
pub mod services;
pub mod snapshot;
pub mod watch;

/// The endpoints of the local three-node cluster (`cluster-config/`).
pub const DEFAULT_ENDPOINTS: &str = "127.0.0.1:21001,127.0.0.1:21002,127.0.0.1:21003";
/// Bound on each request when `--timeout` is not given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Operator's tool for the service-heartbeat registry.
#[derive(Debug, Parser)]
#[command(name = "registryctl", version)]
pub struct Cli {
    /// Options of every command.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options of every command.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Registry nodes, tried in order until one answers (comma-separated `host:port`).
    #[arg(
        long,
        global = true,
        env = "REGISTRY_ENDPOINTS",
        value_delimiter = ',',
        default_value = DEFAULT_ENDPOINTS
    )]
    pub endpoints: Vec<String>,
    /// Bound on each request, e.g. `5s` or `500ms` [default: 5s; for `report`, the interval
    /// clamped to 1s..10s].
    #[arg(long, global = true, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Token sent to the registry (`Authorization: Bearer`), when it requires tokens: a
    /// `reader` token lists, a `reporter` token reports, an `admin` token does everything.
    #[arg(long, global = true, env = "REGISTRY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// CA bundle (PEM) to trust for HTTPS endpoints (the cluster CA; no other root is
    /// trusted). With it, an endpoint given as `host:port` is `https://host:port`.
    #[arg(long, global = true, env = "REGISTRY_CACERT", value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// Client certificate (PEM chain) to present to nodes that ask for one; needs `--key`.
    #[arg(
        long,
        global = true,
        env = "REGISTRY_CERT",
        value_name = "FILE",
        requires = "key"
    )]
    pub cert: Option<PathBuf>,
    /// Private key (PEM) of `--cert`.
    #[arg(
        long,
        global = true,
        env = "REGISTRY_KEY",
        value_name = "FILE",
        requires = "cert"
    )]
    pub key: Option<PathBuf>,
}

impl GlobalArgs {
    /// The endpoints given, blanks dropped.
    pub fn endpoint_list(&self) -> Vec<String> {
        self.endpoints
            .iter()
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty())
            .collect()
    }

    /// A client of the endpoints, in order.
    pub fn client(&self) -> Result<RegistryClient, CliError> {
        let endpoints = self.endpoint_list();
        if endpoints.is_empty() {
            return Err(CliError::Invalid("--endpoints names no endpoint".into()));
        }
        Ok(self.authenticated(RegistryClient::with_tls(
            endpoints,
            self.request_timeout(),
            self.tls()?.as_ref(),
        )?))
    }

    /// The TLS settings of `--cacert`, `--cert` and `--key` (`None` when none is given).
    pub fn tls(&self) -> Result<Option<ClientTls>, CliError> {
        if self.cacert.is_none() && self.cert.is_none() && self.key.is_none() {
            return Ok(None);
        }
        Ok(Some(ClientTls::from_files(
            self.cacert.as_deref(),
            self.cert.as_deref(),
            self.key.as_deref(),
        )?))
    }

    /// A client of one node only.
    pub fn client_of(&self, addr: &str) -> Result<RegistryClient, CliError> {
        Ok(self.authenticated(RegistryClient::with_tls(
            [addr.to_string()],
            self.request_timeout(),
            self.tls()?.as_ref(),
        )?))
    }

    fn authenticated(&self, client: RegistryClient) -> RegistryClient {
        match &self.token {
            Some(t) => client.with_token(t.clone()),
            None => client,
        }
    }

    /// The bound on each request.
    pub fn request_timeout(&self) -> Duration {
        self.timeout.unwrap_or(DEFAULT_TIMEOUT)
    }
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List services, as `cinder service-list` does.
    ServiceList(services::ListArgs),
    /// Disable a service (with an optional reason).
    ServiceDisable(actions::DisableArgs),
    /// Enable a service (a disabled reason is kept, as in Cinder).
    ServiceEnable(actions::ServiceArgs),
    /// Freeze every service of a host.
    ServiceFreeze(actions::HostArgs),
    /// Thaw every service of a host.
    ServiceThaw(actions::HostArgs),
    /// Force a service down whatever its heartbeats say (or, with --unset, stop forcing it).
    ServiceForceDown(actions::ForceDownArgs),
    /// Remove a service, as `cinder-manage service remove BINARY HOST` does; a service that
    /// still runs re-creates itself at its next heartbeat.
    ServiceRemove(actions::RemoveArgs),
    /// Print liveness events as they happen (one line each), resuming on another node when
    /// one goes away.
    Watch(watch::WatchArgs),
    /// Availability zones: counts, disruption state, and the suspect flag.
    Zones,
    /// Show the cluster-wide liveness settings, or change them (admin).
    Settings(watch::SettingsArgs),
    /// The registry cluster.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Backups: save one, check one.
    #[command(subcommand)]
    Snapshot(snapshot::SnapshotCommand),
    /// Send a service's heartbeats until SIGTERM or SIGINT.
    Report(report::ReportArgs),
    /// Write the configs, cluster secret, tokens (and with --tls the certificates) of a new
    /// cluster.
    InitCluster(init_cluster::InitClusterArgs),
    /// Print the SHA-256 of a token, as a node's `[[auth.tokens]]` entry wants it (the token
    /// is read from standard input when not given).
    HashToken {
        /// The token.
        token: Option<String>,
    },
}

/// Why a command failed; [`CliError::exit_code`] is the process's exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The service or host does not exist (exit code 2, as `cinder-manage`).
    #[error("{0}")]
    NotFound(String),
    /// The registry could not be reached or answered with an error (exit code 1).
    #[error("{0}")]
    Client(#[from] ClientError),
    /// The command's arguments cannot work (exit code 1).
    #[error("{0}")]
    Invalid(String),
}

impl CliError {
    /// The process exit code for this error: 2 when something was not found, else 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::NotFound(_) => 2,
            _ => 1,
        }
    }
}

/// Runs the command; answers what to print on standard output.
pub async fn execute(cli: Cli) -> Result<String, CliError> {
    let g = &cli.global;
    match cli.command {
        Command::ServiceList(args) => services::list(g, &args).await,
        Command::ServiceDisable(args) => actions::disable(g, &args).await,
        Command::ServiceEnable(args) => actions::enable(g, &args).await,
        Command::ServiceFreeze(args) => actions::freeze(g, &args, true).await,
        Command::ServiceThaw(args) => actions::freeze(g, &args, false).await,
        Command::ServiceForceDown(args) => actions::force_down(g, &args).await,
        Command::ServiceRemove(args) => actions::remove(g, &args).await,
        Command::Watch(args) => watch::watch(g, &args).await,
        Command::Zones => watch::zones(g).await,
        Command::Settings(args) => watch::settings(g, &args).await,
        Command::Cluster(c) => cluster::run(g, c).await,
        Command::Snapshot(c) => snapshot::run(g, c).await,
        Command::HashToken { token } => hash_token(token),
        Command::InitCluster(args) => init_cluster::run(&args),
        Command::Report(args) => report::run(g, &args, crate::signals::shutdown_signal()).await,
    }
}

/// `hash-token`: the digest of the given token, or of the first line of standard input.
fn hash_token(token: Option<String>) -> Result<String, CliError> {
    let token = match token {
        Some(t) => t,
        None => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .map_err(|e| CliError::Invalid(format!("reading the token: {e}")))?;
            line.trim_end_matches(['\n', '\r']).to_string()
        }
    };
    if token.is_empty() {
        return Err(CliError::Invalid("empty token".into()));
    }
    Ok(format!("{}\n", registry_api::auth::hash_token(&token)))
}

/// Parses a duration such as `10s`, `250ms` or `1m 30s`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime_serde::re::humantime::parse_duration(s)
        .map_err(|e| format!("invalid duration {s:?}: {e} (examples: 10s, 250ms, 1m)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_parse_like_the_cinder_commands() {
        let cli = Cli::try_parse_from([
            "registryctl",
            "--endpoints",
            "a:1,b:2",
            "service-remove",
            "cinder-volume",
            "host@lvm",
        ])
        .expect("parses");
        assert_eq!(cli.global.endpoint_list(), ["a:1", "b:2"]);
        match cli.command {
            Command::ServiceRemove(a) => {
                assert_eq!(
                    (a.binary.as_str(), a.host.as_str()),
                    ("cinder-volume", "host@lvm"),
                    "remove takes BINARY then HOST, as cinder-manage"
                );
            }
            other => panic!("parsed as {other:?}"),
        }
        let cli = Cli::try_parse_from([
            "registryctl",
            "service-disable",
            "h",
            "b",
            "--reason",
            "maintenance",
            "--timeout",
            "250ms",
        ])
        .expect("parses");
        assert_eq!(cli.global.timeout, Some(Duration::from_millis(250)));
        let cli = Cli::try_parse_from(["registryctl", "cluster", "status"]).expect("parses");
        assert!(matches!(
            cli.command,
            Command::Cluster(cluster::ClusterCommand::Status)
        ));
        assert!(Cli::try_parse_from(["registryctl", "report", "--host", "h"]).is_err());
        assert!(Cli::try_parse_from(["registryctl", "--timeout", "soon", "service-list"]).is_err());
    }

    #[test]
    fn exit_codes() {
        assert_eq!(CliError::NotFound("x".into()).exit_code(), 2);
        assert_eq!(CliError::Invalid("x".into()).exit_code(), 1);
        let e = ClientError::Api {
            status: 503,
            message: "no leader".into(),
        };
        assert_eq!(CliError::from(e).exit_code(), 1);
    }
}
