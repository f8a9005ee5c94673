//! Revocation that reaches open connections: after every reload that can
//! change who is admitted (new certificate material, CRLs or client CAs,
//! whether from the files or the admin API, or a config reload changing an
//! `allow` list), every open mTLS connection's client chain is verified again
//! with the listener's current client verifier and allow list. A connection
//! that fails is told to go away (HTTP/2 GOAWAY): its RPCs in flight finish
//! within `shutdown.grace_period`, and its client's next connection meets the
//! new checks at the handshake. `tls.recheck_connections = false` turns it off.

use std::sync::Arc;

use futures_util::future::select_all;
use rustls::pki_types::UnixTime;
use rustls::{CertificateError, Error};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::registry::{Connections, OpenConn};
use crate::config::Config;
use crate::metrics::ClosedLabels;
use crate::services::AgentState;
use crate::tls::TlsProfile;

/// The target of this module's events.
const TARGET: &str = "dice_agent::recheck";

/// Re-checks the open connections after every install into a profile the
/// listeners of `state` serve and every config reload, until `stop`.
pub async fn watch_and_recheck(
    connections: Arc<Connections>,
    state: Arc<AgentState>,
    stop: CancellationToken,
) {
    let mut followed: Vec<Arc<TlsProfile>> = Vec::new();
    let mut installs: Vec<watch::Receiver<u64>> = Vec::new();
    let mut configs = state.live.subscribe();
    loop {
        // Listeners added by a config reload bring profiles of their own.
        for (_, profile) in state.profiles.load().iter() {
            if !followed.iter().any(|p| Arc::ptr_eq(p, profile)) {
                followed.push(profile.clone());
                installs.push(profile.subscribe());
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            changed = configs.changed() => if changed.is_err() { return },
            () = any_install(&mut installs) => {}
        }
        recheck_if_on(&connections, &state);
    }
}

/// [`recheck`] with the profiles and config in force, unless
/// `tls.recheck_connections` is off.
pub fn recheck_if_on(connections: &Connections, state: &AgentState) {
    let config = state.live.current();
    if !config.recheck_connections {
        debug!(target: TARGET, "tls.recheck_connections is off: open connections keep their client checks");
        return;
    }
    recheck(connections, &state.profiles.load(), &config);
}

/// Waits for the next install into any profile (forever if there are none).
async fn any_install(installs: &mut [watch::Receiver<u64>]) {
    if installs.is_empty() {
        return std::future::pending().await;
    }
    let (changed, _, _) = select_all(installs.iter_mut().map(|r| Box::pin(r.changed()))).await;
    if changed.is_err() {
        // A profile was dropped: the agent is stopping.
        std::future::pending::<()>().await;
    }
}

/// Checks every open connection once, telling those no longer admitted to go
/// away. Returns how many were told.
pub fn recheck(
    connections: &Connections,
    profiles: &[(String, Arc<TlsProfile>)],
    config: &Config,
) -> usize {
    let started = std::time::Instant::now();
    let open = connections.snapshot();
    let mut closed = 0;
    for conn in &open {
        if conn.go_away.is_cancelled() {
            continue;
        }
        let Some(verdict) = judge(conn, profiles, config) else {
            continue;
        };
        closed += 1;
        conn.go_away.cancel();
        let info = &conn.info;
        let (subject, sans) = info.client.as_ref().map_or_else(
            || (String::new(), String::new()),
            |c| (c.subject.clone(), c.sans.join(",")),
        );
        match verdict {
            Verdict::Close { reason, detail } => {
                warn!(target: TARGET,
                    listener = %info.listener,
                    peer = %info.peer,
                    client.subject = %subject,
                    client.sans = %sans,
                    reason = reason.text(),
                    detail = %detail,
                    "client no longer admitted: sending GOAWAY; RPCs in flight may finish within shutdown.grace_period"
                );
                crate::metrics::metrics()
                    .connections_closed
                    .get_or_create(&ClosedLabels {
                        listener: info.listener.to_string(),
                        reason: reason.label(),
                    })
                    .inc();
            }
            Verdict::NowAllowed => {
                info!(target: TARGET,
                    listener = %info.listener,
                    peer = %info.peer,
                    client.subject = %subject,
                    client.sans = %sans,
                    "client now in the allow list: sending GOAWAY so it reconnects and is served"
                );
            }
        }
    }
    debug!(target: TARGET, open = open.len(), closed, elapsed = ?started.elapsed(), "open connections checked again");
    closed
}

/// Why a connection is told to go away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A CRL now lists the client certificate.
    Revoked,
    /// No trusted client CA issued it any more.
    UntrustedCa,
    /// It has expired.
    Expired,
    /// The listener's allow list no longer names it.
    NotAllowed,
    /// It fails verification for another reason.
    Invalid,
}

impl Reason {
    /// The `reason` label of `dice_connections_closed_total`.
    pub fn label(self) -> &'static str {
        match self {
            Reason::Revoked => "revoked",
            Reason::UntrustedCa => "untrusted_ca",
            Reason::Expired => "expired",
            Reason::NotAllowed => "not_allowed",
            Reason::Invalid => "invalid",
        }
    }

    /// The reason as the log line says it.
    pub fn text(self) -> &'static str {
        match self {
            Reason::Revoked => "revoked",
            Reason::UntrustedCa => "untrusted CA",
            Reason::Expired => "expired",
            Reason::NotAllowed => "not allowed",
            Reason::Invalid => "invalid certificate",
        }
    }

    fn of(error: &Error) -> Self {
        match error {
            Error::InvalidCertificate(CertificateError::Revoked) => Reason::Revoked,
            Error::InvalidCertificate(
                CertificateError::UnknownIssuer | CertificateError::BadSignature,
            ) => Reason::UntrustedCa,
            Error::InvalidCertificate(
                CertificateError::Expired | CertificateError::ExpiredContext { .. },
            ) => Reason::Expired,
            _ => Reason::Invalid,
        }
    }
}

/// What a re-check decided for one connection.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// The client fails the checks now in force.
    Close { reason: Reason, detail: String },
    /// The client was refused by the allow list, which now admits it.
    NowAllowed,
}

/// Checks one connection against its listener's current material and allow
/// list; `None` if nothing changes for it.
fn judge(
    conn: &OpenConn,
    profiles: &[(String, Arc<TlsProfile>)],
    config: &Config,
) -> Option<Verdict> {
    let info = &conn.info;
    let chain = info.client_chain.as_ref()?;
    let (leaf, intermediates) = chain.split_first()?;
    let (_, profile) = profiles.iter().find(|(name, _)| **name == *info.listener)?;
    let material = profile.material();
    if let Err(error) =
        material
            .client_verifier
            .verify_client_cert(leaf, intermediates, UnixTime::now())
    {
        return Some(Verdict::Close {
            reason: Reason::of(&error),
            detail: error.to_string(),
        });
    }
    let listener = config
        .listeners
        .iter()
        .find(|listener| *listener.name == *info.listener)?;
    let allowed = info
        .client
        .as_ref()
        .map_or(listener.allow.allows_any(), |client| {
            listener.allow.allows(client)
        });
    match (allowed, info.denied) {
        (false, false) => Some(Verdict::Close {
            reason: Reason::NotAllowed,
            detail: format!(
                "not in listeners allow list ({})",
                listener.allow.patterns().join(", ")
            ),
        }),
        (true, true) => Some(Verdict::NowAllowed),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verification_errors_name_their_reason() {
        let cases = [
            (CertificateError::Revoked, Reason::Revoked, "revoked"),
            (
                CertificateError::UnknownIssuer,
                Reason::UntrustedCa,
                "untrusted_ca",
            ),
            (
                CertificateError::BadSignature,
                Reason::UntrustedCa,
                "untrusted_ca",
            ),
            (CertificateError::Expired, Reason::Expired, "expired"),
            (CertificateError::NotValidYet, Reason::Invalid, "invalid"),
        ];
        for (error, reason, label) in cases {
            let error = Error::InvalidCertificate(error);
            assert_eq!(Reason::of(&error), reason, "{error}");
            assert_eq!(reason.label(), label);
            assert!(crate::metrics::CLOSE_REASONS.contains(&label));
        }
        assert_eq!(Reason::NotAllowed.label(), "not_allowed");
        assert_eq!(Reason::NotAllowed.text(), "not allowed");
    }
}
