//! The command line: every subcommand and flag, parsed with clap derive.
//!
//! Doc comments on the types below are the `--help` text. `--fleet`,
//! `--output` and `-v` are global: they are accepted before or after the
//! subcommand. Connection flags ([`ConnArgs`]) override the fleet file's
//! `[client]` table, or stand in for it in ad-hoc use.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

use crate::certs::San;
use crate::fleet::MAX_CONCURRENCY;

/// The exit-status contract, shown at the end of every `--help`.
pub const EXIT_STATUS: &str = "\
EXIT STATUS:
  0  every node OK
  1  it ran, but at least one node failed (health: or a certificate expires
     within the warning threshold)
  2  usage or config error, nothing ran";

/// Where nodes and connection settings come from, shown in `roll` and `health` help.
const FLEET_HELP: &str = "\
FLEET FILE:
  Found via --fleet FILE, else $DICECTL_FLEET, else ./fleet.toml. It names
  the nodes ([[nodes]] name, address, server_name, labels) and how to reach
  them ([client] ca, cert, key, timeout, concurrency, expiry_warning);
  flags override [client]. Without a fleet file, give --node HOST:PORT with
  --ca, --cert and --key. See config/fleet.toml.";

/// Administers a dice fleet: rolls dice and checks health across agents over mTLS, makes and checks certificates.
#[derive(Debug, Parser)]
#[command(name = "dicectl", version = dice_proto::VERSION, after_help = EXIT_STATUS)]
pub struct Cli {
    /// Options for every subcommand.
    #[command(flatten)]
    pub global: GlobalArgs,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options accepted before or after any subcommand.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Fleet file naming the nodes and how to reach them [default: $DICECTL_FLEET, else
    /// ./fleet.toml if it exists]
    #[arg(long, global = true, value_name = "FILE")]
    pub fleet: Option<PathBuf>,

    /// Output format: a table (coloured on a terminal), or one JSON document
    /// [default: table; one ad-hoc `roll --node HOST:PORT` prints just the value]
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
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Roll dice on nodes over mTLS, concurrently, and show a row per node
    ///
    /// Each node gets its own deadline (--timeout) for connect, handshake and
    /// replies; a failed node is a row, not an abort. With one ad-hoc
    /// `--node HOST:PORT` and no --output, prints just the value (one per
    /// line with --count), or one line on stderr naming the failed step.
    #[command(after_help = roll_after_help())]
    Roll(RollArgs),
    /// Show each node's health, TLS version, certificate expiry and agent info
    ///
    /// Per node: the grpc.health.v1 status of api.DiceService (SERVING,
    /// NOT_SERVING), or why it could not be asked (UNREACHABLE, TLS_ERROR,
    /// TIMEOUT); the TLS version and the server certificate's subject,
    /// not-after and days left; the agent's version and last certificate
    /// reload (from dice.agent.v1.AgentInfoService). Selects every fleet node
    /// by default.
    #[command(after_help = roll_after_help())]
    Health(HealthArgs),
    /// Make and manage certificates
    #[command(subcommand, after_help = crate::certs::args::EXIT_STATUS)]
    Certs(CertsCommand),
    /// Load nodes with RollDie RPCs (closed loop) and report throughput and latency
    ///
    /// Opens --connections connections per node and keeps --streams RPCs in
    /// flight on each for --duration, then prints requests/s, latency p50, p90,
    /// p99 and max, and failures by status. --new-connection-per-rpc makes a
    /// new connection (full TLS handshake) for every RPC and reports
    /// handshakes/s. Nodes are mTLS unless written h2c://HOST:PORT.
    #[command(after_help = roll_after_help())]
    Bench(crate::bench::BenchArgs),
    /// Print the shell completion script for bash, zsh or fish
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: dice_proto::clidocs::Shell,
    },
    /// Print the man page (roff), or write a page per subcommand into a folder
    Man {
        /// Write dicectl.1 and a page per subcommand (dicectl-roll.1, ...) into DIR,
        /// created if missing, instead of printing dicectl.1
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

fn roll_after_help() -> String {
    format!("{FLEET_HELP}\n\n{EXIT_STATUS}")
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
    /// Issue a server or client certificate from a CA directory
    ///
    /// A server certificate gets extended key usage serverAuth, a client
    /// certificate clientAuth; both get subject CN=NAME and the SANs given
    /// (DNS names, IP addresses, URIs such as spiffe://...). Writes NAME.pem
    /// (the certificate, then the CA's intermediates, if any) and
    /// NAME-key.pem (mode 0600) into --out.
    Issue(crate::certs::args::IssueArgs),
    /// Make an intermediate CA under a CA directory, as a CA directory of its own
    ///
    /// Writes ca.pem (the intermediate), ca-key.pem (mode 0600) and chain.pem
    /// (the intermediate, then each CA up to the root) into --out. Certificates
    /// issued from it carry the intermediate, so agents serve the full chain
    /// and clients that trust the root verify through it.
    Intermediate(crate::certs::args::IntermediateArgs),
    /// Show what certificate files say; check a key and a chain
    ///
    /// Per certificate: subject, SANs, issuer, serial, not-before/after, days
    /// left, key type, key usages. With --key, whether the key belongs to the
    /// file's first certificate; with --ca, whether the chain verifies as TLS
    /// peers verify it. Exits 1 if a certificate is expired or not yet valid,
    /// a key does not match, or a chain does not verify. Never prints keys.
    Inspect(crate::certs::args::InspectArgs),
    /// Renew a certificate: same subject and SANs, new key, serial and validity
    ///
    /// The certificate must have been issued by the CA in --ca-dir and --key
    /// must be its key. A new key of the same type is written to --key, then
    /// the new certificate to --cert, each atomically (temp file, then
    /// rename), so an agent watching the files rotates to the new pair
    /// without dropping a connection.
    Renew(crate::certs::args::RenewArgs),
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
#[command(group(clap::ArgGroup::new("roll-select").args(["all", "node", "label"]).required(true)))]
pub struct RollArgs {
    /// Dice to roll on each node, one after another on its connection
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1,
        value_parser = clap::value_parser!(u32).range(1..=1000)
    )]
    pub count: u32,

    /// Which nodes.
    #[command(flatten)]
    pub select: SelectArgs,

    /// How to connect.
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// Flags of `dicectl health`.
#[derive(Debug, Args)]
pub struct HealthArgs {
    /// Warn (and exit 1) when a certificate expires sooner than this
    /// [default: client.expiry_warning, else 14d]
    #[arg(long, value_name = "DURATION", value_parser = parse_expiry_warning)]
    pub expiry_warning: Option<Duration>,

    /// Which nodes [default: every node of the fleet file].
    #[command(flatten)]
    pub select: SelectArgs,

    /// How to connect.
    #[command(flatten)]
    pub conn: ConnArgs,
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

/// Parses a duration with a unit (`14d`, `36h`); zero turns the warning off.
fn parse_expiry_warning(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|error| format!("{error} (write a duration with a unit, e.g. 14d or 36h)"))
}

fn parse_concurrency(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n @ 1..=MAX_CONCURRENCY) => Ok(n),
        _ => Err(format!("must be a number from 1 to {MAX_CONCURRENCY}")),
    }
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
    fn roll_requires_a_selection() {
        let error = Cli::try_parse_from(["dicectl", "roll"])
            .expect_err("roll without --all, --node or --label must be refused");
        assert_eq!(error.exit_code(), 2);
        let text = error.to_string();
        assert!(text.contains("--all"), "{text}");

        let error = Cli::try_parse_from(["dicectl", "roll", "--all", "--node", "a"])
            .expect_err("--all and --node conflict");
        assert_eq!(error.exit_code(), 2);

        // health selects every node by default.
        Cli::try_parse_from(["dicectl", "health"]).expect("valid");
    }

    #[test]
    fn global_options_go_before_or_after_the_subcommand() {
        for args in [
            &[
                "dicectl", "--fleet", "f.toml", "--output", "json", "roll", "--all",
            ][..],
            &[
                "dicectl", "roll", "--all", "--fleet", "f.toml", "--output", "json",
            ][..],
            &[
                "dicectl",
                "--output=json",
                "roll",
                "--fleet=f.toml",
                "--all",
            ][..],
        ] {
            let cli = Cli::try_parse_from(args).expect("valid");
            assert_eq!(
                cli.global.fleet.as_deref(),
                Some(std::path::Path::new("f.toml"))
            );
            assert_eq!(cli.global.output, Some(OutputFormat::Json));
        }
    }

    #[test]
    fn nodes_and_labels_collect() {
        let cli = Cli::try_parse_from([
            "dicectl",
            "roll",
            "--node",
            "a",
            "b",
            "--node",
            "127.0.0.1:1",
            "--count",
            "3",
        ])
        .expect("valid");
        let Command::Roll(args) = cli.command else {
            panic!("parsed as the wrong subcommand");
        };
        assert_eq!(args.select.node, ["a", "b", "127.0.0.1:1"]);
        assert_eq!(args.count, 3);

        let cli = Cli::try_parse_from([
            "dicectl",
            "health",
            "--label",
            "region=eu",
            "--label",
            "tier=",
        ])
        .expect("valid");
        let Command::Health(args) = cli.command else {
            panic!("parsed as the wrong subcommand");
        };
        let labels: Vec<String> = args.select.label.iter().map(ToString::to_string).collect();
        assert_eq!(labels, ["region=eu", "tier="]);

        for bad in [
            &["dicectl", "health", "--label", "region"][..],
            &["dicectl", "health", "--label", "=eu"][..],
            &["dicectl", "roll", "--all", "--count", "0"][..],
            &["dicectl", "roll", "--all", "--concurrency", "0"][..],
        ] {
            let error = Cli::try_parse_from(bad).expect_err("invalid");
            assert_eq!(error.exit_code(), 2, "{bad:?}");
        }
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
