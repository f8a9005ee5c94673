//! Certificate material for mTLS listeners: load the files named in the
//! config, check that they agree and are valid now, and build the rustls
//! server config that handshakes use. Every error names the file and the
//! config line that set it.

use std::fmt;
use std::sync::Arc;

use dice_proto::cert::{CertSummary, check_chain_links, rfc3339, sha256_hex};
use dice_proto::pem;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};

use super::crl::{check_crl_signer, parse_crls};
use crate::config::{FileRef, TlsFiles};

/// The target of this module's events, as before it moved into `tls/`.
const TARGET: &str = "dice_agent::tls";

/// Certificate material that failed a check, naming the file at fault.
#[derive(Debug, Clone)]
pub struct TlsError {
    /// The file at fault, with where the config set it.
    pub file: FileRef,
    /// What is wrong with it.
    pub message: String,
    /// What to do about it.
    pub hint: &'static str,
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} ({})",
            self.file.locate(),
            self.message,
            self.hint
        )
    }
}

impl std::error::Error for TlsError {}

fn fail(file: &FileRef, message: impl Into<String>, hint: &'static str) -> TlsError {
    TlsError {
        file: file.clone(),
        message: message.into(),
        hint,
    }
}

/// Strips the leading `PATH: ` a [`pem::PemError`] carries, since [`TlsError`] names the path itself.
fn pem_reason(error: &pem::PemError, file: &FileRef) -> String {
    let text = error.to_string();
    let prefix = format!("{}: ", file.path.display());
    text.strip_prefix(&prefix)
        .map(str::to_owned)
        .unwrap_or(text)
}

const CERT_HINT: &str = "point it at a PEM certificate chain, leaf first";
const KEY_HINT: &str = "point it at the PEM private key of the certificate";
const CA_HINT: &str = "point it at the PEM bundle of the CA that signs client certificates";
const CRL_HINT: &str = "point it at a CRL in PEM or DER form, as the CA publishes it";

/// The bytes of a profile's three files, read once so the same content is
/// both fingerprinted and parsed. Its `Debug` never shows the bytes.
pub struct TlsBytes {
    cert: Vec<u8>,
    key: Vec<u8>,
    /// The key file's permission bits: a chmod is a change too.
    key_mode: u32,
    client_ca: Vec<u8>,
    crl: Vec<Vec<u8>>,
}

impl fmt::Debug for TlsBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TlsBytes {{ fingerprint: {:016x} }}", self.fingerprint())
    }
}

impl TlsBytes {
    /// A hash of all three files' content: equal fingerprints mean nothing changed.
    pub fn fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::hash::DefaultHasher::new();
        (
            &self.cert,
            &self.key,
            self.key_mode,
            &self.client_ca,
            &self.crl,
        )
            .hash(&mut hasher);
        hasher.finish()
    }

    /// These bytes with the certificate chain and key replaced (`key_mode`:
    /// the permission bits of the key file they will be read from).
    pub(crate) fn with_cert_and_key(self, cert: Vec<u8>, key: Vec<u8>, key_mode: u32) -> Self {
        Self {
            cert,
            key,
            key_mode,
            ..self
        }
    }

    /// These bytes with the client CA bundle replaced.
    pub(crate) fn with_client_ca(self, client_ca: Vec<u8>) -> Self {
        Self { client_ca, ..self }
    }

    /// The certificate chain file's bytes.
    pub(crate) fn cert(&self) -> &[u8] {
        &self.cert
    }

    /// The key file's bytes (never log them).
    pub(crate) fn key(&self) -> &[u8] {
        &self.key
    }

    /// The client CA bundle's bytes.
    pub(crate) fn client_ca(&self) -> &[u8] {
        &self.client_ca
    }

    /// Reads the files, following symlinks to whatever they point at now.
    pub fn read(files: &TlsFiles) -> Result<Self, TlsError> {
        let read = |file: &FileRef, hint| {
            std::fs::read(&file.path).map_err(|error| {
                let message = match error.kind() {
                    std::io::ErrorKind::NotFound => "no such file".to_owned(),
                    std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
                    _ => format!("cannot read: {error}"),
                };
                fail(file, message, hint)
            })
        };
        let key_mode = std::fs::metadata(&files.key.path)
            .map(|meta| std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777)
            .unwrap_or(0);
        Ok(Self {
            cert: read(&files.cert, CERT_HINT)?,
            key: read(&files.key, KEY_HINT)?,
            key_mode,
            client_ca: read(&files.client_ca, CA_HINT)?,
            crl: files
                .crl
                .iter()
                .map(|file| read(file, CRL_HINT))
                .collect::<Result<_, _>>()?,
        })
    }
}

/// A CA certificate of a client CA bundle.
#[derive(Debug, Clone)]
pub struct CaCert {
    /// The certificate.
    pub der: CertificateDer<'static>,
    /// What it says.
    pub summary: CertSummary,
    /// SHA-256 of `der`, lowercase hex.
    pub sha256: String,
}

/// A server certificate chain, its key and the client CA bundle, checked to agree.
#[derive(Debug)]
pub struct TlsMaterial {
    /// The leaf certificate's summary.
    pub leaf: CertSummary,
    /// The leaf certificate.
    pub leaf_der: CertificateDer<'static>,
    /// SHA-256 of `leaf_der`, lowercase hex.
    pub leaf_sha256: String,
    /// The client CA certificates, in bundle order.
    pub client_cas: Vec<CaCert>,
    /// The server config that serves this material.
    pub server_config: Arc<ServerConfig>,
    /// The client verifier inside `server_config` (the client CAs and CRLs):
    /// open connections are checked again with it after a reload.
    pub client_verifier: Arc<dyn ClientCertVerifier>,
    /// The fingerprint of the bytes it was built from (see [`TlsBytes::fingerprint`]).
    pub fingerprint: u64,
    /// Problems that do not stop the material from serving, such as an expired
    /// CRL or a key file others can read; logged whenever the material is loaded.
    pub warnings: Vec<String>,
}

impl TlsMaterial {
    /// Reads and checks the files, then builds the server config. `now` is Unix seconds.
    pub fn load(files: &TlsFiles, now: i64) -> Result<Self, TlsError> {
        Self::from_bytes(files, TlsBytes::read(files)?, now)
    }

    /// Logs each of [`TlsMaterial::warnings`] at warn.
    pub fn log_warnings(&self) {
        for warning in &self.warnings {
            tracing::warn!(target: TARGET, "{warning}");
        }
    }

    /// Checks the files' bytes: the chain parses and links up, the leaf is valid
    /// at `now`, the key matches it, and the CA bundle is usable.
    pub fn from_bytes(files: &TlsFiles, source: TlsBytes, now: i64) -> Result<Self, TlsError> {
        let chain = pem::parse_certs(&files.cert.path, &source.cert)
            .map_err(|e| fail(&files.cert, pem_reason(&e, &files.cert), CERT_HINT))?;
        let key = pem::parse_key(&files.key.path, &source.key)
            .map_err(|e| fail(&files.key, pem_reason(&e, &files.key), KEY_HINT))?;
        let leaf = CertSummary::parse(&chain[0])
            .map_err(|e| fail(&files.cert, e.to_string(), CERT_HINT))?;
        check_validity(&leaf, now).map_err(|message| {
            fail(
                &files.cert,
                message,
                "renew the certificate, or check the system clock",
            )
        })?;
        check_chain_links(&chain).map_err(|message| fail(&files.cert, message, CERT_HINT))?;
        check_key_matches(&chain, &key).map_err(|message| {
            fail(
                &files.key,
                message,
                "install the key and certificate as a pair",
            )
        })?;

        let ca_certs = pem::parse_certs(&files.client_ca.path, &source.client_ca)
            .map_err(|e| fail(&files.client_ca, pem_reason(&e, &files.client_ca), CA_HINT))?;
        let mut roots = RootCertStore::empty();
        let mut client_cas = Vec::with_capacity(ca_certs.len());
        for cert in &ca_certs {
            let summary = CertSummary::parse(cert)
                .map_err(|e| fail(&files.client_ca, e.to_string(), CA_HINT))?;
            roots.add(cert.clone()).map_err(|e| {
                fail(
                    &files.client_ca,
                    format!("unusable CA certificate \"{}\": {e}", summary.subject),
                    CA_HINT,
                )
            })?;
            client_cas.push(CaCert {
                der: cert.clone(),
                sha256: sha256_hex(cert),
                summary,
            });
        }
        let mut warnings = Vec::new();
        warnings.extend(super::expiry::warning(files, &leaf, now));
        if source.key_mode & 0o077 != 0 {
            let message = format!("readable by group or others (mode {:03o})", source.key_mode);
            if files.strict_permissions {
                return Err(fail(
                    &files.key,
                    message,
                    "chmod 600 the key file, or set tls.strict_permissions = false",
                ));
            }
            warnings.push(format!("{}: {message} (chmod 600 it)", files.key.locate()));
        }
        let mut crls = Vec::new();
        for (file, bytes) in files.crl.iter().zip(&source.crl) {
            let parsed = parse_crls(bytes).map_err(|message| fail(file, message, CRL_HINT))?;
            for crl in parsed {
                match check_crl_signer(&crl, &ca_certs) {
                    Ok(true) => {}
                    Ok(false) => warnings.push(format!(
                        "{}: CRL issued by \"{}\", which is not in client_ca: it revokes nothing here (list the CRL of a CA in client_ca)",
                        file.locate(),
                        crl.issuer
                    )),
                    Err(message) => {
                        return Err(fail(
                            file,
                            message,
                            "point it at the CRL the CA in client_ca published and signed",
                        ));
                    }
                }
                if let Some(next) = crl.next_update.filter(|next| *next < now) {
                    warnings.push(format!(
                        "{}: CRL expired at {}; still used (publish a fresh CRL)",
                        file.locate(),
                        rfc3339(next)
                    ));
                }
                crls.push(crl.der);
            }
        }
        let leaf_der = chain[0].clone();
        let (server_config, client_verifier) = build_server_config(chain, key, roots, crls)
            .map_err(|e| {
                fail(
                    &files.cert,
                    format!("cannot build a TLS config: {e}"),
                    CERT_HINT,
                )
            })?;
        Ok(Self {
            leaf,
            leaf_sha256: sha256_hex(&leaf_der),
            leaf_der,
            client_cas,
            server_config,
            client_verifier,
            fingerprint: source.fingerprint(),
            warnings,
        })
    }
}

fn check_validity(leaf: &CertSummary, now: i64) -> Result<(), String> {
    if now < leaf.not_before {
        return Err(format!(
            "certificate {} is not valid until {}",
            leaf.serial,
            rfc3339(leaf.not_before)
        ));
    }
    if now > leaf.not_after {
        return Err(format!(
            "certificate {} expired at {}",
            leaf.serial,
            rfc3339(leaf.not_after)
        ));
    }
    Ok(())
}

fn check_key_matches(
    chain: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
) -> Result<(), String> {
    let provider = dice_proto::crypto::provider();
    let certified =
        CertifiedKey::from_der(chain.to_vec(), key.clone_key(), &provider).map_err(|error| {
            match error {
                rustls::Error::InconsistentKeys(_) => {
                    "the key does not match the certificate".to_owned()
                }
                other => format!("unusable private key: {other}"),
            }
        })?;
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(()),
        Err(_) => Err("the key does not match the certificate".to_owned()),
    }
}

/// TLS 1.2 and 1.3, ALPN `h2`, a client certificate required and verified
/// against `roots`; returned with its client verifier.
///
/// Session resumption is bound to the material: each config gets rustls's
/// default in-memory session cache of its own and no ticket key, so a session
/// can only be resumed against the config that made it. After a reload (say,
/// one that drops a client CA) every client does a full handshake and has its
/// certificate verified against the new bundle.
fn build_server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    roots: RootCertStore,
    crls: Vec<CertificateRevocationListDer<'static>>,
) -> Result<(Arc<ServerConfig>, Arc<dyn ClientCertVerifier>), rustls::Error> {
    let provider = dice_proto::crypto::provider();
    // A client whose issuer published no CRL here is not refused for that:
    // CRLs revoke what they list. Expired CRLs still apply (and are warned about).
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .with_crls(crls)
        .allow_unknown_revocation_status()
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_client_cert_verifier(verifier.clone())
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok((Arc::new(config), verifier))
}
