//! Builds the agent's TOML config. Every listener defaults to `127.0.0.1:0`
//! so tests run in parallel on ephemeral ports.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::pki::Pki;

/// How a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// TLS with a required client certificate.
    Mtls,
    /// Plaintext HTTP/2 (prior knowledge).
    H2c,
    /// Plaintext HTTP/2 serving `grpc.health.v1.Health` only.
    Health,
}

impl Mode {
    /// The config and ready-file spelling: `mtls`, `h2c` or `health`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mtls => "mtls",
            Self::H2c => "h2c",
            Self::Health => "health",
        }
    }

    /// Parses the config and ready-file spelling.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "mtls" => Some(Self::Mtls),
            "h2c" => Some(Self::H2c),
            "health" => Some(Self::Health),
            _ => None,
        }
    }
}

/// The certificate, key and client CA files of a `[tls]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// PEM CA bundle client certificates must chain to.
    pub client_ca: PathBuf,
}

/// One `[[listeners]]` entry.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// The listener's name; the ready file uses its index when absent.
    pub name: Option<String>,
    /// The address to bind, `127.0.0.1:0` by default.
    pub address: String,
    /// How it serves.
    pub mode: Mode,
    /// Allows h2c on a non-loopback address.
    pub allow_public: bool,
    /// h2c only: believe the `x-client-subject` header a local proxy sets.
    pub trusted_proxy: bool,
    /// A per-listener TLS override.
    pub tls: Option<TlsFiles>,
    /// mtls only: `allow`, the client identities served (empty: any verified client).
    pub allow: Vec<String>,
}

impl ListenerConfig {
    /// An mTLS listener on `127.0.0.1:0`.
    pub fn mtls(name: &str) -> Self {
        Self::new(Some(name), Mode::Mtls)
    }

    /// An h2c listener on `127.0.0.1:0`.
    pub fn h2c(name: &str) -> Self {
        Self::new(Some(name), Mode::H2c)
    }

    /// A health listener (`mode = "health"`) on `127.0.0.1:0`.
    pub fn health(name: &str) -> Self {
        Self::new(Some(name), Mode::Health)
    }

    /// An unnamed listener on `127.0.0.1:0`; the ready file names it by index.
    pub fn unnamed(mode: Mode) -> Self {
        Self::new(None, mode)
    }

    fn new(name: Option<&str>, mode: Mode) -> Self {
        Self {
            name: name.map(str::to_owned),
            address: "127.0.0.1:0".to_owned(),
            mode,
            allow_public: false,
            trusted_proxy: false,
            tls: None,
            allow: Vec::new(),
        }
    }

    /// Sets `allow`: the client identity patterns this mTLS listener serves.
    pub fn allow<S: Into<String>>(mut self, patterns: impl IntoIterator<Item = S>) -> Self {
        self.allow = patterns.into_iter().map(Into::into).collect();
        self
    }

    /// Binds `address` instead of `127.0.0.1:0`.
    pub fn address(mut self, address: &str) -> Self {
        self.address = address.to_owned();
        self
    }

    /// Sets `allow_public = true` (h2c on a non-loopback address).
    pub fn allow_public(mut self) -> Self {
        self.allow_public = true;
        self
    }

    /// Sets `trusted_proxy = true` (an h2c listener behind nginx).
    pub fn trusted_proxy(mut self) -> Self {
        self.trusted_proxy = true;
        self
    }

    /// Overrides the `[tls]` files for this listener.
    pub fn tls(mut self, tls: TlsFiles) -> Self {
        self.tls = Some(tls);
        self
    }
}

/// The agent's config file, built up and rendered with [`AgentConfig::to_toml`].
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// `[node] name`.
    pub node: String,
    /// The default `[tls]` table, if any.
    pub tls: Option<TlsFiles>,
    /// The `[[listeners]]`, in order.
    pub listeners: Vec<ListenerConfig>,
    /// `[log] format` (`text` or `json`).
    pub log_format: Option<String>,
    /// `[log] level`.
    pub log_level: Option<String>,
    /// `[limits] handshake_timeout`, e.g. `"10s"`.
    pub handshake_timeout: Option<String>,
    /// `[limits] max_handshakes`.
    pub max_handshakes: Option<u32>,
    /// `[shutdown] grace_period`, e.g. `"10s"`.
    pub grace_period: Option<String>,
    /// `[tls] crl`: CRL files (needs [`AgentConfig::tls`]).
    pub crl: Vec<PathBuf>,
    /// `[tls] strict_permissions = true` (needs [`AgentConfig::tls`]).
    pub strict_permissions: bool,
    /// More `[limits]` keys, each with its value as raw TOML (`("max_connections", "5")`).
    pub limits: Vec<(String, String)>,
    /// `[admin] allow`: the client identities allowed to call the admin API;
    /// `None` leaves the table out (admin RPCs off).
    pub admin: Option<Vec<String>>,
    /// Raw TOML appended after everything else.
    pub extra: String,
    /// Extra command-line arguments for the agent.
    pub args: Vec<String>,
}

impl AgentConfig {
    /// A config naming the node and nothing else: no TLS, no listeners.
    pub fn new(node: &str) -> Self {
        Self {
            node: node.to_owned(),
            tls: None,
            listeners: Vec::new(),
            log_format: None,
            log_level: Some("debug".to_owned()),
            handshake_timeout: None,
            max_handshakes: None,
            grace_period: None,
            crl: Vec::new(),
            strict_permissions: false,
            limits: Vec::new(),
            admin: None,
            extra: String::new(),
            args: Vec::new(),
        }
    }

    /// The usual test agent: node `test-node`, `[tls]` from `pki`, an mTLS
    /// listener named `mtls` and an h2c listener named `h2c`, both on `127.0.0.1:0`.
    pub fn standard(pki: &Pki) -> Self {
        Self::new("test-node")
            .tls(pki.server_tls())
            .listener(ListenerConfig::mtls("mtls"))
            .listener(ListenerConfig::h2c("h2c"))
    }

    /// Sets the node name.
    pub fn node(mut self, node: &str) -> Self {
        self.node = node.to_owned();
        self
    }

    /// Sets the default `[tls]` table.
    pub fn tls(mut self, tls: TlsFiles) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Adds a listener.
    pub fn listener(mut self, listener: ListenerConfig) -> Self {
        self.listeners.push(listener);
        self
    }

    /// Removes every listener.
    pub fn without_listeners(mut self) -> Self {
        self.listeners.clear();
        self
    }

    /// Sets `[log] format`.
    pub fn log_format(mut self, format: &str) -> Self {
        self.log_format = Some(format.to_owned());
        self
    }

    /// Sets `[log] level`.
    pub fn log_level(mut self, level: &str) -> Self {
        self.log_level = Some(level.to_owned());
        self
    }

    /// Sets `[limits] handshake_timeout`.
    pub fn handshake_timeout(mut self, timeout: &str) -> Self {
        self.handshake_timeout = Some(timeout.to_owned());
        self
    }

    /// Sets `[limits] max_handshakes`.
    pub fn max_handshakes(mut self, max: u32) -> Self {
        self.max_handshakes = Some(max);
        self
    }

    /// Sets `[shutdown] grace_period`.
    pub fn grace_period(mut self, grace: &str) -> Self {
        self.grace_period = Some(grace.to_owned());
        self
    }

    /// Adds a CRL file to `[tls] crl`.
    pub fn crl(mut self, path: &Path) -> Self {
        self.crl.push(path.to_owned());
        self
    }

    /// Sets `[tls] strict_permissions = true`.
    pub fn strict_permissions(mut self) -> Self {
        self.strict_permissions = true;
        self
    }

    /// Sets `[limits] KEY = VALUE`, `value` as raw TOML: `limit("idle_timeout", "\"1s\"")`.
    pub fn limit(mut self, key: &str, value: &str) -> Self {
        self.limits.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Adds `[admin] allow = PATTERNS`: these client identities may call the admin API.
    pub fn admin<S: Into<String>>(mut self, patterns: impl IntoIterator<Item = S>) -> Self {
        self.admin = Some(patterns.into_iter().map(Into::into).collect());
        self
    }

    /// Appends raw TOML (for keys this builder does not know).
    pub fn extra(mut self, toml: &str) -> Self {
        self.extra.push_str(toml);
        if !self.extra.ends_with('\n') {
            self.extra.push('\n');
        }
        self
    }

    /// Adds command-line arguments for the agent (after `--config` and `--ready-file`).
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_owned());
        self
    }

    /// Writes the config file to `path`.
    pub fn write(&self, path: &Path) {
        std::fs::write(path, self.to_toml())
            .unwrap_or_else(|error| panic!("write the config {}: {error}", path.display()));
    }

    /// Renders the config file.
    pub fn to_toml(&self) -> String {
        let mut out = String::new();
        let w = &mut out;
        line(w, "[node]");
        line(w, &format!("name = {}", quote(&self.node)));
        if let Some(tls) = &self.tls {
            line(w, "\n[tls]");
            line(w, &format!("cert = {}", quote_path(&tls.cert)));
            line(w, &format!("key = {}", quote_path(&tls.key)));
            line(w, &format!("client_ca = {}", quote_path(&tls.client_ca)));
            if !self.crl.is_empty() {
                let crl: Vec<String> = self.crl.iter().map(|path| quote_path(path)).collect();
                line(w, &format!("crl = [{}]", crl.join(", ")));
            }
            if self.strict_permissions {
                line(w, "strict_permissions = true");
            }
        }
        for listener in &self.listeners {
            line(w, "\n[[listeners]]");
            if let Some(name) = &listener.name {
                line(w, &format!("name = {}", quote(name)));
            }
            line(w, &format!("address = {}", quote(&listener.address)));
            line(w, &format!("mode = {}", quote(listener.mode.as_str())));
            if listener.allow_public {
                line(w, "allow_public = true");
            }
            if listener.trusted_proxy {
                line(w, "trusted_proxy = true");
            }
            if !listener.allow.is_empty() {
                let allow: Vec<String> = listener.allow.iter().map(|p| quote(p)).collect();
                line(w, &format!("allow = [{}]", allow.join(", ")));
            }
            if let Some(tls) = &listener.tls {
                line(
                    w,
                    &format!(
                        "tls = {{ cert = {}, key = {}, client_ca = {} }}",
                        quote_path(&tls.cert),
                        quote_path(&tls.key),
                        quote_path(&tls.client_ca)
                    ),
                );
            }
        }
        if self.log_format.is_some() || self.log_level.is_some() {
            line(w, "\n[log]");
            if let Some(format) = &self.log_format {
                line(w, &format!("format = {}", quote(format)));
            }
            if let Some(level) = &self.log_level {
                line(w, &format!("level = {}", quote(level)));
            }
        }
        if self.handshake_timeout.is_some()
            || self.max_handshakes.is_some()
            || !self.limits.is_empty()
        {
            line(w, "\n[limits]");
            if let Some(timeout) = &self.handshake_timeout {
                line(w, &format!("handshake_timeout = {}", quote(timeout)));
            }
            if let Some(max) = self.max_handshakes {
                line(w, &format!("max_handshakes = {max}"));
            }
            for (key, value) in &self.limits {
                line(w, &format!("{key} = {value}"));
            }
        }
        if let Some(grace) = &self.grace_period {
            line(w, "\n[shutdown]");
            line(w, &format!("grace_period = {}", quote(grace)));
        }
        if let Some(allow) = &self.admin {
            let allow: Vec<String> = allow.iter().map(|p| quote(p)).collect();
            line(w, "\n[admin]");
            line(w, &format!("allow = [{}]", allow.join(", ")));
        }
        if !self.extra.is_empty() {
            line(w, "");
            out.push_str(&self.extra);
        }
        out
    }
}

fn line(out: &mut String, text: &str) {
    let _ = writeln!(out, "{text}");
}

/// A TOML basic string.
pub fn quote(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

fn quote_path(path: &Path) -> String {
    quote(path.to_str().expect("test paths are UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_parseable_toml() {
        let tls = TlsFiles {
            cert: "/tmp/a \"b\"/server.pem".into(),
            key: "/tmp/k.pem".into(),
            client_ca: "/tmp/ca.pem".into(),
        };
        let config = AgentConfig::new("n1")
            .tls(tls.clone())
            .listener(ListenerConfig::mtls("public").tls(tls).allow(["web-*"]))
            .listener(ListenerConfig::unnamed(Mode::H2c))
            .log_format("json")
            .handshake_timeout("2s")
            .max_handshakes(7)
            .limit("idle_timeout", "\"1s\"")
            .crl(Path::new("/tmp/a.crl"))
            .strict_permissions()
            .grace_period("3s")
            .admin(["ops"])
            .extra("# trailing");
        let text = config.to_toml();
        let value: toml::Table = toml::from_str(&text).expect("valid TOML");
        assert_eq!(value["node"]["name"].as_str(), Some("n1"));
        assert_eq!(
            value["tls"]["cert"].as_str(),
            Some("/tmp/a \"b\"/server.pem")
        );
        let listeners = value["listeners"].as_array().expect("listeners array");
        assert_eq!(listeners.len(), 2);
        assert_eq!(listeners[0]["tls"]["key"].as_str(), Some("/tmp/k.pem"));
        assert_eq!(listeners[1]["mode"].as_str(), Some("h2c"));
        assert!(listeners[1].get("name").is_none());
        assert_eq!(value["limits"]["max_handshakes"].as_integer(), Some(7));
        assert_eq!(value["limits"]["idle_timeout"].as_str(), Some("1s"));
        assert_eq!(value["tls"]["crl"][0].as_str(), Some("/tmp/a.crl"));
        assert_eq!(value["tls"]["strict_permissions"].as_bool(), Some(true));
        assert_eq!(listeners[0]["allow"][0].as_str(), Some("web-*"));
        assert_eq!(value["shutdown"]["grace_period"].as_str(), Some("3s"));
        assert_eq!(value["admin"]["allow"][0].as_str(), Some("ops"));
    }
}
