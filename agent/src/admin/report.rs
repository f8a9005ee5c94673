//! How the admin and info APIs describe certificates: the served leaf as a
//! [`ServedCertificate`], the CAs of a bundle as [`TrustedCa`]s, and the short
//! forms the audit log line uses.

use dice_proto::cert::rfc3339;
use dice_proto::info::{ServedCertificate, TrustedCa};
use dice_proto::pem::pem_chain;

use crate::tls::{CaCert, TlsMaterial};

/// The certificate `material` serves.
pub fn served(material: &TlsMaterial) -> ServedCertificate {
    let leaf = &material.leaf;
    ServedCertificate {
        serial: leaf.serial.clone(),
        sha256: material.leaf_sha256.clone(),
        not_after: rfc3339(leaf.not_after),
        subject: leaf.subject.clone(),
        issuer: leaf.issuer.clone(),
    }
}

/// The CAs `material` trusts, in bundle order.
pub fn trusted(material: &TlsMaterial) -> Vec<TrustedCa> {
    material.client_cas.iter().map(trusted_ca).collect()
}

/// One CA of a trust bundle.
pub fn trusted_ca(ca: &CaCert) -> TrustedCa {
    TrustedCa {
        subject: ca.summary.subject.clone(),
        sha256: ca.sha256.clone(),
        not_after: rfc3339(ca.summary.not_after),
        pem: pem_chain([&ca.der]),
    }
}

/// The trusted CAs' fingerprints, for the audit log: `ab12..., cd34...`.
pub fn fingerprints(material: &TlsMaterial) -> String {
    material
        .client_cas
        .iter()
        .map(|ca| ca.sha256.as_str())
        .collect::<Vec<_>>()
        .join(",")
}
