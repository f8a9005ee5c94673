//! `dicectl bench` against a real agent: it loads the node for about a
//! second over mTLS and h2c, and its JSON says how many RPCs succeeded.

use std::time::Duration;

use dice_tests::abuse::{sample, scrape};
use dice_tests::fleet::closed_port;
use dice_tests::{Agent, AgentConfig, Ctl, Pki, RunOutput, fresh_pki, poll_until};
use serde_json::Value;

/// Runs `dicectl ARGS --ca CA --cert CERT --key KEY` as `pki`'s client;
/// `args` is split on whitespace.
fn ctl_as_client(pki: &Pki, args: &str) -> RunOutput {
    let mut args: Vec<String> = args.split_whitespace().map(str::to_owned).collect();
    for (flag, path) in [
        ("--ca", pki.ca_cert()),
        ("--cert", pki.client().cert.as_path()),
        ("--key", pki.client().key.as_path()),
    ] {
        args.extend([flag.to_owned(), path.display().to_string()]);
    }
    Ctl::run(&args)
}

/// How long the agent's metrics may take to count what dicectl did.
const SETTLE: Duration = Duration::from_secs(5);

/// `dice_tls_handshakes_total{listener="mtls",outcome="ok"}`: the mTLS
/// connections the agent accepted.
fn ok_handshakes(agent: &Agent) -> f64 {
    let addr = agent.metrics_addr().expect("metrics are configured");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime to scrape metrics");
    let metrics = runtime.block_on(scrape(addr));
    sample(
        &metrics,
        "dice_tls_handshakes_total",
        &[("listener", "mtls"), ("outcome", "ok")],
    )
    .unwrap_or(0.0)
}

fn json(stdout: &str) -> Value {
    serde_json::from_str(stdout).unwrap_or_else(|error| panic!("not JSON ({error}):\n{stdout}"))
}

#[test]
fn bench_loads_mtls_and_h2c_and_reports_json() {
    let (_dir, pki) = fresh_pki();
    let agent = Agent::spawn(&AgentConfig::standard(&pki).log_level("info"));
    let mtls = agent.mtls_addr().to_string();
    let h2c = format!("h2c://{}", agent.h2c_addr());
    let run = ctl_as_client(
        &pki,
        &format!(
            "--output json bench --node {mtls} {h2c} --connections 2 --streams 4 --duration 1s"
        ),
    );
    run.assert_success();
    let document = json(&run.stdout);
    assert_eq!(document["schema_version"], 1, "{document}");
    assert_eq!(document["command"], "bench");
    assert_eq!(document["mode"], "long_lived");
    assert_eq!(document["duration_ms"], 1000);
    let nodes = document["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 2, "{document}");
    for node in nodes {
        assert_eq!(node["ok"], true, "{node}");
        assert!(node["requests"].as_u64().unwrap_or(0) > 0, "{node}");
        assert_eq!(node["errors"], 0, "{node}");
        assert!(
            node["requests_per_sec"].as_f64().unwrap_or(0.0) > 0.0,
            "{node}"
        );
        let latency = &node["latency_us"];
        let (p50, p99, max) = (
            latency["p50"].as_u64().expect("p50"),
            latency["p99"].as_u64().expect("p99"),
            latency["max"].as_u64().expect("max"),
        );
        assert!(p50 <= p99 && p99 <= max, "{latency}");
        assert!(node["handshakes_per_sec"].is_null(), "{node}");
    }
    let mut transports: Vec<&str> = nodes
        .iter()
        .filter_map(|node| node["transport"].as_str())
        .collect();
    // Rows are sorted by node name; the two transports are what matters here.
    transports.sort_unstable();
    assert_eq!(transports, ["h2c", "mtls"]);
    assert_eq!(
        document["summary"]["requests"].as_u64(),
        Some(nodes.iter().filter_map(|n| n["requests"].as_u64()).sum())
    );
}

#[test]
fn bench_with_a_new_connection_per_rpc_counts_handshakes() {
    /// Connection loops: each makes one connection after another.
    const LOOPS: u64 = 2;
    let (_dir, pki) = fresh_pki();
    let agent = Agent::spawn(
        &AgentConfig::standard(&pki)
            .log_level("info")
            .extra("[metrics]\naddress = \"127.0.0.1:0\""),
    );
    let before = ok_handshakes(&agent);
    let run = ctl_as_client(
        &pki,
        &format!(
            "--output json bench --node {} --new-connection-per-rpc --connections {LOOPS} \
             --duration 500ms",
            agent.mtls_addr()
        ),
    );
    run.assert_success();
    let summary = &json(&run.stdout)["summary"];
    let handshakes = summary["handshakes"].as_u64().unwrap_or(0);
    let requests = summary["requests"].as_u64().unwrap_or(0);
    assert!(handshakes > 0, "{summary}");
    assert_eq!(summary["errors"], 0, "{summary}");
    // One handshake per RPC; a loop's last connection may be cut off by the
    // deadline before its RPC is counted.
    assert!(
        (requests..=requests + LOOPS).contains(&handshakes),
        "{handshakes} handshakes for {requests} RPCs: {summary}"
    );
    assert!(
        summary["handshakes_per_sec"].as_f64().unwrap_or(0.0) > 0.0,
        "{summary}"
    );
    // The agent accepted one new connection per RPC too (and perhaps one
    // per loop that the deadline cut off), not one connection for them all.
    let least = before + requests as f64;
    let counted = poll_until(SETTLE, || ok_handshakes(&agent) >= least);
    let accepted = ok_handshakes(&agent) - before;
    assert!(
        counted && accepted <= (requests + LOOPS) as f64,
        "the agent accepted {accepted} mTLS connections for {requests} RPCs \
         (dicectl: {handshakes} handshakes)"
    );

    // One RPC per connection: more streams on one is a usage error, and nothing runs.
    ctl_as_client(
        &pki,
        &format!(
            "bench --node {} --new-connection-per-rpc --streams 2",
            agent.mtls_addr()
        ),
    )
    .assert_code(2)
    .assert_stderr_contains("--new-connection-per-rpc");
}

#[test]
fn bench_against_a_dead_node_reports_errors_and_exits_1() {
    let addr = closed_port();
    let run = Ctl::run([
        "--output",
        "json",
        "bench",
        "--node",
        &format!("h2c://{addr}"),
        "--duration",
        "300ms",
    ]);
    run.assert_code(1);
    let node = &json(&run.stdout)["nodes"][0];
    assert_eq!(node["ok"], false, "{node}");
    assert_eq!(node["requests"], 0, "{node}");
    assert!(
        node["errors_by_status"]["connect"].as_u64().unwrap_or(0) > 0,
        "{node}"
    );
}
