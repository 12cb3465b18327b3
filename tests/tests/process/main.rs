//! Process-level clusters: `registry-node` processes, killed with SIGKILL and restarted.

mod t10_leader_kill;
mod t20_liveness;
mod t30_faults;
mod t40_storage_faults;
mod t50_disk_loss;
mod t60_bootstrap;
mod t70_backup_restore;
mod t80_rotation;
mod t90_tls;
mod t95_audit;
mod t97_events;
