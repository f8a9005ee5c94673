//! `limits.handshake_rate_per_ip` at the accept loop: a new connection from
//! a source address over its rate is closed before any TLS work. Each refusal
//! is counted and logged at debug; a warning sums them up at most every
//! [`WARN_EVERY`], so a flood cannot flood the log.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use crate::rpc::ListenerLimiter;

/// The target of this module's events.
const TARGET: &str = "dice_agent::rate_limit";

/// The shortest time between two warnings about refused connections.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// One accept loop's handshake limit.
pub struct HandshakeGate {
    limiter: Arc<ListenerLimiter>,
    refused_since_warning: u64,
    last_warning: Option<Instant>,
}

impl HandshakeGate {
    /// Limits new connections with `limiter`'s handshake rate.
    pub fn new(limiter: Arc<ListenerLimiter>) -> Self {
        Self {
            limiter,
            refused_since_warning: 0,
            last_warning: None,
        }
    }

    /// Whether a new connection from `peer` may go on to the TLS handshake.
    pub fn admit(&mut self, peer: SocketAddr) -> bool {
        let handshake = &self.limiter.handshake;
        if !handshake.is_on() || handshake.admit(self.limiter.ip_key(peer.ip())) {
            return true;
        }
        let rate = self
            .limiter
            .settings()
            .handshake_rate_per_ip
            .map(|r| r.to_string())
            .unwrap_or_default();
        debug!(target: TARGET, listener = %self.limiter.name, %peer, limit = %rate, "connection over limits.handshake_rate_per_ip; closing it before the handshake");
        self.refused_since_warning += 1;
        let now = Instant::now();
        if self
            .last_warning
            .is_none_or(|last| now.duration_since(last) >= WARN_EVERY)
        {
            warn!(target: TARGET, listener = %self.limiter.name, refused = self.refused_since_warning, limit = %rate, "connections refused over limits.handshake_rate_per_ip since the last warning");
            self.refused_since_warning = 0;
            self.last_warning = Some(now);
        }
        false
    }
}
