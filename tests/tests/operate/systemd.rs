//! systemd: readiness and reload notifications (`sd_notify`) as `KEY=VALUE`
//! datagrams, and the unit file, checked with `systemd-analyze`.

use std::collections::BTreeMap;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;

use dice_tests::agent::parse_ready;
use dice_tests::fixtures::workspace_root;
use dice_tests::process::{RUN_TIMEOUT, RunOutput, run_with_timeout};
use dice_tests::{Agent, AgentConfig, Pki, Signal, bins, tempdir};

use super::{EXIT_TIMEOUT, SETTLE_TIMEOUT};

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
    agent.assert_clean_exit(EXIT_TIMEOUT, "after SIGTERM");
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

    // systemd's own checks (scripts/test.sh installs systemd-analyze).
    let version = systemd_version().unwrap_or_else(|| {
        panic!(
            "systemd-analyze not found, and the unit file check needs it: apt-get install \
             systemd (or run ./scripts/test.sh, which installs it)"
        )
    });
    let copy = dir.path().join("dice-agent.service");
    let agent = bins::agent_bin();
    let agent = agent.to_str().expect("a UTF-8 binary path");
    std::fs::write(&copy, text.replace("/usr/bin/dice-agent", agent)).expect("write the unit copy");
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
