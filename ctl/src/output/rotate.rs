//! `certs rotate` output: the table `NODE OLD-SERIAL NEW-SERIAL NOT-AFTER
//! RESULT ERROR` and a summary line, or one JSON document; `certs
//! rotate-ca`: `NODE BEFORE AFTER DONE OLD-SERIAL NEW-SERIAL RESULT ERROR`,
//! the phases before and after the run and the steps done.
//!
//! NOT-AFTER is that of the certificate the node serves after the run (the
//! new one once rotated). A dry run's RESULT says where the node comes in
//! the run: `would rotate (canary)`, `would rotate (batch 2)`. The ERROR
//! cell holds the error, or why a node is skipped.

use std::fmt::Write as _;
use std::path::Path;

use dice_proto::cert::rfc3339;
use serde::Serialize;

use super::json::{self, RunDoc};
use super::table::{Cell, Paint, Table};
use super::{colour_stdout, stdout};
use crate::args::OutputFormat;
use crate::certs::rotate::args::Phase;
use crate::certs::rotate::observe::CertId;
use crate::certs::rotate::report::{RotateReport, RotateResult, RotateRow};
use crate::certs::rotate::rollover::{CaReport, CaResult, CaRow};

/// Writes a `certs rotate` report as `format`.
pub fn rotate(report: &RotateReport, format: OutputFormat) -> anyhow::Result<()> {
    stdout(&match format {
        OutputFormat::Table => table(report, colour_stdout()),
        OutputFormat::Json => document(report)?,
        OutputFormat::Jsonl => super::jsonl::one_line(&document(report)?),
    })
}

/// The certificate a row's node serves after the run.
fn served_after(row: &RotateRow) -> Option<&CertId> {
    match row.rotation.result {
        RotateResult::Rotated => row.rotation.new.as_ref(),
        _ => row.rotation.old.as_ref(),
    }
}

fn result_cell(row: &RotateRow) -> Cell {
    let result = row.rotation.result;
    let text = match result {
        RotateResult::WouldRotate | RotateResult::WouldSkip => {
            format!("{} ({})", result.as_str(), row.stage)
        }
        _ => result.as_str().to_owned(),
    };
    match result {
        RotateResult::Rotated => Cell::painted(text, Paint::Green),
        RotateResult::Failed | RotateResult::RolledBack => Cell::painted(text, Paint::Red),
        RotateResult::NotRun => Cell::painted(text, Paint::Yellow),
        _ => Cell::plain(text),
    }
}

/// The table and its summary.
pub fn table(report: &RotateReport, colour: bool) -> String {
    let rows = report
        .rows
        .iter()
        .map(|row| {
            let rotation = &row.rotation;
            vec![
                Cell::plain(&row.name),
                Cell::or_dash(rotation.old.as_ref().map(|id| id.serial.clone())),
                Cell::or_dash(rotation.new.as_ref().map(|id| id.serial.clone())),
                Cell::or_dash(served_after(row).map(|id| rfc3339(id.not_after))),
                result_cell(row),
                match (&rotation.error, &rotation.note) {
                    (Some(error), _) => Cell::painted(error.clone(), Paint::Red),
                    (None, Some(note)) => Cell::plain(note.clone()),
                    (None, None) => Cell::plain(""),
                },
            ]
        })
        .collect();
    let mut out = Table {
        headers: &[
            "NODE",
            "OLD-SERIAL",
            "NEW-SERIAL",
            "NOT-AFTER",
            "RESULT",
            "ERROR",
        ],
        rows,
    }
    .render(colour);
    let _ = writeln!(out, "\n{}", summary(report));
    out
}

/// `rotated 7/8, skipped 0, failed 1, rolled back 0, not run 0; audit log DIR/audit.jsonl`.
pub fn summary(report: &RotateReport) -> String {
    let total = report.rows.len();
    if report.dry_run {
        return format!(
            "dry run: {} of {total} would rotate, {} would skip, {} failed; nothing was changed",
            report.count(RotateResult::WouldRotate),
            report.count(RotateResult::WouldSkip),
            report.count(RotateResult::Failed),
        );
    }
    let mut text = format!(
        "rotated {}/{total}, skipped {}, failed {}, rolled back {}, not run {}",
        report.count(RotateResult::Rotated),
        report.count(RotateResult::Skipped),
        report.count(RotateResult::Failed),
        report.count(RotateResult::RolledBack),
        report.count(RotateResult::NotRun),
    );
    text.push_str(&audit_note(report.audit.as_deref()));
    text
}

/// `; audit log DIR/audit.jsonl`, when a log was written.
fn audit_note(audit: Option<&Path>) -> String {
    audit.map_or_else(String::new, |audit| {
        format!("; audit log {}", audit.display())
    })
}

#[derive(Debug, Serialize)]
struct RotateDocument<'a> {
    #[serde(flatten)]
    run: RunDoc,
    dry_run: bool,
    ca_dir: String,
    audit_log: Option<String>,
    days: u32,
    canary: usize,
    batch: String,
    batch_nodes: usize,
    max_failed: usize,
    nodes: Vec<NodeDoc<'a>>,
    summary: SummaryDoc,
}

#[derive(Debug, Serialize)]
struct NodeDoc<'a> {
    name: &'a str,
    address: &'a str,
    stage: String,
    old_serial: Option<&'a str>,
    new_serial: Option<&'a str>,
    old_sha256: Option<&'a str>,
    new_sha256: Option<&'a str>,
    not_after: Option<String>,
    result: &'static str,
    error: Option<&'a str>,
    note: Option<&'a str>,
}

#[derive(Debug, Serialize)]
struct SummaryDoc {
    nodes: usize,
    ok: usize,
    rotated: usize,
    skipped: usize,
    failed: usize,
    rolled_back: usize,
    not_run: usize,
    would_rotate: usize,
    would_skip: usize,
}

/// The JSON document, ending in a newline.
pub fn document(report: &RotateReport) -> anyhow::Result<String> {
    let nodes = report.rows.iter().map(node_doc).collect();
    json::document(&RotateDocument {
        run: RunDoc::new("certs rotate", &report.run),
        dry_run: report.dry_run,
        ca_dir: report.ca_dir.display().to_string(),
        audit_log: report.audit.as_ref().map(|path| path.display().to_string()),
        days: report.days,
        canary: report.canary,
        batch: report.batch.0.to_string(),
        batch_nodes: report.batch.1,
        max_failed: report.max_failed,
        nodes,
        summary: SummaryDoc {
            nodes: report.rows.len(),
            ok: report.ok(),
            rotated: report.count(RotateResult::Rotated),
            skipped: report.count(RotateResult::Skipped),
            failed: report.count(RotateResult::Failed),
            rolled_back: report.count(RotateResult::RolledBack),
            not_run: report.count(RotateResult::NotRun),
            would_rotate: report.count(RotateResult::WouldRotate),
            would_skip: report.count(RotateResult::WouldSkip),
        },
    })
}

fn node_doc(row: &RotateRow) -> NodeDoc<'_> {
    let rotation = &row.rotation;
    NodeDoc {
        name: &row.name,
        address: &row.address,
        stage: row.stage.to_string(),
        old_serial: rotation.old.as_ref().map(|id| id.serial.as_str()),
        new_serial: rotation.new.as_ref().map(|id| id.serial.as_str()),
        old_sha256: rotation.old.as_ref().map(|id| id.sha256.as_str()),
        new_sha256: rotation.new.as_ref().map(|id| id.sha256.as_str()),
        not_after: served_after(row).map(|id| rfc3339(id.not_after)),
        result: rotation.result.as_str(),
        error: rotation.error.as_deref(),
        note: rotation.note.as_deref(),
    }
}

// === certs rotate-ca ===

/// Writes a `certs rotate-ca` report as `format`.
pub fn rotate_ca(report: &CaReport, format: OutputFormat) -> anyhow::Result<()> {
    stdout(&match format {
        OutputFormat::Table => ca_table(report, colour_stdout()),
        OutputFormat::Json => ca_document(report)?,
        OutputFormat::Jsonl => super::jsonl::one_line(&ca_document(report)?),
    })
}

/// The RESULT cell; a dry run names the steps that would run (those of `--phase` only, if given).
fn ca_result(row: &CaRow, phase: Option<Phase>) -> String {
    let Some(needs) = row.before.filter(|_| row.result == CaResult::WouldRun) else {
        return row.result.as_str().to_owned();
    };
    let steps: Vec<&str> = needs
        .steps()
        .into_iter()
        .filter(|step| phase.is_none_or(|phase| phase.as_str() == *step))
        .collect();
    if steps.is_empty() {
        "nothing to do".to_owned()
    } else {
        format!("would run {}", steps.join(", "))
    }
}

/// The `rotate-ca` table, its summary, and what is left when untrust was refused.
pub fn ca_table(report: &CaReport, colour: bool) -> String {
    let rows = report
        .rows
        .iter()
        .map(|row| {
            let paint = match row.result {
                CaResult::Ok => Some(Paint::Green),
                CaResult::Failed | CaResult::RolledBack => Some(Paint::Red),
                CaResult::NotRun | CaResult::Pending => Some(Paint::Yellow),
                CaResult::WouldRun => None,
            };
            let result = ca_result(row, report.phase);
            vec![
                Cell::plain(&row.name),
                Cell::or_dash(row.before.map(|needs| needs.phase().as_str())),
                Cell::or_dash(row.after.map(|needs| needs.phase().as_str())),
                Cell::or_dash((!row.done.is_empty()).then(|| row.done.join(","))),
                Cell::or_dash(row.old_serial.clone()),
                Cell::or_dash(row.new_serial.clone()),
                match paint {
                    Some(paint) => Cell::painted(result, paint),
                    None => Cell::plain(result),
                },
                Cell::error(row.error.clone()),
            ]
        })
        .collect();
    let mut out = Table {
        headers: &[
            "NODE",
            "BEFORE",
            "AFTER",
            "DONE",
            "OLD-SERIAL",
            "NEW-SERIAL",
            "RESULT",
            "ERROR",
        ],
        rows,
    }
    .render(colour);
    let _ = writeln!(out, "\n{}", ca_summary(report));
    if let Some(refusal) = &report.untrust_refused {
        let _ = writeln!(out, "untrust not run: {refusal}");
    }
    out
}

/// `phases after: done 3, reissued 1; failed 1, not run 0; audit log DIR/audit.jsonl`.
pub fn ca_summary(report: &CaReport) -> String {
    let phases: Vec<&str> = (report.rows.iter())
        .filter_map(|row| row.after.map(|needs| needs.phase().as_str()))
        .collect();
    let mut text = format!(
        "{}: {}; ok {}/{}, failed {}, rolled back {}, not run {}",
        if report.dry_run {
            "dry run, phases now"
        } else {
            "phases after"
        },
        if phases.is_empty() {
            "none read".to_owned()
        } else {
            super::table::counted(&phases)
        },
        report.count(CaResult::Ok) + report.count(CaResult::WouldRun),
        report.rows.len(),
        report.count(CaResult::Failed),
        report.count(CaResult::RolledBack),
        report.count(CaResult::NotRun),
    );
    if report.dry_run {
        text.push_str("; nothing was changed");
    }
    text.push_str(&audit_note(report.audit.as_deref()));
    text
}

#[derive(Debug, Serialize)]
struct CaDocument<'a> {
    #[serde(flatten)]
    run: RunDoc,
    dry_run: bool,
    ca_dir: String,
    new_ca_dir: String,
    phase: Option<&'static str>,
    audit_log: Option<String>,
    untrust_refused: Option<&'a str>,
    nodes: Vec<CaNodeDoc<'a>>,
    summary: CaSummaryDoc,
}

#[derive(Debug, Serialize)]
struct CaSummaryDoc {
    nodes: usize,
    ok: bool,
    failed: usize,
    rolled_back: usize,
    not_run: usize,
    untrust_left: usize,
    phases_after: std::collections::BTreeMap<&'static str, usize>,
}

#[derive(Debug, Serialize)]
struct CaNodeDoc<'a> {
    name: &'a str,
    address: &'a str,
    phase_before: Option<&'static str>,
    phase_after: Option<&'static str>,
    steps_left: Vec<&'static str>,
    done: &'a [&'static str],
    old_serial: Option<&'a str>,
    new_serial: Option<&'a str>,
    old_trust: Option<&'a [String]>,
    new_trust: Option<&'a [String]>,
    result: String,
    error: Option<&'a str>,
}

/// The `rotate-ca` JSON document, ending in a newline.
pub fn ca_document(report: &CaReport) -> anyhow::Result<String> {
    json::document(&CaDocument {
        run: RunDoc::new("certs rotate-ca", &report.run),
        dry_run: report.dry_run,
        ca_dir: report.ca_dir.display().to_string(),
        new_ca_dir: report.new_ca_dir.display().to_string(),
        phase: report.phase.map(|phase| phase.as_str()),
        audit_log: report.audit.as_ref().map(|path| path.display().to_string()),
        untrust_refused: report.untrust_refused.as_deref(),
        nodes: report
            .rows
            .iter()
            .map(|row| CaNodeDoc {
                name: &row.name,
                address: &row.address,
                phase_before: row.before.map(|needs| needs.phase().as_str()),
                phase_after: row.after.map(|needs| needs.phase().as_str()),
                steps_left: row.after.map(|needs| needs.steps()).unwrap_or_default(),
                done: &row.done,
                old_serial: row.old_serial.as_deref(),
                new_serial: row.new_serial.as_deref(),
                old_trust: row.old_trust.as_deref(),
                new_trust: row.new_trust.as_deref(),
                result: ca_result(row, report.phase),
                error: row.error.as_deref(),
            })
            .collect(),
        summary: ca_summary_doc(report),
    })
}

fn ca_summary_doc(report: &CaReport) -> CaSummaryDoc {
    let mut phases_after = std::collections::BTreeMap::new();
    for needs in report.rows.iter().filter_map(|row| row.after) {
        *phases_after.entry(needs.phase().as_str()).or_default() += 1;
    }
    CaSummaryDoc {
        nodes: report.rows.len(),
        ok: report.ok(),
        failed: report.count(CaResult::Failed),
        rolled_back: report.count(CaResult::RolledBack),
        not_run: report.count(CaResult::NotRun),
        untrust_left: report.count(CaResult::Pending),
        phases_after,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::certs::rotate::batches::{BatchSize, Stage};
    use crate::certs::rotate::report::Rotation;
    use crate::report::RunInfo;

    fn id(serial: &str, not_after: i64) -> CertId {
        CertId {
            serial: serial.to_owned(),
            sha256: format!("{serial}{serial}"),
            not_after,
        }
    }

    fn report() -> RotateReport {
        let row = |name: &str, stage, rotation| RotateRow {
            name: name.to_owned(),
            address: format!("{name}:8443"),
            stage,
            rotation,
        };
        RotateReport {
            run: RunInfo {
                started_at: 1_800_000_000,
                elapsed: Duration::from_millis(1500),
                timeout: Duration::from_secs(5),
                concurrency: 64,
            },
            dry_run: false,
            ca_dir: "ca".into(),
            audit: Some("ca/audit.jsonl".into()),
            days: 365,
            canary: 1,
            batch: (BatchSize::Percent(10), 1),
            max_failed: 0,
            rows: vec![
                row(
                    "node-1",
                    Stage::Canary,
                    Rotation {
                        old: Some(id("0a", 1_800_000_000)),
                        new: Some(id("0b", 1_900_000_000)),
                        result: RotateResult::Rotated,
                        error: None,
                        note: None,
                    },
                ),
                row(
                    "node-2",
                    Stage::Batch(1),
                    Rotation {
                        old: Some(id("0c", 1_800_000_000)),
                        new: Some(id("0d", 1_900_000_000)),
                        result: RotateResult::RolledBack,
                        error: Some("verify: boom; rolled back to serial 0c".to_owned()),
                        note: None,
                    },
                ),
                row("node-3", Stage::Batch(2), Rotation::not_run()),
            ],
        }
    }

    #[test]
    fn table_has_the_documented_columns() {
        let text = table(&report(), false);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            [
                "NODE",
                "OLD-SERIAL",
                "NEW-SERIAL",
                "NOT-AFTER",
                "RESULT",
                "ERROR"
            ]
        );
        assert!(lines[1].starts_with("node-1  0a"), "{text}");
        assert!(lines[1].contains("2030-03-17T17:46:40Z  rotated"), "{text}");
        assert!(
            lines[2].contains("rolled back  verify: boom; rolled back to serial 0c"),
            "{text}"
        );
        assert!(lines[3].contains("not run"), "{text}");
        assert_eq!(
            lines[5],
            "rotated 1/3, skipped 0, failed 0, rolled back 1, not run 1; audit log ca/audit.jsonl"
        );
    }

    #[test]
    fn dry_run_names_the_stage() {
        let mut report = report();
        report.dry_run = true;
        report.audit = None;
        report.rows[0].rotation = Rotation {
            new: None,
            result: RotateResult::WouldRotate,
            ..report.rows[0].rotation.clone()
        };
        let text = table(&report, false);
        assert!(text.contains("would rotate (canary)"), "{text}");
        assert!(
            text.ends_with(
                "dry run: 1 of 3 would rotate, 0 would skip, 0 failed; nothing was changed\n"
            ),
            "{text}"
        );
    }

    fn ca_report() -> CaReport {
        use crate::certs::rotate::phase::Needs;
        let needs = |trust, reissue, untrust| Needs {
            trust,
            reissue,
            untrust,
        };
        let row = |name: &str, before, after, done: Vec<&'static str>, result| CaRow {
            name: name.to_owned(),
            address: format!("{name}:8443"),
            before: Some(before),
            after: Some(after),
            done,
            old_serial: Some("0a".to_owned()),
            new_serial: None,
            old_trust: None,
            new_trust: None,
            result,
            error: None,
        };
        CaReport {
            run: report().run,
            dry_run: false,
            ca_dir: "old".into(),
            new_ca_dir: "new".into(),
            phase: None,
            audit: Some("old/audit.jsonl".into()),
            untrust_refused: Some("dicectl's client certificate does not verify".to_owned()),
            rows: vec![
                row(
                    "node-1",
                    needs(true, true, true),
                    needs(false, false, true),
                    vec!["trust", "reissue"],
                    CaResult::Pending,
                ),
                CaRow {
                    before: None,
                    after: None,
                    error: Some("connect: refused".to_owned()),
                    ..row(
                        "node-2",
                        needs(false, false, false),
                        needs(false, false, false),
                        vec![],
                        CaResult::Failed,
                    )
                },
            ],
        }
    }

    #[test]
    fn rotate_ca_table_and_json() {
        let report = ca_report();
        let text = ca_table(&report, false);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            [
                "NODE",
                "BEFORE",
                "AFTER",
                "DONE",
                "OLD-SERIAL",
                "NEW-SERIAL",
                "RESULT",
                "ERROR"
            ]
        );
        assert!(
            lines[1].starts_with("node-1  start   reissued  trust,reissue  0a"),
            "{text}"
        );
        assert!(lines[1].ends_with("untrust left"), "{text}");
        assert_eq!(
            lines[4],
            "phases after: 1 reissued; ok 0/2, failed 1, rolled back 0, not run 0; audit log old/audit.jsonl"
        );
        assert_eq!(
            lines[5],
            "untrust not run: dicectl's client certificate does not verify"
        );

        let value: serde_json::Value =
            serde_json::from_str(&ca_document(&report).expect("json")).expect("parse");
        assert_eq!(value["schema_version"], 1);
        assert_eq!(value["command"], "certs rotate-ca");
        assert_eq!(value["nodes"][0]["phase_before"], "start");
        assert_eq!(
            value["nodes"][0]["steps_left"],
            serde_json::json!(["untrust"])
        );
        assert_eq!(value["nodes"][1]["phase_after"], serde_json::Value::Null);
        assert_eq!(value["summary"]["untrust_left"], 1);
        assert_eq!(value["summary"]["ok"], false);
        assert_eq!(value["summary"]["phases_after"]["reissued"], 1);

        let mut dry = ca_report();
        dry.dry_run = true;
        dry.rows[0].result = CaResult::WouldRun;
        assert_eq!(
            ca_result(&dry.rows[0], None),
            "would run trust, reissue, untrust"
        );
        assert_eq!(
            ca_result(&dry.rows[0], Some(Phase::Reissue)),
            "would run reissue"
        );
        dry.rows[0].before = dry.rows[0].after;
        assert_eq!(ca_result(&dry.rows[0], Some(Phase::Trust)), "nothing to do");
    }

    #[test]
    fn json_document_shape() {
        let value: serde_json::Value =
            serde_json::from_str(&document(&report()).expect("json")).expect("parse");
        assert_eq!(value["schema_version"], 1);
        assert_eq!(value["command"], "certs rotate");
        assert_eq!(value["batch"], "10%");
        assert_eq!(value["audit_log"], "ca/audit.jsonl");
        let node = &value["nodes"][1];
        for key in [
            "name",
            "address",
            "old_serial",
            "new_serial",
            "old_sha256",
            "new_sha256",
            "not_after",
            "result",
            "error",
        ] {
            assert!(node.get(key).is_some(), "{key} missing: {node}");
        }
        assert_eq!(node["result"], "rolled back");
        assert_eq!(node["not_after"], "2027-01-15T08:00:00Z");
        assert_eq!(value["nodes"][2]["old_serial"], serde_json::Value::Null);
        assert_eq!(value["summary"]["rolled_back"], 1);
        assert_eq!(value["summary"]["ok"], 1);
    }
}
