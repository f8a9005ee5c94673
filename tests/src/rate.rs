//! Helpers for the rate limit scenarios: a listener's own `limits` table in a
//! rendered config, clients whose connections come from a chosen loopback
//! address (`127.0.0.2` is a second source on Linux), RPCs that carry a
//! trusted proxy's `x-client-subject` header, and handshake rates.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dice_proto::api::RollDieRequest;
use dice_proto::api::dice_service_client::DiceServiceClient;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Uri};
use tonic::{Request, Status};

use crate::tls::{TlsClient, endpoint};

/// A second loopback source address: connections from it are another peer IP.
pub const SECOND_SOURCE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

/// The first loopback address, where the usual clients come from.
pub const FIRST_SOURCE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// `toml` with `limits = TABLE` added to the listener named `listener`
/// (`table` is an inline TOML table such as `{ rpc_rate = "5/s" }`).
pub fn with_listener_limits(toml: &str, listener: &str, table: &str) -> String {
    let name_line = format!("name = \"{listener}\"\n");
    let Some(at) = toml
        .find(&format!("[[listeners]]\n{name_line}"))
        .map(|at| at + "[[listeners]]\n".len() + name_line.len())
    else {
        panic!("no listener named {listener:?} in:\n{toml}");
    };
    format!("{}limits = {table}\n{}", &toml[..at], &toml[at..])
}

/// Opens a TCP connection to `addr` from `source` (any free port).
pub async fn tcp_from(source: IpAddr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// An h2c channel to `addr` whose connection comes from `source`.
pub async fn h2c_from(source: IpAddr, addr: SocketAddr) -> Result<Channel, String> {
    let connector =
        tower::service_fn(
            move |_: Uri| async move { tcp_from(source, addr).await.map(TokioIo::new) },
        );
    endpoint(addr)?
        .connect_with_connector(connector)
        .await
        .map_err(|error| crate::client::error_chain(&error))
}

/// Rolls once on `channel`, as the client `subject` when a trusted proxy
/// would have said so (`x-client-subject`).
pub async fn roll_as(channel: &Channel, subject: Option<&str>) -> Result<i32, Status> {
    let mut request = Request::new(RollDieRequest {});
    if let Some(subject) = subject {
        let value = subject
            .parse()
            .map_err(|_| Status::invalid_argument("subject is not a header value"))?;
        request.metadata_mut().insert("x-client-subject", value);
    }
    let mut client = DiceServiceClient::new(channel.clone());
    Ok(client.roll_die(request).await?.into_inner().value)
}

/// Full mTLS handshakes from `source` to `addr`, one after another, for
/// `period`: how many per second succeeded.
pub async fn handshakes_per_second(
    source: IpAddr,
    addr: SocketAddr,
    tls: &TlsClient,
    period: Duration,
) -> f64 {
    let config = Arc::new(tls.rustls_config().expect("client TLS config"));
    let name = tls.rustls_server_name().expect("server name");
    let started = Instant::now();
    let mut done = 0u32;
    while started.elapsed() < period {
        let Ok(tcp) = tcp_from(source, addr).await else {
            continue;
        };
        let connect = TlsConnector::from(config.clone()).connect(name.clone(), tcp);
        if let Ok(Ok(_tls)) = tokio::time::timeout(Duration::from_secs(5), connect).await {
            done += 1;
        }
    }
    f64::from(done) / started.elapsed().as_secs_f64()
}
