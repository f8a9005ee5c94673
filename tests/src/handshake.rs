//! A raw TLS handshake, below gRPC: which certificate does the server present
//! right now, and does it accept this client?
//!
//! With TLS 1.3 the client finishes its handshake before the server has checked
//! the client certificate; a refusal arrives as an alert on the first read. So
//! after the handshake this sends the HTTP/2 client preface and waits for the
//! server's first bytes (its SETTINGS frame) or for that alert.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dice_proto::cert::CertSummary;
use rustls::AlertDescription;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::tls::{CONNECT_TIMEOUT, TlsClient};

/// How long to wait for the server's first bytes after the handshake.
pub const FIRST_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The HTTP/2 connection preface followed by an empty SETTINGS frame.
pub const H2_PREFACE: &[u8] =
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// What a successful handshake showed.
#[derive(Debug, Clone)]
pub struct Handshake {
    /// The server's leaf certificate.
    pub server_cert: CertSummary,
    /// How many certificates the server sent (leaf plus intermediates).
    pub chain_len: usize,
    /// The negotiated ALPN protocol, e.g. `h2`.
    pub alpn: Option<String>,
    /// The negotiated TLS version, e.g. `TLSv1_3`.
    pub version: Option<String>,
}

/// Where a handshake attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeStage {
    /// The TCP connection could not be made.
    Connect,
    /// The TLS handshake failed (or timed out).
    Handshake,
    /// The handshake finished but the server then refused or closed the connection.
    FirstRead,
}

/// A failed handshake attempt.
#[derive(Debug, Clone)]
pub struct HandshakeError {
    /// Where it failed.
    pub stage: HandshakeStage,
    /// What went wrong, e.g. `received fatal alert: UnknownCA`.
    pub message: String,
    /// The server certificate, if the handshake got far enough to see one.
    pub server_cert: Option<CertSummary>,
    /// The TLS alert the server refused with, if it sent one (e.g.
    /// `UnknownCA`, `CertificateRevoked`, `CertificateRequired`).
    pub alert: Option<AlertDescription>,
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.stage, self.message)
    }
}

impl std::error::Error for HandshakeError {}

/// The alert a TLS peer sent, if `error` (from a tokio-rustls handshake, read
/// or write) is rustls reporting one.
pub fn alert_received(error: &std::io::Error) -> Option<AlertDescription> {
    match error.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::AlertReceived(alert) => Some(*alert),
        _ => None,
    }
}

/// Connects to `addr`, performs a TLS handshake with `tls`, sends the HTTP/2
/// preface, and waits for the server's first bytes.
pub async fn handshake(addr: SocketAddr, tls: &TlsClient) -> Result<Handshake, HandshakeError> {
    let fail = |stage, message: String, server_cert| HandshakeError {
        stage,
        message,
        server_cert,
        alert: None,
    };
    let config = tls
        .rustls_config()
        .map_err(|message| fail(HandshakeStage::Handshake, message, None))?;
    let name = tls
        .rustls_server_name()
        .map_err(|message| fail(HandshakeStage::Handshake, message, None))?;

    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| fail(HandshakeStage::Connect, "timed out".into(), None))?
        .map_err(|error| fail(HandshakeStage::Connect, error.to_string(), None))?;
    let mut stream = tokio::time::timeout(
        CONNECT_TIMEOUT,
        TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .map_err(|_| fail(HandshakeStage::Handshake, "timed out".into(), None))?
    .map_err(|error| HandshakeError {
        alert: alert_received(&error),
        ..fail(HandshakeStage::Handshake, error.to_string(), None)
    })?;

    let (_, session) = stream.get_ref();
    let chain = session.peer_certificates().unwrap_or_default();
    let Some(leaf) = chain.first() else {
        return Err(fail(
            HandshakeStage::Handshake,
            "server sent no certificate".into(),
            None,
        ));
    };
    let server_cert = CertSummary::parse(leaf)
        .map_err(|error| fail(HandshakeStage::Handshake, error.to_string(), None))?;
    let chain_len = chain.len();
    let alpn = session
        .alpn_protocol()
        .map(|protocol| String::from_utf8_lossy(protocol).into_owned());
    let version = session
        .protocol_version()
        .map(|version| format!("{version:?}"));

    let first_read = async {
        stream.write_all(H2_PREFACE).await?;
        stream.flush().await?;
        let mut buf = [0u8; 64];
        stream.read(&mut buf).await
    };
    let fail_read = |message: String| {
        fail(
            HandshakeStage::FirstRead,
            message,
            Some(server_cert.clone()),
        )
    };
    match tokio::time::timeout(FIRST_READ_TIMEOUT, first_read).await {
        Err(_) => Err(fail_read(format!("no reply within {FIRST_READ_TIMEOUT:?}"))),
        Ok(Err(error)) => Err(HandshakeError {
            alert: alert_received(&error),
            ..fail_read(error.to_string())
        }),
        Ok(Ok(0)) => Err(fail_read("connection closed by the server".into())),
        Ok(Ok(_)) => Ok(Handshake {
            server_cert,
            chain_len,
            alpn,
            version,
        }),
    }
}
