//! What a fan-out found, as plain data: one row per node and a summary. The
//! output modules ([`crate::output`]) turn it into a table or JSON.

use std::error::Error as _;
use std::time::Duration;

use dice_proto::cert::CertSummary;

use crate::client::{NodeError, NodeErrorKind};

/// Facts about the run itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunInfo {
    /// When the run started, Unix seconds.
    pub started_at: i64,
    /// How long the whole run took.
    pub elapsed: Duration,
    /// The deadline per node.
    pub timeout: Duration,
    /// Nodes in flight at once.
    pub concurrency: usize,
}

// === impl Failure ===

/// Why a node failed, by step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FailureKind {
    /// Talking to the node failed: connecting, the TLS handshake (or the
    /// node refused our certificate), the deadline, or an RPC's status.
    Node(NodeErrorKind),
    /// The health service answered, but not SERVING.
    Health,
}

impl FailureKind {
    /// The kind as shown in tables and JSON: `connect`, `tls`, `timeout`, `rpc`, `health`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Node(kind) => kind.as_str(),
            Self::Health => "health",
        }
    }
}

/// Why a node failed: the kind, what happened, what to do, and the causes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The step that failed.
    pub kind: FailureKind,
    /// What happened, on one line.
    pub message: String,
    /// What to do about it.
    pub hint: String,
    /// The underlying errors, outermost first, for `-v`.
    pub causes: Vec<String>,
}

impl Failure {
    /// `KIND: MESSAGE`, for a table cell.
    pub fn short(&self) -> String {
        format!("{}: {}", self.kind.as_str(), self.message)
    }
}

impl std::fmt::Display for Failure {
    /// `KIND: MESSAGE (HINT)`, as the first slice printed a failed node.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.short(), self.hint)
    }
}

impl From<NodeError> for Failure {
    fn from(error: NodeError) -> Self {
        let kind = FailureKind::Node(error.kind());
        let mut causes = Vec::new();
        let mut next = error.source();
        while let Some(cause) = next {
            let text = cause.to_string();
            if !text.is_empty() && causes.last() != Some(&text) {
                causes.push(text);
            }
            next = cause.source();
        }
        Self {
            kind,
            message: error.reason(),
            hint: error.hint().to_owned(),
            causes,
        }
    }
}

/// The median (nearest rank) and the maximum of `latencies`; `None` if empty.
pub fn latency_stats(mut latencies: Vec<Duration>) -> Option<(Duration, Duration)> {
    latencies.sort_unstable();
    let max = *latencies.last()?;
    let p50 = latencies[(latencies.len() - 1) / 2];
    Some((p50, max))
}

// === impl RollReport ===

/// The result of `dicectl roll` on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollRow {
    /// The node's name.
    pub name: String,
    /// Its address.
    pub address: String,
    /// The values rolled, in order; fewer than asked if it failed part way.
    pub values: Vec<i32>,
    /// From the node's start to its last reply or its failure.
    pub latency: Duration,
    /// Why it failed, if it did.
    pub failure: Option<Failure>,
}

/// The result of `dicectl roll` on every selected node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollReport {
    /// The run.
    pub run: RunInfo,
    /// Dice rolled per node.
    pub count: u32,
    /// One row per node, sorted by name.
    pub rows: Vec<RollRow>,
}

impl RollRow {
    /// The node's name and address, and why it failed, if it did.
    pub fn failed(&self) -> (&str, &str, Option<&Failure>) {
        (&self.name, &self.address, self.failure.as_ref())
    }
}

impl RollReport {
    /// Rows without a failure.
    pub fn ok(&self) -> usize {
        self.rows.iter().filter(|row| row.failure.is_none()).count()
    }

    /// Latency p50 and max over the nodes that succeeded.
    pub fn latency(&self) -> Option<(Duration, Duration)> {
        latency_stats(
            (self.rows.iter())
                .filter(|row| row.failure.is_none())
                .map(|row| row.latency)
                .collect(),
        )
    }
}

// === impl HealthReport ===

/// A node's health, as `dicectl health` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HealthStatus {
    /// The health service reports SERVING.
    Serving,
    /// The health service reports anything else, or its RPC failed.
    NotServing,
    /// No TCP connection.
    Unreachable,
    /// The TLS handshake failed, or the node refused our certificate.
    TlsError,
    /// The deadline passed.
    Timeout,
}

impl HealthStatus {
    /// The status as shown in tables and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Serving => "SERVING",
            Self::NotServing => "NOT_SERVING",
            Self::Unreachable => "UNREACHABLE",
            Self::TlsError => "TLS_ERROR",
            Self::Timeout => "TIMEOUT",
        }
    }

    /// The status a failure of `kind` leaves a node in.
    pub fn of_failure(kind: FailureKind) -> Self {
        match kind {
            FailureKind::Node(NodeErrorKind::Connect) => Self::Unreachable,
            FailureKind::Node(NodeErrorKind::Tls) => Self::TlsError,
            FailureKind::Node(NodeErrorKind::Timeout) => Self::Timeout,
            FailureKind::Node(NodeErrorKind::Rpc) | FailureKind::Health => Self::NotServing,
        }
    }
}

/// The certificate a node served in the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFacts {
    /// Subject, issuer, serial, SANs, validity.
    pub summary: CertSummary,
    /// Whole days until it expires.
    pub days_left: i64,
    /// Whether it expires within the warning threshold.
    pub expiring: bool,
}

/// What the agent's info API says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentFacts {
    /// The agent's own node name.
    pub node: String,
    /// The agent's version.
    pub version: String,
    /// The last certificate reload; `None` if there has been none since start.
    pub last_reload: Option<ReloadFacts>,
    /// Where its certificate comes from when it is an ACME client (`[acme]`).
    pub acme: Option<AcmeFacts>,
}

/// An agent's ACME client: when it asks for a certificate next, and how it went last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeFacts {
    /// The ACME directory URL.
    pub directory: String,
    /// When the next request is due, RFC 3339.
    pub next_attempt: String,
    /// When the last certificate was obtained, RFC 3339, if ever.
    pub last_success: Option<String>,
    /// Why the last attempt failed, if it did.
    pub last_error: Option<String>,
    /// Failed attempts since the last success.
    pub failures: u32,
}

/// The outcome of an agent's last certificate reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadFacts {
    /// When, RFC 3339, as the agent reports it.
    pub time: String,
    /// Whether the new material is being served.
    pub ok: bool,
    /// Why it was rejected, when not ok.
    pub error: Option<String>,
}

/// Something worth an operator's attention on a node that answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WarningKind {
    /// The certificate expires within the warning threshold (the node counts as failed).
    CertificateExpiring,
    /// The agent's last certificate reload was rejected; it serves its previous certificate.
    ReloadFailed,
    /// The agent's info API did not answer.
    AgentInfo,
    /// The agent's ACME renewals are failing; it serves its current certificate meanwhile.
    AcmeFailing,
}

impl WarningKind {
    /// The kind as shown in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CertificateExpiring => "certificate_expiring",
            Self::ReloadFailed => "reload_failed",
            Self::AgentInfo => "agent_info",
            Self::AcmeFailing => "acme_failing",
        }
    }
}

/// One warning about a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// What kind.
    pub kind: WarningKind,
    /// What, on one line, with what to do.
    pub message: String,
}

/// The health of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthRow {
    /// The node's name.
    pub name: String,
    /// Its address.
    pub address: String,
    /// SERVING, NOT_SERVING, UNREACHABLE, TLS_ERROR or TIMEOUT.
    pub status: HealthStatus,
    /// From the node's start to its answers, or its failure.
    pub latency: Duration,
    /// The negotiated TLS version, once the handshake succeeded.
    pub tls_version: Option<&'static str>,
    /// The certificate it served, once the handshake succeeded.
    pub certificate: Option<CertFacts>,
    /// What its info API said, if it answered.
    pub agent: Option<AgentFacts>,
    /// Why the status is not SERVING.
    pub failure: Option<Failure>,
    /// Things to look at even though the node answered.
    pub warnings: Vec<Warning>,
}

impl HealthRow {
    /// The node's name and address, and why it failed, if it did.
    pub fn failed(&self) -> (&str, &str, Option<&Failure>) {
        (&self.name, &self.address, self.failure.as_ref())
    }

    /// SERVING, with a certificate that is not about to expire.
    pub fn ok(&self) -> bool {
        self.status == HealthStatus::Serving && !self.expiring()
    }

    /// Whether its certificate expires within the warning threshold.
    pub fn expiring(&self) -> bool {
        self.certificate.as_ref().is_some_and(|cert| cert.expiring)
    }
}

/// The result of `dicectl health` on every selected node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthReport {
    /// The run.
    pub run: RunInfo,
    /// Certificates expiring sooner than this count as failed.
    pub expiry_warning: Duration,
    /// One row per node, sorted by name.
    pub rows: Vec<HealthRow>,
}

impl HealthReport {
    /// Rows that are [`HealthRow::ok`].
    pub fn ok(&self) -> usize {
        self.rows.iter().filter(|row| row.ok()).count()
    }

    /// How many nodes have `status`.
    pub fn count(&self, status: HealthStatus) -> usize {
        self.rows.iter().filter(|row| row.status == status).count()
    }

    /// How many certificates expire within the threshold.
    pub fn expiring(&self) -> usize {
        self.rows.iter().filter(|row| row.expiring()).count()
    }

    /// Latency p50 and max over the nodes whose health service answered.
    pub fn latency(&self) -> Option<(Duration, Duration)> {
        latency_stats(
            (self.rows.iter())
                .filter(|row| {
                    row.status == HealthStatus::Serving
                        || row.failure.as_ref().map(|f| f.kind) == Some(FailureKind::Health)
                })
                .map(|row| row.latency)
                .collect(),
        )
    }
}

/// A duration as an operator says it: `14 days`, `36h`, `500ms`.
pub fn describe_duration(duration: Duration) -> String {
    let secs = duration.as_secs();
    if secs > 0 && secs.is_multiple_of(86_400) && duration.subsec_nanos() == 0 {
        match secs / 86_400 {
            1 => "1 day".to_owned(),
            days => format!("{days} days"),
        }
    } else {
        humantime::format_duration(duration).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_stats_use_the_nearest_rank() {
        let ms = Duration::from_millis;
        assert_eq!(latency_stats(vec![]), None);
        assert_eq!(latency_stats(vec![ms(5)]), Some((ms(5), ms(5))));
        assert_eq!(
            latency_stats(vec![ms(9), ms(1), ms(5), ms(3)]),
            Some((ms(3), ms(9)))
        );
        assert_eq!(
            latency_stats(vec![ms(9), ms(1), ms(5)]),
            Some((ms(5), ms(9)))
        );
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(
            describe_duration(Duration::from_secs(14 * 86_400)),
            "14 days"
        );
        assert_eq!(describe_duration(Duration::from_secs(86_400)), "1 day");
        assert_eq!(
            describe_duration(Duration::from_secs(36 * 3600)),
            "1day 12h"
        );
        assert_eq!(describe_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn node_errors_become_failures() {
        let failure = Failure::from(NodeError::timeout("no TLS handshake"));
        assert_eq!(failure.kind, FailureKind::Node(NodeErrorKind::Timeout));
        assert_eq!(
            failure.short(),
            "timeout: no TLS handshake before the deadline"
        );
        assert_eq!(
            failure.to_string(),
            NodeError::timeout("no TLS handshake").to_string()
        );
    }
}
