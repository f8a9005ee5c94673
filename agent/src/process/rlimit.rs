//! The open-files limit. Each connection is a file descriptor, and the
//! default `limits.max_connections` is 10,000 per listener, well above the
//! usual soft limit of 1024; so at startup the agent raises its soft limit
//! to the hard limit (as the Go runtime does), which needs no privilege.

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// What [`raise_nofile`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Raised {
    /// The soft limit already was the hard limit (or unlimited).
    Already(Option<u64>),
    /// The soft limit went from the first value to the second.
    From(Option<u64>, Option<u64>),
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit.
pub fn raise_nofile() -> std::io::Result<Raised> {
    let limit = getrlimit(Resource::Nofile);
    let raise = match (limit.current, limit.maximum) {
        (Some(current), Some(maximum)) => current < maximum,
        (Some(_), None) => true,
        (None, _) => false,
    };
    if !raise {
        return Ok(Raised::Already(limit.current));
    }
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        },
    )?;
    Ok(Raised::From(limit.current, limit.maximum))
}
