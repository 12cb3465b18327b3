//! The checks run at the end of a process-level fault scenario.

use std::time::Duration;

use crate::history::{Checked, History, Reporters};
use crate::observer::{Observed, Observer};
use crate::procs::{converged_digests, converged_lists, ProcCluster};

/// Every running node caught up and holds what the history allows (see
/// [`History::check`]), linearizable reads included, and every state machine is identical.
pub async fn check_converged(c: &ProcCluster, history: &History) -> anyhow::Result<Checked> {
    let lists = converged_lists(c).await?;
    let checked = history.check(&lists)?;
    converged_digests(c, Duration::from_secs(20)).await?;
    Ok(checked)
}

/// Stops the observer, then the reporters (so the observer judges services only while they
/// heartbeat); fails if the observer does, saying how long the reporters went without an
/// acknowledgement (a service silent for `service_down_time` is rightly `down`).
pub async fn stop(reporters: Reporters, observer: Observer) -> anyhow::Result<(Observed, History)> {
    let observed = observer.stop().await;
    let history = reporters.stop().await;
    let gap = history.longest_ack_gap();
    eprintln!("RESULT reporters: longest wait between acknowledgements {gap:?}");
    let observed = observed.map_err(|e| {
        anyhow::anyhow!("{e:#}\n(the reporters' longest wait between acknowledgements: {gap:?})")
    })?;
    Ok((observed, history))
}

/// Ends a scenario: [`stop`], then every other check: the history's against every running
/// node, identical state machines.
pub async fn finish(
    c: &ProcCluster,
    reporters: Reporters,
    observer: Observer,
) -> anyhow::Result<(Observed, Checked)> {
    let (observed, history) = stop(reporters, observer).await?;
    let checked = check_converged(c, &history).await?;
    Ok((observed, checked))
}
