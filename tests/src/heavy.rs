//! A process-wide bound on the tests that open connections by the hundred.
//!
//! Every scenario runs in the one test binary, in parallel. Two tests that
//! each open a thousand connections at once compete for file descriptors,
//! ephemeral ports and the CPU, and each one's "closed within the timeout"
//! checks end up measuring the other. So each such test takes
//! [`many_connections`] first: they run one at a time, beside the ordinary
//! tests. [`silent_connections`] opens such a crowd.

use std::net::SocketAddr;

use tokio::net::TcpStream;
use tokio::sync::{Mutex, MutexGuard};

static MANY_CONNECTIONS: Mutex<()> = Mutex::const_new(());

/// Waits until no other connection-heavy test runs, and keeps the others
/// waiting until the guard is dropped. Take it before spawning the agent and
/// hold it to the end of the test. A test that panics releases it (a tokio
/// mutex is never poisoned).
pub async fn many_connections() -> MutexGuard<'static, ()> {
    MANY_CONNECTIONS.lock().await
}

/// Opens `count` TCP connections to `addr`, one after another, that send
/// nothing: each holds a handshake (or, on h2c, a connection) open until the
/// agent's timeout closes it.
pub async fn silent_connections(addr: SocketAddr, count: usize) -> Vec<TcpStream> {
    let mut silent = Vec::with_capacity(count);
    for _ in 0..count {
        silent.push(
            TcpStream::connect(addr)
                .await
                .expect("open a silent connection"),
        );
    }
    silent
}
