//! Checks the CSR a node sent against the certificate it serves, then signs
//! it with the CA directory.
//!
//! The CSR's signature must verify (its key signed it), its subject must be
//! exactly the served subject and its SANs exactly the served SANs: a node
//! gets a certificate for the identity it already has, never another one.
//! The new certificate carries the CSR's subject, SANs and public key,
//! serverAuth, and the validity `--days` asks for (never past the CA's).

use std::collections::BTreeSet;

use dice_proto::cert::{CertSummary, sha256_hex};
use dice_proto::pem::pem_chain;
use rcgen::CertificateSigningRequestParams;
use rustls::pki_types::CertificateDer;
use time::OffsetDateTime;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

use crate::certs::build::{self, Role, Validity};
use crate::certs::ca::Ca;
use crate::certs::keys::KeyAlgorithm;

/// A certificate signed for a node, ready to install.
#[derive(Debug, Clone)]
pub struct Signed {
    /// What it says.
    pub summary: CertSummary,
    /// SHA-256 of its DER, lowercase hex: what the node must serve afterwards.
    pub sha256: String,
    /// The chain to install, PEM: the certificate, then the CA's intermediates.
    pub chain_pem: String,
}

/// Checks `csr_pem` against `served` (the certificate the node serves now)
/// and signs it with `ca` for `days` days from `now`. The error says why the
/// CSR was refused, in words for a table cell.
pub fn sign(
    csr_pem: &str,
    served: &CertSummary,
    ca: &Ca,
    days: u32,
    now: OffsetDateTime,
) -> Result<Signed, String> {
    let request =
        CertificateSigningRequestParams::from_pem(csr_pem).map_err(|error| match error {
            rcgen::Error::InvalidCertificationRequestSignature => {
                "the CSR's signature does not verify (its key did not sign it)".to_owned()
            }
            other => format!("the CSR cannot be read: {other}"),
        })?;
    // rcgen verified the signature; read the names as the served certificate's are read.
    let der = pem::parse(csr_pem)
        .map_err(|error| format!("the CSR is not PEM: {error}"))?
        .into_contents();
    let (_, csr) = X509CertificationRequest::from_der(&der)
        .map_err(|error| format!("the CSR cannot be read: {error}"))?;
    let info = &csr.certification_request_info;

    let subject = info.subject.to_string();
    if subject != served.subject {
        return Err(format!(
            "the CSR asks for subject \"{subject}\" but the node serves \"{}\" (a node gets a certificate for the identity it has)",
            served.subject
        ));
    }
    check_sans(&csr_sans(&csr), &served.sans)?;
    let algorithm = KeyAlgorithm::of_spki(&info.subject_pki).map_err(|other| {
        format!(
            "the CSR's key is {other}: dicectl signs ECDSA P-256 or P-384, Ed25519 and RSA 2048 to 8192 bit keys (PrepareCertificate with another key type)"
        )
    })?;

    let validity = Validity::new(now, days, Some(ca.summary.not_after));
    let params = build::leaf_params(
        request.params.distinguished_name.clone(),
        request.params.subject_alt_names.clone(),
        build::role_usages(Role::Server),
        algorithm,
        validity,
    );
    let cert = params
        .signed_by(&request.public_key, &ca.issuer)
        .map_err(|error| format!("cannot sign the CSR: {error}"))?;
    let der = CertificateDer::from(cert.der().to_vec());
    let summary = CertSummary::parse(&der)
        .map_err(|error| format!("cannot read back the signed certificate: {error}"))?;
    Ok(Signed {
        summary,
        sha256: sha256_hex(&der),
        chain_pem: pem_chain(std::iter::once(&der).chain(&ca.intermediates)),
    })
}

/// Refuses SANs that differ from the served ones, naming the difference.
fn check_sans(asked: &[String], served: &[String]) -> Result<(), String> {
    let asked: BTreeSet<&str> = asked.iter().map(String::as_str).collect();
    let served: BTreeSet<&str> = served.iter().map(String::as_str).collect();
    let extra: Vec<&str> = asked.difference(&served).copied().collect();
    let missing: Vec<&str> = served.difference(&asked).copied().collect();
    let mut problems = Vec::new();
    if !extra.is_empty() {
        problems.push(format!(
            "names {} the node does not serve",
            extra.join(", ")
        ));
    }
    if !missing.is_empty() {
        problems.push(format!("lacks {} the node serves", missing.join(", ")));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the CSR's SANs differ from the served certificate's: it {} (a node gets a certificate for the names it serves)",
            problems.join(" and ")
        ))
    }
}

/// The CSR's SANs, written as [`CertSummary::sans`] writes them (`DNS:name`, `IP:addr`, ...).
fn csr_sans(csr: &X509CertificationRequest<'_>) -> Vec<String> {
    let Some(extensions) = csr.requested_extensions() else {
        return Vec::new();
    };
    extensions
        .filter_map(|extension| match extension {
            ParsedExtension::SubjectAlternativeName(san) => Some(&san.general_names),
            _ => None,
        })
        .flatten()
        .filter_map(describe_name)
        .collect()
}

fn describe_name(name: &GeneralName<'_>) -> Option<String> {
    match name {
        GeneralName::DNSName(dns) => Some(format!("DNS:{dns}")),
        GeneralName::URI(uri) => Some(format!("URI:{uri}")),
        GeneralName::RFC822Name(email) => Some(format!("email:{email}")),
        GeneralName::IPAddress(bytes) => match bytes.len() {
            4 => <[u8; 4]>::try_from(*bytes)
                .ok()
                .map(|ip| format!("IP:{}", std::net::IpAddr::from(ip))),
            16 => <[u8; 16]>::try_from(*bytes)
                .ok()
                .map(|ip| format!("IP:{}", std::net::IpAddr::from(ip))),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, KeyPair, SanType};
    use x509_parser::prelude::X509Certificate;

    use super::*;
    use crate::certs::fixtures::init_ca;

    const NOW: i64 = 1_800_000_000;

    fn now() -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    /// What a node serving CN=node-1 for node-1.example and 10.0.0.7 reports.
    fn served() -> CertSummary {
        CertSummary {
            subject: "CN=node-1".to_owned(),
            common_name: Some("node-1".to_owned()),
            issuer: "CN=old".to_owned(),
            sans: vec!["DNS:node-1.example".to_owned(), "IP:10.0.0.7".to_owned()],
            serial: "01".to_owned(),
            not_before: NOW - 86_400,
            not_after: NOW + 86_400,
        }
    }

    fn csr(name: &str, sans: &[&str], key: &KeyPair) -> String {
        let mut params = CertificateParams::default();
        params.distinguished_name = build::common_name(name);
        params.subject_alt_names = sans
            .iter()
            .map(|san| match san.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*san).try_into().expect("dns name")),
            })
            .collect();
        params
            .serialize_request(key)
            .expect("csr")
            .pem()
            .expect("pem")
    }

    fn ca() -> (tempfile::TempDir, Ca) {
        let dir = tempfile::tempdir().expect("temp dir");
        init_ca(dir.path());
        let ca = Ca::load(dir.path(), now().unix_timestamp()).expect("ca");
        (dir, ca)
    }

    #[test]
    fn signs_the_csr_key_with_server_auth() {
        let (_dir, ca) = ca();
        let key = KeyPair::generate().expect("key");
        let pem = csr("node-1", &["10.0.0.7", "node-1.example"], &key);
        let signed = sign(&pem, &served(), &ca, 30, now()).expect("signed");
        assert_eq!(signed.summary.subject, "CN=node-1");
        assert_eq!(signed.summary.issuer, ca.summary.subject);
        assert!(signed.chain_pem.starts_with("-----BEGIN CERTIFICATE-----"));

        let chain = dice_proto::pem::parse_certs(
            std::path::Path::new("chain"),
            signed.chain_pem.as_bytes(),
        )
        .expect("chain");
        assert_eq!(sha256_hex(&chain[0]), signed.sha256);
        let (_, cert) = X509Certificate::from_der(&chain[0]).expect("x509");
        assert_eq!(
            cert.public_key().subject_public_key.data.as_ref(),
            key.public_key_raw()
        );
        let eku = cert
            .extended_key_usage()
            .expect("eku")
            .expect("present")
            .value;
        assert!(eku.server_auth && !eku.client_auth);
        let (_, ca_cert) = X509Certificate::from_der(&ca.cert).expect("ca");
        cert.verify_signature(Some(ca_cert.public_key()))
            .expect("signed by the CA");
        let left = signed.summary.not_after - now().unix_timestamp();
        assert!(
            (30 * 86_400 - 60..=30 * 86_400).contains(&left),
            "{left}s left"
        );
    }

    #[test]
    fn refuses_other_names() {
        let (_dir, ca) = ca();
        let key = KeyPair::generate().expect("key");
        let cases = [
            (
                csr("node-2", &["node-1.example", "10.0.0.7"], &key),
                "the CSR asks for subject \"CN=node-2\" but the node serves \"CN=node-1\"",
            ),
            (
                csr(
                    "node-1",
                    &["node-1.example", "10.0.0.7", "bank.example"],
                    &key,
                ),
                "it names DNS:bank.example the node does not serve",
            ),
            (
                csr("node-1", &["node-1.example"], &key),
                "it lacks IP:10.0.0.7 the node serves",
            ),
        ];
        for (pem, expected) in cases {
            let error = sign(&pem, &served(), &ca, 30, now()).expect_err("refused");
            assert!(error.contains(expected), "{error}");
        }
    }

    #[test]
    fn refuses_a_csr_whose_signature_does_not_verify() {
        let (_dir, ca) = ca();
        let key = KeyPair::generate().expect("key");
        let pem = csr("node-1", &["node-1.example", "10.0.0.7"], &key);
        let mut der = pem::parse(&pem).expect("pem").into_contents();
        // The last byte belongs to the signature.
        let last = der.len() - 1;
        der[last] ^= 0x01;
        let forged = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der));
        let error = sign(&forged, &served(), &ca, 30, now()).expect_err("refused");
        assert!(error.contains("signature does not verify"), "{error}");
        assert!(sign("garbage", &served(), &ca, 30, now()).is_err());
    }
}
