//! Where results and node failures go: results on stdout, diagnostics on stderr.

use std::io::{self, Write};

use anyhow::Context as _;

use crate::client::{NodeError, NodeTarget};

/// Writes `text` to stdout. A closed pipe (`dicectl roll ... | head -0`) is not
/// an error: whoever reads has all they wanted.
pub fn stdout(text: &str) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(error) if error.kind() != io::ErrorKind::BrokenPipe => {
            Err(error).context("cannot write to stdout")
        }
        _ => Ok(()),
    }
}

/// The one stderr line for a node that failed:
/// `dicectl: node ADDR: KIND: REASON (WHAT TO DO)`.
pub fn node_failure_line(node: &NodeTarget, error: &NodeError) -> String {
    format!("dicectl: node {node}: {error}")
}

/// Reports a failed node on stderr, on one line.
pub fn node_failure(node: &NodeTarget, error: &NodeError) {
    // Nothing useful is left to do if stderr itself is gone.
    let _ = writeln!(io::stderr().lock(), "{}", node_failure_line(node, error));
}
