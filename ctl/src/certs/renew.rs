//! `dicectl certs renew`: re-issues a leaf certificate from the CA that
//! issued it, with the same subject, SANs and extended key usages, a new key
//! of the same type, a new serial and a new validity, and replaces the key
//! and certificate files in place.
//!
//! The new key and certificate are each written to a temp file beside the
//! file it replaces and flushed; then the key is renamed over the old key
//! and the certificate over the old certificate, back to back. An agent
//! watching the files sees the old pair or the new one (at worst, in the
//! instant between the two renames, the new key with the old certificate,
//! which it refuses and checks again), never a torn file.

use std::fmt;
use std::path::PathBuf;

use dice_proto::cert::CertSummary;
use dice_proto::pem::{load_certs, load_key, pem_chain};
use rcgen::string::{BmpString, UniversalString};
use rcgen::{DistinguishedName, DnType, DnValue, ExtendedKeyUsagePurpose, SanType};
use time::OffsetDateTime;
use x509_parser::asn1_rs::Tag;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::x509::X509Name;

use super::build::{self, Validity};
use super::ca::Ca;
use super::keys::{self, KeyAlgorithm};
use super::write::{self, Output};
use super::{CertsError, Issued};

/// What `dicectl certs renew` should do.
#[derive(Debug, Clone)]
pub struct RenewOptions {
    /// The CA directory of the CA that issued the certificate.
    pub ca_dir: PathBuf,
    /// The certificate file to renew (replaced).
    pub cert: PathBuf,
    /// Its key file (checked against the certificate, then replaced by a new key).
    pub key: PathBuf,
    /// Days of validity; `None` keeps the old certificate's lifetime.
    pub days: Option<u32>,
}

/// What `renew` did.
#[derive(Debug, Clone)]
pub struct RenewReport {
    /// The old certificate's serial.
    pub old_serial: String,
    /// The key file, then the certificate file.
    pub files: Vec<PathBuf>,
    /// What the new certificate says.
    pub issued: Issued,
    /// The new key's algorithm (the old one's).
    pub key: KeyAlgorithm,
    /// Set when the validity was cut short to the CA's not-after (Unix seconds).
    pub clamped_to: Option<i64>,
}

impl fmt::Display for RenewReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "renewed serial {} -> {}",
            self.old_serial, self.issued.summary.serial
        )?;
        super::issue::describe(f, &self.files, &self.issued, self.key)?;
        super::issue::clamp_note(f, self.clamped_to, "CA's")
    }
}

const CERT_HINT: &str = "pass --cert the PEM certificate to renew";
const KEY_HINT: &str = "pass --key the PEM private key of that certificate";

fn file_error(path: &std::path::Path, message: impl Into<String>) -> CertsError {
    CertsError::File {
        path: path.to_owned(),
        message: message.into(),
    }
}

/// Renews the certificate at `now` and replaces its key and certificate files.
pub fn renew(options: &RenewOptions, now: OffsetDateTime) -> Result<RenewReport, CertsError> {
    let ca = Ca::load(&options.ca_dir, now.unix_timestamp())?;
    let chain = load_certs(&options.cert).map_err(|e| CertsError::pem(&e, CERT_HINT))?;
    let old = &chain[0];
    let (_, x509) = X509Certificate::from_der(old.as_ref())
        .map_err(|e| file_error(&options.cert, format!("not a valid X.509 certificate: {e}")))?;
    let summary = CertSummary::parse(old).map_err(|e| file_error(&options.cert, e.to_string()))?;
    if x509.is_ca() {
        return Err(file_error(
            &options.cert,
            format!(
                "\"{}\" is a CA certificate: renew leaf certificates only (make a new intermediate with `dicectl certs intermediate`)",
                summary.subject
            ),
        ));
    }
    let (_, ca_x509) = X509Certificate::from_der(ca.cert.as_ref())
        .map_err(|e| CertsError::Message(format!("the CA certificate: {e}")))?;
    let issued_by_ca = x509.issuer() == ca_x509.subject()
        && x509.verify_signature(Some(ca_x509.public_key())).is_ok();
    if !issued_by_ca {
        return Err(file_error(
            &options.cert,
            format!(
                "was issued by \"{}\", not by the CA in {} (\"{}\"): pass the --ca-dir of the CA that issued it",
                summary.issuer,
                ca.dir.display(),
                ca.summary.subject
            ),
        ));
    }
    let old_key = load_key(&options.key).map_err(|e| CertsError::pem(&e, KEY_HINT))?;
    let old_key = keys::key_pair(&old_key).map_err(|message| file_error(&options.key, message))?;
    if !keys::matches(&old_key, x509.public_key()) {
        return Err(file_error(
            &options.key,
            format!(
                "does not match the certificate in {} (pass --key the key of that certificate: both files are replaced)",
                options.cert.display()
            ),
        ));
    }
    let algorithm = KeyAlgorithm::of_spki(x509.public_key()).map_err(|other| {
        file_error(
            &options.cert,
            format!("holds a {other} key, which dicectl cannot make (issue a new certificate with `dicectl certs issue --key-type`)"),
        )
    })?;

    let subject = distinguished_name(x509.subject())
        .map_err(|message| file_error(&options.cert, format!("subject: {message}")))?;
    let sans = subject_alt_names(&x509).map_err(|message| file_error(&options.cert, message))?;
    let usages = extended_key_usages(&x509);
    let days = options.days.unwrap_or_else(|| lifetime_days(&summary));
    let validity = Validity::new(now, days, Some(ca.summary.not_after));
    let params = build::leaf_params(subject, sans, usages, algorithm, validity);

    let key = algorithm.generate().map_err(CertsError::Message)?;
    let role = role_of(&x509);
    let cert = params
        .signed_by(&key, &ca.issuer)
        .map_err(|source| CertsError::Generate { what: role, source })?;
    let issued = Issued::parse(role, cert.der())?;
    let pem = pem_chain(std::iter::once(cert.der()).chain(&ca.intermediates));
    let files = write::write_all(&[
        Output::key(options.key.clone(), key.serialize_pem()),
        Output::cert(options.cert.clone(), pem),
    ])?;
    Ok(RenewReport {
        old_serial: summary.serial,
        files,
        issued,
        key: algorithm,
        clamped_to: validity.clamped.then_some(ca.summary.not_after),
    })
}

/// The old certificate's lifetime in whole days, at least 1.
fn lifetime_days(summary: &CertSummary) -> u32 {
    let days = (summary.not_after - summary.not_before).div_euclid(86_400);
    u32::try_from(days.max(1)).unwrap_or(u32::MAX)
}

/// `server`, `client` or `leaf`, from the extended key usages.
fn role_of(cert: &X509Certificate<'_>) -> &'static str {
    match cert.extended_key_usage() {
        Ok(Some(eku)) if eku.value.server_auth => "server",
        Ok(Some(eku)) if eku.value.client_auth => "client",
        _ => "leaf",
    }
}

/// The subject as rcgen writes it: the same attributes, in order, with the same string types.
fn distinguished_name(name: &X509Name<'_>) -> Result<DistinguishedName, String> {
    let mut dn = DistinguishedName::new();
    for rdn in name.iter() {
        let mut attributes = rdn.iter();
        let (Some(attribute), None) = (attributes.next(), attributes.next()) else {
            return Err("a multi-valued RDN, which dicectl cannot copy".to_owned());
        };
        let oid: Vec<u64> = attribute
            .attr_type()
            .iter()
            .ok_or("an attribute type too large to copy")?
            .collect();
        let data = attribute.attr_value().data;
        let text = || {
            std::str::from_utf8(data)
                .map(str::to_owned)
                .map_err(|_| "an attribute that is not valid text".to_owned())
        };
        let invalid = |error: rcgen::Error| format!("an attribute rcgen cannot write: {error}");
        let value = match attribute.attr_value().header.tag() {
            Tag::Utf8String => DnValue::Utf8String(text()?),
            Tag::PrintableString => DnValue::PrintableString(text()?.try_into().map_err(invalid)?),
            Tag::Ia5String => DnValue::Ia5String(text()?.try_into().map_err(invalid)?),
            Tag::T61String => DnValue::TeletexString(text()?.try_into().map_err(invalid)?),
            Tag::BmpString => {
                DnValue::BmpString(BmpString::from_utf16be(data.to_vec()).map_err(invalid)?)
            }
            Tag::UniversalString => DnValue::UniversalString(
                UniversalString::from_utf32be(data.to_vec()).map_err(invalid)?,
            ),
            other => {
                return Err(format!(
                    "an attribute of ASN.1 type {other} that dicectl cannot copy"
                ));
            }
        };
        dn.push(DnType::from_oid(&oid), value);
    }
    Ok(dn)
}

/// The SANs, in order: DNS names, IP addresses, URIs and email addresses.
fn subject_alt_names(cert: &X509Certificate<'_>) -> Result<Vec<SanType>, String> {
    let Ok(Some(ext)) = cert.subject_alternative_name() else {
        return Ok(Vec::new());
    };
    let invalid = |error: rcgen::Error| format!("a SAN rcgen cannot write: {error}");
    ext.value
        .general_names
        .iter()
        .map(|name| match name {
            GeneralName::DNSName(dns) => (*dns).try_into().map(SanType::DnsName).map_err(invalid),
            GeneralName::URI(uri) => (*uri).try_into().map(SanType::URI).map_err(invalid),
            GeneralName::RFC822Name(email) => {
                (*email).try_into().map(SanType::Rfc822Name).map_err(invalid)
            }
            GeneralName::IPAddress(bytes) => match bytes.len() {
                4 => Ok(SanType::IpAddress(
                    <[u8; 4]>::try_from(*bytes).map_err(|_| "bad IP SAN")?.into(),
                )),
                16 => Ok(SanType::IpAddress(
                    <[u8; 16]>::try_from(*bytes).map_err(|_| "bad IP SAN")?.into(),
                )),
                _ => Err("an IP SAN that is not an IPv4 or IPv6 address".to_owned()),
            },
            other => Err(format!(
                "has a SAN dicectl cannot copy ({other}): issue a new certificate with `dicectl certs issue`"
            )),
        })
        .collect()
}

/// The extended key usages, kept as they were (serverAuth, clientAuth, ...).
fn extended_key_usages(cert: &X509Certificate<'_>) -> Vec<ExtendedKeyUsagePurpose> {
    let Ok(Some(ext)) = cert.extended_key_usage() else {
        return Vec::new();
    };
    let eku = ext.value;
    let known = [
        (eku.any, ExtendedKeyUsagePurpose::Any),
        (eku.server_auth, ExtendedKeyUsagePurpose::ServerAuth),
        (eku.client_auth, ExtendedKeyUsagePurpose::ClientAuth),
        (eku.code_signing, ExtendedKeyUsagePurpose::CodeSigning),
        (
            eku.email_protection,
            ExtendedKeyUsagePurpose::EmailProtection,
        ),
        (eku.time_stamping, ExtendedKeyUsagePurpose::TimeStamping),
        (eku.ocsp_signing, ExtendedKeyUsagePurpose::OcspSigning),
    ];
    known
        .into_iter()
        .filter_map(|(set, purpose)| set.then_some(purpose))
        .chain(eku.other.iter().filter_map(|oid| {
            oid.iter()
                .map(|arcs| ExtendedKeyUsagePurpose::Other(arcs.collect()))
        }))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    use super::*;
    use crate::certs::build::Role;
    use crate::certs::fixtures::{init_ca, issue_options, node_1_sans};
    use crate::certs::issue::issue;
    use crate::certs::keys::KeyType;

    fn setup(key_type: KeyType) -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = dir.path().join("ca");
        init_ca(&ca);
        let out = dir.path().join("node");
        let mut options = issue_options(&ca, &out, Role::Server, "node-1");
        options.sans = node_1_sans();
        options.days = 10;
        options.key_type = key_type;
        issue(&options, OffsetDateTime::now_utc()).expect("issue");
        (dir, ca, out.join("node-1.pem"), out.join("node-1-key.pem"))
    }

    fn summary(path: &Path) -> CertSummary {
        CertSummary::parse(&load_certs(path).expect("load")[0]).expect("parse")
    }

    #[test]
    fn renew_keeps_the_names_and_replaces_serial_key_and_validity() {
        for key_type in [KeyType::EcdsaP384, KeyType::Ed25519] {
            let (_dir, ca, cert, key) = setup(key_type);
            let before = summary(&cert);
            let old_key = fs::read_to_string(&key).expect("key");
            let report = renew(
                &RenewOptions {
                    ca_dir: ca,
                    cert: cert.clone(),
                    key: key.clone(),
                    days: Some(90),
                },
                OffsetDateTime::now_utc(),
            )
            .expect("renew");
            let after = summary(&cert);
            assert_eq!(after.subject, before.subject);
            assert_eq!(after.sans, before.sans);
            assert_ne!(after.serial, before.serial);
            assert_eq!(report.old_serial, before.serial);
            assert!(after.not_after > before.not_after + 79 * 86_400);
            assert_ne!(fs::read_to_string(&key).expect("key"), old_key);
            let mode = fs::metadata(&key).expect("key").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            assert_eq!(report.key, KeyAlgorithm::from(key_type));
            let text = report.to_string();
            assert!(text.starts_with("renewed serial "), "{text}");
            assert!(!text.contains("PRIVATE KEY"), "{text}");
        }
    }

    #[test]
    fn renew_keeps_the_lifetime_by_default() {
        let (_dir, ca, cert, key) = setup(KeyType::EcdsaP256);
        let options = RenewOptions {
            ca_dir: ca,
            cert: cert.clone(),
            key,
            days: None,
        };
        renew(&options, OffsetDateTime::now_utc()).expect("renew");
        let after = summary(&cert);
        assert_eq!(after.not_after - after.not_before, 10 * 86_400 + 300);
    }

    #[test]
    fn renew_refuses_a_wrong_key_or_ca() {
        let (dir, ca, cert, key) = setup(KeyType::EcdsaP256);
        let other_ca = dir.path().join("other");
        init_ca(&other_ca);
        let before = fs::read(&cert).expect("cert");
        let error = renew(
            &RenewOptions {
                ca_dir: other_ca.clone(),
                cert: cert.clone(),
                key: key.clone(),
                days: None,
            },
            OffsetDateTime::now_utc(),
        )
        .expect_err("another CA");
        assert!(error.to_string().contains("not by the CA in"), "{error}");
        let error = renew(
            &RenewOptions {
                ca_dir: ca,
                cert: cert.clone(),
                key: other_ca.join("server-key.pem"),
                days: None,
            },
            OffsetDateTime::now_utc(),
        )
        .expect_err("another key");
        assert!(
            error.to_string().contains("does not match the certificate"),
            "{error}"
        );
        assert_eq!(
            fs::read(&cert).expect("cert"),
            before,
            "nothing was written"
        );
    }
}
