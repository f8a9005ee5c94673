//! Test helpers: a dev PKI in a temp dir and an in-process mTLS dice node on `127.0.0.1:0`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use dice_proto::api::dice_service_server::{DiceService, DiceServiceServer};
use dice_proto::api::{RollDieRequest, RollDieResponse};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tempfile::TempDir;
use time::OffsetDateTime;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use tonic::{Request, Response, Status};

use crate::certs::{self, InitOptions};

/// A dev PKI made by `certs::init` in its own temp dir.
pub struct Pki {
    dir: TempDir,
}

impl Pki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let options = InitOptions {
            out: dir.path().to_owned(),
            server_sans: Vec::new(),
            force: false,
        };
        certs::init(&options, OffsetDateTime::now_utc()).expect("certs init");
        Self { dir }
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        crate::tls::client_config(
            &self.file("ca.pem"),
            &self.file("client.pem"),
            &self.file("client-key.pem"),
        )
        .expect("client config")
    }

    /// A server config presenting this PKI's server certificate and trusting
    /// clients signed by `client_ca`'s CA.
    pub fn server_config(&self, client_ca: &Pki) -> Arc<ServerConfig> {
        server_config(
            &client_ca.file("ca.pem"),
            &self.file("server.pem"),
            &self.file("server-key.pem"),
        )
    }

    /// As [`Pki::server_config`], but speaking TLS 1.2 only.
    pub fn server_config_tls12(&self, client_ca: &Pki) -> Arc<ServerConfig> {
        server_config_with(
            &client_ca.file("ca.pem"),
            &self.file("server.pem"),
            &self.file("server-key.pem"),
            &[&rustls::version::TLS12],
        )
    }
}

pub fn server_config(ca: &Path, cert: &Path, key: &Path) -> Arc<ServerConfig> {
    server_config_with(ca, cert, key, rustls::DEFAULT_VERSIONS)
}

fn server_config_with(
    ca: &Path,
    cert: &Path,
    key: &Path,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ServerConfig> {
    let mut roots = RootCertStore::empty();
    for cert in dice_proto::pem::load_certs(ca).expect("ca") {
        roots.add(cert).expect("root");
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        dice_proto::crypto::provider(),
    )
    .build()
    .expect("verifier");
    let mut config = ServerConfig::builder_with_provider(dice_proto::crypto::provider())
        .with_protocol_versions(versions)
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            dice_proto::pem::load_certs(cert).expect("cert"),
            dice_proto::pem::load_key(key).expect("key"),
        )
        .expect("server config");
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// What the test node answers to RollDie.
#[derive(Clone)]
pub enum Reply {
    Value(i32),
    Error(tonic::Code, &'static str),
}

struct Dice(Reply);

#[tonic::async_trait]
impl DiceService for Dice {
    async fn roll_die(
        &self,
        _request: Request<RollDieRequest>,
    ) -> Result<Response<RollDieResponse>, Status> {
        match &self.0 {
            Reply::Value(value) => Ok(Response::new(RollDieResponse { value: *value })),
            Reply::Error(code, message) => Err(Status::new(*code, *message)),
        }
    }
}

/// A dice node serving mTLS on `127.0.0.1:0` until dropped.
pub struct Node {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    accept: JoinHandle<()>,
    serve: JoinHandle<()>,
}

impl Node {
    pub async fn spawn(config: Arc<ServerConfig>, reply: Reply) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = mpsc::channel::<Result<Tls, std::io::Error>>(4);
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let accept = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                // A refused handshake just drops the connection, as an agent would.
                if let Ok(tls) = acceptor.accept(tcp).await
                    && tx.send(Ok(Tls(tls))).await.is_err()
                {
                    break;
                }
            }
        });
        let (shutdown, stop) = oneshot::channel();
        let serve = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(DiceServiceServer::new(Dice(reply)))
                .serve_with_incoming_shutdown(ReceiverStream::new(rx), async {
                    let _ = stop.await;
                })
                .await
                .expect("serve");
        });
        Self {
            addr,
            shutdown: Some(shutdown),
            accept,
            serve,
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        self.accept.abort();
        self.serve.abort();
    }
}

/// A server TLS stream tonic can serve (tonic's own impl needs its TLS features).
pub struct Tls(tokio_rustls::server::TlsStream<TcpStream>);

impl Connected for Tls {
    type ConnectInfo = ();

    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for Tls {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tls {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
