//! `dicectl nodes` as a table (`NODE ADDRESS SERVER-NAME LABELS SOURCE`, then
//! a count per source), a JSON document, or JSON lines.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::OutputFormat;
use super::json::{SCHEMA_VERSION, document};
use super::jsonl::Lines;
use super::table::{Cell, Table};
use crate::fleet::FleetNode;
use crate::nodes::NodesReport;

/// Writes `report` as `format` on stdout.
pub fn write(report: &NodesReport<'_>, format: OutputFormat) -> anyhow::Result<()> {
    match format {
        OutputFormat::Table => super::stdout(&table(report)),
        OutputFormat::Json => super::stdout(&document(&NodesDocument {
            schema_version: SCHEMA_VERSION,
            command: "nodes",
            fleet: report.fleet.display().to_string(),
            nodes: report.nodes.iter().map(|node| node_doc(node)).collect(),
            discovery: discovery_docs(report),
        })?),
        OutputFormat::Jsonl => {
            let mut lines = Lines::default();
            for node in &report.nodes {
                lines.write(&NodeLine {
                    schema_version: SCHEMA_VERSION,
                    command: "nodes",
                    kind: "node",
                    node: node_doc(node),
                })?;
            }
            lines.write(&SummaryLine {
                schema_version: SCHEMA_VERSION,
                command: "nodes",
                kind: "summary",
                fleet: report.fleet.display().to_string(),
                nodes: report.nodes.len(),
                discovery: discovery_docs(report),
            })
        }
    }
}

/// The table, then one line per source: `3 nodes: 1 static, 2 from dns_srv:...`.
pub fn table(report: &NodesReport<'_>) -> String {
    let rows = (report.nodes.iter())
        .map(|node| {
            let labels: Vec<String> = (node.labels.iter())
                .map(|(key, value)| format!("{key}={value}"))
                .collect();
            vec![
                Cell::plain(&node.name),
                Cell::plain(node.target.label()),
                Cell::plain(node.target.server_name().to_str()),
                Cell::or_dash((!labels.is_empty()).then(|| labels.join(","))),
                Cell::plain(&*node.source),
            ]
        })
        .collect();
    let mut out = Table {
        headers: &["NODE", "ADDRESS", "SERVER-NAME", "LABELS", "SOURCE"],
        rows,
    }
    .render(false);
    let mut sources: BTreeMap<&str, usize> = BTreeMap::new();
    for node in &report.nodes {
        for source in node.source.split(',') {
            *sources.entry(source).or_default() += 1;
        }
    }
    let counts: Vec<String> = (sources.iter())
        .map(|(source, count)| format!("{count} from {source}"))
        .collect();
    let _ = writeln!(
        out,
        "\n{} node{}{}{}",
        report.nodes.len(),
        if report.nodes.len() == 1 { "" } else { "s" },
        if counts.is_empty() { "" } else { ": " },
        counts.join(", ")
    );
    for source in &report.discovery.sources {
        if !source.errors.is_empty() {
            let _ = writeln!(
                out,
                "{}: FAILED ({} problem{}, see stderr)",
                source.label,
                source.errors.len(),
                if source.errors.len() == 1 { "" } else { "s" }
            );
        }
    }
    out
}

#[derive(Debug, Serialize)]
struct NodesDocument<'a> {
    schema_version: u32,
    command: &'static str,
    fleet: String,
    nodes: Vec<NodeDoc<'a>>,
    discovery: Vec<SourceDoc<'a>>,
}

#[derive(Debug, Serialize)]
struct NodeDoc<'a> {
    name: &'a str,
    address: &'a str,
    server_name: String,
    labels: &'a BTreeMap<String, String>,
    source: &'a str,
}

#[derive(Debug, Serialize)]
struct SourceDoc<'a> {
    source: &'a str,
    ok: bool,
    found: usize,
    errors: &'a [String],
}

#[derive(Debug, Serialize)]
struct NodeLine<'a> {
    schema_version: u32,
    command: &'static str,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    node: NodeDoc<'a>,
}

#[derive(Debug, Serialize)]
struct SummaryLine<'a> {
    schema_version: u32,
    command: &'static str,
    #[serde(rename = "type")]
    kind: &'static str,
    fleet: String,
    nodes: usize,
    discovery: Vec<SourceDoc<'a>>,
}

fn node_doc(node: &FleetNode) -> NodeDoc<'_> {
    NodeDoc {
        name: &node.name,
        address: node.target.label(),
        server_name: node.target.server_name().to_str().into_owned(),
        labels: &node.labels,
        source: &node.source,
    }
}

fn discovery_docs<'a>(report: &NodesReport<'a>) -> Vec<SourceDoc<'a>> {
    (report.discovery.sources.iter())
        .map(|source| SourceDoc {
            source: &source.label,
            ok: source.errors.is_empty(),
            found: source.found,
            errors: &source.errors,
        })
        .collect()
}
