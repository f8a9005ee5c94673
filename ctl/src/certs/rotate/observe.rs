//! What a node serves and trusts, seen from outside: one mTLS connection
//! ([`client::open`]), the leaf its handshake presented, and its
//! `AgentInfoService/GetInfo` reply narrowed to the listener we reached.
//!
//! The listener is the one whose `certificates` entry has the handshake
//! leaf's fingerprint; its `tls` entry gives the trusted CAs and whether a
//! key is staged.

use std::sync::Arc;
use std::time::Duration;

use dice_proto::cert::{CertSummary, sha256_hex};
use dice_proto::info::agent_info_service_client::AgentInfoServiceClient;
use dice_proto::info::{AgentInfo, GetInfoRequest, TlsState, TrustedCa};
use rustls::ClientConfig;
use rustls::pki_types::CertificateDer;
use tokio::time::{Instant, timeout_at};
use tonic::transport::Channel;

use crate::client::{self, NodeError, NodeTarget};

/// A certificate's identity, as rotation reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertId {
    /// Serial, lowercase hex.
    pub serial: String,
    /// SHA-256 of the DER, lowercase hex.
    pub sha256: String,
    /// End of validity, Unix seconds.
    pub not_after: i64,
}

impl CertId {
    /// The identity of `summary`'s certificate with fingerprint `sha256`.
    pub fn new(summary: &CertSummary, sha256: &str) -> Self {
        Self {
            serial: summary.serial.clone(),
            sha256: sha256.to_owned(),
            not_after: summary.not_after,
        }
    }
}

/// One node as observed.
#[derive(Debug, Clone)]
pub struct Observed {
    /// The connection, for further RPCs.
    pub channel: Channel,
    /// The leaf the handshake presented.
    pub leaf: CertificateDer<'static>,
    /// What it says.
    pub summary: CertSummary,
    /// Its identity.
    pub served: CertId,
    /// The agent's info.
    pub info: AgentInfo,
    /// The trust state of the listener we reached, if the agent reports one.
    pub tls: Option<TlsState>,
}

impl Observed {
    /// The trusted CAs of the listener we reached (empty if unknown).
    pub fn trusted(&self) -> &[TrustedCa] {
        self.tls.as_ref().map_or(&[], |tls| &tls.trusted)
    }

    /// Their fingerprints.
    pub fn trusted_sha256(&self) -> Vec<String> {
        self.trusted().iter().map(|ca| ca.sha256.clone()).collect()
    }
}

/// Connects to `node` and reads what it serves and trusts, each step within `timeout`.
pub async fn observe(
    node: &NodeTarget,
    tls: Arc<ClientConfig>,
    timeout: Duration,
) -> Result<Observed, NodeError> {
    let connection = client::open(node, tls, Instant::now() + timeout).await?;
    let Some(leaf) = connection.tls.peer_leaf.clone() else {
        return Err(tls_error("the node presented no certificate".to_owned()));
    };
    let summary = CertSummary::parse(&leaf)
        .map_err(|error| tls_error(format!("the node's certificate cannot be read: {error}")))?;
    let sha256 = sha256_hex(&leaf);
    let info = get_info(&connection.channel, timeout).await?;
    let tls = listener_tls(&info, &sha256);
    Ok(Observed {
        channel: connection.channel,
        served: CertId::new(&summary, &sha256),
        leaf,
        summary,
        info,
        tls,
    })
}

fn tls_error(reason: String) -> NodeError {
    NodeError::Tls {
        reason,
        hint: "check the certificate files the agent serves",
        source: None,
    }
}

/// Calls `AgentInfoService/GetInfo` on `channel` within `timeout`.
pub async fn get_info(channel: &Channel, timeout: Duration) -> Result<AgentInfo, NodeError> {
    let mut client = AgentInfoServiceClient::new(channel.clone());
    match timeout_at(Instant::now() + timeout, client.get_info(GetInfoRequest {})).await {
        Err(_) => Err(NodeError::timeout("no reply to AgentInfoService/GetInfo")),
        Ok(Err(status)) => Err(NodeError::from_status(status)),
        Ok(Ok(reply)) => Ok(reply.into_inner()),
    }
}

/// The trust state of the listener serving the certificate `sha256`; with
/// one mTLS listener only, that one.
pub fn listener_tls(info: &AgentInfo, sha256: &str) -> Option<TlsState> {
    let mut names: Vec<&String> = info
        .certificates
        .iter()
        .filter(|(_, cert)| cert.sha256 == sha256)
        .map(|(name, _)| name)
        .collect();
    names.sort();
    names
        .iter()
        .find_map(|name| info.tls.get(*name))
        .or_else(|| match info.tls.len() {
            1 => info.tls.values().next(),
            _ => None,
        })
        .cloned()
}

#[cfg(test)]
mod tests {
    use dice_proto::info::CertificateInfo;

    use super::*;

    fn tls(sha: &str) -> TlsState {
        TlsState {
            trusted: vec![TrustedCa {
                sha256: sha.to_owned(),
                ..TrustedCa::default()
            }],
            key_staged: false,
        }
    }

    #[test]
    fn finds_the_listener_by_fingerprint() {
        let mut info = AgentInfo::default();
        for (name, sha) in [("public", "aa"), ("internal", "bb")] {
            info.certificates.insert(
                name.to_owned(),
                CertificateInfo {
                    sha256: sha.to_owned(),
                    ..CertificateInfo::default()
                },
            );
            info.tls.insert(name.to_owned(), tls(&format!("ca-{name}")));
        }
        let found = listener_tls(&info, "bb").expect("found");
        assert_eq!(found.trusted[0].sha256, "ca-internal");
        assert!(listener_tls(&info, "cc").is_none());
        info.tls.remove("public");
        assert_eq!(
            listener_tls(&info, "cc").expect("the only one").trusted[0].sha256,
            "ca-internal"
        );
    }
}
