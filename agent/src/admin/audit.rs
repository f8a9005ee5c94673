//! The audit trail of the admin API: one log line per RPC (target
//! `dice_agent::admin`) and the `dice_admin_requests_total{action,outcome}`
//! counter.

use tonic::{Code, Status};
use tracing::{error, info, warn};

use super::TARGET;
use crate::metrics::AdminLabels;

/// What an admin operation changed: serials for certificates, CA
/// fingerprint lists for trust bundles.
#[derive(Debug, Default)]
pub struct Change {
    /// Before.
    pub old: String,
    /// After (empty if nothing changed).
    pub new: String,
}

/// One admin RPC, filled in as it runs and logged when it ends.
#[derive(Debug)]
pub struct Audit {
    /// `prepare`, `install`, `set_trust` or `rollback`.
    pub action: &'static str,
    /// The caller's identity: subject, then its first SAN.
    pub caller: String,
    /// The listener whose files the call is about.
    pub listener: String,
    /// What changed.
    pub change: Change,
}

impl Audit {
    /// The audit of an `action` call, not yet authorized.
    pub fn new(action: &'static str) -> Self {
        Self {
            action,
            caller: String::new(),
            listener: String::new(),
            change: Change::default(),
        }
    }

    /// Logs the call and counts it, by the outcome `result` shows.
    pub fn finish<T>(self, result: &Result<T, Status>) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(status) => outcome(status.code()),
        };
        crate::metrics::metrics()
            .admin_requests
            .get_or_create(&AdminLabels {
                action: self.action,
                outcome,
            })
            .inc();
        let Self {
            action,
            caller,
            listener,
            change: Change { old, new },
        } = self;
        match result {
            Ok(_) => {
                info!(target: TARGET, %caller, %listener, action, %old, %new, outcome, "admin request")
            }
            Err(status) => {
                let error = status.message();
                match outcome {
                    "denied" => {
                        warn!(target: TARGET, %caller, %listener, action, %old, %new, outcome, error, "admin request")
                    }
                    "refused" => {
                        info!(target: TARGET, %caller, %listener, action, %old, %new, outcome, error, "admin request")
                    }
                    _ => {
                        error!(target: TARGET, %caller, %listener, action, %old, %new, outcome, error, "admin request")
                    }
                }
            }
        }
    }
}

/// The outcome label of a failed call: `denied` (not authorized), `refused`
/// (a check failed, nothing changed) or `failed`.
fn outcome(code: Code) -> &'static str {
    match code {
        Code::PermissionDenied => "denied",
        Code::InvalidArgument | Code::FailedPrecondition => "refused",
        _ => "failed",
    }
}
