//! `dicectl certs issue`: a server or client certificate signed by the CA in
//! a CA directory, written as `OUT/NAME.pem` (the certificate, followed by
//! the CA's intermediates when the CA is one) and `OUT/NAME-key.pem`.

use std::fmt;
use std::path::{Path, PathBuf};

use dice_proto::cert::rfc3339;
use dice_proto::pem::pem_chain;
use time::OffsetDateTime;

use super::build::{self, Role, Validity};
use super::ca::Ca;
use super::keys::{KeyAlgorithm, KeyType};
use super::write::{self, Output};
use super::{CertsError, Issued, San};

/// What `dicectl certs issue` should do.
#[derive(Debug, Clone)]
pub struct IssueOptions {
    /// The CA directory (`ca.pem`, `ca-key.pem`, optional `chain.pem`).
    pub ca_dir: PathBuf,
    /// Server (serverAuth) or client (clientAuth).
    pub role: Role,
    /// The common name, and the file name stem.
    pub name: String,
    /// Subject alternative names; empty means NAME when it is a DNS name or an IP address.
    pub sans: Vec<San>,
    /// Days of validity (cut short to the CA's own not-after).
    pub days: u32,
    /// The new key's type.
    pub key_type: KeyType,
    /// Directory to write to; created if missing.
    pub out: PathBuf,
    /// Overwrite existing files.
    pub force: bool,
}

/// What `issue` made and wrote.
#[derive(Debug, Clone)]
pub struct IssueReport {
    /// The key file, then the certificate file.
    pub files: Vec<PathBuf>,
    /// What the certificate says.
    pub issued: Issued,
    /// The new key's algorithm.
    pub key: KeyAlgorithm,
    /// Intermediate CA certificates written after the leaf.
    pub intermediates: usize,
    /// Set when the validity was cut short to the CA's not-after (Unix seconds).
    pub clamped_to: Option<i64>,
}

impl fmt::Display for IssueReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        describe(f, &self.files, &self.issued, self.key)?;
        if self.intermediates > 0 {
            writeln!(
                f,
                "chain  the certificate, then {} intermediate CA certificate{}",
                self.intermediates,
                if self.intermediates == 1 { "" } else { "s" }
            )?;
        }
        clamp_note(f, self.clamped_to, "CA's")
    }
}

/// `wrote FILE` per file, then `ROLE subject "..." serial ... key ... not
/// after ... SANs ...`, then `issuer "..."`.
pub(super) fn describe(
    f: &mut fmt::Formatter<'_>,
    files: &[PathBuf],
    issued: &Issued,
    key: KeyAlgorithm,
) -> fmt::Result {
    for path in files {
        writeln!(f, "wrote {}", path.display())?;
    }
    let summary = &issued.summary;
    write!(
        f,
        "{:<6} subject \"{}\" serial {} key {} not after {}",
        issued.role,
        summary.subject,
        summary.serial,
        key,
        rfc3339(summary.not_after)
    )?;
    if !summary.sans.is_empty() {
        write!(f, " SANs {}", summary.sans.join(", "))?;
    }
    writeln!(f)?;
    writeln!(f, "issuer \"{}\"", summary.issuer)
}

/// `note   not after cut short to the ISSUER own not-after, TIME`, if it was.
pub(super) fn clamp_note(
    f: &mut fmt::Formatter<'_>,
    clamped_to: Option<i64>,
    issuer: &str,
) -> fmt::Result {
    match clamped_to {
        Some(end) => writeln!(
            f,
            "note   not after cut short to the {issuer} own not-after, {}",
            rfc3339(end)
        ),
        None => Ok(()),
    }
}

/// `OUT/NAME.pem` and `OUT/NAME-key.pem`.
pub fn paths(out: &Path, name: &str) -> (PathBuf, PathBuf) {
    (
        out.join(format!("{name}.pem")),
        out.join(format!("{name}-key.pem")),
    )
}

/// Refuses a NAME that is not a plain file name.
pub fn check_name(flag: &str, name: &str) -> Result<(), CertsError> {
    let plain = !name.is_empty()
        && !name.starts_with(['.', '-'])
        && !name.contains(['/', '\\', '\0'])
        && !name.chars().any(char::is_control);
    if plain {
        Ok(())
    } else {
        Err(CertsError::Message(format!(
            "{flag} {name:?}: not usable as a file name (NAME names the files NAME.pem and NAME-key.pem: use letters, digits, '-', '_' and '.', e.g. node-1)"
        )))
    }
}

/// The SANs of the new certificate: as given, else NAME itself if it is a
/// DNS name or an IP address; a server certificate must have one.
fn sans_for(options: &IssueOptions) -> Result<Vec<San>, CertsError> {
    if !options.sans.is_empty() {
        return Ok(options.sans.clone());
    }
    match (options.name.parse::<San>(), options.role) {
        (Ok(san @ (San::Dns(_) | San::Ip(_))), _) => Ok(vec![san]),
        (_, Role::Client) => Ok(Vec::new()),
        (_, Role::Server) => Err(CertsError::Message(format!(
            "--server {:?}: not a DNS name or an IP address, and no --san given (pass --san with each name clients connect to, e.g. --san node-1.example --san 10.0.0.7)",
            options.name
        ))),
    }
}

/// Issues the certificate at `now` and writes the key, then the certificate.
pub fn issue(options: &IssueOptions, now: OffsetDateTime) -> Result<IssueReport, CertsError> {
    let flag = match options.role {
        Role::Server => "--server",
        Role::Client => "--client",
    };
    check_name(flag, &options.name)?;
    let sans = sans_for(options)?;
    let (cert_path, key_path) = paths(&options.out, &options.name);
    write::refuse_existing([key_path.as_path(), cert_path.as_path()], options.force)?;

    let ca = Ca::load(&options.ca_dir, now.unix_timestamp())?;
    let algorithm = KeyAlgorithm::from(options.key_type);
    let key = algorithm.generate().map_err(CertsError::Message)?;
    let what = options.role.as_str();
    let sans = sans
        .iter()
        .map(San::to_rcgen)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| CertsError::Generate { what, source })?;
    let validity = Validity::new(now, options.days, Some(ca.summary.not_after));
    let params = build::leaf_params(
        build::common_name(&options.name),
        sans,
        build::role_usages(options.role),
        algorithm,
        validity,
    );
    let cert = params
        .signed_by(&key, &ca.issuer)
        .map_err(|source| CertsError::Generate { what, source })?;
    let issued = Issued::parse(what, cert.der())?;
    let chain = pem_chain(std::iter::once(cert.der()).chain(&ca.intermediates));

    write::create_dir(&options.out)?;
    let files = write::write_all(&[
        Output::key(key_path, key.serialize_pem()),
        Output::cert(cert_path, chain),
    ])?;
    Ok(IssueReport {
        files,
        issued,
        key: algorithm,
        intermediates: ca.intermediates.len(),
        clamped_to: validity.clamped.then_some(ca.summary.not_after),
    })
}

#[cfg(test)]
mod tests {
    use std::fs;

    use dice_proto::pem::{load_certs, load_key};
    use x509_parser::prelude::{FromDer, X509Certificate};

    use super::*;
    use crate::certs::fixtures::{init_ca, issue_options, node_1_sans};
    use crate::certs::keys;

    /// The certificate's extended key usages `(serverAuth, clientAuth)`.
    fn auth_usages(x509: &X509Certificate) -> (bool, bool) {
        let eku = x509
            .extended_key_usage()
            .expect("eku")
            .expect("present")
            .value;
        (eku.server_auth, eku.client_auth)
    }

    fn pki() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca_dir = dir.path().join("ca");
        init_ca(&ca_dir);
        (dir, ca_dir)
    }

    #[test]
    fn issues_servers_and_clients_with_their_usages_and_sans() {
        let (dir, ca_dir) = pki();
        let out = dir.path().join("out");
        let mut server = issue_options(&ca_dir, &out, Role::Server, "node-1");
        server.sans = node_1_sans();
        let report = issue(&server, OffsetDateTime::now_utc()).expect("issue server");
        assert_eq!(
            report.issued.summary.sans,
            [
                "DNS:node-1.example",
                "IP:10.0.0.7",
                "URI:spiffe://dice/node-1"
            ]
        );
        assert_eq!(report.issued.summary.subject, "CN=node-1");
        assert_eq!(report.issued.summary.issuer, "CN=dice fleet dev CA");
        let text = report.to_string();
        assert!(
            text.contains("wrote ") && text.contains("node-1-key.pem"),
            "{text}"
        );
        assert!(!text.contains("PRIVATE KEY"), "{text}");

        let chain = load_certs(&out.join("node-1.pem")).expect("cert");
        assert_eq!(chain.len(), 1, "a root CA adds no intermediate");
        let (_, x509) = X509Certificate::from_der(chain[0].as_ref()).expect("x509");
        assert_eq!(auth_usages(&x509), (true, false));
        let key = keys::key_pair(&load_key(&out.join("node-1-key.pem")).expect("key")).expect("kp");
        assert!(keys::matches(&key, x509.public_key()));

        let client = issue_options(&ca_dir, &out, Role::Client, "ops");
        let report = issue(&client, OffsetDateTime::now_utc()).expect("issue client");
        assert_eq!(report.issued.summary.sans, ["DNS:ops"]);
        let chain = load_certs(&out.join("ops.pem")).expect("cert");
        let (_, x509) = X509Certificate::from_der(chain[0].as_ref()).expect("x509");
        assert_eq!(auth_usages(&x509), (false, true));

        let again = issue(&client, OffsetDateTime::now_utc()).expect_err("exists");
        assert!(
            again.to_string().contains("ops-key.pem: already exists"),
            "{again}"
        );
        let _ = fs::remove_dir_all(&out);
    }

    #[test]
    fn validity_is_cut_to_the_ca() {
        let (dir, ca_dir) = pki();
        let mut long = issue_options(&ca_dir, dir.path(), Role::Client, "long");
        long.days = 36_500;
        let report = issue(&long, OffsetDateTime::now_utc()).expect("issue");
        assert!(report.clamped_to.is_some());
        assert!(
            report
                .to_string()
                .contains("cut short to the CA's own not-after")
        );
    }

    #[test]
    fn bad_names_and_missing_sans_are_refused() {
        let (dir, ca_dir) = pki();
        for bad in ["", "../x", ".hidden", "a/b", "-x"] {
            let error = issue(
                &issue_options(&ca_dir, dir.path(), Role::Client, bad),
                OffsetDateTime::now_utc(),
            )
            .expect_err(bad);
            assert!(
                error.to_string().contains("not usable as a file name"),
                "{error}"
            );
        }
        let error = issue(
            &issue_options(&ca_dir, dir.path(), Role::Server, "web server"),
            OffsetDateTime::now_utc(),
        )
        .expect_err("no SAN");
        assert!(error.to_string().contains("pass --san"), "{error}");

        let missing = dir.path().join("nowhere");
        let error = issue(
            &issue_options(&missing, dir.path(), Role::Client, "x"),
            OffsetDateTime::now_utc(),
        )
        .expect_err("no CA");
        let text = error.to_string();
        assert!(text.contains("nowhere/ca.pem: no such file"), "{text}");
        assert!(text.contains("pass --ca-dir"), "{text}");
    }
}
