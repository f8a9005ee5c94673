//! Reads what a certificate says: subject, SANs, serial and validity.

use std::fmt;

use rustls::pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The facts about one certificate that logs, `--check` and health reports show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSummary {
    /// Subject distinguished name, e.g. `CN=node-1, O=dice fleet`.
    pub subject: String,
    /// The subject's common name (CN), if it has one.
    pub common_name: Option<String>,
    /// Issuer distinguished name.
    pub issuer: String,
    /// Subject alternative names as `DNS:name`, `IP:addr`, `URI:uri`, `email:addr`.
    pub sans: Vec<String>,
    /// Serial number, lowercase hex without separators.
    pub serial: String,
    /// Start of validity, seconds since the Unix epoch.
    pub not_before: i64,
    /// End of validity, seconds since the Unix epoch.
    pub not_after: i64,
}

/// A certificate that could not be parsed as X.509.
#[derive(Debug, thiserror::Error)]
#[error("not a valid X.509 certificate: {0}")]
pub struct CertParseError(String);

impl CertSummary {
    /// Parses a DER certificate.
    pub fn parse(der: &CertificateDer<'_>) -> Result<Self, CertParseError> {
        let (_, cert) =
            X509Certificate::from_der(der.as_ref()).map_err(|e| CertParseError(e.to_string()))?;
        Ok(Self::from_x509(&cert))
    }

    fn from_x509(cert: &X509Certificate<'_>) -> Self {
        let sans = cert
            .subject_alternative_name()
            .ok()
            .flatten()
            .map(|ext| {
                ext.value
                    .general_names
                    .iter()
                    .filter_map(describe_name)
                    .collect()
            })
            .unwrap_or_default();
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned);
        Self {
            subject: cert.subject().to_string(),
            common_name,
            issuer: cert.issuer().to_string(),
            sans,
            serial: cert
                .raw_serial()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
        }
    }

    /// Whole days from `now` (Unix seconds) until the certificate expires; negative once expired.
    pub fn days_left(&self, now: i64) -> i64 {
        (self.not_after - now).div_euclid(86_400)
    }

    /// Whether the certificate is valid at `now` (Unix seconds).
    pub fn is_valid_at(&self, now: i64) -> bool {
        self.not_before <= now && now <= self.not_after
    }
}

impl fmt::Display for CertSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "subject \"{}\", serial {}", self.subject, self.serial)
    }
}

fn describe_name(name: &GeneralName<'_>) -> Option<String> {
    match name {
        GeneralName::DNSName(dns) => Some(format!("DNS:{dns}")),
        GeneralName::URI(uri) => Some(format!("URI:{uri}")),
        GeneralName::RFC822Name(email) => Some(format!("email:{email}")),
        GeneralName::IPAddress(bytes) => ip_from_bytes(bytes).map(|ip| format!("IP:{ip}")),
        _ => None,
    }
}

fn ip_from_bytes(bytes: &[u8]) -> Option<std::net::IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(std::net::IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(std::net::IpAddr::from),
        _ => None,
    }
}

/// A certificate of a chain that is not valid X.509.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainEntryError {
    /// Position of the bad certificate in the chain, counting from 1.
    pub number: usize,
    /// What the X.509 parser found wrong.
    pub reason: String,
}

/// Parses every certificate of `chain`, in order, stopping at the first one
/// that is not valid X.509.
pub fn parse_chain<'a>(
    chain: &'a [CertificateDer<'_>],
) -> Result<Vec<X509Certificate<'a>>, ChainEntryError> {
    chain
        .iter()
        .enumerate()
        .map(|(i, der)| {
            X509Certificate::from_der(der.as_ref())
                .map(|(_, cert)| cert)
                .map_err(|e| ChainEntryError {
                    number: i + 1,
                    reason: e.to_string(),
                })
        })
        .collect()
}

/// Checks that each certificate in `chain` (leaf first) was issued and signed
/// by the next one, so a server never sends a chain clients cannot follow.
pub fn check_chain_links(chain: &[CertificateDer<'_>]) -> Result<(), String> {
    let parsed = parse_chain(chain).map_err(|e| {
        format!(
            "certificate {} of the chain is not valid X.509: {}",
            e.number, e.reason
        )
    })?;
    for (i, pair) in parsed.windows(2).enumerate() {
        let (child, parent) = (&pair[0], &pair[1]);
        if child.issuer() != parent.subject() {
            return Err(format!(
                "chain is out of order: certificate {} is issued by \"{}\" but certificate {} is \"{}\"",
                i + 1,
                child.issuer(),
                i + 2,
                parent.subject()
            ));
        }
        child
            .verify_signature(Some(parent.public_key()))
            .map_err(|_| {
                format!(
                    "certificate {} of the chain is not signed by certificate {} (\"{}\")",
                    i + 1,
                    i + 2,
                    parent.subject()
                )
            })?;
    }
    Ok(())
}

/// Formats Unix seconds as an RFC 3339 UTC timestamp, e.g. `2027-01-31T12:00:00Z`.
pub fn rfc3339(unix_secs: i64) -> String {
    let days = unix_secs.div_euclid(86_400);
    let secs = unix_secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Converts days since 1970-01-01 to a (year, month, day) civil date (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// SHA-256 of `der`, lowercase hex: how the admin and info APIs name a
/// certificate (the fingerprint `openssl x509 -fingerprint -sha256` shows,
/// without colons).
pub fn sha256_hex(der: &[u8]) -> String {
    use std::fmt::Write as _;
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    digest
        .as_ref()
        .iter()
        .fold(String::with_capacity(64), |mut hex, byte| {
            let _ = write!(hex, "{byte:02x}");
            hex
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        for (secs, text) in [
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (1_798_761_599, "2026-12-31T23:59:59Z"),
            (-1, "1969-12-31T23:59:59Z"),
        ] {
            assert_eq!(rfc3339(secs), text);
        }
    }

    #[test]
    fn sha256_is_lowercase_hex() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
