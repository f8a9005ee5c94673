//! Runs the real `dice-agent` binary for one test.
//!
//! [`Agent::spawn`] writes the config into a fresh temp directory, starts the
//! agent with `--ready-file`, and polls until the ready file appears (or the
//! agent exits, or a deadline passes). Its `Drop` kills the agent by PID,
//! reaps it, and prints the agent's stderr if the test is failing.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub use rustix::process::Signal;
use rustix::process::{Pid, kill_process};
use tempfile::TempDir;

use crate::bins;
use crate::config::{AgentConfig, Mode};
use crate::poll::POLL_INTERVAL;

/// How long an agent may take to bind every listener.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// One line of the ready file: a listener the agent has bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundListener {
    /// The listener's name, or its index (`"0"`, `"1"`, ...) when it has none.
    pub name: String,
    /// How it serves.
    pub mode: Mode,
    /// The address it is bound to, with the real port.
    pub addr: SocketAddr,
}

/// A running agent, killed and reaped on drop.
pub struct Agent {
    child: Child,
    exit: Option<ExitStatus>,
    dir: TempDir,
    config_path: PathBuf,
    stderr_path: PathBuf,
    stdout_path: PathBuf,
    listeners: Vec<BoundListener>,
}

impl Agent {
    /// Starts the agent with `config` and waits until its ready file lists every
    /// listener. Panics, with the agent's stderr, if it exits first or is not
    /// ready within [`READY_TIMEOUT`].
    pub fn spawn(config: &AgentConfig) -> Agent {
        let agent = Self::spawn_toml(&config.to_toml(), &config.args);
        let mut expected: Vec<(String, Mode)> = (config.listeners.iter().enumerate())
            .map(|(index, listener)| {
                let name = listener.name.clone().unwrap_or_else(|| index.to_string());
                (name, listener.mode)
            })
            .collect();
        let mut bound: Vec<(String, Mode)> = (agent.listeners.iter())
            .map(|listener| (listener.name.clone(), listener.mode))
            .collect();
        expected.sort_by(|a, b| a.0.cmp(&b.0));
        bound.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            bound,
            expected,
            "the ready file should list every configured listener\n{}",
            agent.dump()
        );
        agent
    }

    /// Starts the agent with a config file of exactly `toml`, plus `args`.
    pub fn spawn_toml(toml: &str, args: &[String]) -> Agent {
        let dir = tempfile::Builder::new()
            .prefix("dice-agent-")
            .tempdir()
            .expect("create the agent's temp dir");
        let config_path = dir.path().join("node.toml");
        std::fs::write(&config_path, toml).expect("write the agent config");
        Self::spawn_file(dir, config_path, args)
    }

    /// Starts the agent on an existing config file. `dir` receives the ready
    /// file and the captured output, and is removed when the agent drops.
    pub fn spawn_file(dir: TempDir, config_path: PathBuf, args: &[String]) -> Agent {
        Self::spawn_file_env(dir, config_path, args, &[])
    }

    /// [`Agent::spawn_file`] with `env` added to the agent's environment (e.g.
    /// `NOTIFY_SOCKET`). The ready file is `dir/ready`.
    pub fn spawn_file_env(
        dir: TempDir,
        config_path: PathBuf,
        args: &[String],
        env: &[(&str, &OsStr)],
    ) -> Agent {
        let ready_path = dir.path().join("ready");
        let stderr_path = dir.path().join("stderr.log");
        let stdout_path = dir.path().join("stdout.log");
        let bin = bins::agent_bin();
        let child = Command::new(&bin)
            .arg("--config")
            .arg(&config_path)
            .arg("--ready-file")
            .arg(&ready_path)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(File::create(&stdout_path).expect("create the stdout log"))
            .stderr(File::create(&stderr_path).expect("create the stderr log"))
            .spawn()
            .unwrap_or_else(|error| panic!("could not start {}: {error}", bin.display()));
        let mut agent = Agent {
            child,
            exit: None,
            dir,
            config_path,
            stderr_path,
            stdout_path,
            listeners: Vec::new(),
        };
        agent.listeners = agent.wait_ready(&ready_path);
        agent
    }

    fn wait_ready(&mut self, ready_path: &Path) -> Vec<BoundListener> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            // The agent writes the file atomically, so once it exists it is whole.
            if let Ok(text) = std::fs::read_to_string(ready_path) {
                return parse_ready(&text).unwrap_or_else(|error| {
                    panic!("{error}\n--- ready file ---\n{text}\n{}", self.dump())
                });
            }
            if let Some(status) = self.try_wait() {
                panic!(
                    "dice-agent exited ({status}) before writing its ready file\n{}",
                    self.dump()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "dice-agent wrote no ready file within {READY_TIMEOUT:?}\n{}",
                    self.dump()
                );
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Every bound listener, in ready-file order.
    pub fn listeners(&self) -> &[BoundListener] {
        &self.listeners
    }

    /// The address of the listener named `name` (or with index `name`).
    pub fn addr(&self, name: &str) -> SocketAddr {
        match self.listeners.iter().find(|listener| listener.name == name) {
            Some(listener) => listener.addr,
            None => panic!(
                "no listener named {name:?}; the agent bound {:?}",
                self.listeners
            ),
        }
    }

    /// The address of the `/metrics` listener (the ready file's `metrics metrics ADDR`
    /// line), if the config has a `[metrics]` table.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        let text = std::fs::read_to_string(self.dir.path().join("ready")).ok()?;
        text.lines()
            .find_map(|line| line.strip_prefix("metrics metrics "))
            .and_then(|addr| addr.trim().parse().ok())
    }

    /// The address of the first mTLS listener.
    pub fn mtls_addr(&self) -> SocketAddr {
        self.first(Mode::Mtls)
    }

    /// The address of the first h2c listener.
    pub fn h2c_addr(&self) -> SocketAddr {
        self.first(Mode::H2c)
    }

    /// The address of the first health listener (`mode = "health"`).
    pub fn health_addr(&self) -> SocketAddr {
        self.first(Mode::Health)
    }

    fn first(&self, mode: Mode) -> SocketAddr {
        match self.listeners.iter().find(|listener| listener.mode == mode) {
            Some(listener) => listener.addr,
            None => panic!(
                "no {} listener; the agent bound {:?}",
                mode.as_str(),
                self.listeners
            ),
        }
    }

    /// The agent's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The temp directory holding the config, ready file and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The config file the agent was started with.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Everything the agent has written to stderr so far (its logs).
    pub fn logs(&self) -> String {
        read_lossy(&self.stderr_path)
    }

    /// Everything the agent has written to stdout so far.
    pub fn stdout(&self) -> String {
        read_lossy(&self.stdout_path)
    }

    /// Sends `signal` (e.g. [`Signal::TERM`]) to the agent's PID.
    pub fn signal(&self, signal: Signal) {
        // Once reaped, the PID may belong to another process: never signal it.
        assert!(
            self.exit.is_none(),
            "dice-agent already exited ({:?}); not sending {signal:?}",
            self.exit
        );
        let raw = i32::try_from(self.child.id()).expect("PIDs fit in i32");
        let pid = Pid::from_raw(raw).expect("a child's PID is positive");
        kill_process(pid, signal)
            .unwrap_or_else(|error| panic!("kill({raw}, {signal:?}) failed: {error}"));
    }

    /// The exit status, if the agent has exited (reaping it).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().expect("wait for the agent");
        }
        self.exit
    }

    /// Polls until the agent exits, for at most `timeout`. `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Waits up to `timeout` for the agent to exit and asserts that it exited
    /// 0; `when` ends the failure messages ("after SIGTERM").
    pub fn assert_clean_exit(&mut self, timeout: Duration, when: &str) {
        let status = self.wait_exit(timeout).unwrap_or_else(|| {
            panic!(
                "dice-agent still running {timeout:?} {when}\n{}",
                self.dump()
            )
        });
        assert_eq!(
            status.code(),
            Some(0),
            "exit status {when}\n{}",
            self.dump()
        );
    }

    /// The config, stdout and stderr, for failure messages.
    pub fn dump(&self) -> String {
        format!(
            "--- config {} ---\n{}\n--- agent stdout ---\n{}\n--- agent stderr ---\n{}--- end ---",
            self.config_path.display(),
            read_lossy(&self.config_path),
            self.stdout(),
            self.logs()
        )
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.try_wait().is_none() {
            // Child::kill sends SIGKILL to the child's own PID; wait reaps it.
            let _ = self.child.kill();
            self.exit = self.child.wait().ok();
        }
        if std::thread::panicking() {
            eprintln!("dice-agent (pid {}) {}", self.child.id(), self.dump());
        }
    }
}

fn read_lossy(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
}

/// Parses the ready file: one `<name-or-index> <mode> <address>` line per listener.
pub fn parse_ready(text: &str) -> Result<Vec<BoundListener>, String> {
    let mut listeners = Vec::new();
    let mut names = BTreeSet::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        // The metrics endpoint is not a gRPC listener: see `Agent::metrics_addr`.
        if fields.get(..2) == Some(&["metrics", "metrics"][..]) {
            continue;
        }
        let [name, mode, addr] = fields[..] else {
            return Err(format!(
                "ready file line {}: expected `<name> <mode> <address>`, got {line:?}",
                number + 1
            ));
        };
        let mode = Mode::parse(mode)
            .ok_or_else(|| format!("ready file line {}: unknown mode {mode:?}", number + 1))?;
        let addr = addr.parse().map_err(|error| {
            format!("ready file line {}: address {addr:?}: {error}", number + 1)
        })?;
        if !names.insert(name.to_owned()) {
            return Err(format!(
                "ready file line {}: listener {name:?} listed twice",
                number + 1
            ));
        }
        listeners.push(BoundListener {
            name: name.to_owned(),
            mode,
            addr,
        });
    }
    if listeners.is_empty() {
        return Err("ready file lists no listener".to_owned());
    }
    Ok(listeners)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ready_lines() {
        let listeners =
            parse_ready("0 mtls 127.0.0.1:40123\nadmin h2c 127.0.0.1:5\n").expect("valid");
        assert_eq!(listeners.len(), 2);
        assert_eq!(listeners[0].name, "0");
        assert_eq!(listeners[0].mode, Mode::Mtls);
        assert_eq!(listeners[1].addr, "127.0.0.1:5".parse().expect("addr"));
        let with_metrics =
            parse_ready("0 mtls 127.0.0.1:1\nmetrics metrics 127.0.0.1:9\n").expect("valid");
        assert_eq!(with_metrics.len(), 1);
    }

    #[test]
    fn parses_health_listeners() {
        let listeners = parse_ready(
            "0 mtls 127.0.0.1:1
probe health 0.0.0.0:9090
",
        )
        .expect("a health listener");
        assert_eq!(listeners[1].mode, Mode::Health);
        assert_eq!(listeners[1].addr, "0.0.0.0:9090".parse().expect("addr"));
    }

    #[test]
    fn rejects_bad_ready_lines() {
        assert!(parse_ready("").is_err());
        assert!(parse_ready("0 mtls").is_err());
        assert!(parse_ready("0 tcp 127.0.0.1:1").is_err());
        assert!(parse_ready("0 mtls 127.0.0.1:1\n0 h2c 127.0.0.1:2").is_err());
    }
}
