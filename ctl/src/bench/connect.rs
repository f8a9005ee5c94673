//! One HTTP/2 connection to a node for the load generator: TCP, then TLS with
//! the run's client certificate (mTLS) or nothing (h2c), then an HTTP/2
//! handshake. RPCs go straight to hyper's HTTP/2 client, with no buffer task
//! in between, so the generator spends as little CPU as it can.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use dice_proto::api::dice_service_client::DiceServiceClient;
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};
use tokio_rustls::TlsConnector;
use tower::Service;

use super::target::{BenchNode, Transport};

/// A generated client over one HTTP/2 connection.
pub type Client = DiceServiceClient<H2>;

/// Why a connection could not be opened; `kind` is what the report counts it as.
#[derive(Debug, Clone)]
pub struct ConnectError {
    /// `connect`, `tls`, `http2` or `timeout`.
    pub kind: &'static str,
    /// What happened.
    pub message: String,
}

impl ConnectError {
    fn new(kind: &'static str, message: impl std::fmt::Display) -> Self {
        Self {
            kind,
            message: message.to_string(),
        }
    }
}

/// An open connection.
pub struct Connection {
    /// The generated client; clone it for each RPC in flight.
    pub client: Client,
    sender: SendRequest<tonic::body::Body>,
}

impl Connection {
    /// Whether the connection has closed (the node went away or sent GOAWAY).
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }
}

/// Opens a connection to `node` before `deadline`.
pub async fn open(
    node: &BenchNode,
    tls: Option<&Arc<ClientConfig>>,
    deadline: Instant,
) -> Result<Connection, ConnectError> {
    let target = &node.target;
    let tcp = step(
        deadline,
        TcpStream::connect((target.host(), target.port())),
        "connect",
        "no TCP connection before the deadline",
    )
    .await?;
    // Small requests and replies: never wait to fill a segment.
    let _ = tcp.set_nodelay(true);
    let sender = match (node.transport, tls) {
        (Transport::Mtls, Some(tls)) => {
            let connector = TlsConnector::from(tls.clone());
            let stream = step(
                deadline,
                connector.connect(target.server_name().clone(), tcp),
                "tls",
                "no TLS handshake before the deadline",
            )
            .await?;
            h2_handshake(TokioIo::new(stream), deadline).await?
        }
        (Transport::Mtls, None) => {
            return Err(ConnectError::new("tls", "no TLS client configuration"));
        }
        (Transport::H2c, _) => h2_handshake(TokioIo::new(tcp), deadline).await?,
    };
    let scheme = match node.transport {
        Transport::Mtls => "https",
        Transport::H2c => "http",
    };
    let origin: Uri = format!("{scheme}://{}", target.label())
        .parse()
        .map_err(|error| ConnectError::new("connect", format!("bad origin: {error}")))?;
    Ok(Connection {
        client: DiceServiceClient::with_origin(H2(sender.clone()), origin),
        sender,
    })
}

async fn h2_handshake<T>(
    io: T,
    deadline: Instant,
) -> Result<SendRequest<tonic::body::Body>, ConnectError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let handshake = hyper::client::conn::http2::Builder::new(TokioExecutor::new()).handshake(io);
    let (sender, connection) = step(
        deadline,
        handshake,
        "http2",
        "no HTTP/2 connection before the deadline",
    )
    .await?;
    // Drives the connection; it ends when every sender is dropped or the peer closes.
    tokio::spawn(connection);
    Ok(sender)
}

/// Awaits one step of opening a connection before `deadline`: its error
/// counts as `kind`, and running out of time as `timeout`, saying `late`.
async fn step<T, E: std::fmt::Display>(
    deadline: Instant,
    future: impl Future<Output = Result<T, E>>,
    kind: &'static str,
    late: &'static str,
) -> Result<T, ConnectError> {
    match timeout_at(deadline, future).await {
        Err(_) => Err(ConnectError::new("timeout", late)),
        Ok(result) => result.map_err(|error| ConnectError::new(kind, error)),
    }
}

/// hyper's HTTP/2 sender as the tower service tonic's generated client calls.
#[derive(Debug, Clone)]
pub struct H2(SendRequest<tonic::body::Body>);

impl Service<Request<tonic::body::Body>> for H2 {
    type Response = Response<Incoming>;
    type Error = hyper::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Incoming>, hyper::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request<tonic::body::Body>) -> Self::Future {
        Box::pin(self.0.send_request(request))
    }
}
