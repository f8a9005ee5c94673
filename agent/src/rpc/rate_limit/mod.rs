//! Per-client rate limits: `limits.rpc_rate` and `limits.rpc_burst` per
//! client identity (an RPC over them fails with `RESOURCE_EXHAUSTED`), and
//! `limits.handshake_rate_per_ip` per source address on mTLS listeners, as
//! GCRA token buckets in a bounded table. Settings change at runtime through
//! [`RateLimiters::update`].

#[cfg(test)]
mod config_tests;
mod layer;
mod limiter;
mod rate;
mod table;

pub(crate) use layer::RateLimit;
pub(crate) use limiter::{ListenerLimiter, RateLimiters};
pub use rate::{Rate, RateLimits};
