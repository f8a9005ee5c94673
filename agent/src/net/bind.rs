//! Binds every socket the config names, before anything is served.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::net::TcpListener;

use super::BoundListener;
use crate::config::{Config, Mode, TlsFiles};
use crate::tls::TlsProfile;

/// Every socket the agent serves on, bound.
pub struct Bound {
    /// The gRPC listeners, in config order.
    pub listeners: Vec<BoundListener>,
    /// The `/metrics` listener, when `[metrics]` is configured.
    pub metrics: Option<TcpListener>,
    /// The certificate material of the mTLS listeners, by files.
    pub profiles: HashMap<TlsFiles, Arc<TlsProfile>>,
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
            Mode::H2c | Mode::Health => None,
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
        profiles: profiles.clone(),
    })
}
