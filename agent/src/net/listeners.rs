//! The set of running listeners, kept in step with the config in force: a
//! listener added by a config reload is bound and logged as at start; one
//! removed stops accepting and its connections are told to go away (they
//! close once their RPCs end, or after `shutdown.grace_period`); one whose
//! address, mode or `trusted_proxy` changed is both. A listener re-pointed at
//! other certificate files keeps its socket and serves the new material from
//! the next handshake.
//!
//! On stop, every listener stops accepting except the health listeners
//! (`mode = "health"`): they answer NOT_SERVING through the drain and stop
//! only at exit, handing their connections to a server of their own.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use super::conn::Conn;
use super::recheck::recheck_if_on;
use super::registry::Connections;
use super::{BoundListener, accept_loop};
use crate::config::{Config, ListenerConfig, Mode, TlsFiles};
use crate::services::AgentState;
use crate::tls::{TlsMaterial, TlsProfile};

/// The target of this module's events (as the accept loops' own).
const TARGET: &str = "dice_agent::listener";

/// One running accept loop.
struct Running {
    config: ListenerConfig,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// Runs the accept loops and follows config reloads.
pub struct Listeners {
    state: Arc<AgentState>,
    connections: Arc<Connections>,
    accepted: mpsc::Sender<Conn>,
    /// Where the health listeners' connections go: the health-only server.
    probes: mpsc::Sender<Conn>,
    /// Every profile served since start, by files: unchanged files keep the
    /// profile (and the reloader's watch) they had.
    profiles: HashMap<TlsFiles, Arc<TlsProfile>>,
    running: HashMap<String, Running>,
    /// The certificate reloader, told of every new profile so it follows its files.
    reloader: mpsc::UnboundedSender<Arc<TlsProfile>>,
}

impl Listeners {
    /// Listeners that hand accepted connections to `accepted`, and those of
    /// health listeners to `probes`.
    pub fn new(
        state: Arc<AgentState>,
        connections: Arc<Connections>,
        accepted: mpsc::Sender<Conn>,
        probes: mpsc::Sender<Conn>,
        profiles: HashMap<TlsFiles, Arc<TlsProfile>>,
        reloader: mpsc::UnboundedSender<Arc<TlsProfile>>,
    ) -> Self {
        Self {
            state,
            connections,
            accepted,
            probes,
            profiles,
            running: HashMap::new(),
            reloader,
        }
    }

    /// Serves `bound` and follows config reloads until `stop`; then stops
    /// every accept loop but the health listeners', and those at `exit`.
    /// Returns once they have all ended.
    pub async fn run(
        mut self,
        bound: Vec<BoundListener>,
        stop: CancellationToken,
        exit: CancellationToken,
    ) {
        let stops = Stops { stop, exit };
        for listener in bound {
            self.start(listener, &stops);
        }
        let mut configs = self.state.live.subscribe();
        loop {
            tokio::select! {
                () = stops.stop.cancelled() => break,
                changed = configs.changed() => if changed.is_err() { break },
            }
            let config = configs.borrow_and_update().clone();
            self.follow(&config, &stops).await;
        }
        let (health, others): (Vec<_>, Vec<_>) = self
            .running
            .drain()
            .partition(|(_, running)| running.config.mode == Mode::Health);
        for (_, running) in others {
            running.stop.cancel();
            let _ = running.task.await;
        }
        // The health listeners' own tokens are children of `exit`.
        stops.exit.cancelled().await;
        for (_, running) in health {
            let _ = running.task.await;
        }
    }

    fn start(&mut self, listener: BoundListener, stops: &Stops) {
        let name = listener.config.name.clone();
        let config = listener.config.clone();
        let (own, conns) = if config.mode == Mode::Health {
            (stops.exit.child_token(), self.probes.clone())
        } else {
            (stops.stop.child_token(), self.accepted.clone())
        };
        let rate = self.state.rate_limits.listener(&name);
        let task = tokio::spawn(accept_loop(
            listener,
            self.state.clone(),
            rate,
            conns,
            own.clone(),
        ));
        self.running.insert(
            name,
            Running {
                config,
                stop: own,
                task,
            },
        );
    }

    /// Brings the running listeners in line with `config`.
    async fn follow(&mut self, config: &Config, stops: &Stops) {
        // First, so that listeners started below get their new limiters.
        self.state.rate_limits.update(config);
        let gone: Vec<String> = self
            .running
            .iter()
            .filter(|(name, running)| {
                config
                    .listeners
                    .iter()
                    .find(|l| l.name == **name)
                    .is_none_or(|l| must_rebind(&running.config, l))
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            let Some(running) = self.running.remove(&name) else {
                continue;
            };
            running.stop.cancel();
            // The socket closes when its loop ends: wait, so the same
            // address can be bound again at once.
            let _ = running.task.await;
            let draining = self.connections.drain(&name);
            info!(target: TARGET, listener = %name, address = %running.config.address, draining, grace_period = ?config.grace_period, "listener removed: no longer accepting; its connections are told to go away");
        }
        let mut served = Vec::new();
        for listener in &config.listeners {
            if let Mode::Mtls(files) = &listener.mode
                && let Some(profile) = self.profile(files)
            {
                served.push((listener.name.clone(), profile));
            }
        }
        self.state.profiles.store(Arc::new(served));
        for (index, listener) in config.listeners.iter().enumerate() {
            if let Some(running) = self.running.get_mut(&listener.name) {
                running.config = listener.clone();
                continue;
            }
            if let Some(bound) = self.bind(index, listener, config).await {
                self.start(bound, stops);
            }
        }
        // Re-pointed certificate files change who is admitted.
        recheck_if_on(&self.connections, &self.state);
    }

    /// The profile serving `files`: the one already loaded, or new material.
    fn profile(&mut self, files: &TlsFiles) -> Option<Arc<TlsProfile>> {
        if let Some(profile) = self.profiles.get(files) {
            return Some(profile.clone());
        }
        match TlsMaterial::load(files, crate::unix_now()) {
            Ok(material) => {
                material.log_warnings();
                info!(target: TARGET, cert = %files.cert.path.display(), subject = %material.leaf.subject, serial = %material.leaf.serial, "serving certificate");
                let profile = Arc::new(TlsProfile::new(files.clone(), material));
                self.profiles.insert(files.clone(), profile.clone());
                // The reloader only ends with the agent.
                let _ = self.reloader.send(profile.clone());
                Some(profile)
            }
            Err(error) => {
                error!(target: TARGET, %error, "cannot serve the new certificate files; the listener keeps its previous material");
                None
            }
        }
    }

    async fn bind(
        &mut self,
        index: usize,
        listener: &ListenerConfig,
        config: &Config,
    ) -> Option<BoundListener> {
        let tls = match &listener.mode {
            Mode::Mtls(files) => Some(self.profile(files)?),
            Mode::H2c | Mode::Health => None,
        };
        let socket = match TcpListener::bind(listener.address).await {
            Ok(socket) => socket,
            Err(error) => {
                error!(target: TARGET, listener = %listener.name, address = %listener.address, %error, "listeners[{index}] ({}): cannot bind {}: {error} (free the port or change listeners[{index}].address in {})", listener.name, listener.address, config.file.display());
                return None;
            }
        };
        let address = socket.local_addr().ok()?;
        info!(target: TARGET, listener = %listener.name, mode = listener.mode.as_str(), %address, "listening");
        crate::metrics::metrics().listener_bound(&listener.name, tls.is_some());
        Some(BoundListener {
            config: listener.clone(),
            socket,
            tls,
        })
    }
}

/// When the accept loops stop: `stop` at the start of the drain, `exit` (the
/// health listeners) when the process is about to exit.
struct Stops {
    stop: CancellationToken,
    exit: CancellationToken,
}

/// Whether a listener must be closed and bound again to go from `was` to `now`.
fn must_rebind(was: &ListenerConfig, now: &ListenerConfig) -> bool {
    was.address != now.address
        || was.mode.as_str() != now.mode.as_str()
        || was.trusted_proxy != now.trusted_proxy
}
