//! The fleet file: which nodes there are, and how dicectl connects to them.
//!
//! [`load`] parses the TOML (`raw`) and validates it into a [`Fleet`],
//! collecting every error with its file, line and key (`dice_proto::file_error`), as the
//! agent's config does. Unknown keys are errors. Relative certificate paths
//! resolve against the folder of the fleet file, not the working directory.
//!
//! ```toml
//! [client]
//! ca = "../certs/dev/ca.pem"
//! cert = "../certs/dev/client.pem"
//! key = "../certs/dev/client-key.pem"
//! timeout = "2s"            # per node: connect + handshake + RPC
//! concurrency = 64          # nodes in flight at once
//! expiry_warning = "14d"    # health: warn when a certificate expires sooner
//!
//! [[nodes]]
//! name = "node-1"
//! address = "127.0.0.1:8443"
//! server_name = "localhost" # optional: the name the certificate must hold
//! labels = { region = "eu" }
//!
//! [[discovery]]                # more nodes, found at run time (crate::discovery)
//! kind = "dns_srv"             # or "http_sd" (url, ca, cert, key) or "file_sd" (path)
//! name = "_dice._tcp.fleet.example"
//! server = "10.0.0.53:53"      # optional: default the system resolver
//! timeout = "5s"               # optional: the deadline for the whole source
//! ```
//!
//! `sources` validates the `[[discovery]]` entries; nothing is looked up here.
//! `chunked` parses a large file's `[[nodes]]` a batch at a time, so a
//! 50,000-node file does not cost a whole-document TOML tree.

mod chunked;
mod raw;
mod sources;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use self::raw::{RawClient, RawFleet, RawNode};
use crate::args::MAX_CONCURRENCY;
use crate::client::{NodeTarget, TargetError};
use crate::tls::{PemFile, Source};
use dice_proto::file_error::Reporter;
pub use dice_proto::file_error::{FileError as FleetError, FileErrors as FleetErrors};

pub use self::sources::{DEFAULT_DISCOVERY_TIMEOUT, DiscoverySource, HttpSd, SourceSpec};

/// The `source` of a node listed in `[[nodes]]`.
pub const STATIC_SOURCE: &str = "static";

/// The environment variable naming the fleet file when `--fleet` is not given.
pub const FLEET_ENV: &str = "DICECTL_FLEET";
/// The fleet file used when neither `--fleet` nor `DICECTL_FLEET` names one, if it exists.
pub const DEFAULT_FLEET_FILE: &str = "fleet.toml";

/// Default for `client.timeout` and `--timeout`: per node, connect + handshake + RPC.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default for `client.concurrency` and `--concurrency`: nodes in flight at once.
pub const DEFAULT_CONCURRENCY: usize = 64;
/// Default for `client.expiry_warning` and `--expiry-warning`: 14 days.
pub const DEFAULT_EXPIRY_WARNING: Duration = Duration::from_secs(14 * 86_400);

/// A validated fleet file.
#[derive(Debug, Clone)]
pub struct Fleet {
    /// The file it was loaded from, as given.
    pub file: PathBuf,
    /// `[client]`.
    pub client: ClientSettings,
    /// `[[nodes]]`, in file order; after [`crate::discovery::discover`],
    /// the discovered nodes follow.
    pub nodes: Vec<FleetNode>,
    /// `[[discovery]]`, in file order.
    pub discovery: Vec<DiscoverySource>,
}

/// `[client]`: how dicectl connects. Flags override each key.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// `ca`: the CA bundle agents' certificates must chain to, if set here.
    pub ca: Option<PemFile>,
    /// `cert`: the client certificate chain, if set here.
    pub cert: Option<PemFile>,
    /// `key`: the client certificate's private key, if set here.
    pub key: Option<PemFile>,
    /// `timeout`: the deadline per node.
    pub timeout: Duration,
    /// `concurrency`: nodes in flight at once.
    pub concurrency: usize,
    /// `expiry_warning`: `health` warns about certificates expiring sooner than this.
    pub expiry_warning: Duration,
}

impl Default for ClientSettings {
    fn default() -> Self {
        Self {
            ca: None,
            cert: None,
            key: None,
            timeout: DEFAULT_TIMEOUT,
            concurrency: DEFAULT_CONCURRENCY,
            expiry_warning: DEFAULT_EXPIRY_WARNING,
        }
    }
}

/// One `[[nodes]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetNode {
    /// `name`: unique in the file; how `--node` selects it and how rows are sorted.
    pub name: String,
    /// `address` and `server_name`.
    pub target: NodeTarget,
    /// `labels`: what `--label KEY=VALUE` matches.
    pub labels: BTreeMap<String, String>,
    /// Where it came from: [`STATIC_SOURCE`], or the label of each
    /// [`DiscoverySource`] that found it, comma-separated.
    pub source: Arc<str>,
}

impl Fleet {
    /// The node named `name`.
    pub fn node(&self, name: &str) -> Option<&FleetNode> {
        self.nodes.iter().find(|node| node.name == name)
    }
}

/// Which fleet file to use: `--fleet`, else `$DICECTL_FLEET` (an empty value
/// counts as unset), else `./fleet.toml` if it exists, else none.
pub fn locate(flag: Option<&Path>) -> Option<PathBuf> {
    locate_with(flag, std::env::var_os(FLEET_ENV).as_deref())
}

fn locate_with(flag: Option<&Path>, env: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    if let Some(path) = flag {
        return Some(path.to_owned());
    }
    if let Some(path) = env.filter(|value| !value.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let default = Path::new(DEFAULT_FLEET_FILE);
    default.is_file().then(|| default.to_owned())
}

/// Loads and validates the fleet file at `path`, returning every error found.
pub fn load(path: &Path) -> Result<Fleet, FleetErrors> {
    let source = std::fs::read_to_string(path).map_err(|error| {
        let message = match error.kind() {
            std::io::ErrorKind::NotFound => "no such file".to_owned(),
            std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
            _ => format!("cannot read: {error}"),
        };
        FleetErrors(vec![FleetError {
            file: path.to_owned(),
            line: None,
            key: None,
            message,
            hint: Some(format!(
                "pass --fleet FILE or set {FLEET_ENV}; config/fleet.toml is an example"
            )),
        }])
    })?;
    parse(path, &source)
}

/// Parses and validates fleet text read from `path`.
pub fn parse(path: &Path, source: &str) -> Result<Fleet, FleetErrors> {
    let mut report = Reporter::new(path, source);
    let raw: RawFleet = match chunked::parse(source) {
        Ok(raw) => raw,
        Err(error) => {
            report.parse_error(&error);
            return Err(FleetErrors(report.errors));
        }
    };
    let folder = path.parent().unwrap_or(Path::new(""));
    let client = validate_client(&mut report, path, folder, raw.client);
    let nodes = validate_nodes(&mut report, raw.nodes);
    let discovery = sources::validate(&mut report, path, folder, raw.discovery);
    if report.errors.is_empty() {
        Ok(Fleet {
            file: path.to_owned(),
            client,
            nodes,
            discovery,
        })
    } else {
        Err(FleetErrors(report.errors))
    }
}

fn validate_client(
    report: &mut Reporter<'_>,
    file: &Path,
    folder: &Path,
    raw: RawClient,
) -> ClientSettings {
    let mut pem = |value: Option<toml::Spanned<String>>, key: &'static str| {
        let value = value?;
        let at = value.span().start;
        if value.get_ref().is_empty() {
            report.error_at(at, key, "empty path", "name a PEM file");
            return None;
        }
        Some(PemFile {
            path: folder.join(value.get_ref()),
            source: Source::Fleet {
                file: file.to_owned(),
                line: report.line(at),
                key,
            },
        })
    };
    let ca = pem(raw.ca, "client.ca");
    let cert = pem(raw.cert, "client.cert");
    let key = pem(raw.key, "client.key");

    let mut settings = ClientSettings {
        ca,
        cert,
        key,
        ..ClientSettings::default()
    };
    if let Some(value) = raw.timeout {
        match parse_duration(value.get_ref()) {
            Ok(timeout) if !timeout.is_zero() => settings.timeout = timeout,
            Ok(_) => report.error_at(
                value.span().start,
                "client.timeout",
                "must be greater than zero",
                "e.g. \"2s\"",
            ),
            Err(message) => report.error_at(
                value.span().start,
                "client.timeout",
                message,
                "write a duration with a unit, e.g. \"2s\" or \"500ms\"",
            ),
        }
    }
    if let Some(value) = raw.concurrency {
        match usize::try_from(*value.get_ref()) {
            Ok(n @ 1..=MAX_CONCURRENCY) => settings.concurrency = n,
            _ => report.error_at(
                value.span().start,
                "client.concurrency",
                format!(
                    "{} is out of range: must be from 1 to {MAX_CONCURRENCY}",
                    value.get_ref()
                ),
                "e.g. 64",
            ),
        }
    }
    if let Some(value) = raw.expiry_warning {
        match parse_duration(value.get_ref()) {
            Ok(warning) => settings.expiry_warning = warning,
            Err(message) => report.error_at(
                value.span().start,
                "client.expiry_warning",
                message,
                "write a duration with a unit, e.g. \"14d\"",
            ),
        }
    }
    settings
}

fn validate_nodes(report: &mut Reporter<'_>, raw: Vec<toml::Spanned<RawNode>>) -> Vec<FleetNode> {
    let mut nodes = Vec::with_capacity(raw.len());
    let source: Arc<str> = STATIC_SOURCE.into();
    // Name -> byte offset of its first use; lines are counted only for errors,
    // so a large fleet file is not rescanned once per node.
    let mut seen: HashMap<String, usize> = HashMap::with_capacity(raw.len());
    for (index, entry) in raw.into_iter().enumerate() {
        let entry = entry.into_inner();
        let key = |field: &str| format!("nodes[{index}].{field}");
        let name = entry.name.get_ref();
        let name_at = entry.name.span().start;
        if let Some(problem) = name_problem(name) {
            report.error_at(
                name_at,
                key("name"),
                format!("{name:?}: {problem}"),
                "use letters, digits, '-', '_' or '.', e.g. \"node-1\"",
            );
        } else if let Some(&first) = seen.get(name) {
            let first = report.line(first);
            report.error_at(
                name_at,
                key("name"),
                format!("{name:?} is already the name of the node on line {first}"),
                "give each node its own name",
            );
        } else {
            seen.insert(name.clone(), name_at);
        }

        let server_name = entry.server_name.as_ref();
        let target = match NodeTarget::parse(
            entry.address.get_ref(),
            server_name.map(|name| name.get_ref().as_str()),
        ) {
            Ok(target) => Some(target),
            Err(TargetError::Address { addr, reason }) => {
                report.error_at(
                    entry.address.span().start,
                    key("address"),
                    format!("{addr:?}: {reason}"),
                    "write HOST:PORT, e.g. 127.0.0.1:8443 or [::1]:8443",
                );
                None
            }
            Err(TargetError::ServerName { flag, name }) => {
                let (at, field) = match server_name {
                    Some(value) if flag == "--server-name" => (value.span().start, "server_name"),
                    _ => (entry.address.span().start, "address"),
                };
                report.error_at(
                    at,
                    key(field),
                    format!("{name:?}: not a DNS name or IP address"),
                    "set server_name to a name in the node's certificate",
                );
                None
            }
        };

        let labels = match entry.labels {
            Some(labels) => {
                let at = labels.span().start;
                let labels = labels.into_inner();
                if labels.keys().any(String::is_empty) {
                    report.error_at(
                        at,
                        key("labels"),
                        "empty label name",
                        "write labels = { region = \"eu\" }",
                    );
                }
                labels
            }
            None => BTreeMap::new(),
        };
        if let Some(target) = target {
            nodes.push(FleetNode {
                name: entry.name.into_inner(),
                target,
                labels,
                source: source.clone(),
            });
        }
    }
    nodes
}

/// What is wrong with a node name, if anything: it must be non-empty and fit
/// in one table cell.
pub(crate) fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("empty name")
    } else if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("spaces and control characters are not allowed")
    } else {
        None
    }
}

/// Parses a duration with a unit: `500ms`, `2s`, `14d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|error| format!("{text:?}: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(text: &str) -> Fleet {
        parse(Path::new("conf/fleet.toml"), text).unwrap_or_else(|errors| panic!("{errors}"))
    }

    fn parse_err(text: &str) -> Vec<String> {
        parse(Path::new("conf/fleet.toml"), text)
            .expect_err("must be refused")
            .0
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn parses_the_example() {
        let example = include_str!("../../config/fleet.toml");
        let fleet = parse_ok(example);
        assert_eq!(fleet.nodes.len(), 2);
        let node = fleet.node("node-1").expect("node-1");
        assert_eq!(node.target.label(), "127.0.0.1:8443");
        assert_eq!(node.target.server_name().to_str(), "localhost");
        assert_eq!(node.labels.get("region").map(String::as_str), Some("eu"));
        let ca = fleet.client.ca.as_ref().expect("client.ca");
        assert_eq!(ca.path, Path::new("conf/../certs/dev/ca.pem"));
        let line = 1 + example
            .lines()
            .position(|line| line.starts_with("ca = "))
            .expect("the example sets client.ca");
        assert_eq!(
            ca.source.to_string(),
            format!("conf/fleet.toml line {line}: client.ca")
        );
        assert_eq!(fleet.client.timeout, Duration::from_secs(2));
        assert_eq!(fleet.client.concurrency, 64);
        assert_eq!(fleet.client.expiry_warning, DEFAULT_EXPIRY_WARNING);
    }

    #[test]
    fn defaults_apply_to_missing_keys() {
        let fleet = parse_ok("[[nodes]]\nname = \"a\"\naddress = \"localhost:1\"\n");
        assert!(fleet.client.ca.is_none());
        assert_eq!(fleet.client.timeout, DEFAULT_TIMEOUT);
        assert_eq!(fleet.client.concurrency, DEFAULT_CONCURRENCY);
        assert!(parse_ok("").nodes.is_empty());
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let cases: &[(&str, &str)] = &[
            (
                "[client]\ntimeout = \"2s\"\nretries = 3\n",
                "conf/fleet.toml line 3: client.retries: unknown field `retries`",
            ),
            (
                "[client]\ntimeout = \"2\"\n",
                "conf/fleet.toml line 2: client.timeout: \"2\": ",
            ),
            (
                "[client]\ntimeout = \"0s\"\n",
                "conf/fleet.toml line 2: client.timeout: must be greater than zero",
            ),
            (
                "[client]\nconcurrency = 0\n",
                "conf/fleet.toml line 2: client.concurrency: 0 is out of range",
            ),
            (
                "[client]\nexpiry_warning = \"two weeks\"\n",
                "conf/fleet.toml line 2: client.expiry_warning: ",
            ),
            (
                "[[nodes]]\nname = \"a\"\naddress = \"a:1\"\n[[nodes]]\nname = \"b\"\naddress = \"10.0.0.1\"\n",
                "conf/fleet.toml line 6: nodes[1].address: \"10.0.0.1\": missing port (write HOST:PORT",
            ),
            (
                "[[nodes]]\nname = \"a\"\naddress = \"a:1\"\nserver_name = \"no spaces\"\n",
                "conf/fleet.toml line 4: nodes[0].server_name: \"no spaces\": not a DNS name",
            ),
            (
                "[[nodes]]\nname = \"a b\"\naddress = \"a:1\"\n",
                "conf/fleet.toml line 2: nodes[0].name: \"a b\": spaces",
            ),
            (
                "[[nodes]]\nname = \"a\"\naddress = \"a:1\"\n[[nodes]]\nname = \"a\"\naddress = \"a:2\"\n",
                "conf/fleet.toml line 5: nodes[1].name: \"a\" is already the name of the node on line 2 (give each node its own name)",
            ),
            (
                "[[nodes]]\nname = \"a\"\naddress = \"a:1\"\nlabels = { region = 3 }\n",
                "conf/fleet.toml line 4: nodes[0].labels",
            ),
            (
                "[[nodes]]\nname = \"a\"\n",
                "conf/fleet.toml line 1: nodes[0]: missing field `address`",
            ),
            ("[client\n", "conf/fleet.toml line 1: "),
        ];
        for (text, expected) in cases {
            let errors = parse_err(text);
            assert!(
                errors.iter().any(|error| error.starts_with(expected)),
                "{text:?}:\nexpected {expected:?}\ngot {errors:#?}"
            );
            for error in &errors {
                assert!(error.ends_with(')'), "no hint: {error}");
            }
        }
    }

    #[test]
    fn every_validation_error_is_reported_at_once() {
        let errors = parse_err(
            "[client]\ntimeout = \"0s\"\nconcurrency = -1\n[[nodes]]\nname = \"\"\naddress = \"x\"\n",
        );
        assert_eq!(errors.len(), 4, "{errors:#?}");
    }

    #[test]
    fn the_flag_wins_then_a_non_empty_environment_variable() {
        use std::ffi::OsStr;
        let flag = Path::new("flag.toml");
        let env = OsStr::new("env.toml");
        assert_eq!(locate_with(Some(flag), Some(env)), Some(flag.to_owned()));
        assert_eq!(
            locate_with(None, Some(env)),
            Some(PathBuf::from("env.toml"))
        );
        // The crate's folder has no fleet.toml: nothing is found.
        assert_eq!(locate_with(None, Some(OsStr::new(""))), None);
        assert_eq!(locate_with(None, None), None);
    }

    #[test]
    fn a_missing_file_is_named() {
        let error = load(Path::new("/nonexistent/dice/fleet.toml")).expect_err("missing");
        assert!(
            error
                .to_string()
                .starts_with("/nonexistent/dice/fleet.toml: no such file (pass --fleet FILE"),
            "{error}"
        );
    }
}
