//! The dice fleet wire API and the pieces both binaries must agree on.
//!
//! - [`api`]: the `DiceService` contract of the system this replaces (`package api`).
//! - [`info`]: the agent's own API, package `dice.agent.v1`: `AgentInfoService`
//!   and `AdminService` (certificate and trust rotation).
//! - [`FILE_DESCRIPTOR_SET`]: every proto, for gRPC server reflection.
//! - [`pem`]: loads PEM certificate chains, keys and CA bundles into rustls types,
//!   and writes certificate chains as PEM.
//! - [`atomic`]: replaces a file atomically (temp file, flush, rename), following symlinks.
//! - [`cert`]: reads what a certificate says (subject, SANs, serial, validity).
//! - [`crypto`]: the one rustls crypto provider both binaries use.
//! - `keys` (feature `keys`): key types, key generation, PKCS#1/SEC1/PKCS#8 keys for rcgen.
//! - [`file_error`]: errors in TOML files that name the file, line and key.
//! - [`clidocs`]: shell completions and man pages from the clap definitions.
//! - `testing` (feature `testing`): a bare DiceService and mTLS server for tests.

pub mod atomic;
pub mod cert;
pub mod clidocs;
pub mod crypto;
pub mod file_error;
#[cfg(feature = "keys")]
pub mod keys;
pub mod pem;
#[cfg(feature = "testing")]
pub mod testing;

/// The `DiceService` API, generated from `proto/api.proto`.
#[allow(missing_docs, clippy::unwrap_used)]
pub mod api {
    tonic::include_proto!("api");
}

/// The agent's own API, package `dice.agent.v1`: the info API
/// (`proto/info.proto`) and the admin API (`proto/admin.proto`).
#[allow(missing_docs, clippy::unwrap_used)]
pub mod info {
    tonic::include_proto!("dice.agent.v1");
}

/// The encoded descriptor set of every proto in this crate, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/dice_descriptor.bin"));

/// The git commit the binaries were built from, or `unknown`.
pub const GIT_COMMIT: &str = env!("DICE_GIT_COMMIT");

/// The version line both binaries print for `--version`: `0.1.0 (commit abc123)`.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("DICE_GIT_COMMIT"),
    ")"
);

/// The fully qualified name of the dice service, as health checks and reflection name it.
pub const DICE_SERVICE_NAME: &str = "api.DiceService";
