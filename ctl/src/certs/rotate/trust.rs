//! Changes the CA bundle a node trusts for client certificates: the bundle
//! it reports (each CA's PEM from `GetInfo`) with a CA added or some
//! removed, sent with `SetTrust`, then checked from a fresh connection (the
//! node must still accept dicectl, and report the new set); if that check
//! fails, `Rollback(TRUST)` on the first connection puts the old bundle back.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use dice_proto::cert::sha256_hex;
use dice_proto::info::admin_service_client::AdminServiceClient;
use dice_proto::info::{RollbackRequest, RollbackTarget, SetTrustRequest, TrustedCa};
use dice_proto::pem::pem_chain;
use rustls::ClientConfig;
use rustls::pki_types::CertificateDer;
use tokio::time::{Instant, timeout_at};

use super::audit::{ActionOutcome, Audit, Entry};
use super::node::rpc_error;
use super::observe::{self, Observed};
use crate::select::Node;

/// Why a node whose info API reports no trust state for our listener is left alone:
/// rebuilding its bundle from nothing would drop every CA it trusts.
pub const NO_TRUST_STATE: &str = "the node reports no client CA bundle for this listener (upgrade dice-agent: its info API must report the trusted CAs of each mTLS listener)";

/// How the bundle changes.
#[derive(Debug, Clone)]
pub enum Change {
    /// Add this CA (if not there yet).
    Add(CertificateDer<'static>),
    /// Remove the CAs with these fingerprints.
    Remove(BTreeSet<String>),
}

/// The new bundle, PEM, and its fingerprints, from what the node trusts now.
pub fn bundle(trusted: &[TrustedCa], change: &Change) -> Result<(String, Vec<String>), String> {
    if let Some(ca) = trusted.iter().find(|ca| ca.pem.trim().is_empty()) {
        return Err(format!(
            "the node reports no PEM for its trusted CA {} (upgrade dice-agent: its info API must carry each CA's PEM)",
            ca.subject
        ));
    }
    let mut pems: Vec<String> = Vec::new();
    let mut fingerprints: Vec<String> = Vec::new();
    let mut keep = |sha: &str, pem: &str| {
        if !fingerprints.iter().any(|seen| seen == sha) {
            fingerprints.push(sha.to_owned());
            let mut pem = pem.trim_end().to_owned();
            pem.push('\n');
            pems.push(pem);
        }
    };
    for ca in trusted {
        if matches!(change, Change::Remove(removed) if removed.contains(&ca.sha256)) {
            continue;
        }
        keep(&ca.sha256, &ca.pem);
    }
    if let Change::Add(der) = change {
        keep(&sha256_hex(der), &pem_chain([der]));
    }
    if fingerprints.is_empty() {
        return Err(
            "the new bundle would trust no CA at all (refusing: no client could connect)"
                .to_owned(),
        );
    }
    Ok((pems.concat(), fingerprints))
}

/// The result of one trust change.
#[derive(Debug, Clone, Default)]
pub struct TrustStep {
    /// The fingerprints trusted before.
    pub old_trust: Vec<String>,
    /// The fingerprints trusted after (as asked).
    pub new_trust: Vec<String>,
    /// What went wrong.
    pub error: Option<String>,
    /// Whether the change was put back after its check failed.
    pub rolled_back: bool,
}

/// Changes `node`'s bundle by `change` and checks it.
pub async fn change(
    node: &Node,
    tls: &Arc<ClientConfig>,
    timeout: Duration,
    change: &Change,
    audit: Option<&Audit>,
) -> TrustStep {
    let observed = match observe::observe(&node.target, tls.clone(), timeout).await {
        Ok(observed) => observed,
        Err(error) => {
            return TrustStep {
                error: Some(error.to_string()),
                ..TrustStep::default()
            };
        }
    };
    if observed.tls.is_none() {
        return TrustStep {
            error: Some(NO_TRUST_STATE.to_owned()),
            ..TrustStep::default()
        };
    }
    let old_trust = observed.trusted_sha256();
    let record = |outcome, new_trust: &[String], error: Option<&str>, action| {
        if let Some(audit) = audit {
            audit.record(&Entry {
                node: node.name.clone(),
                action,
                old_serial: Some(observed.served.serial.clone()),
                outcome,
                error: error.map(str::to_owned),
                old_trust: Some(old_trust.clone()),
                new_trust: Some(new_trust.to_vec()),
                ..Entry::default()
            });
        }
    };
    let (pem, new_trust) = match bundle(observed.trusted(), change) {
        Ok(bundle) => bundle,
        Err(reason) => {
            let error = format!("set_trust: {reason}");
            record(ActionOutcome::Refused, &[], Some(&error), "set_trust");
            return TrustStep {
                old_trust,
                error: Some(error),
                ..TrustStep::default()
            };
        }
    };
    let mut step = TrustStep {
        old_trust: old_trust.clone(),
        new_trust: new_trust.clone(),
        ..TrustStep::default()
    };
    let mut admin = AdminServiceClient::new(observed.channel.clone());
    let request = SetTrustRequest {
        listener: String::new(),
        bundle_pem: pem,
    };
    let reply = timeout_at(Instant::now() + timeout, admin.set_trust(request)).await;
    if !matches!(reply, Ok(Ok(_))) {
        let error = format!("set_trust: {}", rpc_error(reply, "SetTrust"));
        record(ActionOutcome::Failed, &new_trust, Some(&error), "set_trust");
        step.error = Some(error);
        return step;
    }
    record(ActionOutcome::Ok, &new_trust, None, "set_trust");

    if let Err(reason) = check(node, tls, timeout, &new_trust).await {
        let error = format!("verify: {reason}");
        record(ActionOutcome::Failed, &new_trust, Some(&error), "verify");
        return roll_back(&observed, timeout, step, error, |outcome, error| {
            record(outcome, &old_trust, error, "rollback");
        })
        .await;
    }
    record(ActionOutcome::Ok, &new_trust, None, "verify");
    step
}

/// A fresh connection must still be accepted and report `expected` as trusted.
async fn check(
    node: &Node,
    tls: &Arc<ClientConfig>,
    timeout: Duration,
    expected: &[String],
) -> Result<(), String> {
    let observed = observe::observe(&node.target, tls.clone(), timeout)
        .await
        .map_err(|error| format!("a new connection failed after the trust change: {error}"))?;
    let now: BTreeSet<&String> = observed.trusted().iter().map(|ca| &ca.sha256).collect();
    let wanted: BTreeSet<&String> = expected.iter().collect();
    if now == wanted {
        Ok(())
    } else {
        Err(format!(
            "the node reports {} trusted CAs, not the {} sent",
            now.len(),
            wanted.len()
        ))
    }
}

async fn roll_back(
    observed: &Observed,
    timeout: Duration,
    mut step: TrustStep,
    error: String,
    record: impl Fn(ActionOutcome, Option<&str>),
) -> TrustStep {
    let mut admin = AdminServiceClient::new(observed.channel.clone());
    let request = RollbackRequest {
        listener: String::new(),
        target: RollbackTarget::Trust.into(),
    };
    let reply = timeout_at(Instant::now() + timeout, admin.rollback(request)).await;
    if matches!(reply, Ok(Ok(_))) {
        record(ActionOutcome::Ok, None);
        step.rolled_back = true;
        step.error = Some(format!("{error}; rolled back to the previous bundle"));
    } else {
        let rollback = rpc_error(reply, "Rollback");
        record(ActionOutcome::Failed, Some(&rollback));
        step.error = Some(format!(
            "{error}; rollback failed: {rollback} (check the node with `dicectl certs status`)"
        ));
    }
    step
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca(sha: &str) -> TrustedCa {
        TrustedCa {
            subject: format!("CN={sha}"),
            sha256: sha.to_owned(),
            not_after: String::new(),
            pem: format!("PEM {sha}"),
        }
    }

    #[test]
    fn adds_without_duplicates_and_keeps_other_cas() {
        let der = CertificateDer::from(vec![1, 2, 3]);
        let new_sha = sha256_hex(&der);
        let trusted = [ca("old"), ca("partner")];
        let (pem, shas) = bundle(&trusted, &Change::Add(der.clone())).expect("bundle");
        assert_eq!(shas, ["old", "partner", new_sha.as_str()]);
        assert!(
            pem.starts_with("PEM old\nPEM partner\n-----BEGIN CERTIFICATE-----"),
            "{pem}"
        );

        let trusted = [ca("old"), ca(&new_sha)];
        let (_, shas) = bundle(&trusted, &Change::Add(der)).expect("bundle");
        assert_eq!(shas.len(), 2, "already there: not added twice");
    }

    #[test]
    fn removes_and_refuses_an_empty_bundle() {
        let trusted = [ca("old"), ca("new")];
        let remove = Change::Remove(BTreeSet::from(["old".to_owned()]));
        let (pem, shas) = bundle(&trusted, &remove).expect("bundle");
        assert_eq!(shas, ["new"]);
        assert_eq!(pem, "PEM new\n");
        let all = Change::Remove(BTreeSet::from(["old".to_owned(), "new".to_owned()]));
        assert!(
            bundle(&trusted, &all)
                .expect_err("empty")
                .contains("no CA at all")
        );
        let mut no_pem = ca("x");
        no_pem.pem.clear();
        assert!(
            bundle(&[no_pem], &remove)
                .expect_err("no pem")
                .contains("no PEM")
        );
    }
}
