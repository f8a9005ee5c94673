//! Certificate rotation benchmark against the real agent: a program that
//! prints numbers, not a timed test. Run it with `scripts/bench-reload.sh`,
//! which builds the release binaries and points `DICE_AGENT_BIN` at them.
//!
//! 1. Latency: from the rename that installs new material to the end of the
//!    first fresh handshake that presents the new certificate, over
//!    [`rotations`] rotations each for a Kubernetes `..data` symlink swap (one
//!    rename switches key and certificate) and for key-then-certificate temp
//!    file renames (timed from the certificate's rename). Fresh handshakes
//!    run back to back, so the resolution is one handshake (printed too).
//! 2. Under load: [`FRESH_TASKS`] tasks roll over a new connection each time
//!    and [`LONG_LIVED_TASKS`] tasks roll on one HTTP/2 connection each while
//!    the certificate rotates [`rotations`] times (alternating rename and
//!    in-place writes); every failed RPC is counted. The goal is 0.
//!
//! The poll timer is off (`reload.poll_interval = "0s"`), so every rotation
//! is noticed by the file watcher. Counts and time are bounded: each rotation
//! must show within [`ROTATION_TIMEOUT`], the whole run within [`BUDGET`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dice_proto::api::RollDieRequest;
use dice_proto::api::dice_service_client::DiceServiceClient;
use dice_tests::client::{handshake, roll_once};
use dice_tests::reuse::counted_channel;
use dice_tests::rotation::{KubeVolume, LiveTls, Replace, await_serial, ca_bundle, tls_secret};
use dice_tests::{Agent, AgentConfig, LeafSpec, Pki, TlsClient, TlsFiles, tempdir};

/// Rotations per measurement, unless `DICE_BENCH_ROTATIONS` says otherwise.
const DEFAULT_ROTATIONS: usize = 100;
/// How long one rotation may take to show before the run is abandoned.
const ROTATION_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the whole run may take.
const BUDGET: Duration = Duration::from_secs(600);
/// Load tasks that open a new TLS connection for every roll.
const FRESH_TASKS: usize = 2;
/// Load tasks that roll on one long-lived HTTP/2 connection each.
const LONG_LIVED_TASKS: usize = 2;
/// The agent's `[reload]` table: file events only.
const EVENTS_ONLY: &str = "[reload]\npoll_interval = \"0s\"\n";

fn rotations() -> usize {
    dice_tests::env_positive("DICE_BENCH_ROTATIONS", DEFAULT_ROTATIONS)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("start the tokio runtime");
    let started = Instant::now();
    match runtime.block_on(async { tokio::time::timeout(BUDGET, run()).await }) {
        Ok(()) => println!("\ntotal time {:.1} s", started.elapsed().as_secs_f64()),
        Err(_) => {
            eprintln!("bench-reload: the run took longer than {BUDGET:?}; abandoned");
            std::process::exit(1);
        }
    }
}

async fn run() {
    let count = rotations();
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split(':').nth(1))
                .map(|model| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    println!("certificate rotation benchmark");
    println!(
        "date {}, {cpus} CPUs ({cpu_model}), agent {}",
        time::OffsetDateTime::now_utc().date(),
        dice_tests::bins::agent_bin().display()
    );
    println!(
        "{count} rotations per measurement; reload.poll_interval = \"0s\" (file events only)\n"
    );

    let (probe, kube) = latency_kube(count).await;
    let renames = latency_renames(count).await;
    println!("rename -> first fresh handshake presenting the new certificate (ms):");
    println!(
        "  {:<44} {}",
        "fresh handshake alone (the resolution)",
        Stats::of(&probe)
    );
    println!(
        "  {:<44} {}",
        "..data symlink swap (one rename)",
        Stats::of(&kube)
    );
    println!(
        "  {:<44} {}",
        "key then cert, temp file + rename each",
        Stats::of(&renames)
    );
    println!();
    under_load(count).await;
}

/// Latency with the files in a Kubernetes-style volume; also returns how long
/// the probe handshakes themselves took.
async fn latency_kube(count: usize) -> (Vec<Duration>, Vec<Duration>) {
    let dir = tempdir();
    let pki = Pki::new(&dir.path().join("pki"));
    let ca = ca_bundle(&[pki.ca_cert()]);
    let mut volume = KubeVolume::new(&dir.path().join("secret"), &tls_secret(pki.server(), &ca));
    let files = volume.live_tls().tls_files();
    let agent = spawn(&pki, files);
    let (addr, tls) = (agent.addr("mtls"), pki.client_tls());

    let mut probes = Vec::new();
    for _ in 0..count {
        let start = Instant::now();
        handshake(addr, &tls).await.expect("a probe handshake");
        probes.push(start.elapsed());
    }
    let mut latencies = Vec::with_capacity(count);
    for index in 0..count {
        let next = pki.issue(&LeafSpec::server(&format!("kube-{index}")));
        let files = tls_secret(&next, &ca);
        let renamed = volume.swap(&files);
        latencies.push(first_handshake_with(addr, &tls, next.serial(), renamed).await);
    }
    (probes, latencies)
}

/// Latency with key and certificate each written to a temp file and renamed
/// over the served one, key first.
async fn latency_renames(count: usize) -> Vec<Duration> {
    let dir = tempdir();
    let pki = Pki::new(&dir.path().join("pki"));
    let live = LiveTls::install(&dir.path().join("live"), pki.server(), &[pki.ca_cert()]);
    let agent = spawn(&pki, live.tls_files());
    let (addr, tls) = (agent.addr("mtls"), pki.client_tls());
    let mut latencies = Vec::with_capacity(count);
    for index in 0..count {
        let next = pki.issue(&LeafSpec::server(&format!("rename-{index}")));
        live.write_key(&next, Replace::Rename);
        let renamed = Instant::now();
        live.write_cert(&next, Replace::Rename);
        latencies.push(first_handshake_with(addr, &tls, next.serial(), renamed).await);
    }
    latencies
}

/// Runs fresh handshakes back to back until one presents `serial`, and
/// returns the time from `since` to the end of that handshake.
async fn first_handshake_with(
    addr: SocketAddr,
    tls: &TlsClient,
    serial: &str,
    since: Instant,
) -> Duration {
    loop {
        match handshake(addr, tls).await {
            Ok(shook) if shook.server_cert.serial == serial => return since.elapsed(),
            Ok(_) => {}
            Err(error) => panic!("a probe handshake failed during a rotation: {error}"),
        }
        if since.elapsed() > ROTATION_TIMEOUT {
            panic!("serial {serial} not presented within {ROTATION_TIMEOUT:?} of the rename");
        }
    }
}

/// What the load tasks of one kind did.
#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    failed: AtomicUsize,
    errors: std::sync::Mutex<BTreeMap<String, usize>>,
}

impl Tally {
    fn record<E: ToString>(&self, result: Result<i32, E>) {
        match result {
            Ok(_) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut errors) = self.errors.lock() {
                    *errors.entry(error.to_string()).or_default() += 1;
                }
            }
        }
    }

    fn report(&self, what: &str) {
        println!(
            "  {what:<44} {:>7} ok {:>4} failed",
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed)
        );
        if let Ok(errors) = self.errors.lock() {
            for (error, times) in errors.iter() {
                println!("      {times} x {error}");
            }
        }
    }
}

/// Rolls continuously over fresh and long-lived connections while the
/// certificate rotates `count` times; prints the RPCs that failed.
async fn under_load(count: usize) {
    let dir = tempdir();
    let pki = Pki::new(&dir.path().join("pki"));
    let live = LiveTls::install(&dir.path().join("live"), pki.server(), &[pki.ca_cert()]);
    let agent = spawn(&pki, live.tls_files());
    let (addr, tls) = (agent.addr("mtls"), pki.client_tls());

    let stop = Arc::new(AtomicBool::new(false));
    let fresh = Arc::new(Tally::default());
    let long_lived = Arc::new(Tally::default());
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..FRESH_TASKS {
        let (stop, fresh, tls) = (stop.clone(), fresh.clone(), tls.clone());
        tasks.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                fresh.record(roll_once(addr, &tls).await);
            }
        });
    }
    let mut connections = Vec::new();
    for _ in 0..LONG_LIVED_TASKS {
        let (channel, made) = counted_channel(addr, &tls)
            .await
            .expect("open a long-lived channel");
        connections.push(made);
        let (stop, long_lived) = (stop.clone(), long_lived.clone());
        let mut dice = DiceServiceClient::new(channel);
        tasks.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let result = dice.roll_die(RollDieRequest {}).await;
                long_lived.record(result.map(|response| response.into_inner().value));
            }
        });
    }

    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for index in 0..count {
        let next = pki.issue(&LeafSpec::server(&format!("load-{index}")));
        let how = if index % 2 == 0 {
            Replace::Rename
        } else {
            Replace::InPlace
        };
        let rotation = Instant::now();
        live.rotate(&next, how);
        tokio::time::timeout(ROTATION_TIMEOUT, await_serial(addr, &tls, next.serial()))
            .await
            .unwrap_or_else(|_| panic!("rotation {index} not served within {ROTATION_TIMEOUT:?}"));
        slowest = slowest.max(rotation.elapsed());
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    while tasks.join_next().await.is_some() {}

    println!(
        "failed RPCs during {count} rotations under continuous load ({:.1} s; slowest rotation to show {:.0} ms):",
        elapsed.as_secs_f64(),
        slowest.as_secs_f64() * 1000.0
    );
    fresh.report(&format!("{FRESH_TASKS} tasks, a new connection per roll"));
    long_lived.report(&format!(
        "{LONG_LIVED_TASKS} tasks, one long-lived connection each"
    ));
    let made: Vec<usize> = connections
        .iter()
        .map(|made| made.load(Ordering::Relaxed))
        .collect();
    println!(
        "  connections made by the long-lived channels: {made:?} (1 each means none was lost)"
    );
    let warnings = agent
        .logs()
        .lines()
        .filter(|line| line.contains("certificate reload rejected"))
        .count();
    println!("  rejected reloads logged by the agent (files caught mid-write): {warnings}");
}

fn spawn(pki: &Pki, files: TlsFiles) -> Agent {
    Agent::spawn(
        &AgentConfig::standard(pki)
            .tls(files)
            .log_level("info")
            .extra(EVENTS_ONLY),
    )
}

/// Median, 90th percentile, minimum and maximum of a sample.
struct Stats {
    sorted: Vec<Duration>,
}

impl Stats {
    fn of(sample: &[Duration]) -> Stats {
        let mut sorted = sample.to_vec();
        sorted.sort();
        Stats { sorted }
    }

    fn median(&self) -> Duration {
        let n = self.sorted.len();
        if n % 2 == 1 {
            self.sorted[n / 2]
        } else {
            (self.sorted[n / 2 - 1] + self.sorted[n / 2]) / 2
        }
    }

    /// Nearest rank.
    fn percentile(&self, p: usize) -> Duration {
        let rank = (self.sorted.len() * p).div_ceil(100).max(1);
        self.sorted[rank - 1]
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        match (self.sorted.first(), self.sorted.last()) {
            (Some(min), Some(max)) => write!(
                f,
                "median {:6.1}  p90 {:6.1}  min {:6.1}  max {:6.1}  (n={})",
                ms(self.median()),
                ms(self.percentile(90)),
                ms(*min),
                ms(*max),
                self.sorted.len()
            ),
            _ => write!(f, "no sample"),
        }
    }
}
