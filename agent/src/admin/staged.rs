//! PrepareCertificate: the staged key. A new private key is made on the node
//! and kept in `<key file>.staged` (mode 0600, written atomically) until
//! InstallCertificate serves it, so an agent restart in between loses
//! nothing. Asked again, the staged key is reused, and the same CSR
//! returned, unless a fresh key, or a key of another type, is asked for.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex, PoisonError};

use dice_proto::keys::{self, KeyAlgorithm, KeyType};
use rcgen::{KeyPair, PublicKeyData};
use rustls::pki_types::CertificateDer;
use tonic::Status;
use tracing::warn;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::x509::SubjectPublicKeyInfo;

use super::files::{self, KEY_MODE};
use super::{TARGET, csr};
use crate::config::TlsFiles;

/// What PrepareCertificate answers.
#[derive(Debug)]
pub struct Prepared {
    /// The CSR, PEM.
    pub csr_pem: String,
    /// The staged key's type, e.g. `ecdsa-p256`.
    pub key_type: String,
    /// Whether the key was staged before and is reused.
    pub reused: bool,
}

/// Stages a key for the certificate files `files` (reusing the staged one
/// unless `fresh` or `requested` says otherwise) and returns a CSR for it
/// with the subject and SANs of `served`. Blocks: RSA keys take seconds.
pub fn prepare(
    files: &TlsFiles,
    served: &CertificateDer<'_>,
    requested: Option<KeyType>,
    fresh: bool,
) -> Result<Prepared, Status> {
    let path = files::staged(&files.key.path);
    let existing = if fresh {
        None
    } else {
        match load(&path) {
            Ok(key) => key,
            Err(error) => {
                warn!(target: TARGET, staged = %path.display(), %error, "staged key unusable; making a new one");
                None
            }
        }
    };
    let wanted = requested.map(KeyAlgorithm::from);
    let existing = existing.filter(|key| wanted.is_none_or(|wanted| algorithm(key) == Ok(wanted)));
    let (key, reused) = match existing {
        Some(key) => (key, true),
        None => {
            let algorithm = match wanted {
                Some(algorithm) => algorithm,
                None => served_algorithm(served)?,
            };
            let key = algorithm.generate().map_err(Status::internal)?;
            files::write_atomically(&path, key.serialize_pem().as_bytes(), KEY_MODE)
                .map_err(|e| e.status())?;
            (key, false)
        }
    };
    let csr_pem = csr_for(&path, served, &key, reused)?;
    Ok(Prepared {
        csr_pem,
        key_type: key_type_name(&key),
        reused,
    })
}

/// The CSRs returned for staged keys, by staged key file: asked again for
/// the same key and the same served certificate, the agent returns the same
/// CSR byte for byte (ECDSA signatures are randomized, so signing anew would
/// give other bytes for the same request). After a restart the CSR is made
/// anew, for the same key.
static ISSUED: LazyLock<Mutex<HashMap<PathBuf, IssuedCsr>>> = LazyLock::new(Mutex::default);

/// A CSR returned, with what it was made from.
struct IssuedCsr {
    public_key: Vec<u8>,
    served: Vec<u8>,
    pem: String,
}

/// The CSR for `key` with the subject and SANs of `served`: the one
/// returned before if the key is `reused` and nothing changed, else a new one.
fn csr_for(
    path: &Path,
    served: &CertificateDer<'_>,
    key: &KeyPair,
    reused: bool,
) -> Result<String, Status> {
    let mut issued = ISSUED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(known) = issued.get(path)
        && reused
        && known.public_key == key.der_bytes()
        && known.served == served.as_ref()
    {
        return Ok(known.pem.clone());
    }
    let pem = csr::request(served, key).map_err(Status::internal)?;
    issued.insert(
        path.to_owned(),
        IssuedCsr {
            public_key: key.der_bytes().to_vec(),
            served: served.to_vec(),
            pem: pem.clone(),
        },
    );
    Ok(pem)
}

/// The key staged at `path`: `Ok(None)` if there is none, `Err` saying why
/// one that is there cannot be used.
pub fn load(path: &Path) -> Result<Option<KeyPair>, String> {
    let Some(bytes) = files::read_if_exists(path).map_err(|e| e.source.to_string())? else {
        return Ok(None);
    };
    parse(path, &bytes).map(Some)
}

/// The staged key in `bytes`, read from `path`.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<KeyPair, String> {
    let der = dice_proto::pem::parse_key(path, bytes).map_err(|e| e.to_string())?;
    keys::key_pair(&der)
}

/// The algorithm of `key`'s public key.
fn algorithm(key: &KeyPair) -> Result<KeyAlgorithm, String> {
    let spki = key.subject_public_key_info();
    let (_, spki) = SubjectPublicKeyInfo::from_der(&spki).map_err(|e| e.to_string())?;
    KeyAlgorithm::of_spki(&spki)
}

/// `key`'s type as the admin API names it (`ecdsa-p256`), or its algorithm.
fn key_type_name(key: &KeyPair) -> String {
    match algorithm(key) {
        Ok(algorithm) => algorithm
            .key_type()
            .map_or_else(|| algorithm.to_string(), |t| t.name().to_owned()),
        Err(other) => other,
    }
}

/// The algorithm of the served certificate's key, which a new key copies.
fn served_algorithm(served: &CertificateDer<'_>) -> Result<KeyAlgorithm, Status> {
    let (_, cert) = X509Certificate::from_der(served.as_ref())
        .map_err(|e| Status::internal(format!("the served certificate does not parse: {e}")))?;
    KeyAlgorithm::of_spki(cert.public_key()).map_err(|other| {
        Status::failed_precondition(format!(
            "the served key is {other}, which the agent cannot make: name a key_type ({})",
            KeyType::names()
        ))
    })
}
