//! Operating the agent: the Prometheus `/metrics` endpoint, systemd readiness
//! (`sd_notify`) and the unit file, `--version` of both binaries, shell
//! completions and man pages, and JSON logs.
//!
//! Everything is checked by parsing what the binaries produce: the metrics
//! text with a strict OpenMetrics parser ([`dice_tests::metrics`]), notify
//! datagrams as `KEY=VALUE` lines, log lines as JSON objects, completion
//! scripts by running them in bash.

mod json_logs;
mod metrics;
mod systemd;
mod versions;

use std::time::Duration;

use dice_tests::process::RunOutput;
use regex::Regex;

/// The workspace version both binaries report.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The gRPC path of the roll RPC, as metrics and logs name it.
const ROLL_DIE: &str = "/api.DiceService/RollDie";

/// How long a metric or a notification may take to show up.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the agent may take to exit after SIGTERM.
const EXIT_TIMEOUT: Duration = Duration::from_secs(15);

/// Checks `NAME VERSION (commit HASH)` and returns the version and the hash
/// (12 hex digits, or `unknown` outside a git checkout).
fn version_line(binary: &str, output: &RunOutput) -> (String, String) {
    let pattern = format!(
        r"^{} (\S+) \(commit ([0-9a-f]{{12}}|unknown)\)\n$",
        regex::escape(binary)
    );
    let captures = Regex::new(&pattern)
        .expect("a valid regex")
        .captures(&output.stdout)
        .unwrap_or_else(|| panic!("--version output is not `{pattern}`\n{output}"));
    (captures[1].to_owned(), captures[2].to_owned())
}
