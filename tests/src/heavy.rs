//! A process-wide bound on the tests that open connections by the hundred.
//!
//! Every scenario runs in the one test binary, in parallel. Two tests that
//! each open a thousand connections at once compete for file descriptors,
//! ephemeral ports and the CPU, and each one's "closed within the timeout"
//! checks end up measuring the other. So each such test takes
//! [`many_connections`] first: they run one at a time, beside the ordinary
//! tests.

use tokio::sync::{Mutex, MutexGuard};

static MANY_CONNECTIONS: Mutex<()> = Mutex::const_new(());

/// Waits until no other connection-heavy test runs, and keeps the others
/// waiting until the guard is dropped. Take it before spawning the agent and
/// hold it to the end of the test. A test that panics releases it (a tokio
/// mutex is never poisoned).
pub async fn many_connections() -> MutexGuard<'static, ()> {
    MANY_CONNECTIONS.lock().await
}
