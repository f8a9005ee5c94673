//! `--output jsonl`: one JSON object per line, written and flushed as soon as
//! it is known, so a reader sees each node the moment it finishes.
//!
//! `roll` and `health` write a `"type": "node"` line per node, in the order
//! nodes finish, with the keys of that node in the JSON document plus
//! `server_name` and `source`; then one `"type": "summary"` line with the
//! keys of the document's run and summary. `nodes` writes a line per node,
//! then a summary. Every line opens with `schema_version` (the JSON
//! document's, [`SCHEMA_VERSION`]), `command` and `type`. Only counts and
//! latencies are kept for the summary, so memory follows the nodes in
//! flight, not the fleet (16 bytes per node for the latency median).
//!
//! Commands that do not stream (`certs ...`, `bench`) write their JSON
//! document on one line.

use std::io::{self, Write};
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;

use super::json::{
    CountsDoc, HealthNode, HealthSummary, LatencyDoc, RollSummary, RunDoc, SCHEMA_VERSION, ms,
};
use crate::report::{Failure, HealthRow, HealthStatus, RollRow, RunInfo, latency_stats};
use crate::select::Node;

/// Writes lines to stdout, flushing each. A closed pipe ends the output
/// quietly: whoever read has all they wanted, and the run goes on.
#[derive(Debug, Default)]
pub struct Lines {
    closed: bool,
}

impl Lines {
    /// Writes `value` as one line.
    pub fn write(&mut self, value: &impl Serialize) -> anyhow::Result<()> {
        if self.closed {
            return Ok(());
        }
        let mut line = serde_json::to_vec(value)?;
        line.push(b'\n');
        let mut out = io::stdout().lock();
        match out.write_all(&line).and_then(|()| out.flush()) {
            Err(error) if error.kind() == io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(())
            }
            other => other.context("cannot write to stdout"),
        }
    }
}

/// The keys every line opens with.
#[derive(Debug, Serialize)]
struct Head {
    schema_version: u32,
    command: &'static str,
    #[serde(rename = "type")]
    kind: &'static str,
}

impl Head {
    fn new(command: &'static str, kind: &'static str) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            command,
            kind,
        }
    }
}

/// A node line: the head, the node's keys, its server name and source.
#[derive(Debug, Serialize)]
struct NodeLine<'a, N: Serialize> {
    #[serde(flatten)]
    head: Head,
    #[serde(flatten)]
    node: N,
    server_name: String,
    source: &'a str,
}

fn node_line<'a, N: Serialize>(command: &'static str, node: &'a Node, doc: N) -> NodeLine<'a, N> {
    NodeLine {
        head: Head::new(command, "node"),
        node: doc,
        server_name: node.target.server_name().to_str().into_owned(),
        source: &node.source,
    }
}

/// A summary line: the head, the run's facts, then the command's summary.
#[derive(Debug, Serialize)]
struct SummaryLine<S: Serialize> {
    #[serde(flatten)]
    head: Head,
    started_at: String,
    duration_ms: u64,
    timeout_ms: u64,
    concurrency: usize,
    #[serde(flatten)]
    summary: S,
}

fn summary_line<S: Serialize>(command: &'static str, run: &RunInfo, summary: S) -> SummaryLine<S> {
    let run = RunDoc::new(command, run);
    SummaryLine {
        head: Head::new(command, "summary"),
        started_at: run.started_at,
        duration_ms: run.duration_ms,
        timeout_ms: run.timeout_ms,
        concurrency: run.concurrency,
        summary,
    }
}

/// Counts and latencies of a streamed run: all a summary needs.
#[derive(Debug, Default)]
pub struct Tally {
    nodes: usize,
    ok: usize,
    latencies: Vec<Duration>,
    statuses: [usize; 5],
    expiring: usize,
}

impl Tally {
    /// Whether every node counted was OK.
    pub fn all_ok(&self) -> bool {
        self.ok == self.nodes
    }

    fn counts(&self) -> CountsDoc {
        CountsDoc::new(self.nodes, self.ok)
    }

    fn latency(&self) -> LatencyDoc {
        LatencyDoc::new(latency_stats(self.latencies.clone()))
    }
}

/// A node's result that `--output jsonl` writes as a line the moment the
/// node finishes.
pub trait StreamedRow {
    /// Writes the line of `node`, and counts it in `tally`.
    fn write_line(&self, lines: &mut Lines, tally: &mut Tally, node: &Node) -> anyhow::Result<()>;
    /// The node's name and address, and why it failed, if it did.
    fn failed(&self) -> (&str, &str, Option<&Failure>);
}

impl StreamedRow for RollRow {
    fn write_line(&self, lines: &mut Lines, tally: &mut Tally, node: &Node) -> anyhow::Result<()> {
        roll_node(lines, tally, node, self)
    }
    fn failed(&self) -> (&str, &str, Option<&Failure>) {
        RollRow::failed(self)
    }
}

impl StreamedRow for HealthRow {
    fn write_line(&self, lines: &mut Lines, tally: &mut Tally, node: &Node) -> anyhow::Result<()> {
        health_node(lines, tally, node, self)
    }
    fn failed(&self) -> (&str, &str, Option<&Failure>) {
        HealthRow::failed(self)
    }
}

// === roll ===

/// Writes `row` of `node` as a `roll` line, and counts it.
pub fn roll_node(
    lines: &mut Lines,
    tally: &mut Tally,
    node: &Node,
    row: &RollRow,
) -> anyhow::Result<()> {
    tally.nodes += 1;
    if row.failure.is_none() {
        tally.ok += 1;
        tally.latencies.push(row.latency);
    }
    lines.write(&node_line("roll", node, super::json::roll_node(row)))
}

#[derive(Debug, Serialize)]
struct RollTotals {
    count: u32,
    #[serde(flatten)]
    summary: RollSummary,
}

/// Writes the `roll` summary line.
pub fn roll_summary(
    lines: &mut Lines,
    run: &RunInfo,
    count: u32,
    tally: &Tally,
) -> anyhow::Result<()> {
    let summary = RollSummary {
        counts: tally.counts(),
        latency: tally.latency(),
    };
    lines.write(&summary_line("roll", run, RollTotals { count, summary }))
}

// === health ===

fn status_index(status: HealthStatus) -> usize {
    match status {
        HealthStatus::Serving => 0,
        HealthStatus::NotServing => 1,
        HealthStatus::Unreachable => 2,
        HealthStatus::TlsError => 3,
        HealthStatus::Timeout => 4,
    }
}

/// Writes `row` of `node` as a `health` line, and counts it.
pub fn health_node(
    lines: &mut Lines,
    tally: &mut Tally,
    node: &Node,
    row: &HealthRow,
) -> anyhow::Result<()> {
    tally.nodes += 1;
    tally.ok += usize::from(row.ok());
    tally.statuses[status_index(row.status)] += 1;
    tally.expiring += usize::from(row.expiring());
    // As the document's summary: latencies of the nodes whose health service answered.
    if row.status == HealthStatus::Serving
        || row.failure.as_ref().map(|f| f.kind) == Some(crate::report::FailureKind::Health)
    {
        tally.latencies.push(row.latency);
    }
    let doc: HealthNode<'_> = super::json::health_node(row);
    lines.write(&node_line("health", node, doc))
}

#[derive(Debug, Serialize)]
struct HealthTotals {
    expiry_warning_ms: u64,
    #[serde(flatten)]
    summary: HealthSummary,
}

/// Writes the `health` summary line.
pub fn health_summary(
    lines: &mut Lines,
    run: &RunInfo,
    expiry_warning: Duration,
    tally: &Tally,
) -> anyhow::Result<()> {
    let [serving, not_serving, unreachable, tls_error, timeout] = tally.statuses;
    let summary = HealthSummary {
        counts: tally.counts(),
        serving,
        not_serving,
        unreachable,
        tls_error,
        timeout,
        expiring: tally.expiring,
        latency: tally.latency(),
    };
    lines.write(&summary_line(
        "health",
        run,
        HealthTotals {
            expiry_warning_ms: ms(expiry_warning),
            summary,
        },
    ))
}

/// A pretty JSON document on one line: whitespace outside strings removed.
pub fn one_line(document: &str) -> String {
    let mut line = String::with_capacity(document.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in document.chars() {
        if in_string {
            line.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
            line.push(c);
        } else if !c.is_whitespace() {
            line.push(c);
        }
    }
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_keeps_strings_whole() {
        let pretty = "{\n  \"a b\": \"x \\\" y\",\n  \"n\": [\n    1,\n    2\n  ]\n}\n";
        assert_eq!(one_line(pretty), "{\"a b\":\"x \\\" y\",\"n\":[1,2]}\n");
    }
}
