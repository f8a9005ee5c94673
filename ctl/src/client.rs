//! Connects to one node over mTLS and says exactly where a failure happened.
//!
//! [`connect`] owns each step of the connection so that a failure is
//! classified by the step that failed ([`NodeErrorKind`]): the TCP connect,
//! the TLS handshake, or the RPC. The finished TLS stream is handed to tonic
//! through a one-shot connector, so tonic never dials anything itself.
//!
//! With TLS 1.3 the client finishes its handshake before the server has
//! checked the client certificate; a server that refuses it sends its alert
//! afterwards, and the client only sees it once it reads again, as an HTTP/2
//! or RPC error. The stream is watched (`watched`) so that alert is not lost
//! to a broken pipe, and [`NodeError::from_status`] finds it in the error
//! chain and reports it as a TLS failure.
//!
//! [`open`] also returns what the handshake settled on ([`TlsInfo`]: the
//! TLS version and the node's certificate), which `dicectl health` reports.
//!
//! - `target`: [`NodeTarget`], a node's address and the name its certificate must hold.
//! - `error`: [`NodeError`] and the classification of failures.
//! - `watched`: the stream wrapper that keeps the error that broke a connection.

mod error;
mod target;
mod watched;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use dice_proto::api::dice_service_client::DiceServiceClient;
use hyper_util::rt::TokioIo;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, ProtocolVersion};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint, Uri};

pub use self::error::{NodeError, NodeErrorKind};
pub use self::target::{NodeTarget, TargetError};
use self::watched::{FirstError, Watched};

/// Placeholder origin for requests: the connection is made by [`connect`], not by tonic.
const ORIGIN: &str = "http://dice.invalid";

/// What the TLS handshake with a node settled on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// The negotiated protocol version, e.g. `TLSv1.3`.
    pub version: Option<&'static str>,
    /// The node's leaf certificate, as it sent it.
    pub peer_leaf: Option<CertificateDer<'static>>,
}

/// One HTTP/2 connection to a node over mTLS, and what its handshake settled on.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The channel on the connection; generated clients share it.
    pub channel: Channel,
    /// The negotiated TLS version and the node's certificate.
    pub tls: TlsInfo,
}

/// Connects to `node` over mTLS and returns a client on that one connection.
///
/// Every step runs under `deadline`. Build `tls` once and share it across nodes.
pub async fn connect(
    node: &NodeTarget,
    tls: Arc<ClientConfig>,
    deadline: Instant,
) -> Result<DiceServiceClient<Channel>, NodeError> {
    Ok(DiceServiceClient::new(
        open(node, tls, deadline).await?.channel,
    ))
}

/// Opens one HTTP/2 connection to `node` over mTLS.
///
/// Every step runs under `deadline`. The TCP connect and the TLS handshake are
/// done here so a failure names its step; tonic then speaks HTTP/2 over the
/// finished stream and never dials again (a broken connection stays broken,
/// which is what a one-shot CLI wants).
pub async fn open(
    node: &NodeTarget,
    tls: Arc<ClientConfig>,
    deadline: Instant,
) -> Result<Connection, NodeError> {
    let tcp = connect_tcp(node, deadline).await?;
    let stream = match timeout_at(
        deadline,
        TlsConnector::from(tls).connect(node.server_name().clone(), tcp),
    )
    .await
    {
        Err(_) => return Err(NodeError::timeout("no TLS handshake")),
        Ok(Err(error)) => return Err(NodeError::from_handshake_io(error)),
        Ok(Ok(stream)) => stream,
    };
    let session = stream.get_ref().1;
    let info = TlsInfo {
        version: session.protocol_version().map(version_name),
        peer_leaf: session
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|leaf| leaf.clone().into_owned()),
    };

    // tonic asks the connector again if the connection breaks. There is no
    // second connection to give; answer with the error that broke the first,
    // so a TLS alert that arrived after the handshake still reaches the caller.
    let first_error = FirstError::default();
    let mut stream = Some(Watched::new(stream, first_error.clone()));
    let connector = tower::service_fn(move |_: Uri| {
        std::future::ready(
            stream
                .take()
                .map(TokioIo::new)
                .ok_or_else(|| first_error.to_io_error()),
        )
    });
    let channel = match timeout_at(
        deadline,
        Endpoint::from_static(ORIGIN).connect_with_connector(connector),
    )
    .await
    {
        Err(_) => return Err(NodeError::timeout("no HTTP/2 connection")),
        Ok(Err(error)) => return Err(NodeError::from_transport(error)),
        Ok(Ok(channel)) => channel,
    };
    Ok(Connection { channel, tls: info })
}

/// The protocol's usual name: `TLSv1.3`, `TLSv1.2`.
fn version_name(version: ProtocolVersion) -> &'static str {
    match version {
        ProtocolVersion::TLSv1_3 => "TLSv1.3",
        ProtocolVersion::TLSv1_2 => "TLSv1.2",
        ProtocolVersion::TLSv1_1 => "TLSv1.1",
        ProtocolVersion::TLSv1_0 => "TLSv1.0",
        _ => "unknown",
    }
}

/// Resolves the host and tries each address in turn until one connects.
async fn connect_tcp(node: &NodeTarget, deadline: Instant) -> Result<TcpStream, NodeError> {
    let no_answer = || {
        NodeError::connect(
            "no answer before the deadline".to_owned(),
            "check that the node is up and reachable, or raise --timeout",
            None,
        )
    };
    let addrs: Vec<SocketAddr> = match timeout_at(
        deadline,
        tokio::net::lookup_host((node.host(), node.port())),
    )
    .await
    {
        Err(_) => return Err(no_answer()),
        Ok(Err(error)) => {
            return Err(NodeError::connect(
                format!("cannot resolve {}: {error}", node.host()),
                "check the host name in --node",
                Some(error),
            ));
        }
        Ok(Ok(addrs)) => addrs.collect(),
    };
    let mut last = None;
    for addr in addrs {
        match timeout_at(deadline, TcpStream::connect(addr)).await {
            Err(_) => return Err(no_answer()),
            Ok(Ok(tcp)) => {
                // One small request and reply: don't wait to fill a segment.
                let _ = tcp.set_nodelay(true);
                return Ok(tcp);
            }
            Ok(Err(error)) => {
                let by_name = node.host().parse::<IpAddr>().is_err();
                last = Some(NodeError::from_connect_io(by_name.then_some(addr), error));
            }
        }
    }
    Err(last.unwrap_or_else(|| {
        NodeError::connect(
            format!("{} resolves to no address", node.host()),
            "check the host name in --node",
            None,
        )
    }))
}
