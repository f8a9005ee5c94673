//! The certificate signing request PrepareCertificate returns: the served
//! certificate's subject and SANs, the staged key's public key, signed with it.

use std::net::IpAddr;

use rcgen::{CertificateParams, DistinguishedName, DnType, DnValue, KeyPair, SanType};
use rustls::pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::x509::X509Name;

/// A PEM CSR for `key` with the subject and SANs of the certificate `served`.
pub fn request(served: &CertificateDer<'_>, key: &KeyPair) -> Result<String, String> {
    let (_, cert) = X509Certificate::from_der(served.as_ref())
        .map_err(|e| format!("the served certificate does not parse: {e}"))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(cert.subject())?;
    params.subject_alt_names = subject_alt_names(&cert)?;
    params
        .serialize_request(key)
        .and_then(|csr| csr.pem())
        .map_err(|e| format!("cannot make the CSR: {e}"))
}

/// `name` as rcgen writes it: each attribute with its type, as a UTF-8,
/// printable or IA5 string (what certificates use in practice).
fn distinguished_name(name: &X509Name<'_>) -> Result<DistinguishedName, String> {
    let mut dn = DistinguishedName::new();
    for attribute in name.iter_attributes() {
        let oid: Vec<u64> = attribute
            .attr_type()
            .iter()
            .ok_or("the served certificate's subject has an attribute type rcgen cannot write")?
            .collect();
        let text = attribute.as_str().map_err(|e| {
            format!(
                "the served certificate's subject attribute {} is not text: {e}",
                attribute.attr_type()
            )
        })?;
        let value = match attribute.attr_value().header.tag() {
            x509_parser::der_parser::asn1_rs::Tag::PrintableString => text
                .try_into()
                .map(DnValue::PrintableString)
                .unwrap_or_else(|_| DnValue::Utf8String(text.to_owned())),
            x509_parser::der_parser::asn1_rs::Tag::Ia5String => text
                .try_into()
                .map(DnValue::Ia5String)
                .unwrap_or_else(|_| DnValue::Utf8String(text.to_owned())),
            _ => DnValue::Utf8String(text.to_owned()),
        };
        dn.push(DnType::from_oid(&oid), value);
    }
    Ok(dn)
}

/// The DNS, IP, URI and email SANs of `cert`.
fn subject_alt_names(cert: &X509Certificate<'_>) -> Result<Vec<SanType>, String> {
    let Some(ext) = cert
        .subject_alternative_name()
        .map_err(|e| format!("the served certificate's SANs do not parse: {e}"))?
    else {
        return Ok(Vec::new());
    };
    let bad = |e: rcgen::Error| format!("the served certificate has a SAN rcgen cannot write: {e}");
    let mut sans = Vec::new();
    for name in &ext.value.general_names {
        let san = match name {
            GeneralName::DNSName(dns) => SanType::DnsName((*dns).try_into().map_err(bad)?),
            GeneralName::URI(uri) => SanType::URI((*uri).try_into().map_err(bad)?),
            GeneralName::RFC822Name(email) => {
                SanType::Rfc822Name((*email).try_into().map_err(bad)?)
            }
            GeneralName::IPAddress(bytes) => match ip_address(bytes) {
                Some(ip) => SanType::IpAddress(ip),
                None => continue,
            },
            _ => continue,
        };
        sans.push(san);
    }
    Ok(sans)
}

/// An IPv4 or IPv6 address from its 4 or 16 bytes.
fn ip_address(bytes: &[u8]) -> Option<IpAddr> {
    match <[u8; 4]>::try_from(bytes) {
        Ok(v4) => Some(IpAddr::from(v4)),
        Err(_) => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
    }
}
