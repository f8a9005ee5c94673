//! `dicectl bench`: a closed-loop load generator for RollDie over mTLS or
//! h2c, reporting requests per second, latency percentiles, failures by
//! status and, with `--new-connection-per-rpc`, handshakes per second.
//!
//! - `target`: which nodes, and mTLS or h2c (`h2c://HOST:PORT`).
//! - `connect`: one HTTP/2 connection straight on hyper.
//! - `load`: the generator; `histogram`: latencies; `output`: table and JSON.
//!
//! Every run is bounded: at most [`MAX_TOTAL_CONNECTIONS`] connections and
//! [`MAX_STREAMS`] streams on each, for at most [`MAX_DURATION`] plus the
//! warm-up (at most [`MAX_WARMUP`]) and one `--timeout` to drain.

mod connect;
mod histogram;
mod load;
mod output;
mod target;

use std::time::Duration;

use anyhow::Context as _;
use clap::Args;

pub use self::histogram::Histogram;
pub use self::load::{NodeStats, Settings};
pub use self::output::{BenchReport, SCHEMA_VERSION};
use crate::args::{ConnArgs, GlobalArgs, OutputFormat, SelectArgs};
use crate::plan::{self, Request};
use crate::{Outcome, fleet, select, unix_now};

/// The most connections a run opens at once, over all nodes.
pub const MAX_TOTAL_CONNECTIONS: usize = 10_000;
/// The most RPCs in flight on one connection (the agent's default limit is 100).
pub const MAX_STREAMS: usize = 1_000;
/// The longest measurement window.
pub const MAX_DURATION: Duration = Duration::from_secs(600);
/// The longest warm-up.
pub const MAX_WARMUP: Duration = Duration::from_secs(60);

/// Flags of `dicectl bench`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("bench-select").args(["all", "node", "label"]).required(true)))]
pub struct BenchArgs {
    /// Connections per node; with --new-connection-per-rpc, connection loops per node
    #[arg(long, short = 'c', value_name = "C", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=MAX_TOTAL_CONNECTIONS as i64))]
    pub connections: u32,

    /// RPCs in flight on each connection (closed loop: the next starts when one ends)
    #[arg(long, short = 's', value_name = "S", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=MAX_STREAMS as i64))]
    pub streams: u32,

    /// How long to measure, e.g. 10s (at most 10m)
    #[arg(long, short = 'd', value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Load before measuring, not counted, e.g. 1s (at most 1m)
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = parse_warmup)]
    pub warmup: Duration,

    /// Open a new connection for every RPC (TCP, full TLS handshake, HTTP/2),
    /// and report handshakes per second; --streams must be 1
    #[arg(long)]
    pub new_connection_per_rpc: bool,

    /// Which nodes: fleet names, HOST:PORT or https://HOST:PORT (mTLS), or
    /// h2c://HOST:PORT (plaintext HTTP/2, no certificates needed).
    #[command(flatten)]
    pub select: SelectArgs,

    /// How to connect (--timeout bounds each connect and the drain at the end; --concurrency is unused).
    #[command(flatten)]
    pub conn: ConnArgs,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text)
        .map_err(|error| format!("{error} (write a duration with a unit, e.g. 10s)"))?;
    if duration.is_zero() || duration > MAX_DURATION {
        return Err("must be more than 0s and at most 10m".to_owned());
    }
    Ok(duration)
}

fn parse_warmup(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text)
        .map_err(|error| format!("{error} (write a duration with a unit, e.g. 1s)"))?;
    if duration > MAX_WARMUP {
        return Err("must be at most 1m".to_owned());
    }
    Ok(duration)
}

/// Runs `dicectl bench`. Usage errors (nothing ran) are errors; failed RPCs
/// make the outcome [`Outcome::NodeFailed`].
pub fn run(global: &GlobalArgs, args: &BenchArgs) -> anyhow::Result<Outcome> {
    if args.new_connection_per_rpc && args.streams != 1 {
        anyhow::bail!(
            "--streams {}: with --new-connection-per-rpc each connection carries one RPC (drop --streams, or raise --connections)",
            args.streams
        );
    }
    let stripped = target::strip(&args.select);
    let (nodes, tls, timeout) = if stripped.needs_tls {
        let plan = plan::plan(Request::new(
            global.fleet.as_deref(),
            &stripped.select,
            &args.conn,
        ))?;
        (plan.nodes, Some(plan.tls), plan.timeout)
    } else {
        let fleet = match fleet::locate(global.fleet.as_deref()) {
            Some(path) => Some(fleet::load(&path)?),
            None => None,
        };
        let nodes = select::select(
            fleet.as_ref(),
            &stripped.select,
            select::IfNone::Refuse,
            args.conn.server_name.as_deref(),
        )?;
        let timeout = (args.conn.timeout)
            .or(fleet.as_ref().map(|fleet| fleet.client.timeout))
            .unwrap_or(fleet::DEFAULT_TIMEOUT);
        (nodes, None, timeout)
    };
    let nodes = target::bench_nodes(nodes, &stripped.h2c);
    let connections = args.connections as usize;
    if nodes.len().saturating_mul(connections) > MAX_TOTAL_CONNECTIONS {
        anyhow::bail!(
            "--connections {connections} on {} nodes: more than {MAX_TOTAL_CONNECTIONS} connections in all (lower --connections or select fewer nodes)",
            nodes.len()
        );
    }
    let settings = Settings {
        connections,
        streams: args.streams as usize,
        duration: args.duration,
        warmup: args.warmup,
        timeout,
        new_connection_per_rpc: args.new_connection_per_rpc,
    };
    if global.verbose {
        eprintln!(
            "dicectl: bench {} node(s), {} connection(s) x {} stream(s) each, {} after {} warm-up",
            nodes.len(),
            settings.connections,
            settings.streams,
            humantime::format_duration(settings.duration),
            humantime::format_duration(settings.warmup)
        );
    }
    let started_at = unix_now();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores.min(8))
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let stats = runtime.block_on(load::run(&nodes, tls, settings));
    let report = BenchReport {
        started_at,
        settings,
        nodes: nodes.into_iter().zip(stats).collect(),
    };
    match global.output.unwrap_or(OutputFormat::Table) {
        OutputFormat::Table => crate::output::stdout(&output::table(&report))?,
        OutputFormat::Json => crate::output::stdout(&output::json(&report)?)?,
        OutputFormat::Jsonl => {
            crate::output::stdout(&crate::output::jsonl::one_line(&output::json(&report)?))?
        }
    }
    if global.verbose {
        for (node, stats) in &report.nodes {
            if let Some(error) = &stats.first_error {
                eprintln!("dicectl: node {}: {error}", node.name);
            }
        }
    }
    Ok(Outcome::from_all_ok(report.ok()))
}
