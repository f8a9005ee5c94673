//! Clients that reuse what they already have, to show what a reload leaves
//! alone and what it must not: a TLS session ([`ResumingClient`]) and an
//! HTTP/2 connection ([`counted_channel`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::{
    AlertDescription, ClientConfig, HandshakeKind, RootCertStore, SupportedProtocolVersion,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Uri};

use crate::handshake::{FIRST_READ_TIMEOUT, H2_PREFACE, alert_received};
use crate::tls::{CONNECT_TIMEOUT, TlsClient, endpoint};

/// A client that keeps one rustls config, and with it rustls's default
/// in-memory session store, across connections: its second connection to a
/// server resumes the session of the first, if the server lets it.
#[derive(Debug, Clone)]
pub struct ResumingClient {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

/// What one connection of a [`ResumingClient`] did.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// Full or resumed, if the client finished its side of the handshake.
    /// (With TLS 1.3 the client finishes before the server has checked its
    /// certificate; the refusal then comes as an alert on the first read.)
    pub kind: Option<HandshakeKind>,
    /// `Ok` once the server answered the HTTP/2 preface; `Err` says where and why it failed.
    pub outcome: Result<(), String>,
    /// The TLS alert the server refused with, if it sent one.
    pub alert: Option<AlertDescription>,
}

impl Attempt {
    /// Whether the server accepted the connection.
    pub fn accepted(&self) -> bool {
        self.outcome.is_ok()
    }
}

impl ResumingClient {
    /// `tls`'s roots, identity and server name, limited to `versions`
    /// (e.g. `&[&rustls::version::TLS12]`), with ALPN `h2`.
    pub fn new(tls: &TlsClient, versions: &[&'static SupportedProtocolVersion]) -> Self {
        Self {
            config: Arc::new(Self::rustls_config(tls, versions)),
            name: tls.rustls_server_name().expect("a valid server name"),
        }
    }

    /// The rustls config such a client uses: `tls`'s roots and identity (it
    /// must have one), only `versions`, ALPN `h2`, and rustls's default
    /// in-memory session store.
    pub fn rustls_config(
        tls: &TlsClient,
        versions: &[&'static SupportedProtocolVersion],
    ) -> ClientConfig {
        let mut roots = RootCertStore::empty();
        for cert in dice_proto::pem::load_certs(&tls.ca).expect("load the client's CA bundle") {
            roots.add(cert).expect("a usable CA certificate");
        }
        let (cert, key) = tls
            .identity
            .as_ref()
            .expect("a resuming client presents a certificate");
        let chain = dice_proto::pem::load_certs(cert).expect("load the client certificate");
        let key = dice_proto::pem::load_key(key).expect("load the client key");
        let mut config = ClientConfig::builder_with_provider(dice_proto::crypto::provider())
            .with_protocol_versions(versions)
            .expect("the ring provider supports these versions")
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .expect("the client key matches its certificate");
        config.alpn_protocols = vec![b"h2".to_vec()];
        config
    }

    /// Connects, handshakes (resuming if it can), sends the HTTP/2 preface
    /// and waits for the server's first bytes or its refusal.
    pub async fn connect(&self, addr: SocketAddr) -> Attempt {
        let connector = TlsConnector::from(Arc::clone(&self.config));
        let shake = async {
            let tcp = TcpStream::connect(addr).await?;
            connector.connect(self.name.clone(), tcp).await
        };
        let mut stream = match tokio::time::timeout(CONNECT_TIMEOUT, shake).await {
            Err(_) => return failed(None, "handshake: timed out".into()),
            Ok(Err(error)) => {
                return Attempt {
                    alert: alert_received(&error),
                    ..failed(None, format!("handshake: {error}"))
                };
            }
            Ok(Ok(stream)) => stream,
        };
        let kind = stream.get_ref().1.handshake_kind();
        let first_read = async {
            stream.write_all(H2_PREFACE).await?;
            stream.flush().await?;
            let mut buf = [0u8; 64];
            stream.read(&mut buf).await
        };
        match tokio::time::timeout(FIRST_READ_TIMEOUT, first_read).await {
            Err(_) => failed(kind, "first read: no reply".into()),
            Ok(Err(error)) => Attempt {
                alert: alert_received(&error),
                ..failed(kind, format!("first read: {error}"))
            },
            Ok(Ok(0)) => failed(kind, "first read: connection closed by the server".into()),
            Ok(Ok(_)) => Attempt {
                kind,
                outcome: Ok(()),
                alert: None,
            },
        }
    }
}

fn failed(kind: Option<HandshakeKind>, message: String) -> Attempt {
    Attempt {
        kind,
        outcome: Err(message),
        alert: None,
    }
}

/// A tonic channel to `addr` over `tls`, connected eagerly, and a count of
/// the TCP+TLS connections it has made: tonic reconnects a lost connection
/// silently, so a test that means "this one connection survived" checks the
/// count stayed at 1.
pub async fn counted_channel(
    addr: SocketAddr,
    tls: &TlsClient,
) -> Result<(Channel, Arc<AtomicUsize>), String> {
    let config = Arc::new(tls.rustls_config()?);
    let name = tls.rustls_server_name()?;
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&connections);
    let connector = tower::service_fn(move |_: Uri| {
        let connector = TlsConnector::from(Arc::clone(&config));
        let name = name.clone();
        let counter = Arc::clone(&counter);
        async move {
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let stream = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp))
                .await
                .map_err(|_| std::io::Error::other("TLS handshake timed out"))??;
            counter.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::io::Error>(TokioIo::new(stream))
        }
    });
    let channel = endpoint(addr)?
        .connect_with_connector(connector)
        .await
        .map_err(|error| crate::client::error_chain(&error))?;
    Ok((channel, connections))
}
