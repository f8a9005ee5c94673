//! The agent as a process: stop signals, systemd notifications, the ready
//! file and the open-files limit.

pub(crate) mod ready;
mod rlimit;
mod signals;
pub(crate) mod systemd;

pub use rlimit::{Raised, raise_nofile};
pub(crate) use signals::StopSignals;
