//! Certificate, key and CRL loading on arbitrary bytes, as the agent reads
//! `tls.cert`, `tls.key`, `tls.client_ca` and `tls.crl`: PEM parsing
//! (`dice_proto::pem`), X.509 summaries and chain checks (`dice_proto::cert`),
//! private key loading into the crypto provider, and the agent's CRL parsing
//! and signer check (`dice_agent::tls`). Nothing may panic.

#![no_main]

use std::path::Path;

use dice_agent::tls::{check_crl_signer, parse_crls};
use dice_proto::cert::{CertSummary, check_chain_links, rfc3339};
use libfuzzer_sys::fuzz_target;
use rustls::pki_types::CertificateDer;

fn summarize(cert: &CertificateDer<'_>) {
    if let Ok(summary) = CertSummary::parse(cert) {
        let _ = summary.to_string();
        let _ = summary.days_left(0);
        let _ = summary.is_valid_at(i64::MAX);
        let _ = rfc3339(summary.not_before);
        let _ = rfc3339(summary.not_after);
    }
}

fuzz_target!(|data: &[u8]| {
    let path = Path::new("/etc/dice/material.pem");
    // The input as a PEM file: every CERTIFICATE block, as a chain.
    let certs = dice_proto::pem::parse_certs(path, data).unwrap_or_default();
    for cert in &certs {
        summarize(cert);
    }
    let _ = check_chain_links(&certs);
    // The input as a raw DER certificate.
    let der = CertificateDer::from(data.to_vec());
    summarize(&der);
    let _ = check_chain_links(&[der.clone(), der]);
    // The input as a key file, and the key as the agent hands it to rustls.
    if let Ok(key) = dice_proto::pem::parse_key(path, data) {
        let _ = dice_proto::crypto::provider()
            .key_provider
            .load_private_key(key);
    }
    // The input as a CRL file (PEM or DER), checked against the input's certificates.
    if let Ok(crls) = parse_crls(data) {
        for crl in &crls {
            let _ = check_crl_signer(crl, &certs);
            if let Some(next) = crl.next_update {
                let _ = rfc3339(next);
            }
        }
    }
});
