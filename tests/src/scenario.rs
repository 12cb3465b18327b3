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

/// Ends a scenario: stops the observer, then the reporters (so the observer judges services
/// only while they heartbeat), and runs every check: the observer's, the history's against
/// every running node, identical state machines.
pub async fn finish(
    c: &ProcCluster,
    reporters: Reporters,
    observer: Observer,
) -> anyhow::Result<(Observed, Checked)> {
    let observed = observer.stop().await?;
    let history = reporters.stop().await;
    let checked = check_converged(c, &history).await?;
    Ok((observed, checked))
}
