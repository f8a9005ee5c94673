//! Log setup: stderr, text or JSON, `RUST_LOG` over the configured level,
//! colour only on a terminal. Lines go out through [`crate::log_writer`], so
//! logging every RPC never blocks a request on a `write(2)`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;
use crate::log_writer::LogGuard;

/// Installs the global subscriber. Keep the guard until exit: dropping it
/// writes out the lines still pending.
#[must_use = "dropping the guard stops the log writer"]
pub fn init(format: LogFormat, level: &str) -> LogGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let (writer, guard) = crate::log_writer::non_blocking(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
    }
    guard
}
