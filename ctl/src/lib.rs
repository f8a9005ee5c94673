//! `dicectl`, the dice fleet admin CLI, as a library the thin `main.rs` calls.
//!
//! Layout:
//!
//! - [`cli`]: the command line (clap derive); its doc comments are `--help`.
//!   [`args`] holds the flags several subcommands share (global options,
//!   `--output`, node selection, connection), a leaf the modules below
//!   import without depending on the whole command line.
//! - [`fleet`]: the fleet file (nodes, labels, `[client]` settings), validated
//!   with file, line and key in every error.
//! - [`discovery`]: the nodes of the fleet file's `[[discovery]]` sources
//!   (DNS SRV, Prometheus `http_sd` and `file_sd`), merged with `[[nodes]]`;
//!   [`nodes`] is `dicectl nodes`, which lists the result.
//! - [`select`]: which nodes a command runs on (`--all`, `--node`, `--label`).
//! - [`plan`]: the flags and the fleet file resolved into nodes, one shared
//!   TLS configuration ([`tls`]), a deadline per node and a fan-out width.
//! - [`fanout`]: runs a probe per node, bounded, each under its own deadline;
//!   [`progress`] shows it on a terminal.
//! - [`client`]: [`client::open`] one mTLS connection to a node, and
//!   [`client::NodeError`], which says at which step (`connect`, `tls`,
//!   `timeout`, `rpc`) talking to a node failed.
//! - [`roll`], [`health`]: the two fan-out commands.
//! - [`report`]: what they found, as data; [`output`] writes it as a table,
//!   JSON, or JSON lines streamed as nodes finish.
//! - [`certs`]: `dicectl certs init|issue|intermediate|inspect|renew`, the PKI
//!   toolkit (rcgen; RSA keys from the `rsa` crate), with its flags in
//!   [`certs::args`].
//! - [`bench`](mod@bench): `dicectl bench`, a closed-loop load generator.
//!
//! Exit status (see [`Outcome`]): 0 every node OK, 1 it ran but a node failed
//! (for `health`, also: a certificate expires within the warning threshold),
//! 2 usage or config error and nothing ran. [`run`] returns an error for the
//! last case, and for a failed discovery source without
//! `--allow-partial-discovery` ([`discovery::DiscoveryFailed`], status 1,
//! nothing contacted: see [`exit_status`]); a failed node is an [`Outcome`],
//! so a fan-out carries on.

pub mod args;
pub mod bench;
pub mod certs;
pub mod cli;
pub mod client;
pub mod discovery;
pub mod fanout;
pub mod fleet;
pub mod health;
pub mod nodes;
pub mod output;
pub mod plan;
pub mod progress;
pub mod report;
pub mod roll;
pub mod select;
pub mod stream;
pub mod tls;

#[cfg(test)]
mod testing;

use std::process::ExitCode;

use anyhow::Context as _;
use clap::CommandFactory;

use crate::cli::{Cli, Command};

/// Exit status when every node was OK.
pub const EXIT_OK: u8 = 0;
/// Exit status when the command ran but at least one node failed.
pub const EXIT_NODE_FAILED: u8 = 1;
/// Exit status for a usage or config error: nothing ran. clap uses it too.
pub const EXIT_USAGE: u8 = 2;

/// How a command that ran went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every node was OK (or the command touched no node).
    Success,
    /// At least one node failed (or, for `health`, has a certificate about to
    /// expire); each was already reported.
    NodeFailed,
}

impl Outcome {
    /// [`Outcome::Success`] if every node was OK, else [`Outcome::NodeFailed`].
    pub fn from_all_ok(all_ok: bool) -> Self {
        if all_ok {
            Self::Success
        } else {
            Self::NodeFailed
        }
    }

    /// The process exit status for this outcome.
    pub fn exit_code(self) -> ExitCode {
        ExitCode::from(match self {
            Self::Success => EXIT_OK,
            Self::NodeFailed => EXIT_NODE_FAILED,
        })
    }
}

/// Runs the parsed command line. An error means nothing ran (exit status 2);
/// print it with `{:#}` to show its whole chain.
pub fn run(cli: Cli) -> anyhow::Result<Outcome> {
    match cli.command {
        Command::Roll(args) => roll::run(&cli.global, &args),
        Command::Health(args) => health::run(&cli.global, &args),
        Command::Nodes(args) => nodes::run(&cli.global, &args),
        Command::Bench(args) => bench::run(&cli.global, &args),
        Command::Certs(command) => certs::run(&cli.global, command),
        Command::Completions { shell } => {
            let mut script = Vec::new();
            dice_proto::clidocs::write_completions(Cli::command(), shell, &mut script);
            output::stdout(&String::from_utf8_lossy(&script))?;
            Ok(Outcome::Success)
        }
        Command::Man { out: Some(dir) } => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let pages = dice_proto::clidocs::write_man_pages(Cli::command(), &dir)
                .with_context(|| format!("cannot write man pages into {}", dir.display()))?;
            let list: String = pages
                .iter()
                .map(|page| format!("{}\n", page.display()))
                .collect();
            output::stdout(&list)?;
            Ok(Outcome::Success)
        }
        Command::Man { out: None } => {
            let mut page = Vec::new();
            dice_proto::clidocs::write_man(Cli::command(), &mut page)?;
            output::stdout(&String::from_utf8_lossy(&page))?;
            Ok(Outcome::Success)
        }
    }
}

/// The exit status for an error [`run`] returned: 1 if a discovery source
/// failed (the run was refused, but the fleet file and flags were fine),
/// else 2.
pub fn exit_status(error: &anyhow::Error) -> u8 {
    if error.is::<discovery::DiscoveryFailed>() {
        EXIT_NODE_FAILED
    } else {
        EXIT_USAGE
    }
}

/// The async runtime for a run over `nodes` nodes. One node is waiting on the
/// network: one thread does. Many nodes spend CPU on TLS handshakes: one
/// worker per core lets them run side by side.
fn runtime(nodes: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = if nodes > 1 {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        builder.worker_threads(cores.min(MAX_WORKERS));
        builder
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// The most runtime threads a fan-out uses, however many cores there are.
const MAX_WORKERS: usize = 8;

/// Now, in Unix seconds.
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
        })
}
