//! The config in force, replaced whole by a config reload. Readers take the
//! current value when they act (an accept loop per connection, the admin API
//! per call), never a copy captured at startup; per-RPC code reads nothing
//! from here.

use std::sync::Arc;

use tokio::sync::watch;

use super::Config;

/// The config in force, shared by every part of the agent that reads a
/// reloadable key.
#[derive(Debug)]
pub struct LiveConfig {
    current: watch::Sender<Arc<Config>>,
}

impl LiveConfig {
    /// Starts with `config` in force.
    pub fn new(config: Config) -> Self {
        Self {
            current: watch::Sender::new(Arc::new(config)),
        }
    }

    /// The config in force now.
    pub fn current(&self) -> Arc<Config> {
        self.current.borrow().clone()
    }

    /// Puts `config` in force and wakes every subscriber.
    pub fn replace(&self, config: Config) {
        self.current.send_replace(Arc::new(config));
    }

    /// Wakes on every [`LiveConfig::replace`] from now on.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Config>> {
        self.current.subscribe()
    }
}
