//! One node's rotation: prepare, sign, install, verify, and roll back when
//! the check fails.
//!
//! 1. `PrepareCertificate`: the node stages a key (or reuses the one it
//!    staged before) and sends a CSR; the key never leaves it.
//! 2. The CSR is checked against the leaf the handshake presented and
//!    signed with the CA directory ([`super::sign`]).
//! 3. `InstallCertificate` with the chain; the node serves it from its next
//!    handshake.
//! 4. A fresh connection must present the new fingerprint, and
//!    `grpc.health.v1.Health/Check` of `api.DiceService` must answer
//!    SERVING. Otherwise `Rollback(CERTIFICATE)` on the first connection
//!    puts the previous pair back.
//!
//! Every step is one line in the audit log.

use std::sync::Arc;
use std::time::Duration;

use dice_proto::DICE_SERVICE_NAME;
use dice_proto::cert::{rfc3339, sha256_hex};
use dice_proto::info::admin_service_client::AdminServiceClient;
use dice_proto::info::{
    InstallCertificateRequest, PrepareCertificateRequest, RollbackRequest, RollbackTarget,
};
use rustls::ClientConfig;
use time::OffsetDateTime;
use tokio::time::{Instant, timeout_at};
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use super::audit::{ActionOutcome, Audit, Entry};
use super::observe::{self, CertId, Observed};
use super::report::{RotateResult, Rotation};
use super::sign;
use crate::certs::ca::Ca;
use crate::client::{self, NodeError};
use crate::plan::Plan;
use crate::report::describe_duration;
use crate::select::Node;

/// What every node's rotation shares.
#[derive(Debug, Clone)]
pub struct Rotator {
    /// The TLS client configuration.
    pub tls: Arc<ClientConfig>,
    /// The deadline of each step.
    pub timeout: Duration,
    /// The CA that signs.
    pub ca: Arc<Ca>,
    /// Days of validity of the new certificates.
    pub days: u32,
    /// `--if-expires-within`: rotate only certificates expiring sooner.
    pub if_expires_within: Option<Duration>,
    /// Where actions are recorded; `None` for a dry run.
    pub audit: Option<Arc<Audit>>,
}

impl Rotator {
    /// A rotator signing with `ca` over `plan`'s TLS configuration and deadline,
    /// rotating every node it is given (no `--if-expires-within`).
    pub fn new(plan: &Plan, ca: Ca, days: u32, audit: Option<Arc<Audit>>) -> Self {
        Self {
            tls: plan.tls.clone(),
            timeout: plan.timeout,
            ca: Arc::new(ca),
            days,
            if_expires_within: None,
            audit,
        }
    }

    /// Rotates `nodes[index]`, as a [`super::batches::run`] job: the rotation,
    /// and whether it failed (which counts towards `--max-failed`).
    pub async fn rotate_at(self, nodes: Arc<Vec<Node>>, index: usize) -> (Rotation, bool) {
        let rotation = self.rotate(&nodes[index]).await;
        let failed = !rotation.result.ok();
        (rotation, failed)
    }

    /// Rotates `node`, or with no audit log (a dry run) says what it would do.
    pub async fn rotate(&self, node: &Node) -> Rotation {
        match observe::observe(&node.target, self.tls.clone(), self.timeout).await {
            Ok(observed) => self.rotate_observed(node, &observed).await,
            Err(error) => Rotation::failed(None, error.to_string()),
        }
    }

    /// Rotates a node already observed.
    pub async fn rotate_observed(&self, node: &Node, observed: &Observed) -> Rotation {
        let old = observed.served.clone();
        let dry_run = self.audit.is_none();
        if let Some(reason) = self.skip_reason(observed) {
            self.record(
                node,
                "skip",
                &old,
                None,
                ActionOutcome::Skipped,
                Some(&reason),
            );
            return Rotation {
                old: Some(old),
                new: None,
                result: if dry_run {
                    RotateResult::WouldSkip
                } else {
                    RotateResult::Skipped
                },
                error: None,
                note: Some(reason),
            };
        }
        if !observed.info.admin_enabled {
            return Rotation::failed(
                Some(old),
                "the node's admin API is off (add an [admin] table whose allow list names dicectl's client identity to the agent's config)".to_owned(),
            );
        }
        if dry_run {
            return Rotation {
                old: Some(old),
                new: None,
                result: RotateResult::WouldRotate,
                error: None,
                note: None,
            };
        }
        let mut admin = AdminServiceClient::new(observed.channel.clone());

        let request = PrepareCertificateRequest::default();
        let csr = match timeout_at(self.deadline(), admin.prepare_certificate(request)).await {
            Ok(Ok(reply)) => {
                self.record(node, "prepare", &old, None, ActionOutcome::Ok, None);
                reply.into_inner().csr_pem
            }
            failed => {
                let error = format!("prepare: {}", rpc_error(failed, "PrepareCertificate"));
                self.record(
                    node,
                    "prepare",
                    &old,
                    None,
                    ActionOutcome::Failed,
                    Some(&error),
                );
                return Rotation::failed(Some(old), error);
            }
        };

        let signed = match sign::sign(
            &csr,
            &observed.summary,
            &self.ca,
            self.days,
            OffsetDateTime::now_utc(),
        ) {
            Ok(signed) => signed,
            Err(reason) => {
                let error = format!("sign: refused the node's CSR: {reason}");
                self.record(
                    node,
                    "sign",
                    &old,
                    None,
                    ActionOutcome::Refused,
                    Some(&error),
                );
                return Rotation::failed(Some(old), error);
            }
        };
        let new = CertId::new(&signed.summary, &signed.sha256);
        self.record(node, "sign", &old, Some(&new), ActionOutcome::Ok, None);

        let request = InstallCertificateRequest {
            listener: String::new(),
            chain_pem: signed.chain_pem.clone(),
        };
        let installed = timeout_at(self.deadline(), admin.install_certificate(request)).await;
        if !matches!(installed, Ok(Ok(_))) {
            let error = format!("install: {}", rpc_error(installed, "InstallCertificate"));
            self.record(
                node,
                "install",
                &old,
                Some(&new),
                ActionOutcome::Failed,
                Some(&error),
            );
            return Rotation {
                new: Some(new),
                ..Rotation::failed(Some(old), error)
            };
        }
        self.record(node, "install", &old, Some(&new), ActionOutcome::Ok, None);

        match self.verify(node, &new.sha256).await {
            Ok(()) => {
                self.record(node, "verify", &old, Some(&new), ActionOutcome::Ok, None);
                Rotation {
                    old: Some(old),
                    new: Some(new),
                    result: RotateResult::Rotated,
                    error: None,
                    note: None,
                }
            }
            Err(reason) => {
                let error = format!("verify: {reason}");
                self.record(
                    node,
                    "verify",
                    &old,
                    Some(&new),
                    ActionOutcome::Failed,
                    Some(&error),
                );
                self.roll_back(node, &observed.channel, old, new, error)
                    .await
            }
        }
    }

    /// Why `observed` is left alone under `--if-expires-within`, if it is.
    fn skip_reason(&self, observed: &Observed) -> Option<String> {
        let within = self.if_expires_within?;
        let left = observed.summary.not_after - crate::unix_now();
        let within_secs = i64::try_from(within.as_secs()).unwrap_or(i64::MAX);
        (left > within_secs).then(|| {
            format!(
                "expires at {}, later than --if-expires-within {}",
                rfc3339(observed.summary.not_after),
                describe_duration(within)
            )
        })
    }

    /// A fresh handshake must present `sha256`, and the health check must answer SERVING.
    async fn verify(&self, node: &Node, sha256: &str) -> Result<(), String> {
        let deadline = self.deadline();
        let connection = client::open(&node.target, self.tls.clone(), deadline)
            .await
            .map_err(|error| format!("a new connection failed: {error}"))?;
        let presented = connection.tls.peer_leaf.as_deref().map(sha256_hex);
        if presented.as_deref() != Some(sha256) {
            return Err(format!(
                "a new handshake presents certificate {}, not the installed {}",
                presented.as_deref().map_or("none", short),
                short(sha256)
            ));
        }
        let mut health = HealthClient::new(connection.channel);
        let request = HealthCheckRequest {
            service: DICE_SERVICE_NAME.to_owned(),
        };
        match timeout_at(deadline, health.check(request)).await {
            Err(_) => {
                Err(NodeError::timeout("no reply to grpc.health.v1.Health/Check").to_string())
            }
            Ok(Err(status)) => Err(format!(
                "health check over the new certificate: {}",
                NodeError::from_status(status)
            )),
            Ok(Ok(reply)) => match ServingStatus::try_from(reply.into_inner().status) {
                Ok(ServingStatus::Serving) => Ok(()),
                other => Err(format!(
                    "{DICE_SERVICE_NAME} is {} over the new certificate, not SERVING",
                    other.map_or("UNKNOWN", |status| status.as_str_name())
                )),
            },
        }
    }

    /// Puts the previous certificate back after `error`.
    async fn roll_back(
        &self,
        node: &Node,
        channel: &Channel,
        old: CertId,
        new: CertId,
        error: String,
    ) -> Rotation {
        let mut admin = AdminServiceClient::new(channel.clone());
        let request = RollbackRequest {
            listener: String::new(),
            target: RollbackTarget::Certificate.into(),
        };
        match timeout_at(self.deadline(), admin.rollback(request)).await {
            Ok(Ok(_)) => {
                self.record(node, "rollback", &old, Some(&new), ActionOutcome::Ok, None);
                Rotation {
                    error: Some(format!("{error}; rolled back to serial {}", old.serial)),
                    old: Some(old),
                    new: Some(new),
                    result: RotateResult::RolledBack,
                    note: None,
                }
            }
            failed => {
                let rollback = rpc_error(failed, "Rollback");
                let error = format!(
                    "{error}; rollback failed: {rollback} (the node may serve serial {}: check it with `dicectl certs status`)",
                    new.serial
                );
                self.record(
                    node,
                    "rollback",
                    &old,
                    Some(&new),
                    ActionOutcome::Failed,
                    Some(&rollback),
                );
                Rotation {
                    new: Some(new),
                    ..Rotation::failed(Some(old), error)
                }
            }
        }
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.timeout
    }

    fn record(
        &self,
        node: &Node,
        action: &'static str,
        old: &CertId,
        new: Option<&CertId>,
        outcome: ActionOutcome,
        error: Option<&str>,
    ) {
        if let Some(audit) = &self.audit {
            audit.record(&Entry {
                node: node.name.clone(),
                action,
                old_serial: Some(old.serial.clone()),
                new_serial: new.map(|new| new.serial.clone()),
                outcome,
                error: error.map(str::to_owned),
                ..Entry::default()
            });
        }
    }
}

/// The first 12 hex digits of a fingerprint.
pub fn short(sha256: &str) -> &str {
    sha256.get(..12).unwrap_or(sha256)
}

/// Why an admin RPC gave no reply, as `KIND: REASON (HINT)`.
pub fn rpc_error<T>(
    result: Result<Result<T, tonic::Status>, tokio::time::error::Elapsed>,
    rpc: &str,
) -> String {
    match result {
        Err(_) => NodeError::timeout(&format!("no reply to AdminService/{rpc}")).to_string(),
        Ok(Err(status)) => NodeError::from_status(status).to_string(),
        Ok(Ok(_)) => "no error".to_owned(),
    }
}
