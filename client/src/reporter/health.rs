//! Health checks run before each heartbeat (Cinder's `manager.is_working()`): any closure,
//! or a shell command.

use std::future::Future;
use std::pin::Pin;
use std::process::Stdio;
use std::time::Duration;

/// The future a [`HealthCheck`] answers with.
pub type HealthFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// Whether the service is working (Cinder's `manager.is_working()`): `Err(why)` skips the
/// heartbeat of this tick. Any `Fn() -> Result<(), String>` is a health check; implement the
/// trait for a check that has to wait on something, as [`HealthCommand`] does.
pub trait HealthCheck: Send + Sync + 'static {
    /// Checks the service once.
    fn check(&self) -> HealthFuture<'_>;
}

impl<F> HealthCheck for F
where
    F: Fn() -> Result<(), String> + Send + Sync + 'static,
{
    fn check(&self) -> HealthFuture<'_> {
        Box::pin(std::future::ready(self()))
    }
}

/// A health check that runs a shell command (`sh -c COMMAND`): exit status 0 is healthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCommand {
    /// The command line, given to `sh -c`.
    pub command: String,
    /// How long the command may run; it is killed and counted unhealthy after that.
    pub timeout: Duration,
}

impl HealthCommand {
    /// A check running `command` with `timeout`.
    pub fn new(command: impl Into<String>, timeout: Duration) -> Self {
        Self {
            command: command.into(),
            timeout,
        }
    }

    async fn run(&self) -> Result<(), String> {
        let child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(&self.command)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output();
        let out = match tokio::time::timeout(self.timeout, child).await {
            Err(_) => {
                return Err(format!(
                    "health command did not finish within {:?}",
                    self.timeout
                ))
            }
            Ok(Err(e)) => return Err(format!("health command could not run: {e}")),
            Ok(Ok(out)) => out,
        };
        if out.status.success() {
            return Ok(());
        }
        let said = last_line(&out.stderr).or_else(|| last_line(&out.stdout));
        Err(match said {
            Some(line) => format!("health command failed ({}): {line}", out.status),
            None => format!("health command failed ({})", out.status),
        })
    }
}

impl HealthCheck for HealthCommand {
    fn check(&self) -> HealthFuture<'_> {
        Box::pin(self.run())
    }
}

/// The last non-empty line of a command's output, cut to a loggable length.
fn last_line(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let line = text.lines().rev().find(|l| !l.trim().is_empty())?.trim();
    Some(line.chars().take(200).collect())
}
