//! The `dicectl certs` subcommands and their flags (clap derive; the doc
//! comments are `--help`).

use std::path::PathBuf;

use clap::{ArgAction, ArgGroup, Args, Subcommand};

use super::San;
use super::intermediate::DEFAULT_NAME;
use super::keys::KeyType;

/// The exit-status contract of `certs`, shown at the end of its `--help`.
pub const EXIT_STATUS: &str = "\
EXIT STATUS:
  0  done (inspect: every file is OK)
  1  inspect: a certificate is expired or not yet valid, a key does not match
     its certificate, or a chain does not verify against --ca; rotate,
     rotate-ca, status: a node failed, was not run or could not be reached
  2  usage error, or a file that cannot be read or used; nothing was written";

/// Where `--ca-dir` files come from, shown in `issue`, `intermediate` and `renew` help.
pub const CA_DIR_HELP: &str = "\
CA DIRECTORY:
  --ca-dir DIR holds ca.pem (the CA certificate) and ca-key.pem (its key, PEM:
  PKCS#8, PKCS#1 or SEC1), as `certs init` and `certs intermediate` write
  them; an intermediate's DIR also holds chain.pem (the intermediate, then
  each CA up to the root), whose intermediates go into every certificate
  issued from it. Private keys are written with mode 0600, never printed.";

fn ca_dir_after_help() -> String {
    format!("{CA_DIR_HELP}\n\n{EXIT_STATUS}")
}

/// Validity in days: 1 to 100 years' worth.
fn days() -> clap::builder::RangedI64ValueParser<u32> {
    clap::value_parser!(u32).range(1..=36_500)
}

fn parse_san(text: &str) -> Result<San, String> {
    text.parse().map_err(|error| format!("{error}"))
}

/// The `certs` subcommands.
#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Make a dev PKI: a CA, a server certificate for dice-agent and a client certificate for dicectl
    ///
    /// Writes ca.pem, ca-key.pem, server.pem, server-key.pem, client.pem and
    /// client-key.pem (ECDSA P-256). Keys are written with mode 0600. The CA is
    /// valid for 10 years, the leaf certificates for 1 year.
    #[command(after_help = crate::args::EXIT_STATUS)]
    Init(CertsInitArgs),
    /// Issue a server or client certificate from a CA directory
    ///
    /// A server certificate gets extended key usage serverAuth, a client
    /// certificate clientAuth; both get subject CN=NAME and the SANs given
    /// (DNS names, IP addresses, URIs such as spiffe://...). Writes NAME.pem
    /// (the certificate, then the CA's intermediates, if any) and
    /// NAME-key.pem (mode 0600) into --out.
    Issue(IssueArgs),
    /// Make an intermediate CA under a CA directory, as a CA directory of its own
    ///
    /// Writes ca.pem (the intermediate), ca-key.pem (mode 0600) and chain.pem
    /// (the intermediate, then each CA up to the root) into --out. Certificates
    /// issued from it carry the intermediate, so agents serve the full chain
    /// and clients that trust the root verify through it.
    Intermediate(IntermediateArgs),
    /// Show what certificate files say; check a key and a chain
    ///
    /// Per certificate: subject, SANs, issuer, serial, not-before/after, days
    /// left, key type, key usages. With --key, whether the key belongs to the
    /// file's first certificate; with --ca, whether the chain verifies as TLS
    /// peers verify it. Exits 1 if a certificate is expired or not yet valid,
    /// a key does not match, or a chain does not verify. Never prints keys.
    Inspect(InspectArgs),
    /// Renew a certificate: same subject and SANs, new key, serial and validity
    ///
    /// The certificate must have been issued by the CA in --ca-dir and --key
    /// must be its key. A new key of the same type is written to --key, then
    /// the new certificate to --cert, each atomically (temp file, then
    /// rename), so an agent watching the files rotates to the new pair
    /// without dropping a connection.
    Renew(RenewArgs),
    /// Give every selected node a new certificate from a CA directory; keys never leave the nodes
    ///
    /// Per node: the agent stages a new key and sends a CSR (AdminService
    /// PrepareCertificate); dicectl checks that the CSR names exactly the
    /// subject and SANs the node serves, signs it with --ca-dir, installs the
    /// chain (InstallCertificate), then checks with a fresh TLS handshake that
    /// the node serves the new certificate and that its health check answers
    /// SERVING. A node that fails that check is rolled back. Canaries go first,
    /// one after another (a failed canary stops the run), then batches.
    #[command(after_help = super::rotate::args::ROTATE_HELP)]
    Rotate(super::rotate::args::RotateArgs),
    /// Move every selected node from the CA in --ca-dir to the one in --new-ca-dir, in phases
    ///
    /// trust: every node trusts both CAs; reissue: every node serves a
    /// certificate from the new CA (the rotate flow); untrust: every node
    /// trusts the new CA only. Each node's phase is read from the node, so the
    /// same command resumes an interrupted rollover.
    #[command(after_help = rotate_ca_after_help())]
    RotateCa(super::rotate::args::RotateCaArgs),
    /// Show each node's certificate, the CAs it trusts, a staged key and its rollover phase
    ///
    /// Per node: the served subject, serial, issuer, not-after and days left,
    /// the trusted CA fingerprints (first 12 hex digits of SHA-256), whether a
    /// key is staged, and the phase: with --ca-dir and --new-ca-dir, start,
    /// trusted, reissued or done; without, steady (trusts one CA, which signed
    /// its certificate) or mixed. Nodes trusting another set of CAs than most
    /// are flagged. Selects every fleet node by default. Exits 1 if a node
    /// cannot be read.
    #[command(after_help = crate::args::EXIT_STATUS)]
    Status(super::rotate::args::StatusArgs),
}

fn rotate_ca_after_help() -> String {
    format!(
        "{}\n\n{}",
        super::rotate::args::PHASES_HELP,
        super::rotate::args::ROTATE_HELP
    )
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

/// Flags of `dicectl certs issue`.
#[derive(Debug, Args)]
#[command(
    group(ArgGroup::new("role").args(["server", "client"]).required(true)),
    after_help = ca_dir_after_help()
)]
pub struct IssueArgs {
    /// CA directory to issue from (ca.pem and ca-key.pem)
    #[arg(long, value_name = "DIR")]
    pub ca_dir: PathBuf,

    /// Issue a server certificate (serverAuth) with subject CN=NAME, written to
    /// NAME.pem and NAME-key.pem
    #[arg(long, value_name = "NAME")]
    pub server: Option<String>,

    /// Issue a client certificate (clientAuth) with subject CN=NAME, written to
    /// NAME.pem and NAME-key.pem
    #[arg(long, value_name = "NAME")]
    pub client: Option<String>,

    /// Subject alternative name: a DNS name, an IP address or a URI (e.g.
    /// spiffe://dice/node-1), optionally prefixed DNS:, IP: or URI:; repeat
    /// or list several [default: NAME, if it is a DNS name or an IP address]
    #[arg(long = "san", value_name = "SAN", value_parser = parse_san, num_args = 1.., action = ArgAction::Append)]
    pub sans: Vec<San>,

    /// Days the certificate is valid (never past the CA's own not-after);
    /// not-before is backdated 5 minutes
    #[arg(long, value_name = "N", default_value_t = 365, value_parser = days())]
    pub days: u32,

    /// Type of the new private key
    #[arg(long, value_enum, value_name = "TYPE", default_value_t = KeyType::EcdsaP256)]
    pub key_type: KeyType,

    /// Directory to write NAME.pem and NAME-key.pem to; created if missing
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,

    /// Overwrite NAME.pem and NAME-key.pem if they exist
    #[arg(long)]
    pub force: bool,
}

/// Flags of `dicectl certs intermediate`.
#[derive(Debug, Args)]
#[command(after_help = ca_dir_after_help())]
pub struct IntermediateArgs {
    /// CA directory of the CA that signs the intermediate (e.g. the root from `certs init`)
    #[arg(long, value_name = "DIR")]
    pub ca_dir: PathBuf,

    /// Directory to write the intermediate's ca.pem, ca-key.pem and chain.pem
    /// to; created if missing. Pass it as --ca-dir to `certs issue`
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,

    /// Common name of the intermediate CA
    #[arg(long, value_name = "NAME", default_value = DEFAULT_NAME)]
    pub name: String,

    /// Days the intermediate is valid (never past the parent's own not-after)
    #[arg(long, value_name = "N", default_value_t = 1825, value_parser = days())]
    pub days: u32,

    /// Type of the intermediate's private key
    #[arg(long, value_enum, value_name = "TYPE", default_value_t = KeyType::EcdsaP256)]
    pub key_type: KeyType,

    /// Overwrite the files in DIR if they exist
    #[arg(long)]
    pub force: bool,
}

/// Flags of `dicectl certs inspect`.
#[derive(Debug, Args)]
#[command(after_help = EXIT_STATUS)]
pub struct InspectArgs {
    /// Certificate files (PEM chains, leaf first, or one DER certificate)
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,

    /// CA bundle (PEM) each file's chain must verify against, as TLS peers verify it
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,

    /// Private key (PEM) that must match the first certificate of a FILE: the
    /// first --key goes with the first FILE, the second with the second
    #[arg(long, value_name = "FILE", action = ArgAction::Append)]
    pub key: Vec<PathBuf>,
}

/// Flags of `dicectl certs renew`.
#[derive(Debug, Args)]
#[command(after_help = ca_dir_after_help())]
pub struct RenewArgs {
    /// CA directory of the CA that issued the certificate
    #[arg(long, value_name = "DIR")]
    pub ca_dir: PathBuf,

    /// Certificate file to renew; replaced atomically (temp file, then rename)
    #[arg(long, value_name = "FILE")]
    pub cert: PathBuf,

    /// Its private key; must match the certificate, and is replaced by a new
    /// key of the same type (mode 0600), written before the certificate
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,

    /// Days the new certificate is valid [default: the old certificate's lifetime]
    #[arg(long, value_name = "N", value_parser = days())]
    pub days: Option<u32>,
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::args::OutputFormat;
    use crate::cli::{Cli, Command};

    use super::*;

    fn parse(args: &[&str]) -> CertsCommand {
        match Cli::try_parse_from(args).expect("valid flags").command {
            Command::Certs(command) => command,
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn issue_takes_several_sans_after_one_flag_and_defaults() {
        let CertsCommand::Issue(args) = parse(&[
            "dicectl",
            "certs",
            "issue",
            "--ca-dir",
            "ca",
            "--server",
            "node-1",
            "--san",
            "node-1.example",
            "10.0.0.7",
            "--san",
            "spiffe://dice/node-1",
            "--out",
            "out",
        ]) else {
            panic!("not issue");
        };
        let sans: Vec<String> = args.sans.iter().map(ToString::to_string).collect();
        assert_eq!(
            sans,
            [
                "DNS:node-1.example",
                "IP:10.0.0.7",
                "URI:spiffe://dice/node-1"
            ]
        );
        assert_eq!(args.server.as_deref(), Some("node-1"));
        assert_eq!((args.days, args.key_type), (365, KeyType::EcdsaP256));
        assert!(!args.force);
    }

    #[test]
    fn inspect_pairs_keys_and_takes_the_global_output() {
        let cli = Cli::try_parse_from([
            "dicectl",
            "certs",
            "inspect",
            "a.pem",
            "b.pem",
            "--key",
            "a-key.pem",
            "--key",
            "b-key.pem",
            "--output",
            "json",
        ])
        .expect("valid flags");
        assert_eq!(cli.global.output, Some(OutputFormat::Json));
        let Command::Certs(CertsCommand::Inspect(args)) = cli.command else {
            panic!("not inspect");
        };
        assert_eq!(args.files.len(), 2);
        assert_eq!(args.key.len(), 2);
        assert!(args.ca.is_none());
    }

    #[test]
    fn certs_usage_errors_exit_2() {
        for bad in [
            &["dicectl", "certs", "issue", "--ca-dir", "c", "--out", "o"][..],
            &[
                "dicectl", "certs", "issue", "--ca-dir", "c", "--out", "o", "--server", "a",
                "--client", "b",
            ][..],
            &[
                "dicectl",
                "certs",
                "issue",
                "--ca-dir",
                "c",
                "--out",
                "o",
                "--client",
                "a",
                "--key-type",
                "rsa1024",
            ][..],
            &[
                "dicectl", "certs", "renew", "--ca-dir", "c", "--cert", "x.pem",
            ][..],
            &[
                "dicectl", "certs", "renew", "--ca-dir", "c", "--cert", "x", "--key", "k",
                "--days", "0",
            ][..],
            &["dicectl", "certs", "intermediate", "--ca-dir", "c"][..],
            &["dicectl", "certs", "inspect"][..],
        ] {
            let error = Cli::try_parse_from(bad).expect_err("invalid");
            assert_eq!(error.exit_code(), 2, "{bad:?}");
        }
    }

    #[test]
    fn help_documents_the_certs_exit_status() {
        use clap::CommandFactory;
        let mut command = Cli::command();
        let certs = command.find_subcommand_mut("certs").expect("certs");
        let help = certs.render_long_help().to_string();
        assert!(
            help.contains("1  inspect: a certificate is expired"),
            "{help}"
        );
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
