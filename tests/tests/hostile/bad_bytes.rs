//! Bad bytes on the mTLS port: plaintext HTTP/1.1, random bytes and
//! half-records, and TLS clients that do not offer ALPN `h2`.

use std::convert::identity;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dice_tests::abuse::{Watch, h2_connect, raw_call};
use dice_tests::h2raw::{ROLL_DIE, grpc_message};
use dice_tests::heavy::many_connections;
use dice_tests::{TlsClient, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_rustls::TlsConnector;

use super::{
    DEADLINE, Noise, PROMPTLY, for_a_while, handshakes, mtls, read_to_close, spawn_hostile,
};

/// Opens `count` connections to `addr` at once, each sending `payload(i)`,
/// and checks that the agent closes every one within `within` without ever
/// answering in plaintext HTTP.
async fn send_and_expect_close(
    addr: SocketAddr,
    count: usize,
    within: Duration,
    payload: impl Fn(usize) -> Vec<u8>,
) -> Duration {
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0..count {
        let bytes = payload(i);
        tasks.spawn(async move {
            let mut stream = TcpStream::connect(addr)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            // The agent may close before reading everything: that is fine.
            let _ = stream.write_all(&bytes).await;
            let started = Instant::now();
            let reply = read_to_close(&mut stream, within).await?;
            if reply.starts_with(b"HTTP/") {
                return Err(format!(
                    "answered in plaintext: {:?}",
                    String::from_utf8_lossy(&reply)
                ));
            }
            Ok::<_, String>(started.elapsed())
        });
    }
    let mut slowest = Duration::ZERO;
    while let Some(joined) = tasks.join_next().await {
        match joined.expect("connection task") {
            Ok(took) => slowest = slowest.max(took),
            Err(error) => panic!("a hostile connection: {error}"),
        }
    }
    eprintln!(
        "{count} connections closed by the agent; slowest close {slowest:?}, all in {:?}",
        started.elapsed()
    );
    slowest
}

#[tokio::test]
async fn plaintext_http1_on_the_mtls_port() {
    // Hundreds of connections at once: one such test at a time.
    let _heavy = many_connections().await;
    let (_dir, pki, agent) = spawn_hostile(|config| config.handshake_timeout("5s"));
    let watch = Watch::start(agent.pid(), mtls(&agent, &pki), Some(10)).await;

    // Not TLS at all: refused on the first bytes, long before the handshake timeout.
    let request = b"GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: hostile\r\n\r\n".to_vec();
    let rounds = for_a_while(async |_| {
        let slowest =
            send_and_expect_close(agent.addr("mtls"), 300, PROMPTLY, |_| request.clone()).await;
        assert!(slowest < PROMPTLY, "{slowest:?}");
    })
    .await;
    watch.finish("plaintext HTTP/1.1 on the mTLS port").await;
    assert!(handshakes(&agent, "error").await >= f64::from(300 * rounds));
}

#[tokio::test]
async fn random_bytes_on_the_mtls_port() {
    // Hundreds of connections at once: one such test at a time.
    let _heavy = many_connections().await;
    let (_dir, pki, agent) = spawn_hostile(|config| config.handshake_timeout("2s"));
    let watch = Watch::start(agent.pid(), mtls(&agent, &pki), Some(10)).await;

    let mut noise = Noise(0x5eed_d1ce);
    let mut payloads: Vec<Vec<u8>> = (0..200)
        .map(|i| {
            let len = 1 + (noise.next() as usize % (64 * 1024));
            let mut bytes = noise.bytes(len);
            // Half of them look like the start of a TLS handshake record, so
            // the junk reaches the handshake parser rather than the record layer.
            if i % 2 == 0 && bytes.len() > 5 {
                bytes[..3].copy_from_slice(&[0x16, 0x03, 0x01]);
            }
            bytes
        })
        .collect();
    // A record header claiming more than a TLS record may hold.
    payloads.push(vec![0x16, 0x03, 0x01, 0xff, 0xff]);
    // A full-size record of junk.
    let mut full = vec![0x16, 0x03, 0x03, 0x40, 0x00];
    full.extend(noise.bytes(0x4000));
    payloads.push(full);
    // A record that never finishes: only the handshake timeout ends it.
    payloads.push(vec![0x16, 0x03, 0x01, 0x00, 0x40, 0x01]);
    let count = payloads.len();
    let payloads = Arc::new(payloads);
    send_and_expect_close(agent.addr("mtls"), count, Duration::from_secs(6), |i| {
        payloads[i].clone()
    })
    .await;
    watch.finish("random bytes on the mTLS port").await;
    assert!(handshakes(&agent, "timeout").await >= 1.0);
}

/// A TLS connection to `addr` as `tls`, offering `alpn` (possibly nothing).
async fn connect_with_alpn(
    addr: SocketAddr,
    tls: &TlsClient,
    alpn: &[&[u8]],
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut config = tls.rustls_config().map_err(std::io::Error::other)?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let name = tls.rustls_server_name().map_err(std::io::Error::other)?;
    let tcp = TcpStream::connect(addr).await?;
    TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
}

#[tokio::test]
async fn tls_client_without_alpn_h2() {
    let (_dir, pki, agent) = spawn_hostile(identity);
    let addr = agent.addr("mtls");
    let watch = Watch::start(agent.pid(), mtls(&agent, &pki), Some(10)).await;
    let tls = pki.client_tls();

    for_a_while(async |round| {
        // Offering only http/1.1: no protocol in common, refused in the handshake.
        let refused = connect_with_alpn(addr, &tls, &[b"http/1.1"]).await;
        let error = refused.expect_err("ALPN http/1.1 only should be refused");
        assert!(
            error.to_string().contains("NoApplicationProtocol"),
            "ALPN http/1.1: {error}"
        );

        // Offering nothing and speaking HTTP/1.1: the listener speaks only
        // HTTP/2, so the connection is closed without an HTTP/1.1 answer (the
        // agent's HTTP/2 SETTINGS frame may already be on its way).
        let attempt = async {
            let mut stream = connect_with_alpn(addr, &tls, &[]).await?;
            stream
                .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
                .await?;
            let mut reply = Vec::new();
            match stream.read_to_end(&mut reply).await {
                Ok(_) => Ok(reply),
                // Closed without close_notify: still closed, still unanswered.
                Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => Ok(reply),
                Err(error) => Err(error),
            }
        };
        let reply = within(DEADLINE, "HTTP/1.1 over TLS without ALPN", attempt).await;
        if round == 0 {
            eprintln!("no ALPN, HTTP/1.1: {reply:?}");
        }
        assert!(
            reply.as_ref().is_ok_and(|r| !r.starts_with(b"HTTP/")),
            "HTTP/1.1 over TLS should get no answer: {reply:?}"
        );

        // Offering nothing and speaking HTTP/2 anyway: served like any verified
        // client (ALPN is not required, as with grpc-go servers before 1.67).
        let stream = connect_with_alpn(addr, &tls, &[])
            .await
            .expect("TLS without ALPN");
        let send = h2_connect(stream).await.expect("HTTP/2 without ALPN");
        let reply = raw_call(&send, ROLL_DIE, grpc_message(&[]), true).await;
        assert_eq!(reply.map(|r| r.grpc_status), Ok(Some(0)));
    })
    .await;
    watch.finish("TLS clients without ALPN h2").await;
}
