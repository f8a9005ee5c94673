//! Hostile peers. Each abuse runs in its own test while a good client keeps
//! rolling on its own connection (and, where the abuse leaves room, on fresh
//! connections too): every one of its rolls must succeed, and the agent's
//! resident memory (now and at its peak) must stay within 64 MiB of where it
//! was (`dice_tests::abuse::MAX_RSS_GROWTH_KIB`). An abuse that is over in a
//! blink is repeated for a second. Each test prints its numbers
//! (`abuse ...: ... agent RSS before ..., after ..., peak ...`).
//!
//! Then the limits: connections and handshakes beyond their caps are refused
//! at once, streams beyond `max_concurrent_streams` are refused by HTTP/2,
//! idle connections and stalled RPCs end on time, keepalive pings go out and
//! an unanswered one closes the connection.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dice_tests::abuse::{RawReply, Target, Watch, h2_connect, raw_call, sample, scrape};
use dice_tests::ca::{CaSigner, ClientSpec};
use dice_tests::client::{handshake, roll_once};
use dice_tests::h2raw::{
    self, Ending, ROLL_DIE, client_start, code, flag, frame, frame_header, grpc_message,
    grpc_request, hpack, kind, read_frames, read_until, rst_stream, setting,
};
use dice_tests::rpc_log::rpc_lines;
use dice_tests::{
    Agent, AgentConfig, Client, HandshakeStage, Identity, LeafSpec, Pki, TlsClient, poll_until,
    poll_until_async, run_agent, tempdir, within,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_rustls::TlsConnector;

/// How long the agent may take to close a connection it should close at once.
const PROMPTLY: Duration = Duration::from_secs(2);

/// A deadline for anything that should take a few seconds at most.
const DEADLINE: Duration = Duration::from_secs(10);

/// How long an abuse that would be over in a blink is kept up, so that the
/// good client rolls many times during it.
const MIN_ABUSE: Duration = Duration::from_secs(1);

/// Runs `round` again and again until [`MIN_ABUSE`] has passed (at least
/// once), passing the round's number; returns how many rounds ran.
async fn for_a_while(mut round: impl AsyncFnMut(u32)) -> u32 {
    let started = Instant::now();
    let mut rounds = 0;
    while rounds == 0 || started.elapsed() < MIN_ABUSE {
        round(rounds).await;
        rounds += 1;
    }
    rounds
}

/// gRPC status codes the tests look for.
const CANCELLED: i32 = 1;
const RESOURCE_EXHAUSTED: i32 = 8;

/// The standard agent (`mtls` and `h2c` listeners) at log level info (a
/// thousand connections at debug would mostly test the logger), with metrics.
fn hostile(pki: &Pki) -> AgentConfig {
    AgentConfig::standard(pki)
        .log_level("info")
        .extra("[metrics]\naddress = \"127.0.0.1:0\"")
}

fn mtls(agent: &Agent, pki: &Pki) -> Target {
    Target::Mtls(agent.addr("mtls"), pki.client_tls())
}

fn h2c(agent: &Agent) -> Target {
    Target::H2c(agent.addr("h2c"))
}

/// `dice_tls_handshakes_total{listener="mtls",outcome}`.
async fn handshakes(agent: &Agent, outcome: &str) -> f64 {
    let metrics = scrape(agent.metrics_addr().expect("metrics are configured")).await;
    sample(
        &metrics,
        "dice_tls_handshakes_total",
        &[("listener", "mtls"), ("outcome", outcome)],
    )
    .unwrap_or(0.0)
}

/// `dice_open_connections{listener}`.
async fn open_connections(agent: &Agent, listener: &str) -> f64 {
    let metrics = scrape(agent.metrics_addr().expect("metrics are configured")).await;
    sample(&metrics, "dice_open_connections", &[("listener", listener)]).unwrap_or(0.0)
}

/// Reads until the peer closes; `Err` if it is still open after `timeout`.
/// A reset counts as closed.
async fn read_to_close<S: AsyncRead + Unpin>(
    stream: &mut S,
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return Err(format!("still open after {timeout:?}")),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(received),
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    }
}

/// A small deterministic PRNG (xorshift64*), so a failure can be replayed.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

// === Bad bytes on the mTLS port ===

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
    let dir = tempdir();
    let pki = Pki::new(dir.path());
    let agent = Agent::spawn(&hostile(&pki).handshake_timeout("5s"));
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
    let dir = tempdir();
    let pki = Pki::new(dir.path());
    let agent = Agent::spawn(&hostile(&pki).handshake_timeout("2s"));
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
    let dir = tempdir();
    let pki = Pki::new(dir.path());
    let agent = Agent::spawn(&hostile(&pki));
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

// === Client certificates that must be refused ===

/// Makes handshakes and rolls as `bad` for a while, each of which must be
/// refused with one of the TLS alerts in `alerts`, while a good client rolls;
/// the handshakes metric must count them all as `outcome`.
async fn refuse_repeatedly(
    agent: &Agent,
    pki: &Pki,
    bad: &TlsClient,
    alerts: &[&str],
    outcome: &str,
    what: &str,
) {
    let watch = Watch::start(agent.pid(), mtls(agent, pki), Some(10)).await;
    let mut attempts = 0;
    for_a_while(async |_| {
        attempts += 1;
        let refused = handshake(agent.addr("mtls"), bad).await;
        match refused {
            Ok(_) => panic!("{what}: the handshake succeeded\n{}", agent.dump()),
            Err(error) => {
                assert_ne!(error.stage, HandshakeStage::Connect, "{what}: {error}");
                assert!(
                    alerts.iter().any(|alert| error.message.contains(alert)),
                    "{what}: refused with {error}, expected one of {alerts:?}"
                );
            }
        }
        let rolled = roll_once(agent.addr("mtls"), bad).await;
        assert!(rolled.is_err(), "{what}: rolled {rolled:?}");
    })
    .await;
    eprintln!("{what}: {attempts} handshakes and rolls refused");
    watch.finish(what).await;
    let counted = handshakes(agent, outcome).await;
    assert!(
        counted >= f64::from(2 * attempts),
        "{what}: {counted} handshakes counted as {outcome}"
    );
}

async fn refuse_leaf(spec: LeafSpec, alerts: &[&str], outcome: &str, what: &str) {
    let dir = tempdir();
    let pki = Pki::new(dir.path());
    let bad = pki.issue(&spec);
    let agent = Agent::spawn(&hostile(&pki));
    refuse_repeatedly(
        &agent,
        &pki,
        &pki.client_tls_as(&bad),
        alerts,
        outcome,
        what,
    )
    .await;
}

#[tokio::test]
async fn expired_client_certificate() {
    let spec = LeafSpec::client("expired").expired();
    refuse_leaf(
        spec,
        &["CertificateExpired"],
        "expired",
        "expired client certificate",
    )
    .await;
}

#[tokio::test]
async fn not_yet_valid_client_certificate() {
    let spec = LeafSpec::client("early").not_yet_valid();
    let what = "not-yet-valid client certificate";
    // rustls sends the same alert as for an expired certificate; the
    // handshakes metric has no outcome of its own for it.
    refuse_leaf(spec, &["CertificateExpired"], "error", what).await;
}

#[tokio::test]
async fn server_auth_only_client_certificate() {
    // `LeafSpec::server` certificates carry serverAuth and no clientAuth.
    let spec = LeafSpec::server("server-as-client");
    let what = "serverAuth-only client certificate";
    refuse_leaf(spec, &["UnsupportedCertificate"], "error", what).await;
}

#[tokio::test]
async fn revoked_client_certificate() {
    let dir = tempdir();
    let pki = Pki::new(dir.path());
    let revoked = pki.issue(&LeafSpec::client("revoked"));
    let crl = dir.path().join("ca.crl");
    CaSigner::of(&pki).crl(&[&revoked]).write_der(&crl);
    let agent = Agent::spawn(&hostile(&pki).crl(&crl));
    let what = "revoked client certificate";
    let bad = pki.client_tls_as(&revoked);
    refuse_repeatedly(&agent, &pki, &bad, &["CertificateRevoked"], "revoked", what).await;
}

#[tokio::test]
async fn client_certificate_signed_by_an_impostor_with_the_ca_name() {
    let dir = tempdir();
    let pki = Pki::new(dir.path());
    let forged: Identity = CaSigner::impostor(&pki).issue(&ClientSpec::new("forged"));
    assert_eq!(
        forged.summary.issuer,
        pki.client().summary.issuer,
        "the forgery names the real CA"
    );
    let agent = Agent::spawn(&hostile(&pki));
    let what = "client certificate signed by the right CA name but the wrong key";
    let bad = pki.client_tls_as(&forged);
    let alerts = ["DecryptError", "UnknownCA", "BadCertificate"];
    refuse_repeatedly(&agent, &pki, &bad, &alerts, "unknown_ca", what).await;
}

// === Silent connections ===

#[tokio::test]
async fn thousand_silent_connections_on_the_mtls_port() {
    let dir = tempdir();
    let pki = Pki::new(dir.path());
    let agent = Agent::spawn(&hostile(&pki).handshake_timeout("2s"));
    let addr = agent.addr("mtls");
    let watch = Watch::start(agent.pid(), mtls(&agent, &pki), Some(10)).await;

    let mut silent = Vec::with_capacity(1000);
    for _ in 0..1000 {
        silent.push(
            TcpStream::connect(addr)
                .await
                .expect("open a silent connection"),
        );
    }
    // A good client gets in at once beside them (1000 < max_handshakes 1024).
    let started = Instant::now();
    roll_once(addr, &pki.client_tls())
        .await
        .expect("a fresh roll beside 1000 silent connections");
    assert!(started.elapsed() < PROMPTLY, "{:?}", started.elapsed());
    // The handshake timeout closes every one of them.
    let mut closes = JoinSet::new();
    for mut stream in silent {
        closes.spawn(async move { read_to_close(&mut stream, DEADLINE).await });
    }
    while let Some(closed) = closes.join_next().await {
        closed
            .expect("close task")
            .expect("the agent should close a silent connection after the handshake timeout");
    }
    watch
        .finish("1000 silent connections on the mTLS port")
        .await;
    assert!(handshakes(&agent, "timeout").await >= 1000.0);
}

#[tokio::test]
async fn thousand_silent_connections_on_the_h2c_port() {
    let dir = tempdir();
    let pki = Pki::new(dir.path());
    let agent = Agent::spawn(&hostile(&pki).limit("idle_timeout", "\"2s\""));
    let addr = agent.addr("h2c");
    let watch = Watch::start(agent.pid(), h2c(&agent), Some(10)).await;

    let mut silent = Vec::with_capacity(1000);
    let started = Instant::now();
    for _ in 0..1000 {
        silent.push(
            TcpStream::connect(addr)
                .await
                .expect("open a silent connection"),
        );
    }
    let opened = started.elapsed();
    let open = open_connections(&agent, "h2c").await;
    eprintln!("1000 silent h2c connections opened in {opened:?}; the agent holds {open}");
    assert!(
        open > 0.0,
        "the agent should hold silent h2c connections until the idle timeout"
    );
    let mut closes = JoinSet::new();
    for mut stream in silent {
        closes.spawn(async move { read_to_close(&mut stream, DEADLINE).await });
    }
    while let Some(closed) = closes.join_next().await {
        closed
            .expect("close task")
            .expect("the agent should close a silent connection after the idle timeout");
    }
    watch
        .finish("1000 silent connections on the h2c port")
        .await;
    let open = open_connections(&agent, "h2c").await;
    assert!(open <= 2.0, "{open} h2c connections still open");
}

// === HTTP/2 frame-level abuse ===

/// One malformed exchange: bytes after the connection preface, and what the
/// agent must do about them.
struct Malformed {
    name: &'static str,
    /// Sent after the preface and SETTINGS (or instead, with `no_preface`).
    bytes: Vec<u8>,
    no_preface: bool,
    /// A connection error: GOAWAY or close. Otherwise a stream reset.
    fatal: bool,
}

fn malformed_cases() -> Vec<Malformed> {
    let request = grpc_request(ROLL_DIE);
    let headers = |stream: u32, flags: u8| frame(kind::HEADERS, flags, stream, &request);
    let fatal = |name, bytes: Vec<u8>| Malformed {
        name,
        bytes,
        no_preface: false,
        fatal: true,
    };
    let stream_error = |name, bytes: Vec<u8>| Malformed {
        name,
        bytes,
        no_preface: false,
        fatal: false,
    };
    let mut decreasing = headers(5, flag::END_HEADERS);
    decreasing.extend(headers(3, flag::END_HEADERS));
    let mut window_overflow = frame(kind::WINDOW_UPDATE, 0, 0, &0x7fff_ffffu32.to_be_bytes());
    window_overflow.extend(frame(
        kind::WINDOW_UPDATE,
        0,
        0,
        &0x7fff_ffffu32.to_be_bytes(),
    ));
    let mut truncated = frame_header(100, kind::HEADERS, flag::END_HEADERS, 1).to_vec();
    truncated.extend_from_slice(&request[..10]);
    vec![
        Malformed {
            name: "HTTP/1.1 instead of the preface",
            bytes: b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
            no_preface: true,
            fatal: true,
        },
        Malformed {
            name: "random bytes instead of the preface",
            bytes: Noise(7).bytes(4096),
            no_preface: true,
            fatal: true,
        },
        fatal("SETTINGS of 5 bytes", frame(kind::SETTINGS, 0, 0, &[0; 5])),
        fatal("SETTINGS on a stream", frame(kind::SETTINGS, 0, 1, &[])),
        fatal(
            "SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1",
            h2raw::settings(&[(setting::INITIAL_WINDOW_SIZE, 0x8000_0000)]),
        ),
        fatal("DATA on stream 0", frame(kind::DATA, 0, 0, b"hello")),
        fatal(
            "a frame longer than SETTINGS_MAX_FRAME_SIZE",
            frame_header(0xff_ffff, kind::DATA, 0, 1).to_vec(),
        ),
        fatal(
            "HEADERS with an HPACK index out of range",
            frame(
                kind::HEADERS,
                flag::END_HEADERS,
                1,
                &[0xff, 0xff, 0xff, 0xff, 0x0f],
            ),
        ),
        fatal(
            "WINDOW_UPDATE of 0 on the connection",
            frame(kind::WINDOW_UPDATE, 0, 0, &[0; 4]),
        ),
        fatal("connection window overflow", window_overflow),
        fatal("HEADERS on an even stream", headers(2, flag::END_HEADERS)),
        fatal("stream ids going down", decreasing),
        fatal("PING of 7 bytes", frame(kind::PING, 0, 0, &[0; 7])),
        fatal(
            "CONTINUATION without HEADERS",
            frame(kind::CONTINUATION, flag::END_HEADERS, 1, &request),
        ),
        fatal("RST_STREAM on an idle stream", rst_stream(7, code::CANCEL)),
        fatal("GOAWAY of 3 bytes", frame(kind::GOAWAY, 0, 0, &[0; 3])),
        fatal("a frame cut off by the end of the connection", truncated),
        stream_error(
            "a request without pseudo-headers",
            frame(
                kind::HEADERS,
                flag::END_HEADERS | flag::END_STREAM,
                1,
                &hpack(&[("content-type", "application/grpc")]),
            ),
        ),
        fatal(
            "an upper-case header name",
            frame(
                kind::HEADERS,
                flag::END_HEADERS | flag::END_STREAM,
                1,
                &hpack(&[
                    (":method", "POST"),
                    (":scheme", "http"),
                    (":path", ROLL_DIE),
                    ("Content-Type", "application/grpc"),
                ]),
            ),
        ),
        stream_error(
            "a stream depending on itself",
            frame(kind::PRIORITY, 0, 1, &[0, 0, 0, 1, 16]),
        ),
    ]
}

/// Sends `case` on a fresh connection and returns what the agent did.
async fn send_malformed(addr: SocketAddr, case: &Malformed) -> Ending {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut bytes = if case.no_preface {
        Vec::new()
    } else {
        client_start()
    };
    bytes.extend_from_slice(&case.bytes);
    let _ = stream.write_all(&bytes).await;
    if case.name.contains("cut off") {
        let _ = stream.shutdown().await;
    }
    read_until(&mut stream, DEADLINE, |frame| {
        !case.fatal && frame.kind == kind::RST_STREAM
    })
    .await
}

#[tokio::test]
async fn malformed_http2_frames_on_the_h2c_port() {
    let dir = tempdir();
    let pki = Pki::new(dir.path());
    let agent = Agent::spawn(&hostile(&pki));
    let addr = agent.addr("h2c");
    let watch = Watch::start(agent.pid(), h2c(&agent), Some(10)).await;

    let cases = malformed_cases();
    for_a_while(async |round| {
        for case in &cases {
            let ending = send_malformed(addr, case).await;
            if round == 0 {
                eprintln!("{}: {}", case.name, ending.describe());
            }
            if case.fatal {
                assert!(
                    ending.closed,
                    "{}: the agent should end the connection: {}",
                    case.name,
                    ending.describe()
                );
                if let Some(error) = ending.goaway() {
                    assert_ne!(error, code::NO_ERROR, "{}", case.name);
                }
            } else {
                assert!(
                    !ending.resets().is_empty() || ending.goaway().is_some(),
                    "{}: the agent should refuse the stream: {}",
                    case.name,
                    ending.describe()
                );
            }
        }
    })
    .await;
    watch
        .finish("malformed HTTP/2 frames on the h2c port")
        .await;
}

/// Sends a request with one 64 KiB header (in HEADERS and CONTINUATION
/// frames) on a fresh connection and returns what the agent did.
async fn big_header(addr: SocketAddr) -> Ending {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut block = grpc_request(ROLL_DIE);
    block.extend(hpack(&[("x-big", &"x".repeat(64 * 1024))]));
    let mut bytes = client_start();
    let chunks: Vec<&[u8]> = block.chunks(16 * 1024).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let kind = if i == 0 {
            kind::HEADERS
        } else {
            kind::CONTINUATION
        };
        let flags = if i + 1 == chunks.len() {
            flag::END_HEADERS | flag::END_STREAM
        } else {
            0
        };
        bytes.extend(frame(kind, flags, 1, chunk));
    }
    stream.write_all(&bytes).await.expect("send the headers");
    read_until(&mut stream, DEADLINE, |frame| {
        frame.kind == kind::RST_STREAM || frame.kind == kind::GOAWAY
    })
    .await
}

/// A header block that never ends: CONTINUATION frames without END_HEADERS,
/// for as long as the agent reads them (64 MiB at most). Returns how much was
/// written (or the write error that ended it) and whether the agent closed.
async fn continuation_flood(addr: SocketAddr) -> (std::io::Result<usize>, Result<Vec<u8>, String>) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let (mut reader, mut writer) = stream.split();
    let flood = async {
        let mut sent = 0usize;
        writer.write_all(&client_start()).await?;
        writer
            .write_all(&frame(kind::HEADERS, 0, 1, &grpc_request(ROLL_DIE)))
            .await?;
        let filler = frame(
            kind::CONTINUATION,
            0,
            1,
            &hpack(&[("x-fill", &"y".repeat(16_000))]),
        );
        while sent < 64 << 20 {
            writer.write_all(&filler).await?;
            sent += filler.len();
        }
        Ok::<_, std::io::Error>(sent)
    };
    let drain = read_to_close(&mut reader, DEADLINE);
    within(DEADLINE, "a CONTINUATION flood", async {
        tokio::join!(flood, drain)
    })
    .await
}

#[tokio::test]
async fn oversize_headers_on_the_h2c_port() {
    let dir = tempdir();
    let pki = Pki::new(dir.path());
    let agent = Agent::spawn(&hostile(&pki));
    let addr = agent.addr("h2c");
    let watch = Watch::start(agent.pid(), h2c(&agent), Some(10)).await;

    for_a_while(async |round| {
        // Over the 16 KiB header list limit: the stream is refused.
        for i in 0..5 {
            let ending = big_header(addr).await;
            if round == 0 && i == 0 {
                eprintln!("a 64 KiB header: {}", ending.describe());
            }
            // h2 refuses the stream, or (as it does for a block over the
            // limit spread across CONTINUATION frames) the whole connection.
            assert!(
                ending.resets().contains(&(1, code::REFUSED_STREAM))
                    || ending.goaway() == Some(code::ENHANCE_YOUR_CALM),
                "a 64 KiB header should be refused: {}",
                ending.describe()
            );
            assert!(
                !ending.frames.iter().any(|f| f.kind == kind::DATA),
                "a 64 KiB header was answered: {}",
                ending.describe()
            );
        }
        let (flooded, closed) = continuation_flood(addr).await;
        if round == 0 {
            eprintln!(
                "CONTINUATION flood: writer {flooded:?}, agent sent {:?} bytes before closing",
                closed.as_ref().map(Vec::len)
            );
        }
        assert!(
            flooded.is_err(),
            "the agent read 64 MiB of one header block without closing the connection"
        );
        assert!(
            closed.is_ok(),
            "the agent should close the connection: {closed:?}"
        );
    })
    .await;
    watch.finish("oversize headers on the h2c port").await;
}

/// The rapid-reset pattern (CVE-2023-44487) on one connection: open a stream
/// and reset it at once, `streams` times, as fast as the connection takes it.
/// Returns how many pairs were written and how the agent ended the connection.
async fn rapid_reset<S>(io: S, streams: u32) -> (u32, Ending)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    stream_flood(io, streams, |id| rst_stream(id, code::CANCEL)).await
}

/// The "MadeYouReset" pattern (CVE-2025-8671): open a stream, then send a
/// frame that makes the server reset it (here a WINDOW_UPDATE that overflows
/// the stream's send window, a stream error), `streams` times.
async fn made_you_reset<S>(io: S, streams: u32) -> (u32, Ending)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    stream_flood(io, streams, |id| {
        frame(kind::WINDOW_UPDATE, 0, id, &0x7fff_ffff_u32.to_be_bytes())
    })
    .await
}

/// Opens `streams` streams on one connection, each RollDie's HEADERS followed
/// at once by `then(stream id)`, as fast as the connection takes them.
/// Returns how many were written and how the agent ended the connection.
async fn stream_flood<S>(io: S, streams: u32, then: fn(u32) -> Vec<u8>) -> (u32, Ending)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(io);
    let writing = tokio::spawn(async move {
        let request = grpc_request(ROLL_DIE);
        let mut sent = 0;
        if writer.write_all(&client_start()).await.is_err() {
            return sent;
        }
        let mut batch = Vec::new();
        for n in 0..streams {
            let id = 2 * n + 1;
            batch.extend(frame(kind::HEADERS, flag::END_HEADERS, id, &request));
            batch.extend(then(id));
            if batch.len() > 32 * 1024 || n + 1 == streams {
                if writer.write_all(&batch).await.is_err() {
                    return sent;
                }
                sent = n + 1;
                batch.clear();
            }
        }
        sent
    });
    // The reader half cannot ACK (the writer owns the other half): a frame
    // reader that only watches is enough here.
    let mut ending = Ending::default();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match tokio::time::timeout_at(deadline, h2raw::read_frame(&mut reader)).await {
            Err(_) => break,
            Ok(Ok(Some(frame))) => {
                let goaway = frame.kind == kind::GOAWAY;
                ending.frames.push(frame);
                if goaway && writing.is_finished() {
                    break;
                }
            }
            Ok(Ok(None)) | Ok(Err(_)) => {
                ending.closed = true;
                break;
            }
        }
    }
    writing.abort();
    let sent = writing.await.unwrap_or(streams);
    (sent, ending)
}

#[tokio::test]
async fn rapid_reset_on_the_h2c_and_mtls_ports() {
    let dir = tempdir();
    let pki = Pki::new(dir.path());
    let agent = Agent::spawn(&hostile(&pki));
    let watch = Watch::start(agent.pid(), h2c(&agent), Some(10)).await;
    let mtls_watch_client = Client::mtls(agent.addr("mtls"), &pki.client_tls())
        .await
        .expect("a good mTLS client");

    const STREAMS: u32 = 100_000;
    let mut stopped_after = Vec::new();
    let rounds = for_a_while(async |round| {
        let tcp = TcpStream::connect(agent.addr("h2c"))
            .await
            .expect("connect");
        stopped_after.push(assert_stopped(
            "h2c",
            rapid_reset(tcp, STREAMS).await,
            round == 0,
        ));
        let tls = pki
            .client_tls()
            .connect(agent.addr("mtls"))
            .await
            .expect("TLS");
        stopped_after.push(assert_stopped(
            "mtls",
            rapid_reset(tls, STREAMS).await,
            round == 0,
        ));
        mtls_watch_client
            .roll()
            .await
            .expect("a good mTLS client rolls between rapid resets");
    })
    .await;
    eprintln!(
        "rapid reset: {rounds} rounds; the agent stopped each connection after {} to {} streams",
        stopped_after.iter().min().unwrap_or(&0),
        stopped_after.iter().max().unwrap_or(&0)
    );
    watch.finish("HTTP/2 rapid reset (CVE-2023-44487)").await;
}

#[tokio::test]
async fn made_you_reset_on_the_h2c_and_mtls_ports() {
    let dir = tempdir();
    let pki = Pki::new(dir.path());
    let agent = Agent::spawn(&hostile(&pki));
    let watch = Watch::start(agent.pid(), h2c(&agent), Some(10)).await;

    // hyper stops a connection after 1,024 streams it had to reset itself
    // (resets still queued when it gives up are never sent).
    const STREAMS: u32 = 5_000;
    let tcp = TcpStream::connect(agent.addr("h2c"))
        .await
        .expect("connect");
    let (sent, ending) = made_you_reset(tcp, STREAMS).await;
    let tls = pki
        .client_tls()
        .connect(agent.addr("mtls"))
        .await
        .expect("TLS");
    let (tls_sent, tls_ending) = made_you_reset(tls, STREAMS).await;
    for (port, sent, ending) in [("h2c", sent, ending), ("mtls", tls_sent, tls_ending)] {
        let resets = ending.resets().len();
        eprintln!(
            "made-you-reset on {port}: {sent} streams sent, {resets} reset by the agent; GOAWAY {:?}",
            ending.goaway().map(code::name)
        );
        assert_eq!(
            ending.goaway(),
            Some(code::ENHANCE_YOUR_CALM),
            "the agent should stop a connection that makes it reset stream after stream on {port}: {}",
            ending.describe()
        );
        assert!(
            resets <= 1_100,
            "the agent reset {resets} streams before stopping the connection on {port}"
        );
    }
    watch.finish("HTTP/2 made-you-reset (CVE-2025-8671)").await;
}

/// Asserts that the agent stopped a rapid-reset connection on `port` (GOAWAY
/// ENHANCE_YOUR_CALM or a close), printing what happened when `report`; returns
/// how many streams were sent before it did.
fn assert_stopped(port: &str, (sent, ending): (u32, Ending), report: bool) -> u32 {
    if report {
        eprintln!(
            "rapid reset on {port}: {sent} streams opened and reset; GOAWAY {:?}, closed {}",
            ending.goaway().map(code::name),
            ending.closed
        );
    }
    assert!(
        ending.goaway() == Some(code::ENHANCE_YOUR_CALM) || ending.closed,
        "the agent should stop a rapid-reset connection on {port}: sent {sent}, {}",
        ending.describe()
    );
    sent
}

/// A RollDieRequest of exactly `len` bytes: one unknown length-delimited
/// field (number 15), which protobuf decoders skip.
fn padded_roll_request(len: usize) -> Vec<u8> {
    assert!(len >= 4);
    // Tag 0x7a, then a two-byte varint length for 128..=16383 bytes of padding.
    let pad = len - 3;
    assert!((128..16384).contains(&pad), "{len}");
    let mut out = vec![0x7a, (pad as u8 & 0x7f) | 0x80, (pad >> 7) as u8];
    out.resize(len, 0);
    out
}

async fn oversize_messages_on(send: &h2::client::SendRequest<tonic::codegen::Bytes>) {
    let call = |body: Vec<u8>| raw_call(send, ROLL_DIE, body, true);
    let ok = call(grpc_message(&padded_roll_request(4096))).await;
    assert_eq!(
        ok.as_ref().map(|r| r.grpc_status),
        Ok(Some(0)),
        "a 4096-byte request is within max_message_bytes: {ok:?}"
    );
    let over = call(grpc_message(&padded_roll_request(4097))).await;
    assert_resource_exhausted(&over, "a 4097-byte request");
    for _ in 0..10 {
        let huge = call(grpc_message(&vec![0; 4 << 20])).await;
        assert_resource_exhausted(&huge, "a 4 MiB request");
    }
    // A length prefix that promises 4 GiB and never delivers.
    let mut liar = vec![0, 0xff, 0xff, 0xff, 0xff];
    liar.extend_from_slice(&[0; 16]);
    let lied = call(liar).await;
    assert_resource_exhausted(&lied, "a request announcing 4 GiB");
}

fn assert_resource_exhausted(reply: &Result<RawReply, String>, what: &str) {
    assert!(
        reply
            .as_ref()
            .is_ok_and(|r| r.grpc_status == Some(RESOURCE_EXHAUSTED)),
        "{what} should fail with RESOURCE_EXHAUSTED: {reply:?}"
    );
}

#[tokio::test]
async fn oversize_messages_on_the_mtls_and_h2c_ports() {
    let dir = tempdir();
    let pki = Pki::new(dir.path());
    let agent = Agent::spawn(&hostile(&pki));
    let watch = Watch::start(agent.pid(), mtls(&agent, &pki), Some(10)).await;

    let rounds = for_a_while(async |_| {
        let tls = pki
            .client_tls()
            .connect(agent.addr("mtls"))
            .await
            .expect("TLS");
        let send = h2_connect(tls).await.expect("HTTP/2 over mTLS");
        oversize_messages_on(&send).await;
        let tcp = TcpStream::connect(agent.addr("h2c"))
            .await
            .expect("connect");
        let send = h2_connect(tcp).await.expect("HTTP/2 over h2c");
        oversize_messages_on(&send).await;
    })
    .await;
    watch.finish("oversize messages").await;
    let expected = 24 * rounds as usize;
    let logged = poll_until(PROMPTLY, || {
        rpc_lines(&agent.logs())
            .iter()
            .filter(|line| line.field("code").as_deref() == Some("8"))
            .count()
            >= expected
    });
    assert!(
        logged,
        "{expected} oversize requests should be logged as code 8\n{}",
        agent.dump()
    );
}

// === Limits ===

/// An h2c connection that has finished the HTTP/2 preface exchange.
async fn h2c_connection(addr: SocketAddr) -> Result<TcpStream, String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .write_all(&client_start())
        .await
        .map_err(|e| format!("preface: {e}"))?;
    let ending = read_until(&mut stream, PROMPTLY, |frame| frame.kind == kind::SETTINGS).await;
    if ending
        .frames
        .iter()
        .any(|frame| frame.kind == kind::SETTINGS)
    {
        Ok(stream)
    } else {
        Err(format!("no SETTINGS from the agent: {}", ending.describe()))
    }
}

#[tokio::test]
async fn connections_beyond_max_connections_are_refused_at_once() {
    let dir = tempdir();
    let pki = Pki::new(dir.path());
    let agent = Agent::spawn(&hostile(&pki).limit("max_connections", "5"));
    let h2c_addr = agent.addr("h2c");
    let mtls_addr = agent.addr("mtls");
    // The good client holds one of the five mTLS slots.
    let watch = Watch::start(agent.pid(), mtls(&agent, &pki), None).await;

    // h2c: five connections fill the listener; the rest are closed at once.
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(
            h2c_connection(h2c_addr)
                .await
                .expect("a connection within the limit"),
        );
    }
    for _ in 0..100 {
        let mut stream = TcpStream::connect(h2c_addr).await.expect("TCP connect");
        let _ = stream.write_all(&client_start()).await;
        let started = Instant::now();
        let reply = read_to_close(&mut stream, PROMPTLY).await;
        assert!(
            reply.as_ref().is_ok_and(Vec::is_empty),
            "a connection over the limit should be closed unanswered: {reply:?} after {:?}",
            started.elapsed()
        );
    }
    assert_eq!(open_connections(&agent, "h2c").await, 5.0);
    // A freed slot is usable again.
    held.pop();
    let rolled = poll_until_async(DEADLINE, || async {
        match Client::h2c(h2c_addr).await {
            Ok(client) => client.roll().await.is_ok(),
            Err(_) => false,
        }
    })
    .await;
    assert!(
        rolled,
        "a slot freed by a closed connection should be reused"
    );

    // mTLS: the good client plus four more fill it.
    let mut clients = Vec::new();
    for _ in 0..4 {
        let client = Client::mtls(mtls_addr, &pki.client_tls())
            .await
            .expect("an mTLS connection within the limit");
        client.roll().await.expect("roll within the limit");
        clients.push(client);
    }
    for _ in 0..50 {
        let started = Instant::now();
        let refused = handshake(mtls_addr, &pki.client_tls()).await;
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.stage != HandshakeStage::Connect),
            "a connection over the limit should be refused: {refused:?}"
        );
        assert!(started.elapsed() < PROMPTLY, "{:?}", started.elapsed());
    }
    assert!(
        agent.logs().contains("too many open connections"),
        "the refusals should be logged\n{}",
        agent.dump()
    );
    watch.finish("connections beyond max_connections").await;
    drop(clients);
}

#[tokio::test]
async fn handshakes_beyond_max_handshakes_are_refused_at_once() {
    let dir = tempdir();
    let pki = Pki::new(dir.path());
    let agent = Agent::spawn(&hostile(&pki).max_handshakes(3).handshake_timeout("20s"));
    let addr = agent.addr("mtls");
    let watch = Watch::start(agent.pid(), mtls(&agent, &pki), None).await;

    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(TcpStream::connect(addr).await.expect("a silent connection"));
    }
    // Wait until the agent holds all three handshakes: then a fourth is refused.
    let refused = poll_until_async(DEADLINE, || async {
        matches!(handshake(addr, &pki.client_tls()).await, Err(e) if e.stage == HandshakeStage::Handshake)
    })
    .await;
    assert!(refused, "a fourth handshake should be refused");
    for _ in 0..50 {
        let started = Instant::now();
        let result = handshake(addr, &pki.client_tls()).await;
        assert!(result.is_err(), "handshake {result:?}");
        assert!(started.elapsed() < PROMPTLY, "{:?}", started.elapsed());
    }
    assert!(agent.logs().contains("too many TLS handshakes in flight"));
    // Closing the silent connections frees their slots.
    drop(silent);
    let rolled = poll_until_async(DEADLINE, || async {
        roll_once(addr, &pki.client_tls()).await.is_ok()
    })
    .await;
    assert!(
        rolled,
        "handshake slots should be freed when their peers go away"
    );
    watch.finish("handshakes beyond max_handshakes").await;
}

#[tokio::test]
async fn streams_beyond_max_concurrent_streams_are_refused() {
    let dir = tempdir();
    let pki = Pki::new(dir.path());
    let agent = Agent::spawn(&hostile(&pki).limit("max_concurrent_streams", "4"));
    let addr = agent.addr("h2c");
    let watch = Watch::start(agent.pid(), h2c(&agent), Some(10)).await;

    for _ in 0..20 {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(&client_start()).await.expect("preface");
        let settings =
            read_until(&mut stream, PROMPTLY, |frame| frame.kind == kind::SETTINGS).await;
        let advertised = settings
            .frames
            .iter()
            .find_map(|frame| frame.setting(setting::MAX_CONCURRENT_STREAMS));
        assert_eq!(advertised, Some(4), "{}", settings.describe());
        // Four RPCs waiting for their request body, then a fifth.
        let request = grpc_request(ROLL_DIE);
        let mut bytes = Vec::new();
        for id in [1, 3, 5, 7, 9] {
            bytes.extend(frame(kind::HEADERS, flag::END_HEADERS, id, &request));
        }
        stream.write_all(&bytes).await.expect("open five streams");
        let refused = read_until(&mut stream, PROMPTLY, |frame| {
            frame.kind == kind::RST_STREAM
        })
        .await;
        assert_eq!(
            refused.resets(),
            [(9, code::REFUSED_STREAM)],
            "{}",
            refused.describe()
        );
        // Once one ends, its slot takes a new stream.
        stream
            .write_all(&frame(kind::DATA, flag::END_STREAM, 1, &grpc_message(&[])))
            .await
            .expect("finish stream 1");
        let answered = read_until(&mut stream, PROMPTLY, |frame| {
            frame.stream == 1 && frame.flags & flag::END_STREAM != 0
        })
        .await;
        assert!(answered.resets().is_empty(), "{}", answered.describe());
        stream
            .write_all(&frame(kind::HEADERS, flag::END_HEADERS, 11, &request))
            .await
            .expect("open stream 11");
        stream
            .write_all(&frame(kind::DATA, flag::END_STREAM, 11, &grpc_message(&[])))
            .await
            .expect("finish stream 11");
        let answered = read_until(&mut stream, PROMPTLY, |frame| {
            frame.stream == 11 && frame.flags & flag::END_STREAM != 0
        })
        .await;
        assert!(
            answered
                .frames
                .iter()
                .any(|f| f.stream == 11 && f.kind == kind::HEADERS),
            "stream 11 should be answered: {}",
            answered.describe()
        );
        assert!(answered.resets().is_empty(), "{}", answered.describe());
    }
    watch.finish("streams beyond max_concurrent_streams").await;
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    let dir = tempdir();
    let pki = Pki::new(dir.path());
    let config = hostile(&pki)
        .limit("idle_timeout", "\"1s\"")
        .limit("request_timeout", "\"20s\"");
    let agent = Agent::spawn(&config);
    let addr = agent.addr("h2c");
    // Rolling every 10 ms, the good client's connection is never idle.
    let watch = Watch::start(agent.pid(), h2c(&agent), None).await;

    let mut idle = h2c_connection(addr).await.expect("an h2c connection");
    let started = Instant::now();
    let ending = read_until(&mut idle, DEADLINE, |_| false).await;
    let took = started.elapsed();
    assert!(
        ending.closed,
        "an idle connection should be closed: {}",
        ending.describe()
    );
    assert!(
        (Duration::from_millis(800)..Duration::from_secs(4)).contains(&took),
        "closed after {took:?}, with idle_timeout 1s"
    );

    // A connection with an RPC in flight is not idle, however long the RPC takes.
    let mut busy = h2c_connection(addr).await.expect("an h2c connection");
    busy.write_all(&frame(
        kind::HEADERS,
        flag::END_HEADERS,
        1,
        &grpc_request(ROLL_DIE),
    ))
    .await
    .expect("start an RPC");
    let during = read_until(&mut busy, Duration::from_millis(2500), |_| false).await;
    assert!(
        !during.closed,
        "a busy connection was closed: {}",
        during.describe()
    );
    busy.write_all(&frame(kind::DATA, flag::END_STREAM, 1, &grpc_message(&[])))
        .await
        .expect("finish the RPC");
    let started = Instant::now();
    let after = read_until(&mut busy, DEADLINE, |_| false).await;
    assert!(
        after
            .frames
            .iter()
            .any(|f| f.stream == 1 && f.kind == kind::HEADERS),
        "the RPC should be answered: {}",
        after.describe()
    );
    assert!(
        after.closed && started.elapsed() < Duration::from_secs(4),
        "{}",
        after.describe()
    );
    watch.finish("idle connections").await;
}

#[tokio::test]
async fn a_stalled_rpc_is_cancelled_after_the_request_timeout() {
    let dir = tempdir();
    let pki = Pki::new(dir.path());
    let agent = Agent::spawn(&hostile(&pki).limit("request_timeout", "\"1s\""));
    let watch = Watch::start(agent.pid(), mtls(&agent, &pki), Some(10)).await;

    let tls = pki
        .client_tls()
        .connect(agent.addr("mtls"))
        .await
        .expect("TLS");
    let send = h2_connect(tls).await.expect("HTTP/2");
    let mut calls = JoinSet::new();
    let started = Instant::now();
    for _ in 0..20 {
        let send = send.clone();
        calls.spawn(async move { raw_call(&send, ROLL_DIE, Vec::new(), false).await });
    }
    while let Some(reply) = calls.join_next().await {
        let reply = reply.expect("call task");
        assert_eq!(
            reply.as_ref().map(|r| r.grpc_status),
            Ok(Some(CANCELLED)),
            "a request that never finishes should be CANCELLED: {reply:?}"
        );
    }
    let took = started.elapsed();
    assert!(
        (Duration::from_millis(900)..Duration::from_secs(5)).contains(&took),
        "cancelled after {took:?}, with request_timeout 1s"
    );
    // The connection still serves.
    let ok = raw_call(&send, ROLL_DIE, grpc_message(&[]), true).await;
    assert_eq!(ok.map(|r| r.grpc_status), Ok(Some(0)));
    watch.finish("stalled RPCs").await;
    let logged = poll_until(PROMPTLY, || {
        rpc_lines(&agent.logs())
            .iter()
            .filter(|line| line.field("code").as_deref() == Some("1"))
            .count()
            >= 20
    });
    assert!(
        logged,
        "the cancelled RPCs should be logged with code 1\n{}",
        agent.dump()
    );
}

#[tokio::test]
async fn keepalive_pings_are_sent_and_an_unanswered_one_closes_the_connection() {
    let dir = tempdir();
    let pki = Pki::new(dir.path());
    let config = hostile(&pki)
        .limit("keepalive_interval", "\"500ms\"")
        .limit("keepalive_timeout", "\"1s\"");
    let agent = Agent::spawn(&config);
    let addr = agent.addr("h2c");
    let watch = Watch::start(agent.pid(), h2c(&agent), Some(10)).await;

    // A peer that answers pings keeps its connection.
    let mut live = h2c_connection(addr).await.expect("an h2c connection");
    let answered = read_until(&mut live, Duration::from_secs(3), |_| false).await;
    let pings = answered
        .frames
        .iter()
        .filter(|f| f.kind == kind::PING)
        .count();
    assert!(pings >= 2, "pings every 500 ms: {}", answered.describe());
    assert!(!answered.closed, "{}", answered.describe());

    // A peer that does not answer loses it after the keepalive timeout.
    let mut deaf = h2c_connection(addr).await.expect("an h2c connection");
    let started = Instant::now();
    let ignored = read_frames(&mut deaf, DEADLINE, false, |_| false).await;
    assert!(ignored.closed, "{}", ignored.describe());
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "closed after {:?}",
        started.elapsed()
    );
    watch.finish("keepalive").await;
}

#[test]
fn every_limit_has_a_key_and_bad_values_are_named() {
    let dir = tempdir();
    let pki = Pki::new(dir.path());
    let path = dir.path().join("node.toml");
    let mut config = AgentConfig::standard(&pki)
        .handshake_timeout("3s")
        .max_handshakes(64);
    for (key, value) in [
        ("max_connections", "100"),
        ("max_concurrent_streams", "16"),
        ("max_message_bytes", "1024"),
        ("request_timeout", "\"5s\""),
        ("keepalive_interval", "\"15s\""),
        ("keepalive_timeout", "\"5s\""),
        ("idle_timeout", "\"1m\""),
    ] {
        config = config.limit(key, value);
    }
    std::fs::write(&path, config.to_toml()).expect("write the config");
    run_agent([Path::new("--config"), &path, Path::new("--check")]).assert_success();

    let bad = AgentConfig::standard(&pki)
        .limit("max_connections", "0")
        .limit("max_message_bytes", "-1")
        .limit("keepalive_interval", "\"soon\"")
        .limit("idle_timeout", "\"0s\"");
    std::fs::write(&path, bad.to_toml()).expect("write the config");
    let output = run_agent([Path::new("--config"), &path, Path::new("--check")]);
    output
        .assert_code(2)
        .assert_stderr_contains("limits.max_connections: must be a positive number, not 0")
        .assert_stderr_contains("limits.max_message_bytes: must be a positive number, not -1")
        .assert_stderr_contains("limits.keepalive_interval: not a duration: \"soon\"")
        .assert_stderr_contains("limits.idle_timeout: must be longer than zero");
    let unknown = AgentConfig::standard(&pki).limit("max_streams", "5");
    std::fs::write(&path, unknown.to_toml()).expect("write the config");
    run_agent([Path::new("--config"), &path, Path::new("--check")])
        .assert_code(2)
        .assert_stderr_contains("max_streams");
}
