//! `dicectl health`: per node, the health status of `api.DiceService`, the
//! TLS version and server certificate from the handshake, and the agent's
//! version and last certificate reload from its info API.
//!
//! Each node gets one connection: dicectl makes the TCP connection and the
//! TLS handshake itself ([`client::open`]), so it can read the negotiated
//! version and the certificate the node actually served, then calls
//! `grpc.health.v1.Health/Check` and `dice.agent.v1.AgentInfoService/GetInfo`
//! at the same time over that one HTTP/2 connection. TLS sessions are never
//! resumed ([`crate::tls`]), so every probe sees the certificate served now.

use std::sync::Arc;
use std::time::Duration;

use dice_proto::DICE_SERVICE_NAME;
use dice_proto::cert::{CertSummary, rfc3339};
use dice_proto::info::agent_info_service_client::AgentInfoServiceClient;
use dice_proto::info::{AgentInfo, GetInfoRequest};
use rustls::ClientConfig;
use tokio::time::{Instant, timeout_at};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::args::{GlobalArgs, OutputFormat};
use crate::cli::HealthArgs;
use crate::client::{self, NodeError, NodeTarget, TlsInfo};
use crate::fanout::{Probed, fan_out_plan};
use crate::output::jsonl;
use crate::plan::{self, Plan, Request};
use crate::progress::Progress;
use crate::report::{
    AcmeFacts, AgentFacts, CertFacts, Failure, FailureKind, HealthReport, HealthRow, HealthStatus,
    ReloadFacts, Warning, WarningKind, describe_duration,
};
use crate::select::Node;
use crate::{Outcome, output, runtime, select, unix_now};

/// Runs `dicectl health`.
///
/// Every node that is not SERVING, or whose certificate expires within the
/// warning threshold, makes the outcome [`Outcome::NodeFailed`].
pub fn run(global: &GlobalArgs, args: &HealthArgs) -> anyhow::Result<Outcome> {
    let plan = plan::plan(Request {
        if_none: select::IfNone::All,
        expiry_warning: args.expiry_warning,
        allow_partial_discovery: args.discovery.allow_partial_discovery,
        ..Request::new(global.fleet.as_deref(), &args.select, &args.conn)
    })?;
    output::plan_details(&plan, global.verbose);
    let mut progress = Progress::stderr(plan.nodes.len());
    let runtime = runtime(plan.nodes.len())?;
    if global.output == Some(OutputFormat::Jsonl) {
        let all_ok = runtime.block_on(check_stream(&plan, &mut progress, global.verbose))?;
        return Ok(Outcome::from_all_ok(all_ok));
    }
    let report = runtime.block_on(check_all(&plan, &mut progress));
    output::health(
        &report,
        global.output.unwrap_or(OutputFormat::Table),
        global.verbose,
    )?;
    Ok(Outcome::from_all_ok(report.ok() == report.rows.len()))
}

/// Checks every node of `plan`, `plan.concurrency` nodes at a time.
pub async fn check_all(plan: &Plan, progress: &mut Progress) -> HealthReport {
    let (probed, run) = fan_out_plan(plan, progress, |node, tls, deadline| async move {
        probe(&node.target, tls, deadline).await
    })
    .await;
    let now = unix_now();
    let rows = probed
        .into_iter()
        .map(|probed| {
            row(
                probed.node,
                probed.result,
                probed.latency,
                now,
                plan.expiry_warning,
            )
        })
        .collect();
    HealthReport {
        run,
        expiry_warning: plan.expiry_warning,
        rows,
    }
}

/// As [`check_all`], writing a JSON line per node as soon as it finishes and
/// then the summary line, keeping no row. Whether every node was OK.
pub async fn check_stream(
    plan: &Plan,
    progress: &mut Progress,
    verbose: bool,
) -> anyhow::Result<bool> {
    let expiry_warning = plan.expiry_warning;
    crate::stream::stream(
        plan,
        progress,
        verbose,
        |node, tls, deadline| async move { probe(&node.target, tls, deadline).await },
        |probed: Probed<Probe>| {
            let row = row(
                probed.node.clone(),
                probed.result,
                probed.latency,
                unix_now(),
                expiry_warning,
            );
            (probed.node, row)
        },
        |lines, run, tally| jsonl::health_summary(lines, run, expiry_warning, tally),
    )
    .await
}

/// What one node said, before it is judged.
#[derive(Debug)]
pub struct Probe {
    /// What the handshake settled on, if it got that far.
    pub tls: Option<TlsInfo>,
    /// The health status reply, or why there is none.
    pub health: Result<ServingStatus, NodeError>,
    /// The info API reply, or why there is none; `None` if it was not asked.
    pub info: Option<Result<AgentInfo, NodeError>>,
}

/// Connects to `node` and asks its health and info at once, all before `deadline`.
pub async fn probe(node: &NodeTarget, tls: Arc<ClientConfig>, deadline: Instant) -> Probe {
    let connection = match client::open(node, tls, deadline).await {
        Ok(connection) => connection,
        Err(error) => {
            return Probe {
                tls: None,
                health: Err(error),
                info: None,
            };
        }
    };
    let mut health = HealthClient::new(connection.channel.clone());
    let mut info = AgentInfoServiceClient::new(connection.channel);
    let request = HealthCheckRequest {
        service: DICE_SERVICE_NAME.to_owned(),
    };
    let (health, info) = tokio::join!(
        timeout_at(deadline, health.check(request)),
        timeout_at(deadline, info.get_info(GetInfoRequest {})),
    );
    let health = match health {
        Err(_) => Err(NodeError::timeout(
            "no reply to grpc.health.v1.Health/Check",
        )),
        Ok(Err(status)) => Err(NodeError::from_status(status)),
        Ok(Ok(reply)) => Ok(
            ServingStatus::try_from(reply.into_inner().status).unwrap_or(ServingStatus::Unknown)
        ),
    };
    let info = match info {
        Err(_) => Err(NodeError::timeout("no reply to AgentInfoService/GetInfo")),
        Ok(Err(status)) => Err(NodeError::from_status(status)),
        Ok(Ok(reply)) => Ok(reply.into_inner()),
    };
    Probe {
        tls: Some(connection.tls),
        health,
        info: Some(info),
    }
}

/// Judges one node's probe: its status, certificate expiry and warnings.
pub fn row(
    node: Node,
    probe: Probe,
    latency: Duration,
    now: i64,
    expiry_warning: Duration,
) -> HealthRow {
    let (status, failure) = match probe.health {
        Ok(ServingStatus::Serving) => (HealthStatus::Serving, None),
        Ok(other) => (HealthStatus::NotServing, Some(not_serving(other))),
        Err(error) => {
            let failure = Failure::from(error);
            (HealthStatus::of_failure(failure.kind), Some(failure))
        }
    };
    let answered = status == HealthStatus::Serving
        || failure.as_ref().map(|f| f.kind) == Some(FailureKind::Health);
    let mut warnings = Vec::new();

    let tls_version = probe.tls.as_ref().and_then(|tls| tls.version);
    let certificate = (probe.tls.as_ref())
        .and_then(|tls| tls.peer_leaf.as_ref())
        .and_then(|leaf| CertSummary::parse(leaf).ok())
        .map(|summary| {
            let left = summary.not_after - now;
            let threshold = i64::try_from(expiry_warning.as_secs()).unwrap_or(i64::MAX);
            CertFacts {
                days_left: summary.days_left(now),
                expiring: left < threshold,
                summary,
            }
        });
    if let Some(cert) = certificate.as_ref().filter(|cert| cert.expiring) {
        warnings.push(Warning {
            kind: WarningKind::CertificateExpiring,
            message: format!(
                "certificate expires in {}, at {} (within the {} warning threshold: renew it; the agent loads new files without a restart)",
                match cert.days_left {
                    1 => "1 day".to_owned(),
                    days => format!("{days} days"),
                },
                rfc3339(cert.summary.not_after),
                describe_duration(expiry_warning)
            ),
        });
    }

    let agent = match probe.info {
        Some(Ok(info)) => Some(agent_facts(info)),
        Some(Err(error)) if answered => {
            warnings.push(Warning {
                kind: WarningKind::AgentInfo,
                message: format!(
                    "no agent info: {} (is it a dice-agent of this version?)",
                    Failure::from(error).short()
                ),
            });
            None
        }
        _ => None,
    };
    if let Some(reload) = agent.as_ref().and_then(|agent| agent.last_reload.as_ref())
        && !reload.ok
    {
        warnings.push(Warning {
            kind: WarningKind::ReloadFailed,
            message: format!(
                "last certificate reload failed at {}: {} (the agent still serves its previous certificate: fix the files)",
                reload.time,
                reload.error.as_deref().unwrap_or("no reason given")
            ),
        });
    }

    if let Some(acme) = agent.as_ref().and_then(|agent| agent.acme.as_ref())
        && acme.failures > 0
    {
        warnings.push(Warning {
            kind: WarningKind::AcmeFailing,
            message: format!(
                "{} failed ACME attempt(s) at {}: {} (next attempt at {}; the current certificate keeps serving: check the ACME server)",
                acme.failures,
                acme.directory,
                acme.last_error.as_deref().unwrap_or("no reason given"),
                acme.next_attempt
            ),
        });
    }

    HealthRow {
        name: node.name,
        address: node.target.label().to_owned(),
        status,
        latency,
        tls_version,
        certificate,
        agent,
        failure,
        warnings,
    }
}

fn not_serving(status: ServingStatus) -> Failure {
    let (name, hint) = match status {
        ServingStatus::NotServing => (
            "NOT_SERVING",
            "the agent is shutting down or draining: check its log",
        ),
        ServingStatus::ServiceUnknown => (
            "SERVICE_UNKNOWN",
            "the node does not serve api.DiceService: check the address",
        ),
        _ => (
            "UNKNOWN",
            "the agent has not reported a status yet: retry, then check its log",
        ),
    };
    Failure {
        kind: FailureKind::Health,
        message: format!("{DICE_SERVICE_NAME} is {name}"),
        hint: hint.to_owned(),
        causes: Vec::new(),
    }
}

fn agent_facts(info: AgentInfo) -> AgentFacts {
    let last_reload = info
        .last_reload
        .filter(|reload| !reload.time.is_empty())
        .map(|reload| ReloadFacts {
            time: reload.time,
            ok: reload.ok,
            error: Some(reload.error).filter(|error| !error.is_empty()),
        });
    let acme = info.acme.map(|acme| AcmeFacts {
        directory: acme.directory,
        next_attempt: acme.next_attempt,
        last_success: Some(acme.last_success).filter(|time| !time.is_empty()),
        last_error: Some(acme.last_error).filter(|error| !error.is_empty()),
        failures: acme.failures,
    });
    AgentFacts {
        acme,
        node: info.node,
        version: info.version,
        last_reload,
    }
}

#[cfg(test)]
mod tests {
    use dice_proto::info::ReloadResult;
    use rustls::pki_types::CertificateDer;

    use super::*;
    use crate::testing::Pki;

    const DAY: i64 = 86_400;

    fn node() -> Node {
        Node {
            name: "n".into(),
            target: NodeTarget::parse("127.0.0.1:1", None).expect("target"),
            ad_hoc: false,
            source: "static".into(),
        }
    }

    fn leaf(pki: &Pki) -> CertificateDer<'static> {
        dice_proto::pem::load_certs(&pki.file("server.pem")).expect("server.pem")[0].clone()
    }

    /// The row for `probe` of [`node`], judged at `now` (Unix seconds).
    fn judge(probe: Probe, now: i64, expiry_warning: Duration) -> HealthRow {
        row(node(), probe, Duration::ZERO, now, expiry_warning)
    }

    fn serving(pki: &Pki, reload: Option<ReloadResult>) -> Probe {
        Probe {
            tls: Some(TlsInfo {
                version: Some("TLSv1.3"),
                peer_leaf: Some(leaf(pki)),
            }),
            health: Ok(ServingStatus::Serving),
            info: Some(Ok(AgentInfo {
                node: "n".into(),
                version: "1.2.3".into(),
                certificates: Default::default(),
                last_reload: reload,
                ..Default::default()
            })),
        }
    }

    #[test]
    fn expiry_within_the_threshold_fails_the_node() {
        let pki = Pki::new();
        let not_after = CertSummary::parse(&leaf(&pki)).expect("parse").not_after;
        let warning = Duration::from_secs(14 * 86_400);
        // 20 days before expiry: fine.
        let fine = judge(serving(&pki, None), not_after - 20 * DAY, warning);
        assert!(fine.ok(), "{fine:?}");
        assert_eq!(fine.certificate.as_ref().map(|c| c.days_left), Some(20));
        assert!(fine.warnings.is_empty());
        // 5 days (minus a second) before: warned, and not ok.
        let soon = judge(serving(&pki, None), not_after - 5 * DAY + 1, warning);
        assert!(!soon.ok());
        assert_eq!(soon.status, HealthStatus::Serving);
        assert_eq!(soon.certificate.as_ref().map(|c| c.days_left), Some(4));
        assert_eq!(soon.warnings.len(), 1);
        assert_eq!(soon.warnings[0].kind, WarningKind::CertificateExpiring);
        assert!(
            soon.warnings[0]
                .message
                .starts_with("certificate expires in 4 days, at "),
            "{}",
            soon.warnings[0].message
        );
        assert!(
            soon.warnings[0]
                .message
                .contains("within the 14 days warning threshold")
        );
    }

    #[test]
    fn failed_reloads_and_missing_info_are_warnings() {
        let pki = Pki::new();
        let now = CertSummary::parse(&leaf(&pki)).expect("parse").not_after - 100 * DAY;
        let reload = ReloadResult {
            time: "2030-01-01T00:00:00Z".into(),
            ok: false,
            error: "server.pem: no such file".into(),
        };
        let row1 = judge(serving(&pki, Some(reload)), now, Duration::ZERO);
        assert!(row1.ok());
        assert_eq!(row1.warnings[0].kind, WarningKind::ReloadFailed);
        assert!(
            row1.warnings[0]
                .message
                .contains("server.pem: no such file")
        );
        assert_eq!(
            row1.agent.as_ref().map(|a| a.version.as_str()),
            Some("1.2.3")
        );

        let mut probe = serving(&pki, None);
        probe.info = Some(Err(NodeError::from_status(tonic::Status::unimplemented(
            "",
        ))));
        let row2 = judge(probe, now, Duration::ZERO);
        assert!(row2.ok());
        assert!(row2.agent.is_none());
        assert_eq!(row2.warnings[0].kind, WarningKind::AgentInfo);

        let never = ReloadResult::default();
        let row3 = judge(serving(&pki, Some(never)), now, Duration::ZERO);
        assert_eq!(row3.agent.and_then(|a| a.last_reload), None);
    }

    #[test]
    fn statuses_follow_the_failed_step() {
        let cases = [
            (
                Ok(ServingStatus::NotServing),
                HealthStatus::NotServing,
                "health",
            ),
            (
                Ok(ServingStatus::ServiceUnknown),
                HealthStatus::NotServing,
                "health",
            ),
            (
                Err(NodeError::timeout("no TLS handshake")),
                HealthStatus::Timeout,
                "timeout",
            ),
            (
                Err(NodeError::from_status(tonic::Status::unavailable("x"))),
                HealthStatus::NotServing,
                "rpc",
            ),
        ];
        for (health, status, kind) in cases {
            let probe = Probe {
                tls: None,
                health,
                info: None,
            };
            let row = judge(probe, 0, Duration::ZERO);
            assert_eq!(row.status, status);
            assert_eq!(row.failure.as_ref().map(|f| f.kind.as_str()), Some(kind));
            assert!(!row.ok());
        }
    }
}
