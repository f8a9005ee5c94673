//! InstallCertificate's checks on a chain, before anything is written: it
//! parses and links up, its leaf is for the staged key, valid now, for
//! serverAuth, covers every SAN served now, and comes from a CA the node
//! knows. Each refusal says what is wrong and what to do.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use dice_proto::cert::{CertSummary, check_chain_links, parse_chain, rfc3339};
use rcgen::KeyPair;
use rustls::pki_types::{CertificateDer, UnixTime};
use tonic::Status;
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::tls::TlsMaterial;

/// A chain that passed every check.
#[derive(Debug)]
pub struct Checked {
    /// The chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
}

/// Checks `chain_pem` against the `staged` key and the material `served` now, at `now`.
pub fn check(
    chain_pem: &str,
    staged: &KeyPair,
    served: &TlsMaterial,
    now: i64,
) -> Result<Checked, Status> {
    let chain = dice_proto::pem::parse_certs(Path::new("chain_pem"), chain_pem.as_bytes())
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    check_chain_links(&chain).map_err(|e| Status::invalid_argument(format!("chain_pem: {e}")))?;
    let parsed = parse_chain(&chain).map_err(|e| {
        Status::invalid_argument(format!(
            "chain_pem: certificate {} is not valid X.509: {}",
            e.number, e.reason
        ))
    })?;
    let leaf = &parsed[0];
    let summary = CertSummary::parse(&chain[0])
        .map_err(|e| Status::invalid_argument(format!("chain_pem: {e}")))?;
    let serial = &summary.serial;
    if !dice_proto::keys::matches(staged, leaf.public_key()) {
        return Err(Status::invalid_argument(format!(
            "the certificate (serial {serial}) is for another key, not the staged one: sign the CSR PrepareCertificate returned"
        )));
    }
    if now < summary.not_before {
        return Err(Status::invalid_argument(format!(
            "the certificate (serial {serial}) is not valid until {} (it is {} now): check the signer's clock, or wait",
            rfc3339(summary.not_before),
            rfc3339(now)
        )));
    }
    if now > summary.not_after {
        return Err(Status::invalid_argument(format!(
            "the certificate (serial {serial}) expired at {} (it is {} now): issue a new one",
            rfc3339(summary.not_after),
            rfc3339(now)
        )));
    }
    let server_auth = leaf
        .extended_key_usage()
        .ok()
        .flatten()
        .is_some_and(|eku| eku.value.server_auth);
    if !server_auth {
        return Err(Status::invalid_argument(format!(
            "the certificate (serial {serial}) does not carry extended key usage serverAuth: issue it as a server certificate"
        )));
    }
    let has: BTreeSet<&str> = summary.sans.iter().map(String::as_str).collect();
    let missing: Vec<&str> = served
        .leaf
        .sans
        .iter()
        .map(String::as_str)
        .filter(|san| !has.contains(san))
        .collect();
    if !missing.is_empty() {
        return Err(Status::invalid_argument(format!(
            "the certificate (serial {serial}) lacks SANs the node serves now: {}: sign the CSR PrepareCertificate returned, which lists them",
            missing.join(", ")
        )));
    }
    if !verifies_under_client_ca(&chain, served, now) && !same_issuer(leaf, &served.leaf_der) {
        return Err(Status::invalid_argument(format!(
            "the certificate's issuer \"{}\" is neither in client_ca nor the issuer of the certificate served now: sign it with the CA that issued the served certificate, or add its CA to client_ca first (SetTrust)",
            summary.issuer
        )));
    }
    Ok(Checked { chain })
}

/// Whether `chain` verifies for serverAuth against the CAs `served` trusts for clients.
fn verifies_under_client_ca(
    chain: &[CertificateDer<'static>],
    served: &TlsMaterial,
    now: i64,
) -> bool {
    let anchors: Vec<_> = served
        .client_cas
        .iter()
        .filter_map(|ca| webpki::anchor_from_trusted_cert(&ca.der).ok())
        .collect();
    let Ok(end_entity) = webpki::EndEntityCert::try_from(&chain[0]) else {
        return false;
    };
    let time =
        UnixTime::since_unix_epoch(Duration::from_secs(u64::try_from(now).unwrap_or_default()));
    end_entity
        .verify_for_usage(
            dice_proto::crypto::provider()
                .signature_verification_algorithms
                .all,
            &anchors,
            &chain[1..],
            time,
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .is_ok()
}

/// Whether `leaf` has the issuer name and authority key identifier of the
/// certificate `served` (both must carry one: a name alone is easy to copy).
fn same_issuer(leaf: &X509Certificate<'_>, served: &CertificateDer<'_>) -> bool {
    let Ok((_, served)) = X509Certificate::from_der(served.as_ref()) else {
        return false;
    };
    let same_key = match (authority_key_id(leaf), authority_key_id(&served)) {
        (Some(new), Some(old)) => new == old,
        _ => false,
    };
    same_key && leaf.issuer().as_raw() == served.issuer().as_raw()
}

/// The key identifier of a certificate's authority key identifier extension.
fn authority_key_id<'a>(cert: &'a X509Certificate<'_>) -> Option<&'a [u8]> {
    cert.extensions()
        .iter()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                aki.key_identifier.as_ref().map(|id| id.0)
            }
            _ => None,
        })
}
