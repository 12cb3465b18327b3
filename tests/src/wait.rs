//! Waiting on a condition with a deadline, never a fixed sleep.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often a polled condition is checked.
const POLL: Duration = Duration::from_millis(20);

/// Polls `check` until it yields `Some`, or fails naming `what` once `timeout` has passed.
pub async fn until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(POLL).await;
    }
}
