//! The command line: every subcommand and flag, parsed with clap derive.
//!
//! Doc comments on the types below are the `--help` text. Options that will
//! later apply to every subcommand (`--fleet FILE`, `--output table|json`) go
//! on [`Cli`] with `global = true`; the ad-hoc connection flags live in
//! [`TlsArgs`] and [`TargetArgs`] so a fleet file can stand in for them.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::certs::San;

/// The exit-status contract, shown at the end of every `--help`.
const EXIT_STATUS: &str = "\
EXIT STATUS:
  0  every node OK
  1  it ran, but a node failed
  2  usage or config error, nothing ran";

/// Administers a dice fleet: rolls dice on agents over mTLS and makes the dev PKI.
#[derive(Debug, Parser)]
#[command(name = "dicectl", version, after_help = EXIT_STATUS)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Roll one die on a node over mTLS and print the value
    #[command(after_help = EXIT_STATUS)]
    Roll(RollArgs),
    /// Make and manage certificates
    #[command(subcommand)]
    Certs(CertsCommand),
}

/// The `certs` subcommands.
#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Make a dev PKI: a CA, a server certificate for dice-agent and a client certificate for dicectl
    ///
    /// Writes ca.pem, ca-key.pem, server.pem, server-key.pem, client.pem and
    /// client-key.pem (ECDSA P-256). Keys are written with mode 0600. The CA is
    /// valid for 10 years, the leaf certificates for 1 year.
    #[command(after_help = EXIT_STATUS)]
    Init(CertsInitArgs),
}

/// Flags of `dicectl certs init`.
#[derive(Debug, Args)]
pub struct CertsInitArgs {
    /// Directory to write the six PEM files to; created if missing
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,

    /// Subject alternative name of the server certificate; repeat for more.
    /// An IP address becomes an IP SAN, anything else a DNS name
    /// [default: localhost, 127.0.0.1, ::1]
    #[arg(long = "server-san", value_name = "SAN", value_parser = parse_san)]
    pub server_sans: Vec<San>,

    /// Overwrite files that already exist in DIR
    #[arg(long)]
    pub force: bool,
}

/// Flags of `dicectl roll`.
#[derive(Debug, Args)]
pub struct RollArgs {
    /// Which node, and how long to wait for it.
    #[command(flatten)]
    pub target: TargetArgs,

    /// The certificates to connect with.
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// Which node to talk to, and the deadline for one exchange with it.
#[derive(Debug, Args)]
pub struct TargetArgs {
    /// Node to talk to, as HOST:PORT, with an IPv6 HOST in brackets
    #[arg(long, value_name = "ADDR")]
    pub node: String,

    /// Name the node's certificate must hold [default: the host part of --node]
    #[arg(long, value_name = "NAME")]
    pub server_name: Option<String>,

    /// Deadline for the whole exchange: TCP connect, TLS handshake and reply
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_timeout)]
    pub timeout: Duration,
}

/// The PEM files for mutual TLS.
#[derive(Debug, Args)]
pub struct TlsArgs {
    /// CA bundle (PEM) that signed the agents' certificates
    #[arg(long, value_name = "FILE")]
    pub ca: PathBuf,

    /// Client certificate chain (PEM) to present to the agents
    #[arg(long, value_name = "FILE")]
    pub cert: PathBuf,

    /// Private key (PEM) of the client certificate
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
}

fn parse_san(text: &str) -> Result<San, String> {
    text.parse().map_err(|error| format!("{error}"))
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn timeouts_need_a_unit_and_a_length() {
        assert_eq!(parse_timeout("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_timeout("250ms"), Ok(Duration::from_millis(250)));
        for bad in ["5", "0s", "soon", ""] {
            assert!(parse_timeout(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn help_documents_exit_status() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("EXIT STATUS"), "{help}");
        assert!(
            help.contains("2  usage or config error, nothing ran"),
            "{help}"
        );
    }

    #[test]
    fn roll_requires_the_tls_files() {
        let error = Cli::try_parse_from(["dicectl", "roll", "--node", "127.0.0.1:8443"])
            .expect_err("roll without --ca/--cert/--key must be refused");
        assert_eq!(error.exit_code(), 2);
        let text = error.to_string();
        assert!(text.contains("--ca"), "{text}");
    }

    #[test]
    fn certs_init_collects_sans() {
        let cli = Cli::try_parse_from([
            "dicectl",
            "certs",
            "init",
            "--out",
            "d",
            "--server-san",
            "node-1.example",
            "--server-san",
            "10.0.0.7",
        ])
        .expect("valid flags");
        let Command::Certs(CertsCommand::Init(args)) = cli.command else {
            panic!("parsed as the wrong subcommand");
        };
        let sans: Vec<String> = args.server_sans.iter().map(ToString::to_string).collect();
        assert_eq!(sans, ["DNS:node-1.example", "IP:10.0.0.7"]);
        assert!(!args.force);
    }
}
