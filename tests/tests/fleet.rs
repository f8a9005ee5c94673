//! `dicectl roll` and `dicectl health` over a fleet file, against real
//! agents: one healthy, one serving a certificate inside the expiry warning,
//! one stopped, and one socket that accepts and never answers. Every row shows
//! the right status and error, the JSON reads into structs that deny unknown
//! fields, each exit status is checked, and a run with bad nodes takes about
//! one timeout, not one per bad node. Tables and JSON are compared with
//! `tests/golden/` after normalization (`DICE_BLESS=1` rewrites them).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dice_tests::fleet::{FleetFile, SilentPeer, closed_port, run_ctl_env, run_ctl_in};
use dice_tests::golden::{assert_golden, normalize_json, normalize_table, pretty};
use dice_tests::{
    Agent, AgentConfig, Identity, LeafSpec, ListenerConfig, Pki, RunOutput, Signal, tempdir,
};
use serde::Deserialize;
use tempfile::TempDir;

/// The deadline per node in these fleets.
const TIMEOUT: Duration = Duration::from_secs(1);
const TIMEOUT_TEXT: &str = "1s";

// === the documented JSON schema, read strictly ===

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RollDocument {
    schema_version: u32,
    command: String,
    started_at: String,
    duration_ms: u64,
    timeout_ms: u64,
    concurrency: u64,
    count: u32,
    nodes: Vec<RollNode>,
    summary: RollSummary,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RollNode {
    name: String,
    address: String,
    ok: bool,
    values: Vec<i32>,
    latency_ms: u64,
    error: Option<ErrorDoc>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RollSummary {
    nodes: u64,
    ok: u64,
    failed: u64,
    latency_p50_ms: Option<u64>,
    latency_max_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthDocument {
    schema_version: u32,
    command: String,
    started_at: String,
    duration_ms: u64,
    timeout_ms: u64,
    concurrency: u64,
    expiry_warning_ms: u64,
    nodes: Vec<HealthNode>,
    summary: HealthSummary,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthNode {
    name: String,
    address: String,
    ok: bool,
    status: String,
    latency_ms: u64,
    tls_version: Option<String>,
    certificate: Option<CertDoc>,
    agent: Option<AgentDoc>,
    error: Option<ErrorDoc>,
    warnings: Vec<WarningDoc>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CertDoc {
    subject: String,
    issuer: String,
    serial: String,
    sans: Vec<String>,
    not_before: String,
    not_after: String,
    days_left: i64,
    expiring: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentDoc {
    node: String,
    version: String,
    last_reload: Option<ReloadDoc>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReloadDoc {
    time: String,
    ok: bool,
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WarningDoc {
    kind: String,
    message: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthSummary {
    nodes: u64,
    ok: u64,
    failed: u64,
    serving: u64,
    not_serving: u64,
    unreachable: u64,
    tls_error: u64,
    timeout: u64,
    expiring: u64,
    latency_p50_ms: Option<u64>,
    latency_max_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ErrorDoc {
    kind: String,
    message: String,
    hint: String,
}

fn assert_rfc3339(text: &str) {
    let pattern = regex::Regex::new(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$").expect("valid pattern");
    assert!(pattern.is_match(text), "not an RFC 3339 UTC time: {text:?}");
}

/// Asserts how every fleet document starts: schema version 1, `command`, and
/// an RFC 3339 start time.
fn assert_start((schema_version, command, started_at): (u32, &str, &str), expected: &str) {
    assert_eq!((schema_version, command), (1, expected));
    assert_rfc3339(started_at);
}

/// Asserts one row per node of the mixed fleet, `(name, address)`, sorted by
/// name, each at a loopback address.
fn assert_mixed_rows<'a>(rows: impl Iterator<Item = (&'a String, &'a String)>) {
    let (names, addresses): (Vec<&String>, Vec<&String>) = rows.unzip();
    assert_eq!(names, ["expiring", "healthy", "silent", "stopped"]);
    for address in addresses {
        assert!(address.starts_with("127.0.0.1:"), "{address}");
    }
}

/// Parses stdout as exactly one JSON document, of type `T`.
fn parse_json<T: serde::de::DeserializeOwned>(output: &RunOutput) -> (T, serde_json::Value) {
    let typed: T = serde_json::from_str(&output.stdout)
        .unwrap_or_else(|error| panic!("stdout is not the documented JSON: {error}\n{output}"));
    let value = serde_json::from_str(&output.stdout).expect("valid JSON");
    (typed, value)
}

// === fleets ===

/// A fleet of real agents in every state worth reporting.
struct MixedFleet {
    dir: TempDir,
    fleet: PathBuf,
    _agents: Vec<Agent>,
    _silent: SilentPeer,
}

impl MixedFleet {
    fn start() -> Self {
        let dir = tempdir();
        let pki = Pki::new(&dir.path().join("pki"));
        let serving = |name: &str, spec: LeafSpec| serve_as(&pki, name, &pki.issue(&spec));
        let healthy = serving("healthy", LeafSpec::server("healthy"));
        let expiring = serving(
            "expiring",
            LeafSpec::server("expiring").expires_in(time::Duration::days(5)),
        );
        let mut stopped = serving("stopped", LeafSpec::server("stopped"));
        let stopped_addr = stopped.mtls_addr();
        stopped.signal(Signal::TERM);
        stopped.assert_clean_exit(Duration::from_secs(20), "after SIGTERM (the stopped node)");
        let silent = SilentPeer::bind();

        let fleet = dir.path().join("fleet.toml");
        FleetFile::new(&pki)
            .timeout(TIMEOUT_TEXT)
            .node_with("stopped", stopped_addr, &[("region", "eu")])
            .node_with("healthy", healthy.mtls_addr(), &[("region", "eu")])
            .node_with("silent", silent.addr, &[("region", "us")])
            .node_with("expiring", expiring.mtls_addr(), &[("region", "us")])
            .write(&fleet);
        Self {
            dir,
            fleet,
            _agents: vec![healthy, expiring, stopped],
            _silent: silent,
        }
    }

    fn run(&self, args: &[&str]) -> (RunOutput, Duration) {
        let mut all = vec!["--fleet", self.fleet.to_str().expect("UTF-8 temp path")];
        all.extend_from_slice(args);
        run_ctl_in(self.dir.path(), all)
    }

    /// Runs `dicectl --fleet FILE ARGS` over the whole fleet, bad nodes
    /// included: it exits 1, says nothing on stderr (no `-v`), and takes
    /// about one timeout.
    fn run_with_failures(&self, args: &[&str]) -> RunOutput {
        let (output, elapsed) = self.run(args);
        output.assert_code(1);
        assert_eq!(output.stderr, "", "nothing on stderr without -v\n{output}");
        assert_about_one_timeout(elapsed, &output);
        output
    }

    /// As [`MixedFleet::run_with_failures`] for a JSON run: compares the
    /// normalized document with `golden`, and reads it strictly as `T`.
    fn json_document<T: serde::de::DeserializeOwned>(&self, args: &[&str], golden: &str) -> T {
        let output = self.run_with_failures(args);
        let (document, value) = parse_json(&output);
        assert_golden(golden, &pretty(&normalize_json(&value)));
        document
    }
}

/// An agent named `name` serving `identity` on one mTLS listener.
fn serve_as(pki: &Pki, name: &str, identity: &Identity) -> Agent {
    Agent::spawn(
        &AgentConfig::new(name)
            .tls(pki.tls_files_for(identity))
            .listener(ListenerConfig::mtls("mtls")),
    )
}

/// Asserts the run took about one timeout: at least one (a silent node waits
/// for its whole deadline), and well under two (bad nodes wait side by side).
/// Two agents with the standard config, their PKI in a fresh temp dir.
fn two_standard_agents() -> (TempDir, Pki, Vec<Agent>) {
    let dir = tempdir();
    let pki = Pki::new(&dir.path().join("pki"));
    let agents = (0..2)
        .map(|_| Agent::spawn(&AgentConfig::standard(&pki)))
        .collect();
    (dir, pki, agents)
}

fn assert_about_one_timeout(elapsed: Duration, output: &RunOutput) {
    assert!(
        elapsed >= TIMEOUT && elapsed < TIMEOUT * 2,
        "took {elapsed:?}; expected about one timeout ({TIMEOUT:?})\n{output}"
    );
}

#[test]
fn health_over_a_mixed_fleet() {
    let fleet = MixedFleet::start();

    let output = fleet.run_with_failures(&["health"]);
    assert_golden("fleet-health.txt", &normalize_table(&output.stdout, None));

    let document: HealthDocument =
        fleet.json_document(&["health", "--output", "json"], "fleet-health.json");
    assert_start(
        (
            document.schema_version,
            &document.command,
            &document.started_at,
        ),
        "health",
    );
    assert_eq!((document.timeout_ms, document.concurrency), (1000, 64));
    assert_eq!(document.expiry_warning_ms, 14 * 86_400 * 1000);
    assert!(document.duration_ms >= 1000, "{}", document.duration_ms);
    assert_mixed_rows(document.nodes.iter().map(|n| (&n.name, &n.address)));
    let node = |name: &str| {
        (document.nodes.iter())
            .find(|node| node.name == name)
            .expect("every node has a row")
    };

    let healthy = node("healthy");
    assert!(healthy.ok && healthy.status == "SERVING" && healthy.error.is_none());
    assert_eq!(healthy.tls_version.as_deref(), Some("TLSv1.3"));
    let cert = healthy.certificate.as_ref().expect("certificate");
    assert_eq!(cert.subject, "CN=healthy, O=dice fleet tests");
    assert_eq!((cert.days_left, cert.expiring), (29, false));
    assert_eq!(cert.issuer, "CN=dice test CA, O=dice fleet tests");
    assert_eq!(cert.sans, ["DNS:localhost", "IP:127.0.0.1"]);
    assert!(
        cert.serial.chars().all(|c| c.is_ascii_hexdigit()),
        "{}",
        cert.serial
    );
    assert_rfc3339(&cert.not_before);
    assert_rfc3339(&cert.not_after);
    let agent = healthy.agent.as_ref().expect("agent info");
    assert_eq!(agent.node, "healthy");
    assert!(!agent.version.is_empty());
    assert!(agent.last_reload.is_none(), "no reload since start");
    assert!(healthy.warnings.is_empty());

    let expiring = node("expiring");
    assert!(
        !expiring.ok,
        "a certificate inside the warning fails the node"
    );
    assert_eq!(expiring.status, "SERVING");
    assert!(expiring.error.is_none());
    let cert = expiring.certificate.as_ref().expect("certificate");
    assert_eq!((cert.days_left, cert.expiring), (4, true));
    assert_eq!(expiring.warnings.len(), 1);
    assert_eq!(expiring.warnings[0].kind, "certificate_expiring");
    assert!(
        expiring.warnings[0]
            .message
            .starts_with("certificate expires in 4 days, at "),
        "{:?}",
        expiring.warnings[0]
    );

    let silent = node("silent");
    assert_eq!(silent.status, "TIMEOUT");
    let error = silent.error.as_ref().expect("error");
    assert_eq!(error.kind, "timeout");
    assert_eq!(error.message, "no TLS handshake before the deadline");
    assert!(!error.hint.is_empty());
    assert!(silent.tls_version.is_none() && silent.certificate.is_none());
    assert!(silent.latency_ms >= 1000, "{}", silent.latency_ms);

    let stopped = node("stopped");
    assert_eq!(stopped.status, "UNREACHABLE");
    let error = stopped.error.as_ref().expect("error");
    assert_eq!(
        (error.kind.as_str(), error.message.as_str()),
        ("connect", "connection refused")
    );

    let summary = &document.summary;
    assert_eq!(
        (
            summary.nodes,
            summary.ok,
            summary.failed,
            summary.serving,
            summary.expiring
        ),
        (4, 1, 3, 2, 1)
    );
    assert_eq!((summary.unreachable, summary.timeout), (1, 1));
    assert_eq!((summary.not_serving, summary.tls_error), (0, 0));
    assert!(summary.latency_p50_ms.is_some() && summary.latency_max_ms < Some(1000));
}

#[test]
fn roll_over_a_mixed_fleet() {
    let fleet = MixedFleet::start();

    let output = fleet.run_with_failures(&["roll", "--all"]);
    assert_golden(
        "fleet-roll.txt",
        &normalize_table(&output.stdout, Some("VALUE")),
    );

    // Global options after the subcommand, and several dice per node.
    let document: RollDocument = fleet.json_document(
        &["roll", "--all", "--count", "3", "--output", "json"],
        "fleet-roll.json",
    );
    assert_start(
        (
            document.schema_version,
            &document.command,
            &document.started_at,
        ),
        "roll",
    );
    assert_eq!(
        (document.timeout_ms, document.concurrency, document.count),
        (1000, 64, 3)
    );
    assert!(document.duration_ms >= 1000);
    assert_mixed_rows(document.nodes.iter().map(|n| (&n.name, &n.address)));
    for node in &document.nodes[..2] {
        assert!(node.ok && node.error.is_none(), "{node:?}");
        assert_eq!(node.values.len(), 3);
        assert!(node.values.iter().all(|v| (1..=6).contains(v)), "{node:?}");
        assert!(node.latency_ms < 1000);
    }
    let silent = &document.nodes[2];
    let error = silent.error.as_ref().expect("error");
    assert_eq!((silent.ok, error.kind.as_str()), (false, "timeout"));
    assert!(silent.values.is_empty());
    let stopped = &document.nodes[3];
    assert_eq!(
        stopped.error.as_ref().map(|e| e.kind.as_str()),
        Some("connect")
    );
    let summary = &document.summary;
    assert_eq!((summary.nodes, summary.ok, summary.failed), (4, 2, 2));
    assert!(summary.latency_max_ms < Some(1000));
    assert!(summary.latency_p50_ms <= summary.latency_max_ms);

    // --label selects; -v tells the whole story on stderr, stdout stays a table.
    let (output, _) = fleet.run(&["-v", "roll", "--label", "region=us"]);
    output.assert_code(1);
    output
        .assert_stdout_contains("expiring")
        .assert_stdout_contains("silent");
    assert!(!output.stdout.contains("healthy"), "{output}");
    output
        .assert_stderr_contains("dicectl: 2 nodes from ")
        .assert_stderr_contains("dicectl: node silent (127.0.0.1:")
        .assert_stderr_contains(
            "): timeout: no TLS handshake before the deadline (raise --timeout",
        );
}

/// Bad nodes wait for their deadlines side by side; with one node in flight
/// at a time, each still gets its whole deadline.
#[test]
fn bad_nodes_time_out_together_each_with_its_own_deadline() {
    const SILENT: u32 = 4;
    let timeout = Duration::from_millis(500);
    let dir = tempdir();
    let pki = Pki::new(&dir.path().join("pki"));
    let agent = Agent::spawn(&AgentConfig::standard(&pki));
    let silent: Vec<SilentPeer> = (0..SILENT).map(|_| SilentPeer::bind()).collect();
    let mut fleet = FleetFile::new(&pki)
        .timeout("500ms")
        .node("ok", agent.mtls_addr());
    for (i, peer) in silent.iter().enumerate() {
        fleet = fleet.node(&format!("silent-{i}"), peer.addr);
    }
    fleet.write(&dir.path().join("fleet.toml"));

    // One after another they would take 4 timeouts; side by side, about one.
    let (output, elapsed) = run_ctl_in(dir.path(), ["health"]);
    output.assert_code(1);
    assert!(
        elapsed >= timeout && elapsed < timeout * 3,
        "{SILENT} silent nodes took {elapsed:?}, expected about one {timeout:?} timeout\n{output}"
    );

    let (output, elapsed) = run_ctl_in(dir.path(), ["roll", "--all", "--concurrency", "1"]);
    output.assert_code(1);
    assert!(
        elapsed >= timeout * SILENT,
        "one at a time, {SILENT} silent nodes must take {SILENT} timeouts, took {elapsed:?}\n{output}"
    );
    assert_eq!(
        output.stdout.matches("timeout: no TLS handshake").count(),
        SILENT as usize,
        "{output}"
    );
}

#[test]
fn exit_0_when_every_node_is_ok() {
    let (dir, pki, agents) = two_standard_agents();
    FleetFile::new(&pki)
        .node("a", agents[0].mtls_addr())
        .node("b", agents[1].mtls_addr())
        .write(&dir.path().join("fleet.toml"));

    for args in [
        &["roll", "--all"][..],
        &["health"][..],
        &["health", "--node", "b"][..],
    ] {
        let (output, _) = run_ctl_in(dir.path(), args);
        output.assert_success();
        assert_eq!(output.stderr, "", "{output}");
    }
    let (output, _) = run_ctl_in(dir.path(), ["health"]);
    let last = output.stdout.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("ok 2/2; serving 2; latency p50 "),
        "{output}"
    );
}

#[test]
fn health_exits_1_for_a_certificate_inside_the_warning_threshold() {
    let dir = tempdir();
    let pki = Pki::new(&dir.path().join("pki"));
    // An hour short of 10 days, so "9 days" holds whatever second the check runs in.
    let lifetime = time::Duration::days(10) - time::Duration::hours(1);
    let identity = pki.issue(&LeafSpec::server("soon").expires_in(lifetime));
    let agent = serve_as(&pki, "soon", &identity);
    FleetFile::new(&pki)
        .node("soon", agent.mtls_addr())
        .write(&dir.path().join("fleet.toml"));

    let (output, _) = run_ctl_in(dir.path(), ["health"]);
    output
        .assert_code(1)
        .assert_stdout_contains("SERVING")
        .assert_stdout_contains("soon: certificate expires in 9 days")
        .assert_stdout_contains("1 certificate expires within 14 days");
    // roll does not look at expiry.
    run_ctl_in(dir.path(), ["roll", "--all"]).0.assert_success();
    // The threshold: the flag wins over the file, which wins over the default.
    run_ctl_in(dir.path(), ["health", "--expiry-warning", "7d"])
        .0
        .assert_success();
    FleetFile::new(&pki)
        .client("expiry_warning", "\"9d\"")
        .node("soon", agent.mtls_addr())
        .write(&dir.path().join("fleet.toml"));
    run_ctl_in(dir.path(), ["health"]).0.assert_success();
    run_ctl_in(dir.path(), ["health", "--expiry-warning", "30d"])
        .0
        .assert_code(1);
}

#[test]
fn exit_2_for_usage_and_config_errors_with_nothing_run() {
    let dir = tempdir();
    let pki = Pki::new(&dir.path().join("pki"));
    let fleet = dir.path().join("fleet.toml");
    // The node address is a socket that would time out: nothing may reach it.
    let silent = SilentPeer::bind();
    let text = FleetFile::new(&pki)
        .timeout("5s")
        .node("a", silent.addr)
        .to_toml()
        .replace("timeout = \"5s\"", "timeout = \"5s\"\nretries = 3");
    std::fs::write(&fleet, text).expect("write");

    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["roll", "--all"],
            "fleet.toml line 6: client.retries: unknown field `retries`",
        ),
        (vec!["health"], "client.retries: unknown field"),
        (vec!["roll"], "--all"),
        (vec!["roll", "--all", "--node", "a"], "cannot be used with"),
        (vec!["--output", "yaml", "health"], "invalid value 'yaml'"),
        (vec!["roll", "--all", "--timeout", "5"], "--timeout"),
        (
            vec!["roll", "--all", "--fleet", "missing.toml"],
            "missing.toml: no such file (pass --fleet FILE or set DICECTL_FLEET",
        ),
    ];
    for (args, expected) in cases {
        let (output, elapsed) = run_ctl_in(dir.path(), &args);
        output.assert_code(2).assert_stderr_contains(expected);
        assert_eq!(
            output.stdout, "",
            "nothing ran, nothing on stdout\n{output}"
        );
        assert!(
            elapsed < Duration::from_secs(5),
            "{args:?} took {elapsed:?}"
        );
    }

    // No fleet file at all.
    let empty = tempdir();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["roll", "--all"],
            "--all needs a fleet file, and none was found",
        ),
        (vec!["health"], "health needs a fleet file"),
        (
            vec!["roll", "--node", "node-1"],
            "--node \"node-1\": not HOST:PORT",
        ),
        (
            vec!["roll", "--node", "127.0.0.1:1"],
            "no client certificate files: missing --ca, --cert, --key",
        ),
    ];
    for (args, expected) in cases {
        let (output, _) = run_ctl_in(empty.path(), &args);
        output.assert_code(2).assert_stderr_contains(expected);
        assert_eq!(output.stdout, "", "{output}");
    }

    // A good fleet file, but the selection names no node in it.
    FleetFile::new(&pki).node("a", silent.addr).write(&fleet);
    for (args, expected) in [
        (
            &["roll", "--node", "b"][..],
            "--node \"b\": no node of that name in",
        ),
        (
            &["roll", "--label", "region=mars"][..],
            "--label region=mars: no node in",
        ),
    ] {
        let (output, _) = run_ctl_in(dir.path(), args);
        output.assert_code(2).assert_stderr_contains(expected);
    }
}

/// `--fleet`, else `DICECTL_FLEET`, else `./fleet.toml`; `--fleet` before or
/// after the subcommand.
#[test]
fn the_fleet_file_is_found_via_flag_env_or_working_directory() {
    let dir = tempdir();
    let pki = Pki::new(&dir.path().join("pki"));
    let agent = Agent::spawn(&AgentConfig::standard(&pki));
    FleetFile::new(&pki)
        .node("from-cwd", agent.mtls_addr())
        .write(&dir.path().join("fleet.toml"));
    let other = dir.path().join("other.toml");
    FleetFile::new(&pki)
        .node("from-other", agent.mtls_addr())
        .write(&other);
    let other_arg = other.to_str().expect("UTF-8");

    let expect = |output: RunOutput, name: &str| {
        output.assert_success().assert_stdout_contains(name);
    };
    expect(run_ctl_in(dir.path(), ["roll", "--all"]).0, "from-cwd");
    expect(
        run_ctl_env(
            dir.path(),
            ["roll", "--all"],
            &[("DICECTL_FLEET", OsStr::new(other_arg))],
        )
        .0,
        "from-other",
    );
    expect(
        run_ctl_in(dir.path(), ["--fleet", other_arg, "roll", "--all"]).0,
        "from-other",
    );
    expect(
        run_ctl_in(dir.path(), ["roll", "--all", "--fleet", other_arg]).0,
        "from-other",
    );
    // The flag wins over the environment.
    let wrong = OsStr::new("/nonexistent/fleet.toml");
    expect(
        run_ctl_env(
            dir.path(),
            ["health", "--fleet", other_arg],
            &[("DICECTL_FLEET", wrong)],
        )
        .0,
        "from-other",
    );
}

/// The quickstart's forms: `--node HOST:PORT` with `--ca/--cert/--key`, no fleet file.
#[test]
fn ad_hoc_nodes_need_no_fleet_file() {
    let (_dir, pki, agents) = two_standard_agents();
    let empty = tempdir();
    let tls = |args: &mut Vec<String>| {
        for (flag, path) in [
            ("--ca", pki.ca_cert()),
            ("--cert", &pki.client().cert),
            ("--key", &pki.client().key),
        ] {
            args.push(flag.to_owned());
            args.push(path.to_str().expect("UTF-8").to_owned());
        }
    };
    let one = agents[0].mtls_addr().to_string();
    let two = agents[1].mtls_addr().to_string();

    let mut args = vec![
        "health".to_owned(),
        "--node".to_owned(),
        one.clone(),
        two.clone(),
    ];
    tls(&mut args);
    let (output, _) = run_ctl_in(empty.path(), &args);
    output.assert_success();
    let rows: Vec<&str> = output.stdout.lines().skip(1).take(2).collect();
    assert!(rows.iter().all(|row| row.contains("SERVING")), "{output}");
    assert!(output.stdout.contains(&format!("{one}  {one}")), "{output}");

    // One ad-hoc node: the first slice's output, just the value(s).
    let mut args = vec![
        "roll".to_owned(),
        "--node".to_owned(),
        one.clone(),
        "--count".into(),
        "2".into(),
    ];
    tls(&mut args);
    let (output, _) = run_ctl_in(empty.path(), &args);
    output.assert_success();
    let values: Vec<i32> = (output.stdout.lines())
        .map(|line| line.parse().expect("one value per line"))
        .collect();
    assert_eq!(values.len(), 2, "{output}");
    // ... unless a format is asked for.
    args.extend(["--output".to_owned(), "table".to_owned()]);
    let (output, _) = run_ctl_in(empty.path(), &args);
    output.assert_success().assert_stdout_contains("NODE");
}

/// Large fleets get a progress line only on a terminal: never in a pipe or file.
#[test]
fn no_progress_line_off_a_terminal() {
    let dir = tempdir();
    let pki = Pki::new(&dir.path().join("pki"));
    let agent = Agent::spawn(&AgentConfig::standard(&pki));
    let mut fleet = FleetFile::new(&pki);
    for i in 0..30 {
        fleet = fleet.node(&format!("node-{i}"), agent.mtls_addr());
    }
    fleet = fleet.node("down", closed_port());
    fleet.write(&dir.path().join("fleet.toml"));
    for args in [&["roll", "--all"][..], &["--output", "json", "health"][..]] {
        let (output, _) = run_ctl_in(dir.path(), args);
        output.assert_code(1);
        assert_eq!(output.stderr, "", "{output}");
    }
    // Rows come in natural name order: node-2 before node-10.
    let (output, _) = run_ctl_in(dir.path(), ["roll", "--all"]);
    let names: Vec<&str> = (output.stdout.lines().skip(1))
        .map_while(|line| line.split_whitespace().next())
        .collect();
    assert_eq!(names.first(), Some(&"down"));
    assert_eq!(&names[1..4], ["node-0", "node-1", "node-2"]);
    assert_eq!(names.last(), Some(&"node-29"));
}

/// A rejected reload shows in `health`: RELOAD `failed` and a warning naming
/// the reason, while the node keeps serving (so the exit status stays 0).
#[test]
fn health_shows_a_rejected_certificate_reload() {
    let dir = tempdir();
    let pki = Pki::new(&dir.path().join("pki"));
    let identity = pki.issue(&LeafSpec::server("reloading"));
    let agent = serve_as(&pki, "reloading", &identity);
    FleetFile::new(&pki)
        .node("reloading", agent.mtls_addr())
        .write(&dir.path().join("fleet.toml"));
    std::fs::write(&identity.cert, "not a certificate\n").expect("break the certificate");
    agent.signal(Signal::HUP);

    let mut last = None;
    let rejected = dice_tests::poll_until(Duration::from_secs(15), || {
        let (output, _) = run_ctl_in(dir.path(), ["--output", "json", "health"]);
        let (document, _): (HealthDocument, _) = parse_json(&output);
        let failed = (document.nodes[0].agent.as_ref())
            .and_then(|agent| agent.last_reload.as_ref())
            .is_some_and(|reload| !reload.ok);
        last = Some(output);
        failed
    });
    let last = last.expect("polled at least once");
    assert!(
        rejected,
        "the reload never showed as rejected\n{last}\n{}",
        agent.dump()
    );
    last.assert_success();
    let (document, _): (HealthDocument, _) = parse_json(&last);
    let node = &document.nodes[0];
    let reload = node
        .agent
        .as_ref()
        .and_then(|a| a.last_reload.as_ref())
        .expect("reload");
    assert_rfc3339(&reload.time);
    assert!(
        reload.error.as_deref().is_some_and(|e| !e.is_empty()),
        "{reload:?}"
    );
    assert_eq!(node.warnings.len(), 1, "{node:?}");
    assert_eq!(node.warnings[0].kind, "reload_failed");
    assert!(
        node.warnings[0]
            .message
            .starts_with("last certificate reload failed at "),
        "{:?}",
        node.warnings[0]
    );
    assert_eq!(node.status, "SERVING");

    let (output, _) = run_ctl_in(dir.path(), ["health"]);
    output
        .assert_success()
        .assert_stdout_contains("failed")
        .assert_stdout_contains("reloading: last certificate reload failed at ");
}

/// The example fleet file parses (its certificates need not exist: `dicectl`
/// reads them only to connect).
#[test]
fn the_example_fleet_file_lists_the_quickstart_nodes() {
    let example = dice_tests::fixtures::workspace_root().join("config/fleet.toml");
    let text = std::fs::read_to_string(&example).expect("config/fleet.toml");
    for needle in ["127.0.0.1:8443", "127.0.0.1:8444", "node-1", "node-2"] {
        assert!(text.contains(needle), "config/fleet.toml lacks {needle}");
    }
    // --node with a name that is not in it: exit 2 after a successful parse.
    let (output, _) = run_ctl_in(
        Path::new(env!("CARGO_MANIFEST_DIR")),
        [
            "--fleet",
            example.to_str().expect("UTF-8"),
            "roll",
            "--node",
            "node-9",
        ],
    );
    output
        .assert_code(2)
        .assert_stderr_contains("no node of that name in")
        .assert_stderr_contains("known: node-1, node-2");
}
