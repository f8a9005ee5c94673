//! The flags several subcommands share: the global options, `--output`, which
//! nodes (`--all`, `--node`, `--label`) and how to connect (`--ca`, `--cert`,
//! `--key`, `--timeout`, ...).
//!
//! A leaf, importing nothing from the crate: `cli` assembles the command line
//! from these types, and the modules that act on them (`select`, `plan`,
//! `output`, `bench`, `certs`) import them from here, not from the command
//! line that contains them. Doc comments are the `--help` text.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args, ValueEnum};

/// The exit-status contract, shown at the end of every `--help`.
pub const EXIT_STATUS: &str = "\
EXIT STATUS:
  0  every node OK
  1  it ran, but at least one node failed (health: or a certificate expires
     within the warning threshold); or a [[discovery]] source failed, and
     without --allow-partial-discovery no node was contacted
  2  usage or config error, nothing ran";

/// The largest `concurrency` accepted; each node in flight holds a socket.
pub const MAX_CONCURRENCY: usize = 10_000;

/// Options accepted before or after any subcommand.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Fleet file naming the nodes and how to reach them [default: $DICECTL_FLEET, else
    /// ./fleet.toml if it exists]
    #[arg(long, global = true, value_name = "FILE")]
    pub fleet: Option<PathBuf>,

    /// Output format: a table (coloured on a terminal), one JSON document, or
    /// JSON lines streamed as nodes finish [default: table; one ad-hoc `roll --node HOST:PORT` prints just the value]
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    pub output: Option<OutputFormat>,

    /// Print what will run, and each failed node's whole error with its causes, on stderr
    #[arg(short, long, global = true)]
    pub verbose: bool,
}

/// How results are written to stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns, a row per node sorted by name, then a summary
    Table,
    /// One JSON document (schema in the README), nothing else on stdout
    Json,
    /// JSON lines: roll, health and nodes write one object per node as soon
    /// as it is done, then a summary object; other commands their document on one line
    Jsonl,
}

/// `--allow-partial-discovery`, for the commands that resolve a fleet's
/// `[[discovery]]` sources.
#[derive(Debug, Default, Args)]
#[command(next_help_heading = "Nodes")]
pub struct DiscoveryArgs {
    /// Run on the nodes found even if a [[discovery]] source of the fleet file
    /// failed; each failure is still named on stderr. Without it a failed
    /// source stops the run before any node is contacted, with exit status 1
    #[arg(long)]
    pub allow_partial_discovery: bool,
}

/// Which nodes to talk to. At most one of `--all`, `--node` and `--label`.
#[derive(Debug, Default, Args)]
#[group(id = "select", multiple = false)]
#[command(next_help_heading = "Nodes")]
pub struct SelectArgs {
    /// Every node of the fleet file
    #[arg(long)]
    pub all: bool,

    /// A node of the fleet file by name, or any node by HOST:PORT (IPv6 in
    /// brackets); repeat, or list several after one --node
    #[arg(long, value_name = "NAME|ADDR", num_args = 1.., action = ArgAction::Append)]
    pub node: Vec<String>,

    /// Fleet nodes labelled KEY=VALUE; repeat to require several labels
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_label, action = ArgAction::Append)]
    pub label: Vec<Label>,
}

/// A `--label KEY=VALUE` filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    /// The label's name.
    pub key: String,
    /// The value it must have.
    pub value: String,
}

impl std::fmt::Display for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.key, self.value)
    }
}

/// How to connect: the certificates, the deadline per node and the fan-out width.
/// Each flag overrides the fleet file's `[client]` key of the same name.
#[derive(Debug, Default, Args)]
#[command(next_help_heading = "Connection")]
pub struct ConnArgs {
    /// CA bundle (PEM) that signed the agents' certificates [default: client.ca]
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,

    /// Client certificate chain (PEM) to present to the agents [default: client.cert]
    #[arg(long, value_name = "FILE")]
    pub cert: Option<PathBuf>,

    /// Private key (PEM) of the client certificate [default: client.key]
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,

    /// Name the certificate of each --node HOST:PORT must hold [default: the host part]
    #[arg(long, value_name = "NAME")]
    pub server_name: Option<String>,

    /// Deadline per node for TCP connect, TLS handshake and replies
    /// [default: client.timeout, else 5s]
    #[arg(long, value_name = "DURATION", value_parser = parse_timeout)]
    pub timeout: Option<Duration>,

    /// Nodes in flight at once [default: client.concurrency, else 64]
    #[arg(long, value_name = "N", value_parser = parse_concurrency)]
    pub concurrency: Option<usize>,
}

/// Parses a duration with a unit (`5s`, `500ms`, `1m`); zero is refused because
/// it would fail every node before it is tried.
fn parse_timeout(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text)
        .map_err(|error| format!("{error} (write a duration with a unit, e.g. 5s or 500ms)"))?;
    if duration.is_zero() {
        return Err("must be greater than zero (e.g. 5s)".to_owned());
    }
    Ok(duration)
}

/// Parses `KEY=VALUE`.
fn parse_label(text: &str) -> Result<Label, String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok(Label {
            key: key.to_owned(),
            value: value.to_owned(),
        }),
        _ => Err("expected KEY=VALUE, e.g. region=eu".to_owned()),
    }
}

fn parse_concurrency(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n @ 1..=MAX_CONCURRENCY) => Ok(n),
        _ => Err(format!("must be a number from 1 to {MAX_CONCURRENCY}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_need_a_unit_and_a_length() {
        assert_eq!(parse_timeout("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_timeout("250ms"), Ok(Duration::from_millis(250)));
        for bad in ["5", "0s", "soon", ""] {
            assert!(parse_timeout(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
