//! The agent's config: `load` parses the TOML file (`raw`), then a
//! validation pass turns it into a [`Config`] with no loose ends, collecting
//! every error with its file, line and key.

mod acme;
mod live;
mod raw;
mod reload;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use acme::{AcmeConfig, Challenge, DEFAULT_RENEW_BEFORE, Eab, Fraction, Identifier};
pub use dice_proto::file_error::{FileError as ConfigError, FileErrors as ConfigErrors};
use dice_proto::file_error::{Reporter, line_of};
pub use live::LiveConfig;
use raw::{RawConfig, RawListener, RawTls};
pub use reload::ConfigReload;
use toml::Spanned;

use crate::rpc::{AllowList, Rate, RateLimits};

/// Default for `limits.handshake_timeout`: how long a peer may take to finish the TLS handshake.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default for `limits.max_handshakes`: TLS handshakes in flight per listener before new connections are refused.
pub const DEFAULT_MAX_HANDSHAKES: usize = 1024;
/// Default for `limits.max_connections`: open connections per listener; more are refused at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default for `limits.max_concurrent_streams`: RPCs in flight on one HTTP/2 connection.
pub const DEFAULT_MAX_CONCURRENT_STREAMS: usize = 100;
/// Default for `limits.max_message_bytes`: the largest request message decoded.
/// A RollDieRequest is empty; 4 KiB leaves room for health and reflection requests.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4096;
/// Default for `limits.keepalive_interval`: how often an HTTP/2 connection is pinged.
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// Default for `limits.keepalive_timeout`: how long a ping may go unanswered before the connection is closed.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Default for `limits.idle_timeout`: a connection with no RPC for this long is closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Default for `limits.request_timeout`: the longest an RPC may run before it fails with `CANCELLED`.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default for `shutdown.grace_period`: how long in-flight RPCs may run after SIGTERM.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(10);

/// Default for `reload.poll_interval`: how often certificate files are re-read in case no file event arrived.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(30);
/// Default for `reload.settle_period`: how long changed files may disagree before that is logged as an error.
pub const DEFAULT_SETTLE_PERIOD: Duration = Duration::from_secs(10);

/// Default for `tls.expiry_warning`: a served certificate expiring sooner than this is warned about.
pub const DEFAULT_EXPIRY_WARNING: Duration = Duration::from_secs(14 * 86_400);

/// A validated agent config.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was loaded from.
    pub file: PathBuf,
    /// `node.name`: how this node names itself in logs and the info API.
    pub node_name: String,
    /// `[[listeners]]`, in file order.
    pub listeners: Vec<ListenerConfig>,
    /// `[log]`.
    pub log: LogConfig,
    /// `[limits]`.
    pub limits: Limits,
    /// `shutdown.grace_period`.
    pub grace_period: Duration,
    /// `[reload]`.
    pub reload: ReloadConfig,
    /// `metrics.address`: where `/metrics` is served; `None` without a `[metrics]` table.
    pub metrics: Option<SocketAddr>,
    /// `tls.recheck_connections`: after a reload, check every open mTLS
    /// connection's client again and tell those no longer admitted to go away.
    pub recheck_connections: bool,
    /// `[admin]`: who may call the admin API; `None` (no table) turns it off.
    pub admin: Option<AdminConfig>,
    /// `[acme]`: the certificate of `[tls]` comes from an ACME server; `None` without the table.
    pub acme: Option<AcmeConfig>,
}

/// `[admin]`: the admin API (`dice.agent.v1.AdminService`), served on mTLS listeners only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// `allow`: the client identities that may call it (never empty).
    pub allow: AllowList,
}

/// `[reload]`: how certificate files are watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReloadConfig {
    /// `poll_interval`; `None` when set to `"0s"` (file events only).
    pub poll_interval: Option<Duration>,
    /// `settle_period`.
    pub settle_period: Duration,
}

/// One listener.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// `name`, or the listener's index when it has none.
    pub name: String,
    /// `address`; port 0 picks a free port.
    pub address: SocketAddr,
    /// `mode`, with the certificate files an mTLS listener serves.
    pub mode: Mode,
    /// `trusted_proxy` (h2c only): the local proxy in front of this listener
    /// verified the client, and its client-subject header may be logged as the
    /// client's identity. On every other listener that header is ignored.
    pub trusted_proxy: bool,
    /// `allow` (mtls only): the client identities served; empty serves any verified client.
    pub allow: AllowList,
    /// `limits.rpc_rate`, `limits.rpc_burst`, `limits.handshake_rate_per_ip`,
    /// each from the listener's own `limits` table if set there.
    pub rate_limits: RateLimits,
}

/// How a listener speaks.
// Built once per listener at start-up, so the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// TLS 1.2/1.3 with ALPN h2; a client certificate is required and verified.
    Mtls(TlsFiles),
    /// Plaintext HTTP/2, for a TLS-terminating proxy on the same host.
    H2c,
    /// Plaintext HTTP/2 serving `grpc.health.v1.Health` only, for load
    /// balancers and orchestrators' probes; it keeps answering (NOT_SERVING)
    /// while the agent drains.
    Health,
}

impl Mode {
    /// The mode's name as the config spells it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Mode::Mtls(_) => "mtls",
            Mode::H2c => "h2c",
            Mode::Health => "health",
        }
    }
}

/// The certificate material of an mTLS listener.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TlsFiles {
    /// PEM chain, leaf first.
    pub cert: FileRef,
    /// PEM private key matching the leaf.
    pub key: FileRef,
    /// PEM bundle that client certificates must chain to.
    pub client_ca: FileRef,
    /// Certificate revocation lists (PEM or DER) for client certificates.
    pub crl: Vec<FileRef>,
    /// `tls.strict_permissions`: a key file readable by group or others is an error, not a warning.
    pub strict_permissions: bool,
    /// `tls.expiry_warning`: warn (at start, daily and on reload) when the
    /// certificate expires sooner than this; `None` when set to `"0s"`.
    pub expiry_warning: Option<Duration>,
}

/// A file path from the config, with where it was set, so errors can point there.
#[derive(Debug, Clone)]
pub struct FileRef {
    /// The path, resolved against the config file's folder.
    pub path: PathBuf,
    /// The key that set it, e.g. `tls.cert`.
    pub key: String,
    /// The line that set it.
    pub line: usize,
    /// The config file that set it.
    pub origin: PathBuf,
}

impl FileRef {
    /// Where the path was configured: `node.toml line 7: tls.cert: /etc/dice/server.pem`.
    pub fn locate(&self) -> String {
        format!(
            "{} line {}: {}: {}",
            self.origin.display(),
            self.line,
            self.key,
            self.path.display()
        )
    }
}

impl PartialEq for FileRef {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path
    }
}

impl Eq for FileRef {}

impl std::hash::Hash for FileRef {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.path.hash(state);
    }
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// `format`: `text` (default) or `json`.
    pub format: LogFormat,
    /// `level`: an env-filter directive, default `info`; `RUST_LOG` overrides it.
    pub level: String,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[limits]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `handshake_timeout`.
    pub handshake_timeout: Duration,
    /// `max_handshakes`.
    pub max_handshakes: usize,
    /// `max_connections`.
    pub max_connections: usize,
    /// `max_concurrent_streams`.
    pub max_concurrent_streams: usize,
    /// `max_message_bytes`.
    pub max_message_bytes: usize,
    /// `request_timeout`.
    pub request_timeout: Duration,
    /// `keepalive_interval`.
    pub keepalive_interval: Duration,
    /// `keepalive_timeout`.
    pub keepalive_timeout: Duration,
    /// `idle_timeout`.
    pub idle_timeout: Duration,
}

/// Loads and validates the config file at `path`, returning every error found.
/// Paths in the result are absolute, so logs name files unambiguously.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let absolute = std::path::absolute(path);
    let path = absolute.as_deref().unwrap_or(path);
    let source = std::fs::read_to_string(path).map_err(|error| {
        let message = match error.kind() {
            std::io::ErrorKind::NotFound => "no such file".to_owned(),
            _ => format!("cannot read: {error}"),
        };
        ConfigErrors(vec![ConfigError {
            file: path.to_owned(),
            line: None,
            key: None,
            message,
            hint: Some("pass the agent's TOML config with --config FILE".to_owned()),
        }])
    })?;
    parse(path, &source)
}

/// The environment variable that, set and not empty, names the node in
/// place of `node.name`: for one config shared by many agents (the
/// Kubernetes DaemonSet sets it to the name of the node a pod runs on).
pub const NODE_NAME_ENV: &str = "DICE_NODE_NAME";

/// The node's name from [`NODE_NAME_ENV`], if set and not empty.
fn node_name_from_env() -> Option<String> {
    let name = std::env::var(NODE_NAME_ENV).ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

/// Parses and validates config text read from `path`. The node's name is
/// [`NODE_NAME_ENV`]'s when that is set.
pub fn parse(path: &Path, source: &str) -> Result<Config, ConfigErrors> {
    let mut report = Reporter::new(path, source);
    let raw: RawConfig = match toml::from_str(source) {
        Ok(raw) => raw,
        Err(error) => {
            report.parse_error(&error);
            return Err(ConfigErrors(report.errors));
        }
    };
    let base = path.parent().unwrap_or(Path::new("."));
    let config = Validator {
        report: &mut report,
        origin: path,
        base,
        source,
    }
    .validate(path, raw);
    match config {
        Some(mut config) if report.errors.is_empty() => {
            if let Some(name) = node_name_from_env() {
                config.node_name = name;
            }
            Ok(config)
        }
        _ => Err(ConfigErrors(report.errors)),
    }
}

struct Validator<'r, 'a> {
    report: &'r mut Reporter<'a>,
    origin: &'a Path,
    base: &'a Path,
    source: &'a str,
}

impl Validator<'_, '_> {
    fn validate(mut self, path: &Path, raw: RawConfig) -> Option<Config> {
        let node_name = match &raw.node {
            Some(node) if node.get_ref().name.get_ref().trim().is_empty() => {
                let name = &node.get_ref().name;
                self.report.error(
                    Some(name.span().start),
                    "node.name",
                    "is empty",
                    Some("name the node, e.g. name = \"node-1\""),
                );
                None
            }
            Some(node) => Some(node.get_ref().name.get_ref().clone()),
            None => {
                self.report.error(
                    None,
                    "node.name",
                    "missing",
                    Some("add a [node] table with name = \"node-1\""),
                );
                None
            }
        };
        if raw.listeners.is_empty() {
            self.report.error(
                None,
                "listeners",
                "no listener configured",
                Some("add a [[listeners]] table with address and mode"),
            );
        }
        let mut listeners: Vec<_> = raw
            .listeners
            .iter()
            .enumerate()
            .filter_map(|(index, listener)| self.listener(index, listener, &raw.tls))
            .collect();
        let expiry_warning = self.expiry_warning(raw.tls.expiry_warning.as_ref());
        for listener in &mut listeners {
            if let (Mode::Mtls(files), Some(threshold)) = (&mut listener.mode, expiry_warning) {
                files.expiry_warning = threshold;
            }
        }
        self.check_unique(&listeners, &raw);
        let log = self.log(&raw.log);
        let limits = self.limits(&raw.limits);
        let rate_limits = self.global_rate_limits(&raw.limits);
        if let Some(global) = rate_limits {
            for listener in &mut listeners {
                listener.rate_limits = global.overridden_by(listener.rate_limits);
            }
        }
        let grace_period = self.duration(
            raw.shutdown.grace_period.as_ref(),
            "shutdown.grace_period",
            DEFAULT_GRACE_PERIOD,
        );
        let poll_interval = match &raw.reload.poll_interval {
            Some(value)
                if humantime::parse_duration(value.get_ref()).is_ok_and(|d| d.is_zero()) =>
            {
                Some(None)
            }
            value => self
                .duration(
                    value.as_ref(),
                    "reload.poll_interval",
                    DEFAULT_POLL_INTERVAL,
                )
                .map(Some),
        };
        let settle_period = self.duration(
            raw.reload.settle_period.as_ref(),
            "reload.settle_period",
            DEFAULT_SETTLE_PERIOD,
        );
        let metrics = raw.metrics.as_ref().map(|m| self.metrics(m));
        let admin = raw
            .admin
            .as_ref()
            .map(|admin| self.admin(admin, &listeners));
        let acme = raw
            .acme
            .as_ref()
            .map(|acme| self.acme(acme, &raw.tls, &listeners));
        Some(Config {
            acme: acme.map_or(Some(None), |a| a.map(Some))?,
            admin: admin.map_or(Some(None), |a| a.map(Some))?,
            metrics: metrics.map_or(Some(None), |m| m.map(Some))?,
            reload: ReloadConfig {
                poll_interval: poll_interval?,
                settle_period: settle_period?,
            },
            file: path.to_owned(),
            node_name: node_name?,
            listeners,
            log: log?,
            limits: limits?,
            grace_period: grace_period?,
            recheck_connections: raw
                .tls
                .recheck_connections
                .as_ref()
                .is_none_or(|flag| *flag.get_ref()),
        })
        .filter(|_| rate_limits.is_some())
    }

    fn listener(
        &mut self,
        index: usize,
        spanned: &Spanned<RawListener>,
        defaults: &RawTls,
    ) -> Option<ListenerConfig> {
        let raw = spanned.get_ref();
        let key = |field: &str| format!("listeners[{index}].{field}");
        let name = match &raw.name {
            Some(name) if name.get_ref().trim().is_empty() || name.get_ref().contains(' ') => {
                self.report.error(
                    Some(name.span().start),
                    key("name"),
                    "must be non-empty and contain no spaces",
                    Some("use a short word such as \"public\""),
                );
                None
            }
            Some(name) => Some(name.get_ref().clone()),
            None => Some(index.to_string()),
        };
        let address = match raw.address.get_ref().parse::<SocketAddr>() {
            Ok(address) => Some(address),
            Err(_) => {
                self.report.error(
                    Some(raw.address.span().start),
                    key("address"),
                    format!("not an IP:PORT address: \"{}\"", raw.address.get_ref()),
                    Some("write it as 127.0.0.1:8443 or [::1]:8443; port 0 picks a free port"),
                );
                None
            }
        };
        let mode = match raw.mode.get_ref().as_str() {
            "mtls" => self.tls_files(index, raw, defaults).map(Mode::Mtls),
            "h2c" => {
                if let Some(address) = address
                    && !address.ip().is_loopback()
                    && !raw.allow_public
                {
                    self.report.error(
                        Some(raw.address.span().start),
                        key("address"),
                        format!("h2c listener on non-loopback address {address}: plaintext would be reachable from the network"),
                        Some("bind h2c to 127.0.0.1 behind a local TLS-terminating proxy, or set allow_public = true on this listener; for load balancers' health probes, a mode = \"health\" listener may bind any address"),
                    );
                }
                if let Some(tls) = &raw.tls {
                    let at = tls
                        .cert
                        .as_ref()
                        .or(tls.key.as_ref())
                        .or(tls.client_ca.as_ref());
                    self.report.error(
                        at.map(|s| s.span().start),
                        key("tls"),
                        "an h2c listener does not use TLS",
                        Some("remove the tls table or set mode = \"mtls\""),
                    );
                }
                Some(Mode::H2c)
            }
            "health" => {
                self.health_only_keys(index, raw);
                Some(Mode::Health)
            }
            other => {
                self.report.error(
                    Some(raw.mode.span().start),
                    key("mode"),
                    format!("unknown mode \"{other}\""),
                    Some("use \"mtls\", \"h2c\" or \"health\""),
                );
                None
            }
        };
        let trusted_proxy = raw.trusted_proxy.as_ref().is_some_and(|t| *t.get_ref());
        if let (Some(flag), Some(Mode::Mtls(_))) = (&raw.trusted_proxy, &mode)
            && *flag.get_ref()
        {
            self.report.error(
                Some(flag.span().start),
                key("trusted_proxy"),
                "applies to h2c listeners only: an mtls listener verifies its clients itself",
                Some("remove trusted_proxy from this listener"),
            );
        }
        let allow = raw
            .allow
            .as_ref()
            .map(|a| a.get_ref().clone())
            .unwrap_or_default();
        if let (Some(list), Some(Mode::H2c)) = (&raw.allow, &mode) {
            self.report.error(
                Some(list.span().start),
                key("allow"),
                "applies to mtls listeners only: an h2c listener sees no client certificate",
                Some("remove allow from this listener, or restrict clients at the proxy"),
            );
        }
        if let Some(list) = &raw.allow
            && let Some(bad) = list.get_ref().iter().find(|p| p.trim().is_empty())
        {
            self.report.error(
                Some(list.span().start),
                key("allow"),
                format!("empty pattern \"{bad}\""),
                Some(
                    "list DNS or URI SANs or common names, e.g. [\"dicectl\", \"spiffe://dice/*\"]",
                ),
            );
        }
        let rate_limits = self.listener_rate_limits(index, raw, mode.as_ref());
        Some(ListenerConfig {
            name: name?,
            address: address?,
            mode: mode?,
            trusted_proxy,
            allow: AllowList::new(allow),
            rate_limits: rate_limits?,
        })
    }

    /// The keys a health listener has no use for: it serves plaintext to
    /// anyone (so no `tls`, `allow` or `trusted_proxy`). It may bind any
    /// address without `allow_public` (accepted, and changes nothing), since
    /// all it tells is whether the node serves.
    fn health_only_keys(&mut self, index: usize, raw: &RawListener) {
        let key = |field: &str| format!("listeners[{index}].{field}");
        const WHY: &str =
            "a health listener serves only grpc.health.v1.Health, in plaintext, to any client";
        let tls_at = raw.tls.as_ref().map(|tls| {
            (tls.cert
                .as_ref()
                .or(tls.key.as_ref())
                .or(tls.client_ca.as_ref()))
            .map_or(raw.mode.span().start, |file| file.span().start)
        });
        let misplaced = [
            (
                "tls",
                tls_at,
                "remove the tls table from this listener; the mtls listeners serve the certificates",
            ),
            (
                "allow",
                raw.allow.as_ref().map(|list| list.span().start),
                "remove allow from this listener, or restrict who reaches its port with a firewall",
            ),
            (
                "trusted_proxy",
                raw.trusted_proxy.as_ref().map(|flag| flag.span().start),
                "remove trusted_proxy from this listener",
            ),
        ];
        for (field, at, hint) in misplaced {
            if let Some(at) = at {
                self.report.error(
                    Some(at),
                    key(field),
                    format!("does not apply to a health listener: {WHY}"),
                    Some(hint),
                );
            }
        }
        if let Some(rate) = raw
            .limits
            .as_ref()
            .and_then(|l| l.handshake_rate_per_ip.as_ref())
        {
            self.report.error(
                Some(rate.span().start),
                key("limits.handshake_rate_per_ip"),
                "applies to mtls listeners only: a health listener does no TLS handshakes",
                Some("remove it from this listener; limits.rpc_rate limits its probes"),
            );
        }
    }

    fn tls_files(
        &mut self,
        index: usize,
        raw: &RawListener,
        defaults: &RawTls,
    ) -> Option<TlsFiles> {
        let own = raw.tls.clone().unwrap_or_default();
        let mut file =
            |field: &str, own: &Option<Spanned<String>>, default: &Option<Spanned<String>>| {
                let (value, key) = match (own, default) {
                    (Some(value), _) => (value, format!("listeners[{index}].tls.{field}")),
                    (None, Some(value)) => (value, format!("tls.{field}")),
                    (None, None) => {
                        self.report.error(
                            Some(raw.mode.span().start),
                            format!("listeners[{index}]"),
                            format!("mtls listener has no tls.{field}"),
                            Some(&format!(
                                "set {field} in [tls] or in this listener's tls table"
                            )),
                        );
                        return None;
                    }
                };
                Some(FileRef {
                    path: self.base.join(value.get_ref()),
                    key,
                    line: line_of(self.source, value.span().start),
                    origin: self.origin.to_owned(),
                })
            };
        let cert = file("cert", &own.cert, &defaults.cert);
        let key = file("key", &own.key, &defaults.key);
        let client_ca = file("client_ca", &own.client_ca, &defaults.client_ca);
        let (crl, crl_key) = match (&own.crl, &defaults.crl) {
            (Some(list), _) => (Some(list), format!("listeners[{index}].tls.crl")),
            (None, list) => (list.as_ref(), "tls.crl".to_owned()),
        };
        let crl = crl
            .map(|list| {
                let line = line_of(self.source, list.span().start);
                list.get_ref()
                    .iter()
                    .enumerate()
                    .map(|(i, path)| FileRef {
                        path: self.base.join(path),
                        key: format!("{crl_key}[{i}]"),
                        line,
                        origin: self.origin.to_owned(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        if let Some(flag) = &own.strict_permissions {
            self.report.error(
                Some(flag.span().start),
                format!("listeners[{index}].tls.strict_permissions"),
                "applies to the whole agent",
                Some("set strict_permissions in [tls] instead"),
            );
        }
        let strict_permissions = defaults
            .strict_permissions
            .as_ref()
            .is_some_and(|f| *f.get_ref());
        if let Some(flag) = &own.recheck_connections {
            self.report.error(
                Some(flag.span().start),
                format!("listeners[{index}].tls.recheck_connections"),
                "applies to the whole agent",
                Some("set recheck_connections in [tls] instead"),
            );
        }
        if let Some(value) = &own.expiry_warning {
            self.report.error(
                Some(value.span().start),
                format!("listeners[{index}].tls.expiry_warning"),
                "applies to the whole agent",
                Some("set expiry_warning in [tls] instead"),
            );
        }
        Some(TlsFiles {
            cert: cert?,
            key: key?,
            client_ca: client_ca?,
            crl,
            strict_permissions,
            // Set for every listener at once from [tls] (see `validate`).
            expiry_warning: Some(DEFAULT_EXPIRY_WARNING),
        })
    }

    /// `tls.expiry_warning`: a duration with a unit, `"0s"` turning the warning off.
    fn expiry_warning(&mut self, raw: Option<&Spanned<String>>) -> Option<Option<Duration>> {
        match raw {
            Some(value)
                if humantime::parse_duration(value.get_ref()).is_ok_and(|d| d.is_zero()) =>
            {
                Some(None)
            }
            value => self
                .duration(value, "tls.expiry_warning", DEFAULT_EXPIRY_WARNING)
                .map(Some),
        }
    }

    fn check_unique(&mut self, listeners: &[ListenerConfig], raw: &RawConfig) {
        for (i, listener) in listeners.iter().enumerate() {
            let earlier = &listeners[..i];
            let at = raw.listeners.get(i).map(|l| l.span().start);
            if earlier.iter().any(|other| other.name == listener.name) {
                self.report.error(
                    at,
                    format!("listeners[{i}].name"),
                    format!("duplicate listener name \"{}\"", listener.name),
                    Some("give each listener its own name"),
                );
            }
            if listener.address.port() != 0
                && earlier
                    .iter()
                    .any(|other| other.address == listener.address)
            {
                self.report.error(
                    at,
                    format!("listeners[{i}].address"),
                    format!("address {} is used by another listener", listener.address),
                    Some("give each listener its own port"),
                );
            }
        }
    }

    fn admin(
        &mut self,
        raw: &Spanned<raw::RawAdmin>,
        listeners: &[ListenerConfig],
    ) -> Option<AdminConfig> {
        const HINT: &str = "list the identities (DNS or URI SANs, or common names) of the admin clients, e.g. allow = [\"dicectl\"]";
        let mut ok = true;
        if !listeners
            .iter()
            .any(|listener| matches!(listener.mode, Mode::Mtls(_)))
        {
            self.report.error(
                Some(raw.span().start),
                "admin",
                "admin RPCs are served on mtls listeners only, and this agent has none",
                Some("add an mtls listener, or remove the [admin] table"),
            );
            ok = false;
        }
        let allow = match &raw.get_ref().allow {
            None => {
                self.report
                    .error(Some(raw.span().start), "admin.allow", "missing", Some(HINT));
                None
            }
            Some(list) if list.get_ref().is_empty() => {
                self.report.error(
                    Some(list.span().start),
                    "admin.allow",
                    "is empty: nobody could call the admin API",
                    Some(HINT),
                );
                None
            }
            Some(list) => match list.get_ref().iter().find(|p| p.trim().is_empty()) {
                Some(bad) => {
                    self.report.error(
                        Some(list.span().start),
                        "admin.allow",
                        format!("empty pattern \"{bad}\""),
                        Some(HINT),
                    );
                    None
                }
                None => Some(AllowList::new(list.get_ref().clone())),
            },
        };
        let allow = allow?;
        ok.then_some(AdminConfig { allow })
    }

    fn metrics(&mut self, raw: &raw::RawMetrics) -> Option<SocketAddr> {
        let Ok(address) = raw.address.get_ref().parse::<SocketAddr>() else {
            self.report.error(
                Some(raw.address.span().start),
                "metrics.address",
                format!("not an IP:PORT address: \"{}\"", raw.address.get_ref()),
                Some("write it as 127.0.0.1:9100; port 0 picks a free port"),
            );
            return None;
        };
        if !address.ip().is_loopback() && !raw.allow_public {
            self.report.error(
                Some(raw.address.span().start),
                "metrics.address",
                format!(
                    "metrics on non-loopback address {address} would be readable from the network"
                ),
                Some("bind metrics to 127.0.0.1, or set allow_public = true in [metrics]"),
            );
            return None;
        }
        Some(address)
    }

    fn log(&mut self, raw: &raw::RawLog) -> Option<LogConfig> {
        let format = match raw
            .format
            .as_ref()
            .map(|f| (f.get_ref().as_str(), f.span().start))
        {
            None | Some(("text", _)) => Some(LogFormat::Text),
            Some(("json", _)) => Some(LogFormat::Json),
            Some((other, at)) => {
                self.report.error(
                    Some(at),
                    "log.format",
                    format!("unknown log format \"{other}\""),
                    Some("use \"text\" or \"json\""),
                );
                None
            }
        };
        let level = match &raw.level {
            None => Some("info".to_owned()),
            Some(level) => {
                match tracing_subscriber::EnvFilter::try_new(level.get_ref()) {
                    Ok(_) => Some(level.get_ref().clone()),
                    Err(error) => {
                        self.report.error(
                        Some(level.span().start),
                        "log.level",
                        format!("invalid level \"{}\": {error}", level.get_ref()),
                        Some("use error, warn, info, debug or trace, or a RUST_LOG-style directive"),
                    );
                        None
                    }
                }
            }
        };
        Some(LogConfig {
            format: format?,
            level: level?,
        })
    }

    fn limits(&mut self, raw: &raw::RawLimits) -> Option<Limits> {
        let handshake_timeout = self.duration(
            raw.handshake_timeout.as_ref(),
            "limits.handshake_timeout",
            DEFAULT_HANDSHAKE_TIMEOUT,
        );
        let request_timeout = self.duration(
            raw.request_timeout.as_ref(),
            "limits.request_timeout",
            DEFAULT_REQUEST_TIMEOUT,
        );
        let max_handshakes = self.count(
            raw.max_handshakes.as_ref(),
            "limits.max_handshakes",
            DEFAULT_MAX_HANDSHAKES,
        );
        let max_connections = self.count(
            raw.max_connections.as_ref(),
            "limits.max_connections",
            DEFAULT_MAX_CONNECTIONS,
        );
        let max_concurrent_streams = self.count(
            raw.max_concurrent_streams.as_ref(),
            "limits.max_concurrent_streams",
            DEFAULT_MAX_CONCURRENT_STREAMS,
        );
        let max_message_bytes = self.count(
            raw.max_message_bytes.as_ref(),
            "limits.max_message_bytes",
            DEFAULT_MAX_MESSAGE_BYTES,
        );
        let keepalive_interval = self.duration(
            raw.keepalive_interval.as_ref(),
            "limits.keepalive_interval",
            DEFAULT_KEEPALIVE_INTERVAL,
        );
        let idle_timeout = self.duration(
            raw.idle_timeout.as_ref(),
            "limits.idle_timeout",
            DEFAULT_IDLE_TIMEOUT,
        );
        let keepalive_timeout = self.duration(
            raw.keepalive_timeout.as_ref(),
            "limits.keepalive_timeout",
            DEFAULT_KEEPALIVE_TIMEOUT,
        );
        Some(Limits {
            handshake_timeout: handshake_timeout?,
            max_handshakes: max_handshakes?,
            max_connections: max_connections?,
            max_concurrent_streams: max_concurrent_streams?,
            max_message_bytes: max_message_bytes?,
            request_timeout: request_timeout?,
            keepalive_interval: keepalive_interval?,
            keepalive_timeout: keepalive_timeout?,
            idle_timeout: idle_timeout?,
        })
    }

    /// `[limits]`'s rate keys.
    fn global_rate_limits(&mut self, raw: &raw::RawLimits) -> Option<RateLimits> {
        let rpc_rate = self.rate(raw.rpc_rate.as_ref(), "limits.rpc_rate");
        let rpc_burst = self.burst(raw.rpc_burst.as_ref(), "limits.rpc_burst");
        let handshake = self.rate(
            raw.handshake_rate_per_ip.as_ref(),
            "limits.handshake_rate_per_ip",
        );
        Some(RateLimits {
            rpc_rate: rpc_rate?,
            rpc_burst: rpc_burst?,
            handshake_rate_per_ip: handshake?,
        })
    }

    /// A listener's `limits` table: its own rate keys, merged over `[limits]` later.
    fn listener_rate_limits(
        &mut self,
        index: usize,
        raw: &RawListener,
        mode: Option<&Mode>,
    ) -> Option<RateLimits> {
        let Some(table) = &raw.limits else {
            return Some(RateLimits::default());
        };
        let key = |field: &str| format!("listeners[{index}].limits.{field}");
        let rpc_rate = self.rate(table.rpc_rate.as_ref(), &key("rpc_rate"));
        let rpc_burst = self.burst(table.rpc_burst.as_ref(), &key("rpc_burst"));
        let handshake = self.rate(
            table.handshake_rate_per_ip.as_ref(),
            &key("handshake_rate_per_ip"),
        );
        if let (Some(rate), Some(Mode::H2c)) = (&table.handshake_rate_per_ip, mode) {
            self.report.error(
                Some(rate.span().start),
                key("handshake_rate_per_ip"),
                "applies to mtls listeners only: an h2c listener does no TLS handshakes",
                Some("remove it from this listener, or limit connections at the proxy"),
            );
        }
        Some(RateLimits {
            rpc_rate: rpc_rate?,
            rpc_burst: rpc_burst?,
            handshake_rate_per_ip: handshake?,
        })
    }

    fn rate(&mut self, raw: Option<&Spanned<String>>, key: &str) -> Option<Option<Rate>> {
        let Some(raw) = raw else {
            return Some(None);
        };
        match Rate::parse(raw.get_ref()) {
            Ok(rate) => Some(Some(rate)),
            Err(error) => {
                self.report.error(
                    Some(raw.span().start),
                    key,
                    format!("not a rate: \"{}\": {error}", raw.get_ref()),
                    Some("write a count per unit, such as \"50/s\", \"3000/m\" or \"10/h\""),
                );
                None
            }
        }
    }

    fn burst(&mut self, raw: Option<&Spanned<i64>>, key: &str) -> Option<Option<u32>> {
        let Some(n) = raw else {
            return Some(None);
        };
        match u32::try_from(*n.get_ref()) {
            Ok(n) if n > 0 => Some(Some(n)),
            _ => {
                self.report.error(
                    Some(n.span().start),
                    key,
                    format!("must be a positive number, not {}", n.get_ref()),
                    Some("the default is the rate per second, at least 1"),
                );
                None
            }
        }
    }

    fn count(&mut self, raw: Option<&Spanned<i64>>, key: &str, default: usize) -> Option<usize> {
        let Some(n) = raw else {
            return Some(default);
        };
        match usize::try_from(*n.get_ref()) {
            Ok(n) if n > 0 => Some(n),
            _ => {
                self.report.error(
                    Some(n.span().start),
                    key,
                    format!("must be a positive number, not {}", n.get_ref()),
                    Some(&format!("the default is {default}")),
                );
                None
            }
        }
    }

    fn duration(
        &mut self,
        raw: Option<&Spanned<String>>,
        key: &str,
        default: Duration,
    ) -> Option<Duration> {
        let Some(raw) = raw else {
            return Some(default);
        };
        match humantime::parse_duration(raw.get_ref()) {
            Ok(duration) if !duration.is_zero() => Some(duration),
            Ok(_) => {
                self.report.error(
                    Some(raw.span().start),
                    key,
                    "must be longer than zero",
                    None,
                );
                None
            }
            Err(error) => {
                self.report.error(
                    Some(raw.span().start),
                    key,
                    format!("not a duration: \"{}\": {error}", raw.get_ref()),
                    Some("write a number with a unit, such as \"10s\" or \"500ms\""),
                );
                None
            }
        }
    }
}

#[cfg(test)]
mod health_tests;
#[cfg(test)]
mod tests;
