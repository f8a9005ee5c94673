//! Rollback: puts back the backup the last InstallCertificate
//! (`<cert>.previous`, `<key>.previous`) or SetTrust (`<client_ca>.previous`)
//! kept, after checking it still loads, serves it, and removes the backup.

use dice_proto::info::{RollbackResponse, RollbackTarget};
use tonic::Status;

use super::audit::Change;
use super::files::{self, CERT_MODE, KEY_MODE};
use super::install::current_bytes;
use super::report;
use crate::tls::{TlsMaterial, TlsProfile};

/// Restores `target`'s backup for `profile`, at `now`.
pub fn rollback(
    profile: &TlsProfile,
    target: RollbackTarget,
    now: i64,
    change: &mut Change,
) -> Result<RollbackResponse, Status> {
    let files = &profile.files;
    let _files = profile.lock_files();
    let served = profile.material();
    let current = current_bytes(profile)?;
    let backup = |path: &std::path::Path| {
        let previous = files::previous(path);
        match files::read_if_exists(&previous) {
            Ok(Some(bytes)) => Ok((previous, bytes)),
            Ok(None) => Err(Status::failed_precondition(format!(
                "nothing to roll back: no {}",
                previous.display()
            ))),
            Err(error) => Err(error.status()),
        }
    };
    let refused = |what: String, error: crate::tls::TlsError| {
        Status::failed_precondition(format!(
            "the backup {what} no longer loads: {error}: nothing was changed"
        ))
    };
    let material = match target {
        RollbackTarget::Certificate => {
            change.old = served.leaf.serial.clone();
            let (cert_path, cert) = backup(&files.cert.path)?;
            let (key_path, key) = backup(&files.key.path)?;
            let key_mode = files::mode(&key_path).map_err(|e| e.status())?;
            let bytes = current.with_cert_and_key(cert.clone(), key, key_mode);
            let what = format!("{} and {}", cert_path.display(), key_path.display());
            let material =
                TlsMaterial::from_bytes(files, bytes, now).map_err(|e| refused(what, e))?;
            let cert_mode = files::mode(&files.cert.path).unwrap_or(CERT_MODE);
            files::all_or_nothing(|tx| {
                tx.write(&files.cert.path, &cert, cert_mode)?;
                tx.rename(&key_path, &files.key.path, KEY_MODE)?;
                tx.remove(&cert_path, cert_mode)
            })?;
            change.new = material.leaf.serial.clone();
            material
        }
        RollbackTarget::Trust => {
            change.old = report::fingerprints(&served);
            let (path, bundle) = backup(&files.client_ca.path)?;
            let what = path.display().to_string();
            let material =
                TlsMaterial::from_bytes(files, current.with_client_ca(bundle.clone()), now)
                    .map_err(|e| refused(what, e))?;
            let mode = files::mode(&files.client_ca.path).unwrap_or(CERT_MODE);
            files::all_or_nothing(|tx| {
                tx.write(&files.client_ca.path, &bundle, mode)?;
                tx.remove(&path, mode)
            })?;
            change.new = report::fingerprints(&material);
            material
        }
    };
    let response = RollbackResponse {
        served: Some(report::served(&material)),
        trusted: report::trusted(&material),
    };
    material.log_warnings();
    profile.install(material);
    Ok(response)
}
