//! Test doubles both binaries' tests share (feature `testing`): a bare
//! DiceService, an mTLS server config, and an accept loop whose finished TLS
//! streams tonic serves. Built from what the agent uses (rustls with the ring
//! provider, client certificates verified against a CA, ALPN h2) and nothing
//! else, so `dice-reference` can be the benchmarks' ceiling and dicectl's
//! unit tests can roll against a real mTLS node.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rand::Rng;
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;
use tonic::{Request, Response, Status};

use crate::api::dice_service_server::DiceService;
use crate::api::{RollDieRequest, RollDieResponse};

/// A DiceService with no layers around it.
#[derive(Debug, Clone, Copy)]
pub enum Dice {
    /// A fair die from the thread's RNG, as the agent rolls.
    Fair,
    /// Always this value, for tests that check what came back.
    Always(i32),
    /// Always this error, for tests of how a client reports one.
    Fails(tonic::Code, &'static str),
}

#[tonic::async_trait]
impl DiceService for Dice {
    async fn roll_die(
        &self,
        _request: Request<RollDieRequest>,
    ) -> Result<Response<RollDieResponse>, Status> {
        let value = match *self {
            Dice::Fair => rand::rng().random_range(1..=6),
            Dice::Always(value) => value,
            Dice::Fails(code, message) => return Err(Status::new(code, message)),
        };
        Ok(Response::new(RollDieResponse { value }))
    }
}

/// TLS 1.3 and 1.2, the versions [`server_config`] speaks by default.
pub const TLS_VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// An mTLS server config: the given TLS `versions`, ALPN h2, the chain in
/// `cert` and its `key`, and client certificates verified against the CAs in
/// `client_ca`.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: &Path,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<Arc<rustls::ServerConfig>, String> {
    let chain = crate::pem::load_certs(cert).map_err(|e| e.to_string())?;
    let key = crate::pem::load_key(key).map_err(|e| e.to_string())?;
    let mut roots = RootCertStore::empty();
    for ca in crate::pem::load_certs(client_ca).map_err(|e| e.to_string())? {
        roots.add(ca).map_err(|e| e.to_string())?;
    }
    let provider = crate::crypto::provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| e.to_string())?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// A finished server TLS stream, as tonic's `serve_with_incoming` needs it
/// (tonic's own `Connected` impl for it needs tonic's TLS features).
pub struct ServedTls(TlsStream<TcpStream>);

impl Connected for ServedTls {
    type ConnectInfo = ();

    fn connect_info(&self) {}
}

impl AsyncRead for ServedTls {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for ServedTls {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Accepts TCP connections on `listener` (with `TCP_NODELAY`), runs each TLS
/// handshake in its own task and hands each finished stream to `ready`; a
/// refused handshake just drops the connection. Runs until `ready`'s
/// receiver is gone, its task is aborted or the runtime shuts down.
pub async fn accept_tls(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<io::Result<ServedTls>>,
) {
    while !ready.is_closed() {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            if let Ok(stream) = acceptor.accept(tcp).await {
                let _ = ready.send(Ok(ServedTls(stream))).await;
            }
        });
    }
}
