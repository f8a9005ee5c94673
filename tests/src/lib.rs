//! The dice fleet test harness: runs the real `dice-agent` and `dicectl`
//! binaries against certificates minted per test, and talks to them over real
//! TCP, TLS and HTTP/2 on `127.0.0.1`.
//!
//! - [`Pki`] mints a CA, server and client certificates (and variants) into a directory;
//!   [`fresh_pki`] makes one in a fresh temp directory, as most tests start.
//! - [`AgentConfig`] builds the agent's TOML; [`Agent::spawn`] starts the binary on
//!   ephemeral ports and waits for its ready file.
//! - [`Ctl::run`] and [`run_agent`] run a binary to completion under a deadline;
//!   [`Ctl::roll`] and [`process::check_config`] are the two runs most tests need.
//! - [`client`] holds the in-process gRPC clients (mTLS and h2c) and a raw TLS handshake.
//! - [`fleet`] builds fleet files and silent peers for `dicectl roll`/`health`;
//!   [`golden`] compares normalized output with `tests/golden/`.
//! - [`discovery`] runs the servers of `[[discovery]]` sources: the real
//!   dnsmasq with SRV records, and a Prometheus HTTP SD endpoint.
//! - [`ca`] signs CRLs and odd client certificates as a [`Pki`]'s CA (or an impostor);
//!   [`abuse`] keeps a good client rolling and watches the agent's memory while a test
//!   abuses it; [`h2raw`] builds HTTP/2 frames by hand; [`secrets`] looks for
//!   private key material in logs and `Debug` output.
//! - [`rate`] runs clients from a second loopback address, as a trusted
//!   proxy's client, and counts handshakes per second, for the rate limits.
//! - [`metrics`] scrapes the agent's `/metrics` and parses the OpenMetrics text strictly.
//! - [`admin`] runs a fleet of agents with the admin API on, their certificates
//!   from a CA directory, for `dicectl certs rotate` and `rotate-ca`.
//! - [`certs_cli`] runs `dicectl certs` (CA directories, leaves, renewals) and keeps a
//!   client rolling while a test rotates certificates; [`foreign_pki`] makes PKIs the way
//!   openssl and cfssl do, and runs `openssl verify` and `openssl s_client`.
//! - [`heavy::many_connections`] keeps the tests that open connections by the
//!   hundred from running at the same time.
//! - The bare reference server's pieces (a DiceService, an mTLS server config,
//!   an accept loop) that `dice-reference` and the harness's own checks share
//!   come from `dice_proto::testing`, as dicectl's unit tests use them too.
//! - [`live`] rewrites a running agent's config and times how soon an open
//!   connection is cut off after a reload.
//! - [`acme`] runs a real ACME server (pebble) on ports of its own, for `[acme]`.
//! - [`poll_until`] synchronizes on a condition; nothing in here sleeps to synchronize.
//! - [`nginx`], [`python`], [`django`] and [`chromium`] run the real nginx (with
//!   `config/nginx.conf`), the Python client, the Django example and headless
//!   Chromium; [`tools`] finds them and says how to install what is missing.
//! - [`kubernetes`] reads the kustomize base in `deploy/kubernetes/`.
//! - [`package`] packages the suite's binaries as .deb files once per test
//!   process and reads them back with `dpkg-deb`; it runs their maintainer
//!   scripts in a sandbox that changes nothing on the host.
//!
//! The scenarios themselves are one test binary, `tests/tests.rs`, with a module per
//! topic.
//!
//! The binaries are found through `DICE_AGENT_BIN` and `DICECTL_BIN`, or beside
//! the test executable's target directory: build them first with
//! `cargo build --workspace --bins`.

pub mod abuse;
pub mod acme;
pub mod admin;
pub mod agent;
pub mod bins;
pub mod ca;
pub mod certs_cli;
pub mod chromium;
pub mod client;
pub mod config;
pub mod discovery;
pub mod django;
pub mod fixtures;
pub mod fleet;
pub mod foreign_pki;
pub mod golden;
pub mod h2raw;
pub mod handshake;
pub mod heavy;
pub mod kubernetes;
pub mod live;
pub mod metrics;
pub mod nginx;
pub mod openssl;
pub mod package;
pub mod pki;
pub mod poll;
pub mod process;
pub mod python;
pub mod rate;
pub mod reuse;
pub mod rotation;
pub mod rpc_log;
pub mod secrets;
pub mod service;
pub mod tls;
pub mod tools;

pub use agent::{Agent, BoundListener, Signal};
pub use client::{Client, Handshake, HandshakeError, HandshakeStage, TlsClient};
pub use config::{AgentConfig, ListenerConfig, Mode, TlsFiles};
pub use pki::{Identity, KeyFormat, KeyKind, LeafSpec, Pki};
pub use poll::{poll_until, poll_until_async};
pub use process::{Ctl, RunOutput, run_agent};

/// A fresh temp directory for one test, removed on drop.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("dice-test-")
        .tempdir()
        .expect("create a temp dir")
}

/// A fresh temp directory and a [`Pki`] minted into it, as most tests start.
/// Keep the directory for as long as the test uses the PKI's files.
pub fn fresh_pki() -> (tempfile::TempDir, Pki) {
    let dir = tempdir();
    let pki = Pki::new(dir.path());
    (dir, pki)
}

/// The positive number in the environment variable `name`, or `default` when
/// it is unset, not a number or zero: the benchmarks' knobs
/// (`DICE_BENCH_RUNS` and the like).
pub fn env_positive<T>(name: &str, default: T) -> T
where
    T: std::str::FromStr + PartialOrd + Default,
{
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .filter(|value| *value > T::default())
        .unwrap_or(default)
}

/// Runs `future` under `timeout`, panicking with `what` if it takes longer.
pub async fn within<F: std::future::Future>(
    timeout: std::time::Duration,
    what: &str,
    future: F,
) -> F::Output {
    match tokio::time::timeout(timeout, future).await {
        Ok(output) => output,
        Err(_) => panic!("{what} did not finish within {timeout:?}"),
    }
}
