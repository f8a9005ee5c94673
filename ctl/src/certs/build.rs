//! What every certificate dicectl makes has in common: a random serial, a
//! validity backdated 5 minutes (and never past its CA's), the key usages of
//! its role, and PEM chains to write.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyUsagePurpose, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use super::keys::KeyAlgorithm;

/// How far `not_before` is backdated, so a peer whose clock is a little behind accepts it.
pub const BACKDATE: Duration = Duration::minutes(5);

/// What a leaf certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A dice-agent: extended key usage serverAuth.
    Server,
    /// A dicectl or any other client: extended key usage clientAuth.
    Client,
}

impl Role {
    /// `server` or `client`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Server => "server",
            Self::Client => "client",
        }
    }

    fn usage(self) -> ExtendedKeyUsagePurpose {
        match self {
            Self::Server => ExtendedKeyUsagePurpose::ServerAuth,
            Self::Client => ExtendedKeyUsagePurpose::ClientAuth,
        }
    }
}

/// When a new certificate is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// `now` less [`BACKDATE`].
    pub not_before: OffsetDateTime,
    /// `now` plus the days asked for, or the CA's not-after if that comes first.
    pub not_after: OffsetDateTime,
    /// Whether `not_after` was cut short to the CA's.
    pub clamped: bool,
}

impl Validity {
    /// Valid from 5 minutes before `now` for `days` days, but not past
    /// `ca_not_after` (Unix seconds): a certificate outliving its CA would
    /// stop verifying on the CA's last day anyway.
    pub fn new(now: OffsetDateTime, days: u32, ca_not_after: Option<i64>) -> Self {
        let wanted = now + Duration::days(i64::from(days));
        let ca_end = ca_not_after.and_then(|secs| OffsetDateTime::from_unix_timestamp(secs).ok());
        match ca_end {
            Some(end) if end < wanted => Self {
                not_before: now - BACKDATE,
                not_after: end,
                clamped: true,
            },
            _ => Self {
                not_before: now - BACKDATE,
                not_after: wanted,
                clamped: false,
            },
        }
    }
}

/// A random, positive 16-byte serial number with no leading zero byte.
pub fn serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

/// A subject with only a common name.
pub fn common_name(name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn
}

/// The parameters of a leaf certificate for `role`: digitalSignature (and
/// keyEncipherment for RSA, as TLS 1.2 clients with RSA key exchange expect),
/// serverAuth or clientAuth, an authority key identifier and a fresh serial.
pub fn leaf_params(
    subject: DistinguishedName,
    sans: Vec<SanType>,
    usages: Vec<ExtendedKeyUsagePurpose>,
    key: KeyAlgorithm,
    validity: Validity,
) -> CertificateParams {
    let mut params = base_params(subject, validity);
    params.subject_alt_names = sans;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    if key.is_rsa() {
        params.key_usages.push(KeyUsagePurpose::KeyEncipherment);
    }
    params.extended_key_usages = usages;
    params.use_authority_key_identifier_extension = true;
    params
}

/// The extended key usages of `role`.
pub fn role_usages(role: Role) -> Vec<ExtendedKeyUsagePurpose> {
    vec![role.usage()]
}

/// The parameters of a CA certificate: keyCertSign and cRLSign, a path
/// length constraint (`None`: unconstrained), a fresh serial.
pub fn ca_params(
    subject: DistinguishedName,
    path_len: Option<u8>,
    validity: Validity,
    signed_by_parent: bool,
) -> CertificateParams {
    let mut params = base_params(subject, validity);
    params.is_ca = IsCa::Ca(match path_len {
        Some(len) => BasicConstraints::Constrained(len),
        None => BasicConstraints::Unconstrained,
    });
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.use_authority_key_identifier_extension = signed_by_parent;
    params
}

/// What every certificate has: its subject, a fresh serial and its validity.
fn base_params(subject: DistinguishedName, validity: Validity) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = subject;
    params.serial_number = Some(serial());
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    params
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validity_is_backdated_and_never_outlives_the_ca() {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("time");
        let free = Validity::new(now, 365, None);
        assert_eq!(free.not_before, now - Duration::minutes(5));
        assert_eq!(free.not_after, now + Duration::days(365));
        assert!(!free.clamped);

        let ca_end = 1_800_000_000 + 30 * 86_400;
        let clamped = Validity::new(now, 365, Some(ca_end));
        assert_eq!(clamped.not_after.unix_timestamp(), ca_end);
        assert!(clamped.clamped);
        assert!(!Validity::new(now, 7, Some(ca_end)).clamped);
    }

    #[test]
    fn serials_are_positive_16_bytes_and_differ() {
        let a = serial().to_bytes();
        let b = serial().to_bytes();
        assert_eq!(a.len(), 16);
        assert!(a[0] & 0x80 == 0 && a[0] != 0);
        assert_ne!(a, b);
    }
}
