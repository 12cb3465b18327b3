//! The leader's clock tick: while this node leads and nothing else was stamped for a
//! [`TICK_INTERVAL`], it commits a `Tick` so registry time keeps moving on every node (see
//! `registry_storage::clock`). The same loop keeps the cluster's liveness settings
//! ([`SettingsKeeper`]: a leader of a log without them writes them) and the registry clock's
//! rate ([`ClockKeeper`]: slower while the registry refuses heartbeats for overload). On
//! every node, leader or not, it asks openraft for a snapshot once the log applied since the
//! last one outgrew it (`registry_storage::snapshot_policy`).

use std::time::Duration;

use openraft::{Raft, ServerState};
use registry_api::cluster_settings::SettingsKeeper;
use registry_api::shedding::ClockKeeper;
use registry_storage::clock::TICK_INTERVAL;
use registry_storage::state_machine::StateMachineStore;
use registry_storage::{Command, StateView, TypeConfig};
use tokio_util::sync::CancellationToken;

/// How often the loop looks.
const PERIOD: Duration = Duration::from_millis(100);
/// The least time between two requests for a snapshot (one takes a moment to start).
const SNAPSHOT_ASK_EVERY: Duration = Duration::from_secs(1);

/// This node's state machine, which says when a snapshot is due.
pub struct Snapshots {
    /// The state machine.
    pub sm: StateMachineStore,
    /// This node's id (the nodes' thresholds differ a little).
    pub node_id: u64,
}

/// Runs until `stop` is cancelled or Raft stops. A tick being committed when `stop` is
/// cancelled is dropped: it changes nothing but registry time.
pub async fn run(
    raft: Raft<TypeConfig>,
    view: StateView,
    settings: SettingsKeeper,
    clock: ClockKeeper,
    snapshots: Snapshots,
    stop: CancellationToken,
) {
    stop.run_until_cancelled(tick(raft, view, settings, clock, snapshots))
        .await;
}

/// The ticking loop; ends when Raft stops.
async fn tick(
    raft: Raft<TypeConfig>,
    view: StateView,
    settings: SettingsKeeper,
    clock: ClockKeeper,
    snapshots: Snapshots,
) {
    let mut interval = tokio::time::interval(PERIOD);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = tokio::time::Instant::now();
    let mut asked: Option<tokio::time::Instant> = None;
    loop {
        interval.tick().await;
        let now = tokio::time::Instant::now();
        let elapsed = now - last;
        last = now;
        let metrics = raft.metrics().borrow().clone();
        if metrics.running_state.is_err() {
            return;
        }
        if snapshots.sm.snapshot_due(snapshots.node_id)
            && asked.is_none_or(|at| now - at >= SNAPSHOT_ASK_EVERY)
        {
            asked = Some(now);
            if let Err(e) = raft.trigger().snapshot().await {
                tracing::debug!(error = %e, "asking for a snapshot failed");
            }
        }
        if let Some(cmd) = settings.check() {
            commit(&raft, cmd, "liveness settings").await;
            continue;
        }
        if let Some(cmd) = clock.check(elapsed) {
            commit(&raft, cmd, "registry clock rate").await;
            continue;
        }
        if metrics.state != ServerState::Leader || view.since_last_stamp() < TICK_INTERVAL {
            continue;
        }
        let tick = Command::Tick {
            at: chrono::Utc::now(),
        };
        commit(&raft, tick, "tick").await;
    }
}

/// Commits `cmd` (`what`), within 2 s; a failure is only logged: the loop tries again.
async fn commit(raft: &Raft<TypeConfig>, cmd: Command, what: &str) {
    match tokio::time::timeout(Duration::from_secs(2), raft.client_write(cmd)).await {
        Ok(Ok(_)) => tracing::debug!(what, "committed"),
        Ok(Err(e)) => tracing::debug!(error = %e, what, "not committed"),
        Err(_) => tracing::debug!(what, "not committed in time (no quorum?)"),
    }
}
