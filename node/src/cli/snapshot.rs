//! `snapshot save FILE` and `snapshot status FILE`: backups of the whole registry, as etcd's
//! `etcdctl snapshot save/status`. A backup is a snapshot file ([`registry_storage::snapshot`]):
//! it checks itself (a CRC-32 over all of it) and says which cluster, log position and format
//! it is of, and how many records it holds.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use registry_api::wire::Consistency;
use registry_storage::snapshot::{self, SnapshotInfo};

use super::{CliError, GlobalArgs};

/// The `snapshot` commands.
#[derive(Debug, Clone, Subcommand)]
pub enum SnapshotCommand {
    /// Write a consistent backup of every record to FILE (admin token): taken on the leader
    /// once it confirmed its quorum, so it holds every heartbeat acknowledged before.
    Save {
        /// Where to write it (replaced atomically).
        file: PathBuf,
        /// Take it from the first endpoint that answers, whatever its lag.
        #[arg(long)]
        stale: bool,
    },
    /// Check a backup and print what it holds; exits non-zero when it is damaged.
    Status {
        /// The backup file.
        file: PathBuf,
    },
}

/// Runs a `snapshot` command.
pub async fn run(g: &GlobalArgs, command: SnapshotCommand) -> Result<String, CliError> {
    match command {
        SnapshotCommand::Save { file, stale } => {
            let consistency = if stale {
                Consistency::Stale
            } else {
                Consistency::Linearizable
            };
            // Bigger than a list: a million records is a few hundred MiB.
            let client = g.client()?;
            let bytes = client.backup(consistency).await?;
            let info = snapshot::check(&bytes).map_err(|e| {
                CliError::Invalid(format!(
                    "the registry sent a backup that does not check: {e}"
                ))
            })?;
            write_atomically(&file, &bytes)?;
            Ok(format!("Saved {}\n{}", file.display(), describe(&info)))
        }
        SnapshotCommand::Status { file } => {
            let bytes = std::fs::read(&file)
                .map_err(|e| CliError::Invalid(format!("reading {}: {e}", file.display())))?;
            let (info, records) = snapshot::decode(&bytes).map_err(|e| {
                CliError::Invalid(format!("{} is not a usable backup: {e}", file.display()))
            })?;
            let live = records.iter().filter(|r| !r.deleted).count();
            Ok(format!(
                "File:          {}\n{}Records:       {live} live, {} removed\n",
                file.display(),
                describe(&info),
                records.len() - live
            ))
        }
    }
}

/// What a backup says of itself, one field per line.
pub fn describe(info: &SnapshotInfo) -> String {
    let h = &info.header;
    let (term, index) = h
        .last_log_id
        .map_or((0, 0), |l| (l.leader_id.term, l.index));
    format!(
        "Format:        version {}\n\
         Cluster:       {}\n\
         Index:         {index}\n\
         Term:          {term}\n\
         Record count:  {}\n\
         Taken at:      {}\n\
         Size:          {} bytes\n\
         Checksum:      crc32 {:08x} (verified)\n",
        info.format_version,
        h.cluster_id
            .map_or_else(|| "none".to_string(), |c| c.to_string()),
        h.records,
        h.created_at.format("%Y-%m-%dT%H:%M:%SZ"),
        info.size,
        info.checksum,
    )
}

/// Writes `bytes` to `file` through a temporary file beside it, synced, then renamed.
fn write_atomically(file: &Path, bytes: &[u8]) -> Result<(), CliError> {
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = file
        .file_name()
        .ok_or_else(|| CliError::Invalid(format!("{} names no file", file.display())))?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    let io = |what: &str, e: std::io::Error| CliError::Invalid(format!("{what}: {e}"));
    let mut f =
        std::fs::File::create(&tmp).map_err(|e| io(&format!("creating {}", tmp.display()), e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| io(&format!("writing {}", tmp.display()), e))?;
    std::fs::rename(&tmp, file).map_err(|e| io(&format!("renaming to {}", file.display()), e))
}
