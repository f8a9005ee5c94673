//! The open connections, each with what its client presented and a way to
//! tell it to go away (HTTP/2 GOAWAY), so that a reload can reach
//! connections opened before it (and a removed listener can drain its own). Touched once when a connection starts and
//! once when it ends; never per RPC.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio_util::sync::CancellationToken;

use super::ConnInfo;

/// Every open connection.
#[derive(Debug, Default)]
pub struct Connections {
    open: Mutex<HashMap<u64, OpenConn>>,
    next_id: AtomicU64,
}

/// One open connection, as a re-check sees it.
#[derive(Debug, Clone)]
pub struct OpenConn {
    /// Its peer, listener and verified client chain.
    pub info: Arc<ConnInfo>,
    /// Cancelled to have the connection finish its RPCs in flight and close.
    pub go_away: CancellationToken,
}

/// Keeps a connection in [`Connections`] until dropped.
#[derive(Debug)]
pub struct Registered {
    connections: Arc<Connections>,
    id: u64,
}

impl Connections {
    /// Adds the connection `info` describes; it stays until the guard drops.
    pub fn register(
        self: &Arc<Self>,
        info: Arc<ConnInfo>,
        go_away: CancellationToken,
    ) -> Registered {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, OpenConn { info, go_away });
        Registered {
            connections: self.clone(),
            id,
        }
    }

    /// Tells every open connection of `listener` to go away; returns how many.
    pub fn drain(&self, listener: &str) -> usize {
        let open = self.lock();
        let mine = open
            .values()
            .filter(|conn| *conn.info.listener == *listener);
        mine.map(|conn| conn.go_away.cancel()).count()
    }

    /// The connections open now.
    pub fn snapshot(&self) -> Vec<OpenConn> {
        self.lock().values().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, OpenConn>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.connections.lock().remove(&self.id);
    }
}
