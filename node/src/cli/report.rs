//! `registryctl report`: runs a [`Reporter`] for a service that cannot embed one, with an
//! optional health command, until the shutdown signal.

use std::future::Future;
use std::time::Duration;

use clap::Args;

use super::{parse_duration, CliError, GlobalArgs};
use registry_client::reporter::{HealthCommand, Reporter, ReporterConfig};

/// Arguments of `report`.
#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// Host the service runs on.
    #[arg(long)]
    pub host: String,
    /// The service's binary, e.g. `cinder-volume`.
    #[arg(long)]
    pub binary: String,
    /// RPC topic [default: the binary].
    #[arg(long)]
    pub topic: Option<String>,
    /// Availability zone [default: the registry's].
    #[arg(long)]
    pub zone: Option<String>,
    /// Cluster name.
    #[arg(long)]
    pub cluster: Option<String>,
    /// Time between heartbeats, and before the first one.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Run `sh -c CMD` before each heartbeat; a non-zero exit skips that heartbeat.
    #[arg(long, value_name = "CMD")]
    pub health_cmd: Option<String>,
    /// How long the health command may run before it counts as failed [default: the
    /// interval].
    #[arg(long, value_parser = parse_duration)]
    pub health_timeout: Option<Duration>,
}

/// Runs the reporter until `shutdown` resolves; exits cleanly then.
pub async fn run(
    g: &GlobalArgs,
    a: &ReportArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<String, CliError> {
    let config = ReporterConfig {
        topic: a.topic.clone(),
        availability_zone: a.zone.clone(),
        cluster: a.cluster.clone(),
        interval: a.interval,
        request_timeout: g.timeout,
        token: g.token.clone(),
        tls: g.tls()?,
        ..ReporterConfig::new(g.endpoint_list(), a.host.clone(), a.binary.clone())
    };
    let mut reporter = Reporter::new(config)?;
    if let Some(cmd) = &a.health_cmd {
        let timeout = a.health_timeout.unwrap_or(a.interval);
        if timeout.is_zero() {
            return Err(CliError::Invalid(
                "--health-timeout must be more than zero".into(),
            ));
        }
        reporter = reporter.with_health_check(HealthCommand::new(cmd.clone(), timeout));
    }
    reporter.spawn(shutdown).join().await?;
    Ok(String::new())
}
