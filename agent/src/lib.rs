//! The dice fleet agent: serves `api.DiceService`, gRPC health, reflection and
//! the agent info API on mTLS and h2c listeners, and gRPC health alone on
//! health listeners (plaintext, for load balancers' and orchestrators' probes).
//!
//! Layout:
//! - `cli`: command-line flags; [`config`]: the TOML config, parsed then
//!   validated, the config in force (`LiveConfig`) and its reload on SIGHUP
//!   or a change of the file; `check`: `--check`.
//! - [`tls`]: certificate material and CRLs, checked and turned into a
//!   swappable rustls config; hot reload; expiry warnings; client identities.
//! - `net`: binding, one accept loop per listener (TLS handshakes in their
//!   own tasks) kept in step with config reloads, the accepted connection,
//!   hyper's HTTP/2 server on each, the registry of open connections and
//!   their re-check after every reload (GOAWAY to clients no longer admitted).
//! - `server`: the gRPC services over all listeners, with graceful shutdown.
//! - `rpc`: the per-RPC layers (log line, message limit, allow lists,
//!   request timeout), the gRPC header names, dispatch to the services (health
//!   alone on a health listener).
//! - `services`: `api.DiceService`, the agent info API and the statuses
//!   health reports (drain, usable certificates); `admin`: the
//!   admin API (certificate and trust rotation), off without `[admin]`.
//! - `acme`: the ACME client that obtains and renews the certificate of
//!   `[tls]` (http-01 responder, tls-alpn-01 handshakes), off without `[acme]`.
//! - `log`: the tracing subscriber, its writer and timestamps, the RPC line.
//! - `process`: stop signals, systemd readiness, the ready file, the
//!   open-files limit; [`metrics`]: Prometheus metrics and `/metrics`.

mod acme;
mod admin;
mod check;
mod cli;
pub mod config;
mod log;
pub mod metrics;
mod net;
mod process;
mod rpc;
mod server;
mod services;
pub mod tls;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use dice_proto::cert::rfc3339;
use tracing::info;

use config::Config;

pub use check::check;
pub use cli::Args;
pub use log::{LogGuard, RpcSink, init as init_logging};
pub use process::{Raised, raise_nofile};
pub use tls::load_profiles;

/// Why the agent could not run, sorted by exit status.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The config or its certificate files are unusable (exit 2).
    #[error("{0}")]
    Config(String),
    /// The agent failed while starting or serving (exit 1).
    #[error(transparent)]
    Runtime(#[from] anyhow::Error),
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Runs the agent until SIGTERM or SIGINT, logging each RPC to `rpc_sink`.
pub async fn run(
    config: Config,
    ready_file: Option<&Path>,
    rpc_sink: RpcSink,
) -> Result<(), RunError> {
    info!(version = env!("CARGO_PKG_VERSION"), node = %config.node_name, config = %config.file.display(), "dice-agent starting");
    // Before the certificate files are loaded: the first start may have none yet.
    let acme = match &config.acme {
        Some(settings) => Some(acme::Acme::start(&config, settings).await?),
        None => None,
    };
    let profiles = load_profiles(&config).map_err(|errors| {
        RunError::Config(
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
        )
    })?;
    let signals = process::StopSignals::install()
        .map_err(|e| anyhow::anyhow!("cannot install signal handlers: {e}"))?;
    let bound = net::bind(&config, &profiles).await?;
    for listener in &bound.listeners {
        let address = listener.local_addr().map_err(anyhow::Error::from)?;
        info!(listener = %listener.config.name, mode = listener.config.mode.as_str(), %address, "listening");
        metrics::metrics().listener_bound(&listener.config.name, listener.tls.is_some());
    }
    for profile in profiles.values() {
        let material = profile.material();
        material.log_warnings();
        let leaf = &material.leaf;
        info!(
            cert = %profile.files.cert.path.display(),
            subject = %leaf.subject,
            serial = %leaf.serial,
            not_after = %rfc3339(leaf.not_after),
            "serving certificate"
        );
    }
    let live = Arc::new(config::LiveConfig::new(config.clone()));
    let state = Arc::new(services::AgentState {
        live: live.clone(),
        profiles: arc_swap::ArcSwap::from_pointee(
            bound
                .listeners
                .iter()
                .filter_map(|l| Some((l.config.name.clone(), l.tls.clone()?)))
                .collect(),
        ),
        last_reload: Mutex::new(Default::default()),
        last_config_reload: Mutex::new(None),
        rate_limits: Arc::new(rpc::RateLimiters::new(&config)),
    });
    let served: Vec<_> = profiles.values().cloned().collect();
    let acme_stop = tokio_util::sync::CancellationToken::new();
    let acme_task = match (acme, &config.acme) {
        (Some(client), Some(settings)) => {
            let managed = served
                .iter()
                .filter(|profile| acme::manages(settings, profile))
                .cloned()
                .collect();
            Some(tokio::spawn(client.run(managed, acme_stop.clone())))
        }
        _ => None,
    };
    let reloader = tls::Reloader::new(
        profiles.into_values().collect(),
        state.clone(),
        config.reload,
        config::ConfigReload::new(live, state.clone()),
    )
    .map_err(|e| anyhow::anyhow!("cannot install the SIGHUP handler: {e}"))?;
    // Daily expiry warnings, for as long as the server runs.
    let expiry_stop = tokio_util::sync::CancellationToken::new();
    let expiry_task = tokio::spawn(tls::watch_expiry(served, expiry_stop.clone()));
    let result = server::serve(
        &config, state, bound, signals, reloader, ready_file, rpc_sink,
    )
    .await;
    expiry_stop.cancel();
    let _ = expiry_task.await;
    acme_stop.cancel();
    if let Some(task) = acme_task {
        let _ = task.await;
    }
    result?;
    Ok(())
}
