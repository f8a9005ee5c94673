//! Runs the Python client (`clients/python`, `python -m dice_client`) from
//! the test virtual environment, as an unmodified grpcio user would.
//!
//! ```no_run
//! # use dice_tests::{Pki, python::PyRoll};
//! # let pki = Pki::new(std::path::Path::new("/tmp/pki"));
//! let values = PyRoll::new("127.0.0.1:8443", pki.ca_cert())
//!     .identity(pki.client())
//!     .count(5)
//!     .rolls();
//! ```

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::pki::Identity;
use crate::process::{RUN_TIMEOUT, RunOutput, run_with_timeout};
use crate::tools;

/// One run of `python -m dice_client`.
#[derive(Debug, Clone)]
pub struct PyRoll {
    addr: String,
    ca: PathBuf,
    identity: Option<(PathBuf, PathBuf)>,
    count: u32,
    metadata: Vec<(String, String)>,
}

impl PyRoll {
    /// Rolls once on `addr`, trusting `ca`, presenting no client certificate.
    pub fn new(addr: impl Display, ca: &Path) -> Self {
        Self {
            addr: addr.to_string(),
            ca: ca.to_owned(),
            identity: None,
            count: 1,
            metadata: Vec::new(),
        }
    }

    /// Presents `identity`'s certificate and key.
    pub fn identity(self, identity: &Identity) -> Self {
        self.cert_key(&identity.cert, &identity.key)
    }

    /// Presents the certificate chain in `cert` with the key in `key`.
    pub fn cert_key(mut self, cert: &Path, key: &Path) -> Self {
        self.identity = Some((cert.to_owned(), key.to_owned()));
        self
    }

    /// Rolls `count` dice over one connection.
    pub fn count(mut self, count: u32) -> Self {
        self.count = count;
        self
    }

    /// Sends `key: value` with every RPC.
    pub fn metadata(mut self, key: &str, value: &str) -> Self {
        self.metadata.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Runs the client to completion under [`RUN_TIMEOUT`].
    pub fn run(&self) -> RunOutput {
        let mut command = Command::new(tools::python());
        command
            .args(["-m", "dice_client", "--addr", &self.addr, "--ca"])
            .arg(&self.ca)
            .arg("--count")
            .arg(self.count.to_string());
        if let Some((cert, key)) = &self.identity {
            command.arg("--cert").arg(cert).arg("--key").arg(key);
        }
        for (key, value) in &self.metadata {
            command.arg("--metadata").arg(format!("{key}={value}"));
        }
        run_with_timeout(command, RUN_TIMEOUT)
    }

    /// Runs the client, asserts it succeeded, and returns the values rolled
    /// (each checked to be 1 to 6).
    pub fn rolls(&self) -> Vec<i32> {
        let output = self.run();
        output.assert_success();
        let values: Vec<i32> = (output.stdout.lines())
            .map(|line| {
                line.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("not a die value: {line:?}\n{output}"))
            })
            .collect();
        assert_eq!(
            values.len(),
            self.count as usize,
            "one value per roll\n{output}"
        );
        assert!(
            values.iter().all(|value| (1..=6).contains(value)),
            "{values:?}"
        );
        values
    }

    /// Runs the client, asserts it failed with exit 1 and a gRPC status of
    /// `code` (e.g. `"UNAVAILABLE"`), and returns the output.
    pub fn fails_with(&self, code: &str) -> RunOutput {
        let output = self.run();
        output.assert_code(1);
        output.assert_stderr_contains(&format!(": {code}: "));
        output
    }
}
