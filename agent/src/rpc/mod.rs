//! What happens to each RPC: the tower layers around the services (one log
//! line per RPC, `RESOURCE_EXHAUSTED` for oversize messages, per-listener
//! allow lists, the request timeout) and the dispatch to the gRPC services.

mod authz;
mod dispatch;
mod headers;
mod log;
mod message_limit;
mod request_timeout;

pub use authz::AllowList;
pub(crate) use authz::AuthzLayer;
pub(crate) use dispatch::Dispatch;
pub(crate) use log::RpcLogLayer;
pub(crate) use message_limit::MessageLimitLayer;
pub(crate) use request_timeout::RequestTimeoutLayer;
