//! `dicectl certs status`: per node the certificate it serves, the CAs it
//! trusts, whether a key is staged, and its rollover phase; nodes whose
//! trusted set differs from the majority's are flagged.
//!
//! The phase, with `--ca-dir OLD --new-ca-dir NEW`, is one of [`NodePhase`](super::phase::NodePhase)
//! (`start`, `trusted`, `reissued`, `done`); without them it is `steady`
//! when the node trusts exactly one CA and that CA signed its certificate,
//! else `mixed`.

use std::collections::BTreeMap;

use dice_proto::cert::CertSummary;
use dice_proto::info::TrustedCa;

use super::args::StatusArgs;
use super::observe::{self, Observed};
use super::phase::{CaFacts, Rollover};
use crate::args::{GlobalArgs, OutputFormat};
use crate::certs::ca::Ca;
use crate::fanout::fan_out_plan;
use crate::plan::{self, Plan, Request};
use crate::progress::Progress;
use crate::report::RunInfo;
use crate::{Outcome, output, runtime, select, unix_now};

/// One node's certificate state.
#[derive(Debug, Clone)]
pub struct StatusRow {
    /// The node's name.
    pub name: String,
    /// Its address.
    pub address: String,
    /// The certificate it serves, and its SHA-256.
    pub cert: Option<(CertSummary, String)>,
    /// The CAs its listener trusts.
    pub trusted: Vec<TrustedCa>,
    /// Whether a key is staged; `None` if the agent does not say.
    pub key_staged: Option<bool>,
    /// Its rollover phase.
    pub phase: Option<&'static str>,
    /// Its trusted set differs from the majority's.
    pub trust_differs: bool,
    /// Why it could not be read.
    pub error: Option<String>,
}

/// The result of `certs status`.
#[derive(Debug, Clone)]
pub struct StatusReport {
    /// The run.
    pub run: RunInfo,
    /// The time the days left are counted from, Unix seconds.
    pub now: i64,
    /// The trusted set most nodes have (fingerprints, sorted).
    pub majority: Vec<String>,
    /// One row per node.
    pub rows: Vec<StatusRow>,
}

impl StatusReport {
    /// Nodes that could be read.
    pub fn reachable(&self) -> usize {
        self.rows.iter().filter(|row| row.error.is_none()).count()
    }
}

/// Runs `dicectl certs status`. Exit status 1 if a node cannot be read.
pub fn run(global: &GlobalArgs, args: &StatusArgs) -> anyhow::Result<Outcome> {
    let rollover = match (&args.ca_dir, &args.new_ca_dir) {
        (Some(old), Some(new)) => Some(Rollover::new(
            &Ca::load(old, unix_now())?,
            &Ca::load(new, unix_now())?,
        )),
        _ => None,
    };
    let extra_roots: Vec<_> = rollover.iter().flat_map(Rollover::roots).collect();
    let plan = plan::plan(Request {
        if_none: select::IfNone::All,
        extra_roots: &extra_roots,
        ..Request::new(global.fleet.as_deref(), &args.select, &args.conn)
    })?;
    output::plan_details(&plan, global.verbose);
    let mut progress = Progress::stderr(plan.nodes.len());
    let report =
        runtime(plan.nodes.len())?.block_on(status_all(&plan, rollover.as_ref(), &mut progress));
    output::status::status(&report, global.output.unwrap_or(OutputFormat::Table))?;
    Ok(Outcome::from_all_ok(
        report.reachable() == report.rows.len(),
    ))
}

/// Reads every node of `plan`.
pub async fn status_all(
    plan: &Plan,
    rollover: Option<&Rollover>,
    progress: &mut Progress,
) -> StatusReport {
    let timeout = plan.timeout;
    let (probed, run) = fan_out_plan(plan, progress, move |node, tls, _| async move {
        observe::observe(&node.target, tls, timeout).await
    })
    .await;
    let mut rows: Vec<StatusRow> = probed
        .into_iter()
        .map(|probed| row(&probed.node, probed.result, rollover))
        .collect();
    let majority = flag_minority(&mut rows);
    StatusReport {
        run,
        now: unix_now(),
        majority,
        rows,
    }
}

fn row(
    node: &select::Node,
    observed: Result<Observed, crate::client::NodeError>,
    rollover: Option<&Rollover>,
) -> StatusRow {
    let mut row = StatusRow {
        name: node.name.clone(),
        address: node.target.label().to_owned(),
        cert: None,
        trusted: Vec::new(),
        key_staged: None,
        phase: None,
        trust_differs: false,
        error: None,
    };
    match observed {
        Err(error) => row.error = Some(error.to_string()),
        Ok(observed) => {
            row.phase = Some(match rollover {
                Some(rollover) => rollover
                    .needs(&observed.trusted_sha256(), &observed.leaf)
                    .phase()
                    .as_str(),
                None => steady_or_mixed(&observed),
            });
            row.key_staged = observed.tls.as_ref().map(|tls| tls.key_staged);
            row.trusted = observed.trusted().to_vec();
            row.cert = Some((observed.summary, observed.served.sha256));
        }
    }
    row
}

/// `steady`: one trusted CA, and it signed the served certificate; else `mixed`.
fn steady_or_mixed(observed: &Observed) -> &'static str {
    let [only] = observed.trusted() else {
        return "mixed";
    };
    let signed = dice_proto::pem::parse_certs(std::path::Path::new("info"), only.pem.as_bytes())
        .ok()
        .and_then(|certs| certs.into_iter().next())
        .is_some_and(|ca| {
            CaFacts {
                issuing: ca.clone(),
                root: ca,
                fingerprints: Default::default(),
            }
            .signed(&observed.leaf)
        });
    if signed { "steady" } else { "mixed" }
}

/// Flags the rows whose trusted set is not the most common one; returns that set.
pub fn flag_minority(rows: &mut [StatusRow]) -> Vec<String> {
    let set = |row: &StatusRow| {
        let mut shas: Vec<String> = row.trusted.iter().map(|ca| ca.sha256.clone()).collect();
        shas.sort();
        shas
    };
    let mut counts: BTreeMap<Vec<String>, usize> = BTreeMap::new();
    for row in rows.iter().filter(|row| row.error.is_none()) {
        *counts.entry(set(row)).or_default() += 1;
    }
    // The most common set; on a tie, the first in order, so the output is stable.
    let Some(majority) = counts
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
        .map(|(set, _)| set.clone())
    else {
        return Vec::new();
    };
    for row in rows.iter_mut().filter(|row| row.error.is_none()) {
        row.trust_differs = set(row) != majority;
    }
    majority
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, trusted: &[&str]) -> StatusRow {
        StatusRow {
            name: name.to_owned(),
            address: name.to_owned(),
            cert: None,
            trusted: trusted
                .iter()
                .map(|sha| TrustedCa {
                    sha256: (*sha).to_owned(),
                    ..TrustedCa::default()
                })
                .collect(),
            key_staged: Some(false),
            phase: Some("steady"),
            trust_differs: false,
            error: None,
        }
    }

    #[test]
    fn flags_nodes_outside_the_majority() {
        let mut rows = vec![
            row("a", &["old"]),
            row("b", &["new", "old"]),
            row("c", &["old", "new"]),
            row("d", &["old", "new"]),
        ];
        let mut unreachable = row("e", &[]);
        unreachable.error = Some("connect: refused".to_owned());
        rows.push(unreachable);
        let majority = flag_minority(&mut rows);
        assert_eq!(majority, ["new", "old"]);
        let flagged: Vec<&str> = rows
            .iter()
            .filter(|row| row.trust_differs)
            .map(|row| row.name.as_str())
            .collect();
        assert_eq!(
            flagged,
            ["a"],
            "order in the bundle does not matter; unreachable nodes are not flagged"
        );
    }

    #[tokio::test]
    async fn reads_each_node_and_writes_table_and_json() {
        use super::super::fake::Quirks;
        use super::super::tests::{agent_trusting, plan_with};
        use crate::testing::Pki;

        let pki = Pki::new();
        let cas = dice_proto::pem::load_certs(&pki.file("ca.pem")).expect("ca");
        let agent = agent_trusting(&pki, &cas, Quirks::default()).await;
        let plan = plan_with(&pki, &pki, &[], &[&agent]);
        let report = status_all(&plan, None, &mut Progress::disabled()).await;
        let row = &report.rows[0];
        assert!(row.error.is_none(), "{row:?}");
        assert_eq!(row.phase, Some("steady"));
        assert_eq!(row.key_staged, Some(false));
        assert_eq!(row.trusted.len(), 1);

        let text = output::status::table(&report, false);
        let header: Vec<&str> = text
            .lines()
            .next()
            .expect("header")
            .split_whitespace()
            .collect();
        assert_eq!(
            header,
            [
                "NODE",
                "SUBJECT",
                "SERIAL",
                "ISSUER",
                "NOT-AFTER",
                "DAYS",
                "TRUSTED",
                "STAGED",
                "PHASE",
                "TRUST",
                "ERROR"
            ]
        );
        assert!(
            text.contains(crate::certs::rotate::node::short(&row.trusted[0].sha256)),
            "{text}"
        );
        assert!(text.ends_with("read 1/1; phases: 1 steady\n"), "{text}");
        let json: serde_json::Value =
            serde_json::from_str(&output::status::document(&report).expect("json")).expect("parse");
        assert_eq!(json["schema_version"], 1);
        assert_eq!(json["command"], "certs status");
        assert_eq!(json["nodes"][0]["phase"], "steady");
        assert_eq!(json["nodes"][0]["trust_differs"], false);
        assert_eq!(json["summary"]["unreachable"], 0);
    }

    #[test]
    fn unanimous_fleet_flags_nothing() {
        let mut rows = vec![row("a", &["x"]), row("b", &["x"])];
        flag_minority(&mut rows);
        assert!(rows.iter().all(|row| !row.trust_differs));
    }
}
