//! Signing as a [`Pki`]'s CA from its files, for what [`Pki::issue`] does not
//! make: certificate revocation lists (PEM and DER), client certificates with
//! URI SANs (SPIFFE IDs), client certificates for the wrong purpose, and an
//! impostor CA that copies the real CA's name but not its key.

use std::fs;
use std::path::{Path, PathBuf};

use dice_proto::cert::CertSummary;
use rcgen::{
    CertificateParams, CertificateRevocationListParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RevocationReason,
    RevokedCertParams, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use crate::pki::{Identity, ORGANIZATION, Pki, fresh_serial};

/// The common name [`Pki::new`] gives its CA.
pub const CA_COMMON_NAME: &str = "dice test CA";

/// Signs with a CA key: the real one of a [`Pki`], or an impostor's.
pub struct CaSigner {
    issuer: Issuer<'static, KeyPair>,
    dir: PathBuf,
}

/// What to put in a client certificate made by [`CaSigner::issue`].
#[derive(Debug, Clone)]
pub struct ClientSpec {
    name: String,
    common_name: String,
    sans: Vec<SanType>,
    purpose: ExtendedKeyUsagePurpose,
}

impl ClientSpec {
    /// A client certificate (`clientAuth`) with common name `name` and no SANs,
    /// written to `<name>.pem` and `<name>-key.pem`.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            common_name: name.to_owned(),
            sans: Vec::new(),
            purpose: ExtendedKeyUsagePurpose::ClientAuth,
        }
    }

    /// Sets the subject common name.
    pub fn common_name(mut self, common_name: &str) -> Self {
        self.common_name = common_name.to_owned();
        self
    }

    /// Adds a DNS SAN.
    pub fn dns(mut self, name: &str) -> Self {
        self.sans.push(SanType::DnsName(
            name.try_into().expect("a valid IA5 DNS name"),
        ));
        self
    }

    /// Adds a URI SAN, such as a SPIFFE ID `spiffe://trust-domain/path`.
    pub fn uri(mut self, uri: &str) -> Self {
        self.sans
            .push(SanType::URI(uri.try_into().expect("a valid IA5 URI")));
        self
    }

    /// Marks the certificate for `serverAuth` only, so it is no client certificate.
    pub fn server_auth_only(mut self) -> Self {
        self.purpose = ExtendedKeyUsagePurpose::ServerAuth;
        self
    }
}

/// A CRL in both encodings.
#[derive(Debug, Clone)]
pub struct Crl {
    /// `-----BEGIN X509 CRL-----` text.
    pub pem: String,
    /// The DER bytes.
    pub der: Vec<u8>,
}

impl Crl {
    /// Writes the PEM form to `path`.
    pub fn write_pem(&self, path: &Path) {
        fs::write(path, &self.pem).expect("write the PEM CRL");
    }

    /// Writes the DER form to `path`.
    pub fn write_der(&self, path: &Path) {
        fs::write(path, &self.der).expect("write the DER CRL");
    }
}

impl CaSigner {
    /// Signs as `pki`'s CA, with the key in its `ca-key.pem`.
    pub fn of(pki: &Pki) -> Self {
        let ca = fs::read(pki.ca_cert()).expect("read ca.pem");
        let ca = dice_proto::pem::parse_certs(pki.ca_cert(), &ca).expect("ca.pem is PEM");
        let subject = CertSummary::parse(&ca[0]).expect("ca.pem is X.509").subject;
        assert_eq!(
            subject,
            format!("CN={CA_COMMON_NAME}, O={ORGANIZATION}"),
            "the harness CA's name changed: update ca.rs"
        );
        let key = fs::read_to_string(pki.ca_key()).expect("read ca-key.pem");
        let key = KeyPair::from_pem(&key).expect("ca-key.pem is a PKCS#8 key");
        Self::with_key(pki.dir(), key)
    }

    /// A CA with exactly `pki`'s CA name but a key of its own: what it signs
    /// names the right issuer, and its signatures do not verify.
    pub fn impostor(pki: &Pki) -> Self {
        Self::with_key(
            pki.dir(),
            KeyPair::generate().expect("generate the impostor CA key"),
        )
    }

    /// A CA named `common_name`, unknown to any [`Pki`], writing beside `pki`'s files.
    pub fn stranger(pki: &Pki, common_name: &str) -> Self {
        let key = KeyPair::generate().expect("generate the stranger CA key");
        Self::named(pki.dir(), common_name, key)
    }

    fn with_key(dir: &Path, key: KeyPair) -> Self {
        Self::named(dir, CA_COMMON_NAME, key)
    }

    fn named(dir: &Path, common_name: &str, key: KeyPair) -> Self {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(common_name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        Self {
            issuer: Issuer::new(params, key),
            dir: dir.to_owned(),
        }
    }

    /// Signs the client certificate `spec` describes, valid from an hour ago
    /// for 30 days, and writes it beside the PKI's other files.
    pub fn issue(&self, spec: &ClientSpec) -> Identity {
        let key = KeyPair::generate().expect("generate the client key");
        let mut params = CertificateParams::default();
        params.distinguished_name = name(&spec.common_name);
        params.subject_alt_names = spec.sans.clone();
        params.serial_number = Some(fresh_serial());
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![spec.purpose.clone()];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(30);
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("sign the client certificate");
        let cert_path = self.dir.join(format!("{}.pem", spec.name));
        let key_path = self.dir.join(format!("{}-key.pem", spec.name));
        fs::write(&cert_path, cert.pem()).expect("write the client certificate");
        fs::write(&key_path, key.serialize_pem()).expect("write the client key");
        restrict(&key_path);
        Identity {
            cert: cert_path,
            key: key_path,
            summary: CertSummary::parse(cert.der()).expect("rcgen writes valid X.509"),
        }
    }

    /// A CRL valid from an hour ago for a week, revoking `revoked`.
    pub fn crl(&self, revoked: &[&Identity]) -> Crl {
        let now = OffsetDateTime::now_utc();
        self.crl_between(revoked, now - Duration::hours(1), now + Duration::days(7))
    }

    /// A CRL whose next update was yesterday (it expired), revoking `revoked`.
    pub fn expired_crl(&self, revoked: &[&Identity]) -> Crl {
        let now = OffsetDateTime::now_utc();
        self.crl_between(revoked, now - Duration::days(10), now - Duration::days(1))
    }

    fn crl_between(
        &self,
        revoked: &[&Identity],
        this_update: OffsetDateTime,
        next_update: OffsetDateTime,
    ) -> Crl {
        let params = CertificateRevocationListParams {
            this_update,
            next_update,
            crl_number: fresh_serial(),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|identity| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&hex(identity.serial())),
                    revocation_time: this_update,
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&self.issuer).expect("sign the CRL");
        Crl {
            pem: crl.pem().expect("encode the CRL as PEM"),
            der: crl.der().to_vec(),
        }
    }
}

fn name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name.push(DnType::OrganizationName, ORGANIZATION);
    name
}

/// Lowercase hex (as [`CertSummary::serial`] writes it) to bytes.
fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("a hex serial"))
        .collect()
}

fn restrict(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).expect("chmod 600 the key file");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_a_serial() {
        assert_eq!(hex("40ff00"), vec![0x40, 0xff, 0x00]);
    }
}
