//! `dicectl roll --all` over a 1000-entry fleet file: a program that prints
//! numbers, not a timed test. Run it with `scripts/bench-fleet.sh`, which
//! builds the release binaries and points `DICE_AGENT_BIN` and `DICECTL_BIN`
//! at them.
//!
//! [`AGENTS`] real agents (release build, log level `info`) serve on
//! 127.0.0.1; the fleet file lists [`NODES`] entries spread across them round
//! robin, so every entry is its own TCP connection, TLS handshake (with
//! client certificate) and HTTP/2 connection, as with 1000 separate hosts.
//! Each run is one `dicectl` process, timed from spawn to exit; its peak
//! resident memory and CPU time come from GNU time (`/usr/bin/time`), the
//! agents' CPU time from `/proc/PID/stat`. On a machine shared with other
//! work the wall time swings; the CPU time, which bounds it from below (CPU
//! seconds / cores), does not. The goal is a wall time of 1.5 s or less on a
//! 2-core machine. `DICE_BENCH_RUNS=N` changes the number of runs (default
//! [`DEFAULT_RUNS`]).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dice_tests::bins;
use dice_tests::fleet::FleetFile;
use dice_tests::{Agent, AgentConfig, ListenerConfig, Pki, tempdir};
use serde_json::Value;

/// Agents serving the fleet.
const AGENTS: usize = 4;
/// Entries in the fleet file.
const NODES: usize = 1000;
/// Timed runs, unless `DICE_BENCH_RUNS` says otherwise.
const DEFAULT_RUNS: usize = 10;
/// GNU time, for the peak resident set size of the child.
const GNU_TIME: &str = "/usr/bin/time";

fn runs() -> usize {
    dice_tests::env_positive("DICE_BENCH_RUNS", DEFAULT_RUNS)
}

/// One timed `dicectl` run.
struct Run {
    wall: Duration,
    /// Peak RSS, and user + system CPU seconds, of the dicectl process.
    usage: Option<(u64, f64)>,
    /// CPU seconds the agents spent during the run.
    agents_cpu: f64,
    document: Value,
}

/// User + system CPU seconds of process `pid` so far (all its threads).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after ')'.
    let ticks: u64 =
        fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0);
    // /proc reports in USER_HZ, which Linux fixes at 100 for user space.
    ticks as f64 / 100.0
}

fn agents_cpu(agents: &[Agent]) -> f64 {
    agents.iter().map(|agent| cpu_seconds(agent.pid())).sum()
}

fn run_ctl(dir: &Path, agents: &[Agent], args: &[&str]) -> Run {
    let ctl = bins::ctl_bin();
    let rss_file = dir.join("rss");
    let gnu_time = Path::new(GNU_TIME).is_file();
    let mut command = if gnu_time {
        let mut command = Command::new(GNU_TIME);
        command
            .arg("-f")
            .arg("%M %U %S")
            .arg("-o")
            .arg(&rss_file)
            .arg(&ctl);
        command
    } else {
        Command::new(&ctl)
    };
    command
        .args(args)
        .current_dir(dir)
        .env_remove("DICECTL_FLEET")
        .stdin(Stdio::null())
        .stderr(Stdio::inherit());
    let agents_before = agents_cpu(agents);
    let start = Instant::now();
    let output = command.output().expect("run dicectl");
    let wall = start.elapsed();
    let agents_cpu = agents_cpu(agents) - agents_before;
    assert!(
        output.status.success(),
        "dicectl {args:?} failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout)
    );
    let document: Value = serde_json::from_slice(&output.stdout).expect("dicectl prints JSON");
    let usage = gnu_time
        .then(|| std::fs::read_to_string(&rss_file).ok())
        .flatten()
        .and_then(|text| {
            let fields: Vec<&str> = text.split_whitespace().collect();
            let rss = fields.first()?.parse().ok()?;
            let user: f64 = fields.get(1)?.parse().ok()?;
            let system: f64 = fields.get(2)?.parse().ok()?;
            Some((rss, user + system))
        });
    Run {
        wall,
        usage,
        agents_cpu,
        document,
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn main() {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let dir = tempdir();
    let pki = Pki::new(&dir.path().join("pki"));
    let agents: Vec<Agent> = (0..AGENTS)
        .map(|i| {
            Agent::spawn(
                &AgentConfig::new(&format!("bench-{i}"))
                    .tls(pki.server_tls())
                    .listener(ListenerConfig::mtls("mtls"))
                    .log_level("info"),
            )
        })
        .collect();
    let mut fleet = FleetFile::new(&pki).timeout("5s");
    for i in 0..NODES {
        let agent = &agents[i % AGENTS];
        fleet = fleet.node(&format!("node-{:04}", i + 1), agent.mtls_addr());
    }
    let fleet_path = dir.path().join("fleet.toml");
    fleet.write(&fleet_path);
    let fleet_arg = fleet_path.to_str().expect("UTF-8 temp path");

    println!(
        "dicectl fleet fan-out: {NODES} fleet entries over {AGENTS} agents, {cores} cores, {}",
        bins::ctl_bin().display()
    );
    for (command, args) in [
        (
            "roll --all",
            &["--fleet", fleet_arg, "--output", "json", "roll", "--all"][..],
        ),
        (
            "health --all",
            &["--fleet", fleet_arg, "--output", "json", "health"][..],
        ),
    ] {
        // One untimed run first: page cache, agents' first accepts.
        let _ = run_ctl(dir.path(), &agents, args);
        let mut results: Vec<Run> = (0..runs())
            .map(|_| run_ctl(dir.path(), &agents, args))
            .collect();
        for run in &results {
            let summary = &run.document["summary"];
            assert_eq!(
                summary["ok"].as_u64(),
                Some(NODES as u64),
                "every node must succeed: {summary}"
            );
        }
        results.sort_by_key(|run| run.wall);
        let median = &results[results.len() / 2];
        let max = &results[results.len() - 1];
        let usage: Vec<(u64, f64)> = results.iter().filter_map(|run| run.usage).collect();
        let (rss_text, cpu) = match usage.iter().map(|(rss, _)| *rss).max() {
            Some(max) => (
                format!("{:.1} MiB", max as f64 / 1024.0),
                usage.iter().map(|(_, cpu)| cpu).sum::<f64>() / usage.len() as f64,
            ),
            None => (
                "n/a (install GNU time: apt-get install time)".to_owned(),
                f64::NAN,
            ),
        };
        let agents = results.iter().map(|run| run.agents_cpu).sum::<f64>() / results.len() as f64;
        let summary = &median.document["summary"];
        println!(
            "{command:>13}: wall median {:.0} ms, min {:.0} ms, max {:.0} ms over {} runs; peak RSS {rss_text}",
            ms(median.wall),
            ms(results[0].wall),
            ms(max.wall),
            results.len(),
        );
        println!(
            "{:>13}  CPU per run: dicectl {:.2} s, agents {:.2} s (floor on {cores} idle cores: {:.0} ms); per-node latency p50 {} ms, max {} ms (median run)",
            "",
            cpu,
            agents,
            (cpu + agents) / cores as f64 * 1000.0,
            summary["latency_p50_ms"],
            summary["latency_max_ms"],
        );
    }
    drop(agents);
}
