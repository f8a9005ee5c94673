//! Per-client rate limits on real agents: a client over `limits.rpc_rate`
//! gets `RESOURCE_EXHAUSTED` with a message naming the limit while another
//! client at a normal rate sees no error, keyed by certificate subject (mTLS),
//! by the trusted proxy's `x-client-subject` header, or by peer IP (plain
//! h2c); a listener's own `limits` table overrides `[limits]`; a handshake
//! flood from one address does not slow another's handshakes; bad rates are
//! config errors that name the key.

use std::net::SocketAddr;
use std::time::Duration;

use dice_tests::abuse::{Rss, sample, scrape};
use dice_tests::heavy::many_connections;
use dice_tests::process::check_config;
use dice_tests::rate::{
    FIRST_SOURCE, SECOND_SOURCE, h2c_from, handshakes_per_second, roll_as, tcp_from,
    with_listener_limits,
};
use dice_tests::{Agent, AgentConfig, Client, LeafSpec, ListenerConfig, TlsClient, fresh_pki};
use tokio_rustls::TlsConnector;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// How long the flooding client sends RPCs, one after another, a few
/// milliseconds apart: longer than the calm client's RPCs take.
const FLOOD_FOR: Duration = Duration::from_millis(2_800);

/// The pause between two of the flooding client's RPCs: 200 per second.
const FLOOD_PAUSE: Duration = Duration::from_millis(5);

/// The calm client's RPCs, and the pause between two: 2.5 per second, half a
/// 5/s limit.
const CALM_RPCS: usize = 6;
const CALM_PAUSE: Duration = Duration::from_millis(400);

/// Sends RPCs through `roll` for `FLOOD_FOR`, far over the limit; returns the refusals.
async fn flood<F, Fut>(roll: F) -> Vec<Status>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<i32, Status>>,
{
    let mut refused = Vec::new();
    let started = std::time::Instant::now();
    while started.elapsed() < FLOOD_FOR {
        match roll().await {
            Ok(_) => {}
            Err(status) if status.code() == Code::ResourceExhausted => refused.push(status),
            Err(status) => panic!("the flooding client got an unexpected error: {status:?}"),
        }
        tokio::time::sleep(FLOOD_PAUSE).await;
    }
    refused
}

/// Rolls `CALM_RPCS` times through `roll`, `CALM_PAUSE` apart; every one must succeed.
async fn calm<F, Fut>(roll: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<i32, Status>>,
{
    for i in 0..CALM_RPCS {
        if let Err(status) = roll().await {
            panic!("the calm client's RPC {i} failed: {status:?}");
        }
        tokio::time::sleep(CALM_PAUSE).await;
    }
}

fn assert_refusals_name_the_limit(refused: &[Status], client: &str, limit: &str) {
    assert!(
        !refused.is_empty(),
        "a client sending 200 RPCs per second over {limit} got no RESOURCE_EXHAUSTED"
    );
    let message = refused[0].message();
    for needle in ["rate limit: client", client, limit, "retry later"] {
        assert!(
            message.contains(needle),
            "the refusal should contain {needle:?}: {message}"
        );
    }
}

async fn metric(agent: &Agent, name: &str, listener: &str, kind: &str) -> f64 {
    let addr = agent.metrics_addr().expect("the config has [metrics]");
    let text = scrape(addr).await;
    sample(&text, name, &[("listener", listener), ("kind", kind)])
        .unwrap_or_else(|| panic!("no {name}{{listener={listener},kind={kind}}} in:\n{text}"))
}

// === RPCs per client ===

#[tokio::test]
async fn an_mtls_client_over_its_rate_is_refused_while_another_is_served() {
    let (_dir, pki) = fresh_pki();
    let flooder = pki.issue(&LeafSpec::client("flooder"));
    let config = AgentConfig::new("rate-node")
        .tls(pki.server_tls())
        .listener(ListenerConfig::mtls("mtls"))
        .limit("rpc_rate", "\"5/s\"")
        .extra("[metrics]\naddress = \"127.0.0.1:0\"");
    let agent = Agent::spawn(&config);
    let addr = agent.addr("mtls");
    let flooding = Client::mtls(addr, &pki.client_tls_as(&flooder))
        .await
        .expect("flooder connects");
    let calm_client = Client::mtls(addr, &pki.client_tls())
        .await
        .expect("calm client connects");

    let (refused, ()) = tokio::join!(flood(|| flooding.roll()), calm(|| calm_client.roll()));
    assert_refusals_name_the_limit(&refused, "CN=flooder", "limits.rpc_rate = 5/s (burst 5)");
    assert!(
        metric(&agent, "dice_rate_limited_total", "mtls", "rpc").await >= 1.0,
        "refusals are counted by listener"
    );
    assert!(metric(&agent, "dice_rate_limit_tracked_keys", "mtls", "rpc").await >= 1.0);
}

#[tokio::test]
async fn a_trusted_proxy_listener_limits_each_proxied_subject_with_its_own_limits() {
    let config = AgentConfig::new("rate-node")
        .listener(ListenerConfig::h2c("proxied").trusted_proxy())
        // The listener's own table wins over [limits].
        .limit("rpc_rate", "\"1000/s\"");
    let toml = with_listener_limits(&config.to_toml(), "proxied", "{ rpc_rate = \"5/s\" }");
    let agent = Agent::spawn_toml(&toml, &config.args);
    let channel = Client::h2c(agent.addr("proxied"))
        .await
        .expect("connect")
        .channel();
    // Both clients share one connection, as behind a proxy.
    let (refused, ()) = tokio::join!(
        flood(|| roll_as(&channel, Some("CN=flooder,O=dice"))),
        calm(|| roll_as(&channel, Some("CN=calm,O=dice")))
    );
    assert_refusals_name_the_limit(&refused, "CN=flooder,O=dice", "limits.rpc_rate = 5/s");
}

#[tokio::test]
async fn a_plain_h2c_listener_limits_by_peer_ip() {
    let config = AgentConfig::new("rate-node")
        .listener(ListenerConfig::h2c("h2c"))
        .limit("rpc_rate", "\"5/s\"")
        .limit("rpc_burst", "3");
    let agent = Agent::spawn(&config);
    let addr = agent.addr("h2c");
    let flooding: Channel = h2c_from(FIRST_SOURCE, addr).await.expect("connect");
    let calm_channel: Channel = h2c_from(SECOND_SOURCE, addr).await.expect("connect");
    // Without trusted_proxy the header is ignored: each "subject" is the same IP.
    let subjects = std::cell::Cell::new(0u32);
    let (refused, ()) = tokio::join!(
        flood(|| {
            subjects.set(subjects.get() + 1);
            let subject = format!("CN=spoofed-{}", subjects.get());
            let channel = flooding.clone();
            async move { roll_as(&channel, Some(&subject)).await }
        }),
        calm(|| roll_as(&calm_channel, None))
    );
    assert_refusals_name_the_limit(
        &refused,
        "client 127.0.0.1 ",
        "limits.rpc_rate = 5/s (burst 3)",
    );
}

// === bounded memory ===

/// Distinct proxied identities sent: more than the limiter's 100,000 keys.
const IDENTITIES: usize = 120_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_identities_than_the_table_holds_keep_memory_bounded() {
    let _heavy = many_connections().await;
    let config = AgentConfig::new("rate-node")
        .listener(ListenerConfig::h2c("proxied").trusted_proxy())
        .limit("rpc_rate", "\"1/h\"")
        .log_level("warn")
        .extra("[metrics]\naddress = \"127.0.0.1:0\"");
    let agent = Agent::spawn(&config);
    let channel = Client::h2c(agent.addr("proxied"))
        .await
        .expect("connect")
        .channel();
    // Warm up, so the baseline includes the connection's buffers.
    roll_as(&channel, Some("CN=warm-up"))
        .await
        .expect("warm-up roll");
    let before = Rss::of(agent.pid());
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..32 {
        let channel = channel.clone();
        tasks.spawn(async move {
            for n in (task..IDENTITIES).step_by(32) {
                // Each identity's first RPC is within its burst of 1.
                if let Err(status) = roll_as(&channel, Some(&format!("CN=client-{n}"))).await {
                    panic!("identity {n}'s first RPC failed: {status:?}");
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("a client task");
    }
    let tracked = metric(&agent, "dice_rate_limit_tracked_keys", "proxied", "rpc").await;
    assert!(
        (90_000.0..=100_100.0).contains(&tracked),
        "after {IDENTITIES} identities the limiter should hold about its cap of 100,000 keys, not {tracked}"
    );
    let after = Rss::of(agent.pid());
    let grown_mib = after.now_kib.saturating_sub(before.now_kib) / 1024;
    assert!(
        grown_mib <= 24,
        "the agent grew by {grown_mib} MiB for {IDENTITIES} identities ({before:?} -> {after:?})"
    );
}

// === handshakes per source address ===

/// Opens TLS handshakes to `addr` from `SECOND_SOURCE` as fast as `loops`
/// tasks can, until the returned handle is aborted.
fn handshake_flood(addr: SocketAddr, tls: &TlsClient, loops: usize) -> tokio::task::JoinSet<()> {
    let config = std::sync::Arc::new(tls.rustls_config().expect("client TLS config"));
    let name = tls.rustls_server_name().expect("server name");
    let mut flood = tokio::task::JoinSet::new();
    for _ in 0..loops {
        let config = config.clone();
        let name = name.clone();
        flood.spawn(async move {
            loop {
                let Ok(tcp) = tcp_from(SECOND_SOURCE, addr).await else {
                    tokio::task::yield_now().await;
                    continue;
                };
                let connect = TlsConnector::from(config.clone()).connect(name.clone(), tcp);
                let _ = tokio::time::timeout(Duration::from_secs(5), connect).await;
            }
        });
    }
    flood
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_flood_from_one_address_does_not_slow_another() {
    let _heavy = many_connections().await;
    let (_dir, pki) = fresh_pki();
    let config = AgentConfig::new("rate-node")
        .tls(pki.server_tls())
        .listener(ListenerConfig::mtls("mtls"))
        .limit("handshake_rate_per_ip", "\"10/s\"")
        .log_level("info")
        .extra("[metrics]\naddress = \"127.0.0.1:0\"");
    let agent = Agent::spawn(&config);
    let addr = agent.addr("mtls");
    let tls = pki.client_tls();
    let period = Duration::from_secs(2);

    let usual = handshakes_per_second(FIRST_SOURCE, addr, &tls, period).await;
    let mut flood = handshake_flood(addr, &tls, 16);
    // Let the flood start and the first address's bucket refill.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let flooded = handshakes_per_second(FIRST_SOURCE, addr, &tls, period).await;
    flood.abort_all();
    assert!(
        flooded >= usual / 2.0,
        "handshakes from 127.0.0.1 fell from {usual:.1}/s to {flooded:.1}/s during a flood from 127.0.0.2"
    );
    assert!(
        metric(&agent, "dice_rate_limited_total", "mtls", "handshake").await >= 10.0,
        "the flood's refused connections are counted"
    );
}

// === config ===

#[test]
fn bad_rates_are_config_errors_that_name_the_key() {
    let (dir, pki) = fresh_pki();
    let cases = [
        ("rpc_rate", "\"50\"", "limits.rpc_rate: not a rate: \"50\""),
        ("rpc_rate", "\"50/d\"", "unknown unit \"d\""),
        (
            "rpc_burst",
            "0",
            "limits.rpc_burst: must be a positive number",
        ),
        (
            "handshake_rate_per_ip",
            "\"0/s\"",
            "limits.handshake_rate_per_ip: not a rate",
        ),
    ];
    for (key, value, expected) in cases {
        let path = dir.path().join("bad-rate.toml");
        AgentConfig::standard(&pki).limit(key, value).write(&path);
        let output = check_config(&path);
        assert_eq!(output.status.code(), Some(2), "{key} = {value}\n{output}");
        assert!(
            output.combined().contains(expected),
            "{key} = {value}: expected {expected:?} in\n{output}"
        );
    }
    let path = dir.path().join("listener-rate.toml");
    let toml = with_listener_limits(
        &AgentConfig::standard(&pki).to_toml(),
        "h2c",
        "{ handshake_rate_per_ip = \"5/s\" }",
    );
    std::fs::write(&path, toml).expect("write the config");
    let output = check_config(&path);
    assert_eq!(output.status.code(), Some(2), "{output}");
    assert!(
        output
            .combined()
            .contains("listeners[1].limits.handshake_rate_per_ip: applies to mtls listeners only"),
        "{output}"
    );
}
