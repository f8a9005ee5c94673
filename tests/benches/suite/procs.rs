//! The servers under test, as child processes: started with a ready file
//! (timed from spawn to the file's appearance, polled every 100 µs), measured
//! through `/proc/PID/status`, killed and reaped on drop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dice_tests::agent::parse_ready;
use dice_tests::{BoundListener, Mode};
use tempfile::TempDir;

/// How often the ready file is looked for: fine enough to time a start of a few milliseconds.
const READY_POLL: Duration = Duration::from_micros(100);
/// How long a server may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A running server.
pub struct Proc {
    name: String,
    child: Child,
    _dir: TempDir,
    log: PathBuf,
    listeners: Vec<BoundListener>,
    /// From spawn to the ready file.
    pub start_to_ready: Duration,
}

impl Proc {
    /// Runs `program args... --ready-file DIR/ready` with stderr to `DIR/stderr.log`.
    pub fn spawn(name: &str, program: &Path, args: &[String]) -> Proc {
        let dir = tempfile::Builder::new()
            .prefix("dice-bench-")
            .tempdir()
            .expect("temp dir");
        Self::spawn_in(name, dir, program, args)
    }

    /// As [`Proc::spawn`], in an existing folder (which holds the config).
    pub fn spawn_in(name: &str, dir: TempDir, program: &Path, args: &[String]) -> Proc {
        let ready = dir.path().join("ready");
        let log = dir.path().join("stderr.log");
        let started = Instant::now();
        let mut child = Command::new(program)
            .args(args)
            .arg("--ready-file")
            .arg(&ready)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("create the log"))
            .spawn()
            .unwrap_or_else(|error| panic!("start {}: {error}", program.display()));
        let text = loop {
            if let Ok(text) = std::fs::read_to_string(&ready) {
                break text;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "{name} exited ({status}) before it was ready:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(
                started.elapsed() < READY_TIMEOUT,
                "{name} was not ready within {READY_TIMEOUT:?}"
            );
            std::thread::sleep(READY_POLL);
        };
        let start_to_ready = started.elapsed();
        let listeners = parse_ready(&text).unwrap_or_else(|error| panic!("{name}: {error}"));
        Proc {
            name: name.to_owned(),
            child,
            _dir: dir,
            log,
            listeners,
            start_to_ready,
        }
    }

    /// The address of the listener named `name`.
    pub fn addr(&self, name: &str) -> SocketAddr {
        self.listeners
            .iter()
            .find(|listener| listener.name == name)
            .unwrap_or_else(|| panic!("{}: no listener {name}", self.name))
            .addr
    }

    /// The address of the first listener in `mode`.
    pub fn first(&self, mode: Mode) -> SocketAddr {
        self.listeners
            .iter()
            .find(|listener| listener.mode == mode)
            .unwrap_or_else(|| panic!("{}: no {} listener", self.name, mode.as_str()))
            .addr
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory now, KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.child.id())
    }

    /// The log so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `VmRSS` of process `pid`, KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// User + system CPU seconds of process `pid` so far.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime, in USER_HZ (100 on Linux).
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// Polls `rss` until two readings 200 ms apart agree within 1%, for at most 3 s.
pub fn settled_rss(rss: impl Fn() -> u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut last = rss();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now = rss();
        if now.abs_diff(last) * 100 <= last || Instant::now() >= deadline {
            return now;
        }
        last = now;
    }
}
