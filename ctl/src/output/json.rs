//! The JSON output: one document per run, with a stable schema.
//!
//! The structs below *are* the schema (the README documents it key by key):
//! keys are snake_case; every key is always present, `null` when there is no
//! value; durations are integer milliseconds (`*_ms`); times are RFC 3339 UTC
//! strings; a failure is data, `{"kind", "message", "hint"}`, never log text.
//! Adding a key bumps nothing; renaming or removing one bumps [`SCHEMA_VERSION`].

use std::time::Duration;

use dice_proto::cert::rfc3339;
use serde::Serialize;

use crate::report::{
    Failure, HealthReport, HealthRow, HealthStatus, RollReport, RollRow, RunInfo, Warning,
};

/// The version of the schema below; part of every document.
pub const SCHEMA_VERSION: u32 = 1;

/// `roll --output json`.
#[derive(Debug, Serialize)]
struct RollDocument<'a> {
    schema_version: u32,
    command: &'static str,
    started_at: String,
    duration_ms: u64,
    timeout_ms: u64,
    concurrency: usize,
    count: u32,
    nodes: Vec<RollNode<'a>>,
    summary: RollSummary,
}

#[derive(Debug, Serialize)]
struct RollNode<'a> {
    name: &'a str,
    address: &'a str,
    ok: bool,
    values: &'a [i32],
    latency_ms: u64,
    error: Option<ErrorDoc<'a>>,
}

#[derive(Debug, Serialize)]
struct RollSummary {
    nodes: usize,
    ok: usize,
    failed: usize,
    latency_p50_ms: Option<u64>,
    latency_max_ms: Option<u64>,
}

/// `health --output json`.
#[derive(Debug, Serialize)]
struct HealthDocument<'a> {
    schema_version: u32,
    command: &'static str,
    started_at: String,
    duration_ms: u64,
    timeout_ms: u64,
    concurrency: usize,
    expiry_warning_ms: u64,
    nodes: Vec<HealthNode<'a>>,
    summary: HealthSummary,
}

#[derive(Debug, Serialize)]
struct HealthNode<'a> {
    name: &'a str,
    address: &'a str,
    ok: bool,
    status: &'static str,
    latency_ms: u64,
    tls_version: Option<&'static str>,
    certificate: Option<CertDoc<'a>>,
    agent: Option<AgentDoc<'a>>,
    error: Option<ErrorDoc<'a>>,
    warnings: Vec<WarningDoc<'a>>,
}

#[derive(Debug, Serialize)]
struct CertDoc<'a> {
    subject: &'a str,
    issuer: &'a str,
    serial: &'a str,
    sans: &'a [String],
    not_before: String,
    not_after: String,
    days_left: i64,
    expiring: bool,
}

#[derive(Debug, Serialize)]
struct AgentDoc<'a> {
    node: &'a str,
    version: &'a str,
    last_reload: Option<ReloadDoc<'a>>,
}

#[derive(Debug, Serialize)]
struct ReloadDoc<'a> {
    time: &'a str,
    ok: bool,
    error: Option<&'a str>,
}

#[derive(Debug, Serialize)]
struct WarningDoc<'a> {
    kind: &'static str,
    message: &'a str,
}

#[derive(Debug, Serialize)]
struct HealthSummary {
    nodes: usize,
    ok: usize,
    failed: usize,
    serving: usize,
    not_serving: usize,
    unreachable: usize,
    tls_error: usize,
    timeout: usize,
    expiring: usize,
    latency_p50_ms: Option<u64>,
    latency_max_ms: Option<u64>,
}

#[derive(Debug, Serialize)]
struct ErrorDoc<'a> {
    kind: &'static str,
    message: &'a str,
    hint: &'a str,
}

impl<'a> ErrorDoc<'a> {
    fn new(failure: &'a Failure) -> Self {
        Self {
            kind: failure.kind.as_str(),
            message: &failure.message,
            hint: &failure.hint,
        }
    }
}

fn ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The run's common keys: `started_at`, `duration_ms`, `timeout_ms`, `concurrency`.
fn run_keys(run: &RunInfo) -> (String, u64, u64, usize) {
    (
        rfc3339(run.started_at),
        ms(run.elapsed),
        ms(run.timeout),
        run.concurrency,
    )
}

fn document(value: &impl Serialize) -> anyhow::Result<String> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    Ok(text)
}

/// The `roll` document, ending in a newline.
pub fn roll(report: &RollReport) -> anyhow::Result<String> {
    let (started_at, duration_ms, timeout_ms, concurrency) = run_keys(&report.run);
    let latency = report.latency();
    document(&RollDocument {
        schema_version: SCHEMA_VERSION,
        command: "roll",
        started_at,
        duration_ms,
        timeout_ms,
        concurrency,
        count: report.count,
        nodes: report.rows.iter().map(roll_node).collect(),
        summary: RollSummary {
            nodes: report.rows.len(),
            ok: report.ok(),
            failed: report.rows.len() - report.ok(),
            latency_p50_ms: latency.map(|(p50, _)| ms(p50)),
            latency_max_ms: latency.map(|(_, max)| ms(max)),
        },
    })
}

fn roll_node(row: &RollRow) -> RollNode<'_> {
    RollNode {
        name: &row.name,
        address: &row.address,
        ok: row.failure.is_none(),
        values: &row.values,
        latency_ms: ms(row.latency),
        error: row.failure.as_ref().map(ErrorDoc::new),
    }
}

/// The `health` document, ending in a newline.
pub fn health(report: &HealthReport) -> anyhow::Result<String> {
    let (started_at, duration_ms, timeout_ms, concurrency) = run_keys(&report.run);
    let latency = report.latency();
    document(&HealthDocument {
        schema_version: SCHEMA_VERSION,
        command: "health",
        started_at,
        duration_ms,
        timeout_ms,
        concurrency,
        expiry_warning_ms: ms(report.expiry_warning),
        nodes: report.rows.iter().map(health_node).collect(),
        summary: HealthSummary {
            nodes: report.rows.len(),
            ok: report.ok(),
            failed: report.rows.len() - report.ok(),
            serving: report.count(HealthStatus::Serving),
            not_serving: report.count(HealthStatus::NotServing),
            unreachable: report.count(HealthStatus::Unreachable),
            tls_error: report.count(HealthStatus::TlsError),
            timeout: report.count(HealthStatus::Timeout),
            expiring: report.expiring(),
            latency_p50_ms: latency.map(|(p50, _)| ms(p50)),
            latency_max_ms: latency.map(|(_, max)| ms(max)),
        },
    })
}

fn health_node(row: &HealthRow) -> HealthNode<'_> {
    HealthNode {
        name: &row.name,
        address: &row.address,
        ok: row.ok(),
        status: row.status.as_str(),
        latency_ms: ms(row.latency),
        tls_version: row.tls_version,
        certificate: row.certificate.as_ref().map(|cert| CertDoc {
            subject: &cert.summary.subject,
            issuer: &cert.summary.issuer,
            serial: &cert.summary.serial,
            sans: &cert.summary.sans,
            not_before: rfc3339(cert.summary.not_before),
            not_after: rfc3339(cert.summary.not_after),
            days_left: cert.days_left,
            expiring: cert.expiring,
        }),
        agent: row.agent.as_ref().map(|agent| AgentDoc {
            node: &agent.node,
            version: &agent.version,
            last_reload: agent.last_reload.as_ref().map(|reload| ReloadDoc {
                time: &reload.time,
                ok: reload.ok,
                error: reload.error.as_deref(),
            }),
        }),
        error: row.failure.as_ref().map(ErrorDoc::new),
        warnings: row.warnings.iter().map(warning).collect(),
    }
}

fn warning(warning: &Warning) -> WarningDoc<'_> {
    WarningDoc {
        kind: warning.kind.as_str(),
        message: &warning.message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::NodeErrorKind;
    use crate::report::FailureKind;

    #[test]
    fn roll_document_has_every_key() {
        let report = RollReport {
            run: RunInfo {
                started_at: 0,
                elapsed: Duration::from_millis(1500),
                timeout: Duration::from_secs(2),
                concurrency: 8,
            },
            count: 1,
            rows: vec![RollRow {
                name: "n".into(),
                address: "127.0.0.1:1".into(),
                values: vec![],
                latency: Duration::from_micros(2500),
                failure: Some(Failure {
                    kind: FailureKind::Node(NodeErrorKind::Connect),
                    message: "connection refused".into(),
                    hint: "start it".into(),
                    causes: vec![],
                }),
            }],
        };
        let value: serde_json::Value =
            serde_json::from_str(&roll(&report).expect("json")).expect("parses");
        let expected = serde_json::json!({
            "schema_version": 1,
            "command": "roll",
            "started_at": "1970-01-01T00:00:00Z",
            "duration_ms": 1500,
            "timeout_ms": 2000,
            "concurrency": 8,
            "count": 1,
            "nodes": [{
                "name": "n",
                "address": "127.0.0.1:1",
                "ok": false,
                "values": [],
                "latency_ms": 2,
                "error": {"kind": "connect", "message": "connection refused", "hint": "start it"}
            }],
            "summary": {"nodes": 1, "ok": 0, "failed": 1, "latency_p50_ms": null, "latency_max_ms": null}
        });
        assert_eq!(value, expected);
    }
}
