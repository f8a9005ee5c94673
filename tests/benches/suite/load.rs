//! One cell of the matrix: `dicectl bench --output json` against one target,
//! read back into numbers.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use dice_tests::bins;
use dice_tests::process::run_with_timeout;
use serde_json::Value;

/// Connections x streams, or a new connection per RPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// How the tables name it.
    pub name: &'static str,
    /// `--connections`.
    pub connections: u32,
    /// `--streams`.
    pub streams: u32,
    /// `--new-connection-per-rpc`.
    pub new_connection: bool,
}

/// The client certificate files.
#[derive(Debug, Clone)]
pub struct Certs<'a> {
    /// `--ca`.
    pub ca: &'a Path,
    /// `--cert`.
    pub cert: &'a Path,
    /// `--key`.
    pub key: &'a Path,
}

/// What one `dicectl bench` run measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cell {
    /// Successful RPCs per second.
    pub rps: f64,
    /// New connections per second (new-connection mode).
    pub hps: f64,
    /// Latency percentiles, µs.
    pub p50: f64,
    /// 99th percentile, µs.
    pub p99: f64,
    /// Failed RPCs and connections.
    pub errors: u64,
    /// CPU time the server process spent per RPC (warm-up included), µs:
    /// steadier than the rates on a machine shared with other work.
    pub cpu_us: f64,
    /// Whether the run failed: `dicectl bench` exited non-zero or printed no
    /// report, counted errors, or measured nothing. A failed cell is left out
    /// of the medians, and every target that uses it is unmet.
    pub failed: bool,
}

/// Runs `dicectl bench` against `node` (`HOST:PORT` for mTLS, `h2c://HOST:PORT`).
pub fn bench(
    node: &str,
    certs: &Certs<'_>,
    shape: Shape,
    duration: Duration,
    warmup: Duration,
) -> Cell {
    let mut command = Command::new(bins::ctl_bin());
    command
        .env_remove("DICECTL_FLEET")
        .args(["--output", "json", "bench", "--node", node])
        .arg("--connections")
        .arg(shape.connections.to_string())
        .arg("--streams")
        .arg(shape.streams.to_string())
        .arg("--duration")
        .arg(format!("{}ms", duration.as_millis()))
        .arg("--warmup")
        .arg(format!("{}ms", warmup.as_millis()))
        .args(["--timeout", "5s"]);
    if shape.new_connection {
        command.arg("--new-connection-per-rpc");
    }
    if !node.starts_with("h2c://") {
        command
            .arg("--ca")
            .arg(certs.ca)
            .arg("--cert")
            .arg(certs.cert)
            .arg("--key")
            .arg(certs.key);
    }
    let output = run_with_timeout(command, duration + warmup + Duration::from_secs(30));
    let failed = |why: String| {
        eprintln!("failed cell: {node} {}: {why}", shape.name);
        Cell {
            failed: true,
            ..Cell::default()
        }
    };
    let document: Value = match serde_json::from_str(&output.stdout) {
        Ok(document) => document,
        Err(error) => return failed(format!("dicectl bench printed no JSON ({error})\n{output}")),
    };
    let summary = &document["summary"];
    let number = |value: &Value| value.as_f64().unwrap_or(0.0);
    let mut cell = Cell {
        rps: number(&summary["requests_per_sec"]),
        hps: number(&summary["handshakes_per_sec"]),
        p50: number(&summary["latency_us"]["p50"]),
        p99: number(&summary["latency_us"]["p99"]),
        errors: summary["errors"].as_u64().unwrap_or(0),
        cpu_us: 0.0,
        failed: false,
    };
    let why = if output.code() != Some(0) {
        Some(format!("dicectl bench exited with {:?}", output.code()))
    } else if cell.errors > 0 {
        Some(format!(
            "{} errors: {}",
            cell.errors, summary["errors_by_status"]
        ))
    } else if cell.rps == 0.0 || (shape.new_connection && cell.hps == 0.0) {
        Some("no RPC (or no new connection) measured".to_owned())
    } else {
        None
    };
    if let Some(why) = why {
        eprintln!("failed cell: {node} {}: {why}", shape.name);
        cell.failed = true;
    }
    cell
}
