//! The network side: binding the configured sockets, one accept loop per
//! listener (TLS handshakes in their own tasks), the accepted connection and
//! what is known about its peer, and hyper's HTTP/2 server on each.

mod bind;
mod conn;
mod handshake_rate;
pub(crate) mod http2;
mod listener;
mod listeners;
mod recheck;
mod registry;

pub(crate) use bind::{Bound, bind};
pub(crate) use conn::ConnInfo;
pub(crate) use listener::{BoundListener, accept_loop};
pub(crate) use listeners::Listeners;
pub(crate) use recheck::watch_and_recheck;
pub(crate) use registry::Connections;
