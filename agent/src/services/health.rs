//! The statuses `grpc.health.v1.Health` reports, for the overall server
//! (service `""`) and `api.DiceService`, on every listener that serves it:
//! SERVING while the agent serves with usable certificates, NOT_SERVING once
//! it drains or while a certificate is unusable.
//!
//! "Usable" means: every mTLS listener's certificate in force is within its
//! validity period now (`not_before <= now <= not_after`). Every one, not
//! some: the health port speaks for the whole node, and a client sent to a
//! listener whose certificate has lapsed would fail its handshake. An agent
//! with h2c listeners only (TLS at a proxy) has no certificate of its own to
//! check. The agent refuses to start with, or reload to, a certificate that
//! is not valid now, so a certificate becomes unusable by time passing: the
//! statuses are checked again every [`RECHECK_INTERVAL`], and after each
//! reload that tick puts a renewed certificate back in service.

use std::sync::Arc;
use std::time::Duration;

use dice_proto::api::dice_service_server::DiceServiceServer;
use dice_proto::cert::rfc3339;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tracing::{error, info};

use super::{AgentState, Dice};
use crate::tls::TlsProfile;

/// The target of this module's events.
const TARGET: &str = "dice_agent::health";

/// How often the certificates in force are checked for lapsing: the longest
/// a health check reports SERVING for a certificate that has expired.
pub const RECHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The services whose status follows the agent's: the overall server and `api.DiceService`.
const SERVICES: [&str; 2] = ["", <DiceServiceServer<Dice> as NamedService>::NAME];

/// The service name a liveness probe asks for: SERVING for as long as the
/// process answers, whatever its certificates or drain. A lapsed certificate
/// is a reason to take the node out of rotation (readiness), not to restart
/// it: a restarted agent would refuse the same certificate and not start.
pub const LIVENESS: &str = "liveness";

/// Keeps the reported statuses in step with the agent's state.
pub struct HealthStatus {
    reporter: HealthReporter,
    state: Arc<AgentState>,
    /// What was last reported; `None` before the first report.
    serving: Option<bool>,
}

impl HealthStatus {
    /// Reports through `reporter` what `state` allows.
    pub fn new(reporter: HealthReporter, state: Arc<AgentState>) -> Self {
        Self {
            reporter,
            state,
            serving: None,
        }
    }

    /// Reports SERVING or NOT_SERVING from the certificates in force now
    /// (and [`LIVENESS`] SERVING, once).
    pub async fn refresh(&mut self) {
        if self.serving.is_none() {
            self.reporter
                .set_service_status(LIVENESS, ServingStatus::Serving)
                .await;
        }
        let problems = unusable(&self.state.profiles.load(), crate::unix_now());
        let serving = problems.is_empty();
        if self.serving == Some(serving) {
            return;
        }
        if serving {
            if self.serving.is_some() {
                info!(target: TARGET, "every served certificate is valid again: health reports SERVING");
            }
        } else {
            error!(target: TARGET, problems = %problems.join("; "), "no usable certificate: health reports NOT_SERVING until a valid certificate is loaded");
        }
        self.report(serving).await;
    }

    /// Refreshes every [`RECHECK_INTERVAL`] until `stop`, then reports
    /// NOT_SERVING for good: the agent is draining.
    pub async fn follow(mut self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(RECHECK_INTERVAL);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => self.refresh().await,
            }
        }
        self.report(false).await;
    }

    async fn report(&mut self, serving: bool) {
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        for service in SERVICES {
            self.reporter.set_service_status(service, status).await;
        }
        self.serving = Some(serving);
    }
}

/// Why the certificates in force are not usable at `now`, one line per
/// listener; empty when they all are.
fn unusable(profiles: &[(String, Arc<TlsProfile>)], now: i64) -> Vec<String> {
    let mut problems = Vec::new();
    for (listener, profile) in profiles {
        let leaf = &profile.material().leaf;
        let path = profile.files.cert.path.display();
        if now < leaf.not_before {
            problems.push(format!(
                "listener {listener}: certificate {path} is not valid before {}",
                rfc3339(leaf.not_before)
            ));
        } else if now > leaf.not_after {
            problems.push(format!(
                "listener {listener}: certificate {path} expired at {}",
                rfc3339(leaf.not_after)
            ));
        }
    }
    problems
}
