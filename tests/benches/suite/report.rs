//! The suite's results as Markdown: the targets with their verdicts, then
//! every cell of the matrix. [`write_section`] puts them into BENCHMARKS.md
//! under `## Performance suite`, leaving every other section as it was.

use std::fmt::Write as _;
use std::path::Path;

/// The heading of the section the suite owns.
pub const HEADING: &str = "## Performance suite";

/// A row of the targets table.
#[derive(Debug, Clone)]
pub struct TargetRow {
    /// What is measured.
    pub what: String,
    /// The agent's value, formatted.
    pub agent: String,
    /// The reference's (or baseline's) value, formatted.
    pub reference: String,
    /// agent / reference, formatted.
    pub ratio: String,
    /// The target, in words.
    pub target: String,
    /// Whether it was met.
    pub met: bool,
}

/// A row of the matrix table.
#[derive(Debug, Clone)]
pub struct MatrixRow {
    /// `1x1`, `4x16`, `16x16`, `new conn`.
    pub shape: String,
    /// The server and transport.
    pub server: String,
    /// Median requests (or, for new connections, handshakes) per second.
    pub rate: f64,
    /// Lowest and highest over the runs.
    pub range: (f64, f64),
    /// Median p50 and p99, µs.
    pub p50: f64,
    /// Median p99, µs.
    pub p99: f64,
    /// Median of the per-run ratios to the reference, if this row has one.
    pub ratio: Option<f64>,
    /// Failed RPCs over all runs.
    pub errors: u64,
    /// Runs whose cell failed (left out of the medians).
    pub failed_runs: usize,
    /// Median server CPU per RPC, µs (behind nginx: the agent's alone).
    pub cpu_us: f64,
    /// Median of the per-run ratios of CPU per RPC to the reference's.
    pub cpu_ratio: Option<f64>,
}

/// `12,345`; `-` for no value (every run of the cell failed).
pub fn thousands(value: f64) -> String {
    if !value.is_finite() {
        return "-".to_owned();
    }
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `812 µs`, `1.25 ms`; `-` for no value.
pub fn micros(us: f64) -> String {
    if !us.is_finite() {
        "-".to_owned()
    } else if us < 1000.0 {
        format!("{us:.0} µs")
    } else {
        format!("{:.2} ms", us / 1000.0)
    }
}

/// The targets table.
pub fn targets_table(rows: &[TargetRow]) -> String {
    let mut out = String::from(
        "| measurement | agent | reference / baseline | ratio | target | met |\n|---|---|---|---|---|---|\n",
    );
    for row in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            row.what,
            row.agent,
            row.reference,
            row.ratio,
            row.target,
            if row.met { "yes" } else { "**no**" }
        );
    }
    out
}

/// `0.97`; `-` for none.
fn ratio(value: Option<f64>) -> String {
    value
        .filter(|r| r.is_finite())
        .map_or("-".to_owned(), |r| format!("{r:.2}"))
}

/// The matrix table.
pub fn matrix_table(rows: &[MatrixRow]) -> String {
    let mut out = String::from(
        "| shape | server | req/s median | min to max | p50 | p99 | vs reference | server CPU per RPC | vs reference | errors |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for row in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} to {} | {} | {} | {} | {} | {} | {} |",
            row.shape,
            row.server,
            thousands(row.rate),
            thousands(row.range.0),
            thousands(row.range.1),
            micros(row.p50),
            micros(row.p99),
            ratio(row.ratio),
            if row.cpu_us.is_finite() {
                format!("{:.0} µs", row.cpu_us)
            } else {
                "-".to_owned()
            },
            ratio(row.cpu_ratio),
            match row.failed_runs {
                0 => row.errors.to_string(),
                failed => format!("**{} ({failed} failed runs)**", row.errors),
            }
        );
    }
    out
}

/// Replaces the `## Performance suite` section of `path` with `section`
/// (which starts with the heading), or appends it when there is none.
pub fn write_section(path: &Path, section: &str) -> std::io::Result<()> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.iter().position(|line| line.trim_end() == HEADING);
    let mut out = String::new();
    match start {
        Some(start) => {
            let end = lines[start + 1..]
                .iter()
                .position(|line| line.starts_with("## "))
                .map_or(lines.len(), |offset| start + 1 + offset);
            for line in &lines[..start] {
                out.push_str(line);
                out.push('\n');
            }
            out.push_str(section.trim_end());
            out.push('\n');
            if end < lines.len() {
                out.push('\n');
                for line in &lines[end..] {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        None => {
            out.push_str(text.trim_end());
            out.push_str("\n\n");
            out.push_str(section.trim_end());
            out.push('\n');
        }
    }
    std::fs::write(path, out)
}
