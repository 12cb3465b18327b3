//! The cluster-wide liveness settings: `service_down_time` and `unhealthy_zone_threshold`
//! travel in the log (`Command::Settings`), so that every node judges liveness and derives
//! events and zone states with the same values.
//!
//! - A leader of a log that carries no settings yet writes its own file's, once every member
//!   reads storage format 3 (an older member could not decode the entry).
//! - Once the log carries them, every node judges by them; a node whose file says otherwise
//!   logs a warning (once per value), since its file no longer decides.
//! - `PUT /v1/settings` (admin) changes them for the whole cluster.

use std::sync::{Arc, Mutex, PoisonError};

use openraft::ServerState;
use registry_storage::{Command, LivenessSettings};

use crate::shared::Shared;

/// The first storage format that decodes `Command::Settings`.
const SETTINGS_FORMAT: u8 = 3;

/// Watches the settings in force against this node's file, and says what a leader must write.
pub struct SettingsKeeper {
    shared: Arc<Shared>,
    /// The log's settings this node last warned about.
    warned: Mutex<Option<LivenessSettings>>,
}

impl SettingsKeeper {
    /// A keeper of `shared`'s settings.
    pub fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            warned: Mutex::new(None),
        }
    }

    /// Checks the settings in force (a warning when the log's differ from this node's file)
    /// and returns the command to write when this node leads a log without settings and every
    /// member can decode them; `None` otherwise. Cheap: called by the leader's ticker.
    pub fn check(&self) -> Option<Command> {
        let file = self.shared.file_settings();
        match self.shared.view.read(|s| s.settings) {
            Some(log) => {
                let mut warned = self.warned.lock().unwrap_or_else(PoisonError::into_inner);
                if log != file && *warned != Some(log) {
                    tracing::warn!(
                        log_service_down_time_ms = log.service_down_time_ms,
                        file_service_down_time_ms = file.service_down_time_ms,
                        log_unhealthy_zone_threshold = log.unhealthy_zone_threshold(),
                        file_unhealthy_zone_threshold = file.unhealthy_zone_threshold(),
                        "this node's file disagrees with the cluster's liveness settings; \
                         judging by the cluster's (change them with PUT /v1/settings)"
                    );
                    *warned = Some(log);
                }
                None
            }
            None => {
                let leader = self.shared.raft.metrics().borrow().state == ServerState::Leader;
                (leader && self.shared.common_format() >= SETTINGS_FORMAT).then(|| {
                    Command::Settings {
                        at: chrono::Utc::now(),
                        settings: file,
                    }
                })
            }
        }
    }
}
