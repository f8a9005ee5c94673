//! The flags of `certs rotate`, `certs rotate-ca` and `certs status` (clap
//! derive; the doc comments are `--help`).

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Args, ValueEnum};

use super::batches::BatchSize;
use crate::args::{ConnArgs, SelectArgs};

/// How the nodes are reached and what the exit status means, after `rotate` and `rotate-ca` help.
pub const ROTATE_HELP: &str = "\
AUDIT LOG:
  Every action on every node (prepare, sign, install, verify, rollback,
  skip, set_trust) is appended to audit.jsonl in --ca-dir, one JSON line
  each: time, operator (the subject of dicectl's client certificate), node,
  action, old_serial, new_serial, outcome (ok, failed, refused, skipped),
  error when not ok; trust changes add old_trust and new_trust (CA
  fingerprints). No key and no CSR is ever written. --dry-run writes none.

NODES:
  As for `dicectl roll`: --fleet FILE (else $DICECTL_FLEET, else
  ./fleet.toml) names the nodes and [client] ca, cert, key; flags override.
  Each node needs the agent's [admin] table, with allow naming dicectl's
  client identity.

EXIT STATUS:
  0  every selected node rotated (or was skipped by --if-expires-within)
  1  a node failed, was rolled back, was not run, or was unreachable
  2  usage error, or a CA directory or file that cannot be used; no node
     was touched";

/// The phases of a CA rollover, after `rotate-ca` help.
pub const PHASES_HELP: &str = "\
PHASES:
  trust    every node trusts OLD and NEW: SetTrust with the bundle it has,
           plus NEW's root (other CAs it trusts are kept)
  reissue  every node serves a certificate from NEW (the rotate flow; a node
           must trust NEW first)
  untrust  every node trusts NEW, not OLD: SetTrust without OLD's CAs.
           Refused while a selected node is not through reissue, and while
           dicectl's own client certificate does not verify under NEW (make
           one with `dicectl certs issue --ca-dir NEW --client NAME --out DIR`,
           then pass --cert and --key)
  Without --phase, each node's phase is read from the node itself (the CAs
  it trusts, the CA that signed its certificate) and what is left runs in
  order: run the same command again to resume an interrupted rollover.
  dicectl trusts agents of OLD and NEW (beside --ca) for the whole run.
  Nodes accept dicectl's client certificate from OLD until untrust: run
  trust and reissue with it, then untrust with one from NEW. When untrust is
  left for that reason, the earlier phases are done, the output says so and
  how to finish, and the exit status is 1.";

/// How a rotation proceeds: validity, canaries, batches, stop rule.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Rotation")]
pub struct ScheduleArgs {
    /// Days of validity of the new certificates (cut short to the CA's own not-after)
    #[arg(long, value_name = "N", default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=36_500))]
    pub days: u32,

    /// Nodes rotated first, one after another; if one fails, the run stops
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub canary: usize,

    /// Nodes per batch after the canaries, a number or a percentage of the
    /// selection (rounded up); a batch's nodes run side by side (at most
    /// --concurrency), the next batch after it finishes
    #[arg(long, value_name = "N|P%", default_value = "10%")]
    pub batch: BatchSize,

    /// Stop once more than N nodes failed; nodes not started by then are `not run`
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub max_failed: usize,
}

/// Flags of `dicectl certs rotate`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("rotate-select").args(["all", "node", "label"]).required(true)))]
pub struct RotateArgs {
    /// CA directory that signs the new certificates (ca.pem, ca-key.pem,
    /// chain.pem for an intermediate); audit.jsonl is appended here
    #[arg(long, value_name = "DIR")]
    pub ca_dir: PathBuf,

    /// Rotate only nodes whose certificate expires within DURATION (e.g. 30d);
    /// the others are `skipped`
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub if_expires_within: Option<Duration>,

    /// Connect and read each node's certificate only; print what would be
    /// done (would rotate, would skip and why, canary or batch); change nothing
    #[arg(long)]
    pub dry_run: bool,

    /// Validity, canaries and batches.
    #[command(flatten)]
    pub schedule: ScheduleArgs,

    /// Which nodes.
    #[command(flatten)]
    pub select: SelectArgs,

    /// How to connect.
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// A phase of a CA rollover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Phase {
    /// Every node trusts OLD and NEW
    Trust,
    /// Every node serves a certificate from NEW
    Reissue,
    /// Every node trusts NEW only
    Untrust,
}

impl Phase {
    /// `trust`, `reissue`, `untrust`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trust => "trust",
            Self::Reissue => "reissue",
            Self::Untrust => "untrust",
        }
    }
}

/// Flags of `dicectl certs rotate-ca`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("rotate-ca-select").args(["all", "node", "label"]).required(true)))]
pub struct RotateCaArgs {
    /// The CA directory the fleet uses now (OLD); audit.jsonl is appended here
    #[arg(long, value_name = "OLD")]
    pub ca_dir: PathBuf,

    /// The CA directory to move the fleet to (NEW), e.g. from `dicectl certs init`
    #[arg(long, value_name = "NEW")]
    pub new_ca_dir: PathBuf,

    /// Run this phase only [default: what each node still needs, in order]
    #[arg(long, value_enum)]
    pub phase: Option<Phase>,

    /// Read each node's phase and print what would run; change nothing
    #[arg(long)]
    pub dry_run: bool,

    /// Validity, canaries and batches (of the reissue phase).
    #[command(flatten)]
    pub schedule: ScheduleArgs,

    /// Which nodes.
    #[command(flatten)]
    pub select: SelectArgs,

    /// How to connect.
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// Flags of `dicectl certs status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// With --new-ca-dir: name each node's rollover phase (start, trusted,
    /// reissued, done) from the CA directory the fleet uses now
    #[arg(long, value_name = "OLD", requires = "new_ca_dir")]
    pub ca_dir: Option<PathBuf>,

    /// With --ca-dir: the CA directory the fleet moves to
    #[arg(long, value_name = "NEW", requires = "ca_dir")]
    pub new_ca_dir: Option<PathBuf>,

    /// Which nodes [default: every node of the fleet file].
    #[command(flatten)]
    pub select: SelectArgs,

    /// How to connect.
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// Parses a duration with a unit (`30d`, `12h`).
fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|error| format!("{error} (write a duration with a unit, e.g. 30d or 12h)"))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::certs::args::CertsCommand;
    use crate::cli::{Cli, Command};
    use crate::testing::Pki;

    fn parse(args: &[&str]) -> Result<CertsCommand, clap::Error> {
        let cli = Cli::try_parse_from(args)?;
        match cli.command {
            Command::Certs(command) => Ok(command),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn rotate_defaults_and_flags() {
        let Ok(CertsCommand::Rotate(args)) =
            parse(&["dicectl", "certs", "rotate", "--all", "--ca-dir", "ca"])
        else {
            panic!("not rotate");
        };
        assert_eq!(args.schedule.days, 365);
        assert_eq!(args.schedule.canary, 1);
        assert_eq!(args.schedule.batch, BatchSize::Percent(10));
        assert_eq!(args.schedule.max_failed, 0);
        assert!(!args.dry_run && args.if_expires_within.is_none());

        let Ok(CertsCommand::Rotate(args)) = parse(&[
            "dicectl",
            "certs",
            "rotate",
            "--node",
            "a",
            "b",
            "--ca-dir",
            "ca",
            "--batch",
            "25%",
            "--canary",
            "0",
            "--max-failed",
            "2",
            "--if-expires-within",
            "30d",
            "--dry-run",
        ]) else {
            panic!("not rotate");
        };
        assert_eq!(args.schedule.batch, BatchSize::Percent(25));
        assert_eq!(args.schedule.canary, 0);
        assert_eq!(
            args.if_expires_within,
            Some(Duration::from_secs(30 * 86_400))
        );
        assert!(args.dry_run);
    }

    #[test]
    fn usage_errors_exit_2() {
        for bad in [
            &["dicectl", "certs", "rotate", "--ca-dir", "ca"][..],
            &["dicectl", "certs", "rotate", "--all"][..],
            &[
                "dicectl", "certs", "rotate", "--all", "--ca-dir", "ca", "--batch", "0",
            ][..],
            &[
                "dicectl", "certs", "rotate", "--all", "--ca-dir", "ca", "--days", "0",
            ][..],
            &[
                "dicectl",
                "certs",
                "rotate",
                "--all",
                "--ca-dir",
                "ca",
                "--if-expires-within",
                "30",
            ][..],
            &["dicectl", "certs", "rotate-ca", "--all", "--ca-dir", "a"][..],
            &[
                "dicectl",
                "certs",
                "rotate-ca",
                "--all",
                "--ca-dir",
                "a",
                "--new-ca-dir",
                "b",
                "--phase",
                "soon",
            ][..],
            &["dicectl", "certs", "status", "--ca-dir", "a"][..],
        ] {
            let error = parse(bad).expect_err("refused");
            assert_eq!(error.exit_code(), 2, "{bad:?}");
        }
        assert!(matches!(
            parse(&[
                "dicectl",
                "certs",
                "rotate-ca",
                "--all",
                "--ca-dir",
                "a",
                "--new-ca-dir",
                "b",
                "--phase",
                "untrust"
            ]),
            Ok(CertsCommand::RotateCa(RotateCaArgs {
                phase: Some(Phase::Untrust),
                ..
            }))
        ));
        assert!(matches!(
            parse(&["dicectl", "certs", "status"]),
            Ok(CertsCommand::Status(_))
        ));
    }

    fn run(args: &[&str]) -> anyhow::Result<crate::Outcome> {
        let cli = Cli::try_parse_from(args).expect("parses");
        crate::run(cli)
    }

    /// A bad CA directory, or untrust while dicectl's certificate is from
    /// the old CA: an error (exit 2) before any node is touched (the node
    /// here does not exist, so touching it would be a failed node instead).
    #[test]
    fn refusals_before_any_node_is_touched() {
        let (old, new) = (Pki::new(), Pki::new());
        let conn = |pki: &Pki| {
            [
                "--ca".to_owned(),
                pki.file("ca.pem").display().to_string(),
                "--cert".to_owned(),
                pki.file("client.pem").display().to_string(),
                "--key".to_owned(),
                pki.file("client-key.pem").display().to_string(),
            ]
        };
        let old_conn = conn(&old);
        let with = |head: &[&str], tail: &[String]| -> Vec<String> {
            head.iter()
                .map(|s| (*s).to_owned())
                .chain(tail.iter().cloned())
                .collect()
        };

        let missing = with(
            &[
                "dicectl",
                "certs",
                "rotate",
                "--node",
                "127.0.0.1:1",
                "--ca-dir",
                "/nonexistent",
            ],
            &old_conn,
        );
        let error =
            run(&missing.iter().map(String::as_str).collect::<Vec<_>>()).expect_err("no CA");
        assert!(format!("{error:#}").contains("ca.pem"), "{error:#}");

        let old_dir = old.file("").display().to_string();
        let new_dir = new.file("").display().to_string();
        let untrust = with(
            &[
                "dicectl",
                "certs",
                "rotate-ca",
                "--node",
                "127.0.0.1:1",
                "--ca-dir",
                &old_dir,
                "--new-ca-dir",
                &new_dir,
                "--phase",
                "untrust",
            ],
            &old_conn,
        );
        let error =
            run(&untrust.iter().map(String::as_str).collect::<Vec<_>>()).expect_err("refused");
        let text = format!("{error:#}");
        assert!(
            text.starts_with(
                "untrust refused: dicectl's client certificate does not verify under the new CA"
            ),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "dicectl certs issue --ca-dir {new_dir} --client NAME --out DIR"
            )),
            "{text}"
        );
        assert!(
            !old.file("audit.jsonl").exists(),
            "nothing done, nothing audited"
        );

        let same = with(
            &[
                "dicectl",
                "certs",
                "rotate-ca",
                "--node",
                "127.0.0.1:1",
                "--ca-dir",
                &old_dir,
                "--new-ca-dir",
                &old_dir,
            ],
            &old_conn,
        );
        let error = run(&same.iter().map(String::as_str).collect::<Vec<_>>()).expect_err("same CA");
        assert!(
            error.to_string().contains("hold the same CA certificate"),
            "{error}"
        );
    }
}
