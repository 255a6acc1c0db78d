//! Waiting for a condition with a deadline: tests poll for the outcome they expect instead of sleeping for a guessed
//! time, so they are as fast as the server allows and fail with a message when the outcome never comes.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often [`eventually`] checks again.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Calls `check` until it returns `Some`, and returns that value; fails with `what` once `timeout` has passed.
///
/// Use it for outcomes that the server reaches asynchronously (a document unloading, a counter moving), where no
/// message tells the test the moment it happens.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
