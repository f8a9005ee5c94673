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
//!
//! Everything that can be checked without a node is checked before the
//! first connection (the CA directory, the TLS files, the audit log): such
//! an error is exit status 2 and no node was touched.

pub mod args;
pub mod audit;
pub mod batches;
pub mod node;
pub mod observe;
pub mod report;
pub mod sign;

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
use crate::{Outcome, output, runtime, select, unix_now};

/// Runs `dicectl certs rotate`.
pub fn run(global: &GlobalArgs, args: &RotateArgs) -> anyhow::Result<Outcome> {
    let ca = Ca::load(&args.ca_dir, unix_now())?;
    let plan = plan::plan(Request {
        fleet: global.fleet.as_deref(),
        select: &args.select,
        if_none: select::IfNone::Refuse,
        conn: &args.conn,
        expiry_warning: None,
        extra_roots: &[],
    })?;
    let audit = open_audit(&args.ca_dir, &plan, args.dry_run)?;
    output::plan_details(&plan, global.verbose);
    let rotator = Rotator {
        tls: plan.tls.clone(),
        timeout: plan.timeout,
        ca: Arc::new(ca),
        days: args.schedule.days,
        if_expires_within: args.if_expires_within,
        audit,
    };
    let mut progress = Progress::stderr(plan.nodes.len());
    let report = runtime(plan.nodes.len())?.block_on(rotate_all(
        &plan,
        &rotator,
        &args.schedule,
        &mut progress,
    ));
    output::rotate::rotate(&report, global.output.unwrap_or(OutputFormat::Table))?;
    Ok(if report.ok() == report.rows.len() {
        Outcome::Success
    } else {
        Outcome::NodeFailed
    })
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
        move |index: usize| {
            let (nodes, rotator) = (nodes.clone(), rotator.clone());
            async move {
                let rotation = rotator.rotate(&nodes[index]).await;
                let failed = !rotation.result.ok();
                (rotation, failed)
            }
        }
    };
    let dry_run = rotator.audit.is_none();
    let results = if dry_run {
        let everything = batches::Schedule {
            canaries: Vec::new(),
            batches: vec![(0..nodes.len()).collect()],
        };
        batches::run(
            &everything,
            nodes.len(),
            plan.concurrency,
            usize::MAX,
            progress,
            work,
        )
        .await
    } else {
        batches::run(
            order,
            nodes.len(),
            plan.concurrency,
            max_failed,
            progress,
            work,
        )
        .await
    };
    results
        .into_iter()
        .map(|result| result.unwrap_or_else(Rotation::not_run))
        .collect()
}
