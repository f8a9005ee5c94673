//! A CA directory (`--ca-dir DIR`): the issuing CA's certificate `ca.pem`,
//! its key `ca-key.pem`, and for an intermediate CA `chain.pem`, the path from
//! it up to the root. `certs init` and `certs intermediate` write this layout;
//! a CA made with openssl or cfssl works too once its files have these names.

use std::path::{Path, PathBuf};

use dice_proto::cert::{CertSummary, rfc3339};
use dice_proto::pem::{load_certs, load_key};
use rcgen::{Issuer, KeyPair};
use rustls::pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{CertsError, keys};

/// The issuing CA certificate's file name.
pub const CA_CERT: &str = "ca.pem";
/// The issuing CA key's file name.
pub const CA_KEY: &str = "ca-key.pem";
/// An intermediate CA's chain: its certificate first, the root last.
pub const CA_CHAIN: &str = "chain.pem";

/// What to tell someone whose `--ca-dir` is not one.
const CA_DIR_HINT: &str = "pass --ca-dir a folder with ca.pem and ca-key.pem, as `dicectl certs init` or `dicectl certs intermediate` write";

/// A CA loaded from its directory, ready to sign.
pub struct Ca {
    /// The directory.
    pub dir: PathBuf,
    /// The CA certificate.
    pub cert: CertificateDer<'static>,
    /// What it says.
    pub summary: CertSummary,
    /// Signs with the CA's key, as the CA's subject.
    pub issuer: Issuer<'static, KeyPair>,
    /// The CA's path length constraint; `None` when unconstrained.
    pub path_len: Option<u32>,
    /// This CA and the CAs above it, this one first (the whole of `chain.pem`).
    pub full_chain: Vec<CertificateDer<'static>>,
    /// What a certificate this CA issues is served with: the CAs of
    /// [`Ca::full_chain`] that are not self-signed roots (clients hold those).
    pub intermediates: Vec<CertificateDer<'static>>,
}

impl std::fmt::Debug for Ca {
    /// Never shows the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("dir", &self.dir)
            .field("subject", &self.summary.subject)
            .finish_non_exhaustive()
    }
}

fn file_error(path: &Path, message: impl Into<String>) -> CertsError {
    CertsError::File {
        path: path.to_owned(),
        message: message.into(),
    }
}

impl Ca {
    /// Loads and checks the CA in `dir` at `now` (Unix seconds): the
    /// certificate is a CA allowed to sign certificates, valid now, and the
    /// key is its key.
    pub fn load(dir: &Path, now: i64) -> Result<Self, CertsError> {
        let cert_path = dir.join(CA_CERT);
        let key_path = dir.join(CA_KEY);
        let certs = load_certs(&cert_path).map_err(|e| CertsError::pem(&e, CA_DIR_HINT))?;
        let key_der = load_key(&key_path).map_err(|e| CertsError::pem(&e, CA_DIR_HINT))?;
        let key = keys::key_pair(&key_der).map_err(|message| file_error(&key_path, message))?;

        let cert = certs[0].clone();
        let (_, x509) = X509Certificate::from_der(cert.as_ref())
            .map_err(|e| file_error(&cert_path, format!("not a valid X.509 certificate: {e}")))?;
        let summary =
            CertSummary::parse(&cert).map_err(|e| file_error(&cert_path, e.to_string()))?;
        let constraints = x509
            .basic_constraints()
            .ok()
            .flatten()
            .map(|ext| ext.value.clone());
        let path_len = match constraints {
            Some(constraints) if constraints.ca => constraints.path_len_constraint,
            _ => {
                return Err(file_error(
                    &cert_path,
                    format!(
                        "\"{}\" is not a CA certificate: it lacks basicConstraints CA:TRUE ({CA_DIR_HINT})",
                        summary.subject
                    ),
                ));
            }
        };
        if let Ok(Some(usage)) = x509.key_usage()
            && !usage.value.key_cert_sign()
        {
            return Err(file_error(
                &cert_path,
                format!(
                    "\"{}\" may not sign certificates: its key usage lacks keyCertSign ({CA_DIR_HINT})",
                    summary.subject
                ),
            ));
        }
        if !keys::matches(&key, x509.public_key()) {
            return Err(file_error(
                &key_path,
                format!(
                    "does not match the certificate in {} (put the CA's own key in {CA_KEY})",
                    cert_path.display()
                ),
            ));
        }
        if now > summary.not_after {
            return Err(file_error(
                &cert_path,
                format!(
                    "the CA certificate expired at {} (make a new CA, e.g. with `dicectl certs init`)",
                    rfc3339(summary.not_after)
                ),
            ));
        }
        if now < summary.not_before {
            return Err(file_error(
                &cert_path,
                format!(
                    "the CA certificate is not valid until {} (check the system clock)",
                    rfc3339(summary.not_before)
                ),
            ));
        }

        let full_chain = full_chain(dir, certs)?;
        let intermediates = full_chain
            .iter()
            .filter(|der| !is_self_signed(der))
            .cloned()
            .collect();
        let issuer = Issuer::from_ca_cert_der(&cert, key).map_err(|error| {
            file_error(
                &cert_path,
                format!("rcgen cannot sign as this CA: {error} (its subject must have one attribute per RDN)"),
            )
        })?;
        Ok(Self {
            dir: dir.to_owned(),
            cert,
            summary,
            issuer,
            path_len,
            full_chain,
            intermediates,
        })
    }
}

/// `chain.pem` if there is one (it must start with the CA certificate), else `ca.pem` as it is.
fn full_chain(
    dir: &Path,
    ca_certs: Vec<CertificateDer<'static>>,
) -> Result<Vec<CertificateDer<'static>>, CertsError> {
    let chain_path = dir.join(CA_CHAIN);
    if !chain_path.exists() {
        return Ok(ca_certs);
    }
    let chain = load_certs(&chain_path).map_err(|e| CertsError::pem(&e, CA_DIR_HINT))?;
    if chain[0] != ca_certs[0] {
        return Err(file_error(
            &chain_path,
            format!(
                "does not start with the certificate in {CA_CERT} (list the CA's certificate first, then each CA above it)"
            ),
        ));
    }
    dice_proto::cert::check_chain_links(&chain)
        .map_err(|message| file_error(&chain_path, message))?;
    Ok(chain)
}

/// Whether `der` is a self-signed certificate (a root): issuer = subject, and its own key verifies it.
pub fn is_self_signed(der: &CertificateDer<'_>) -> bool {
    X509Certificate::from_der(der.as_ref()).is_ok_and(|(_, cert)| {
        cert.issuer() == cert.subject() && cert.verify_signature(None).is_ok()
    })
}
