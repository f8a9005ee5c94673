//! `dice.agent.v1.AgentInfoService`: the agent's version, the certificates it
//! serves, the CAs it trusts, whether a key is staged, whether the admin API
//! is on, and the outcome of its last certificate reload.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use dice_proto::cert::rfc3339;
use dice_proto::info::agent_info_service_server::AgentInfoService;
use dice_proto::info::{AgentInfo, CertificateInfo, GetInfoRequest, ReloadResult, TlsState};
use tonic::{Request, Response, Status};

use crate::config::LiveConfig;
use crate::rpc::RateLimiters;
use crate::tls::{TlsMaterial, TlsProfile};

/// What the info API reports, shared with the parts of the agent that change it.
#[derive(Debug)]
pub struct AgentState {
    /// The config in force (`node.name`, `[admin]`, ...).
    pub live: Arc<LiveConfig>,
    /// The TLS profile each mTLS listener serves, by listener name; replaced
    /// when a config reload adds, removes or re-points a listener.
    pub profiles: ArcSwap<Vec<(String, Arc<TlsProfile>)>>,
    /// The latest certificate reload outcome.
    pub last_reload: Mutex<ReloadResult>,
    /// The latest config file reload outcome; `None` until the first.
    pub last_config_reload: Mutex<Option<ReloadResult>>,
    /// The per-client rate limiters, which follow config reloads.
    pub rate_limits: Arc<RateLimiters>,
}

/// The AgentInfoService implementation.
#[derive(Debug, Clone)]
pub struct Info {
    state: Arc<AgentState>,
}

impl Info {
    /// Serves `state`.
    pub fn new(state: Arc<AgentState>) -> Self {
        Self { state }
    }
}

/// The info API's view of the certificate `material` serves, with the days
/// it has left at `now` (Unix seconds).
pub fn certificate_info(material: &TlsMaterial, now: i64) -> CertificateInfo {
    let leaf = &material.leaf;
    CertificateInfo {
        subject: leaf.subject.clone(),
        serial: leaf.serial.clone(),
        not_after: rfc3339(leaf.not_after),
        sans: leaf.sans.clone(),
        days_left: leaf.days_left(now),
        sha256: material.leaf_sha256.clone(),
        issuer: leaf.issuer.clone(),
    }
}

/// The trust bundle and staged key of `profile`.
fn tls_state(profile: &TlsProfile) -> TlsState {
    TlsState {
        trusted: crate::admin::trusted_cas(&profile.material()),
        key_staged: crate::admin::staged_key_path(&profile.files.key.path).exists(),
    }
}

#[tonic::async_trait]
impl AgentInfoService for Info {
    async fn get_info(
        &self,
        _request: Request<GetInfoRequest>,
    ) -> Result<Response<AgentInfo>, Status> {
        let state = &self.state;
        let now = crate::unix_now();
        let profiles = state.profiles.load();
        let certificates = profiles
            .iter()
            .map(|(listener, profile)| {
                (listener.clone(), certificate_info(&profile.material(), now))
            })
            .collect();
        let tls = profiles
            .iter()
            .map(|(listener, profile)| (listener.clone(), tls_state(profile)))
            .collect();
        let last_reload = state
            .last_reload
            .lock()
            .map(|result| result.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone());
        let last_config_reload = state
            .last_config_reload
            .lock()
            .map(|result| result.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone());
        let config = state.live.current();
        Ok(Response::new(AgentInfo {
            node: config.node_name.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            certificates,
            last_reload: Some(last_reload),
            tls,
            admin_enabled: config.admin.is_some(),
            last_config_reload,
            acme: crate::acme::status(),
        }))
    }
}
