//! Long-running programs that are not ours (nginx, a Django dev server), run
//! for one test: output captured to files, readiness awaited by polling a TCP
//! connect under a deadline, and stopped by PID on drop.
//!
//! Drop sends SIGTERM and waits (nginx's master stops its workers before it
//! exits); only if that takes longer than [`STOP_TIMEOUT`] does it SIGKILL
//! the process and the children it had, so nothing is left holding a port.

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use rustix::process::{Pid, Signal, kill_process};

use crate::poll::poll_until;
use crate::process::describe;

/// How long a service may take to accept connections.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a service may take to exit after SIGTERM before it is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one readiness probe may wait for a TCP connect.
const CONNECT_PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// Whether [`Service::wait_listening`] saw the service accept a connection.
#[derive(Debug)]
pub enum Started {
    /// It accepts connections.
    Listening,
    /// It exited first, with this status.
    Exited(ExitStatus),
}

/// A running program, stopped on drop.
pub struct Service {
    name: String,
    command: String,
    child: Child,
    exit: Option<ExitStatus>,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
    /// More files to show when a test fails (e.g. nginx's error log).
    extra_logs: Vec<PathBuf>,
}

impl Service {
    /// Starts `command`, with stdout and stderr going to `<name>.stdout` and
    /// `<name>.stderr` in `log_dir`. Panics if it cannot be started.
    pub fn spawn(name: &str, mut command: Command, log_dir: &Path) -> Service {
        let stdout_path = log_dir.join(format!("{name}.stdout"));
        let stderr_path = log_dir.join(format!("{name}.stderr"));
        let description = describe(&command);
        let child = command
            .stdin(Stdio::null())
            .stdout(File::create(&stdout_path).expect("create the stdout log"))
            .stderr(File::create(&stderr_path).expect("create the stderr log"))
            .spawn()
            .unwrap_or_else(|error| panic!("could not start {description}: {error}"));
        Service {
            name: name.to_owned(),
            command: description,
            child,
            exit: None,
            stdout_path,
            stderr_path,
            extra_logs: Vec::new(),
        }
    }

    /// Also shows `path` in [`Service::dump`].
    pub fn show_log(&mut self, path: PathBuf) {
        self.extra_logs.push(path);
    }

    /// Polls until a TCP connect to `addr` succeeds or the service exits, for
    /// at most [`START_TIMEOUT`] (then panics with the service's output).
    pub fn wait_listening(&mut self, addr: SocketAddr) -> Started {
        let mut started = None;
        poll_until(START_TIMEOUT, || {
            if let Some(status) = self.try_wait() {
                started = Some(Started::Exited(status));
            } else if TcpStream::connect_timeout(&addr, CONNECT_PROBE_TIMEOUT).is_ok() {
                started = Some(Started::Listening);
            }
            started.is_some()
        });
        started.unwrap_or_else(|| {
            panic!(
                "{} did not accept connections on {addr} within {START_TIMEOUT:?}\n{}",
                self.name,
                self.dump()
            )
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, if it has exited (reaping it).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().expect("wait for the service");
        }
        self.exit
    }

    /// Everything it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        read_lossy(&self.stderr_path)
    }

    /// Everything it wrote to stdout so far.
    pub fn stdout(&self) -> String {
        read_lossy(&self.stdout_path)
    }

    /// The command line, stdout, stderr and extra logs, for failure messages.
    pub fn dump(&self) -> String {
        let mut text = format!(
            "--- {} command ---\n{}\n--- {} stdout ---\n{}\n--- {} stderr ---\n{}",
            self.name,
            self.command,
            self.name,
            self.stdout(),
            self.name,
            self.stderr()
        );
        for path in &self.extra_logs {
            text.push_str(&format!(
                "\n--- {} ---\n{}",
                path.display(),
                read_lossy(path)
            ));
        }
        text.push_str("--- end ---");
        text
    }

    /// Sends SIGTERM and waits up to [`STOP_TIMEOUT`]; then SIGKILLs the
    /// process and its children. Returns the exit status.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        if let Some(status) = self.try_wait() {
            return Some(status);
        }
        // Read before signalling: once the parent is gone, its children are not listed.
        let children = children(self.child.id());
        signal(self.child.id(), Signal::TERM);
        if poll_until(STOP_TIMEOUT, || self.try_wait().is_some()) {
            return self.exit;
        }
        eprintln!(
            "{} (pid {}) did not stop within {STOP_TIMEOUT:?} of SIGTERM; killing it and {children:?}",
            self.name,
            self.child.id()
        );
        let _ = self.child.kill();
        self.exit = self.child.wait().ok();
        for pid in children {
            signal(pid, Signal::KILL);
        }
        self.exit
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("{} (pid {}) {}", self.name, self.child.id(), self.dump());
        }
    }
}

/// A port on 127.0.0.1 that was free a moment ago: bound, read, released.
///
/// For programs that cannot be handed a bound socket (nginx, Django). Another
/// process may take the port in between, so callers retry with a fresh port
/// when the program reports the address in use.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// The PIDs of `pid`'s children, from `/proc` (empty if unreadable).
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|child| child.parse().ok())
        .collect()
}

/// Sends `signal` to `pid`, ignoring a process that is already gone.
fn signal(pid: u32, signal: Signal) {
    let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return;
    };
    let _ = kill_process(pid, signal);
}

fn read_lossy(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
}
