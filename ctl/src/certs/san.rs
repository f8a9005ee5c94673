//! Subject alternative names as flags spell them: `node-1.example`,
//! `10.0.0.7`, `::1`, `spiffe://dice/node-1`, or with an explicit
//! `DNS:`/`IP:`/`URI:` prefix (the way `certs inspect` prints them).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use rcgen::SanType;
use rustls::pki_types::DnsName;

/// A subject alternative name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum San {
    /// A DNS name, e.g. `node-1.example` or `*.dice.example`.
    Dns(String),
    /// An IP address, e.g. `127.0.0.1` or `::1`.
    Ip(IpAddr),
    /// A URI, e.g. a SPIFFE ID `spiffe://dice.example/node/1`.
    Uri(String),
}

/// A SAN that is neither an IP address, a valid DNS name nor a URI.
#[derive(Debug, thiserror::Error)]
#[error(
    "{0:?}: not an IP address, a DNS name or a URI (e.g. node-1.example, 10.0.0.7, ::1, spiffe://dice/node-1)"
)]
pub struct SanParseError(String);

impl FromStr for San {
    type Err = SanParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || SanParseError(text.to_owned());
        let (kind, value) = match text.split_once(':') {
            Some((prefix, rest)) if prefix.eq_ignore_ascii_case("dns") => (Some("dns"), rest),
            Some((prefix, rest)) if prefix.eq_ignore_ascii_case("ip") => (Some("ip"), rest),
            Some((prefix, rest)) if prefix.eq_ignore_ascii_case("uri") => (Some("uri"), rest),
            _ => (None, text),
        };
        match kind {
            Some("dns") => dns(value).ok_or_else(invalid),
            Some("ip") => ip(value).ok_or_else(invalid),
            Some(_) => uri(value).ok_or_else(invalid),
            None => ip(value)
                .or_else(|| value.contains("://").then(|| uri(value)).flatten())
                .or_else(|| dns(value))
                .ok_or_else(invalid),
        }
    }
}

/// An IP address; `[::1]` is how IPv6 is usually written next to a port, so accept it too.
fn ip(text: &str) -> Option<San> {
    let bare = text
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .unwrap_or(text);
    bare.parse().ok().map(San::Ip)
}

/// A DNS name, optionally a wildcard (`*.dice.example`).
fn dns(text: &str) -> Option<San> {
    let base = text.strip_prefix("*.").unwrap_or(text);
    // DnsName accepts an IP address's text; a SAN that parses as one is an IP.
    if base.parse::<IpAddr>().is_ok() {
        return None;
    }
    DnsName::try_from(base)
        .ok()
        .map(|_| San::Dns(text.to_owned()))
}

/// A URI: `SCHEME://REST`, printable ASCII without spaces (an IA5String).
fn uri(text: &str) -> Option<San> {
    let (scheme, rest) = text.split_once("://")?;
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    let rest_ok = !rest.is_empty() && rest.chars().all(|c| c.is_ascii_graphic());
    (scheme_ok && rest_ok).then(|| San::Uri(text.to_owned()))
}

impl fmt::Display for San {
    /// `DNS:name`, `IP:addr` or `URI:uri`, as certificate summaries show SANs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dns(name) => write!(f, "DNS:{name}"),
            Self::Ip(ip) => write!(f, "IP:{ip}"),
            Self::Uri(uri) => write!(f, "URI:{uri}"),
        }
    }
}

impl San {
    /// The SAN in rcgen's form.
    pub fn to_rcgen(&self) -> Result<SanType, rcgen::Error> {
        Ok(match self {
            Self::Dns(name) => SanType::DnsName(name.as_str().try_into()?),
            Self::Ip(ip) => SanType::IpAddress(*ip),
            Self::Uri(uri) => SanType::URI(uri.as_str().try_into()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sans_parse_as_ip_dns_or_uri() {
        let cases = [
            ("localhost", "DNS:localhost"),
            ("node-1.dice.example", "DNS:node-1.dice.example"),
            ("*.dice.example", "DNS:*.dice.example"),
            ("127.0.0.1", "IP:127.0.0.1"),
            ("::1", "IP:::1"),
            ("[fd00::7]", "IP:fd00::7"),
            (
                "spiffe://dice.example/node/1",
                "URI:spiffe://dice.example/node/1",
            ),
            ("DNS:node-2.example", "DNS:node-2.example"),
            ("IP:10.0.0.7", "IP:10.0.0.7"),
            ("uri:https://dice.example/", "URI:https://dice.example/"),
        ];
        for (text, want) in cases {
            let san: San = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(san.to_string(), want, "{text}");
            san.to_rcgen().unwrap_or_else(|e| panic!("{text}: {e}"));
        }
        for bad in [
            "",
            "has space",
            "under_score!",
            "a..b",
            "-lead.example",
            "IP:node-1",
            "DNS:10.0.0.7",
            "URI:no-scheme",
            "spiffe://",
            "sp ffe://x",
        ] {
            let error = bad.parse::<San>().expect_err(bad);
            assert!(
                error
                    .to_string()
                    .contains("not an IP address, a DNS name or a URI"),
                "{error}"
            );
        }
    }
}
