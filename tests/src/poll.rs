//! Waiting on a condition under a deadline. Tests synchronize by polling what
//! they are waiting for, never by sleeping a guessed amount.

use std::future::Future;
use std::time::{Duration, Instant};

/// How long to wait between two polls. Short: it bounds latency, not correctness.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Calls `cond` every [`POLL_INTERVAL`] until it returns true (then returns
/// true) or `timeout` has passed (then returns false). `cond` always runs at
/// least once, and once more after the deadline.
pub fn poll_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return cond();
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// The async form of [`poll_until`], for conditions that talk to the agent.
pub async fn poll_until_async<F, Fut>(timeout: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= deadline {
            return cond().await;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_true_once_the_condition_holds() {
        let mut calls = 0;
        assert!(poll_until(Duration::from_secs(5), || {
            calls += 1;
            calls == 3
        }));
        assert_eq!(calls, 3);
    }

    #[test]
    fn returns_false_after_the_deadline() {
        let start = Instant::now();
        assert!(!poll_until(Duration::from_millis(30), || false));
        assert!(start.elapsed() >= Duration::from_millis(30));
    }
}
