//! One certificate issuance: a new order for the identifiers, each
//! authorization answered with the configured challenge, a fresh key made on
//! the node and only its CSR sent, then the chain downloaded.

use std::sync::Arc;
use std::time::Duration;

use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, NewOrder, OrderStatus, RetryPolicy,
};
use rcgen::{CertificateParams, DistinguishedName, DnType, SanType};

use super::challenges::Challenges;
use crate::config::{AcmeConfig, Challenge, Identifier};

/// How long the ACME server may take to validate the challenges, and then to issue.
const VALIDATION_TIMEOUT: Duration = Duration::from_secs(60);

/// A certificate chain (PEM, leaf first) and its private key (PEM).
pub struct Issued {
    /// The chain.
    pub chain_pem: String,
    /// The key (never log it).
    pub key_pem: String,
}

/// Orders a certificate for `config.identifiers` from `account`, answering
/// challenges through `challenges`. The challenges are forgotten at the end,
/// whatever the outcome.
pub async fn issue(
    config: &AcmeConfig,
    account: &Account,
    challenges: &Arc<Challenges>,
) -> Result<Issued, String> {
    let result = order(config, account, challenges).await;
    challenges.clear();
    result
}

async fn order(
    config: &AcmeConfig,
    account: &Account,
    challenges: &Arc<Challenges>,
) -> Result<Issued, String> {
    let identifiers: Vec<instant_acme::Identifier> = config
        .identifiers
        .iter()
        .map(|identifier| match identifier {
            Identifier::Dns(name) => instant_acme::Identifier::Dns(name.clone()),
            Identifier::Ip(ip) => instant_acme::Identifier::Ip(*ip),
        })
        .collect();
    let mut order = account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .map_err(|e| format!("new order refused: {e}"))?;
    let kind = match config.challenge {
        Challenge::Http01 { .. } => ChallengeType::Http01,
        Challenge::TlsAlpn01 { .. } => ChallengeType::TlsAlpn01,
    };
    let mut authorizations = order.authorizations();
    while let Some(authorization) = authorizations.next().await {
        let mut authorization =
            authorization.map_err(|e| format!("cannot read an authorization: {e}"))?;
        match authorization.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            other => {
                return Err(format!(
                    "authorization for {} is {other:?}",
                    authorization.identifier()
                ));
            }
        }
        let identifier = match &authorization.identifier().identifier {
            instant_acme::Identifier::Dns(name) => Identifier::Dns(name.clone()),
            instant_acme::Identifier::Ip(ip) => Identifier::Ip(*ip),
            other => return Err(format!("unexpected identifier {other:?}")),
        };
        let mut challenge = authorization.challenge(kind.clone()).ok_or_else(|| {
            format!(
                "the ACME server offers no {} challenge for {identifier} (set [acme] challenge to one it offers)",
                config.challenge.as_str()
            )
        })?;
        let key_authorization = challenge.key_authorization();
        match kind {
            ChallengeType::TlsAlpn01 => {
                challenges.add_tls(&identifier, key_authorization.digest().as_ref())?
            }
            _ => challenges.add_http(&challenge.token, key_authorization.as_str()),
        }
        challenge
            .set_ready()
            .await
            .map_err(|e| format!("cannot start validation of {identifier}: {e}"))?;
    }
    let retries = RetryPolicy::new()
        .initial_delay(Duration::from_millis(200))
        .backoff(1.5)
        .timeout(VALIDATION_TIMEOUT);
    let status = order
        .poll_ready(&retries)
        .await
        .map_err(|e| format!("order not ready: {e}"))?;
    if status != OrderStatus::Ready {
        return Err(why_invalid(&mut order, status).await);
    }
    let key = dice_proto::keys::KeyAlgorithm::from(config.key_type).generate()?;
    let csr = csr(config, &key)?;
    order
        .finalize_csr(&csr)
        .await
        .map_err(|e| format!("finalize refused: {e}"))?;
    let chain_pem = order
        .poll_certificate(&retries)
        .await
        .map_err(|e| format!("certificate not issued: {e}"))?;
    Ok(Issued {
        chain_pem,
        key_pem: key.serialize_pem(),
    })
}

/// The DER CSR for `key`, naming every identifier as a SAN (and the first as CN).
fn csr(config: &AcmeConfig, key: &rcgen::KeyPair) -> Result<Vec<u8>, String> {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    if let Some(first) = config.identifiers.first() {
        name.push(DnType::CommonName, first.to_string());
    }
    params.distinguished_name = name;
    params.subject_alt_names = config
        .identifiers
        .iter()
        .map(|identifier| match identifier {
            Identifier::Dns(name) => name
                .as_str()
                .try_into()
                .map(SanType::DnsName)
                .map_err(|e| format!("{name}: {e}")),
            Identifier::Ip(ip) => Ok(SanType::IpAddress(*ip)),
        })
        .collect::<Result<_, _>>()?;
    let csr = params
        .serialize_request(key)
        .map_err(|e| format!("cannot make the CSR: {e}"))?;
    Ok(csr.der().to_vec())
}

/// Why the order ended `status`: the ACME server's own words for each failed challenge.
async fn why_invalid(order: &mut instant_acme::Order, status: OrderStatus) -> String {
    let mut reasons = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(Ok(authorization)) = authorizations.next().await {
        for challenge in &authorization.challenges {
            if let Some(error) = &challenge.error {
                reasons.push(format!("{}: {error}", authorization.identifier()));
            }
        }
    }
    if reasons.is_empty() {
        format!("order is {status:?}")
    } else {
        format!("order is {status:?}: {}", reasons.join("; "))
    }
}
