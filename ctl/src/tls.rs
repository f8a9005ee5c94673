//! Builds the rustls client configuration from `--ca`, `--cert` and `--key`.
//!
//! The configuration is built once per run and shared (`Arc`) by every
//! connection, so a fan-out over many nodes reads and parses the files once.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use dice_proto::pem::{PemError, load_certs, load_key};
use rustls::{ClientConfig, RootCertStore};

/// The ALPN protocol gRPC runs over.
const ALPN_H2: &[u8] = b"h2";

const CA_HINT: &str = "pass the PEM file of the CA that signed the agents' certificates";
const CERT_HINT: &str = "pass the client certificate, e.g. client.pem from dicectl certs init";
const KEY_HINT: &str = "pass the client certificate's private key, e.g. client-key.pem";

/// A TLS file that could not be used; the message names the flag and the file.
///
/// The PEM error's text is part of the message rather than a chained source:
/// it already says everything, and `{:#}` would otherwise print it twice.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    /// The CA bundle could not be loaded.
    #[error("--ca: {}", pem_message(.0, CA_HINT))]
    Ca(PemError),
    /// The CA bundle holds no certificate usable as a trust anchor.
    #[error(
        "--ca: {}: no usable CA certificate ({CA_HINT})",
        .0.display()
    )]
    NoRoots(PathBuf),
    /// The client certificate chain could not be loaded.
    #[error("--cert: {}", pem_message(.0, CERT_HINT))]
    Cert(PemError),
    /// The client certificate is not a valid X.509 certificate.
    #[error(
        "--cert: {}: {reason} ({CERT_HINT})",
        .path.display()
    )]
    BadCert {
        /// The certificate file.
        path: PathBuf,
        /// What rustls found wrong.
        reason: String,
    },
    /// The private key could not be loaded.
    #[error("--key: {}", pem_message(.0, KEY_HINT))]
    Key(PemError),
    /// The private key is of a kind rustls cannot sign with.
    #[error(
        "--key: {}: unusable private key: {reason} (pass an ECDSA, Ed25519 or RSA key in PEM)",
        .path.display()
    )]
    BadKey {
        /// The key file.
        path: PathBuf,
        /// What rustls found wrong.
        reason: String,
    },
    /// The private key does not belong to the client certificate.
    #[error(
        "--key: {}: does not match the certificate in --cert {} (pass the key that was made with that certificate)",
        .key.display(), .cert.display()
    )]
    KeyMismatch {
        /// The key file.
        key: PathBuf,
        /// The certificate file.
        cert: PathBuf,
    },
    /// rustls refused the configuration for another reason.
    #[error("cannot build the TLS client configuration: {0}")]
    Config(#[source] rustls::Error),
}

/// `PATH: PROBLEM (HINT)`, with the expected PEM block moved out of the
/// parentheses so the message has one hint at the end.
fn pem_message(error: &PemError, hint: &str) -> String {
    match error {
        PemError::Missing { path, what, label } => format!(
            "{}: no {what} found: expected a '-----BEGIN {label}-----' block ({hint})",
            path.display()
        ),
        other => format!("{other} ({hint})"),
    }
}

/// Builds the mTLS client configuration: roots from `ca`, client certificate
/// from `cert` and `key`, ALPN `h2`, the ring provider, TLS 1.2 and 1.3.
pub fn client_config(
    ca: &Path,
    cert: &Path,
    key: &Path,
) -> Result<Arc<ClientConfig>, TlsConfigError> {
    let roots = load_roots(ca)?;
    let chain = load_certs(cert).map_err(TlsConfigError::Cert)?;
    let private_key = load_key(key).map_err(TlsConfigError::Key)?;

    let mut config = ClientConfig::builder_with_provider(dice_proto::crypto::provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsConfigError::Config)?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, private_key)
        .map_err(|error| client_auth_error(cert, key, error))?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

fn load_roots(ca: &Path) -> Result<RootCertStore, TlsConfigError> {
    let mut roots = RootCertStore::empty();
    let (added, _ignored) =
        roots.add_parsable_certificates(load_certs(ca).map_err(TlsConfigError::Ca)?);
    if added == 0 {
        return Err(TlsConfigError::NoRoots(ca.to_owned()));
    }
    Ok(roots)
}

/// Says which of `--cert` and `--key` is at fault.
fn client_auth_error(cert: &Path, key: &Path, error: rustls::Error) -> TlsConfigError {
    match error {
        rustls::Error::InconsistentKeys(_) => TlsConfigError::KeyMismatch {
            key: key.to_owned(),
            cert: cert.to_owned(),
        },
        rustls::Error::InvalidCertificate(reason) => TlsConfigError::BadCert {
            path: cert.to_owned(),
            reason: format!("not a valid certificate: {reason}"),
        },
        // Loading the key is the only other step that can fail here.
        other => TlsConfigError::BadKey {
            path: key.to_owned(),
            reason: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use time::OffsetDateTime;

    use super::*;
    use crate::certs::{self, InitOptions};

    fn pki(dir: &Path) {
        let options = InitOptions {
            out: dir.to_owned(),
            server_sans: Vec::new(),
            force: false,
        };
        certs::init(&options, OffsetDateTime::now_utc()).expect("init");
    }

    #[test]
    fn builds_from_the_dev_pki() {
        let dir = tempfile::tempdir().expect("temp dir");
        pki(dir.path());
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
        pki(dir.path());
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
