//! The accept loop of the two small servers ACME validation needs (the
//! http-01 responder and the tls-alpn-01 answerer before the first
//! certificate): each connection handled in its own task, those still
//! running dropped at stop.

use std::future::Future;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Accepts connections on `socket` until `stop`, handing each to `handle`
/// in its own task; aborts the tasks still running when `stop` fires.
pub async fn until_stopped<F, Fut>(socket: &TcpListener, stop: &CancellationToken, handle: F)
where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = socket.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(_) => continue,
            },
        };
        while connections.try_join_next().is_some() {}
        connections.spawn(handle(stream, peer));
    }
    connections.abort_all();
}
