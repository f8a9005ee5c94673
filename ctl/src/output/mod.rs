//! Where results go: the table or the JSON document on stdout, diagnostics
//! (`-v` details, the ad-hoc roll's failure line) on stderr.
//!
//! - [`table`]: aligned columns, colour only on a terminal.
//! - [`json`]: the documented JSON schema; [`jsonl`]: the same as JSON lines,
//!   streamed as nodes finish.
//! - [`nodes`]: `dicectl nodes`, the resolved fleet.
//! - [`rotate`]: `certs rotate` and `certs rotate-ca`; [`status`]: `certs status`.

pub mod json;
pub mod jsonl;
pub mod nodes;
pub mod rotate;
pub mod status;
pub mod table;

use std::io::{self, IsTerminal as _, Write};

use anyhow::Context as _;

use crate::args::OutputFormat;
use crate::plan::Plan;
use crate::report::{Failure, HealthReport, HealthRow, RollReport, RollRow};

/// Writes `text` to stdout. A closed pipe (`dicectl roll ... | head -1`) is not
/// an error: whoever reads has all they wanted.
pub fn stdout(text: &str) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(error) if error.kind() != io::ErrorKind::BrokenPipe => {
            Err(error).context("cannot write to stdout")
        }
        _ => Ok(()),
    }
}

/// Writes lines to stderr, each prefixed `dicectl: `.
fn stderr_lines(lines: &[String]) {
    let mut err = io::stderr().lock();
    for line in lines {
        // Nothing useful is left to do if stderr itself is gone.
        let _ = writeln!(err, "dicectl: {line}");
    }
}

/// Writes warnings on stderr, one per line, each prefixed `dicectl: `.
pub fn warnings(lines: &[String]) {
    stderr_lines(lines);
}

/// Whether to colour stdout: only on a terminal, and never with `NO_COLOR`
/// set or `TERM=dumb` (<https://no-color.org>).
pub fn colour_stdout() -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
    let dumb = std::env::var_os("TERM").is_some_and(|term| term == "dumb");
    io::stdout().is_terminal() && !no_color && !dumb
}

/// With `-v`, says on stderr what is about to run.
pub fn plan_details(plan: &Plan, verbose: bool) {
    if !verbose {
        return;
    }
    let source = match &plan.fleet {
        Some(file) => format!(" from {}", file.display()),
        None => String::new(),
    };
    stderr_lines(&[format!(
        "{} node{}{source}, {} at a time, timeout {} per node",
        plan.nodes.len(),
        if plan.nodes.len() == 1 { "" } else { "s" },
        plan.concurrency,
        humantime::format_duration(plan.timeout)
    )]);
}

/// The stderr lines for a failed node: `node NAME: KIND: REASON (HINT)`,
/// then, with `verbose`, one line per cause.
fn failure_lines(name: &str, address: &str, failure: &Failure, verbose: bool) -> Vec<String> {
    let node = if name == address {
        name.to_owned()
    } else {
        format!("{name} ({address})")
    };
    let mut lines = vec![format!("node {node}: {failure}")];
    if verbose {
        lines.extend(
            failure
                .causes
                .iter()
                .map(|cause| format!("  caused by: {cause}")),
        );
    }
    lines
}

/// Writes each failed node's [`failure_lines`] on stderr; `rows` are
/// (name, address, failure) as [`RollRow::failed`] gives them.
pub fn failures_to_stderr<'a>(
    rows: impl Iterator<Item = (&'a str, &'a str, Option<&'a Failure>)>,
    verbose: bool,
) {
    for (name, address, failure) in rows {
        if let Some(failure) = failure {
            stderr_lines(&failure_lines(name, address, failure, verbose));
        }
    }
}

/// The first slice's scripting form of `roll`: each value on its own line on
/// stdout; a failure as one line on stderr (`dicectl: node ADDR: KIND: ...`).
pub fn roll_terse(report: &RollReport, verbose: bool) -> anyhow::Result<()> {
    let mut text = String::new();
    for row in &report.rows {
        for value in &row.values {
            text.push_str(&format!("{value}\n"));
        }
    }
    stdout(&text)?;
    failures_to_stderr(report.rows.iter().map(RollRow::failed), verbose);
    Ok(())
}

/// Writes a `roll` report as `format`; with `verbose`, every failure in full on stderr.
pub fn roll(report: &RollReport, format: OutputFormat, verbose: bool) -> anyhow::Result<()> {
    stdout(&match format {
        OutputFormat::Table => table::roll(report, colour_stdout()),
        OutputFormat::Json => json::roll(report)?,
        OutputFormat::Jsonl => jsonl::one_line(&json::roll(report)?),
    })?;
    if verbose {
        failures_to_stderr(report.rows.iter().map(RollRow::failed), true);
    }
    Ok(())
}

/// Writes a `health` report as `format`; with `verbose`, every failure in full on stderr.
pub fn health(report: &HealthReport, format: OutputFormat, verbose: bool) -> anyhow::Result<()> {
    stdout(&match format {
        OutputFormat::Table => table::health(report, colour_stdout()),
        OutputFormat::Json => json::health(report)?,
        OutputFormat::Jsonl => jsonl::one_line(&json::health(report)?),
    })?;
    if verbose {
        failures_to_stderr(report.rows.iter().map(HealthRow::failed), true);
    }
    Ok(())
}
