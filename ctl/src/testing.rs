//! Test helpers: a dev PKI in a temp dir and an in-process mTLS dice node on `127.0.0.1:0`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dice_proto::api::dice_service_server::DiceServiceServer;
use dice_proto::testing::{self, TLS_VERSIONS};
use rustls::ServerConfig;
use tempfile::TempDir;
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;

pub use dice_proto::testing::Dice;

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
    server_config_with(ca, cert, key, TLS_VERSIONS)
}

fn server_config_with(
    ca: &Path,
    cert: &Path,
    key: &Path,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ServerConfig> {
    testing::server_config(cert, key, ca, versions).expect("server config")
}

/// A dice node serving mTLS on `127.0.0.1:0` until dropped.
pub struct Node {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    accept: JoinHandle<()>,
    serve: JoinHandle<()>,
}

impl Node {
    pub async fn spawn(config: Arc<ServerConfig>, dice: Dice) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = mpsc::channel(4);
        let accept = tokio::spawn(testing::accept_tls(listener, TlsAcceptor::from(config), tx));
        let (shutdown, stop) = oneshot::channel();
        let serve = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(DiceServiceServer::new(dice))
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
