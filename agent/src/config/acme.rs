//! `[acme]`: the agent obtains and renews the certificate of `[tls]` itself,
//! from an ACME server (RFC 8555), instead of reading files another tool
//! writes. Validated here; run by `crate::acme`.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use dice_proto::keys::KeyType;
use toml::Spanned;

use super::raw::{RawAcme, RawTls};
use super::{FileRef, ListenerConfig, Mode, Validator};

/// Default for `acme.renew_before`: renew once a third of the lifetime is left.
pub const DEFAULT_RENEW_BEFORE: Fraction = Fraction { num: 1, den: 3 };

/// `[acme]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeConfig {
    /// `directory`: the ACME server's directory URL (https).
    pub directory: String,
    /// `ca`: the PEM bundle that signs the ACME server's HTTPS certificate; `None`: the system roots.
    pub ca: Option<FileRef>,
    /// `identifiers`: the DNS names and IP addresses the certificate is for.
    pub identifiers: Vec<Identifier>,
    /// `challenge`, with where it is answered.
    pub challenge: Challenge,
    /// `account_key`: the ACME account's key (PEM, mode 0600), created if missing.
    pub account_key: FileRef,
    /// `renew_before`: the share of the lifetime left at which to renew.
    pub renew_before: Fraction,
    /// `key_type`: the certificate key's type (made on the node, a new one each time).
    pub key_type: KeyType,
    /// `contact`: the account's contact URLs (`mailto:ops@example.com`).
    pub contact: Vec<String>,
    /// `eab_kid` and `eab_hmac_key_file`: external account binding.
    pub eab: Option<Eab>,
    /// `[tls] cert`, where the issued chain is written.
    pub cert: FileRef,
    /// `[tls] key`, where its key is written.
    pub key: FileRef,
}

/// A name or address the certificate is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identifier {
    /// A DNS name.
    Dns(String),
    /// An IP address.
    Ip(IpAddr),
}

impl std::fmt::Display for Identifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Dns(name) => f.write_str(name),
            Self::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// How the ACME server checks that this node holds the identifiers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// `http-01`: answered on `http_address`.
    Http01 {
        /// `http_address`.
        address: SocketAddr,
    },
    /// `tls-alpn-01`: answered by the mTLS listener named `tls_alpn_listener`.
    TlsAlpn01 {
        /// `tls_alpn_listener`.
        listener: String,
        /// That listener's address.
        address: SocketAddr,
    },
}

impl Challenge {
    /// The name the config and the ACME protocol give it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Http01 { .. } => "http-01",
            Self::TlsAlpn01 { .. } => "tls-alpn-01",
        }
    }
}

/// External account binding: the key id and the MAC key the CA handed out.
#[derive(Clone, PartialEq, Eq)]
pub struct Eab {
    /// `eab_kid`.
    pub kid: String,
    /// `eab_hmac_key_file`.
    pub hmac_key_file: FileRef,
}

impl std::fmt::Debug for Eab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Eab")
            .field("kid", &self.kid)
            .field("hmac_key_file", &self.hmac_key_file.path)
            .finish()
    }
}

/// A share of a certificate's lifetime, `num/den`, strictly between 0 and 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fraction {
    /// Numerator.
    pub num: u32,
    /// Denominator.
    pub den: u32,
}

impl Fraction {
    /// Parses `"1/3"` or `"33%"`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (num, den) = match text.strip_suffix('%') {
            Some(percent) => (percent.trim(), "100"),
            None => text
                .split_once('/')
                .ok_or_else(|| "not a fraction".to_owned())?,
        };
        let num: u32 = num.trim().parse().map_err(|_| "not a fraction")?;
        let den: u32 = den.trim().parse().map_err(|_| "not a fraction")?;
        if num == 0 || num >= den {
            return Err("must be more than 0 and less than 1".to_owned());
        }
        Ok(Self { num, den })
    }

    /// This share of `seconds`.
    pub fn of(self, seconds: i64) -> i64 {
        seconds.saturating_mul(i64::from(self.num)) / i64::from(self.den)
    }
}

impl std::fmt::Display for Fraction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.num, self.den)
    }
}

impl Validator<'_, '_> {
    /// `[acme]`, checked against the listeners and `[tls]`.
    pub(super) fn acme(
        &mut self,
        raw: &Spanned<RawAcme>,
        tls: &RawTls,
        listeners: &[ListenerConfig],
    ) -> Option<AcmeConfig> {
        let at = Some(raw.span().start);
        let acme = raw.get_ref();
        let mut ok = true;
        let directory = match &acme.directory {
            None => {
                self.report.error(
                    at,
                    "acme.directory",
                    "missing",
                    Some("set it to the ACME server's directory URL, e.g. \"https://ca.internal:9000/acme/acme/directory\""),
                );
                None
            }
            Some(url) if !url.get_ref().starts_with("https://") => {
                self.report.error(
                    Some(url.span().start),
                    "acme.directory",
                    format!("not an https URL: \"{}\"", url.get_ref()),
                    Some("ACME runs over HTTPS: write it as https://HOST[:PORT]/PATH"),
                );
                None
            }
            Some(url) => Some(url.get_ref().clone()),
        };
        let identifiers = self.acme_identifiers(acme, at);
        let challenge = self.acme_challenge(acme, at, listeners);
        let ca = acme.ca.as_ref().map(|ca| self.acme_file(ca, "acme.ca"));
        let account_key = match &acme.account_key {
            Some(path) => Some(self.acme_file(path, "acme.account_key")),
            None => {
                self.report.error(
                    at,
                    "acme.account_key",
                    "missing",
                    Some("name the file that holds the ACME account's key, e.g. \"acme-account.pem\" (created with mode 0600 if missing)"),
                );
                None
            }
        };
        let renew_before = match &acme.renew_before {
            None => Some(DEFAULT_RENEW_BEFORE),
            Some(text) => match Fraction::parse(text.get_ref()) {
                Ok(fraction) => Some(fraction),
                Err(error) => {
                    self.report.error(
                        Some(text.span().start),
                        "acme.renew_before",
                        format!("\"{}\": {error}", text.get_ref()),
                        Some("write the share of the lifetime left at which to renew, e.g. \"1/3\" or \"30%\""),
                    );
                    None
                }
            },
        };
        let key_type = match &acme.key_type {
            None => Some(KeyType::default()),
            Some(name) => KeyType::from_name(name.get_ref()).or_else(|| {
                self.report.error(
                    Some(name.span().start),
                    "acme.key_type",
                    format!("unknown key type \"{}\"", name.get_ref()),
                    Some(&format!("use one of {}", KeyType::names())),
                );
                None
            }),
        };
        let contact = acme
            .contact
            .as_ref()
            .map(|list| list.get_ref().clone())
            .unwrap_or_default();
        if let Some(list) = &acme.contact
            && let Some(bad) = list.get_ref().iter().find(|c| !c.contains(':'))
        {
            self.report.error(
                Some(list.span().start),
                "acme.contact",
                format!("not a URL: \"{bad}\""),
                Some("write contacts as URLs, e.g. \"mailto:ops@example.com\""),
            );
            ok = false;
        }
        let eab = match (&acme.eab_kid, &acme.eab_hmac_key_file) {
            (None, None) => Some(None),
            (Some(kid), Some(file)) if !kid.get_ref().trim().is_empty() => Some(Some(Eab {
                kid: kid.get_ref().clone(),
                hmac_key_file: self.acme_file(file, "acme.eab_hmac_key_file"),
            })),
            (Some(kid), Some(_)) => {
                self.report.error(
                    Some(kid.span().start),
                    "acme.eab_kid",
                    "is empty",
                    Some("set it to the key id the CA gave with the MAC key"),
                );
                None
            }
            (Some(kid), None) => {
                self.report.error(
                    Some(kid.span().start),
                    "acme.eab_hmac_key_file",
                    "missing: eab_kid needs it",
                    Some("name the file holding the base64url MAC key the CA gave with the key id"),
                );
                None
            }
            (None, Some(file)) => {
                self.report.error(
                    Some(file.span().start),
                    "acme.eab_kid",
                    "missing: eab_hmac_key_file needs it",
                    Some("set it to the key id the CA gave with the MAC key"),
                );
                None
            }
        };
        let (cert, key) = match (&tls.cert, &tls.key) {
            (Some(cert), Some(key)) => (
                Some(self.acme_file(cert, "tls.cert")),
                Some(self.acme_file(key, "tls.key")),
            ),
            _ => {
                self.report.error(
                    at,
                    "acme",
                    "[acme] writes the certificate to tls.cert and its key to tls.key, and [tls] does not set both",
                    Some("set cert and key in [tls]; they may be missing at the first start"),
                );
                (None, None)
            }
        };
        if let Some(cert) = &cert
            && !listeners
                .iter()
                .any(|l| matches!(&l.mode, Mode::Mtls(files) if files.cert == *cert))
        {
            self.report.error(
                at,
                "acme",
                "no mtls listener serves tls.cert, where [acme] writes the certificate",
                Some("add an mtls listener that uses [tls] (no cert of its own), or remove [acme]"),
            );
            ok = false;
        }
        if ok {
            Some(AcmeConfig {
                directory: directory?,
                ca,
                identifiers: identifiers?,
                challenge: challenge?,
                account_key: account_key?,
                renew_before: renew_before?,
                key_type: key_type?,
                contact,
                eab: eab?,
                cert: cert?,
                key: key?,
            })
        } else {
            None
        }
    }

    fn acme_file(&self, path: &Spanned<String>, key: &str) -> FileRef {
        FileRef {
            path: self.base.join(Path::new(path.get_ref())),
            key: key.to_owned(),
            line: super::line_of(self.source, path.span().start),
            origin: self.origin.to_owned(),
        }
    }

    fn acme_identifiers(&mut self, acme: &RawAcme, at: Option<usize>) -> Option<Vec<Identifier>> {
        const HINT: &str = "list the DNS names and IP addresses clients reach this node by, e.g. [\"node-1.dice.internal\", \"10.0.0.7\"]";
        let Some(list) = &acme.identifiers else {
            self.report
                .error(at, "acme.identifiers", "missing", Some(HINT));
            return None;
        };
        if list.get_ref().is_empty() {
            self.report.error(
                Some(list.span().start),
                "acme.identifiers",
                "is empty",
                Some(HINT),
            );
            return None;
        }
        let mut identifiers = Vec::new();
        for text in list.get_ref() {
            let text = text.trim();
            if let Ok(ip) = text.parse::<IpAddr>() {
                identifiers.push(Identifier::Ip(ip));
            } else if !text.is_empty()
                && text.split('.').all(|label| {
                    !label.is_empty()
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'*')
                })
            {
                identifiers.push(Identifier::Dns(text.to_ascii_lowercase()));
            } else {
                self.report.error(
                    Some(list.span().start),
                    "acme.identifiers",
                    format!("\"{text}\" is neither a DNS name nor an IP address"),
                    Some(HINT),
                );
                return None;
            }
        }
        Some(identifiers)
    }

    fn acme_challenge(
        &mut self,
        acme: &RawAcme,
        at: Option<usize>,
        listeners: &[ListenerConfig],
    ) -> Option<Challenge> {
        let kind = acme
            .challenge
            .as_ref()
            .map_or("http-01", |c| c.get_ref().as_str());
        let kind_at = acme.challenge.as_ref().map_or(at, |c| Some(c.span().start));
        match kind {
            "http-01" => {
                if let Some(name) = &acme.tls_alpn_listener {
                    self.report.error(
                        Some(name.span().start),
                        "acme.tls_alpn_listener",
                        "applies to challenge = \"tls-alpn-01\" only",
                        Some("remove it, or set challenge = \"tls-alpn-01\""),
                    );
                }
                let Some(address) = &acme.http_address else {
                    self.report.error(
                        kind_at,
                        "acme.http_address",
                        "missing: http-01 is answered over HTTP on port 80 of every identifier",
                        Some(
                            "set http_address = \"0.0.0.0:80\" (or where port 80 is forwarded to)",
                        ),
                    );
                    return None;
                };
                match address.get_ref().parse::<SocketAddr>() {
                    Ok(parsed) if parsed.port() != 0 => Some(Challenge::Http01 { address: parsed }),
                    _ => {
                        self.report.error(
                            Some(address.span().start),
                            "acme.http_address",
                            format!(
                                "not an IP:PORT address with a port: \"{}\"",
                                address.get_ref()
                            ),
                            Some("write it as 0.0.0.0:80; the ACME server connects to that port"),
                        );
                        None
                    }
                }
            }
            "tls-alpn-01" => {
                if let Some(address) = &acme.http_address {
                    self.report.error(
                        Some(address.span().start),
                        "acme.http_address",
                        "applies to challenge = \"http-01\" only",
                        Some("remove it, or set challenge = \"http-01\""),
                    );
                }
                let Some(name) = &acme.tls_alpn_listener else {
                    self.report.error(
                        kind_at,
                        "acme.tls_alpn_listener",
                        "missing: tls-alpn-01 is answered by an mtls listener",
                        Some("name the mtls listener the ACME server reaches on port 443, e.g. tls_alpn_listener = \"public\""),
                    );
                    return None;
                };
                let Some(listener) = listeners.iter().find(|l| l.name == *name.get_ref()) else {
                    self.report.error(
                        Some(name.span().start),
                        "acme.tls_alpn_listener",
                        format!("no listener is named \"{}\"", name.get_ref()),
                        Some("name one of the [[listeners]] with mode = \"mtls\""),
                    );
                    return None;
                };
                if !matches!(listener.mode, Mode::Mtls(_)) || listener.address.port() == 0 {
                    self.report.error(
                        Some(name.span().start),
                        "acme.tls_alpn_listener",
                        format!("listener \"{}\" must be an mtls listener on a fixed port", name.get_ref()),
                        Some("the ACME server connects to that port: give the listener mode = \"mtls\" and a port other than 0"),
                    );
                    return None;
                }
                Some(Challenge::TlsAlpn01 {
                    listener: listener.name.clone(),
                    address: listener.address,
                })
            }
            other => {
                self.report.error(
                    kind_at,
                    "acme.challenge",
                    format!("unknown challenge \"{other}\""),
                    Some("use \"http-01\" or \"tls-alpn-01\""),
                );
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[node]
name = "node-1"

[tls]
cert = "node.pem"
key = "node-key.pem"
client_ca = "ca.pem"

[[listeners]]
name = "public"
address = "0.0.0.0:443"
mode = "mtls"

[[listeners]]
name = "local"
address = "127.0.0.1:0"
mode = "h2c"
"#;

    fn parse(acme: &str) -> Result<crate::config::Config, String> {
        let source = format!("{BASE}\n[acme]\n{acme}\n");
        crate::config::parse(Path::new("/etc/dice/node.toml"), &source).map_err(|errors| {
            errors
                .0
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        })
    }

    const MINIMAL: &str = r#"directory = "https://ca.internal/acme/acme/directory"
identifiers = ["node-1.dice.internal", "10.0.0.7"]
http_address = "0.0.0.0:80"
account_key = "acme-account.pem""#;

    #[test]
    fn a_minimal_section_gets_the_defaults() {
        let config = parse(MINIMAL).expect("valid");
        let acme = config.acme.expect("[acme]");
        assert_eq!(acme.renew_before, DEFAULT_RENEW_BEFORE);
        assert_eq!(acme.key_type, KeyType::EcdsaP256);
        assert_eq!(acme.challenge.as_str(), "http-01");
        assert_eq!(
            acme.identifiers,
            [
                Identifier::Dns("node-1.dice.internal".into()),
                Identifier::Ip("10.0.0.7".parse().expect("literal"))
            ]
        );
        assert_eq!(
            acme.account_key.path,
            Path::new("/etc/dice/acme-account.pem")
        );
        assert_eq!(acme.cert.path, Path::new("/etc/dice/node.pem"));
        assert!(acme.ca.is_none() && acme.eab.is_none());
    }

    #[test]
    fn bad_values_name_the_key_and_line() {
        let cases = [
            (
                "directory = \"http://ca\"",
                "acme.directory: not an https URL",
            ),
            (
                "challenge = \"dns-01\"",
                "acme.challenge: unknown challenge \"dns-01\"",
            ),
            (
                "key_type = \"dsa\"",
                "acme.key_type: unknown key type \"dsa\"",
            ),
            ("renew_before = \"1/1\"", "acme.renew_before"),
            (
                "eab_kid = \"k\"",
                "acme.eab_hmac_key_file: missing: eab_kid needs it",
            ),
            ("contact = [\"ops@example.com\"]", "acme.contact: not a URL"),
            (
                "tls_alpn_listener = \"public\"",
                "acme.tls_alpn_listener: applies to challenge = \"tls-alpn-01\" only",
            ),
        ];
        for (line, expected) in cases {
            let key = line.split(' ').next().unwrap_or_default();
            let rest: Vec<&str> = MINIMAL
                .lines()
                .filter(|l| !l.starts_with(&format!("{key} ")))
                .collect();
            let error = parse(&format!("{}\n{line}", rest.join("\n"))).expect_err(line);
            assert!(error.contains(expected), "{line}: {error}");
            assert!(error.contains("line "), "{line}: {error}");
        }
        let error = parse("identifiers = []").expect_err("empty");
        for key in [
            "acme.directory",
            "acme.identifiers",
            "acme.http_address",
            "acme.account_key",
        ] {
            assert!(error.contains(key), "{error}");
        }
    }

    #[test]
    fn tls_alpn_01_needs_a_fixed_port_mtls_listener() {
        let alpn = |listener: &str| {
            parse(&format!(
                "{}\nchallenge = \"tls-alpn-01\"\ntls_alpn_listener = \"{listener}\"",
                MINIMAL.replace("http_address = \"0.0.0.0:80\"", "")
            ))
        };
        let config = alpn("public").expect("valid");
        assert_eq!(
            config.acme.expect("[acme]").challenge,
            Challenge::TlsAlpn01 {
                listener: "public".into(),
                address: "0.0.0.0:443".parse().expect("literal")
            }
        );
        let error = alpn("local").expect_err("h2c");
        assert!(
            error.contains("must be an mtls listener on a fixed port"),
            "{error}"
        );
    }

    #[test]
    fn fractions() {
        assert_eq!(Fraction::parse("1/3"), Ok(Fraction { num: 1, den: 3 }));
        assert_eq!(Fraction::parse(" 30% "), Ok(Fraction { num: 30, den: 100 }));
        for bad in ["0/3", "3/3", "4/3", "a/b", "1", "", "100%"] {
            assert!(Fraction::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Fraction { num: 1, den: 3 }.of(86_400), 28_800);
    }

    #[test]
    fn some_mtls_listener_must_serve_what_acme_writes() {
        let source = BASE.replace(
            "address = \"0.0.0.0:443\"",
            "address = \"0.0.0.0:443\"\ntls = { cert = \"other.pem\", key = \"other-key.pem\" }",
        );
        let source = format!("{source}\n[acme]\n{MINIMAL}\n");
        let errors = crate::config::parse(Path::new("/etc/dice/node.toml"), &source)
            .expect_err("nothing serves tls.cert");
        assert!(
            errors.0[0]
                .to_string()
                .contains("no mtls listener serves tls.cert"),
            "{}",
            errors.0[0]
        );
    }
}
