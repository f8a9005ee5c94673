//! Keeps `/metrics` on the address the config in force names: a config
//! reload that changes `metrics.address` binds the new address first, then
//! closes the old one; one that removes `[metrics]` closes it; one that adds
//! it binds it.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::config::LiveConfig;

/// The target of this module's events.
const TARGET: &str = "dice_agent::metrics";

/// The `/metrics` server running now.
struct Serving {
    address: Option<SocketAddr>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// Serves `/metrics` on `first` (bound at start, if `[metrics]` is on) and
/// follows `metrics.address` in `live` until `stop`.
pub async fn serve_following(
    first: Option<TcpListener>,
    live: Arc<LiveConfig>,
    stop: CancellationToken,
) {
    let mut current = first.map(|socket| start(socket, None, &stop));
    if let Some(serving) = &mut current {
        serving.address = live.current().metrics;
    }
    let mut configs = live.subscribe();
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            changed = configs.changed() => if changed.is_err() { break },
        }
        let wanted = configs.borrow_and_update().metrics;
        if current.as_ref().and_then(|s| s.address) == wanted {
            continue;
        }
        let next = match wanted {
            Some(address) => match TcpListener::bind(address).await {
                Ok(socket) => Some(start(socket, Some(address), &stop)),
                Err(error) => {
                    error!(target: TARGET, %address, %error, "metrics: cannot bind {address}: {error}; /metrics stays where it was (free the port or change metrics.address)");
                    continue;
                }
            },
            None => None,
        };
        if let Some(old) = std::mem::replace(&mut current, next) {
            old.stop.cancel();
            let _ = old.task.await;
            if current.is_none() {
                info!(target: TARGET, "metrics off: [metrics] removed");
            }
        }
    }
    if let Some(serving) = current {
        serving.stop.cancel();
        let _ = serving.task.await;
    }
}

fn start(socket: TcpListener, address: Option<SocketAddr>, stop: &CancellationToken) -> Serving {
    if let Ok(bound) = socket.local_addr() {
        info!(target: TARGET, address = %bound, "serving metrics at /metrics");
    }
    let own = stop.child_token();
    let task = tokio::spawn(super::serve(socket, own.clone()));
    Serving {
        address,
        stop: own,
        task,
    }
}
