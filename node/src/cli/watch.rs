//! `registryctl watch`, `registryctl zones` and `registryctl settings`: the events stream,
//! zone disruption, and the cluster-wide liveness settings.

use std::io::Write;

use clap::Args;
use registry_client::events::{EventKind, EventOut, Position, ZoneState};
use registry_client::watch::{Resumed, WatchFilter};
use registry_client::wire::SettingsIn;

use super::{CliError, GlobalArgs};

/// `watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Events after this position (`INDEX` or `INDEX-SEQ`; a list's `applied_index` is one);
    /// default: from now.
    #[arg(long)]
    pub since: Option<Position>,
    /// One JSON object per line instead of text.
    #[arg(long)]
    pub json: bool,
    /// Only services on this host.
    #[arg(long)]
    pub host: Option<String>,
    /// Only services of this binary.
    #[arg(long)]
    pub binary: Option<String>,
    /// Only this availability zone.
    #[arg(long)]
    pub zone: Option<String>,
    /// Only these kinds, comma-separated (created, up, down, disabled, enabled, forced-down,
    /// force-cleared, frozen, thawed, removed, zone).
    #[arg(long, value_delimiter = ',', value_parser = parse_kind)]
    pub kinds: Vec<EventKind>,
    /// Stop after this many events (default: run until interrupted).
    #[arg(long)]
    pub count: Option<u64>,
}

fn parse_kind(s: &str) -> Result<EventKind, String> {
    EventKind::parse(s).ok_or_else(|| {
        let known: Vec<&str> = EventKind::ALL.iter().map(|(_, n)| *n).collect();
        format!("unknown event kind {s:?}; known: {}", known.join(", "))
    })
}

/// One event as a line of text.
pub fn line(e: &EventOut) -> String {
    let at = e.registry_time.format("%Y-%m-%dT%H:%M:%S%.3fZ");
    match (&e.host, &e.binary) {
        (Some(host), Some(binary)) => format!(
            "{} {} {host} {binary} zone={} state={} status={} at={at}",
            e.position,
            e.kind.name(),
            e.zone,
            e.state.map_or("-", registry_client::wire::State::as_str),
            e.status.map_or("-", registry_client::wire::Status::as_str),
        ),
        _ => format!(
            "{} {} {} state={} suspect={} at={at}",
            e.position,
            e.kind.name(),
            e.zone,
            e.zone_state.map_or("-", ZoneState::name),
            e.suspect.unwrap_or(false),
        ),
    }
}

/// Prints events as they come, one per line, resuming on another node when one goes away
/// (said on standard error), until interrupted or `--count` events.
pub async fn watch(g: &GlobalArgs, args: &WatchArgs) -> Result<String, CliError> {
    let filter = WatchFilter {
        host: args.host.clone(),
        binary: args.binary.clone(),
        zone: args.zone.clone(),
        kinds: args.kinds.clone(),
    };
    let mut watch = g.client()?.watch(args.since, filter);
    let mut printed = 0;
    let stop = crate::signals::shutdown_signal();
    tokio::pin!(stop);
    let mut out = std::io::stdout().lock();
    while args.count.is_none_or(|n| printed < n) {
        let next = watch.next_with(
            |Resumed::After {
                 from,
                 why,
                 position,
             }| {
                let at = position.map_or("the start".to_string(), |p| p.to_string());
                eprintln!("registryctl: {from}: {why}; resuming after {at} on the next node");
            },
        );
        let e = tokio::select! {
            e = next => e?,
            () = &mut stop => break,
        };
        let text = if args.json {
            serde_json::to_string(&e).map_err(|err| CliError::Invalid(err.to_string()))?
        } else {
            line(&e)
        };
        writeln!(out, "{text}")
            .and_then(|()| out.flush())
            .map_err(|err| CliError::Invalid(format!("writing to standard output: {err}")))?;
        printed += 1;
    }
    Ok(String::new())
}

/// `zones`: every zone's counts and disruption state, and the suspect flag.
pub async fn zones(g: &GlobalArgs) -> Result<String, CliError> {
    let z = g.client()?.zones().await?;
    let mut t = super::services::new_table();
    t.set_header(["Zone", "Total", "Up", "Down", "Disabled", "State"]);
    for zone in &z.zones {
        t.add_row([
            zone.name.clone(),
            zone.total.to_string(),
            zone.up.to_string(),
            zone.down.to_string(),
            zone.disabled.to_string(),
            zone.state.name().to_string(),
        ]);
    }
    let suspect = if z.suspect {
        "SUSPECT: every zone is in full disruption at once; more likely the network or the \
         registry than every service. Do not fence on it."
    } else {
        "suspect: no"
    };
    Ok(format!(
        "{t}\n{suspect}\nunhealthy_zone_threshold: {}; as of applied index {}\n",
        z.unhealthy_zone_threshold,
        z.applied_index.map_or("none".into(), |i| i.to_string())
    ))
}

/// `settings`.
#[derive(Debug, Args)]
pub struct SettingsArgs {
    /// Change `service_down_time` for the whole cluster (e.g. 90s).
    #[arg(long, value_parser = super::parse_duration)]
    pub service_down_time: Option<std::time::Duration>,
    /// Change the unhealthy-zone threshold for the whole cluster (0 to 1).
    #[arg(long)]
    pub unhealthy_zone_threshold: Option<f64>,
}

/// Shows the cluster-wide liveness settings, or changes them (admin).
pub async fn settings(g: &GlobalArgs, args: &SettingsArgs) -> Result<String, CliError> {
    let client = g.client()?;
    let s = if args.service_down_time.is_none() && args.unhealthy_zone_threshold.is_none() {
        client.settings().await?
    } else {
        client
            .set_settings(&SettingsIn {
                service_down_time: args.service_down_time.map(|d| d.as_secs_f64()),
                unhealthy_zone_threshold: args.unhealthy_zone_threshold,
            })
            .await?
    };
    Ok(format!(
        "service_down_time: {}s\nunhealthy_zone_threshold: {}\nsource: {}\nthis node's file: \
         service_down_time {}s, unhealthy_zone_threshold {}\n",
        s.service_down_time,
        s.unhealthy_zone_threshold,
        s.source,
        s.file.service_down_time.unwrap_or_default(),
        s.file.unhealthy_zone_threshold.unwrap_or_default()
    ))
}
