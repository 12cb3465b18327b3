//! The processes behind the endpoints: resident memory (`/proc/<pid>/status`) and the size
//! of their data directories on disk.

use std::path::{Path, PathBuf};

/// One server process of a cluster under test. Every field is optional: what is not given
/// is shown as `n/a`.
#[derive(Debug, Clone, Default)]
pub struct NodeProc {
    /// `registry-1`, `etcd-2`, ...
    pub name: String,
    /// Its PID.
    pub pid: Option<u32>,
    /// A file holding its PID (read at every sample, so a restarted process is followed).
    pub pid_file: Option<PathBuf>,
    /// Its data directory.
    pub data_dir: Option<PathBuf>,
}

/// What one sample of a process found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeSample {
    /// Resident set size (`VmRSS`), KiB.
    pub rss_kib: Option<u64>,
    /// Peak resident set size since the process started (`VmHWM`), KiB.
    pub hwm_kib: Option<u64>,
    /// Data directory size on disk (allocated blocks, as `du` counts), bytes.
    pub disk_bytes: Option<u64>,
    /// CPU time used since the process started (user + system), in clock ticks.
    pub cpu_ticks: Option<u64>,
}

/// Clock ticks per second of `/proc/<pid>/stat` (Linux's USER_HZ).
pub const TICKS_PER_SEC: u64 = 100;

impl NodeProc {
    /// The processes of a cluster of `endpoints.len()` nodes (or as many as PIDs, PID files
    /// or directories given, if more), named `{system}-1`, `{system}-2`, ...
    pub fn list(
        system: &str,
        endpoints: usize,
        pids: &[u32],
        pid_files: &[PathBuf],
        data_dirs: &[PathBuf],
    ) -> Vec<NodeProc> {
        let n = endpoints
            .max(pids.len())
            .max(pid_files.len())
            .max(data_dirs.len());
        (0..n)
            .map(|i| NodeProc {
                name: format!("{system}-{}", i + 1),
                pid: pids.get(i).copied(),
                pid_file: pid_files.get(i).cloned(),
                data_dir: data_dirs.get(i).cloned(),
            })
            .collect()
    }

    /// The PID now: the PID file's content when a file is given, else the PID.
    pub fn current_pid(&self) -> Option<u32> {
        self.pid_file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .and_then(|s| s.trim().parse().ok())
            .or(self.pid)
    }

    /// Samples memory and disk now.
    pub fn sample(&self) -> NodeSample {
        let pid = self.current_pid();
        NodeSample {
            rss_kib: pid.and_then(|p| status_kib(p, "VmRSS")),
            hwm_kib: pid.and_then(|p| status_kib(p, "VmHWM")),
            disk_bytes: self.data_dir.as_deref().and_then(disk_usage),
            cpu_ticks: pid.and_then(cpu_ticks),
        }
    }
}

/// Samples every process.
pub fn sample_all(nodes: &[NodeProc]) -> Vec<NodeSample> {
    nodes.iter().map(NodeProc::sample).collect()
}

/// User + system CPU time of process `pid`, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces), from field 3 (state) on.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// A `kB` field of `/proc/<pid>/status`.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Bytes allocated on disk under `path` (files that vanish meanwhile are skipped).
pub fn disk_usage(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path).ok()?;
    let mut total = meta.blocks() * 512;
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).ok()?.flatten() {
            total += disk_usage(&entry.path()).unwrap_or(0);
        }
    }
    Some(total)
}
