//! Log setup: stderr, text or JSON, `RUST_LOG` over the configured level,
//! colour only on a terminal (elsewhere fields go through
//! [`fields::PlainFields`]). Lines go out through [`writer`], so
//! logging every RPC under load costs no `write(2)` per line, and timestamps
//! are formatted by [`Timestamp`], which does the calendar arithmetic once a
//! second rather than for every line. [`RpcLine`] is the line every RPC logs.

mod fields;
mod rpc_line;
#[cfg(test)]
mod test_capture;
mod timestamp;
mod writer;

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

pub(crate) use rpc_line::{RpcLine, code_name};
use timestamp::Timestamp;
pub use writer::LogGuard;

use crate::config::LogFormat;

/// Installs the global subscriber. Keep the guard until exit: dropping it
/// writes out the lines still pending.
#[must_use = "dropping the guard stops the log writer"]
pub fn init(format: LogFormat, level: &str) -> LogGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let (writer, guard) = writer::non_blocking(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_timer(Timestamp)
        .with_writer(writer.clone());
    let terminal = std::io::stderr().is_terminal();
    if !terminal || format == LogFormat::Json {
        rpc_line::install(writer, format);
    }
    match format {
        LogFormat::Text if terminal => builder.with_ansi(true).init(),
        LogFormat::Text => builder
            .with_ansi(false)
            .fmt_fields(fields::PlainFields)
            .init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
    }
    guard
}
