//! The performance suite: one command (`scripts/bench.sh`) that measures, in
//! one run and side by side on loopback, the agent over mTLS and over h2c,
//! the agent behind nginx (`config/nginx.conf`), and `dice-reference` (bare
//! tonic from the same proto, over TLS and h2c) as the ceiling; at 1x1, 4x16
//! and 16x16 connections x streams and with a new connection per RPC; plus
//! RSA 2048 handshakes, the agent with RPC logging off (`warn`), idle RSS,
//! RSS with 10,000 idle mTLS connections, and start-to-ready time.
//!
//! Load comes from `dicectl bench` (release build), on the same cores as the
//! servers. The machines are shared and noisy, so each cell runs several
//! times, interleaved (every cell of run 1, then of run 2, ...), and each
//! comparison is the median of the per-run ratios to the reference measured
//! right beside it. It prints the tables and rewrites the `## Performance
//! suite` section of BENCHMARKS.md. A run whose `dicectl bench` failed or
//! counted errors is a failed cell: it counts in no median, every target that
//! uses it is unmet, and the suite exits 1 once the tables are out.
//!
//! `DICE_BENCH_RUNS` (default 5), `DICE_BENCH_SECS` (seconds per cell,
//! default 3), `DICE_BENCH_IDLE` (idle connections, default 10000),
//! `DICE_BENCH_WRITE=0` (do not touch BENCHMARKS.md).
//!
//! - `procs`: the servers as child processes, ready files, RSS.
//! - `load`: one `dicectl bench` run; `idle`: memory per idle connection.
//! - `report`: Markdown tables and the BENCHMARKS.md section.

mod idle;
mod load;
mod procs;
mod report;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use dice_tests::fixtures::workspace_root;
use dice_tests::pki::Identity;
use dice_tests::{AgentConfig, KeyKind, LeafSpec, ListenerConfig, Mode, Pki, bins, tempdir};
use load::{Cell, Certs, Shape};
use procs::{Proc, settled_rss};
use report::{MatrixRow, TargetRow};

/// The servers and transports a cell can load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Target {
    AgentMtls,
    AgentH2c,
    Nginx,
    RefTls,
    RefH2c,
    QuietMtls,
    QuietH2c,
    AgentRsa,
    RefRsa,
}

impl Target {
    fn label(self) -> &'static str {
        match self {
            Self::AgentMtls => "agent mTLS",
            Self::AgentH2c => "agent h2c",
            Self::Nginx => "nginx mTLS -> agent h2c",
            Self::RefTls => "reference TLS",
            Self::RefH2c => "reference h2c",
            Self::QuietMtls => "agent mTLS, log warn",
            Self::QuietH2c => "agent h2c, log warn",
            Self::AgentRsa => "agent mTLS, RSA 2048",
            Self::RefRsa => "reference TLS, RSA 2048",
        }
    }

    /// What this target is compared with in the same run.
    fn reference(self) -> Option<Target> {
        match self {
            Self::AgentMtls | Self::Nginx => Some(Self::RefTls),
            Self::AgentH2c => Some(Self::RefH2c),
            Self::QuietMtls => Some(Self::RefTls),
            Self::QuietH2c => Some(Self::RefH2c),
            Self::AgentRsa => Some(Self::RefRsa),
            Self::RefTls | Self::RefH2c | Self::RefRsa => None,
        }
    }
}

const ONE: Shape = Shape {
    name: "1x1",
    connections: 1,
    streams: 1,
    new_connection: false,
};
const MID: Shape = Shape {
    name: "4x16",
    connections: 4,
    streams: 16,
    new_connection: false,
};
const WIDE: Shape = Shape {
    name: "16x16",
    connections: 16,
    streams: 16,
    new_connection: false,
};
const NEW: Shape = Shape {
    name: "new conn x8",
    connections: 8,
    streams: 1,
    new_connection: true,
};

fn env_number(name: &str, default: u64) -> u64 {
    dice_tests::env_positive(name, default)
}

fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// Raises the open-files soft limit to the hard limit: the idle-connection
/// test holds 10,000 client sockets in this process.
fn raise_nofile() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if let Err(error) = setrlimit(Resource::Nofile, raised) {
            eprintln!("warning: cannot raise RLIMIT_NOFILE: {error}");
        }
    }
}

fn agent(name: &str, config: &AgentConfig) -> Proc {
    let dir = tempfile::Builder::new()
        .prefix("dice-bench-agent-")
        .tempdir()
        .expect("temp dir");
    let path = dir.path().join("node.toml");
    std::fs::write(&path, config.to_toml()).expect("write the config");
    let args = vec!["--config".to_owned(), path.display().to_string()];
    Proc::spawn_in(name, dir, &bins::agent_bin(), &args)
}

fn reference(name: &str, identity: &Identity, ca: &Path) -> Proc {
    let args: Vec<String> = [
        "--h2c",
        "127.0.0.1:0",
        "--tls",
        "127.0.0.1:0",
        "--cert",
        &identity.cert.display().to_string(),
        "--key",
        &identity.key.display().to_string(),
        "--client-ca",
        &ca.display().to_string(),
    ]
    .iter()
    .map(|arg| (*arg).to_owned())
    .collect();
    Proc::spawn(name, &bins::reference_bin(), &args)
}

fn bench_config(pki: &Pki, node: &str, level: &str) -> AgentConfig {
    AgentConfig::new(node)
        .tls(pki.server_tls())
        .listener(ListenerConfig::mtls("mtls"))
        .listener(ListenerConfig::h2c("h2c"))
        .log_level(level)
        .limit("max_connections", "20000")
}

/// Machine facts for the report.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map_or("unknown CPU", |(_, model)| model.trim())
        .to_owned();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|value| {
            value
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cores}-core {model}, {mem_gib:.0} GiB, Linux {}",
        kernel.trim()
    )
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .to_owned()
}

fn main() {
    let runs = env_number("DICE_BENCH_RUNS", 5) as usize;
    let duration = Duration::from_secs(env_number("DICE_BENCH_SECS", 3));
    let warmup = Duration::from_millis(500);
    let idle_count = env_number("DICE_BENCH_IDLE", 10_000) as usize;
    let starts = 10;
    raise_nofile();
    let load_before = load_average();
    println!(
        "performance suite: {runs} runs x {}s per cell, {}",
        duration.as_secs(),
        machine()
    );

    let dir = tempdir();
    let pki = Pki::new(&dir.path().join("pki"));
    let rsa_server = pki.issue(&LeafSpec::server("server-rsa").key(KeyKind::Rsa2048));
    let rsa_client = pki.issue(&LeafSpec::client("client-rsa").key(KeyKind::Rsa2048));
    let certs = Certs {
        ca: pki.ca_cert(),
        cert: &pki.client().cert,
        key: &pki.client().key,
    };
    let rsa_certs = Certs {
        ca: pki.ca_cert(),
        cert: &rsa_client.cert,
        key: &rsa_client.key,
    };

    // Start to ready, and idle RSS once ready, over several starts.
    let mut agent_ready = Vec::new();
    let mut agent_idle = Vec::new();
    let mut ref_ready = Vec::new();
    let mut ref_idle = Vec::new();
    for i in 0..starts {
        let started = agent(&format!("start-{i}"), &bench_config(&pki, "start", "info"));
        agent_ready.push(started.start_to_ready.as_secs_f64() * 1000.0);
        agent_idle.push(settled_rss(|| started.rss_kib()) as f64);
        drop(started);
        let started = reference(&format!("ref-start-{i}"), pki.server(), pki.ca_cert());
        ref_ready.push(started.start_to_ready.as_secs_f64() * 1000.0);
        ref_idle.push(settled_rss(|| started.rss_kib()) as f64);
    }
    println!(
        "start to ready: agent {:.1} ms, reference {:.1} ms; idle RSS: agent {:.0} KiB, reference {:.0} KiB",
        median(agent_ready.clone()),
        median(ref_ready.clone()),
        median(agent_idle.clone()),
        median(ref_idle.clone())
    );

    // The servers for the matrix.
    let main_agent = agent(
        "agent",
        &bench_config(&pki, "bench", "info").listener(ListenerConfig::h2c("proxy").trusted_proxy()),
    );
    let quiet_agent = agent("quiet agent", &bench_config(&pki, "quiet", "warn"));
    let rsa_agent = agent(
        "rsa agent",
        &AgentConfig::new("rsa")
            .tls(pki.tls_files_for(&rsa_server))
            .listener(ListenerConfig::mtls("mtls"))
            .log_level("info"),
    );
    let reference_p256 = reference("reference", pki.server(), pki.ca_cert());
    let reference_rsa = reference("reference rsa", &rsa_server, pki.ca_cert());
    let proxy = main_agent.addr("proxy");
    let nginx = dice_tests::nginx::Nginx::spawn(&pki, [proxy, proxy]);

    let address = |target: Target| -> String {
        match target {
            Target::AgentMtls => main_agent.first(Mode::Mtls).to_string(),
            Target::AgentH2c => format!("h2c://{}", main_agent.addr("h2c")),
            Target::Nginx => nginx.addr().to_string(),
            Target::RefTls => reference_p256.first(Mode::Mtls).to_string(),
            Target::RefH2c => format!("h2c://{}", reference_p256.first(Mode::H2c)),
            Target::QuietMtls => quiet_agent.first(Mode::Mtls).to_string(),
            Target::QuietH2c => format!("h2c://{}", quiet_agent.first(Mode::H2c)),
            Target::AgentRsa => rsa_agent.first(Mode::Mtls).to_string(),
            Target::RefRsa => reference_rsa.first(Mode::Mtls).to_string(),
        }
    };
    // The process whose CPU time a cell's RPCs cost (behind nginx: the agent's).
    let server = |target: Target| -> &Proc {
        match target {
            Target::AgentMtls | Target::AgentH2c | Target::Nginx => &main_agent,
            Target::QuietMtls | Target::QuietH2c => &quiet_agent,
            Target::AgentRsa => &rsa_agent,
            Target::RefTls | Target::RefH2c => &reference_p256,
            Target::RefRsa => &reference_rsa,
        }
    };
    use Target::*;
    let matrix: [(Shape, &[Target]); 4] = [
        (ONE, &[AgentMtls, RefTls, AgentH2c, RefH2c, Nginx]),
        (
            MID,
            &[
                AgentMtls, RefTls, QuietMtls, AgentH2c, RefH2c, QuietH2c, Nginx,
            ],
        ),
        (WIDE, &[AgentMtls, RefTls, AgentH2c, RefH2c, Nginx]),
        (
            NEW,
            &[AgentMtls, RefTls, AgentH2c, RefH2c, Nginx, AgentRsa, RefRsa],
        ),
    ];
    let mut results: HashMap<(Target, &'static str), Vec<Cell>> = HashMap::new();
    let agent_cpu_before = procs::cpu_seconds(main_agent.pid());
    for run in 1..=runs {
        for (shape, targets) in &matrix {
            for &target in *targets {
                let certs = if matches!(target, AgentRsa | RefRsa) {
                    &rsa_certs
                } else {
                    &certs
                };
                let pid = server(target).pid();
                let cpu_before = procs::cpu_seconds(pid);
                let mut cell = load::bench(&address(target), certs, *shape, duration, warmup);
                let rpcs = cell.rps * (duration + warmup).as_secs_f64();
                cell.cpu_us = (procs::cpu_seconds(pid) - cpu_before) * 1e6 / rpcs.max(1.0);
                println!(
                    "run {run}/{runs} {:>11} {:<26} {:>9.0} req/s {:>8.1} conn/s  p50 {:>9}  p99 {:>9}  cpu/rpc {:>5.1} µs  errors {}",
                    shape.name,
                    target.label(),
                    cell.rps,
                    cell.hps,
                    report::micros(cell.p50),
                    report::micros(cell.p99),
                    cell.cpu_us,
                    cell.errors
                );
                results.entry((target, shape.name)).or_default().push(cell);
            }
        }
    }
    let agent_cpu = procs::cpu_seconds(main_agent.pid()) - agent_cpu_before;
    let agent_log_bytes = main_agent.log().len();
    drop(nginx);
    drop((
        main_agent,
        quiet_agent,
        rsa_agent,
        reference_p256,
        reference_rsa,
    ));

    // Memory per idle mTLS connection, on fresh servers.
    let client_config = Arc::new(pki.client_tls().rustls_config().expect("client config"));
    let idle_agent = agent("idle agent", &bench_config(&pki, "idle", "info"));
    let agent_mem = idle::measure(
        &idle_agent,
        idle_agent.first(Mode::Mtls),
        client_config.clone(),
        idle_count,
    );
    drop(idle_agent);
    let idle_reference = reference("idle reference", pki.server(), pki.ca_cert());
    let ref_mem = idle::measure(
        &idle_reference,
        idle_reference.first(Mode::Mtls),
        client_config,
        idle_count,
    );
    drop(idle_reference);
    println!(
        "{idle_count} idle mTLS connections: agent {} -> {} KiB ({:.1} KiB each), reference {} -> {} KiB ({:.1} KiB each)",
        agent_mem.before_kib,
        agent_mem.after_kib,
        agent_mem.per_connection_kib(),
        ref_mem.before_kib,
        ref_mem.after_kib,
        ref_mem.per_connection_kib()
    );

    // Medians and ratios.
    let cells = |target: Target, shape: Shape| -> &Vec<Cell> {
        results
            .get(&(target, shape.name))
            .unwrap_or_else(|| panic!("no results for {target:?} {}", shape.name))
    };
    // Failed cells count in no median and no ratio; a target that uses one is unmet.
    let metric_median = |target, shape, metric: fn(&Cell) -> f64| {
        median(
            cells(target, shape)
                .iter()
                .filter(|cell| !cell.failed)
                .map(metric)
                .collect(),
        )
    };
    let ratio = |target, base, shape, metric: fn(&Cell) -> f64| {
        median(
            cells(target, shape)
                .iter()
                .zip(cells(base, shape))
                .filter(|(a, b)| !a.failed && !b.failed)
                .map(|(a, b)| metric(a) / metric(b))
                .collect(),
        )
    };
    let failed_runs = |target, shape| {
        cells(target, shape)
            .iter()
            .filter(|cell| cell.failed)
            .count()
    };
    let clean = |targets: &[Target], shape| targets.iter().all(|&t| failed_runs(t, shape) == 0);
    let rps = |cell: &Cell| cell.rps;
    let hps = |cell: &Cell| cell.hps;
    let p99 = |cell: &Cell| cell.p99;

    let mut targets = Vec::new();
    let mut throughput = |what: &str, agent: Target, base: Target, floor: f64| {
        let r = ratio(agent, base, MID, rps);
        targets.push(TargetRow {
            what: what.to_owned(),
            agent: format!(
                "{} req/s",
                report::thousands(metric_median(agent, MID, rps))
            ),
            reference: format!("{} req/s", report::thousands(metric_median(base, MID, rps))),
            ratio: format!("{r:.2}"),
            target: format!(">= {floor:.2}"),
            met: r >= floor && clean(&[agent, base], MID),
        });
    };
    throughput(
        "throughput at 4x16, agent mTLS vs reference TLS",
        AgentMtls,
        RefTls,
        0.90,
    );
    throughput(
        "throughput at 4x16, agent h2c vs reference h2c",
        AgentH2c,
        RefH2c,
        0.95,
    );
    for (what, agent, base) in [
        ("p99 latency at 4x16, mTLS", AgentMtls, RefTls),
        ("p99 latency at 4x16, h2c", AgentH2c, RefH2c),
    ] {
        let r = ratio(agent, base, MID, p99);
        targets.push(TargetRow {
            what: what.to_owned(),
            agent: report::micros(metric_median(agent, MID, p99)),
            reference: report::micros(metric_median(base, MID, p99)),
            ratio: format!("{r:.2}"),
            target: "<= 1.20".to_owned(),
            met: r <= 1.2 && clean(&[agent, base], MID),
        });
    }
    for (what, agent, base, floor) in [
        (
            "full mTLS handshakes/s, ECDSA P-256 (new connection per RPC)",
            AgentMtls,
            RefTls,
            1500.0,
        ),
        (
            "full mTLS handshakes/s, RSA 2048 (new connection per RPC)",
            AgentRsa,
            RefRsa,
            500.0,
        ),
    ] {
        let value = metric_median(agent, NEW, hps);
        targets.push(TargetRow {
            what: what.to_owned(),
            agent: format!("{}/s", report::thousands(value)),
            reference: format!("{}/s", report::thousands(metric_median(base, NEW, hps))),
            ratio: format!("{:.2}", ratio(agent, base, NEW, hps)),
            target: format!(">= {}/s", report::thousands(floor)),
            met: value >= floor && clean(&[agent, base], NEW),
        });
    }
    for (what, on, off) in [
        (
            "RPC logging cost at 4x16, mTLS: log info vs warn",
            AgentMtls,
            QuietMtls,
        ),
        (
            "RPC logging cost at 4x16, h2c: log info vs warn",
            AgentH2c,
            QuietH2c,
        ),
    ] {
        let r = ratio(on, RefTls, MID, rps) / ratio(off, RefTls, MID, rps);
        let r = if matches!(on, AgentH2c) {
            ratio(on, RefH2c, MID, rps) / ratio(off, RefH2c, MID, rps)
        } else {
            r
        };
        targets.push(TargetRow {
            what: what.to_owned(),
            agent: format!("{} req/s", report::thousands(metric_median(on, MID, rps))),
            reference: format!(
                "{} req/s (warn)",
                report::thousands(metric_median(off, MID, rps))
            ),
            ratio: format!("{r:.2}"),
            target: ">= 0.90".to_owned(),
            met: r >= 0.90 && clean(&[on, off, RefTls, RefH2c], MID),
        });
    }
    let idle_agent_kib = median(agent_idle);
    targets.push(TargetRow {
        what: "idle RSS once ready".to_owned(),
        agent: format!("{:.1} MiB", idle_agent_kib / 1024.0),
        reference: format!("{:.1} MiB", median(ref_idle) / 1024.0),
        ratio: "-".to_owned(),
        target: "<= 8 MiB".to_owned(),
        met: idle_agent_kib <= 8.0 * 1024.0,
    });
    targets.push(TargetRow {
        what: format!("RSS per idle mTLS connection ({idle_count} open)"),
        agent: format!(
            "{:.1} KiB ({:.0} MiB in all)",
            agent_mem.per_connection_kib(),
            agent_mem.after_kib as f64 / 1024.0
        ),
        reference: format!(
            "{:.1} KiB ({:.0} MiB in all)",
            ref_mem.per_connection_kib(),
            ref_mem.after_kib as f64 / 1024.0
        ),
        ratio: "-".to_owned(),
        target: "<= 40 KiB".to_owned(),
        met: agent_mem.per_connection_kib() <= 40.0 && agent_mem.opened == idle_count,
    });
    let ready_ms = median(agent_ready);
    targets.push(TargetRow {
        what: "start to ready (spawn to ready file)".to_owned(),
        agent: format!("{ready_ms:.1} ms"),
        reference: format!("{:.1} ms", median(ref_ready)),
        ratio: "-".to_owned(),
        target: "< 20 ms".to_owned(),
        met: ready_ms < 20.0,
    });

    let mut rows = Vec::new();
    for (shape, list) in &matrix {
        for &target in *list {
            let all = cells(target, *shape);
            let metric = if shape.new_connection { hps } else { rps };
            let values: Vec<f64> = (all.iter())
                .filter(|cell| !cell.failed)
                .map(metric)
                .collect();
            rows.push(MatrixRow {
                shape: shape.name.to_owned(),
                server: target.label().to_owned(),
                rate: median(values.clone()),
                range: if values.is_empty() {
                    (f64::NAN, f64::NAN)
                } else {
                    (
                        values.iter().copied().fold(f64::INFINITY, f64::min),
                        values.iter().copied().fold(0.0, f64::max),
                    )
                },
                p50: metric_median(target, *shape, |cell| cell.p50),
                p99: metric_median(target, *shape, p99),
                cpu_us: metric_median(target, *shape, |cell| cell.cpu_us),
                cpu_ratio: target
                    .reference()
                    .map(|base| ratio(target, base, *shape, |cell| cell.cpu_us)),
                ratio: target
                    .reference()
                    .map(|base| ratio(target, base, *shape, metric)),
                errors: all.iter().map(|cell| cell.errors).sum(),
                failed_runs: failed_runs(target, *shape),
            });
        }
    }

    let failed_cells: usize = rows.iter().map(|row| row.failed_runs).sum();
    let load_after = load_average();
    let date = time::OffsetDateTime::now_utc().date();
    let mut section = String::new();
    let _ = writeln!(section, "{}\n", report::HEADING);
    let _ = writeln!(
        section,
        "Measured {date} with `./scripts/bench.sh` (release binaries, `tests/benches/suite/`) on a {}; \
         load average {load_before} at the start and {load_after} at the end. Load comes from `dicectl bench` \
         on the same cores. {runs} runs, each cell {}s after a {} ms warm-up, interleaved; values are \
         medians over the runs, and each ratio is the median of the per-run ratios to the server \
         measured right beside it in the same run (`dice-reference`: bare tonic from the same proto, \
         TLS with client certificates verified, or h2c). A run whose `dicectl bench` failed or counted \
         errors is a failed cell: left out of the medians, and every target that uses it is unmet. \
         ECDSA P-256 certificates unless marked RSA 2048 \
         (RSA leaf keys for both ends, P-256 CA). Agents log every RPC at `info` to a file unless marked \
         `log warn`; over the matrix the main agent used {agent_cpu:.1} s of CPU and wrote {:.0} MiB of log.\n",
        machine(),
        duration.as_secs(),
        warmup.as_millis(),
        agent_log_bytes as f64 / 1024.0 / 1024.0,
    );
    let _ = writeln!(section, "{}", report::targets_table(&targets));
    let _ = writeln!(
        section,
        "Every cell (`new conn x8`: 8 loops each opening a connection, with a full handshake, for every RPC; \
         its rate is connections per second; p50 and p99 include the connection set-up):\n"
    );
    let _ = write!(section, "{}", report::matrix_table(&rows));
    println!("\n{section}");
    if std::env::var("DICE_BENCH_WRITE").map_or(true, |value| value != "0") {
        let path = workspace_root().join("BENCHMARKS.md");
        report::write_section(&path, &section)
            .unwrap_or_else(|error| panic!("write {}: {error}", path.display()));
        println!(
            "wrote the {} section of {}",
            report::HEADING,
            path.display()
        );
    }
    if failed_cells > 0 {
        eprintln!(
            "bench: {failed_cells} cells failed (dicectl bench failed or counted errors; see \
             `failed cell:` above): their targets are unmet"
        );
        std::process::exit(1);
    }
}
