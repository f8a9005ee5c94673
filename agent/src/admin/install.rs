//! InstallCertificate: serves a chain for the staged key. Once the chain
//! passes its checks, the current pair is kept as `<cert>.previous` and
//! `<key>.previous`, the chain replaces the cert file and the staged key is
//! renamed over the key file (each step atomic; a failure midway puts back
//! what was written), and the new material is served from the next
//! handshake on. All of it under the profile's file lock, so the reloader
//! never reads a half-replaced pair, and sees the written files as unchanged.

use dice_proto::info::InstallCertificateResponse;
use dice_proto::pem::pem_chain;
use tonic::Status;

use super::audit::Change;
use super::files::{self, CERT_MODE, KEY_MODE};
use super::{checks, report, staged};
use crate::tls::{TlsBytes, TlsMaterial, TlsProfile};

/// Installs `chain_pem` with the key staged for `profile` (the files of the
/// mTLS listener `listener`), at `now`.
pub fn install(
    profile: &TlsProfile,
    listener: &str,
    chain_pem: &str,
    now: i64,
    change: &mut Change,
) -> Result<InstallCertificateResponse, Status> {
    let files = &profile.files;
    let _files = profile.lock_files();
    let served = profile.material();
    change.old = served.leaf.serial.clone();
    let staged_path = files::staged(&files.key.path);
    let staged_key = files::read_if_exists(&staged_path)
        .map_err(|e| e.status())?
        .ok_or_else(|| {
            Status::failed_precondition(format!(
                "no key is staged for listener {listener}: call PrepareCertificate first"
            ))
        })?;
    let key = staged::parse(&staged_path, &staged_key).map_err(|e| {
        Status::failed_precondition(format!(
            "the staged key {} is unusable: {e}: call PrepareCertificate with fresh_key",
            staged_path.display()
        ))
    })?;
    let checked = checks::check(chain_pem, &key, &served, now)?;
    let cert_pem = pem_chain(&checked.chain);

    let current = current_bytes(profile)?;
    let (old_cert, old_key) = (current.cert().to_vec(), current.key().to_vec());
    let key_mode = files::mode(&staged_path).map_err(|e| e.status())?;
    let bytes = current.with_cert_and_key(cert_pem.clone().into_bytes(), staged_key, key_mode);
    let material = TlsMaterial::from_bytes(files, bytes, now).map_err(|e| {
        Status::invalid_argument(format!("the new certificate and key do not load: {e}"))
    })?;
    let cert_mode = files::mode(&files.cert.path).unwrap_or(CERT_MODE);
    files::all_or_nothing(|tx| {
        tx.write(&files::previous(&files.key.path), &old_key, KEY_MODE)?;
        tx.write(&files::previous(&files.cert.path), &old_cert, cert_mode)?;
        tx.write(&files.cert.path, cert_pem.as_bytes(), cert_mode)?;
        tx.rename(&staged_path, &files.key.path, KEY_MODE)
    })?;
    change.new = material.leaf.serial.clone();
    let response = InstallCertificateResponse {
        served: Some(report::served(&material)),
        previous: Some(report::served(&served)),
    };
    material.log_warnings();
    profile.install(material);
    Ok(response)
}

/// The bytes of `profile`'s files as they are now.
pub fn current_bytes(profile: &TlsProfile) -> Result<TlsBytes, Status> {
    TlsBytes::read(&profile.files).map_err(|e| {
        Status::failed_precondition(format!(
            "the files served now cannot be read: {e}: fix them, then try again"
        ))
    })
}
