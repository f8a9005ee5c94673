//! `certs status` output: the table `NODE SUBJECT SERIAL ISSUER NOT-AFTER
//! DAYS TRUSTED STAGED PHASE TRUST ERROR` and a summary, or one JSON
//! document. TRUSTED lists the first 12 hex digits of each trusted CA's
//! SHA-256; TRUST reads `differs` for a node whose trusted set is not the
//! majority's.

use std::fmt::Write as _;

use dice_proto::cert::rfc3339;
use serde::Serialize;

use super::json::{self, RunDoc};
use super::table::{Cell, Paint, Table, counted};
use super::{colour_stdout, stdout};
use crate::args::OutputFormat;
use crate::certs::rotate::node::short;
use crate::certs::rotate::status::{StatusReport, StatusRow};

/// Writes a `certs status` report as `format`.
pub fn status(report: &StatusReport, format: OutputFormat) -> anyhow::Result<()> {
    stdout(&match format {
        OutputFormat::Table => table(report, colour_stdout()),
        OutputFormat::Json => document(report)?,
        OutputFormat::Jsonl => super::jsonl::one_line(&document(report)?),
    })
}

fn short_list(row: &StatusRow) -> Option<String> {
    (!row.trusted.is_empty()).then(|| {
        row.trusted
            .iter()
            .map(|ca| short(&ca.sha256))
            .collect::<Vec<_>>()
            .join(",")
    })
}

/// The table and its summary.
pub fn table(report: &StatusReport, colour: bool) -> String {
    let rows = report
        .rows
        .iter()
        .map(|row| {
            let cert = row.cert.as_ref().map(|(summary, _)| summary);
            vec![
                Cell::plain(&row.name),
                Cell::or_dash(cert.map(|c| c.subject.clone())),
                Cell::or_dash(cert.map(|c| c.serial.clone())),
                Cell::or_dash(cert.map(|c| c.issuer.clone())),
                Cell::or_dash(cert.map(|c| rfc3339(c.not_after))),
                Cell::or_dash(cert.map(|c| c.days_left(report.now).to_string())),
                Cell::or_dash(short_list(row)),
                Cell::or_dash(
                    row.key_staged
                        .map(|staged| if staged { "yes" } else { "no" }),
                ),
                Cell::or_dash(row.phase),
                if row.trust_differs {
                    Cell::painted("differs", Paint::Yellow)
                } else {
                    Cell::plain("")
                },
                Cell::error(row.error.clone()),
            ]
        })
        .collect();
    let mut out = Table {
        headers: &[
            "NODE",
            "SUBJECT",
            "SERIAL",
            "ISSUER",
            "NOT-AFTER",
            "DAYS",
            "TRUSTED",
            "STAGED",
            "PHASE",
            "TRUST",
            "ERROR",
        ],
        rows,
    }
    .render(colour);
    let _ = writeln!(out, "\n{}", summary(report));
    out
}

/// `read 4/5; phases: 3 done, 1 reissued; 1 node trusts other CAs than the majority: node-3`.
pub fn summary(report: &StatusReport) -> String {
    let phases: Vec<&str> = report.rows.iter().filter_map(|row| row.phase).collect();
    let mut text = format!("read {}/{}", report.reachable(), report.rows.len());
    if !phases.is_empty() {
        let _ = write!(text, "; phases: {}", counted(&phases));
    }
    let differs: Vec<&str> = (report.rows.iter())
        .filter(|row| row.trust_differs)
        .map(|row| row.name.as_str())
        .collect();
    if !differs.is_empty() {
        let _ = write!(
            text,
            "; {} node{} trust{} other CAs than the majority: {}",
            differs.len(),
            if differs.len() == 1 { "" } else { "s" },
            if differs.len() == 1 { "s" } else { "" },
            differs.join(", ")
        );
    }
    text
}

#[derive(Debug, Serialize)]
struct StatusDocument<'a> {
    #[serde(flatten)]
    run: RunDoc,
    majority_trust: &'a [String],
    nodes: Vec<NodeDoc<'a>>,
    summary: SummaryDoc<'a>,
}

#[derive(Debug, Serialize)]
struct TrustedDoc<'a> {
    subject: &'a str,
    sha256: &'a str,
    not_after: &'a str,
}

#[derive(Debug, Serialize)]
struct NodeDoc<'a> {
    name: &'a str,
    address: &'a str,
    subject: Option<&'a str>,
    serial: Option<&'a str>,
    issuer: Option<&'a str>,
    sha256: Option<&'a str>,
    not_after: Option<String>,
    days_left: Option<i64>,
    trusted: Vec<TrustedDoc<'a>>,
    key_staged: Option<bool>,
    phase: Option<&'static str>,
    trust_differs: bool,
    error: Option<&'a str>,
}

#[derive(Debug, Serialize)]
struct SummaryDoc<'a> {
    nodes: usize,
    reachable: usize,
    unreachable: usize,
    trust_differs: Vec<&'a str>,
}

/// The JSON document, ending in a newline.
pub fn document(report: &StatusReport) -> anyhow::Result<String> {
    let nodes = report
        .rows
        .iter()
        .map(|row| {
            let cert = row.cert.as_ref();
            NodeDoc {
                name: &row.name,
                address: &row.address,
                subject: cert.map(|(c, _)| c.subject.as_str()),
                serial: cert.map(|(c, _)| c.serial.as_str()),
                issuer: cert.map(|(c, _)| c.issuer.as_str()),
                sha256: cert.map(|(_, sha)| sha.as_str()),
                not_after: cert.map(|(c, _)| rfc3339(c.not_after)),
                days_left: cert.map(|(c, _)| c.days_left(report.now)),
                trusted: (row.trusted.iter())
                    .map(|ca| TrustedDoc {
                        subject: &ca.subject,
                        sha256: &ca.sha256,
                        not_after: &ca.not_after,
                    })
                    .collect(),
                key_staged: row.key_staged,
                phase: row.phase,
                trust_differs: row.trust_differs,
                error: row.error.as_deref(),
            }
        })
        .collect();
    json::document(&StatusDocument {
        run: RunDoc::new("certs status", &report.run),
        majority_trust: &report.majority,
        nodes,
        summary: SummaryDoc {
            nodes: report.rows.len(),
            reachable: report.reachable(),
            unreachable: report.rows.len() - report.reachable(),
            trust_differs: (report.rows.iter())
                .filter(|row| row.trust_differs)
                .map(|row| row.name.as_str())
                .collect(),
        },
    })
}
