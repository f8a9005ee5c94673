//! Helpers for `dicectl roll` and `dicectl health` over a fleet: a fleet file
//! builder, a peer that accepts TCP and never answers, and a `dicectl` runner
//! isolated from the caller's `DICECTL_FLEET` and `./fleet.toml`.

use std::ffi::OsStr;
use std::fmt::{Display, Write as _};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::bins;
use crate::config::quote;
use crate::pki::Pki;
use crate::process::{RUN_TIMEOUT, RunOutput, run_with_timeout};

/// One `[[nodes]]` entry.
#[derive(Debug, Clone)]
pub struct FleetNode {
    /// `name`.
    pub name: String,
    /// `address`, `HOST:PORT`.
    pub address: String,
    /// `server_name`, if set.
    pub server_name: Option<String>,
    /// `labels`.
    pub labels: Vec<(String, String)>,
}

/// A fleet file for `dicectl --fleet`, rendered with [`FleetFile::to_toml`].
#[derive(Debug, Clone)]
pub struct FleetFile {
    /// `[client]` key/value lines, already TOML.
    pub client: Vec<(String, String)>,
    /// `[[nodes]]`, in order.
    pub nodes: Vec<FleetNode>,
}

impl FleetFile {
    /// A fleet whose `[client]` presents `pki`'s client certificate and trusts its CA.
    pub fn new(pki: &Pki) -> Self {
        let path = |path: &Path| quote(path.to_str().expect("test paths are UTF-8"));
        Self {
            client: vec![
                ("ca".into(), path(pki.ca_cert())),
                ("cert".into(), path(&pki.client().cert)),
                ("key".into(), path(&pki.client().key)),
            ],
            nodes: Vec::new(),
        }
    }

    /// Sets a `[client]` key to a TOML value, e.g. `("timeout", "\"1s\"")`.
    pub fn client(mut self, key: &str, toml_value: &str) -> Self {
        self.client.retain(|(existing, _)| existing != key);
        self.client.push((key.to_owned(), toml_value.to_owned()));
        self
    }

    /// Sets `client.timeout`, e.g. `"1s"`.
    pub fn timeout(self, timeout: &str) -> Self {
        self.client("timeout", &quote(timeout))
    }

    /// Adds a node at `address`.
    pub fn node(self, name: &str, address: impl Display) -> Self {
        self.node_with(name, address, &[])
    }

    /// Adds a node at `address` with `labels`.
    pub fn node_with(mut self, name: &str, address: impl Display, labels: &[(&str, &str)]) -> Self {
        self.nodes.push(FleetNode {
            name: name.to_owned(),
            address: address.to_string(),
            server_name: Some("localhost".to_owned()),
            labels: (labels.iter())
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        });
        self
    }

    /// Renders the file.
    pub fn to_toml(&self) -> String {
        let mut out = String::from("[client]\n");
        for (key, value) in &self.client {
            let _ = writeln!(out, "{key} = {value}");
        }
        for node in &self.nodes {
            let _ = writeln!(out, "\n[[nodes]]");
            let _ = writeln!(out, "name = {}", quote(&node.name));
            let _ = writeln!(out, "address = {}", quote(&node.address));
            if let Some(name) = &node.server_name {
                let _ = writeln!(out, "server_name = {}", quote(name));
            }
            if !node.labels.is_empty() {
                let labels: Vec<String> = (node.labels.iter())
                    .map(|(k, v)| format!("{} = {}", quote(k), quote(v)))
                    .collect();
                let _ = writeln!(out, "labels = {{ {} }}", labels.join(", "));
            }
        }
        out
    }

    /// Writes the file to `path`.
    pub fn write(&self, path: &Path) {
        std::fs::write(path, self.to_toml()).expect("write the fleet file");
    }
}

/// A TCP listener on `127.0.0.1:0` that never accepts and never answers: the
/// kernel completes the TCP handshake from the backlog, then nothing. A TLS
/// client waits for a ServerHello until its deadline.
#[derive(Debug)]
pub struct SilentPeer {
    _listener: TcpListener,
    /// The address it listens on.
    pub addr: SocketAddr,
}

impl SilentPeer {
    /// Binds a fresh port on 127.0.0.1.
    pub fn bind() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a silent peer");
        let addr = listener.local_addr().expect("local addr");
        Self {
            _listener: listener,
            addr,
        }
    }
}

/// An address on 127.0.0.1 where nothing listens (bound, then closed).
pub fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr")
}

/// Runs `dicectl ARGS...` in `dir` (so `./fleet.toml` means `dir/fleet.toml`)
/// without the caller's `DICECTL_FLEET` or `NO_COLOR`, and times it.
pub fn run_ctl_in<I, S>(dir: &Path, args: I) -> (RunOutput, Duration)
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run_ctl_env(dir, args, &[])
}

/// As [`run_ctl_in`], with extra environment variables.
pub fn run_ctl_env<I, S>(dir: &Path, args: I, env: &[(&str, &OsStr)]) -> (RunOutput, Duration)
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut command = Command::new(bins::ctl_bin());
    command
        .args(args)
        .current_dir(dir)
        .env_remove("DICECTL_FLEET")
        .env_remove("NO_COLOR");
    for (key, value) in env {
        command.env(key, value);
    }
    let start = Instant::now();
    let output = run_with_timeout(command, RUN_TIMEOUT);
    (output, start.elapsed())
}
