//! The client side of TLS: which CA to trust, which certificate to present,
//! and a tonic connector that owns the TCP and TLS connection (tonic's own TLS
//! feature is not compiled in).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::RootCertStore;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::pki::Identity;

/// How long a client may take to connect and finish the TLS handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A TLS client profile: the CA it trusts, the certificate it presents (if
/// any), and the server name it verifies.
#[derive(Debug, Clone)]
pub struct TlsClient {
    /// PEM CA bundle the server certificate must chain to.
    pub ca: PathBuf,
    /// Client certificate chain and key, if the client presents one.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// The name the server certificate must be valid for (`localhost` by default).
    pub server_name: String,
}

impl TlsClient {
    /// Trusts `ca`, presents no certificate, verifies the name `localhost`.
    pub fn new(ca: &Path) -> Self {
        Self {
            ca: ca.to_owned(),
            identity: None,
            server_name: "localhost".to_owned(),
        }
    }

    /// Presents `identity`'s certificate and key.
    pub fn identity(self, identity: &Identity) -> Self {
        self.cert_key(&identity.cert, &identity.key)
    }

    /// Presents the certificate chain in `cert` with the key in `key`.
    pub fn cert_key(mut self, cert: &Path, key: &Path) -> Self {
        self.identity = Some((cert.to_owned(), key.to_owned()));
        self
    }

    /// Verifies the server certificate for `name` (a DNS name or an IP address).
    pub fn server_name(mut self, name: &str) -> Self {
        self.server_name = name.to_owned();
        self
    }

    /// The rustls config: ring provider, these roots and identity, ALPN `h2`.
    pub fn rustls_config(&self) -> Result<ClientConfig, String> {
        let mut roots = RootCertStore::empty();
        for cert in dice_proto::pem::load_certs(&self.ca).map_err(|error| error.to_string())? {
            roots
                .add(cert)
                .map_err(|error| format!("{}: {error}", self.ca.display()))?;
        }
        let builder = ClientConfig::builder_with_provider(dice_proto::crypto::provider())
            .with_safe_default_protocol_versions()
            .map_err(|error| error.to_string())?
            .with_root_certificates(roots);
        let mut config = match &self.identity {
            Some((cert, key)) => {
                let chain = dice_proto::pem::load_certs(cert).map_err(|error| error.to_string())?;
                let key = dice_proto::pem::load_key(key).map_err(|error| error.to_string())?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|error| format!("client certificate: {error}"))?
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }

    /// The server name in rustls form.
    pub fn rustls_server_name(&self) -> Result<ServerName<'static>, String> {
        ServerName::try_from(self.server_name.clone())
            .map_err(|error| format!("server name {:?}: {error}", self.server_name))
    }

    /// Opens a TCP connection to `addr` and completes the TLS handshake.
    pub async fn connect(&self, addr: SocketAddr) -> std::io::Result<TlsStream<TcpStream>> {
        let config = self.rustls_config().map_err(std::io::Error::other)?;
        let name = self.rustls_server_name().map_err(std::io::Error::other)?;
        connect_tls(addr, Arc::new(config), name).await
    }

    /// A tonic channel to `addr` over this TLS profile, connected eagerly.
    pub async fn channel(&self, addr: SocketAddr) -> Result<Channel, String> {
        let config = Arc::new(self.rustls_config()?);
        let name = self.rustls_server_name()?;
        let connector = tower::service_fn(move |_: Uri| {
            let config = Arc::clone(&config);
            let name = name.clone();
            async move { connect_tls(addr, config, name).await.map(TokioIo::new) }
        });
        endpoint(addr)?
            .connect_with_connector(connector)
            .await
            .map_err(|error| crate::client::error_chain(&error))
    }
}

async fn connect_tls(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let connect = async {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        TlsConnector::from(config).connect(name, tcp).await
    };
    tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connect and TLS handshake timed out",
            )
        })?
}

/// The endpoint every test channel uses: `http://ADDR` (the connector decides
/// whether TLS is spoken), with a connect timeout.
pub fn endpoint(addr: SocketAddr) -> Result<Endpoint, String> {
    Endpoint::from_shared(format!("http://{addr}"))
        .map(|endpoint| endpoint.connect_timeout(CONNECT_TIMEOUT))
        .map_err(|error| error.to_string())
}
