//! `dicectl certs rotate`: a new certificate on every selected node from the
//! CA directory, with each node's private key made on the node and never
//! sent anywhere; and `certs rotate-ca`, `certs status`, built on it.
//!
//! - [`args`]: the flags (`--help` text, the audit log, the phases, exit status).
//! - [`observe`]: one connection to a node, what it serves and trusts.
//! - [`sign`]: the CSR checked against the served certificate, then signed.
//! - [`node`]: one node's prepare, sign, install, verify, rollback.
//! - [`batches`]: canaries, then batches, and when the run stops.
//! - [`audit`]: `audit.jsonl`, one JSON line per action.
//! - [`report`]: what happened, as data; [`crate::output::rotate`] writes it.
//! - [`rollover`]: `certs rotate-ca`, the phases `trust`, `reissue`, `untrust`;
//!   [`phase`] reads where a node stands, [`trust`] changes the CAs it trusts.
//! - [`status`]: `certs status`, what each node serves and trusts, and its phase.
//!
//! Everything that can be checked without a node is checked before the
//! first connection (the CA directory, the TLS files, the audit log): such
//! an error is exit status 2 and no node was touched.

pub mod args;
pub mod audit;
pub mod batches;
#[cfg(test)]
mod fake;
pub mod node;
pub mod observe;
pub mod phase;
pub mod report;
pub mod rollover;
pub mod sign;
pub mod status;
pub mod trust;

use std::path::Path;
use std::sync::Arc;

use dice_proto::cert::CertSummary;
use tokio::time::Instant;

use self::args::{RotateArgs, ScheduleArgs};
use self::audit::Audit;
use self::node::Rotator;
use self::report::{RotateReport, RotateRow, Rotation};
use crate::args::{GlobalArgs, OutputFormat};
use crate::certs::ca::Ca;
use crate::plan::{self, Plan, Request};
use crate::progress::Progress;
use crate::report::RunInfo;
use crate::{Outcome, output, runtime, unix_now};

/// Runs `dicectl certs rotate`.
pub fn run(global: &GlobalArgs, args: &RotateArgs) -> anyhow::Result<Outcome> {
    let ca = Ca::load(&args.ca_dir, unix_now())?;
    let plan = plan::plan(Request::new(
        global.fleet.as_deref(),
        &args.select,
        &args.conn,
    ))?;
    let audit = open_audit(&args.ca_dir, &plan, args.dry_run)?;
    output::plan_details(&plan, global.verbose);
    let rotator = Rotator {
        if_expires_within: args.if_expires_within,
        ..Rotator::new(&plan, ca, args.schedule.days, audit)
    };
    let mut progress = Progress::stderr(plan.nodes.len());
    let report = runtime(plan.nodes.len())?.block_on(rotate_all(
        &plan,
        &rotator,
        &args.schedule,
        &mut progress,
    ));
    output::rotate::rotate(&report, global.output.unwrap_or(OutputFormat::Table))?;
    Ok(Outcome::from_all_ok(report.ok() == report.rows.len()))
}

/// The subject of dicectl's client certificate: the operator in the audit log.
pub fn operator(plan: &Plan) -> String {
    plan.client_chain
        .first()
        .and_then(|leaf| CertSummary::parse(leaf).ok())
        .map_or_else(|| "unknown".to_owned(), |summary| summary.subject)
}

/// The audit log in `dir`, unless this is a dry run.
pub fn open_audit(dir: &Path, plan: &Plan, dry_run: bool) -> anyhow::Result<Option<Arc<Audit>>> {
    if dry_run {
        return Ok(None);
    }
    Ok(Some(Arc::new(Audit::open(dir, &operator(plan))?)))
}

/// Rotates the nodes of `plan` (or, without an audit log, says what it
/// would do): canaries, then batches, as `schedule` says.
pub async fn rotate_all(
    plan: &Plan,
    rotator: &Rotator,
    schedule: &ScheduleArgs,
    progress: &mut Progress,
) -> RotateReport {
    let started_at = unix_now();
    let start = Instant::now();
    let selected = plan.nodes.len();
    let order = batches::schedule(selected, schedule.canary, schedule.batch);
    let stages = order.stages(selected);
    let rotations = rotate_scheduled(plan, rotator, &order, schedule.max_failed, progress).await;
    let rows = plan
        .nodes
        .iter()
        .zip(stages)
        .zip(rotations)
        .map(|((node, stage), rotation)| RotateRow {
            name: node.name.clone(),
            address: node.target.label().to_owned(),
            stage,
            rotation,
        })
        .collect();
    RotateReport {
        run: RunInfo {
            started_at,
            elapsed: start.elapsed(),
            timeout: plan.timeout,
            concurrency: plan.concurrency,
        },
        dry_run: rotator.audit.is_none(),
        ca_dir: rotator.ca.dir.clone(),
        audit: rotator.audit.as_ref().map(|audit| audit.path().to_owned()),
        days: schedule.days,
        canary: schedule.canary,
        batch: (schedule.batch, schedule.batch.nodes(selected)),
        max_failed: schedule.max_failed,
        rows,
    }
}

/// Each node's rotation in `order`; a dry run reads every node at once.
pub async fn rotate_scheduled(
    plan: &Plan,
    rotator: &Rotator,
    order: &batches::Schedule,
    max_failed: usize,
    progress: &mut Progress,
) -> Vec<Rotation> {
    let nodes = Arc::new(plan.nodes.clone());
    let work = {
        let (nodes, rotator) = (nodes.clone(), rotator.clone());
        move |index: usize| rotator.clone().rotate_at(nodes.clone(), index)
    };
    // A dry run changes nothing: every node at once, and no stop rule.
    let everything = batches::Schedule {
        canaries: Vec::new(),
        batches: vec![(0..nodes.len()).collect()],
    };
    let (order, max_failed) = if rotator.audit.is_none() {
        (&everything, usize::MAX)
    } else {
        (order, max_failed)
    };
    let results = batches::run(
        order,
        nodes.len(),
        plan.concurrency,
        max_failed,
        progress,
        work,
    )
    .await;
    results
        .into_iter()
        .map(|result| result.unwrap_or_else(Rotation::not_run))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use dice_proto::cert::sha256_hex;
    use dice_proto::pem::{load_certs, load_key};
    use rustls::pki_types::CertificateDer;

    use super::batches::BatchSize;
    use super::fake::{FakeAgent, Quirks};
    use super::report::RotateResult;
    use super::*;
    use crate::args::{ConnArgs, SelectArgs};
    use crate::testing::Pki;

    pub(super) async fn agent(pki: &Pki, quirks: Quirks) -> FakeAgent {
        let ca = load_certs(&pki.file("ca.pem")).expect("ca");
        agent_trusting(pki, &ca, quirks).await
    }

    /// An agent serving `pki`'s server certificate, trusting `pki`'s CA,
    /// and accepting clients of `client_cas`.
    pub(super) async fn agent_trusting(
        pki: &Pki,
        client_cas: &[CertificateDer<'static>],
        quirks: Quirks,
    ) -> FakeAgent {
        let chain = load_certs(&pki.file("server.pem")).expect("chain");
        let key = load_key(&pki.file("server-key.pem")).expect("key");
        let ca = load_certs(&pki.file("ca.pem")).expect("ca");
        FakeAgent::spawn(chain, key, client_cas, ca, quirks).await
    }

    fn plan_for(pki: &Pki, agents: &[&FakeAgent]) -> Plan {
        plan_with(pki, pki, &[], agents)
    }

    /// A plan trusting `ca`'s CA and `extra_roots`, presenting `client`'s client certificate.
    pub(super) fn plan_with(
        ca: &Pki,
        client: &Pki,
        extra_roots: &[CertificateDer<'static>],
        agents: &[&FakeAgent],
    ) -> Plan {
        let select = SelectArgs {
            node: agents.iter().map(|agent| agent.addr.to_string()).collect(),
            ..SelectArgs::default()
        };
        let conn = ConnArgs {
            ca: Some(ca.file("ca.pem")),
            cert: Some(client.file("client.pem")),
            key: Some(client.file("client-key.pem")),
            timeout: Some(Duration::from_secs(5)),
            ..ConnArgs::default()
        };
        plan::plan(Request {
            extra_roots,
            ..Request::new(None, &select, &conn)
        })
        .expect("plan")
    }

    fn rotator(pki: &Pki, plan: &Plan, dry_run: bool) -> Rotator {
        Rotator::new(
            plan,
            Ca::load(&pki.file(""), unix_now()).expect("ca"),
            30,
            open_audit(&pki.file(""), plan, dry_run).expect("audit"),
        )
    }

    pub(super) fn schedule(canary: usize) -> ScheduleArgs {
        ScheduleArgs {
            days: 30,
            canary,
            batch: BatchSize::Percent(10),
            max_failed: 0,
        }
    }

    #[tokio::test]
    async fn rotates_every_node_and_audits_each_step() {
        let pki = Pki::new();
        let agents = [
            agent(&pki, Quirks::default()).await,
            agent(&pki, Quirks::default()).await,
            agent(&pki, Quirks::default()).await,
        ];
        let before: Vec<String> = agents.iter().map(|a| sha256_hex(&a.leaf())).collect();
        let plan = plan_for(&pki, &agents.iter().collect::<Vec<_>>());
        let rotator = rotator(&pki, &plan, false);
        let report = rotate_all(&plan, &rotator, &schedule(1), &mut Progress::disabled()).await;
        assert_eq!(report.ok(), 3, "{report:#?}");
        assert_eq!(report.count(RotateResult::Rotated), 3);
        for (agent, before) in agents.iter().zip(&before) {
            let now = sha256_hex(&agent.leaf());
            assert_ne!(&now, before);
            let row = report
                .rows
                .iter()
                .find(|row| row.name == agent.addr.to_string())
                .expect("row");
            assert_eq!(row.rotation.new.as_ref().expect("new").sha256, now);
            assert_eq!(agent.calls(), ["prepare", "install"]);
        }

        let audit = std::fs::read_to_string(pki.file("audit.jsonl")).expect("audit");
        assert!(
            !audit.contains("PRIVATE KEY") && !audit.contains("REQUEST"),
            "{audit}"
        );
        let lines: Vec<serde_json::Value> = audit
            .lines()
            .map(|line| serde_json::from_str(line).expect("json"))
            .collect();
        assert_eq!(lines.len(), 12, "{audit}");
        let actions: Vec<&str> = lines[..4]
            .iter()
            .map(|line| line["action"].as_str().expect("action"))
            .collect();
        assert_eq!(actions, ["prepare", "sign", "install", "verify"]);
        assert_eq!(lines[0]["operator"], operator(&plan));
        assert!(lines.iter().all(|line| line["outcome"] == "ok"));
    }

    #[tokio::test]
    async fn a_node_that_keeps_its_old_certificate_is_rolled_back() {
        let pki = Pki::new();
        let quirks = Quirks {
            ignore_install: true,
            ..Quirks::default()
        };
        let agents = [agent(&pki, quirks).await, agent(&pki, quirks).await];
        let plan = plan_for(&pki, &agents.iter().collect::<Vec<_>>());
        let rotator = rotator(&pki, &plan, false);
        let report = rotate_all(&plan, &rotator, &schedule(1), &mut Progress::disabled()).await;
        let results: Vec<RotateResult> =
            report.rows.iter().map(|row| row.rotation.result).collect();
        assert_eq!(results, [RotateResult::RolledBack, RotateResult::NotRun]);
        let error = report.rows[0].rotation.error.as_deref().expect("error");
        assert!(
            error.starts_with("verify: a new handshake presents certificate "),
            "{error}"
        );
        assert!(error.contains("; rolled back to serial "), "{error}");
        let canary = agents
            .iter()
            .find(|agent| agent.addr.to_string() == report.rows[0].name)
            .expect("canary");
        assert_eq!(canary.calls(), ["prepare", "install", "rollback"]);
    }

    #[tokio::test]
    async fn a_csr_for_another_subject_is_refused() {
        let pki = Pki::new();
        let quirks = Quirks {
            csr_subject: Some("bank.example"),
            ..Quirks::default()
        };
        let agent = agent(&pki, quirks).await;
        let plan = plan_for(&pki, &[&agent]);
        let rotator = rotator(&pki, &plan, false);
        let report = rotate_all(&plan, &rotator, &schedule(1), &mut Progress::disabled()).await;
        let rotation = &report.rows[0].rotation;
        assert_eq!(rotation.result, RotateResult::Failed);
        let error = rotation.error.as_deref().expect("error");
        assert!(
            error.starts_with(
                "sign: refused the node's CSR: the CSR asks for subject \"CN=bank.example\""
            ),
            "{error}"
        );
        assert_eq!(agent.calls(), ["prepare"]);
    }

    #[tokio::test]
    async fn dry_run_and_expiry_filter_change_nothing() {
        let pki = Pki::new();
        let agent = agent(&pki, Quirks::default()).await;
        let plan = plan_for(&pki, &[&agent]);
        let rotator = rotator(&pki, &plan, true);
        let report = rotate_all(&plan, &rotator, &schedule(1), &mut Progress::disabled()).await;
        assert_eq!(report.rows[0].rotation.result, RotateResult::WouldRotate);
        assert!(report.dry_run);

        let rotator = Rotator {
            if_expires_within: Some(Duration::from_secs(86_400)),
            ..super::tests::rotator(&pki, &plan, false)
        };
        let report = rotate_all(&plan, &rotator, &schedule(1), &mut Progress::disabled()).await;
        let rotation = &report.rows[0].rotation;
        assert_eq!(rotation.result, RotateResult::Skipped);
        assert!(
            rotation
                .note
                .as_deref()
                .expect("note")
                .contains("later than --if-expires-within 1 day"),
            "{rotation:?}"
        );
        assert!(agent.calls().is_empty());
        let audit = std::fs::read_to_string(pki.file("audit.jsonl")).expect("audit");
        assert_eq!(audit.lines().count(), 1, "{audit}");
        assert!(
            audit.contains("\"action\":\"skip\",") && audit.contains("\"outcome\":\"skipped\""),
            "{audit}"
        );
    }
}
