//! The http-01 responder on `[acme] http_address`: answers
//! `GET /.well-known/acme-challenge/<token>` with the key authorization while
//! that challenge is pending, and 404 to every other request.

use std::convert::Infallible;
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::TARGET;
use super::challenges::Challenges;

/// The path prefix of http-01 challenges (RFC 8555 section 8.3).
const PREFIX: &str = "/.well-known/acme-challenge/";

/// Serves `challenges` on `socket` until `stop`.
pub async fn serve(socket: &TcpListener, challenges: Arc<Challenges>, stop: CancellationToken) {
    if let Ok(address) = socket.local_addr() {
        info!(target: TARGET, %address, "answering http-01 challenges");
    }
    super::accept::until_stopped(socket, &stop, |stream, peer| {
        let challenges = challenges.clone();
        async move {
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let response = answer(&challenges, &request);
                debug!(target: TARGET, %peer, path = request.uri().path(), status = response.status().as_u16(), "http-01 request");
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = http1::Builder::new()
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), connection).await;
        }
    })
    .await;
}

fn answer<B>(challenges: &Challenges, request: &Request<B>) -> Response<String> {
    let found = (request.method() == http::Method::GET)
        .then(|| request.uri().path().strip_prefix(PREFIX))
        .flatten()
        .and_then(|token| challenges.http_answer(token));
    match found {
        Some(key_authorization) => Response::builder()
            .header(http::header::CONTENT_TYPE, "application/octet-stream")
            .body(key_authorization),
        None => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(String::new()),
    }
    // Both builders above get only valid, static parts.
    .unwrap_or_default()
}
