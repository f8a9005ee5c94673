//! The JSON output: one document per run, with a stable schema.
//!
//! The structs below *are* the schema (the README documents it key by key):
//! keys are snake_case; every key is always present, `null` when there is no
//! value; durations are integer milliseconds (`*_ms`); times are RFC 3339 UTC
//! strings; a failure is data, `{"kind", "message", "hint"}`, never log text.
//! Adding a key bumps nothing; renaming or removing one bumps [`SCHEMA_VERSION`].

use std::time::Duration;

use dice_proto::cert::{CertSummary, rfc3339};
use serde::Serialize;

use crate::report::{
    Failure, HealthReport, HealthRow, HealthStatus, RollReport, RollRow, RunInfo, Warning,
};

/// The version of the schema below; part of every document.
pub const SCHEMA_VERSION: u32 = 1;

/// The keys every fan-out document opens with.
#[derive(Debug, Serialize)]
pub(super) struct RunDoc {
    pub(super) schema_version: u32,
    pub(super) command: &'static str,
    pub(super) started_at: String,
    pub(super) duration_ms: u64,
    pub(super) timeout_ms: u64,
    pub(super) concurrency: usize,
}

impl RunDoc {
    pub(super) fn new(command: &'static str, run: &RunInfo) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            command,
            started_at: rfc3339(run.started_at),
            duration_ms: ms(run.elapsed),
            timeout_ms: ms(run.timeout),
            concurrency: run.concurrency,
        }
    }
}

/// The counts every summary opens with.
#[derive(Debug, Serialize)]
pub(super) struct CountsDoc {
    nodes: usize,
    ok: usize,
    failed: usize,
}

impl CountsDoc {
    pub(super) fn new(nodes: usize, ok: usize) -> Self {
        Self {
            nodes,
            ok,
            failed: nodes - ok,
        }
    }
}

/// The latencies every summary ends with.
#[derive(Debug, Serialize)]
pub(super) struct LatencyDoc {
    latency_p50_ms: Option<u64>,
    latency_max_ms: Option<u64>,
}

impl LatencyDoc {
    pub(super) fn new(latency: Option<(Duration, Duration)>) -> Self {
        Self {
            latency_p50_ms: latency.map(|(p50, _)| ms(p50)),
            latency_max_ms: latency.map(|(_, max)| ms(max)),
        }
    }
}

/// `roll --output json`.
#[derive(Debug, Serialize)]
struct RollDocument<'a> {
    #[serde(flatten)]
    run: RunDoc,
    count: u32,
    nodes: Vec<RollNode<'a>>,
    summary: RollSummary,
}

#[derive(Debug, Serialize)]
pub(super) struct RollNode<'a> {
    name: &'a str,
    address: &'a str,
    ok: bool,
    values: &'a [i32],
    latency_ms: u64,
    error: Option<ErrorDoc<'a>>,
}

#[derive(Debug, Serialize)]
pub(super) struct RollSummary {
    #[serde(flatten)]
    pub(super) counts: CountsDoc,
    #[serde(flatten)]
    pub(super) latency: LatencyDoc,
}

/// `health --output json`.
#[derive(Debug, Serialize)]
struct HealthDocument<'a> {
    #[serde(flatten)]
    run: RunDoc,
    expiry_warning_ms: u64,
    nodes: Vec<HealthNode<'a>>,
    summary: HealthSummary,
}

#[derive(Debug, Serialize)]
pub(super) struct HealthNode<'a> {
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
    #[serde(flatten)]
    summary: CertSummaryDoc<'a>,
    expiring: bool,
}

/// A certificate's subject, issuer, serial, SANs and validity, the keys
/// every JSON document that shows a certificate opens it with.
#[derive(Debug, Serialize)]
pub(crate) struct CertSummaryDoc<'a> {
    subject: &'a str,
    issuer: &'a str,
    serial: &'a str,
    sans: &'a [String],
    not_before: String,
    not_after: String,
    days_left: i64,
}

impl<'a> CertSummaryDoc<'a> {
    /// The keys of `summary`, with `days_left` whole days of validity left.
    pub(crate) fn new(summary: &'a CertSummary, days_left: i64) -> Self {
        Self {
            subject: &summary.subject,
            issuer: &summary.issuer,
            serial: &summary.serial,
            sans: &summary.sans,
            not_before: rfc3339(summary.not_before),
            not_after: rfc3339(summary.not_after),
            days_left,
        }
    }
}

#[derive(Debug, Serialize)]
struct AgentDoc<'a> {
    node: &'a str,
    version: &'a str,
    last_reload: Option<ReloadDoc<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    acme: Option<AcmeDoc<'a>>,
}

/// An ACME client's state; only for agents with `[acme]`.
#[derive(Debug, Serialize)]
struct AcmeDoc<'a> {
    directory: &'a str,
    next_attempt: &'a str,
    last_success: Option<&'a str>,
    last_error: Option<&'a str>,
    failures: u32,
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
pub(super) struct HealthSummary {
    #[serde(flatten)]
    pub(super) counts: CountsDoc,
    pub(super) serving: usize,
    pub(super) not_serving: usize,
    pub(super) unreachable: usize,
    pub(super) tls_error: usize,
    pub(super) timeout: usize,
    pub(super) expiring: usize,
    #[serde(flatten)]
    pub(super) latency: LatencyDoc,
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

pub(super) fn ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

pub(super) fn document(value: &impl Serialize) -> anyhow::Result<String> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    Ok(text)
}

/// The `roll` document, ending in a newline.
pub fn roll(report: &RollReport) -> anyhow::Result<String> {
    document(&RollDocument {
        run: RunDoc::new("roll", &report.run),
        count: report.count,
        nodes: report.rows.iter().map(roll_node).collect(),
        summary: RollSummary {
            counts: CountsDoc::new(report.rows.len(), report.ok()),
            latency: LatencyDoc::new(report.latency()),
        },
    })
}

pub(super) fn roll_node(row: &RollRow) -> RollNode<'_> {
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
    document(&HealthDocument {
        run: RunDoc::new("health", &report.run),
        expiry_warning_ms: ms(report.expiry_warning),
        nodes: report.rows.iter().map(health_node).collect(),
        summary: HealthSummary {
            counts: CountsDoc::new(report.rows.len(), report.ok()),
            serving: report.count(HealthStatus::Serving),
            not_serving: report.count(HealthStatus::NotServing),
            unreachable: report.count(HealthStatus::Unreachable),
            tls_error: report.count(HealthStatus::TlsError),
            timeout: report.count(HealthStatus::Timeout),
            expiring: report.expiring(),
            latency: LatencyDoc::new(report.latency()),
        },
    })
}

pub(super) fn health_node(row: &HealthRow) -> HealthNode<'_> {
    HealthNode {
        name: &row.name,
        address: &row.address,
        ok: row.ok(),
        status: row.status.as_str(),
        latency_ms: ms(row.latency),
        tls_version: row.tls_version,
        certificate: row.certificate.as_ref().map(|cert| CertDoc {
            summary: CertSummaryDoc::new(&cert.summary, cert.days_left),
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
            acme: agent.acme.as_ref().map(|acme| AcmeDoc {
                directory: &acme.directory,
                next_attempt: &acme.next_attempt,
                last_success: acme.last_success.as_deref(),
                last_error: acme.last_error.as_deref(),
                failures: acme.failures,
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

    /// Every key of a pretty-printed document, in order.
    /// The keys every run document opens with, in order.
    const RUN_KEYS: [&str; 6] = [
        "schema_version",
        "command",
        "started_at",
        "duration_ms",
        "timeout_ms",
        "concurrency",
    ];

    fn keys(text: &str) -> Vec<&str> {
        text.lines()
            .filter_map(|line| line.trim_start().strip_prefix('"')?.split_once("\": "))
            .map(|(key, _)| key)
            .collect()
    }

    #[test]
    fn health_document_keeps_its_key_order() {
        let summary = CertSummary {
            subject: "CN=n".into(),
            common_name: Some("n".into()),
            issuer: "CN=ca".into(),
            sans: vec!["DNS:n".into()],
            serial: "01".into(),
            not_before: 0,
            not_after: 86_400,
        };
        let report = HealthReport {
            run: RunInfo {
                started_at: 0,
                elapsed: Duration::from_millis(5),
                timeout: Duration::from_secs(2),
                concurrency: 8,
            },
            expiry_warning: Duration::from_secs(86_400),
            rows: vec![HealthRow {
                name: "n".into(),
                address: "127.0.0.1:1".into(),
                status: HealthStatus::Serving,
                latency: Duration::from_millis(3),
                tls_version: Some("TLSv1.3"),
                certificate: Some(crate::report::CertFacts {
                    summary,
                    days_left: 1,
                    expiring: true,
                }),
                agent: None,
                failure: None,
                warnings: Vec::new(),
            }],
        };
        let text = health(&report).expect("json");
        assert_eq!(
            keys(&text),
            [
                &RUN_KEYS[..],
                &[
                    "expiry_warning_ms",
                    "nodes",
                    "name",
                    "address",
                    "ok",
                    "status",
                    "latency_ms",
                    "tls_version",
                    "certificate",
                    "subject",
                    "issuer",
                    "serial",
                    "sans",
                    "not_before",
                    "not_after",
                    "days_left",
                    "expiring",
                    "agent",
                    "error",
                    "warnings",
                    "summary",
                    "nodes",
                    "ok",
                    "failed",
                    "serving",
                    "not_serving",
                    "unreachable",
                    "tls_error",
                    "timeout",
                    "expiring",
                    "latency_p50_ms",
                    "latency_max_ms",
                ],
            ]
            .concat()
        );
    }

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
        let text = roll(&report).expect("json");
        // Keys keep their order, flattened ones included.
        assert_eq!(
            keys(&text),
            [
                &RUN_KEYS[..],
                &[
                    "count",
                    "nodes",
                    "name",
                    "address",
                    "ok",
                    "values",
                    "latency_ms",
                    "error",
                    "kind",
                    "message",
                    "hint",
                    "summary",
                    "nodes",
                    "ok",
                    "failed",
                    "latency_p50_ms",
                    "latency_max_ms",
                ],
            ]
            .concat()
        );
        let value: serde_json::Value = serde_json::from_str(&text).expect("parses");
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
