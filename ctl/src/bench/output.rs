//! `dicectl bench` results as a table or one JSON document.
//!
//! JSON keys are snake_case and always present (`null` when there is no
//! value); latencies are integer microseconds (`*_us`), durations integer
//! milliseconds (`*_ms`), rates requests (or handshakes) per second with one
//! decimal. `schema_version` is 1.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::histogram::Histogram;
use super::load::{NodeStats, Settings};
use super::target::BenchNode;

/// The version of the JSON schema below.
pub const SCHEMA_VERSION: u32 = 1;

/// A finished run: what was asked, and each node's stats.
#[derive(Debug)]
pub struct BenchReport {
    /// When the run started, Unix seconds.
    pub started_at: i64,
    /// The settings.
    pub settings: Settings,
    /// Each node with its stats, sorted by name.
    pub nodes: Vec<(BenchNode, NodeStats)>,
}

impl BenchReport {
    /// Every node's stats together.
    pub fn total(&self) -> NodeStats {
        let mut total = NodeStats::default();
        for (_, stats) in &self.nodes {
            total.latency.merge(&stats.latency);
            for (kind, count) in &stats.errors {
                *total.errors.entry(kind).or_default() += count;
            }
            total.handshakes += stats.handshakes;
        }
        total
    }

    /// Whether every node served RPCs and none failed.
    pub fn ok(&self) -> bool {
        self.nodes.iter().all(|(_, stats)| node_ok(stats))
    }

    fn per_second(&self, count: u64) -> f64 {
        let seconds = self.settings.duration.as_secs_f64();
        if seconds > 0.0 {
            (count as f64 / seconds * 10.0).round() / 10.0
        } else {
            0.0
        }
    }
}

fn node_ok(stats: &NodeStats) -> bool {
    stats.latency.count() > 0 && stats.error_count() == 0
}

#[derive(Debug, Serialize)]
struct Document<'a> {
    schema_version: u32,
    command: &'static str,
    started_at: String,
    mode: &'static str,
    connections: usize,
    streams: usize,
    duration_ms: u64,
    warmup_ms: u64,
    timeout_ms: u64,
    nodes: Vec<NodeDoc<'a>>,
    summary: Totals,
}

#[derive(Debug, Serialize)]
struct NodeDoc<'a> {
    name: &'a str,
    address: &'a str,
    transport: &'static str,
    ok: bool,
    #[serde(flatten)]
    totals: Totals,
    error: Option<&'a str>,
}

#[derive(Debug, Serialize)]
struct Totals {
    requests: u64,
    errors: u64,
    errors_by_status: BTreeMap<&'static str, u64>,
    requests_per_sec: f64,
    handshakes: Option<u64>,
    handshakes_per_sec: Option<f64>,
    latency_us: Latency,
}

#[derive(Debug, Serialize)]
struct Latency {
    p50: Option<u64>,
    p90: Option<u64>,
    p99: Option<u64>,
    max: Option<u64>,
}

impl Latency {
    fn of(histogram: &Histogram) -> Self {
        Self {
            p50: histogram.quantile(0.50),
            p90: histogram.quantile(0.90),
            p99: histogram.quantile(0.99),
            max: (histogram.count() > 0).then(|| histogram.max()),
        }
    }
}

fn totals(report: &BenchReport, stats: &NodeStats) -> Totals {
    let new_connections = report.settings.new_connection_per_rpc;
    Totals {
        requests: stats.latency.count(),
        errors: stats.error_count(),
        errors_by_status: stats.errors.clone(),
        requests_per_sec: report.per_second(stats.latency.count()),
        handshakes: new_connections.then_some(stats.handshakes),
        handshakes_per_sec: new_connections.then(|| report.per_second(stats.handshakes)),
        latency_us: Latency::of(&stats.latency),
    }
}

fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The JSON document.
pub fn json(report: &BenchReport) -> serde_json::Result<String> {
    let settings = &report.settings;
    let document = Document {
        schema_version: SCHEMA_VERSION,
        command: "bench",
        started_at: dice_proto::cert::rfc3339(report.started_at),
        mode: if settings.new_connection_per_rpc {
            "new_connection_per_rpc"
        } else {
            "long_lived"
        },
        connections: settings.connections,
        streams: if settings.new_connection_per_rpc {
            1
        } else {
            settings.streams
        },
        duration_ms: millis(settings.duration),
        warmup_ms: millis(settings.warmup),
        timeout_ms: millis(settings.timeout),
        nodes: report
            .nodes
            .iter()
            .map(|(node, stats)| NodeDoc {
                name: &node.name,
                address: node.target.label(),
                transport: node.transport.as_str(),
                ok: node_ok(stats),
                totals: totals(report, stats),
                error: stats.first_error.as_deref(),
            })
            .collect(),
        summary: totals(report, &report.total()),
    };
    let mut text = serde_json::to_string_pretty(&document)?;
    text.push('\n');
    Ok(text)
}

/// `812us`, `1.25ms`, `3.1s`.
fn latency(micros: Option<u64>) -> String {
    match micros {
        None => "-".to_owned(),
        Some(us) if us < 1_000 => format!("{us}us"),
        Some(us) if us < 1_000_000 => format!("{:.2}ms", us as f64 / 1_000.0),
        Some(us) => format!("{:.1}s", us as f64 / 1_000_000.0),
    }
}

fn errors_cell(stats: &NodeStats) -> String {
    if stats.errors.is_empty() {
        return "0".to_owned();
    }
    let parts: Vec<String> = stats
        .errors
        .iter()
        .map(|(kind, count)| format!("{kind}={count}"))
        .collect();
    parts.join(",")
}

/// The table: a row per node, then a total row when there are several, then the settings.
pub fn table(report: &BenchReport) -> String {
    let new_connections = report.settings.new_connection_per_rpc;
    let mut header = vec![
        "NODE",
        "TRANSPORT",
        "REQUESTS",
        "REQ/S",
        "P50",
        "P90",
        "P99",
        "MAX",
    ];
    if new_connections {
        header.push("HANDSHAKES/S");
    }
    header.push("ERRORS");
    let row = |name: &str, transport: &str, stats: &NodeStats| {
        let mut cells = vec![
            name.to_owned(),
            transport.to_owned(),
            stats.latency.count().to_string(),
            format!("{:.1}", report.per_second(stats.latency.count())),
            latency(stats.latency.quantile(0.50)),
            latency(stats.latency.quantile(0.90)),
            latency(stats.latency.quantile(0.99)),
            latency((stats.latency.count() > 0).then(|| stats.latency.max())),
        ];
        if new_connections {
            cells.push(format!("{:.1}", report.per_second(stats.handshakes)));
        }
        cells.push(errors_cell(stats));
        cells
    };
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| (*h).to_owned()).collect()];
    for (node, stats) in &report.nodes {
        rows.push(row(&node.name, node.transport.as_str(), stats));
    }
    if report.nodes.len() > 1 {
        rows.push(row("total", "-", &report.total()));
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|column| rows.iter().map(|row| row[column].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (column, cell) in row.iter().enumerate() {
            if column + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ", width = widths[column]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    let settings = &report.settings;
    let shape = if new_connections {
        format!(
            "{} connection loop(s) per node, a new connection (full handshake) per RPC",
            settings.connections
        )
    } else {
        format!(
            "{} connection(s) x {} stream(s) per node",
            settings.connections, settings.streams
        )
    };
    let _ = writeln!(
        out,
        "\n{shape}; {} measured after {} warm-up",
        humantime::format_duration(settings.duration),
        humantime::format_duration(settings.warmup)
    );
    for (node, stats) in &report.nodes {
        if let Some(error) = &stats.first_error {
            let _ = writeln!(out, "{}: first error: {error}", node.name);
        }
    }
    out
}
