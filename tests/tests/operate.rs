//! Operating the agent: the Prometheus `/metrics` endpoint, systemd readiness
//! (`sd_notify`) and the unit file, `--version` of both binaries, shell
//! completions and man pages, and JSON logs.
//!
//! Everything is checked by parsing what the binaries produce: the metrics
//! text with a strict OpenMetrics parser ([`dice_tests::metrics`]), notify
//! datagrams as `KEY=VALUE` lines, log lines as JSON objects, completion
//! scripts by running them in bash.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use dice_agent::metrics::HANDSHAKE_OUTCOMES;
use dice_tests::agent::parse_ready;
use dice_tests::client::handshake;
use dice_tests::fixtures::workspace_root;
use dice_tests::metrics::{Exposition, Kind, http_get, scrape};
use dice_tests::pki::{CLIENT_CN, SERVER_CN};
use dice_tests::process::{RUN_TIMEOUT, RunOutput, run_with_timeout};
use dice_tests::rotation::{LiveTls, Replace, await_ok, await_serial, replace};
use dice_tests::{
    Agent, AgentConfig, Client, Ctl, LeafSpec, ListenerConfig, Pki, Signal, TlsClient, bins,
    run_agent, tempdir,
};
use regex::Regex;
use serde_json::{Map, Value};

/// The workspace version both binaries report.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// A metrics endpoint on an ephemeral loopback port.
const METRICS_TOML: &str = "[metrics]\naddress = \"127.0.0.1:0\"\n";

/// The gRPC path of the roll RPC, as metrics and logs name it.
const ROLL_DIE: &str = "/api.DiceService/RollDie";

/// How long a metric or a notification may take to show up.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the agent may take to exit after SIGTERM.
const EXIT_TIMEOUT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------- metrics

/// `dice-agent --version` parsed: the version and the commit.
fn agent_version() -> (String, String) {
    let output = run_agent(["--version"]);
    output.assert_success();
    version_line("dice-agent", &output)
}

/// Checks `NAME VERSION (commit HASH)` and returns the version and the hash
/// (12 hex digits, or `unknown` outside a git checkout).
fn version_line(binary: &str, output: &RunOutput) -> (String, String) {
    let pattern = format!(
        r"^{} (\S+) \(commit ([0-9a-f]{{12}}|unknown)\)\n$",
        regex::escape(binary)
    );
    let captures = Regex::new(&pattern)
        .expect("a valid regex")
        .captures(&output.stdout)
        .unwrap_or_else(|| panic!("--version output is not `{pattern}`\n{output}"));
    (captures[1].to_owned(), captures[2].to_owned())
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
    run_agent([Path::new("--config"), path.as_path(), Path::new("--check")]).assert_success();
}

// ---------------------------------------------------------------- systemd

/// One notify datagram, and the ready file as it was when it arrived.
#[derive(Debug)]
struct Notice {
    fields: BTreeMap<String, String>,
    ready_file: Option<String>,
}

/// Receives notify datagrams on `socket` in a thread (so the moment each
/// arrives is observed while the agent runs), reading `ready_path` on arrival.
fn receive_notices(socket: UnixDatagram, ready_path: PathBuf) -> mpsc::Receiver<Notice> {
    socket
        .set_read_timeout(Some(EXIT_TIMEOUT + SETTLE_TIMEOUT))
        .expect("set a read timeout");
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 4096];
        // Ends on the read timeout, or once the test stops listening.
        while let Ok(len) = socket.recv(&mut buf) {
            let ready_file = std::fs::read_to_string(&ready_path).ok();
            let text = String::from_utf8_lossy(&buf[..len]).into_owned();
            let fields = text
                .lines()
                .filter(|line| !line.is_empty())
                .map(|line| match line.split_once('=') {
                    Some((key, value)) => (key.to_owned(), value.to_owned()),
                    None => (line.to_owned(), String::from("<no =>")),
                })
                .collect();
            if sender.send(Notice { fields, ready_file }).is_err() {
                break;
            }
        }
    });
    receiver
}

fn next_notice(notices: &mpsc::Receiver<Notice>, agent: &Agent, what: &str) -> Notice {
    notices
        .recv_timeout(SETTLE_TIMEOUT)
        .unwrap_or_else(|error| panic!("no {what} notification: {error}\n{}", agent.dump()))
}

fn assert_fields(notice: &Notice, expected: &[(&str, &str)]) {
    let expected: BTreeMap<String, String> = expected
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect();
    assert_eq!(notice.fields, expected, "{notice:?}");
}

/// CLOCK_MONOTONIC in microseconds, the clock of `MONOTONIC_USEC`.
fn monotonic_usec() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let secs = u64::try_from(now.tv_sec).expect("a positive monotonic clock");
    let nanos = u64::try_from(now.tv_nsec).expect("positive nanoseconds");
    secs * 1_000_000 + nanos / 1_000
}

#[test]
fn sd_notify_ready_after_binding_reloading_on_sighup_stopping_on_sigterm() {
    let pki_dir = tempdir();
    let pki = Pki::new(pki_dir.path());
    let dir = tempfile::Builder::new()
        .prefix("dice-agent-")
        .tempdir()
        .expect("create the agent's temp dir");
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind the notify socket");
    let notices = receive_notices(socket, dir.path().join("ready"));
    let config_path = dir.path().join("node.toml");
    std::fs::write(&config_path, AgentConfig::standard(&pki).to_toml()).expect("write the config");
    let mut agent = Agent::spawn_file_env(
        dir,
        config_path,
        &[],
        &[("NOTIFY_SOCKET", socket_path.as_os_str())],
    );

    // READY=1 comes once every listener is bound and the ready file written.
    let ready = next_notice(&notices, &agent, "READY=1");
    assert_fields(&ready, &[("READY", "1"), ("STATUS", "serving")]);
    let ready_file = ready.ready_file.unwrap_or_else(|| {
        panic!(
            "READY=1 arrived before the ready file was written\n{}",
            agent.dump()
        )
    });
    let bound = parse_ready(&ready_file).expect("a whole ready file");
    assert_eq!(bound, agent.listeners(), "the ready file at READY=1");
    assert!(
        notices.try_recv().is_err(),
        "only READY=1 before any signal"
    );

    // SIGHUP: RELOADING=1 stamped with the monotonic clock, then READY=1.
    let before = monotonic_usec();
    agent.signal(Signal::HUP);
    let reloading = next_notice(&notices, &agent, "RELOADING=1");
    let after = monotonic_usec();
    assert_eq!(
        reloading.fields.get("RELOADING").map(String::as_str),
        Some("1"),
        "{reloading:?}"
    );
    let stamp: u64 = reloading
        .fields
        .get("MONOTONIC_USEC")
        .and_then(|usec| usec.parse().ok())
        .unwrap_or_else(|| panic!("RELOADING=1 without a MONOTONIC_USEC: {reloading:?}"));
    assert!(
        (before..=after).contains(&stamp),
        "MONOTONIC_USEC={stamp} not between {before} and {after}"
    );
    assert_eq!(reloading.fields.len(), 2, "{reloading:?}");
    let reloaded = next_notice(&notices, &agent, "READY=1 after the reload");
    assert_fields(&reloaded, &[("READY", "1"), ("STATUS", "serving")]);

    // SIGTERM: STOPPING=1, then a clean exit.
    agent.signal(Signal::TERM);
    let stopping = next_notice(&notices, &agent, "STOPPING=1");
    assert_fields(&stopping, &[("STOPPING", "1"), ("STATUS", "draining")]);
    let status = agent.wait_exit(EXIT_TIMEOUT);
    assert!(
        status.is_some_and(|status| status.success()),
        "exit after SIGTERM: {status:?}\n{}",
        agent.dump()
    );
}

/// `config/dice-agent.service` as `(section, key) -> values`, in order.
fn parse_unit(text: &str) -> BTreeMap<(String, String), Vec<String>> {
    let mut entries: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let mut section = String::new();
    let mut pending = String::new();
    for (number, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if pending.is_empty() && (line.is_empty() || line.starts_with(['#', ';'])) {
            continue;
        }
        if let Some(continued) = line.strip_suffix('\\') {
            pending.push_str(continued);
            pending.push(' ');
            continue;
        }
        let line = std::mem::take(&mut pending) + line;
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("unit line {}: not KEY=VALUE: {raw:?}", number + 1));
        assert!(
            !section.is_empty(),
            "unit line {}: outside a section",
            number + 1
        );
        entries
            .entry((section.clone(), key.trim().to_owned()))
            .or_default()
            .push(value.trim().to_owned());
    }
    entries
}

/// Writes a config `dice-agent --check` accepts into `dir` and returns its path.
fn valid_config(dir: &Path, pki: &Pki) -> PathBuf {
    let path = dir.join("node.toml");
    std::fs::write(&path, AgentConfig::standard(pki).to_toml()).expect("write the config");
    path
}

/// Runs the unit's `Exec*` command line with the real binary, the config
/// path replaced by `config`, and `extra` appended.
fn run_exec_line(line: &str, config: &Path, extra: &[&str]) -> RunOutput {
    let words: Vec<&str> = line.split_whitespace().collect();
    let (program, args) = words.split_first().expect("a command");
    assert!(
        program.ends_with("/dice-agent"),
        "the unit runs {program}, not dice-agent"
    );
    let config_at = args
        .iter()
        .position(|arg| *arg == "--config")
        .unwrap_or_else(|| panic!("{line:?} has no --config"));
    let mut command = Command::new(bins::agent_bin());
    for (index, arg) in args.iter().enumerate() {
        if index == config_at + 1 {
            command.arg(config);
        } else {
            command.arg(arg);
        }
    }
    command.args(extra);
    run_with_timeout(command, RUN_TIMEOUT)
}

#[test]
fn the_systemd_unit_is_notify_sandboxed_and_runs_the_agent() {
    let unit_path = workspace_root().join("config/dice-agent.service");
    let text = std::fs::read_to_string(&unit_path).expect("read config/dice-agent.service");
    let unit = parse_unit(&text);
    let get = |section: &str, key: &str| -> Vec<String> {
        unit.get(&(section.to_owned(), key.to_owned()))
            .cloned()
            .unwrap_or_default()
    };
    let one = |section: &str, key: &str| -> String {
        match &get(section, key)[..] {
            [value] => value.clone(),
            values => panic!("[{section}] {key}: expected one value, got {values:?}"),
        }
    };

    assert_eq!(one("Service", "Type"), "notify");
    assert_eq!(one("Service", "NotifyAccess"), "main");
    let reload = one("Service", "ExecReload");
    let reload_words: Vec<&str> = reload.split_whitespace().collect();
    assert!(
        reload_words
            .first()
            .is_some_and(|kill| kill.ends_with("/kill"))
            && reload_words.contains(&"-HUP")
            && reload_words.contains(&"$MAINPID"),
        "ExecReload should send SIGHUP to the main process: {reload:?}"
    );
    assert_eq!(one("Service", "NoNewPrivileges"), "yes");
    assert_eq!(one("Service", "ProtectSystem"), "strict");
    assert_eq!(one("Service", "ProtectHome"), "yes");
    assert_eq!(one("Service", "PrivateTmp"), "yes");
    assert_eq!(one("Service", "CapabilityBoundingSet"), "");
    let user = get("Service", "User");
    assert!(
        get("Service", "DynamicUser") == ["yes"] || user.iter().any(|u| u != "root"),
        "the agent should run as a dedicated user"
    );
    assert!(!user.iter().any(|u| u == "root"), "User=root");
    assert!(
        get("Service", "ReadWritePaths").is_empty(),
        "the agent writes nothing"
    );
    // The exit status of a bad config: restarting will not help.
    assert_eq!(one("Service", "RestartPreventExitStatus"), "2");
    let stop_timeout: u64 = one("Service", "TimeoutStopSec")
        .parse()
        .expect("TimeoutStopSec in seconds");
    assert!(
        stop_timeout > 10,
        "TimeoutStopSec={stop_timeout} leaves no margin over the default 10s grace period"
    );
    assert_eq!(one("Install", "WantedBy"), "multi-user.target");

    // ExecStart (and the --check of ExecStartPre) use flags the agent accepts,
    // and the config folder is read-only inside the sandbox.
    let start = one("Service", "ExecStart");
    let start_pre = one("Service", "ExecStartPre");
    let unit_config = start
        .split_whitespace()
        .skip_while(|word| *word != "--config")
        .nth(1)
        .map(PathBuf::from)
        .expect("ExecStart --config FILE");
    assert!(
        start_pre.contains(&format!("--config {}", unit_config.display()))
            && start_pre.split_whitespace().any(|word| word == "--check"),
        "ExecStartPre should --check the config ExecStart serves: {start_pre:?}"
    );
    let config_dir = unit_config.parent().expect("a config folder");
    let read_only = get("Service", "ReadOnlyPaths");
    assert!(
        read_only
            .iter()
            .flat_map(|paths| paths.split_whitespace())
            .map(|path| Path::new(path.trim_start_matches(['-', '+'])))
            .any(|path| config_dir.starts_with(path)),
        "ReadOnlyPaths {read_only:?} should cover {}",
        config_dir.display()
    );
    let dir = tempdir();
    let pki = Pki::new(&dir.path().join("pki"));
    let config = valid_config(dir.path(), &pki);
    run_exec_line(&start, &config, &["--check"]).assert_success();
    run_exec_line(&start_pre, &config, &[]).assert_success();

    // systemd's own checks, where systemd-analyze is installed (it is not a
    // requirement of the test suite; without it the checks above stand alone).
    let Some(version) = systemd_version() else {
        eprintln!("systemd-analyze not found: not running `systemd-analyze verify`");
        return;
    };
    let copy = dir.path().join("dice-agent.service");
    let agent = bins::agent_bin();
    let agent = agent.to_str().expect("a UTF-8 binary path");
    std::fs::write(&copy, text.replace("/usr/local/bin/dice-agent", agent))
        .expect("write the unit copy");
    let mut verify = Command::new("systemd-analyze");
    verify.args(["verify", "--man=no"]).arg(&copy);
    let verified = run_with_timeout(verify, RUN_TIMEOUT);
    verified.assert_success();
    assert_eq!(
        verified.stderr, "",
        "systemd-analyze verify warned\n{verified}"
    );
    if version >= 250 {
        // Exposure 0.0 (locked down) to 10.0 (unprotected); the threshold is in tenths.
        let mut security = Command::new("systemd-analyze");
        security
            .args(["security", "--offline=true", "--threshold=25", "--no-pager"])
            .arg(&copy);
        run_with_timeout(security, RUN_TIMEOUT).assert_success();
    }
}

/// The major version of `systemd-analyze`, if it runs.
fn systemd_version() -> Option<u32> {
    let output = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .ok()
        .filter(|output| output.status.success())?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.split_whitespace().nth(1)?.parse().ok()
}

// ---------------------------------------------------------------- versions

#[test]
fn both_binaries_print_their_version_and_git_commit() {
    for (binary, long, short) in [
        ("dice-agent", run_agent(["--version"]), run_agent(["-V"])),
        ("dicectl", Ctl::run(["--version"]), Ctl::run(["-V"])),
    ] {
        long.assert_success();
        short.assert_success();
        assert_eq!(long.stdout, short.stdout, "{binary}: -V and --version");
        let (version, commit) = version_line(binary, &long);
        assert_eq!(version, VERSION, "{binary}");
        if commit == "unknown" {
            // Built outside a git checkout (from a source tarball).
            continue;
        }
        // The binary may predate HEAD, but its commit must exist in this repository.
        let git = Command::new("git")
            .arg("-C")
            .arg(workspace_root())
            .args(["cat-file", "-t", &commit])
            .output()
            .unwrap_or_else(|error| {
                panic!(
                    "{binary} reports commit {commit}, and checking it needs git: {error} \
                     (apt-get install git)"
                )
            });
        assert_eq!(
            String::from_utf8_lossy(&git.stdout).trim(),
            "commit",
            "{binary} reports commit {commit}, which this repository does not have: {}",
            String::from_utf8_lossy(&git.stderr)
        );
    }
}

// ------------------------------------------------------ completions and man

/// Sources a bash completion script and asks it to complete `words` (the last
/// one being completed); returns the candidates.
fn bash_complete(script: &Path, binary: &str, words: &[&str]) -> Vec<String> {
    const DRIVER: &str = r#"
set -u
source "$1"
spec=$(complete -p "$2") || exit 3
fn=${spec#*-F }
fn=${fn%% *}
shift 2
COMP_WORDS=("$@")
COMP_CWORD=$(( $# - 1 ))
COMP_LINE="$*"
COMP_POINT=${#COMP_LINE}
prev=""
if (( COMP_CWORD > 0 )); then prev=${COMP_WORDS[COMP_CWORD-1]}; fi
"$fn" "${COMP_WORDS[0]}" "${COMP_WORDS[COMP_CWORD]}" "$prev"
printf '%s\n' "${COMPREPLY[@]}"
"#;
    let mut command = Command::new("bash");
    command
        .args(["-c", DRIVER, "bash"])
        .arg(script)
        .arg(binary)
        .arg(binary)
        .args(words);
    let output = run_with_timeout(command, RUN_TIMEOUT);
    output.assert_success();
    output.stdout.lines().map(str::to_owned).collect()
}

#[test]
fn completions_and_man_pages_generate_for_both_binaries() {
    let dir = tempdir();
    let agent_flags = [
        "--config",
        "--check",
        "--ready-file",
        "--log-format",
        "--man",
    ];
    let ctl_words = [
        "roll", "health", "certs", "init", "--fleet", "--output", "--count",
    ];
    for shell in ["bash", "zsh", "fish"] {
        let agent = run_agent(["--completions", shell]);
        let ctl = Ctl::run(["completions", shell]);
        for (binary, output, words) in [
            ("dice-agent", &agent, &agent_flags[..]),
            ("dicectl", &ctl, &ctl_words[..]),
        ] {
            output.assert_success();
            assert_eq!(output.stderr, "", "{binary} {shell}: stderr\n{output}");
            let script = &output.stdout;
            for word in words {
                // fish names long flags without their dashes: `-l config`.
                let word = match shell {
                    "fish" => word.trim_start_matches('-'),
                    _ => word,
                };
                assert!(
                    script.contains(word),
                    "{binary} {shell} completions lack {word}\n{output}"
                );
            }
            let marker = match shell {
                "bash" => "complete -F _".to_owned(),
                "zsh" => format!("#compdef {binary}\n"),
                _ => format!("complete -c {binary} "),
            };
            assert!(
                script.contains(&marker),
                "{binary} {shell} completions lack {marker:?}\n{output}"
            );
        }
    }

    // The bash scripts parse, and complete what a user types.
    let agent_script = dir.path().join("dice-agent.bash");
    let ctl_script = dir.path().join("dicectl.bash");
    std::fs::write(&agent_script, run_agent(["--completions", "bash"]).stdout).expect("write");
    std::fs::write(&ctl_script, Ctl::run(["completions", "bash"]).stdout).expect("write");
    for script in [&agent_script, &ctl_script] {
        let mut check = Command::new("bash");
        check.arg("-n").arg(script);
        run_with_timeout(check, RUN_TIMEOUT).assert_success();
    }
    let cases: [(&Path, &str, &[&str], &[&str]); 6] = [
        (&agent_script, "dice-agent", &["--con"], &["--config"]),
        (
            &agent_script,
            "dice-agent",
            &["--log-format", ""],
            &["text", "json"],
        ),
        (
            &agent_script,
            "dice-agent",
            &["--completions", ""],
            &["bash", "zsh", "fish"],
        ),
        (&ctl_script, "dicectl", &["ro"], &["roll"]),
        (&ctl_script, "dicectl", &["certs", ""], &["init"]),
        (
            &ctl_script,
            "dicectl",
            &["roll", "--output", ""],
            &["table", "json"],
        ),
    ];
    for (script, binary, words, expected) in cases {
        let candidates = bash_complete(script, binary, words);
        for want in expected {
            assert!(
                candidates.iter().any(|candidate| candidate == want),
                "`{binary} {}<TAB>` offers {candidates:?}, not {want}",
                words.join(" ")
            );
        }
    }

    // Man pages: roff, titled with the binary's name, section 1.
    for (binary, output) in [
        ("dice-agent", run_agent(["--man"])),
        ("dicectl", Ctl::run(["man"])),
    ] {
        output.assert_success();
        let page = &output.stdout;
        let title = page
            .lines()
            .find(|line| line.starts_with(".TH "))
            .unwrap_or_else(|| panic!("{binary} man page has no .TH line\n{output}"));
        assert!(
            title.starts_with(&format!(".TH {binary} 1 ")) && title.contains(VERSION),
            "{binary} man page title: {title:?}"
        );
        // Only roff preamble (`.ie`/`.el` string definitions) may precede the title.
        let before_title: Vec<&str> = page.lines().take_while(|line| *line != title).collect();
        assert!(
            before_title
                .iter()
                .all(|line| line.starts_with(".ie ") || line.starts_with(".el ")),
            "{binary} man page: text before .TH: {before_title:?}"
        );
        for section in [".SH NAME", ".SH SYNOPSIS", ".SH OPTIONS", ".SH VERSION"] {
            assert!(
                page.lines().any(|line| line == section),
                "{binary} man page lacks {section}"
            );
        }
        let escaped = binary.replace('-', "\\-");
        assert!(
            page.contains(&format!("{escaped} \\- ")),
            "{binary} man page NAME section"
        );
    }
    assert!(run_agent(["--man"]).stdout.contains("\\-\\-config"));

    // `dicectl man --out DIR` writes every page the top page refers to.
    let man_dir = dir.path().join("man");
    let written = Ctl::run([OsStr::new("man"), OsStr::new("--out"), man_dir.as_os_str()]);
    written.assert_success();
    let listed: Vec<PathBuf> = written.stdout.lines().map(PathBuf::from).collect();
    let top = std::fs::read_to_string(man_dir.join("dicectl.1")).expect("read dicectl.1");
    assert_eq!(
        top,
        Ctl::run(["man"]).stdout,
        "dicectl.1 is what `dicectl man` prints"
    );
    let reference = Regex::new(r"^(dicectl(\\-[a-z]+)+)\(1\)$").expect("regex");
    let mut referenced: Vec<String> = top
        .lines()
        .filter_map(|line| reference.captures(line))
        .map(|captures| captures[1].replace("\\-", "-"))
        .collect();
    referenced.push("dicectl-certs-init".to_owned());
    for name in [
        "dicectl-roll",
        "dicectl-health",
        "dicectl-certs",
        "dicectl-man",
    ] {
        assert!(
            referenced.iter().any(|r| r == name),
            "dicectl.1 lacks {name}(1)"
        );
    }
    assert!(
        !referenced.iter().any(|r| r == "dicectl-help"),
        "dicectl.1 refers to a help page"
    );
    for name in &referenced {
        let path = man_dir.join(format!("{name}.1"));
        assert!(
            listed.contains(&path),
            "{} not listed\n{written}",
            path.display()
        );
        let page = std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("{name}(1) is referred to, but: {error}"));
        let title = page
            .lines()
            .find(|line| line.starts_with(".TH "))
            .unwrap_or("");
        assert!(
            title.starts_with(&format!(".TH {name} 1 ")) && title.contains(VERSION),
            "{name}.1 title: {title:?}"
        );
    }

    // An unknown shell is a usage error.
    run_agent(["--completions", "tcsh"]).assert_code(2);
    Ctl::run(["completions", "tcsh"]).assert_code(2);
}

// ---------------------------------------------------------------- JSON logs

/// Parses every stderr line as one JSON object; panics naming the first that is not.
fn json_lines(agent: &Agent) -> Vec<Map<String, Value>> {
    let logs = agent.logs();
    assert!(!logs.contains('\x1b'), "ANSI escapes in JSON logs\n{logs}");
    logs.lines()
        .enumerate()
        .map(|(index, line)| match serde_json::from_str(line) {
            Ok(Value::Object(object)) => object,
            other => panic!(
                "stderr line {} is not a JSON object ({other:?}): {line:?}\n{}",
                index + 1,
                agent.dump()
            ),
        })
        .collect()
}

/// The lines whose `message` is `message`.
fn with_message<'a>(
    lines: &'a [Map<String, Value>],
    message: &'a str,
) -> impl Iterator<Item = &'a Map<String, Value>> + 'a {
    lines
        .iter()
        .filter(move |line| line.get("message").and_then(Value::as_str) == Some(message))
}

/// The only line whose `message` is `message`.
fn only<'a>(lines: &'a [Map<String, Value>], message: &'a str) -> &'a Map<String, Value> {
    match with_message(lines, message).collect::<Vec<_>>()[..] {
        [line] => line,
        ref found => panic!(
            "expected one {message:?} line, found {}: {found:?}",
            found.len()
        ),
    }
}

fn str_field<'a>(line: &'a Map<String, Value>, key: &str) -> &'a str {
    line.get(key)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string field {key:?} in {line:?}"))
}

// Multi-threaded: the client's connection must keep running (and close)
// while the test thread blocks waiting for the agent to exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line_with_stable_field_names() {
    let dir = tempdir();
    let pki = Pki::new(dir.path());
    let mut agent = Agent::spawn(&AgentConfig::standard(&pki).log_format("json"));
    let addr = agent.mtls_addr();
    let client = Client::mtls(addr, &pki.client_tls())
        .await
        .expect("connect over mTLS");
    client.roll().await.expect("roll");
    let refused = handshake(addr, &pki.client_tls_without_cert()).await;
    assert!(refused.is_err(), "a client without a certificate got in");
    // The RPC line is written once the response is sent; the refusal once the alert is.
    await_ok(SETTLE_TIMEOUT, "the rpc and handshake lines", async || {
        let logs = agent.logs();
        if logs.contains("\"message\":\"rpc\"") && logs.contains("TLS handshake failed") {
            Ok(())
        } else {
            Err(format!("{} lines of log", logs.lines().count()))
        }
    })
    .await;
    drop(client);
    agent.signal(Signal::TERM);
    let status = agent.wait_exit(EXIT_TIMEOUT);
    assert!(
        status.is_some_and(|status| status.success()),
        "exit after SIGTERM: {status:?}\n{}",
        agent.dump()
    );

    let lines = json_lines(&agent);
    let timestamp = Regex::new(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$").expect("regex");
    for line in &lines {
        assert!(
            timestamp.is_match(str_field(line, "timestamp")),
            "timestamp of {line:?}"
        );
        assert!(
            ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&str_field(line, "level")),
            "level of {line:?}"
        );
        assert!(!str_field(line, "target").is_empty(), "target of {line:?}");
        str_field(line, "message");
    }

    let starting = only(&lines, "dice-agent starting");
    assert_eq!(str_field(starting, "level"), "INFO");
    assert_eq!(str_field(starting, "target"), "dice_agent");
    assert_eq!(str_field(starting, "version"), VERSION);
    assert_eq!(str_field(starting, "node"), "test-node");
    assert_eq!(
        str_field(starting, "config"),
        agent.config_path().display().to_string()
    );

    let listening: BTreeMap<&str, (&str, &str)> = with_message(&lines, "listening")
        .map(|line| {
            (
                str_field(line, "listener"),
                (str_field(line, "mode"), str_field(line, "address")),
            )
        })
        .collect();
    let mtls = agent.addr("mtls").to_string();
    let h2c = agent.addr("h2c").to_string();
    let expected: BTreeMap<&str, (&str, &str)> = [
        ("mtls", ("mtls", mtls.as_str())),
        ("h2c", ("h2c", h2c.as_str())),
    ]
    .into();
    assert_eq!(listening, expected, "one `listening` line per listener");

    let certificate = only(&lines, "serving certificate");
    assert_eq!(str_field(certificate, "serial"), pki.server().serial());
    assert!(str_field(certificate, "subject").contains(SERVER_CN));
    assert!(timestamp.is_match(str_field(certificate, "not_after")));
    assert_eq!(
        str_field(certificate, "cert"),
        pki.server().cert.display().to_string()
    );
    only(&lines, "ready");

    // The per-RPC line: event fields flattened into the object; dotted field
    // names (`client.subject`) stay single keys, not nested objects.
    let rpc = with_message(&lines, "rpc")
        .find(|line| line.get("method").and_then(Value::as_str) == Some(ROLL_DIE))
        .unwrap_or_else(|| panic!("no rpc line for {ROLL_DIE}\n{}", agent.dump()));
    assert_eq!(str_field(rpc, "target"), "dice_agent::rpc");
    assert_eq!(str_field(rpc, "level"), "INFO");
    assert_eq!(rpc.get("code"), Some(&Value::from(0)), "{rpc:?}");
    assert_eq!(str_field(rpc, "status"), "Ok");
    assert!(rpc.get("duration_us").is_some_and(Value::is_u64), "{rpc:?}");
    let peer: SocketAddr = str_field(rpc, "peer").parse().expect("peer is an address");
    assert!(peer.ip().is_loopback());
    assert_eq!(str_field(rpc, "listener"), "mtls");
    assert_eq!(
        str_field(rpc, "client.subject"),
        pki.client().summary.subject
    );
    assert!(str_field(rpc, "client.subject").contains(CLIENT_CN));
    assert_eq!(
        str_field(rpc, "client.sans"),
        pki.client().summary.sans.join(",")
    );
    assert!(rpc.get("client").is_none(), "dotted names are not nested");
    assert!(
        rpc.get("client.via_proxy").is_none(),
        "unset fields are left out"
    );

    // A refused handshake, inside the connection's span: `span` is the
    // innermost span's fields plus its `name`, `spans` the whole stack.
    let failed = with_message(&lines, "TLS handshake failed")
        .next()
        .unwrap_or_else(|| panic!("no `TLS handshake failed` line\n{}", agent.dump()));
    assert!(!str_field(failed, "error").is_empty());
    let span = failed
        .get("span")
        .and_then(Value::as_object)
        .unwrap_or_else(|| panic!("no span object in {failed:?}"));
    assert_eq!(str_field(span, "name"), "conn");
    assert_eq!(str_field(span, "listener"), "mtls");
    str_field(span, "peer")
        .parse::<SocketAddr>()
        .expect("span peer is an address");
    assert!(
        failed.get("spans").is_some_and(Value::is_array),
        "{failed:?}"
    );

    let stopping = only(
        &lines,
        "stopping: refusing new connections, draining in-flight RPCs",
    );
    assert_eq!(str_field(stopping, "signal"), "SIGTERM");
    assert!(stopping.contains_key("grace_period"));
    only(&lines, "stopped");
}

#[test]
fn the_log_format_flag_overrides_the_config() {
    let dir = tempdir();
    let pki = Pki::new(dir.path());
    let config = AgentConfig::standard(&pki)
        .log_format("text")
        .arg("--log-format")
        .arg("json");
    let mut agent = Agent::spawn(&config);
    agent.signal(Signal::TERM);
    assert!(agent.wait_exit(EXIT_TIMEOUT).is_some_and(|s| s.success()));
    let lines = json_lines(&agent);
    only(&lines, "ready");
    only(&lines, "stopped");
}
