//! tls-alpn-01 on the mTLS listener `[acme] tls_alpn_listener`: while a
//! challenge is pending, its handshakes start by reading the ClientHello; one
//! offering `acme-tls/1` is answered with the challenge certificate (and no
//! client certificate asked for) and closed, every other goes on with the
//! listener's own config, unchanged. Before the listener serves (the first
//! certificate), the address answers validation handshakes alone.

use std::sync::{Arc, OnceLock};

use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::TARGET;
use super::challenges::{ACME_TLS_ALPN, Challenges};

/// How long a validation handshake may take.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The listener answering tls-alpn-01, and its challenges (one agent per process).
static LISTENER: OnceLock<(String, Arc<Challenges>)> = OnceLock::new();

/// Makes `listener` answer the tls-alpn-01 challenges of `challenges`.
pub fn register(listener: &str, challenges: Arc<Challenges>) {
    let _ = LISTENER.set((listener.to_owned(), challenges));
}

/// The challenges the listener `name` answers, if it is the tls-alpn-01 one.
pub fn challenges_for(name: &str) -> Option<Arc<Challenges>> {
    LISTENER
        .get()
        .filter(|(listener, _)| listener == name)
        .map(|(_, challenges)| challenges.clone())
}

/// The TLS handshake of a connection to the tls-alpn-01 listener: `Ok(None)`
/// when it was an ACME validation (answered and closed), else the stream
/// made with `config`, exactly as an ordinary accept would.
pub async fn accept(
    stream: TcpStream,
    config: Arc<ServerConfig>,
    challenges: &Arc<Challenges>,
) -> std::io::Result<Option<TlsStream<TcpStream>>> {
    if !challenges.tls_pending() {
        return tokio_rustls::TlsAcceptor::from(config)
            .accept(stream)
            .await
            .map(Some);
    }
    let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream).await?;
    let validation = start
        .client_hello()
        .alpn()
        .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
    if !validation {
        return start.into_stream(config).await.map(Some);
    }
    let acme_config = challenges.tls_config().map_err(std::io::Error::other)?;
    let mut tls = start.into_stream(acme_config).await?;
    info!(target: TARGET, "answered a tls-alpn-01 validation handshake");
    // Nothing is served on it: say goodbye.
    let _ = tokio::io::AsyncWriteExt::shutdown(&mut tls).await;
    Ok(None)
}

/// Answers `acme-tls/1` handshakes on `socket` until `stop`; others fail.
pub async fn serve_alone(
    socket: TcpListener,
    challenges: Arc<Challenges>,
    stop: CancellationToken,
) {
    let Ok(config) = challenges.tls_config() else {
        return;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    super::accept::until_stopped(&socket, &stop, |stream, peer| {
        let acceptor = acceptor.clone();
        async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(mut tls)) => {
                    info!(target: TARGET, %peer, "answered a tls-alpn-01 validation handshake");
                    let _ = tokio::io::AsyncWriteExt::shutdown(&mut tls).await;
                }
                Ok(Err(error)) => {
                    debug!(target: TARGET, %peer, %error, "handshake before the first certificate refused");
                }
                Err(_) => {}
            }
        }
    })
    .await;
}
