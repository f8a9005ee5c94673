//! The serde mirror of a fleet file. Every table denies unknown keys; values
//! that validation checks keep their span so errors can name the line.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// The fleet file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFleet {
    #[serde(default)]
    pub client: RawClient,
    #[serde(default)]
    pub nodes: Vec<Spanned<RawNode>>,
    #[serde(default)]
    pub discovery: Vec<Spanned<RawDiscovery>>,
}

/// `[client]`: how dicectl connects. Every key is optional here.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClient {
    pub ca: Option<Spanned<String>>,
    pub cert: Option<Spanned<String>>,
    pub key: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub concurrency: Option<Spanned<i64>>,
    pub expiry_warning: Option<Spanned<String>>,
}

/// One `[[nodes]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNode {
    pub name: Spanned<String>,
    pub address: Spanned<String>,
    pub server_name: Option<Spanned<String>>,
    pub labels: Option<Spanned<BTreeMap<String, String>>>,
}

/// One `[[discovery]]` entry. Which keys apply depends on `kind`; validation
/// says which are missing or do not belong.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDiscovery {
    pub kind: Spanned<String>,
    pub name: Option<Spanned<String>>,
    pub server: Option<Spanned<String>>,
    pub url: Option<Spanned<String>>,
    pub ca: Option<Spanned<String>>,
    pub cert: Option<Spanned<String>>,
    pub key: Option<Spanned<String>>,
    pub path: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
}
