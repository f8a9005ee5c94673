//! `dicectl certs rotate-ca`: moves the fleet from the CA in `--ca-dir`
//! (OLD) to the one in `--new-ca-dir` (NEW) in three phases, `trust`,
//! `reissue`, `untrust` ([`super::args::PHASES_HELP`]).
//!
//! Each node's phase is read from the node first ([`super::phase`]); then
//! each phase asked for runs on the nodes that need it, canaries first and
//! then batches as `certs rotate` does. `untrust` runs only once every
//! selected node is through `reissue` and dicectl's own client certificate
//! verifies under NEW; asked for alone, it is refused before anything is
//! done (exit 2). dicectl trusts agents of both CAs for the whole run.

use std::future::Future;
use std::sync::Arc;

use anyhow::bail;
use rustls::pki_types::{CertificateDer, UnixTime};
use tokio::time::Instant;
use webpki::{EndEntityCert, KeyUsage};

use super::args::{Phase, RotateCaArgs, ScheduleArgs};
use super::batches;
use super::node::Rotator;
use super::observe::{self, Observed};
use super::phase::{CaFacts, Needs, Rollover};
use super::report::RotateResult;
use super::trust::{self, Change, TrustStep};
use super::{open_audit, report::Rotation};
use crate::args::{GlobalArgs, OutputFormat};
use crate::certs::ca::Ca;
use crate::client::NodeError;
use crate::fanout::fan_out;
use crate::plan::{self, Plan, Request};
use crate::progress::Progress;
use crate::report::RunInfo;
use crate::{Outcome, output, runtime, select, unix_now};

/// What became of one node in a rollover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaResult {
    /// Every phase asked for is done on it.
    Ok,
    /// A step failed.
    Failed,
    /// A step failed its check and was undone.
    RolledBack,
    /// The run stopped before its turn.
    NotRun,
    /// `untrust` is left: it was refused (see the report's note).
    Pending,
    /// `--dry-run`: what would run.
    WouldRun,
}

impl CaResult {
    /// As tables and JSON show it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Failed => "failed",
            Self::RolledBack => "rolled back",
            Self::NotRun => "not run",
            Self::Pending => "untrust left",
            Self::WouldRun => "would run",
        }
    }
}

/// One node's rollover.
#[derive(Debug, Clone)]
pub struct CaRow {
    /// The node's name.
    pub name: String,
    /// Its address.
    pub address: String,
    /// What it needed before the run; `None` if it could not be read.
    pub before: Option<Needs>,
    /// What it needs after the run.
    pub after: Option<Needs>,
    /// The steps done on it: `trust`, `reissue`, `untrust`.
    pub done: Vec<&'static str>,
    /// Serial served before.
    pub old_serial: Option<String>,
    /// Serial served after a reissue.
    pub new_serial: Option<String>,
    /// CA fingerprints trusted before the first trust change.
    pub old_trust: Option<Vec<String>>,
    /// CA fingerprints trusted after the last trust change.
    pub new_trust: Option<Vec<String>>,
    /// What became of it.
    pub result: CaResult,
    /// What went wrong.
    pub error: Option<String>,
}

/// The result of `certs rotate-ca`.
#[derive(Debug, Clone)]
pub struct CaReport {
    /// The run.
    pub run: RunInfo,
    /// `--dry-run`.
    pub dry_run: bool,
    /// OLD.
    pub ca_dir: std::path::PathBuf,
    /// NEW.
    pub new_ca_dir: std::path::PathBuf,
    /// `--phase`, if given.
    pub phase: Option<Phase>,
    /// The audit log written, if any.
    pub audit: Option<std::path::PathBuf>,
    /// Why `untrust` did not run, when it was due but refused.
    pub untrust_refused: Option<String>,
    /// One row per node.
    pub rows: Vec<CaRow>,
}

impl CaReport {
    /// Whether every node is where the run wanted it.
    pub fn ok(&self) -> bool {
        self.untrust_refused.is_none()
            && self
                .rows
                .iter()
                .all(|row| matches!(row.result, CaResult::Ok | CaResult::WouldRun))
    }

    /// Nodes with `result`.
    pub fn count(&self, result: CaResult) -> usize {
        self.rows.iter().filter(|row| row.result == result).count()
    }
}

/// Runs `dicectl certs rotate-ca`.
pub fn run(global: &GlobalArgs, args: &RotateCaArgs) -> anyhow::Result<Outcome> {
    let now = unix_now();
    let old = Ca::load(&args.ca_dir, now)?;
    let new = Ca::load(&args.new_ca_dir, now)?;
    if old.cert == new.cert {
        bail!(
            "--ca-dir {} and --new-ca-dir {} hold the same CA certificate (pass the new CA's directory as --new-ca-dir, e.g. one made by `dicectl certs init`)",
            args.ca_dir.display(),
            args.new_ca_dir.display()
        );
    }
    let rollover = Rollover::new(&old, &new);
    let extra_roots = rollover.roots();
    let plan = plan::plan(Request {
        extra_roots: &extra_roots,
        ..Request::new(global.fleet.as_deref(), &args.select, &args.conn)
    })?;
    let operator = operator_verifies(&plan.client_chain, &new, &args.new_ca_dir);
    if args.phase == Some(Phase::Untrust)
        && let Err(refusal) = &operator
    {
        bail!("untrust refused: {refusal}");
    }
    let audit = open_audit(&args.ca_dir, &plan, args.dry_run)?;
    output::plan_details(&plan, global.verbose);
    let rotator = Rotator::new(&plan, new, args.schedule.days, audit);
    let mut progress = Progress::stderr(plan.nodes.len());
    let report = runtime(plan.nodes.len())?.block_on(rollover_all(
        &plan,
        &rollover,
        &rotator,
        args,
        operator.err(),
        &mut progress,
    ))?;
    output::rotate::rotate_ca(&report, global.output.unwrap_or(OutputFormat::Table))?;
    Ok(Outcome::from_all_ok(report.ok()))
}

/// Whether `chain` (dicectl's client certificate) verifies under NEW as an
/// agent would verify it once it trusts NEW only; the error says how to get one that does.
pub fn operator_verifies(
    chain: &[CertificateDer<'static>],
    new: &Ca,
    new_dir: &std::path::Path,
) -> Result<(), String> {
    let fix = format!(
        "make one with `dicectl certs issue --ca-dir {} --client NAME --out DIR`, then pass --cert DIR/NAME.pem --key DIR/NAME-key.pem",
        new_dir.display()
    );
    let Some(leaf) = chain.first() else {
        return Err(format!("dicectl has no client certificate ({fix})"));
    };
    let root = CaFacts::of(new).root;
    let anchors: Vec<_> = webpki::anchor_from_trusted_cert(&root)
        .map(|anchor| vec![anchor])
        .unwrap_or_default();
    let intermediates: Vec<CertificateDer<'static>> = chain[1..]
        .iter()
        .chain(&new.intermediates)
        .cloned()
        .collect();
    let time = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        u64::try_from(unix_now()).unwrap_or_default(),
    ));
    let algorithms = dice_proto::crypto::provider()
        .signature_verification_algorithms
        .all;
    let verified = EndEntityCert::try_from(leaf).is_ok_and(|cert| {
        cert.verify_for_usage(
            algorithms,
            &anchors,
            &intermediates,
            time,
            KeyUsage::client_auth(),
            None,
            None,
        )
        .is_ok()
    });
    if verified {
        Ok(())
    } else {
        Err(format!(
            "dicectl's client certificate does not verify under the new CA in {}: once nodes trust only that CA they would refuse dicectl ({fix})",
            new_dir.display()
        ))
    }
}

/// Observes every node, then runs the phases asked for (all that are left without `--phase`).
pub async fn rollover_all(
    plan: &Plan,
    rollover: &Rollover,
    rotator: &Rotator,
    args: &RotateCaArgs,
    operator_refusal: Option<String>,
    progress: &mut Progress,
) -> anyhow::Result<CaReport> {
    let started_at = unix_now();
    let start = Instant::now();
    let timeout = plan.timeout;
    let tls = rotator.tls.clone();
    let observed: Vec<Result<Observed, NodeError>> = fan_out(
        plan.nodes.clone(),
        plan.concurrency,
        timeout,
        &mut Progress::disabled(),
        move |node, _| {
            let tls = tls.clone();
            async move { observe::observe(&node.target, tls, timeout).await }
        },
    )
    .await
    .into_iter()
    .map(|probed| probed.result)
    .collect();
    let mut rows: Vec<CaRow> = plan
        .nodes
        .iter()
        .zip(&observed)
        .map(|(node, observed)| first_row(node, observed, rollover))
        .collect();

    if args.phase == Some(Phase::Untrust) {
        let behind = not_reissued(&rows);
        if !behind.is_empty() {
            bail!(
                "untrust refused: not every selected node is through reissue: {} (run `dicectl certs rotate-ca` without --phase to finish the earlier phases first)",
                behind.join(", ")
            );
        }
    }
    let dry_run = rotator.audit.is_none();
    let mut untrust_refused = None;
    if dry_run {
        for row in rows.iter_mut().filter(|row| row.error.is_none()) {
            row.result = CaResult::WouldRun;
        }
    } else {
        let wants = |phase| args.phase.is_none_or(|asked| asked == phase);
        let steps = Steps {
            plan,
            rotator,
            schedule: &args.schedule,
        };
        if wants(Phase::Trust) {
            let change = Change::Add(rollover.new.root.clone());
            steps.trust(&mut rows, progress, change).await;
        }
        if wants(Phase::Reissue) {
            steps.reissue(&mut rows, progress).await;
        }
        if wants(Phase::Untrust) {
            let behind = not_reissued(&rows);
            let refusal = if !behind.is_empty() {
                Some(format!(
                    "not every selected node is through reissue: {} (fix them, then run the same command again)",
                    behind.join(", ")
                ))
            } else {
                operator_refusal
            };
            match refusal {
                Some(refusal) => untrust_refused = Some(refusal),
                None => {
                    let change = Change::Remove(rollover.removed());
                    steps.trust(&mut rows, progress, change).await;
                }
            }
        }
        for row in rows.iter_mut().filter(|row| row.result == CaResult::Ok) {
            if untrust_refused.is_some() && row.after.is_some_and(|needs| needs.untrust) {
                row.result = CaResult::Pending;
            }
        }
    }
    Ok(CaReport {
        run: RunInfo {
            started_at,
            elapsed: start.elapsed(),
            timeout,
            concurrency: plan.concurrency,
        },
        dry_run,
        ca_dir: args.ca_dir.clone(),
        new_ca_dir: args.new_ca_dir.clone(),
        phase: args.phase,
        audit: rotator.audit.as_ref().map(|audit| audit.path().to_owned()),
        untrust_refused,
        rows,
    })
}

/// A node's row before any step: its phase, or why it could not be read.
fn first_row(
    node: &select::Node,
    observed: &Result<Observed, NodeError>,
    rollover: &Rollover,
) -> CaRow {
    let mut row = CaRow {
        name: node.name.clone(),
        address: node.target.label().to_owned(),
        before: None,
        after: None,
        done: Vec::new(),
        old_serial: None,
        new_serial: None,
        old_trust: None,
        new_trust: None,
        result: CaResult::Ok,
        error: None,
    };
    match observed {
        Ok(observed) if observed.tls.is_none() => {
            row.result = CaResult::Failed;
            row.error = Some(trust::NO_TRUST_STATE.to_owned());
        }
        Ok(observed) => {
            let needs = rollover.needs(&observed.trusted_sha256(), &observed.leaf);
            row.before = Some(needs);
            row.after = Some(needs);
            row.old_serial = Some(observed.served.serial.clone());
        }
        Err(error) => {
            row.result = CaResult::Failed;
            row.error = Some(error.to_string());
        }
    }
    row
}

/// The nodes not through reissue, each with why: `node-2 (trusted)`.
fn not_reissued(rows: &[CaRow]) -> Vec<String> {
    rows.iter()
        .filter_map(|row| match (row.after, &row.error) {
            (Some(needs), None) if needs.reissued() => None,
            (Some(needs), _) => Some(format!("{} ({})", row.name, needs.phase().as_str())),
            (None, _) => Some(format!("{} (unreachable)", row.name)),
        })
        .collect()
}

/// What the steps of a rollover share: the nodes, the rotator (NEW and the
/// audit log), and the canaries and batches they run in.
struct Steps<'a> {
    plan: &'a Plan,
    rotator: &'a Rotator,
    schedule: &'a ScheduleArgs,
}

// === impl Steps ===

impl Steps<'_> {
    /// Runs `work` on the rows `eligible` picks, canaries first then batches;
    /// returns each picked row's index with its result, `None` if not run.
    async fn run_on<T, F, Fut>(
        &self,
        rows: &[CaRow],
        progress: &mut Progress,
        eligible: impl Fn(&CaRow) -> bool,
        work: F,
    ) -> Vec<(usize, Option<T>)>
    where
        F: Fn(usize) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = (T, bool)> + Send + 'static,
        T: Send + 'static,
    {
        let (plan, schedule) = (self.plan, self.schedule);
        let picked: Vec<usize> = (0..rows.len()).filter(|&i| eligible(&rows[i])).collect();
        let order = batches::schedule(picked.len(), schedule.canary, schedule.batch);
        let indices = Arc::new(picked.clone());
        let results = batches::run(
            &order,
            picked.len(),
            plan.concurrency,
            schedule.max_failed,
            progress,
            move |position| {
                let (indices, work) = (indices.clone(), work.clone());
                async move { work(indices[position]).await }
            },
        )
        .await;
        picked.into_iter().zip(results).collect()
    }

    /// SetTrust with `change` on every healthy row that needs it: adding a CA
    /// where the node still needs `trust`, removing where it needs `untrust`.
    async fn trust(&self, rows: &mut [CaRow], progress: &mut Progress, change: Change) {
        let (plan, rotator) = (self.plan, self.rotator);
        let untrust = matches!(change, Change::Remove(_));
        let wanted = |needs: Needs| if untrust { needs.untrust } else { needs.trust };
        let nodes = Arc::new(plan.nodes.clone());
        let (tls, timeout, audit) = (rotator.tls.clone(), rotator.timeout, rotator.audit.clone());
        let change = Arc::new(change);
        let results = self
            .run_on(
                rows,
                progress,
                |row| row.error.is_none() && row.after.is_some_and(wanted),
                move |index| {
                    let (nodes, tls, change, audit) =
                        (nodes.clone(), tls.clone(), change.clone(), audit.clone());
                    async move {
                        let step =
                            trust::change(&nodes[index], &tls, timeout, &change, audit.as_deref())
                                .await;
                        let failed = step.error.is_some();
                        (step, failed)
                    }
                },
            )
            .await;
        for (index, step) in results {
            let row = &mut rows[index];
            match step {
                None => row.result = CaResult::NotRun,
                Some(TrustStep {
                    error: Some(error),
                    rolled_back,
                    ..
                }) => {
                    row.result = if rolled_back {
                        CaResult::RolledBack
                    } else {
                        CaResult::Failed
                    };
                    row.error = Some(error);
                }
                Some(step) => {
                    row.done.push(if untrust { "untrust" } else { "trust" });
                    if let Some(needs) = &mut row.after {
                        if untrust {
                            needs.untrust = false;
                        } else {
                            needs.trust = false;
                        }
                    }
                    row.old_trust.get_or_insert(step.old_trust);
                    row.new_trust = Some(step.new_trust);
                }
            }
        }
    }

    /// The rotate flow with NEW on every healthy row that needs a reissue.
    async fn reissue(&self, rows: &mut [CaRow], progress: &mut Progress) {
        for row in rows.iter_mut() {
            if row.error.is_none() && row.after.is_some_and(|needs| needs.reissue && needs.trust) {
                row.result = CaResult::Failed;
                row.error = Some(
                "reissue refused: the node does not trust the new CA yet (run --phase trust first)"
                    .to_owned(),
            );
            }
        }
        let nodes = Arc::new(self.plan.nodes.clone());
        let rotator = self.rotator.clone();
        let results = self
            .run_on(
                rows,
                progress,
                |row| row.error.is_none() && row.after.is_some_and(|needs| needs.reissue),
                move |index| rotator.clone().rotate_at(nodes.clone(), index),
            )
            .await;
        for (index, rotation) in results {
            let row = &mut rows[index];
            let Some(Rotation {
                new, result, error, ..
            }) = rotation
            else {
                row.result = CaResult::NotRun;
                continue;
            };
            match result {
                RotateResult::Rotated => {
                    row.done.push("reissue");
                    row.new_serial = new.map(|id| id.serial);
                    if let Some(needs) = &mut row.after {
                        needs.reissue = false;
                    }
                }
                other => {
                    row.result = if other == RotateResult::RolledBack {
                        CaResult::RolledBack
                    } else {
                        CaResult::Failed
                    };
                    row.error = error.or_else(|| Some(other.as_str().to_owned()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use dice_proto::cert::sha256_hex;
    use dice_proto::pem::load_certs;

    use super::super::fake::Quirks;
    use super::super::phase::NodePhase;
    use super::super::tests::{agent_trusting, plan_with, schedule};
    use super::*;
    use crate::args::{ConnArgs, SelectArgs};
    use crate::testing::Pki;

    fn args(old: &Pki, new: &Pki, phase: Option<Phase>) -> RotateCaArgs {
        RotateCaArgs {
            ca_dir: old.file(""),
            new_ca_dir: new.file(""),
            phase,
            dry_run: false,
            schedule: schedule(1),
            select: SelectArgs::default(),
            conn: ConnArgs::default(),
        }
    }

    fn load(dir: &Path) -> Ca {
        Ca::load(dir, unix_now()).expect("ca")
    }

    async fn rollover_with(
        old: &Pki,
        new: &Pki,
        client: &Pki,
        agents: &[&super::super::fake::FakeAgent],
        phase: Option<Phase>,
    ) -> anyhow::Result<CaReport> {
        let (old_ca, new_ca) = (load(&old.file("")), load(&new.file("")));
        let rollover = Rollover::new(&old_ca, &new_ca);
        let roots = rollover.roots();
        let plan = plan_with(old, client, &roots, agents);
        let operator = operator_verifies(&plan.client_chain, &new_ca, &new.file(""));
        let audit = super::super::open_audit(&old.file(""), &plan, false).expect("audit");
        let rotator = Rotator::new(&plan, new_ca, 30, audit);
        rollover_all(
            &plan,
            &rollover,
            &rotator,
            &args(old, new, phase),
            operator.err(),
            &mut Progress::disabled(),
        )
        .await
    }

    #[tokio::test]
    async fn rolls_over_and_resumes_once_the_operator_has_a_new_certificate() {
        let (old, new) = (Pki::new(), Pki::new());
        let client_cas: Vec<CertificateDer<'static>> = [&old, &new]
            .iter()
            .map(|pki| load_certs(&pki.file("ca.pem")).expect("ca")[0].clone())
            .collect();
        let agents = [
            agent_trusting(&old, &client_cas, Quirks::default()).await,
            agent_trusting(&old, &client_cas, Quirks::default()).await,
        ];
        let refs: Vec<_> = agents.iter().collect();
        let (old_sha, new_sha) = (sha256_hex(&client_cas[0]), sha256_hex(&client_cas[1]));

        // --phase untrust before anything: refused, nothing done.
        let error = rollover_with(&old, &new, &new, &refs, Some(Phase::Untrust))
            .await
            .expect_err("refused");
        assert!(
            error
                .to_string()
                .starts_with("untrust refused: not every selected node is through reissue: "),
            "{error}"
        );
        assert!(agents.iter().all(|agent| agent.calls().is_empty()));

        // With the old client certificate: trust and reissue run, untrust is left.
        let report = rollover_with(&old, &new, &old, &refs, None)
            .await
            .expect("report");
        let refusal = report.untrust_refused.as_deref().expect("untrust refused");
        assert!(
            refusal.contains("dicectl certs issue --ca-dir"),
            "{refusal}"
        );
        assert!(!report.ok());
        for row in &report.rows {
            assert_eq!(
                row.before.map(|n| n.phase()),
                Some(NodePhase::Start),
                "{row:?}"
            );
            assert_eq!(
                row.after.map(|n| n.phase()),
                Some(NodePhase::Reissued),
                "{row:?}"
            );
            assert_eq!(row.done, ["trust", "reissue"]);
            assert_eq!(row.result, CaResult::Pending);
            assert_eq!(
                row.new_trust.as_deref(),
                Some(&[old_sha.clone(), new_sha.clone()][..])
            );
        }
        for agent in &agents {
            assert_eq!(agent.calls(), ["set_trust", "prepare", "install"]);
            assert!(CaFacts::of(&load(&new.file(""))).signed(&agent.leaf()));
        }

        // The same command with a client certificate of NEW finishes the job.
        let report = rollover_with(&old, &new, &new, &refs, None)
            .await
            .expect("report");
        assert!(report.ok(), "{report:#?}");
        for row in &report.rows {
            assert_eq!(row.before.map(|n| n.phase()), Some(NodePhase::Reissued));
            assert_eq!(row.after.map(|n| n.phase()), Some(NodePhase::Done));
            assert_eq!(row.done, ["untrust"]);
        }
        for agent in &agents {
            let trusted: Vec<String> = agent.trusted().iter().map(|der| sha256_hex(der)).collect();
            assert_eq!(trusted, std::slice::from_ref(&new_sha));
        }
        let audit = std::fs::read_to_string(old.file("audit.jsonl")).expect("audit");
        assert!(audit.contains("\"action\":\"set_trust\""), "{audit}");
        assert!(audit.contains("\"old_trust\":["), "{audit}");
    }

    #[test]
    fn operator_certificate_must_verify_under_new() {
        let (old, new) = (Pki::new(), Pki::new());
        let new_ca = load(&new.file(""));
        let chain = |pki: &Pki| load_certs(&pki.file("client.pem")).expect("client");
        operator_verifies(&chain(&new), &new_ca, Path::new("NEW")).expect("new client verifies");
        let error = operator_verifies(&chain(&old), &new_ca, Path::new("NEW")).expect_err("old");
        assert!(
            error.contains("`dicectl certs issue --ca-dir NEW --client NAME --out DIR`"),
            "{error}"
        );
    }
}
