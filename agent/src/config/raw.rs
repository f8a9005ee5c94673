//! The serde mirror of the agent's TOML file. Every table denies unknown keys;
//! values that validation checks keep their span so errors can name the line.

use serde::Deserialize;
use toml::Spanned;

/// The config file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub node: Option<Spanned<RawNode>>,
    #[serde(default)]
    pub tls: RawTls,
    #[serde(default)]
    pub listeners: Vec<Spanned<RawListener>>,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub shutdown: RawShutdown,
    #[serde(default)]
    pub reload: RawReload,
    pub metrics: Option<RawMetrics>,
    pub admin: Option<Spanned<RawAdmin>>,
    pub acme: Option<Spanned<RawAcme>>,
}

/// `[acme]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAcme {
    pub directory: Option<Spanned<String>>,
    pub ca: Option<Spanned<String>>,
    pub identifiers: Option<Spanned<Vec<String>>>,
    pub challenge: Option<Spanned<String>>,
    pub http_address: Option<Spanned<String>>,
    pub tls_alpn_listener: Option<Spanned<String>>,
    pub account_key: Option<Spanned<String>>,
    pub renew_before: Option<Spanned<String>>,
    pub key_type: Option<Spanned<String>>,
    pub contact: Option<Spanned<Vec<String>>>,
    pub eab_kid: Option<Spanned<String>>,
    pub eab_hmac_key_file: Option<Spanned<String>>,
}

/// `[admin]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub allow: Option<Spanned<Vec<String>>>,
}

/// `[metrics]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    pub address: Spanned<String>,
    #[serde(default)]
    pub allow_public: bool,
}

/// `[node]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNode {
    pub name: Spanned<String>,
}

/// `[tls]` or a listener's `tls` table: each key is optional here, and a
/// listener's keys fall back to `[tls]`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: Option<Spanned<String>>,
    pub key: Option<Spanned<String>>,
    pub client_ca: Option<Spanned<String>>,
    pub crl: Option<Spanned<Vec<String>>>,
    pub strict_permissions: Option<Spanned<bool>>,
    pub expiry_warning: Option<Spanned<String>>,
    pub recheck_connections: Option<Spanned<bool>>,
}

/// One `[[listeners]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub name: Option<Spanned<String>>,
    pub address: Spanned<String>,
    pub mode: Spanned<String>,
    #[serde(default)]
    pub allow_public: bool,
    pub trusted_proxy: Option<Spanned<bool>>,
    pub allow: Option<Spanned<Vec<String>>>,
    pub tls: Option<RawTls>,
    pub limits: Option<RawRateLimits>,
}

/// A listener's `limits` table: its overrides of the rate limit keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimits {
    pub rpc_rate: Option<Spanned<String>>,
    pub rpc_burst: Option<Spanned<i64>>,
    pub handshake_rate_per_ip: Option<Spanned<String>>,
}

/// `[log]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub format: Option<Spanned<String>>,
    pub level: Option<Spanned<String>>,
}

/// `[limits]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub handshake_timeout: Option<Spanned<String>>,
    pub max_handshakes: Option<Spanned<i64>>,
    pub max_connections: Option<Spanned<i64>>,
    pub max_concurrent_streams: Option<Spanned<i64>>,
    pub max_message_bytes: Option<Spanned<i64>>,
    pub request_timeout: Option<Spanned<String>>,
    pub keepalive_interval: Option<Spanned<String>>,
    pub keepalive_timeout: Option<Spanned<String>>,
    pub idle_timeout: Option<Spanned<String>>,
    pub rpc_rate: Option<Spanned<String>>,
    pub rpc_burst: Option<Spanned<i64>>,
    pub handshake_rate_per_ip: Option<Spanned<String>>,
}

/// `[shutdown]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShutdown {
    pub grace_period: Option<Spanned<String>>,
}

/// `[reload]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReload {
    pub poll_interval: Option<Spanned<String>>,
    pub settle_period: Option<Spanned<String>>,
}
