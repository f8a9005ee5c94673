//! `dicectl certs`: makes and manages the fleet's certificates with rcgen.
//!
//! - [`args`]: the subcommands and their flags (`--help` text).
//! - [`init`](mod@init): a dev PKI, a CA with a server and a client certificate.
//! - [`issue`](mod@issue): a server or client certificate from a CA directory.
//! - [`intermediate`](mod@intermediate): an intermediate CA under a CA directory.
//! - [`inspect`](mod@inspect): what certificate files say, whether a key matches and a chain
//!   verifies; [`inspect_output`] shows it as text or JSON.
//! - [`renew`](mod@renew): the same certificate with a new key, serial and validity, replaced
//!   atomically so a watching agent rotates cleanly.
//! - [`rotate`](mod@rotate): `certs rotate`, `rotate-ca` and `status`: new certificates and a
//!   new CA across the fleet, keys made on the nodes, every action in an audit log.
//! - [`ca`]: a CA directory (`ca.pem`, `ca-key.pem`, `chain.pem`); [`keys`] (from
//!   `dice_proto`, which the agent shares): key types and key forms (PKCS#1, SEC1, PKCS#8); [`san`]: SANs; [`build`]: what every certificate
//!   has in common; [`write`](mod@write): atomic writes, keys with mode 0600.
//!
//! Private keys are generated in memory, written with mode 0600 and never printed.

pub mod args;
pub mod build;
pub mod ca;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod init;
pub mod inspect;
pub mod inspect_output;
pub mod intermediate;
pub mod issue;
pub mod renew;
pub mod rotate;
pub mod san;
pub mod write;

use std::io;
use std::path::PathBuf;

use dice_proto::cert::CertSummary;
use rustls::pki_types::CertificateDer;
use time::OffsetDateTime;

pub use dice_proto::keys::{self, KeyType};
pub use init::{
    CA_CERT, CA_COMMON_NAME, CA_KEY, CLIENT_CERT, CLIENT_COMMON_NAME, CLIENT_KEY,
    DEFAULT_SERVER_SANS, FILES, InitOptions, InitReport, SERVER_CERT, SERVER_COMMON_NAME,
    SERVER_KEY, default_server_sans, init,
};
pub use san::{San, SanParseError};

use self::args::CertsCommand;
use crate::Outcome;
use crate::args::{GlobalArgs, OutputFormat};

/// What went wrong making or reading certificates. Every case means nothing
/// was written (or, for `inspect`, nothing was reported): exit status 2.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    /// A file would be overwritten and `--force` was not given.
    #[error("{}: already exists (pass --force to replace it)", .path.display())]
    Exists {
        /// The existing file.
        path: PathBuf,
    },
    /// A directory or file could not be created or written.
    #[error("{}: {action}", .path.display())]
    Io {
        /// The directory or file.
        path: PathBuf,
        /// What was being done, e.g. `cannot create directory`.
        action: &'static str,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// rcgen refused the parameters, e.g. a SAN it cannot encode.
    #[error("cannot generate the {what} certificate")]
    Generate {
        /// Which certificate: `CA`, `server` or `client`.
        what: &'static str,
        /// rcgen's error.
        #[source]
        source: rcgen::Error,
    },
    /// A certificate rcgen made could not be read back, which would be a bug.
    #[error("cannot read back the {what} certificate")]
    Summary {
        /// Which certificate.
        what: &'static str,
        /// The parse error.
        #[source]
        source: dice_proto::cert::CertParseError,
    },
    /// A file that cannot be used: `PATH: WHAT IS WRONG (WHAT TO DO)`.
    #[error("{}: {message}", .path.display())]
    File {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong with it, and what to do.
        message: String,
    },
    /// Anything else, already worded in full (e.g. a PEM error naming its file, or a bad flag).
    #[error("{0}")]
    Message(String),
}

impl CertsError {
    /// A PEM file that cannot be used, as `PATH: PROBLEM (HINT)`: the
    /// expected PEM block moves out of the parentheses so there is one hint.
    pub fn pem(error: &dice_proto::pem::PemError, hint: &str) -> Self {
        match error {
            dice_proto::pem::PemError::Missing { path, what, label } => Self::Message(format!(
                "{}: no {what} found: expected a '-----BEGIN {label}-----' block ({hint})",
                path.display()
            )),
            other => Self::Message(format!("{other} ({hint})")),
        }
    }
}

/// One certificate that was made, for the report.
#[derive(Debug, Clone)]
pub struct Issued {
    /// `CA`, `server` or `client`.
    pub role: &'static str,
    /// Subject, serial, SANs and validity.
    pub summary: CertSummary,
}

impl Issued {
    /// Reads back a certificate just made.
    pub fn parse(role: &'static str, der: &CertificateDer<'_>) -> Result<Self, CertsError> {
        let summary =
            CertSummary::parse(der).map_err(|source| CertsError::Summary { what: role, source })?;
        Ok(Self { role, summary })
    }
}

/// Runs a `dicectl certs` subcommand. An error means nothing was done (exit
/// 2); `inspect` finding a problem is [`Outcome::NodeFailed`] (exit 1).
pub fn run(global: &GlobalArgs, command: CertsCommand) -> anyhow::Result<Outcome> {
    let now = OffsetDateTime::now_utc();
    let text = match command {
        CertsCommand::Init(args) => {
            let options = InitOptions {
                out: args.out,
                server_sans: args.server_sans,
                force: args.force,
            };
            init(&options, now)?.to_string()
        }
        CertsCommand::Issue(args) => {
            let (role, name) = match (args.server, args.client) {
                (Some(name), _) => (build::Role::Server, name),
                (None, Some(name)) => (build::Role::Client, name),
                // clap requires exactly one of the two.
                (None, None) => anyhow::bail!("pass --server NAME or --client NAME"),
            };
            let options = issue::IssueOptions {
                ca_dir: args.ca_dir,
                role,
                name,
                sans: args.sans,
                days: args.days,
                key_type: args.key_type,
                out: args.out,
                force: args.force,
            };
            issue::issue(&options, now)?.to_string()
        }
        CertsCommand::Intermediate(args) => {
            let options = intermediate::IntermediateOptions {
                ca_dir: args.ca_dir,
                out: args.out,
                name: args.name,
                days: args.days,
                key_type: args.key_type,
                force: args.force,
            };
            intermediate::intermediate(&options, now)?.to_string()
        }
        CertsCommand::Renew(args) => {
            let options = renew::RenewOptions {
                ca_dir: args.ca_dir,
                cert: args.cert,
                key: args.key,
                days: args.days,
            };
            renew::renew(&options, now)?.to_string()
        }
        CertsCommand::Rotate(args) => return rotate::run(global, &args),
        CertsCommand::RotateCa(args) => return rotate::rollover::run(global, &args),
        CertsCommand::Status(args) => return rotate::status::run(global, &args),
        CertsCommand::Inspect(args) => {
            let options = inspect::InspectOptions {
                files: args.files,
                ca: args.ca,
                keys: args.key,
            };
            let report = inspect::inspect(&options, now.unix_timestamp())?;
            let text = match global.output {
                Some(OutputFormat::Json) => inspect_output::json(&report),
                Some(OutputFormat::Jsonl) => {
                    crate::output::jsonl::one_line(&inspect_output::json(&report))
                }
                _ => inspect_output::text(&report),
            };
            crate::output::stdout(&text)?;
            return Ok(Outcome::from_all_ok(report.ok()));
        }
    };
    crate::output::stdout(&text)?;
    Ok(Outcome::Success)
}
