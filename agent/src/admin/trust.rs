//! SetTrust: replaces a listener's client CA bundle. Every certificate of the
//! new bundle must be a CA; the lockout guard refuses a bundle under which
//! the caller's own client certificate would not verify. The bundle served
//! now is kept as `<client_ca>.previous`; the new one is written atomically
//! and served from the next handshake on.

use std::path::Path;
use std::sync::Arc;

use dice_proto::cert::CertSummary;
use dice_proto::info::SetTrustResponse;
use dice_proto::pem::pem_chain;
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use tonic::Status;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::audit::Change;
use super::files::{self, CERT_MODE};
use super::install::current_bytes;
use super::report;
use crate::tls::{TlsMaterial, TlsProfile};

/// Trusts the CAs of `bundle_pem` for `profile`'s client certificates,
/// unless `caller` (the calling admin's verified chain, leaf first) would
/// not verify under them.
pub fn set_trust(
    profile: &TlsProfile,
    bundle_pem: &str,
    caller: &[CertificateDer<'static>],
    now: i64,
    change: &mut Change,
) -> Result<SetTrustResponse, Status> {
    let bundle = dice_proto::pem::parse_certs(Path::new("bundle_pem"), bundle_pem.as_bytes())
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let mut roots = RootCertStore::empty();
    for (index, der) in bundle.iter().enumerate() {
        let (_, cert) = X509Certificate::from_der(der.as_ref()).map_err(|e| {
            Status::invalid_argument(format!(
                "bundle_pem: certificate {} is not valid X.509: {e}",
                index + 1
            ))
        })?;
        let is_ca = cert
            .basic_constraints()
            .ok()
            .flatten()
            .is_some_and(|bc| bc.value.ca);
        if !is_ca {
            return Err(Status::invalid_argument(format!(
                "bundle_pem: certificate {} (\"{}\") is not a CA certificate (no basicConstraints CA:TRUE): list CA certificates only",
                index + 1,
                cert.subject()
            )));
        }
        roots.add(der.clone()).map_err(|e| {
            Status::invalid_argument(format!(
                "bundle_pem: certificate {} (\"{}\") is not a usable CA: {e}",
                index + 1,
                cert.subject()
            ))
        })?;
    }
    check_lockout(roots, caller)?;

    let files = &profile.files;
    let _files = profile.lock_files();
    let served = profile.material();
    change.old = report::fingerprints(&served);
    let current = current_bytes(profile)?;
    let old_bundle = current.client_ca().to_vec();
    let new_bundle = pem_chain(&bundle);
    let material = TlsMaterial::from_bytes(
        files,
        current.with_client_ca(new_bundle.clone().into_bytes()),
        now,
    )
    .map_err(|e| Status::invalid_argument(format!("the new bundle does not load: {e}")))?;
    let mode = files::mode(&files.client_ca.path).unwrap_or(CERT_MODE);
    files::all_or_nothing(|tx| {
        tx.write(&files::previous(&files.client_ca.path), &old_bundle, mode)?;
        tx.write(&files.client_ca.path, new_bundle.as_bytes(), mode)
    })?;
    change.new = report::fingerprints(&material);
    let response = SetTrustResponse {
        trusted: report::trusted(&material),
        previous: report::trusted(&served),
    };
    material.log_warnings();
    profile.install(material);
    Ok(response)
}

/// The lockout guard: `caller` must verify as a client under `roots`.
fn check_lockout(roots: RootCertStore, caller: &[CertificateDer<'static>]) -> Result<(), Status> {
    let Some((leaf, intermediates)) = caller.split_first() else {
        return Err(Status::permission_denied(
            "admin RPCs are served on mTLS listeners only",
        ));
    };
    let verifier = WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        dice_proto::crypto::provider(),
    )
    .build()
    .map_err(|e| Status::invalid_argument(format!("bundle_pem: not a usable bundle: {e}")))?;
    if verifier
        .verify_client_cert(leaf, intermediates, UnixTime::now())
        .is_ok()
    {
        return Ok(());
    }
    let (subject, issuer) = CertSummary::parse(leaf)
        .map(|s| (s.subject, s.issuer))
        .unwrap_or_default();
    Err(Status::failed_precondition(format!(
        "refused: your client certificate ({subject}, issued by {issuer}) would not verify under this bundle, so this change would lock you out: include the CA that issued it"
    )))
}
