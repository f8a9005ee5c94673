//! Runs a binary to completion under a deadline and keeps what it printed.

use std::ffi::{OsStr, OsString};
use std::fmt::{self, Display};
use std::fs::File;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::bins;
use crate::poll::poll_until;

/// How long a one-shot command (`dicectl ...`, `dice-agent --check`) may run.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// What a finished command did.
#[derive(Debug, Clone)]
pub struct RunOutput {
    /// The command line, for messages.
    pub command: String,
    /// How it exited.
    pub status: ExitStatus,
    /// Everything it wrote to stdout.
    pub stdout: String,
    /// Everything it wrote to stderr.
    pub stderr: String,
}

impl RunOutput {
    /// The exit code; `None` if a signal ended it.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Panics, showing the whole output, unless the exit code is `code`.
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code(), Some(code), "unexpected exit status\n{self}");
        self
    }

    /// Panics, showing the whole output, unless it exited 0.
    pub fn assert_success(&self) -> &Self {
        self.assert_code(0)
    }

    /// Asserts that `dicectl roll` succeeded and printed one die value (1 to
    /// 6); returns it.
    pub fn assert_rolled(&self) -> i32 {
        self.assert_success();
        let value: i32 = self
            .stdout
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("dicectl roll should print the value\n{self}"));
        assert!((1..=6).contains(&value), "rolled {value}\n{self}");
        value
    }

    /// Panics, showing the whole output, unless stderr contains `needle`.
    pub fn assert_stderr_contains(&self, needle: &str) -> &Self {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}\n{self}"
        );
        self
    }

    /// Panics, showing the whole output, unless stdout contains `needle`.
    pub fn assert_stdout_contains(&self, needle: &str) -> &Self {
        assert!(
            self.stdout.contains(needle),
            "stdout lacks {needle:?}\n{self}"
        );
        self
    }

    /// stdout followed by stderr.
    pub fn combined(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

impl fmt::Display for RunOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "command: {}", self.command)?;
        writeln!(f, "status: {}", self.status)?;
        writeln!(f, "--- stdout ---\n{}", self.stdout)?;
        write!(f, "--- stderr ---\n{}--- end ---", self.stderr)
    }
}

/// Runs `command` until it exits or `timeout` passes (then kills it and
/// panics). Output goes to files, so a chatty child never blocks on a full pipe.
pub fn run_with_timeout(mut command: Command, timeout: Duration) -> RunOutput {
    let description = describe(&command);
    let dir = tempfile::tempdir().expect("create a temp dir for output");
    let stdout_path = dir.path().join("stdout");
    let stderr_path = dir.path().join("stderr");
    command
        .stdin(Stdio::null())
        .stdout(File::create(&stdout_path).expect("create the stdout file"))
        .stderr(File::create(&stderr_path).expect("create the stderr file"));
    let mut child = command
        .spawn()
        .unwrap_or_else(|error| panic!("could not start {description}: {error}"));
    let mut status = None;
    poll_until(timeout, || {
        status = child.try_wait().expect("wait for the child");
        status.is_some()
    });
    let read = |path: &Path| {
        String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
    };
    match status {
        Some(status) => RunOutput {
            command: description,
            status,
            stdout: read(&stdout_path),
            stderr: read(&stderr_path),
        },
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{description} did not exit within {timeout:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                read(&stdout_path),
                read(&stderr_path)
            );
        }
    }
}

/// Runs `dice-agent ARGS...` to completion (e.g. `--check`), under [`RUN_TIMEOUT`].
pub fn run_agent<I, S>(args: I) -> RunOutput
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run_bin(bins::agent_bin(), args)
}

/// Runs `dice-agent --config PATH --check` to completion.
pub fn check_config(path: &Path) -> RunOutput {
    run_agent([Path::new("--config"), path, Path::new("--check")])
}

/// Runs `bin ARGS...` to completion under [`RUN_TIMEOUT`].
fn run_bin(bin: impl AsRef<OsStr>, args: impl IntoIterator<Item = impl AsRef<OsStr>>) -> RunOutput {
    let mut command = Command::new(bin);
    command.args(args);
    run_with_timeout(command, RUN_TIMEOUT)
}

/// The `dicectl` admin CLI.
pub struct Ctl;

impl Ctl {
    /// Runs `dicectl ARGS...` to completion under [`RUN_TIMEOUT`].
    pub fn run<I, S>(args: I) -> RunOutput
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run_bin(bins::ctl_bin(), args)
    }

    /// Runs `dicectl roll --node NODE --ca CA --cert CERT --key KEY`.
    pub fn roll(node: impl Display, ca: &Path, cert: &Path, key: &Path) -> RunOutput {
        let mut args: Vec<OsString> = vec!["roll".into(), "--node".into(), node.to_string().into()];
        for (flag, path) in [("--ca", ca), ("--cert", cert), ("--key", key)] {
            args.push(flag.into());
            args.push(path.into());
        }
        Self::run(args)
    }
}

/// The command line of `command`, for failure messages.
pub(crate) fn describe(command: &Command) -> String {
    let mut text = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}
