//! Log setup: stderr, text or JSON, `RUST_LOG` over the configured level,
//! colour only on a terminal. Lines go out through [`writer`], so logging
//! every RPC under load costs no `write(2)` per line, and timestamps are
//! formatted by [`Timestamp`], which does the calendar arithmetic once a
//! second rather than for every line. [`RpcLine`] is the line every RPC logs;
//! [`RpcSink`] says where it goes.

mod rpc_line;
#[cfg(test)]
mod test_capture;
mod timestamp;
mod writer;

use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing::Dispatch;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt;

pub use rpc_line::RpcSink;
pub(crate) use rpc_line::{RpcLine, code_name};
use timestamp::Timestamp;
pub use writer::LogGuard;

use crate::config::LogFormat;

/// Installs the global subscriber and returns where RPC lines go: straight
/// into the log writer off a terminal (or in JSON), through tracing with
/// colour on one. Keep the guard until exit: dropping it writes out the
/// lines still pending.
#[must_use = "dropping the guard stops the log writer"]
pub fn init(format: LogFormat, level: &str) -> (LogGuard, RpcSink) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let (writer, guard) = writer::non_blocking(std::io::stderr());
    let terminal = std::io::stderr().is_terminal();
    let rpc = if !terminal || format == LogFormat::Json {
        RpcSink::direct(writer.clone(), format)
    } else {
        RpcSink::default()
    };
    subscriber(format, terminal, filter, writer).init();
    (guard, rpc)
}

/// Replaces the level filter of the installed subscriber.
type SetLevel = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;

/// How to change the level of the subscriber [`init`] installed.
static SET_LEVEL: OnceLock<SetLevel> = OnceLock::new();

/// Puts `level` (a `log.level` value) in force from the next event on.
/// Refused while `RUST_LOG` is set, since it overrides `log.level`.
pub fn set_level(level: &str) -> Result<(), String> {
    if std::env::var_os(EnvFilter::DEFAULT_ENV).is_some() {
        return Err("RUST_LOG is set, and it overrides log.level".to_owned());
    }
    let filter = EnvFilter::try_new(level).map_err(|e| format!("log.level: {e}"))?;
    let set = SET_LEVEL
        .get()
        .ok_or_else(|| "no log subscriber is installed".to_owned())?;
    set(filter)
}

/// The agent's subscriber: `format`'s layout (in text, colour only if
/// `ansi`), events that pass `filter`, written to `writer`. [`init`]
/// installs it; the RPC line's test compares its own bytes with it. The
/// filter is reloadable: [`set_level`] changes it.
fn subscriber<W>(format: LogFormat, ansi: bool, filter: EnvFilter, writer: W) -> Dispatch
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_timer(Timestamp)
        .with_writer(writer);
    match format {
        LogFormat::Text => {
            let builder = builder.with_ansi(ansi).with_filter_reloading();
            let handle = builder.reload_handle();
            let _ = SET_LEVEL.set(Box::new(move |filter| {
                handle.reload(filter).map_err(|e| e.to_string())
            }));
            builder.into()
        }
        LogFormat::Json => {
            let builder = builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_filter_reloading();
            let handle = builder.reload_handle();
            let _ = SET_LEVEL.set(Box::new(move |filter| {
                handle.reload(filter).map_err(|e| e.to_string())
            }));
            builder.into()
        }
    }
}
