//! The command line: every subcommand and flag, parsed with clap derive.
//!
//! Doc comments on the types below are the `--help` text. `--fleet`,
//! `--output` and `-v` are global: they are accepted before or after the
//! subcommand. Connection flags ([`ConnArgs`]) override the fleet file's
//! `[client]` table, or stand in for it in ad-hoc use. The flags several
//! subcommands share live in [`crate::args`]; those of `bench` and `certs`
//! in [`crate::bench`] and [`crate::certs::args`].

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::args::{ConnArgs, DiscoveryArgs, EXIT_STATUS, GlobalArgs, SelectArgs};
use crate::certs::args::CertsCommand;

/// Where nodes and connection settings come from, shown in `roll` and `health` help.
const FLEET_HELP: &str = "\
FLEET FILE:
  Found via --fleet FILE, else $DICECTL_FLEET, else ./fleet.toml. It names
  the nodes ([[nodes]] name, address, server_name, labels) and how to reach
  them ([client] ca, cert, key, timeout, concurrency, expiry_warning);
  flags override [client]. [[discovery]] entries add nodes found at run
  time: kind = \"dns_srv\" (name, server), \"http_sd\" (url, ca, cert, key)
  or \"file_sd\" (path); `dicectl nodes` shows the result. Without a fleet
  file, give --node HOST:PORT with --ca, --cert and --key. See
  config/fleet.toml.";

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
    /// List the fleet's nodes, discovered ones included, without contacting any
    ///
    /// Per node: name, address, server name (the name its certificate must
    /// hold), labels, and source: `static` for [[nodes]], else the
    /// [[discovery]] sources that found it (`dns_srv:NAME`, `http_sd:URL`,
    /// `file_sd:PATH`). What `--all` means for roll and health. Selects
    /// every node by default; exit status 1 if a discovery source failed
    /// (the nodes found are still listed).
    #[command(after_help = roll_after_help())]
    Nodes(NodesArgs),
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

    /// Partial discovery.
    #[command(flatten)]
    pub discovery: DiscoveryArgs,

    /// How to connect.
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// Flags of `dicectl nodes`.
#[derive(Debug, Args)]
pub struct NodesArgs {
    /// Which nodes [default: every node of the fleet file].
    #[command(flatten)]
    pub select: SelectArgs,

    /// Partial discovery.
    #[command(flatten)]
    pub discovery: DiscoveryArgs,
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

    /// Partial discovery.
    #[command(flatten)]
    pub discovery: DiscoveryArgs,

    /// How to connect.
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// Parses a duration with a unit (`14d`, `36h`); zero turns the warning off.
fn parse_expiry_warning(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|error| format!("{error} (write a duration with a unit, e.g. 14d or 36h)"))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;
    use crate::args::OutputFormat;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
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
}
