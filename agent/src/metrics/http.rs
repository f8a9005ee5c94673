//! The `/metrics` endpoint: plain HTTP/1.1 on its own listener.

use std::convert::Infallible;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// The content type of the OpenMetrics text format, which Prometheus scrapes.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `GET /metrics` until `stop`.
pub async fn serve(listener: TcpListener, stop: CancellationToken) {
    let mut connections = JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    debug!(%error, "metrics accept failed");
                    continue;
                }
            },
        };
        while connections.try_join_next().is_some() {}
        connections.spawn(async move {
            let served = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(respond))
                .await;
            if let Err(error) = served {
                debug!(%peer, %error, "metrics connection ended with an error");
            }
        });
    }
    connections.abort_all();
}

async fn respond(request: Request<Incoming>) -> Result<Response<String>, Infallible> {
    let response = match (request.method(), request.uri().path()) {
        (&Method::GET, "/metrics") => Response::builder()
            .header(http::header::CONTENT_TYPE, CONTENT_TYPE)
            .body(super::metrics().render()),
        _ => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body("not found: metrics are at GET /metrics\n".to_owned()),
    };
    // Both builders above get only valid, static parts.
    Ok(response.unwrap_or_default())
}
