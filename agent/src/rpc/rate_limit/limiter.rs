//! The rate limiters of every listener, their settings swappable at runtime:
//! [`RateLimiters::update`] takes a new config and applies each listener's
//! limits in place, keeping the buckets already filled.

use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use arc_swap::ArcSwap;
use prometheus_client::metrics::counter::Counter;

use super::rate::{Rate, RateLimits};
use super::table::{Gcra, KeyTable};
use crate::config::Config;
use crate::metrics::{RateLimitLabels, metrics};

/// The most client keys one limiter tracks, whatever identities appear.
pub const MAX_TRACKED_KEYS: usize = 100_000;

/// What kind of event a limiter counts, as the metrics' `kind` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// RPCs per client identity.
    Rpc,
    /// New connections per source IP.
    Handshake,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Rpc => "rpc",
            Kind::Handshake => "handshake",
        }
    }
}

/// One rate per client key, changeable while in use.
pub struct KeyedLimiter {
    /// Nanoseconds per event; 0 when there is no limit.
    interval_ns: AtomicU64,
    /// How far ahead of now a key may run: `interval_ns * burst`.
    tolerance_ns: AtomicU64,
    table: KeyTable,
    clock: Instant,
    refused: Counter,
}

impl KeyedLimiter {
    fn new(listener: &str, kind: Kind) -> Self {
        let labels = RateLimitLabels {
            listener: listener.to_owned(),
            kind: kind.label(),
        };
        let m = metrics();
        Self {
            interval_ns: AtomicU64::new(0),
            tolerance_ns: AtomicU64::new(0),
            table: KeyTable::new(
                MAX_TRACKED_KEYS,
                m.rate_limit_tracked.get_or_create_owned(&labels),
            ),
            clock: Instant::now(),
            refused: m.rate_limited.get_or_create_owned(&labels),
        }
    }

    fn set(&self, rate: Option<Rate>, burst: u32) {
        let interval = rate.map_or(0, |r| r.interval_ns());
        self.tolerance_ns
            .store(interval.saturating_mul(u64::from(burst)), Ordering::Relaxed);
        self.interval_ns.store(interval, Ordering::Relaxed);
    }

    /// Whether any limit is set.
    pub fn is_on(&self) -> bool {
        self.interval_ns.load(Ordering::Relaxed) != 0
    }

    /// Whether an event for `key` is within the limit now; a refusal is counted.
    pub fn admit(&self, key: u64) -> bool {
        let interval_ns = self.interval_ns.load(Ordering::Relaxed);
        if interval_ns == 0 {
            return true;
        }
        let gcra = Gcra {
            interval_ns,
            tolerance_ns: self.tolerance_ns.load(Ordering::Relaxed),
        };
        // Nanoseconds since the limiter was made: u64 lasts 584 years.
        let now = u64::try_from(self.clock.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let admitted = self.table.admit(key, now, gcra);
        if !admitted {
            self.refused.inc();
        }
        admitted
    }
}

/// One listener's limiters: RPCs per client identity, handshakes per IP.
pub struct ListenerLimiter {
    /// The listener's name.
    pub name: Arc<str>,
    /// RPCs per client identity.
    pub rpc: KeyedLimiter,
    /// New connections per source IP (mTLS listeners).
    pub handshake: KeyedLimiter,
    /// The settings in effect, for messages.
    settings: Mutex<RateLimits>,
    /// Keys hashes of identities, so no one can pick colliding identities.
    hasher: RandomState,
}

impl ListenerLimiter {
    fn new(name: &str, limits: RateLimits) -> Self {
        let limiter = Self {
            name: Arc::from(name),
            rpc: KeyedLimiter::new(name, Kind::Rpc),
            handshake: KeyedLimiter::new(name, Kind::Handshake),
            settings: Mutex::new(limits),
            hasher: RandomState::new(),
        };
        limiter.set(limits);
        limiter
    }

    fn set(&self, limits: RateLimits) {
        self.rpc.set(limits.rpc_rate, limits.rpc_burst());
        // One connection at once per second's worth, like the RPC burst's default.
        let handshake_burst = limits
            .handshake_rate_per_ip
            .map_or(1, |r| r.default_burst());
        self.handshake
            .set(limits.handshake_rate_per_ip, handshake_burst);
        *self.settings.lock().unwrap_or_else(PoisonError::into_inner) = limits;
    }

    /// The settings in effect.
    pub fn settings(&self) -> RateLimits {
        *self.settings.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The key of a client identified by a certificate subject or a proxy's header.
    pub fn identity_key(&self, identity: &[u8]) -> u64 {
        self.hasher.hash_one((0u8, identity))
    }

    /// The key of a client identified by its IP address.
    pub fn ip_key(&self, ip: IpAddr) -> u64 {
        self.hasher.hash_one((1u8, ip))
    }
}

/// Every listener's limiters, found by listener name.
pub struct RateLimiters {
    listeners: ArcSwap<Vec<Arc<ListenerLimiter>>>,
    /// Whether some listener limits RPCs: when none does, an RPC costs one load.
    any_rpc: AtomicBool,
}

impl std::fmt::Debug for RateLimiters {
    /// The listeners limited, not their tables.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiters")
            .field("listeners", &self.listeners.load().len())
            .finish_non_exhaustive()
    }
}

impl RateLimiters {
    /// The limiters of `config`'s listeners.
    pub fn new(config: &Config) -> Self {
        let limiters = Self {
            listeners: ArcSwap::from_pointee(Vec::new()),
            any_rpc: AtomicBool::new(false),
        };
        limiters.update(config);
        limiters
    }

    /// Applies `config`'s limits: a listener kept keeps its buckets with the
    /// new rates, a new one starts empty, a removed one is dropped.
    pub fn update(&self, config: &Config) {
        let old = self.listeners.load_full();
        let mut any_rpc = false;
        let listeners = config
            .listeners
            .iter()
            .map(|listener| {
                let limits = listener.rate_limits;
                any_rpc |= limits.rpc_rate.is_some();
                match old.iter().find(|l| *l.name == *listener.name) {
                    Some(kept) => {
                        kept.set(limits);
                        kept.clone()
                    }
                    None => Arc::new(ListenerLimiter::new(&listener.name, limits)),
                }
            })
            .collect();
        self.listeners.store(Arc::new(listeners));
        self.any_rpc.store(any_rpc, Ordering::Relaxed);
    }

    /// The limiters of the listener `name` (no limits if the config has no such listener).
    pub fn listener(&self, name: &str) -> Arc<ListenerLimiter> {
        match self.listeners.load().iter().find(|l| *l.name == *name) {
            Some(found) => found.clone(),
            None => Arc::new(ListenerLimiter::new(name, RateLimits::default())),
        }
    }

    /// Whether some listener limits RPCs.
    pub fn any_rpc(&self) -> bool {
        self.any_rpc.load(Ordering::Relaxed)
    }

    /// Runs `f` on the limiters of the listener `name`, if it has any.
    pub fn with_listener<T>(&self, name: &str, f: impl FnOnce(&ListenerLimiter) -> T) -> Option<T> {
        let listeners = self.listeners.load();
        listeners.iter().find(|l| *l.name == *name).map(|l| f(l))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn config(limits: &str) -> Config {
        let text = format!(
            "[node]\nname = \"n\"\n[limits]\n{limits}\n[[listeners]]\nname = \"a\"\naddress = \"127.0.0.1:0\"\nmode = \"h2c\"\n"
        );
        crate::config::parse(Path::new("/etc/dice/node.toml"), &text).expect("valid config")
    }

    #[test]
    fn an_update_changes_the_rate_of_a_running_limiter() {
        let limiters = RateLimiters::new(&config(""));
        assert!(!limiters.any_rpc());
        let a = limiters.listener("a");
        let key = a.identity_key(b"CN=web");
        assert!((0..100).all(|_| a.rpc.admit(key)), "no limit: all admitted");

        limiters.update(&config("rpc_rate = \"2/s\""));
        assert!(limiters.any_rpc());
        // The same limiter, now with a burst of 2.
        assert!(Arc::ptr_eq(&a, &limiters.listener("a")));
        assert!(a.rpc.admit(key) && a.rpc.admit(key));
        assert!(!a.rpc.admit(key));
        assert!(
            a.rpc.admit(a.identity_key(b"CN=other")),
            "another client has its own bucket"
        );

        limiters.update(&config(""));
        assert!(!limiters.any_rpc());
        assert!(a.rpc.admit(key), "the limit is lifted");
    }
}
