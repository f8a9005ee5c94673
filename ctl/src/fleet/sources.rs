//! `[[discovery]]` entries, validated into [`DiscoverySource`]s: where the
//! nodes a fleet file does not list come from (DNS SRV, Prometheus `http_sd`
//! and `file_sd`). Nothing is looked up here; `crate::discovery` does that.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use dice_proto::file_error::Reporter;
use toml::Spanned;

use super::raw::RawDiscovery;
use crate::tls::{PemFile, Source};

/// Default for `[[discovery]] timeout`: how long one source may take, all
/// lookups or the whole HTTP exchange included.
pub const DEFAULT_DISCOVERY_TIMEOUT: Duration = Duration::from_secs(5);

/// One validated `[[discovery]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoverySource {
    /// What to ask, and how.
    pub spec: SourceSpec,
    /// The deadline for the whole source.
    pub timeout: Duration,
    /// How reports name it: `dns_srv:NAME`, `http_sd:URL` or `file_sd:PATH`
    /// (the path as the fleet file writes it).
    pub label: Arc<str>,
}

/// The kinds of source, with their keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// `kind = "dns_srv"`: one node per SRV record of `name`.
    DnsSrv {
        /// The SRV name, e.g. `_dice._tcp.fleet.example`.
        name: String,
        /// The DNS server to ask; `None`: the system resolver (`/etc/resolv.conf`).
        server: Option<SocketAddr>,
    },
    /// `kind = "http_sd"`: a Prometheus HTTP SD endpoint.
    HttpSd(Box<HttpSd>),
    /// `kind = "file_sd"`: a Prometheus `file_sd` file, JSON or YAML by extension.
    FileSd {
        /// Resolved against the fleet file's folder.
        path: PathBuf,
    },
}

/// `kind = "http_sd"`: where the endpoint is and how to trust it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSd {
    /// `http://` or `https://` URL.
    pub url: http::Uri,
    /// `ca`: the CA bundle an `https` server's certificate must chain to.
    pub ca: Option<PemFile>,
    /// `cert` and `key`: a client certificate to present, if the endpoint asks.
    pub identity: Option<(PemFile, PemFile)>,
}

/// The keys each kind takes beside `kind` and `timeout`.
const DNS_KEYS: &[&str] = &["name", "server"];
const HTTP_KEYS: &[&str] = &["url", "ca", "cert", "key"];
const FILE_KEYS: &[&str] = &["path"];

/// Validates every `[[discovery]]` entry, reporting each problem with its line and key.
pub(super) fn validate(
    report: &mut Reporter<'_>,
    file: &Path,
    folder: &Path,
    raw: Vec<Spanned<RawDiscovery>>,
) -> Vec<DiscoverySource> {
    let mut sources = Vec::with_capacity(raw.len());
    for (index, entry) in raw.into_iter().enumerate() {
        let entry_at = entry.span().start;
        let entry = entry.into_inner();
        if let Some(source) = validate_one(report, file, folder, index, entry_at, entry) {
            sources.push(source);
        }
    }
    sources
}

fn validate_one(
    report: &mut Reporter<'_>,
    file: &Path,
    folder: &Path,
    index: usize,
    entry_at: usize,
    entry: RawDiscovery,
) -> Option<DiscoverySource> {
    let key = |field: &str| format!("discovery[{index}].{field}");
    let given: [(&str, &Option<Spanned<String>>); 7] = [
        ("name", &entry.name),
        ("server", &entry.server),
        ("url", &entry.url),
        ("ca", &entry.ca),
        ("cert", &entry.cert),
        ("key", &entry.key),
        ("path", &entry.path),
    ];
    let kind = entry.kind.get_ref().as_str();
    let allowed = match kind {
        "dns_srv" => DNS_KEYS,
        "http_sd" => HTTP_KEYS,
        "file_sd" => FILE_KEYS,
        other => {
            report.error_at(
                entry.kind.span().start,
                key("kind"),
                format!("{other:?} is not a kind of discovery"),
                "use \"dns_srv\", \"http_sd\" or \"file_sd\"",
            );
            return None;
        }
    };
    let errors_before = report.errors.len();
    for (field, value) in given {
        if let Some(value) = value
            && !allowed.contains(&field)
        {
            report.error_at(
                value.span().start,
                key(field),
                format!("does not apply to kind = {kind:?}"),
                &format!("{kind} takes {}", allowed.join(", ")),
            );
        }
    }
    let required =
        |report: &mut Reporter<'_>, value: &Option<Spanned<String>>, field: &str| match value {
            Some(value) if !value.get_ref().is_empty() => Some(value.get_ref().clone()),
            Some(value) => {
                report.error_at(value.span().start, key(field), "empty", "give it a value");
                None
            }
            None => {
                report.error_at(
                    entry_at,
                    key(field),
                    format!("missing: kind = {kind:?} needs {field}"),
                    "add it; the README shows an example of each kind",
                );
                None
            }
        };

    let timeout = match &entry.timeout {
        None => DEFAULT_DISCOVERY_TIMEOUT,
        Some(value) => match super::parse_duration(value.get_ref()) {
            Ok(timeout) if !timeout.is_zero() => timeout,
            Ok(_) => {
                report.error_at(
                    value.span().start,
                    key("timeout"),
                    "must be greater than zero",
                    "e.g. \"5s\"",
                );
                DEFAULT_DISCOVERY_TIMEOUT
            }
            Err(message) => {
                report.error_at(
                    value.span().start,
                    key("timeout"),
                    message,
                    "write a duration with a unit, e.g. \"5s\"",
                );
                DEFAULT_DISCOVERY_TIMEOUT
            }
        },
    };

    let (spec, label) = match kind {
        "dns_srv" => {
            let name = required(report, &entry.name, "name");
            let server = entry.server.as_ref().and_then(|value| {
                match value.get_ref().parse::<SocketAddr>() {
                    Ok(addr) => Some(addr),
                    Err(_) => {
                        report.error_at(
                            value.span().start,
                            key("server"),
                            format!("{:?}: not IP:PORT", value.get_ref()),
                            "e.g. \"10.0.0.53:53\" or \"[::1]:53\"; leave it out for the system resolver",
                        );
                        None
                    }
                }
            });
            let name = name?;
            let label = format!("dns_srv:{name}");
            (SourceSpec::DnsSrv { name, server }, label)
        }
        "http_sd" => {
            let url_text = required(report, &entry.url, "url");
            let url = url_text.as_ref().and_then(|text| {
                let at = entry.url.as_ref().map_or(entry_at, |v| v.span().start);
                match check_url(text) {
                    Ok(url) => Some(url),
                    Err(problem) => {
                        report.error_at(
                            at,
                            key("url"),
                            format!("{text:?}: {problem}"),
                            "e.g. \"https://inventory.example:8443/targets\"",
                        );
                        None
                    }
                }
            });
            let mut pem = |value: &Option<Spanned<String>>, field: &'static str| {
                let value = value.as_ref()?;
                if value.get_ref().is_empty() {
                    report.error_at(
                        value.span().start,
                        key(field),
                        "empty path",
                        "name a PEM file",
                    );
                    return None;
                }
                Some(PemFile {
                    path: folder.join(value.get_ref()),
                    source: Source::Fleet {
                        file: file.to_owned(),
                        line: report.line(value.span().start),
                        key: field_key(field),
                    },
                })
            };
            let ca = pem(&entry.ca, "ca");
            let cert = pem(&entry.cert, "cert");
            let key_file = pem(&entry.key, "key");
            let identity = match (cert, key_file) {
                (Some(cert), Some(key_file)) => Some((cert, key_file)),
                (None, None) => None,
                (cert, _) => {
                    let (missing, at) = if cert.is_some() {
                        (
                            "key",
                            entry.cert.as_ref().map_or(entry_at, |v| v.span().start),
                        )
                    } else {
                        (
                            "cert",
                            entry.key.as_ref().map_or(entry_at, |v| v.span().start),
                        )
                    };
                    report.error_at(
                        at,
                        key(missing),
                        "missing: cert and key go together",
                        "set both, or neither",
                    );
                    None
                }
            };
            let url = url?;
            if url.scheme_str() == Some("https") && ca.is_none() {
                report.error_at(
                    entry_at,
                    key("ca"),
                    "missing: an https url needs the CA bundle its server's certificate chains to",
                    "set ca to a PEM file",
                );
            }
            let label = format!("http_sd:{url}");
            (
                SourceSpec::HttpSd(Box::new(HttpSd { url, ca, identity })),
                label,
            )
        }
        _ => {
            let path = required(report, &entry.path, "path")?;
            let label = format!("file_sd:{path}");
            (
                SourceSpec::FileSd {
                    path: folder.join(path),
                },
                label,
            )
        }
    };
    (report.errors.len() == errors_before).then(|| DiscoverySource {
        spec,
        timeout,
        label: label.into(),
    })
}

/// The key a TLS file error names: `discovery.ca`, `discovery.cert`, `discovery.key`.
fn field_key(field: &str) -> &'static str {
    match field {
        "ca" => "discovery.ca",
        "cert" => "discovery.cert",
        _ => "discovery.key",
    }
}

/// An `http://` or `https://` URL with a host.
fn check_url(text: &str) -> Result<http::Uri, &'static str> {
    let url: http::Uri = text.parse().map_err(|_| "not a URL")?;
    match url.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err("must start with http:// or https://"),
    }
    if url.host().is_none_or(str::is_empty) {
        return Err("missing host");
    }
    Ok(url)
}
