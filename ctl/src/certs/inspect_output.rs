//! `certs inspect` output: aligned text, or one JSON document
//! (`--output json`, schema in the README). Never any key material.

use std::fmt::Write as _;

use dice_proto::cert::rfc3339;
use serde::Serialize;

use super::inspect::{CertDetails, FileReport, InspectReport};
use crate::output::json::CertSummaryDoc;

/// The JSON document's schema version; bumped when a key is renamed or removed.
pub const SCHEMA_VERSION: u32 = 1;

/// The report as text: per file a status line, each certificate, the key and chain checks, the problems.
pub fn text(report: &InspectReport) -> String {
    let mut out = String::new();
    for (index, file) in report.files.iter().enumerate() {
        if index > 0 {
            out.push('\n');
        }
        file_text(&mut out, file);
    }
    if report.files.len() > 1 {
        let failed = report.files.iter().filter(|f| !f.ok()).count();
        let _ = writeln!(
            out,
            "\n{} files: {} ok, {failed} failed",
            report.files.len(),
            report.files.len() - failed
        );
    }
    out
}

fn file_text(out: &mut String, file: &FileReport) {
    let status = if file.ok() {
        "ok".to_owned()
    } else {
        format!(
            "FAILED ({} problem{})",
            file.problems.len(),
            if file.problems.len() == 1 { "" } else { "s" }
        )
    };
    let _ = writeln!(out, "{}: {status}", file.path.display());
    let count = file.certificates.len();
    for (index, cert) in file.certificates.iter().enumerate() {
        cert_text(out, cert, index + 1, count);
    }
    if let Some(key) = &file.key {
        let verdict = if key.matches {
            "matches certificate 1"
        } else {
            "DOES NOT MATCH certificate 1"
        };
        let _ = writeln!(out, "  {:<13}{} {verdict}", "key", key.path.display());
    }
    if let Some(chain) = &file.chain {
        let verdict = if chain.verified {
            format!(
                "verifies against {} ({})",
                chain.ca.display(),
                chain.usages.join(", ")
            )
        } else {
            format!(
                "DOES NOT VERIFY against {}: {}",
                chain.ca.display(),
                chain.error.as_deref().unwrap_or("unknown reason")
            )
        };
        let _ = writeln!(out, "  {:<13}{verdict}", "chain");
    }
    for problem in &file.problems {
        let _ = writeln!(out, "  {:<13}{problem}", "problem");
    }
}

fn cert_text(out: &mut String, cert: &CertDetails, number: usize, count: usize) {
    let summary = &cert.summary;
    let kind = match (cert.is_ca, cert.self_signed, cert.path_len) {
        (true, true, _) => "root CA".to_owned(),
        (true, false, Some(len)) => format!("CA, path length {len}"),
        (true, false, None) => "CA".to_owned(),
        (false, _, _) if number == 1 => "leaf".to_owned(),
        (false, _, _) => "not a CA".to_owned(),
    };
    let _ = writeln!(out, "  certificate {number} of {count}: {kind}");
    let mut row = |label: &str, value: &str| {
        let _ = writeln!(out, "    {label:<13}{value}");
    };
    row("subject", &summary.subject);
    row("issuer", &summary.issuer);
    row("serial", &summary.serial);
    if !summary.sans.is_empty() {
        row("SANs", &summary.sans.join(", "));
    }
    row("not before", &rfc3339(summary.not_before));
    row(
        "not after",
        &format!(
            "{} ({})",
            rfc3339(summary.not_after),
            days_text(cert.days_left)
        ),
    );
    row("key type", &cert.key_type);
    if !cert.key_usage.is_empty() {
        row("key usage", &cert.key_usage.join(", "));
    }
    if !cert.extended_key_usage.is_empty() {
        row("ext. usage", &cert.extended_key_usage.join(", "));
    }
}

fn days_text(days: i64) -> String {
    match days {
        d if d < 0 => "expired".to_owned(),
        1 => "1 day left".to_owned(),
        d => format!("{d} days left"),
    }
}

/// The `--output json` document.
#[derive(Debug, Serialize)]
struct Document<'a> {
    schema_version: u32,
    command: &'static str,
    ok: bool,
    files: Vec<FileJson<'a>>,
}

#[derive(Debug, Serialize)]
struct FileJson<'a> {
    file: String,
    ok: bool,
    certificates: Vec<CertJson<'a>>,
    key: Option<KeyJson>,
    chain: Option<ChainJson<'a>>,
    problems: &'a [String],
}

#[derive(Debug, Serialize)]
struct CertJson<'a> {
    #[serde(flatten)]
    summary: CertSummaryDoc<'a>,
    key_type: &'a str,
    is_ca: bool,
    path_len: Option<u32>,
    self_signed: bool,
    key_usage: &'a [String],
    extended_key_usage: &'a [String],
}

#[derive(Debug, Serialize)]
struct KeyJson {
    file: String,
    matches: bool,
}

#[derive(Debug, Serialize)]
struct ChainJson<'a> {
    ca: String,
    verified: bool,
    usages: &'a [String],
    error: Option<&'a str>,
}

/// The report as one JSON document (pretty-printed, ending in a newline).
pub fn json(report: &InspectReport) -> String {
    let document = Document {
        schema_version: SCHEMA_VERSION,
        command: "certs inspect",
        ok: report.ok(),
        files: report
            .files
            .iter()
            .map(|file| FileJson {
                file: file.path.display().to_string(),
                ok: file.ok(),
                certificates: file
                    .certificates
                    .iter()
                    .map(|cert| CertJson {
                        summary: CertSummaryDoc::new(&cert.summary, cert.days_left),
                        key_type: &cert.key_type,
                        is_ca: cert.is_ca,
                        path_len: cert.path_len,
                        self_signed: cert.self_signed,
                        key_usage: &cert.key_usage,
                        extended_key_usage: &cert.extended_key_usage,
                    })
                    .collect(),
                key: file.key.as_ref().map(|key| KeyJson {
                    file: key.path.display().to_string(),
                    matches: key.matches,
                }),
                chain: file.chain.as_ref().map(|chain| ChainJson {
                    ca: chain.ca.display().to_string(),
                    verified: chain.verified,
                    usages: &chain.usages,
                    error: chain.error.as_deref(),
                }),
                problems: &file.problems,
            })
            .collect(),
    };
    let mut text = serde_json::to_string_pretty(&document).expect("the report serializes");
    text.push('\n');
    text
}
