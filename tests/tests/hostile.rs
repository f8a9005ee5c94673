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

mod bad_bytes;
mod client_certs;
mod frames;
mod limits;
mod messages;
mod resets;
mod silent;

use std::time::{Duration, Instant};

use dice_tests::abuse::{Target, sample, scrape};
use dice_tests::{Agent, AgentConfig, Pki, fresh_pki};
use tempfile::TempDir;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

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

/// The standard agent (`mtls` and `h2c` listeners) at log level info (a
/// thousand connections at debug would mostly test the logger), with metrics.
fn hostile(pki: &Pki) -> AgentConfig {
    AgentConfig::standard(pki)
        .log_level("info")
        .extra("[metrics]\naddress = \"127.0.0.1:0\"")
}

/// A fresh PKI and a running [`hostile`] agent, its config passed through
/// `tweak` first. The directory holds the agent's files: keep it while the
/// agent runs.
fn spawn_hostile(tweak: impl FnOnce(AgentConfig) -> AgentConfig) -> (TempDir, Pki, Agent) {
    let (dir, pki) = fresh_pki();
    let agent = Agent::spawn(&tweak(hostile(&pki)));
    (dir, pki, agent)
}

fn mtls(agent: &Agent, pki: &Pki) -> Target {
    Target::Mtls(agent.addr("mtls"), pki.client_tls())
}

fn h2c(agent: &Agent) -> Target {
    Target::H2c(agent.addr("h2c"))
}

/// A fresh TLS connection to the agent's mTLS port, as `pki`'s good client.
async fn mtls_stream(agent: &Agent, pki: &Pki) -> TlsStream<TcpStream> {
    pki.client_tls()
        .connect(agent.addr("mtls"))
        .await
        .expect("TLS")
}

/// A fresh TCP connection to the agent's h2c port.
async fn h2c_stream(agent: &Agent) -> TcpStream {
    TcpStream::connect(agent.addr("h2c"))
        .await
        .expect("connect")
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
