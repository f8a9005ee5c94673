//! The Prometheus `/metrics` endpoint, read with the strict OpenMetrics
//! parser ([`dice_tests::metrics`]), and its public-address guard.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::net::SocketAddr;

use dice_agent::metrics::HANDSHAKE_OUTCOMES;
use dice_tests::abuse::{h2_connect, raw_call};
use dice_tests::client::handshake;
use dice_tests::h2raw::grpc_message;
use dice_tests::metrics::{Exposition, Kind, http_get, scrape};
use dice_tests::pki::SERVER_CN;
use dice_tests::process::check_config;
use dice_tests::rotation::{LiveTls, Replace, await_ok, await_serial, replace};
use dice_tests::{
    Agent, AgentConfig, Client, LeafSpec, ListenerConfig, Pki, TlsClient, fresh_pki, run_agent,
    tempdir,
};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use super::{ROLL_DIE, SETTLE_TIMEOUT, VERSION, version_line};

/// A metrics endpoint on an ephemeral loopback port.
const METRICS_TOML: &str = "[metrics]\naddress = \"127.0.0.1:0\"\n";

/// `dice-agent --version` parsed: the version and the commit.
fn agent_version() -> (String, String) {
    let output = run_agent(["--version"]);
    output.assert_success();
    version_line("dice-agent", &output)
}

/// Scrapes until `ready` holds for the parsed exposition, within [`SETTLE_TIMEOUT`].
async fn scrape_until(
    agent: &Agent,
    addr: SocketAddr,
    what: &str,
    ready: impl Fn(&Exposition) -> bool,
) -> Exposition {
    await_ok(
        SETTLE_TIMEOUT,
        format_args!("{what}\n{}", agent.dump()),
        async || {
            let exposition = scrape(addr).await?;
            if ready(&exposition) {
                Ok(exposition)
            } else {
                Err(format!("{exposition:#?}"))
            }
        },
    )
    .await
}

/// The handshakes counted on listener `listener`, by outcome.
fn handshakes(exposition: &Exposition, listener: &str) -> BTreeMap<String, f64> {
    exposition
        .samples("dice_tls_handshakes_total")
        .filter(|sample| sample.label("listener") == Some(listener))
        .map(|sample| {
            let outcome = sample.label("outcome").unwrap_or("(none)").to_owned();
            (outcome, sample.value)
        })
        .collect()
}

/// Counts of `dice_certificate_reloads_total{outcome}`, 0 when absent.
fn reloads(exposition: &Exposition, outcome: &str) -> f64 {
    exposition
        .value("dice_certificate_reloads_total", &[("outcome", outcome)])
        .unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_count_rpcs_handshakes_connections_certificates_and_reloads() {
    const ROLLS: usize = 5;
    let dir = tempdir();
    let pki = Pki::new(&dir.path().join("pki"));
    let live = LiveTls::install(&dir.path().join("live"), pki.server(), &[pki.ca_cert()]);
    let config = AgentConfig::standard(&pki)
        .tls(live.tls_files())
        .extra(METRICS_TOML);
    let agent = Agent::spawn(&config);
    let metrics = agent
        .metrics_addr()
        .unwrap_or_else(|| panic!("no `metrics metrics ADDR` ready line\n{}", agent.dump()));
    assert!(metrics.ip().is_loopback(), "metrics bound to {metrics}");
    let addr = agent.mtls_addr();
    let cert_label = live.cert.display().to_string();
    let cert = [("cert", cert_label.as_str())];

    // Before any traffic: the series known in advance exist at 0, and the
    // gauges that need no traffic have their values.
    let first = scrape(metrics).await.expect("scrape /metrics");
    let zero: BTreeMap<String, f64> = HANDSHAKE_OUTCOMES
        .into_iter()
        .map(|outcome| (outcome.to_owned(), 0.0))
        .collect();
    assert_eq!(handshakes(&first, "mtls"), zero, "handshakes before any");
    assert_eq!(
        handshakes(&first, "h2c"),
        BTreeMap::new(),
        "no handshakes on h2c"
    );
    for listener in ["mtls", "h2c"] {
        assert_eq!(
            first.value("dice_open_connections", &[("listener", listener)]),
            Some(0.0),
            "open connections on {listener}"
        );
    }
    assert_eq!(reloads(&first, "ok"), 0.0);
    assert_eq!(reloads(&first, "rejected"), 0.0);
    assert_eq!(
        first.samples("dice_certificate_reloads_total").count(),
        2,
        "reloads by outcome, ok and rejected"
    );
    let (version, commit) = agent_version();
    assert_eq!(version, VERSION);
    assert_eq!(
        first.value(
            "dice_build_info",
            &[("version", VERSION), ("commit", &commit)]
        ),
        Some(1.0),
        "build info should match `dice-agent --version`: {:?}",
        first.family("dice_build")
    );
    assert_eq!(
        first.value("dice_certificate_not_after_seconds", &cert),
        Some(pki.server().summary.not_after as f64),
        "{:?}",
        first.family("dice_certificate_not_after_seconds")
    );

    // Traffic: rolls on one connection, a health check, and two refused handshakes.
    let client = Client::mtls(addr, &pki.client_tls())
        .await
        .expect("connect over mTLS");
    for _ in 0..ROLLS {
        client.roll().await.expect("roll");
    }
    client.health("").await.expect("health check");
    let no_cert = handshake(addr, &pki.client_tls_without_cert()).await;
    assert!(no_cert.is_err(), "a client without a certificate got in");
    let other = pki.unrelated("other-ca");
    let unknown_ca = handshake(
        addr,
        &TlsClient::new(pki.ca_cert()).identity(other.client()),
    )
    .await;
    assert!(unknown_ca.is_err(), "a client of another CA got in");

    // The agent counts an RPC once its response is sent, and a handshake
    // once the alert is: poll until the counts settle.
    let rolled = ROLLS as f64;
    let roll_ok = [("method", ROLL_DIE), ("code", "Ok")];
    let after = scrape_until(&agent, metrics, "RPCs and handshakes counted", |e| {
        let shook = handshakes(e, "mtls");
        e.value("dice_rpcs_total", &roll_ok) == Some(rolled)
            && shook.get("no_cert") == Some(&1.0)
            && shook.get("unknown_ca") == Some(&1.0)
    })
    .await;
    for (family, kind) in [
        ("dice_rpcs", Kind::Counter),
        ("dice_rpc_duration_seconds", Kind::Histogram),
        ("dice_open_connections", Kind::Gauge),
        ("dice_tls_handshakes", Kind::Counter),
        ("dice_certificate_not_after_seconds", Kind::Gauge),
        ("dice_certificate_reloads", Kind::Counter),
        ("dice_build", Kind::Info),
    ] {
        let found = after
            .family(family)
            .unwrap_or_else(|| panic!("no family {family} in {after:#?}"));
        assert_eq!(found.kind, kind, "{family}");
        assert!(found.help.is_some(), "{family} has no # HELP");
    }
    assert_eq!(
        after.value(
            "dice_rpcs_total",
            &[("method", "/grpc.health.v1.Health/Check"), ("code", "Ok")]
        ),
        Some(1.0)
    );
    let roll_method = [("method", ROLL_DIE)];
    assert_eq!(
        after.value("dice_rpc_duration_seconds_count", &roll_method),
        Some(rolled),
        "the latency histogram counts every roll"
    );
    let sum = after
        .value("dice_rpc_duration_seconds_sum", &roll_method)
        .expect("a latency sum");
    assert!(sum > 0.0 && sum < 10.0, "latency sum {sum}");
    let buckets = after
        .samples("dice_rpc_duration_seconds_bucket")
        .filter(|sample| sample.label("method") == Some(ROLL_DIE))
        .count();
    assert!(buckets > 2, "{buckets} latency buckets");
    let mut expected = zero;
    for outcome in ["ok", "no_cert", "unknown_ca"] {
        expected.insert(outcome.to_owned(), 1.0);
    }
    assert_eq!(
        handshakes(&after, "mtls"),
        expected,
        "one good connection and two refused ones"
    );
    let open = [("listener", "mtls")];
    assert_eq!(
        after.value("dice_open_connections", &open),
        Some(1.0),
        "the rolling client's connection is open"
    );
    drop(client);
    scrape_until(&agent, metrics, "the connection closed", |e| {
        e.value("dice_open_connections", &open) == Some(0.0)
    })
    .await;

    // A certificate renamed into place: reloaded, and the new expiry shown.
    let next = pki.issue(
        &LeafSpec::server("server-next")
            .common_name(SERVER_CN)
            .expires_in(time::Duration::days(7)),
    );
    assert_ne!(next.summary.not_after, pki.server().summary.not_after);
    live.rotate(&next, Replace::Rename);
    await_serial(addr, &pki.client_tls(), next.serial()).await;
    let not_after = next.summary.not_after as f64;
    let reloaded = scrape_until(&agent, metrics, "a reload counted, new not-after", |e| {
        reloads(e, "ok") >= 1.0
            && e.value("dice_certificate_not_after_seconds", &cert) == Some(not_after)
    })
    .await;

    // A broken certificate: rejected, counted, and the expiry stays.
    let rejected_before = reloads(&reloaded, "rejected");
    replace(&live.cert, b"not a certificate\n", Replace::Rename);
    let rejected = scrape_until(&agent, metrics, "a rejected reload counted", |e| {
        reloads(e, "rejected") > rejected_before
    })
    .await;
    assert_eq!(
        rejected.value("dice_certificate_not_after_seconds", &cert),
        Some(not_after),
        "the served certificate did not change"
    );

    // Anything but GET /metrics is a 404.
    let other_path = http_get(metrics, "/").await.expect("GET /");
    assert_eq!(other_path.status, 404, "{other_path:?}");
}

#[test]
fn a_public_metrics_address_needs_allow_public() {
    let dir = tempdir();
    let base = AgentConfig::new("test-node").listener(ListenerConfig::h2c("h2c"));
    let public = base
        .clone()
        .extra("[metrics]\naddress = \"0.0.0.0:0\"\n")
        .to_toml();
    let line = 1 + public
        .lines()
        .position(|line| line == "address = \"0.0.0.0:0\"")
        .expect("the metrics address line");
    let path = dir.path().join("public.toml");
    std::fs::write(&path, &public).expect("write the config");
    for check in [true, false] {
        let mut args: Vec<&OsStr> = vec!["--config".as_ref(), path.as_os_str()];
        if check {
            args.push("--check".as_ref());
        }
        let output = run_agent(args);
        output
            .assert_code(2)
            .assert_stderr_contains(&format!("line {line}: metrics.address"))
            .assert_stderr_contains("0.0.0.0:0")
            .assert_stderr_contains("allow_public = true");
    }

    let allowed = base
        .extra("[metrics]\naddress = \"0.0.0.0:0\"\nallow_public = true\n")
        .to_toml();
    std::fs::write(&path, allowed).expect("write the config");
    check_config(&path).assert_success();
}

/// Every series in `exposition`: each sample's name and labels.
fn series(exposition: &Exposition) -> BTreeSet<String> {
    exposition
        .families
        .iter()
        .flat_map(|family| &family.samples)
        .map(|sample| format!("{}{:?}", sample.name, sample.labels))
        .collect()
}

/// The RPCs counted as `Unimplemented`, whatever their `method` label.
fn unimplemented(exposition: &Exposition) -> f64 {
    exposition
        .samples("dice_rpcs_total")
        .filter(|sample| sample.label("code") == Some("Unimplemented"))
        .map(|sample| sample.value)
        .sum()
}

/// Calls each of `paths` on one HTTP/2 connection to `addr`, 100 at a time,
/// and checks each is answered UNIMPLEMENTED.
async fn call_unknown(addr: SocketAddr, paths: Vec<String>) {
    let tcp = TcpStream::connect(addr).await.expect("connect to h2c");
    let send = h2_connect(tcp).await.expect("HTTP/2");
    for batch in paths.chunks(100) {
        let mut calls = JoinSet::new();
        for path in batch {
            let (send, path) = (send.clone(), path.clone());
            calls.spawn(async move {
                let reply = raw_call(&send, &path, grpc_message(&[]), true).await;
                (path, reply.map(|reply| reply.grpc_status))
            });
        }
        while let Some(joined) = calls.join_next().await {
            let (path, status) = joined.expect("call task");
            assert_eq!(status, Ok(Some(12)), "{path} should be UNIMPLEMENTED");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_unknown_methods_add_no_metric_series() {
    let (_dir, pki) = fresh_pki();
    let agent = Agent::spawn(&AgentConfig::standard(&pki).extra(METRICS_TOML));
    let metrics = agent.metrics_addr().expect("metrics are configured");
    let h2c = agent.addr("h2c");
    // The first unknown call creates the `other` series.
    call_unknown(h2c, vec!["/first.Unknown/Call".to_owned()]).await;
    let before = scrape_until(&agent, metrics, "the first unknown call counted", |e| {
        unimplemented(e) == 1.0
    })
    .await;

    // Unknown services, and unknown methods of a known one.
    let paths = (0..1_000)
        .map(|i| match i % 2 {
            0 => format!("/unknown{i}.Service{i}/Method{i}"),
            _ => format!("/api.DiceService/NoSuchMethod{i}"),
        })
        .collect();
    call_unknown(h2c, paths).await;
    let after = scrape_until(&agent, metrics, "1,001 unknown calls counted", |e| {
        unimplemented(e) == 1_001.0
    })
    .await;

    assert_eq!(
        after.value(
            "dice_rpcs_total",
            &[("method", "other"), ("code", "Unimplemented")]
        ),
        Some(1_001.0),
        "every unknown call counts as method=\"other\""
    );
    let (before, after) = (series(&before), series(&after));
    let added: Vec<&String> = after.difference(&before).collect();
    assert!(
        added.is_empty(),
        "1,000 unknown paths added {} series: {added:#?}",
        added.len()
    );
    eprintln!(
        "{} series before and after 1,000 unknown paths",
        before.len()
    );
}
