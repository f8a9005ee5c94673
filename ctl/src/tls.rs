//! Builds the rustls client configuration from `--ca`, `--cert` and `--key`,
//! or from the `[client]` table of a fleet file.
//!
//! The configuration is built once per run and shared (`Arc`) by every
//! connection, so a fan-out over many nodes reads and parses the files once.
//! Errors name where each file was set: the flag (`--ca: ...`) or the fleet
//! file, line and key (`fleet.toml line 3: client.ca: ...`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dice_proto::pem::{PemError, load_certs, load_key};
use rustls::client::Resumption;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

/// The ALPN protocol gRPC runs over.
const ALPN_H2: &[u8] = b"h2";

const CA_HINT: &str = "the PEM file of the CA that signed the agents' certificates";
const CERT_HINT: &str = "the client certificate, e.g. client.pem from dicectl certs init";
const KEY_HINT: &str = "the client certificate's private key, e.g. client-key.pem";

// === impl PemFile ===

/// Where a TLS file was named: a flag, or a key in a fleet file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A command-line flag, e.g. `--ca`.
    Flag(&'static str),
    /// A key of a fleet file, e.g. `client.ca` on line 3.
    Fleet {
        /// The fleet file.
        file: PathBuf,
        /// 1-based line of the value.
        line: usize,
        /// The dotted key, e.g. `client.ca`.
        key: &'static str,
    },
}

impl Source {
    /// The flag or key on its own: `--ca`, `client.ca`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Flag(flag) => flag,
            Self::Fleet { key, .. } => key,
        }
    }

    /// How to point it at another file: `pass --ca`, `set client.ca to`.
    fn advice(&self, what: &str) -> String {
        match self {
            Self::Flag(flag) => format!("pass {flag} {what}"),
            Self::Fleet { key, .. } => format!("set {key} to {what}"),
        }
    }
}

impl fmt::Display for Source {
    /// The prefix of an error: `--ca` or `fleet.toml line 3: client.ca`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Flag(flag) => f.write_str(flag),
            Self::Fleet { file, line, key } => write!(f, "{} line {line}: {key}", file.display()),
        }
    }
}

/// A PEM file and where it was named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PemFile {
    /// The path, as given or resolved against the fleet file's folder.
    pub path: PathBuf,
    /// The flag or fleet-file key that named it.
    pub source: Source,
}

impl PemFile {
    /// A file named by `flag`.
    pub fn flag(flag: &'static str, path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            source: Source::Flag(flag),
        }
    }
}

/// The three files of a client identity: trust anchors, certificate, key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFiles {
    /// CA bundle the agents' certificates must chain to.
    pub ca: PemFile,
    /// Client certificate chain, leaf first.
    pub cert: PemFile,
    /// Private key of the client certificate.
    pub key: PemFile,
}

// === impl TlsConfigError ===

/// A TLS file that could not be used. Displays as
/// `SOURCE: PATH: PROBLEM (WHAT TO DO)`, e.g.
/// `--ca: ca.pem: no such file (pass --ca the PEM file of the CA ...)`.
///
/// The PEM error's text is part of the message rather than a chained source:
/// it already says everything, and `{:#}` would otherwise print it twice.
#[derive(Debug, thiserror::Error)]
#[error("{source_name}: {detail}")]
pub struct TlsConfigError {
    source_name: Source,
    detail: String,
}

impl TlsConfigError {
    fn new(file: &PemFile, detail: String) -> Self {
        Self {
            source_name: file.source.clone(),
            detail,
        }
    }

    /// Where the file at fault was named.
    pub fn source_name(&self) -> &Source {
        &self.source_name
    }
}

/// `PATH: PROBLEM (HINT)`, with the expected PEM block moved out of the
/// parentheses so the message has one hint at the end.
fn pem_error(file: &PemFile, error: &PemError, what: &str) -> TlsConfigError {
    let hint = file.source.advice(what);
    let detail = match error {
        PemError::Missing { path, what, label } => format!(
            "{}: no {what} found: expected a '-----BEGIN {label}-----' block ({hint})",
            path.display()
        ),
        other => format!("{other} ({hint})"),
    };
    TlsConfigError::new(file, detail)
}

/// Builds the mTLS client configuration from the three flags: roots from `ca`,
/// client certificate from `cert` and `key`, ALPN `h2`, the ring provider,
/// TLS 1.2 and 1.3.
pub fn client_config(
    ca: &Path,
    cert: &Path,
    key: &Path,
) -> Result<Arc<ClientConfig>, TlsConfigError> {
    let files = ClientFiles {
        ca: PemFile::flag("--ca", ca),
        cert: PemFile::flag("--cert", cert),
        key: PemFile::flag("--key", key),
    };
    client_config_from(&files)
}

/// Builds the mTLS client configuration from `files`, wherever they were named.
///
/// Sessions are never resumed: a run talks to each node once, so a session
/// cache could only pay off between fleet entries that share an agent and a
/// server name, which real fleets do not (and a benchmark must not count on);
/// and `health` must see the certificate each node serves now.
pub fn client_config_from(files: &ClientFiles) -> Result<Arc<ClientConfig>, TlsConfigError> {
    client_config_with_roots(files, &[])
}

/// As [`client_config_from`], trusting `extra_roots` beside the CAs of
/// `files.ca` (`certs rotate-ca` trusts the servers of the old and the new CA).
pub fn client_config_with_roots(
    files: &ClientFiles,
    extra_roots: &[CertificateDer<'static>],
) -> Result<Arc<ClientConfig>, TlsConfigError> {
    let mut roots = load_roots(&files.ca)?;
    roots.add_parsable_certificates(extra_roots.iter().cloned());
    let chain = load_certs(&files.cert.path).map_err(|e| pem_error(&files.cert, &e, CERT_HINT))?;
    let private_key = load_key(&files.key.path).map_err(|e| pem_error(&files.key, &e, KEY_HINT))?;

    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|error| {
            TlsConfigError::new(
                &files.cert,
                format!("cannot build the TLS client configuration: {error}"),
            )
        })?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, private_key)
        .map_err(|error| client_auth_error(files, error))?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

/// The ring provider, offering TLS 1.3 AES-128-GCM-SHA256 first.
///
/// A fan-out is mostly handshakes, and a TLS 1.3 handshake is mostly key
/// schedule and signatures: SHA-256 runs in hardware on most CPUs (SHA-NI,
/// ARMv8), SHA-384 does not. Both suites are safe; agents follow the
/// client's order, so this halves the hashing on both ends.
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|suite| suite.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    Arc::new(provider)
}

fn load_roots(ca: &PemFile) -> Result<RootCertStore, TlsConfigError> {
    let certs = load_certs(&ca.path).map_err(|e| pem_error(ca, &e, CA_HINT))?;
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        let detail = format!(
            "{}: no usable CA certificate ({})",
            ca.path.display(),
            ca.source.advice(CA_HINT)
        );
        return Err(TlsConfigError::new(ca, detail));
    }
    Ok(roots)
}

/// Says which of the certificate and the key is at fault.
fn client_auth_error(files: &ClientFiles, error: rustls::Error) -> TlsConfigError {
    let (cert, key) = (&files.cert, &files.key);
    match error {
        rustls::Error::InconsistentKeys(_) => TlsConfigError::new(
            key,
            format!(
                "{}: does not match the certificate in {} {} ({})",
                key.path.display(),
                cert.source.name(),
                cert.path.display(),
                key.source
                    .advice("the key that was made with that certificate")
            ),
        ),
        rustls::Error::InvalidCertificate(reason) => TlsConfigError::new(
            cert,
            format!(
                "{}: not a valid certificate: {reason} ({})",
                cert.path.display(),
                cert.source.advice(CERT_HINT)
            ),
        ),
        // Loading the key is the only other step that can fail here.
        other => TlsConfigError::new(
            key,
            format!(
                "{}: unusable private key: {other} ({})",
                key.path.display(),
                key.source.advice("an ECDSA, Ed25519 or RSA key in PEM")
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::certs::fixtures::init_ca;

    #[test]
    fn builds_from_the_dev_pki() {
        let dir = tempfile::tempdir().expect("temp dir");
        init_ca(dir.path());
        let file = |name| dir.path().join(name);
        let config = client_config(
            &file("ca.pem"),
            &file("client.pem"),
            &file("client-key.pem"),
        )
        .expect("config");
        assert_eq!(config.alpn_protocols, [b"h2".to_vec()]);
        assert!(config.client_auth_cert_resolver.has_certs());
    }

    #[test]
    fn errors_name_the_flag_and_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        init_ca(dir.path());
        let file = |name| dir.path().join(name);
        fs::write(file("garbage.pem"), "not pem at all").expect("write");
        let missing = file("missing.pem");

        let cases = [
            (
                missing.clone(),
                file("client.pem"),
                file("client-key.pem"),
                "--ca: ",
                "missing.pem: no such file",
            ),
            (
                file("garbage.pem"),
                file("client.pem"),
                file("client-key.pem"),
                "--ca: ",
                "no certificate found",
            ),
            (
                file("ca.pem"),
                missing.clone(),
                file("client-key.pem"),
                "--cert: ",
                "missing.pem: no such file",
            ),
            (
                file("ca.pem"),
                file("client-key.pem"),
                file("client-key.pem"),
                "--cert: ",
                "no certificate found",
            ),
            (
                file("ca.pem"),
                file("client.pem"),
                missing.clone(),
                "--key: ",
                "missing.pem: no such file",
            ),
            (
                file("ca.pem"),
                file("client.pem"),
                file("client.pem"),
                "--key: ",
                "no private key found",
            ),
            (
                file("ca.pem"),
                file("client.pem"),
                file("server-key.pem"),
                "--key: ",
                "does not match the certificate in --cert",
            ),
        ];
        for (ca, cert, key, flag, detail) in cases {
            let error = client_config(&ca, &cert, &key).expect_err("bad files must be refused");
            let text = error.to_string();
            assert!(text.starts_with(flag), "{text}");
            assert!(text.contains(detail), "{text}");
            assert!(text.ends_with(')'), "no hint: {text}");
        }
    }
}
