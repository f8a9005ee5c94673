//! What happens to each RPC: the tower layers around the services (one log
//! line per RPC, `RESOURCE_EXHAUSTED` for oversize messages, per-listener
//! allow lists, per-client rate limits, the request timeout) and the dispatch to the gRPC services
//! (all of them, or health alone on a `mode = "health"` listener).

mod authz;
mod dispatch;
mod headers;
mod health_only;
mod log;
mod message_limit;
mod rate_limit;
mod request_timeout;

pub use authz::AllowList;
pub(crate) use authz::Authz;
pub(crate) use dispatch::Dispatch;
pub(crate) use health_only::HealthOnly;
pub(crate) use log::RpcLog;
pub(crate) use message_limit::rewrite_response;
pub(crate) use rate_limit::{ListenerLimiter, RateLimit, RateLimiters};
pub use rate_limit::{Rate, RateLimits};
pub(crate) use request_timeout::RequestTimeout;
