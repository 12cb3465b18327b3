//! The node processes of the failover scenario: the leader's PID from its PID file, its
//! SIGKILL, and its restart through the command the caller gave (`--restart-cmd`).

use std::os::fd::AsFd;
use std::process::Stdio;
use std::time::Duration;

use tokio::time::Instant;

use crate::procs::NodeProc;

/// The word a registry node's command line must hold for its PID to be killed.
const NODE_PROGRAM: &str = "registry-node";
/// Pause between two looks at a killed process.
const GONE_POLL: Duration = Duration::from_millis(5);
/// SIGKILL's number on Linux.
const SIGKILL: i32 = 9;

extern "C" {
    /// kill(2) from the C library std links with.
    fn kill(pid: i32, sig: i32) -> i32;
}

/// The PID of `node` now (from its PID file), checked to be a running registry node: a
/// live process whose command line holds `registry-node`.
pub fn running_node_pid(node: &NodeProc) -> anyhow::Result<u32> {
    let pid = node.current_pid().ok_or_else(|| {
        anyhow::anyhow!(
            "{}: no PID (give --registry-pid-file, in endpoint order)",
            node.name
        )
    })?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    anyhow::ensure!(
        cmdline.contains(NODE_PROGRAM),
        "{}: PID {pid} is not a running {NODE_PROGRAM} (its command line: '{}')",
        node.name,
        cmdline.trim()
    );
    Ok(pid)
}

/// Sends SIGKILL to `pid`.
pub fn sigkill(pid: u32) -> anyhow::Result<()> {
    let raw = i32::try_from(pid).map_err(|_| anyhow::anyhow!("PID {pid} out of range"))?;
    anyhow::ensure!(raw > 0, "refusing to signal PID {pid}");
    // SAFETY: kill(2) takes two integers and touches no memory of this process; `raw` is
    // one positive PID (never 0 or -1, which would signal groups).
    let rc = unsafe { kill(raw, SIGKILL) };
    if rc != 0 {
        anyhow::bail!("kill -KILL {pid}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Whether process `pid` has exited (it is gone, or a zombie: either way its sockets are
/// closed and its port is free).
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
    }
}

/// Waits until process `pid` has exited, or `deadline`.
pub async fn wait_exited(pid: u32, deadline: Instant) -> anyhow::Result<()> {
    while !exited(pid) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "PID {pid} still runs after SIGKILL"
        );
        tokio::time::sleep(GONE_POLL).await;
    }
    Ok(())
}

/// Runs `template` with `{node}` replaced by `node` (1-based endpoint position) through
/// `sh -c`, its output sent to this process's stderr, and waits (until `deadline`) for it
/// to succeed. The command is expected to start the node in the background, write the new
/// PID to the node's PID file, and return.
pub async fn restart(template: &str, node: usize, deadline: Instant) -> anyhow::Result<()> {
    let cmd = template.replace("{node}", &node.to_string());
    let stderr = std::io::stderr().as_fd().try_clone_to_owned()?;
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::from(stderr))
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| anyhow::anyhow!("starting `{cmd}`: {e}"))?;
    let status = tokio::time::timeout_at(deadline, child.wait())
        .await
        .map_err(|_| anyhow::anyhow!("`{cmd}` did not return in time"))?
        .map_err(|e| anyhow::anyhow!("waiting for `{cmd}`: {e}"))?;
    anyhow::ensure!(status.success(), "`{cmd}` failed: {status}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_runs_and_is_not_a_node() {
        assert!(!exited(std::process::id()));
        let me = NodeProc {
            name: "registry-1".into(),
            pid: Some(std::process::id()),
            ..NodeProc::default()
        };
        let err = running_node_pid(&me).map(|_| ()).unwrap_err().to_string();
        assert!(err.contains("is not a running registry-node"), "{err}");
        assert!(running_node_pid(&NodeProc::default()).is_err());
    }
}
