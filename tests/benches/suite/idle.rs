//! Memory per idle mTLS connection: open many connections to a server, each
//! with a full TLS handshake, an HTTP/2 connection and one RollDie RPC (so the
//! server has set the connection up completely), keep them open and idle,
//! and compare the server's resident memory before and after.

use std::net::SocketAddr;
use std::sync::Arc;

use dice_proto::api::RollDieRequest;
use dice_proto::api::dice_service_client::DiceServiceClient;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::procs::{Proc, settled_rss};

/// Connections being opened at once.
const AT_ONCE: usize = 64;

/// What opening `count` idle connections did to a server's memory.
#[derive(Debug, Clone, Copy)]
pub struct IdleMemory {
    /// Resident memory before, KiB.
    pub before_kib: u64,
    /// With every connection open and idle, KiB.
    pub after_kib: u64,
    /// Connections that opened and served their RPC.
    pub opened: usize,
}

impl IdleMemory {
    /// KiB per connection.
    pub fn per_connection_kib(&self) -> f64 {
        self.after_kib.saturating_sub(self.before_kib) as f64 / self.opened.max(1) as f64
    }
}

async fn open(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> Result<(Channel, DiceServiceClient<Channel>), String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    let name = rustls::pki_types::ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let tls = TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let mut stream = Some(TokioIo::new(tls));
    let connector = tower::service_fn(move |_: Uri| {
        std::future::ready(
            stream
                .take()
                .ok_or_else(|| std::io::Error::other("the connection is gone")),
        )
    });
    let channel = Endpoint::from_shared(format!("https://{addr}"))
        .map_err(|e| e.to_string())?
        .connect_with_connector(connector)
        .await
        .map_err(|e| e.to_string())?;
    let mut client = DiceServiceClient::new(channel.clone());
    client
        .roll_die(RollDieRequest {})
        .await
        .map_err(|status| status.to_string())?;
    Ok((channel, client))
}

/// Opens `count` idle mTLS connections to `server`'s listener at `addr` and measures its memory.
pub fn measure(
    server: &Proc,
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    count: usize,
) -> IdleMemory {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let before_kib = settled_rss(|| server.rss_kib());
    let (held, failures) = runtime.block_on(async {
        let semaphore = Arc::new(Semaphore::new(AT_ONCE));
        let mut tasks = JoinSet::new();
        for _ in 0..count {
            let config = config.clone();
            let semaphore = semaphore.clone();
            tasks.spawn(async move {
                let _permit = semaphore.acquire_owned().await;
                open(addr, config).await
            });
        }
        let mut held = Vec::with_capacity(count);
        let mut failures = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(connection)) => held.push(connection),
                Ok(Err(error)) => failures.push(error),
                Err(error) => failures.push(error.to_string()),
            }
        }
        (held, failures)
    });
    if let Some(first) = failures.first() {
        eprintln!(
            "warning: {} of {count} idle connections failed, first: {first}",
            failures.len()
        );
    }
    let after_kib = settled_rss(|| server.rss_kib());
    let opened = held.len();
    runtime.block_on(async move { drop(held) });
    IdleMemory {
        before_kib,
        after_kib,
        opened,
    }
}
