//! `dicectl`, the dice fleet admin CLI, as a library the thin `main.rs` calls.
//!
//! Layout:
//!
//! - [`cli`]: the command line (clap derive); its doc comments are `--help`.
//! - [`certs`]: `dicectl certs init`, the dev PKI made with rcgen.
//! - [`tls`]: the rustls client configuration from `--ca`, `--cert` and `--key`,
//!   built once per run and shared by every connection.
//! - [`client`]: [`client::connect`] to one node over mTLS, and
//!   [`client::NodeError`], which says at which step (`connect`, `tls`,
//!   `timeout`, `rpc`) talking to a node failed.
//! - [`roll`]: `dicectl roll`.
//! - [`output`]: writing results to stdout and node failures to stderr.
//!
//! Exit status (see [`Outcome`]): 0 every node OK, 1 it ran but a node failed,
//! 2 usage or config error and nothing ran. [`run`] returns an error only for
//! the last case; a failed node is an [`Outcome`], so a fan-out can carry on.

pub mod certs;
pub mod cli;
pub mod client;
pub mod output;
pub mod roll;
pub mod tls;

#[cfg(test)]
mod testing;

use std::process::ExitCode;

use anyhow::Context as _;
use time::OffsetDateTime;

use crate::cli::{CertsCommand, Cli, Command};

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
    /// At least one node failed; each failure was already reported.
    NodeFailed,
}

impl Outcome {
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
        Command::Roll(args) => roll::run(&args),
        Command::Certs(CertsCommand::Init(args)) => {
            let options = certs::InitOptions {
                out: args.out,
                server_sans: args.server_sans,
                force: args.force,
            };
            let report = certs::init(&options, OffsetDateTime::now_utc())?;
            output::stdout(&report.to_string())?;
            Ok(Outcome::Success)
        }
    }
}

/// A current-thread runtime: the CLI's work is waiting on the network.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}
