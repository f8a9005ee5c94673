//! `dice.agent.v1.AdminService`: rotates the certificate a node serves and
//! the CA bundle it trusts, with private keys made on the node and never
//! sent anywhere. Off without an `[admin]` table.
//!
//! Every RPC is authorized here, in this order: it came over an mTLS
//! connection (never h2c, trusted proxy or not), the config has `[admin]`,
//! and the caller's identity matches `[admin] allow` (the listener's own
//! `allow` applied before, in the `Authz` layer). Operations run one at a
//! time, on the blocking pool (key generation and file work).
//!
//! Files, beside the configured ones (beside what a symlink points at):
//! `<key>.staged` holds the key PrepareCertificate made (mode 0600);
//! `<cert>.previous`, `<key>.previous` and `<client_ca>.previous` hold what
//! the last InstallCertificate or SetTrust replaced, for Rollback.
//!
//! Modules: `audit` (log line and metric), `files` (paths, atomic writes,
//! undo), `staged` and `csr` (PrepareCertificate), `checks` and `install`
//! (InstallCertificate), `trust` (SetTrust), `rollback`, `report` (how
//! certificates are described).

mod audit;
mod checks;
mod csr;
mod files;
mod install;
mod report;
mod rollback;
mod staged;
#[cfg(test)]
mod tests;
mod trust;

use std::sync::Arc;

use dice_proto::info::admin_service_server::AdminService;
use dice_proto::info::{
    InstallCertificateRequest, InstallCertificateResponse, PrepareCertificateRequest,
    PrepareCertificateResponse, RollbackRequest, RollbackResponse, RollbackTarget, SetTrustRequest,
    SetTrustResponse,
};
use dice_proto::keys::KeyType;
use rustls::pki_types::CertificateDer;
use tonic::{Request, Response, Status};

use crate::net::ConnInfo;
use crate::services::AgentState;
use crate::tls::TlsProfile;
use audit::{Audit, Change};

pub(crate) use files::staged as staged_key_path;
pub(crate) use report::trusted as trusted_cas;

/// The target of the admin API's events.
const TARGET: &str = "dice_agent::admin";

/// The AdminService implementation.
#[derive(Debug)]
pub struct Admin {
    state: Arc<AgentState>,
    /// Held for the whole of each operation, until its blocking work ends
    /// (even if the RPC was given up on): one at a time.
    one_at_a_time: Arc<tokio::sync::Mutex<()>>,
}

/// An authorized call: who made it, and the files it is about.
struct Call {
    /// The caller's verified chain, leaf first.
    chain: Arc<[CertificateDer<'static>]>,
    /// The listener named (or the one the call came in on).
    listener: String,
    /// That listener's certificate material.
    profile: Arc<TlsProfile>,
}

impl Admin {
    /// Serves the listeners of `state`, to the callers that `[admin]` of
    /// the config in force (read at each call) allows.
    pub fn new(state: Arc<AgentState>) -> Self {
        Self {
            state,
            one_at_a_time: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// Authorizes `request` (see the module doc) and finds the listener it names.
    fn authorize<T>(
        &self,
        request: &Request<T>,
        listener: &str,
        audit: &mut Audit,
    ) -> Result<Call, Status> {
        let conn = request.extensions().get::<Arc<ConnInfo>>();
        if let Some(conn) = conn {
            audit.caller = format!("peer {}", conn.peer_text);
            audit.listener = conn.listener.to_string();
        }
        let verified =
            conn.and_then(|conn| Some((conn, conn.client.as_ref()?, conn.client_chain.clone()?)));
        let Some((conn, client, chain)) = verified else {
            return Err(Status::permission_denied(
                "admin RPCs are served on mTLS listeners only",
            ));
        };
        audit.caller = match client.sans.first() {
            Some(san) => format!("{} ({san})", client.subject),
            None => client.subject.clone(),
        };
        let name = if listener.is_empty() {
            conn.listener.to_string()
        } else {
            listener.to_owned()
        };
        audit.listener = name.clone();
        let live = self.state.live.current();
        let Some(config) = &live.admin else {
            return Err(Status::permission_denied(
                "admin RPCs are off on this node: its config has no [admin] table",
            ));
        };
        if !config.allow.allows(client) {
            return Err(Status::permission_denied(format!(
                "client {} is not in [admin] allow",
                audit.caller
            )));
        }
        let profiles = self.state.profiles.load();
        let profile = profiles
            .iter()
            .find(|(listener, _)| *listener == name)
            .map(|(_, profile)| profile.clone());
        let Some(profile) = profile else {
            let names: Vec<&str> = profiles.iter().map(|(n, _)| n.as_str()).collect();
            return Err(Status::invalid_argument(format!(
                "no mtls listener named \"{name}\" on this node: its mtls listeners are {}",
                names.join(", ")
            )));
        };
        Ok(Call {
            chain,
            listener: name,
            profile,
        })
    }

    /// Refuses to replace a certificate that `[acme]` obtains: two sources would fight.
    fn refuse_if_acme(&self, call: &Call) -> Result<(), Status> {
        let live = self.state.live.current();
        match &live.acme {
            Some(acme) if crate::acme::manages(acme, &call.profile) => {
                Err(Status::failed_precondition(format!(
                    "listener {}'s certificate comes from the ACME server {} ([acme] in {}): it renews itself; remove [acme] to manage it with the admin API",
                    call.listener,
                    acme.directory,
                    live.file.display()
                )))
            }
            _ => Ok(()),
        }
    }

    /// Runs `operation` on the blocking pool, after any other admin operation.
    async fn run<T: Send + 'static>(
        &self,
        audit: &mut Audit,
        operation: impl FnOnce(&mut Change) -> Result<T, Status> + Send + 'static,
    ) -> Result<T, Status> {
        let one = self.one_at_a_time.clone().lock_owned().await;
        let (change, result) = tokio::task::spawn_blocking(move || {
            let _one = one;
            let mut change = Change::default();
            let result = operation(&mut change);
            (change, result)
        })
        .await
        .map_err(|e| Status::internal(format!("the admin operation did not finish: {e}")))?;
        audit.change = change;
        result
    }

    async fn prepare(
        &self,
        request: &Request<PrepareCertificateRequest>,
        audit: &mut Audit,
    ) -> Result<PrepareCertificateResponse, Status> {
        let body = request.get_ref();
        let call = self.authorize(request, &body.listener, audit)?;
        self.refuse_if_acme(&call)?;
        let key_type = match body.key_type.as_str() {
            "" => None,
            name => Some(KeyType::from_name(name).ok_or_else(|| {
                Status::invalid_argument(format!(
                    "unknown key_type \"{name}\": use one of {}",
                    KeyType::names()
                ))
            })?),
        };
        let fresh = body.fresh_key;
        self.run(audit, move |change| {
            let material = call.profile.material();
            change.old = material.leaf.serial.clone();
            let prepared =
                staged::prepare(&call.profile.files, &material.leaf_der, key_type, fresh)?;
            change.new = format!("staged {}", prepared.key_type);
            Ok(PrepareCertificateResponse {
                csr_pem: prepared.csr_pem,
                key_type: prepared.key_type,
                reused: prepared.reused,
                served: Some(report::served(&material)),
            })
        })
        .await
    }

    async fn install(
        &self,
        request: &Request<InstallCertificateRequest>,
        audit: &mut Audit,
    ) -> Result<InstallCertificateResponse, Status> {
        let body = request.get_ref();
        let call = self.authorize(request, &body.listener, audit)?;
        self.refuse_if_acme(&call)?;
        let chain_pem = body.chain_pem.clone();
        self.run(audit, move |change| {
            install::install(
                &call.profile,
                &call.listener,
                &chain_pem,
                crate::unix_now(),
                change,
            )
        })
        .await
    }

    async fn set_trust(
        &self,
        request: &Request<SetTrustRequest>,
        audit: &mut Audit,
    ) -> Result<SetTrustResponse, Status> {
        let body = request.get_ref();
        let call = self.authorize(request, &body.listener, audit)?;
        let bundle_pem = body.bundle_pem.clone();
        self.run(audit, move |change| {
            trust::set_trust(
                &call.profile,
                &bundle_pem,
                &call.chain,
                crate::unix_now(),
                change,
            )
        })
        .await
    }

    async fn rollback(
        &self,
        request: &Request<RollbackRequest>,
        audit: &mut Audit,
    ) -> Result<RollbackResponse, Status> {
        let body = request.get_ref();
        let call = self.authorize(request, &body.listener, audit)?;
        let target = RollbackTarget::try_from(body.target).map_err(|_| {
            Status::invalid_argument(format!(
                "unknown rollback target {}: use ROLLBACK_TARGET_CERTIFICATE or ROLLBACK_TARGET_TRUST",
                body.target
            ))
        })?;
        if target == RollbackTarget::Certificate {
            self.refuse_if_acme(&call)?;
        }
        self.run(audit, move |change| {
            rollback::rollback(&call.profile, target, crate::unix_now(), change)
        })
        .await
    }
}

#[tonic::async_trait]
impl AdminService for Admin {
    async fn prepare_certificate(
        &self,
        request: Request<PrepareCertificateRequest>,
    ) -> Result<Response<PrepareCertificateResponse>, Status> {
        let mut audit = Audit::new("prepare");
        let result = self.prepare(&request, &mut audit).await;
        audit.finish(&result);
        result.map(Response::new)
    }

    async fn install_certificate(
        &self,
        request: Request<InstallCertificateRequest>,
    ) -> Result<Response<InstallCertificateResponse>, Status> {
        let mut audit = Audit::new("install");
        let result = self.install(&request, &mut audit).await;
        audit.finish(&result);
        result.map(Response::new)
    }

    async fn set_trust(
        &self,
        request: Request<SetTrustRequest>,
    ) -> Result<Response<SetTrustResponse>, Status> {
        let mut audit = Audit::new("set_trust");
        let result = Admin::set_trust(self, &request, &mut audit).await;
        audit.finish(&result);
        result.map(Response::new)
    }

    async fn rollback(
        &self,
        request: Request<RollbackRequest>,
    ) -> Result<Response<RollbackResponse>, Status> {
        let mut audit = Audit::new("rollback");
        let result = Admin::rollback(self, &request, &mut audit).await;
        audit.finish(&result);
        result.map(Response::new)
    }
}
