//! Loads PEM files into rustls types, with errors that name the file, and
//! writes certificate chains as PEM.
//!
//! Keys load from PKCS#1 (`RSA PRIVATE KEY`), SEC1 (`EC PRIVATE KEY`) and
//! PKCS#8 (`PRIVATE KEY`), the forms openssl, cfssl and rcgen write.

use std::path::{Path, PathBuf};

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// What went wrong loading a PEM file.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    /// The file could not be read.
    #[error("{}: {}", .path.display(), describe_io(.source))]
    Read {
        /// The file.
        path: PathBuf,
        /// The read error.
        #[source]
        source: std::io::Error,
    },
    /// The file holds no item of the expected kind.
    #[error("{}: no {what} found (expected a PEM file with a '-----BEGIN {label}-----' block)", .path.display())]
    Missing {
        /// The file.
        path: PathBuf,
        /// What was looked for, in words.
        what: &'static str,
        /// The PEM label expected.
        label: &'static str,
    },
    /// The file is not valid PEM.
    #[error("{}: not valid PEM: {detail}", .path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// The parser's complaint.
        detail: String,
    },
}

fn describe_io(error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_owned(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        _ => error.to_string(),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, PemError> {
    std::fs::read(path).map_err(|source| PemError::Read {
        path: path.to_owned(),
        source,
    })
}

fn malformed(path: &Path, error: pem::Error) -> PemError {
    PemError::Malformed {
        path: path.to_owned(),
        detail: format!("{error:?}"),
    }
}

/// Loads every certificate in a PEM file, in file order (a chain: leaf first).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let bytes = read(path)?;
    parse_certs(path, &bytes)
}

/// Parses every certificate in PEM bytes read from `path`.
pub fn parse_certs(path: &Path, bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| malformed(path, error))?;
    if certs.is_empty() {
        return Err(PemError::Missing {
            path: path.to_owned(),
            what: "certificate",
            label: "CERTIFICATE",
        });
    }
    Ok(certs)
}

/// Loads the first private key in a PEM file (PKCS#1, SEC1 or PKCS#8).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    let bytes = read(path)?;
    parse_key(path, &bytes)
}

/// Parses the first private key in PEM bytes read from `path`.
pub fn parse_key(path: &Path, bytes: &[u8]) -> Result<PrivateKeyDer<'static>, PemError> {
    PrivateKeyDer::from_pem_slice(bytes).map_err(|error| match error {
        pem::Error::NoItemsFound => PemError::Missing {
            path: path.to_owned(),
            what: "private key",
            label: "PRIVATE KEY",
        },
        other => malformed(path, other),
    })
}

/// PEM text of `certs`, in order (a chain: leaf first), with LF line endings.
pub fn pem_chain<'a>(certs: impl IntoIterator<Item = &'a CertificateDer<'a>>) -> String {
    let config = ::pem::EncodeConfig::new().set_line_ending(::pem::LineEnding::LF);
    certs
        .into_iter()
        .map(|der| ::pem::encode_config(&::pem::Pem::new("CERTIFICATE", der.to_vec()), config))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_says_no_such_file() {
        let error = load_certs(Path::new("/nonexistent/dice/cert.pem")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "/nonexistent/dice/cert.pem: no such file"
        );
    }

    #[test]
    fn a_written_chain_reads_back_in_order() {
        let certs = [
            CertificateDer::from(vec![1, 2, 3]),
            CertificateDer::from(vec![4, 5]),
        ];
        let text = pem_chain(&certs);
        assert!(text.starts_with("-----BEGIN CERTIFICATE-----\n"), "{text}");
        assert!(!text.contains('\r'), "{text}");
        let read = parse_certs(Path::new("chain.pem"), text.as_bytes()).expect("parse");
        assert_eq!(read, certs);
    }

    #[test]
    fn empty_file_names_what_is_missing() {
        let error = parse_certs(Path::new("x.pem"), b"").unwrap_err();
        assert!(
            error.to_string().contains("no certificate found"),
            "{error}"
        );
        let error = parse_key(Path::new("k.pem"), b"hello").unwrap_err();
        assert!(
            error.to_string().contains("no private key found"),
            "{error}"
        );
    }
}
