//! The administrative commands: `service-disable`, `service-enable`, `service-freeze`,
//! `service-thaw`, `service-force-down` and `service-remove`. Each prints the changed
//! services; an unknown service or host exits with code 2.

use clap::Args;
use registry_api::wire::{ServiceAction, ServicesOut};
use registry_client::ClientError;

use super::services::{render, Column};
use super::{CliError, GlobalArgs};

/// A service, by host and binary.
#[derive(Debug, Clone, Args)]
pub struct ServiceArgs {
    /// The service's host.
    pub host: String,
    /// The service's binary.
    pub binary: String,
}

/// Arguments of `service-disable`.
#[derive(Debug, Clone, Args)]
pub struct DisableArgs {
    /// The service's host.
    pub host: String,
    /// The service's binary.
    pub binary: String,
    /// Why it is disabled (kept when the service is enabled again).
    #[arg(long)]
    pub reason: Option<String>,
}

/// A host.
#[derive(Debug, Clone, Args)]
pub struct HostArgs {
    /// The host.
    pub host: String,
}

/// Arguments of `service-force-down`.
#[derive(Debug, Clone, Args)]
pub struct ForceDownArgs {
    /// The service's host.
    pub host: String,
    /// The service's binary.
    pub binary: String,
    /// Stop forcing it down: its heartbeats decide again.
    #[arg(long)]
    pub unset: bool,
}

/// Arguments of `service-remove`: BINARY first, as `cinder-manage service remove`.
#[derive(Debug, Clone, Args)]
pub struct RemoveArgs {
    /// The service's binary.
    pub binary: String,
    /// The service's host.
    pub host: String,
}

/// Runs `service-disable`.
pub async fn disable(g: &GlobalArgs, a: &DisableArgs) -> Result<String, CliError> {
    let out = act(
        g,
        ServiceAction::Disable,
        &a.host,
        Some(&a.binary),
        a.reason.as_deref(),
    )
    .await?;
    Ok(render(
        &out.services,
        &[
            Column::Host,
            Column::Binary,
            Column::Status,
            Column::DisabledReason,
        ],
    ))
}

/// Runs `service-enable`.
pub async fn enable(g: &GlobalArgs, a: &ServiceArgs) -> Result<String, CliError> {
    let out = act(g, ServiceAction::Enable, &a.host, Some(&a.binary), None).await?;
    Ok(render(
        &out.services,
        &[Column::Host, Column::Binary, Column::Status],
    ))
}

/// Runs `service-freeze` (`frozen`) or `service-thaw`.
pub async fn freeze(g: &GlobalArgs, a: &HostArgs, frozen: bool) -> Result<String, CliError> {
    let action = if frozen {
        ServiceAction::Freeze
    } else {
        ServiceAction::Thaw
    };
    let out = act(g, action, &a.host, None, None).await?;
    Ok(render(
        &out.services,
        &[Column::Host, Column::Binary, Column::Frozen],
    ))
}

/// Runs `service-force-down`.
pub async fn force_down(g: &GlobalArgs, a: &ForceDownArgs) -> Result<String, CliError> {
    let action = if a.unset {
        ServiceAction::ClearForceDown
    } else {
        ServiceAction::ForceDown
    };
    let out = act(g, action, &a.host, Some(&a.binary), None).await?;
    Ok(render(
        &out.services,
        &[
            Column::Host,
            Column::Binary,
            Column::State,
            Column::ForcedDown,
        ],
    ))
}

/// Runs `service-remove`, with `cinder-manage`'s messages.
pub async fn remove(g: &GlobalArgs, a: &RemoveArgs) -> Result<String, CliError> {
    match act(g, ServiceAction::Remove, &a.host, Some(&a.binary), None).await {
        Ok(_) => Ok(format!(
            "Service {} on host {} removed.\n",
            a.binary, a.host
        )),
        Err(CliError::NotFound(_)) => Err(CliError::NotFound(format!(
            "Host not found. Failed to remove {} on {}.",
            a.binary, a.host
        ))),
        Err(e) => Err(e),
    }
}

/// Runs one action; a 404 becomes [`CliError::NotFound`] with the registry's message.
async fn act(
    g: &GlobalArgs,
    action: ServiceAction,
    host: &str,
    binary: Option<&str>,
    reason: Option<&str>,
) -> Result<ServicesOut, CliError> {
    match g.client()?.action(action, host, binary, reason).await {
        Ok(out) => Ok(out),
        Err(ClientError::Api {
            status: 404,
            message,
        }) => Err(CliError::NotFound(message)),
        Err(e) => Err(e.into()),
    }
}
