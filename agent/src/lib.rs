//! The dice fleet agent: serves `api.DiceService`, gRPC health, reflection and
//! the agent info API on mTLS and h2c listeners.
//!
//! Layout:
//! - [`cli`]: command-line flags; [`config`]: the TOML config, parsed then validated.
//! - [`tls`]: certificate material, checked and turned into a swappable rustls config.
//! - [`reload`]: watches the certificate files and swaps in new material;
//!   [`expiry`]: warns while a served certificate is close to expiring.
//! - [`listener`]: one accept loop per listener, TLS handshakes in their own tasks.
//! - [`conn`]: an accepted connection and what is known about its peer.
//! - [`server`]: the gRPC services over all listeners, with graceful shutdown;
//!   [`http2`]: hyper's HTTP/2 server on each accepted connection.
//! - [`service`], [`info`]: the gRPC services, [`routes`]: which serves a
//!   request; [`rpc_log`]: one log line per RPC, written by [`rpc_line`]; [`authz`]: per-listener
//!   allow lists of client identities; [`message_limit`]: `RESOURCE_EXHAUSTED`
//!   for requests over `limits.max_message_bytes`; [`request_timeout`]:
//!   `limits.request_timeout` and the client's deadline.
//! - [`rlimit`]: the open-files limit, raised at startup; [`check`]: `--check`; [`ready`]: the ready file and [`systemd`] readiness; [`shutdown`]: stop signals;
//!   [`logging`]: the tracing subscriber, writing through [`log_writer`]; [`metrics`]: Prometheus metrics and `/metrics`.

pub mod authz;
pub mod check;
pub mod cli;
pub mod config;
pub mod conn;
pub mod expiry;
pub mod http2;
pub mod info;
pub mod listener;
pub mod log_fields;
pub mod log_writer;
pub mod logging;
pub mod message_limit;
pub mod metrics;
pub mod ready;
pub mod reload;
pub mod request_timeout;
pub mod rlimit;
pub mod routes;
pub mod rpc_line;
pub mod rpc_log;
pub mod server;
pub mod service;
pub mod shutdown;
pub mod systemd;
#[cfg(test)]
mod test_capture;
pub mod tls;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use dice_proto::cert::rfc3339;
use tokio::net::TcpListener;
use tracing::info;

use config::{Config, Mode, TlsFiles};
use listener::BoundListener;
use tls::{TlsError, TlsMaterial, TlsProfile};

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

/// Loads the certificate material of every mTLS listener, once per distinct set of files.
pub fn load_profiles(config: &Config) -> Result<HashMap<TlsFiles, Arc<TlsProfile>>, Vec<TlsError>> {
    let now = unix_now();
    let mut profiles = HashMap::new();
    let mut errors = Vec::new();
    for listener in &config.listeners {
        let Mode::Mtls(files) = &listener.mode else {
            continue;
        };
        if profiles.contains_key(files) || errors.iter().any(|e: &TlsError| files_contain(files, e))
        {
            continue;
        }
        match TlsMaterial::load(files, now) {
            Ok(material) => {
                profiles.insert(
                    files.clone(),
                    Arc::new(TlsProfile::new(files.clone(), material)),
                );
            }
            Err(error) => errors.push(error),
        }
    }
    if errors.is_empty() {
        Ok(profiles)
    } else {
        Err(errors)
    }
}

fn files_contain(files: &TlsFiles, error: &TlsError) -> bool {
    [&files.cert, &files.key, &files.client_ca]
        .into_iter()
        .chain(&files.crl)
        .any(|file| *file == error.file)
}

/// Every socket the agent serves on, bound.
pub struct Bound {
    /// The gRPC listeners, in config order.
    pub listeners: Vec<BoundListener>,
    /// The `/metrics` listener, when `[metrics]` is configured.
    pub metrics: Option<TcpListener>,
}

/// Binds every listener of `config`, attaching its certificate material.
pub async fn bind(
    config: &Config,
    profiles: &HashMap<TlsFiles, Arc<TlsProfile>>,
) -> anyhow::Result<Bound> {
    let mut bound = Vec::with_capacity(config.listeners.len());
    for (index, listener) in config.listeners.iter().enumerate() {
        let socket = TcpListener::bind(listener.address).await.map_err(|error| {
            anyhow::anyhow!(
                "listeners[{index}] ({}): cannot bind {}: {error} (free the port or change listeners[{index}].address in {})",
                listener.name,
                listener.address,
                config.file.display()
            )
        })?;
        let tls = match &listener.mode {
            Mode::Mtls(files) => profiles.get(files).cloned(),
            Mode::H2c => None,
        };
        bound.push(BoundListener {
            config: listener.clone(),
            socket,
            tls,
        });
    }
    let metrics = match config.metrics {
        Some(address) => Some(TcpListener::bind(address).await.map_err(|error| {
            anyhow::anyhow!(
                "metrics: cannot bind {address}: {error} (free the port or change metrics.address in {})",
                config.file.display()
            )
        })?),
        None => None,
    };
    Ok(Bound {
        listeners: bound,
        metrics,
    })
}

/// Runs the agent until SIGTERM or SIGINT.
pub async fn run(config: Config, ready_file: Option<&Path>) -> Result<(), RunError> {
    info!(version = env!("CARGO_PKG_VERSION"), node = %config.node_name, config = %config.file.display(), "dice-agent starting");
    let profiles = load_profiles(&config).map_err(|errors| {
        RunError::Config(
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
        )
    })?;
    let signals = shutdown::StopSignals::install()
        .map_err(|e| anyhow::anyhow!("cannot install signal handlers: {e}"))?;
    let bound = bind(&config, &profiles).await?;
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
    let state = Arc::new(info::AgentState {
        node: config.node_name.clone(),
        profiles: bound
            .listeners
            .iter()
            .filter_map(|l| Some((l.config.name.clone(), l.tls.clone()?)))
            .collect(),
        last_reload: Mutex::new(Default::default()),
    });
    let served: Vec<_> = profiles.values().cloned().collect();
    let reloader = reload::Reloader::new(
        profiles.into_values().collect(),
        state.clone(),
        config.reload,
    )
    .map_err(|e| anyhow::anyhow!("cannot install the SIGHUP handler: {e}"))?;
    // Daily expiry warnings, for as long as the server runs.
    let expiry_stop = tokio_util::sync::CancellationToken::new();
    let expiry_task = tokio::spawn(expiry::run(served, expiry_stop.clone()));
    let result = server::serve(&config, state, bound, signals, reloader, ready_file).await;
    expiry_stop.cancel();
    let _ = expiry_task.await;
    result?;
    Ok(())
}
