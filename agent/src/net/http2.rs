//! Serves the gRPC stack on accepted connections with hyper's HTTP/2 server,
//! one task per connection, and drains them on stop: each connection is told
//! to finish (GOAWAY) and ends once its RPCs in flight have answered.
//!
//! tonic's own server would wrap every request in layers the agent does not
//! use (HTTP/1 detection, a boxed service and future per request, a body
//! re-boxed each way, its error recovery and timeout, which the agent does in
//! [`crate::rpc`]); here the connection's requests go straight
//! into the agent's stack.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::Service;
use tracing::debug;

use super::conn::{Conn, ConnInfo};
use super::registry::Connections;
use crate::config::{Limits, LiveConfig};

/// The target of this module's events, as before it moved into `net/`.
const TARGET: &str = "dice_agent::http2";

/// HTTP/2 settings from the agent's limits.
pub fn builder(limits: &Limits) -> http2::Builder<TokioExecutor> {
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(u32::try_from(limits.max_concurrent_streams).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(limits.keepalive_interval))
        .keep_alive_timeout(limits.keepalive_timeout);
    builder
}

/// The HTTP/2 server: the stack, its settings, and the stop signal every
/// connection watches.
///
/// The drain is a `TaskTracker` and the `CancellationToken` each connection
/// already selects on, not hyper-util's `GracefulShutdown`: that would serve
/// the same way (GOAWAY to every connection, wait for all to end; the grace
/// period is applied by the caller), but its watcher runs tokio's
/// cooperative-budget accounting on every poll of every connection, and
/// per-RPC work is not to rise without a measurement that shows it does not.
///
/// Each connection is registered in `connections` while it is open,
/// with a token of its own (a child of `stop`, so the connection still
/// selects on one token) that a re-check cancels to send it a GOAWAY: its
/// RPCs in flight get `shutdown.grace_period` to finish, then it is closed.
#[derive(Clone)]
pub struct Server<S> {
    stack: S,
    stop: CancellationToken,
    connections: Arc<Connections>,
    live: Arc<LiveConfig>,
}

impl<S> Server<S> {
    /// Serves `stack` until `stop`, registering every connection in
    /// `connections`. Each new connection gets the HTTP/2 settings of the
    /// limits in `live` as they are then (open ones keep theirs), and the
    /// grace period of a connection told to go away is read from it too.
    pub fn new(
        stack: S,
        stop: CancellationToken,
        connections: Arc<Connections>,
        live: Arc<LiveConfig>,
    ) -> Self {
        Self {
            stack,
            stop,
            connections,
            live,
        }
    }
}

impl<S, B> Server<S>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<tower::BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<tower::BoxError>,
{
    /// Serves every connection from `incoming` until stopped, then drains:
    /// returns once every connection has ended.
    pub async fn run(self, mut incoming: mpsc::Receiver<Conn>) {
        let connections = TaskTracker::new();
        loop {
            let conn = tokio::select! {
                conn = incoming.recv() => conn,
                () = self.stop.cancelled() => None,
            };
            let Some(conn) = conn else { break };
            connections.spawn(self.clone().serve_connection(conn));
        }
        // Connections accepted but not yet served are closed.
        drop(incoming);
        connections.close();
        connections.wait().await;
    }

    async fn serve_connection(self, conn: Conn) {
        let info = conn.info();
        let service = ConnService {
            stack: self.stack,
            info: info.clone(),
        };
        let go_away = self.stop.child_token();
        let _registered = self.connections.register(info.clone(), go_away.clone());
        let connection =
            builder(&self.live.current().limits).serve_connection(TokioIo::new(conn), service);
        tokio::pin!(connection);
        let ended = tokio::select! {
            biased;
            ended = connection.as_mut() => ended,
            () = go_away.cancelled() => {
                connection.as_mut().graceful_shutdown();
                if self.stop.is_cancelled() {
                    // The agent is stopping: its caller bounds the drain.
                    connection.await
                } else {
                    let grace: Duration = self.live.current().grace_period;
                    match tokio::time::timeout(grace, connection.as_mut()).await {
                        Ok(ended) => ended,
                        Err(_) => {
                            debug!(target: TARGET, peer = %info.peer, listener = %info.listener, ?grace, "closing a connection told to go away: the grace period ran out");
                            return;
                        }
                    }
                }
            }
        };
        if let Err(error) = ended {
            debug!(target: TARGET, peer = %info.peer, listener = %info.listener, %error, "connection ended with an error");
        }
    }
}

/// One connection's door into the stack: every request carries the
/// connection's [`ConnInfo`].
#[derive(Clone)]
struct ConnService<S> {
    stack: S,
    info: Arc<ConnInfo>,
}

impl<S> hyper::service::Service<Request<Incoming>> for ConnService<S>
where
    S: Service<Request<Incoming>> + Clone,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn call(&self, mut request: Request<Incoming>) -> S::Future {
        request.extensions_mut().insert(self.info.clone());
        // The stack is always ready (its layers pass readiness through and
        // `rpc::Dispatch` is always ready), so it is called without
        // waiting for `poll_ready`.
        self.stack.clone().call(request)
    }
}
