//! The table output: fixed columns, a row per node sorted by name, then a
//! summary line. Colour (only when asked, i.e. on a terminal) marks status,
//! errors and expiring certificates; it never changes the text or alignment.
//!
//! `roll`:   `NODE ADDRESS VALUE LATENCY ERROR`
//! `health`: `NODE ADDRESS STATUS LATENCY TLS SUBJECT NOT-AFTER DAYS AGENT RELOAD ERROR`
//!
//! Empty values are `-`; an empty ERROR cell is left blank. Latencies are
//! whole milliseconds (`3ms`). The ERROR cell is `KIND: REASON`; `-v` adds
//! the hint and causes on stderr.

use std::fmt::Write as _;
use std::time::Duration;

use dice_proto::cert::rfc3339;

use crate::report::{Failure, HealthReport, HealthStatus, RollReport, describe_duration};

/// A colour for a cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Paint {
    Green,
    Yellow,
    Red,
}

impl Paint {
    fn code(self) -> &'static str {
        match self {
            Self::Green => "\x1b[32m",
            Self::Yellow => "\x1b[33m",
            Self::Red => "\x1b[31m",
        }
    }
}

const RESET: &str = "\x1b[0m";

/// One cell: its text and, maybe, its colour.
#[derive(Debug, Clone)]
pub(super) struct Cell {
    text: String,
    paint: Option<Paint>,
}

impl Cell {
    pub(super) fn plain(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            paint: None,
        }
    }

    pub(super) fn painted(text: impl Into<String>, paint: Paint) -> Self {
        Self {
            text: text.into(),
            paint: Some(paint),
        }
    }

    pub(super) fn or_dash(text: Option<impl Into<String>>) -> Self {
        Self::plain(text.map_or_else(|| "-".to_owned(), Into::into))
    }

    /// An ERROR cell: the error in red, or blank.
    pub(super) fn error(error: Option<impl Into<String>>) -> Self {
        match error {
            Some(error) => Self::painted(error, Paint::Red),
            None => Self::plain(""),
        }
    }
}

/// Columns aligned on the widest cell, two spaces apart, no trailing blanks.
pub(super) struct Table {
    pub(super) headers: &'static [&'static str],
    pub(super) rows: Vec<Vec<Cell>>,
}

impl Table {
    pub(super) fn render(&self, colour: bool) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.text.chars().count());
            }
        }
        let mut out = String::new();
        let header: Vec<Cell> = self.headers.iter().map(|h| Cell::plain(*h)).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                match cell.paint.filter(|_| colour && !cell.text.is_empty()) {
                    Some(paint) => {
                        let _ = write!(line, "{}{}{RESET}", paint.code(), cell.text);
                    }
                    None => line.push_str(&cell.text),
                }
                let pad = width.saturating_sub(cell.text.chars().count());
                line.extend(std::iter::repeat_n(' ', pad));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Whole milliseconds: `3ms`.
pub fn millis(duration: Duration) -> String {
    format!("{}ms", duration.as_millis())
}

fn latency_summary(latency: Option<(Duration, Duration)>) -> String {
    match latency {
        Some((p50, max)) => format!("; latency p50 {}, max {}", millis(p50), millis(max)),
        None => String::new(),
    }
}

/// The `roll` table and its summary: `ok 3/4 (failed: 1 timeout); latency p50 3ms, max 12ms`.
pub fn roll(report: &RollReport, colour: bool) -> String {
    let rows = report
        .rows
        .iter()
        .map(|row| {
            let values: Vec<String> = row.values.iter().map(ToString::to_string).collect();
            vec![
                Cell::plain(&row.name),
                Cell::plain(&row.address),
                Cell::or_dash((!values.is_empty()).then(|| values.join(","))),
                Cell::plain(millis(row.latency)),
                Cell::error(row.failure.as_ref().map(Failure::short)),
            ]
        })
        .collect();
    let table = Table {
        headers: &["NODE", "ADDRESS", "VALUE", "LATENCY", "ERROR"],
        rows,
    };
    let mut out = table.render(colour);

    let total = report.rows.len();
    let ok = report.ok();
    let kinds: Vec<&str> = (report.rows.iter())
        .filter_map(|row| row.failure.as_ref().map(|f| f.kind.as_str()))
        .collect();
    let failed = if kinds.is_empty() {
        String::new()
    } else {
        format!(" (failed: {})", counted(&kinds))
    };
    let _ = writeln!(
        out,
        "\nok {ok}/{total}{failed}{}",
        latency_summary(report.latency())
    );
    out
}

/// `["b", "a", "b"]` as `1 a, 2 b`: how many of each, in sorted order.
pub(super) fn counted(items: &[&str]) -> String {
    let mut sorted = items.to_vec();
    sorted.sort_unstable();
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let run = sorted[i..].iter().take_while(|s| **s == sorted[i]).count();
        parts.push(format!("{run} {}", sorted[i]));
        i += run;
    }
    parts.join(", ")
}

/// The `health` table, the renewals of agents that are ACME clients, its
/// warnings, and a summary:
/// `ok 1/4; serving 2, timeout 1, unreachable 1; 1 certificate expires within 14 days; latency ...`.
pub fn health(report: &HealthReport, colour: bool) -> String {
    let rows = report
        .rows
        .iter()
        .map(|row| {
            let status = match row.status {
                HealthStatus::Serving => Cell::painted(row.status.as_str(), Paint::Green),
                other => Cell::painted(other.as_str(), Paint::Red),
            };
            let cert = row.certificate.as_ref();
            let days = match cert {
                Some(cert) if cert.expiring => {
                    Cell::painted(cert.days_left.to_string(), Paint::Yellow)
                }
                Some(cert) => Cell::plain(cert.days_left.to_string()),
                None => Cell::plain("-"),
            };
            let reload = match row.agent.as_ref().and_then(|a| a.last_reload.as_ref()) {
                Some(reload) if reload.ok => Cell::plain("ok"),
                Some(_) => Cell::painted("failed", Paint::Yellow),
                None => Cell::plain("-"),
            };
            vec![
                Cell::plain(&row.name),
                Cell::plain(&row.address),
                status,
                Cell::plain(millis(row.latency)),
                Cell::or_dash(
                    row.tls_version
                        .map(|version| version.trim_start_matches("TLSv")),
                ),
                Cell::or_dash(cert.map(|cert| cert.summary.subject.as_str())),
                Cell::or_dash(cert.map(|cert| {
                    let mut date = rfc3339(cert.summary.not_after);
                    date.truncate(10);
                    date
                })),
                days,
                Cell::or_dash(row.agent.as_ref().map(|agent| agent.version.as_str())),
                reload,
                Cell::error(row.failure.as_ref().map(Failure::short)),
            ]
        })
        .collect();
    let table = Table {
        headers: &[
            "NODE",
            "ADDRESS",
            "STATUS",
            "LATENCY",
            "TLS",
            "SUBJECT",
            "NOT-AFTER",
            "DAYS",
            "AGENT",
            "RELOAD",
            "ERROR",
        ],
        rows,
    };
    let mut out = table.render(colour);

    let renewals: Vec<String> = (report.rows.iter())
        .filter_map(|row| {
            let acme = row.agent.as_ref()?.acme.as_ref()?;
            Some(format!(
                "  {}: next attempt {}, last certificate {} ({})",
                row.name,
                acme.next_attempt,
                acme.last_success.as_deref().unwrap_or("never"),
                acme.directory
            ))
        })
        .collect();
    if !renewals.is_empty() {
        out.push_str("\nacme:\n");
        for renewal in renewals {
            out.push_str(&renewal);
            out.push('\n');
        }
    }

    let warnings: Vec<String> = (report.rows.iter())
        .flat_map(|row| {
            (row.warnings.iter()).map(move |warning| format!("  {}: {}", row.name, warning.message))
        })
        .collect();
    if !warnings.is_empty() {
        out.push_str("\nwarnings:\n");
        for warning in warnings {
            out.push_str(&warning);
            out.push('\n');
        }
    }

    let statuses: Vec<String> = [
        HealthStatus::Serving,
        HealthStatus::NotServing,
        HealthStatus::Unreachable,
        HealthStatus::TlsError,
        HealthStatus::Timeout,
    ]
    .into_iter()
    .filter_map(|status| {
        let count = report.count(status);
        let name = status.as_str().to_lowercase().replace('_', " ");
        (count > 0).then(|| format!("{name} {count}"))
    })
    .collect();
    let expiring = match report.expiring() {
        0 => String::new(),
        1 => format!(
            "; 1 certificate expires within {}",
            describe_duration(report.expiry_warning)
        ),
        n => format!(
            "; {n} certificates expire within {}",
            describe_duration(report.expiry_warning)
        ),
    };
    let _ = writeln!(
        out,
        "\nok {}/{}; {}{expiring}{}",
        report.ok(),
        report.rows.len(),
        statuses.join(", "),
        latency_summary(report.latency())
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::NodeErrorKind;
    use crate::report::{Failure, FailureKind, RollRow, RunInfo};

    fn run() -> RunInfo {
        RunInfo {
            started_at: 0,
            elapsed: Duration::from_millis(1001),
            timeout: Duration::from_secs(1),
            concurrency: 64,
        }
    }

    fn rolls() -> RollReport {
        let row = |name: &str, values: &[i32], ms, failure: Option<FailureKind>| RollRow {
            name: name.into(),
            address: format!("127.0.0.1:{}", name.len()),
            values: values.to_vec(),
            latency: Duration::from_millis(ms),
            failure: failure.map(|kind| Failure {
                kind,
                message: "it broke".into(),
                hint: "fix it".into(),
                causes: Vec::new(),
            }),
        };
        RollReport {
            run: run(),
            count: 2,
            rows: vec![
                row("a", &[1, 6], 3, None),
                row(
                    "bb",
                    &[],
                    1000,
                    Some(FailureKind::Node(NodeErrorKind::Timeout)),
                ),
                row("ccc", &[2], 12, Some(FailureKind::Node(NodeErrorKind::Rpc))),
                row("dddd", &[5, 5], 4, None),
            ],
        }
    }

    #[test]
    fn roll_table_aligns_and_summarizes() {
        let expected = "\
NODE  ADDRESS      VALUE  LATENCY  ERROR
a     127.0.0.1:1  1,6    3ms
bb    127.0.0.1:2  -      1000ms   timeout: it broke
ccc   127.0.0.1:3  2      12ms     rpc: it broke
dddd  127.0.0.1:4  5,5    4ms

ok 2/4 (failed: 1 rpc, 1 timeout); latency p50 3ms, max 4ms
";
        assert_eq!(roll(&rolls(), false), expected);
    }

    #[test]
    fn colour_wraps_cells_without_moving_columns() {
        let plain = roll(&rolls(), false);
        let coloured = roll(&rolls(), true);
        assert!(
            coloured.contains("\x1b[31mtimeout: it broke\x1b[0m"),
            "{coloured}"
        );
        let stripped = coloured.replace("\x1b[31m", "").replace(RESET, "");
        assert_eq!(stripped, plain);
    }

    #[test]
    fn counts_runs() {
        assert_eq!(counted(&["a", "a", "b"]), "2 a, 1 b");
        assert_eq!(counted(&[]), "");
    }
}
