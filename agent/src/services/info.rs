//! `dice.agent.v1.AgentInfoService`: the agent's version, the certificates it
//! serves and the outcome of its last certificate reload.

use std::sync::{Arc, Mutex};

use dice_proto::cert::{CertSummary, rfc3339};
use dice_proto::info::agent_info_service_server::AgentInfoService;
use dice_proto::info::{AgentInfo, CertificateInfo, GetInfoRequest, ReloadResult};
use tonic::{Request, Response, Status};

use crate::tls::TlsProfile;

/// What the info API reports, shared with the parts of the agent that change it.
#[derive(Debug)]
pub struct AgentState {
    /// `node.name`.
    pub node: String,
    /// The TLS profile each mTLS listener serves, by listener name.
    pub profiles: Vec<(String, Arc<TlsProfile>)>,
    /// The latest reload outcome.
    pub last_reload: Mutex<ReloadResult>,
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

/// The info API's view of a certificate, with the days it has left at `now` (Unix seconds).
pub fn certificate_info(leaf: &CertSummary, now: i64) -> CertificateInfo {
    CertificateInfo {
        subject: leaf.subject.clone(),
        serial: leaf.serial.clone(),
        not_after: rfc3339(leaf.not_after),
        sans: leaf.sans.clone(),
        days_left: leaf.days_left(now),
        ..Default::default()
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
        let certificates = state
            .profiles
            .iter()
            .map(|(listener, profile)| {
                (
                    listener.clone(),
                    certificate_info(&profile.material().leaf, now),
                )
            })
            .collect();
        let last_reload = state
            .last_reload
            .lock()
            .map(|result| result.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone());
        Ok(Response::new(AgentInfo {
            node: state.node.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            certificates,
            last_reload: Some(last_reload),
            ..Default::default()
        }))
    }
}
