//! The leader's clock tick: while this node leads and nothing else was stamped for a
//! [`TICK_INTERVAL`], it commits a `Tick` so registry time keeps moving on every node (see
//! `registry_storage::clock`).

use std::time::Duration;

use openraft::{Raft, ServerState};
use registry_storage::clock::TICK_INTERVAL;
use registry_storage::{Command, StateView, TypeConfig};
use tokio_util::sync::CancellationToken;

/// Runs until `stop` is cancelled or Raft stops. A tick being committed when `stop` is
/// cancelled is dropped: it changes nothing but registry time.
pub async fn run(raft: Raft<TypeConfig>, view: StateView, stop: CancellationToken) {
    stop.run_until_cancelled(tick(raft, view)).await;
}

/// The ticking loop; ends when Raft stops.
async fn tick(raft: Raft<TypeConfig>, view: StateView) {
    let mut interval = tokio::time::interval(TICK_INTERVAL / 3);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let metrics = raft.metrics().borrow().clone();
        if metrics.running_state.is_err() {
            return;
        }
        if metrics.state != ServerState::Leader || view.since_last_stamp() < TICK_INTERVAL {
            continue;
        }
        let tick = Command::Tick {
            at: chrono::Utc::now(),
        };
        match tokio::time::timeout(Duration::from_secs(2), raft.client_write(tick)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "tick not committed"),
            Err(_) => tracing::debug!("tick not committed in time (no quorum?)"),
        }
    }
}
