//! Test fixtures for the `certs` modules: dev CA directories and issue options.

use std::path::Path;

use time::OffsetDateTime;

use super::build::Role;
use super::issue::IssueOptions;
use super::{InitOptions, KeyType, San, init};

/// Writes a dev PKI (`certs init`, default SANs) into `dir`.
pub fn init_ca(dir: &Path) {
    let options = InitOptions {
        out: dir.to_owned(),
        server_sans: Vec::new(),
        force: false,
    };
    init(&options, OffsetDateTime::now_utc()).expect("init");
}

/// Options issuing a `role` certificate `name` from `ca_dir` into `out`: no
/// SANs given, 30 days, ECDSA P-256, existing files kept.
pub fn issue_options(ca_dir: &Path, out: &Path, role: Role, name: &str) -> IssueOptions {
    IssueOptions {
        ca_dir: ca_dir.to_owned(),
        role,
        name: name.to_owned(),
        sans: Vec::new(),
        days: 30,
        key_type: KeyType::EcdsaP256,
        out: out.to_owned(),
        force: false,
    }
}

/// A DNS name, an IP address and a URI: one SAN of each kind.
pub fn node_1_sans() -> Vec<San> {
    ["node-1.example", "10.0.0.7", "spiffe://dice/node-1"]
        .iter()
        .map(|s| s.parse().expect("san"))
        .collect()
}
