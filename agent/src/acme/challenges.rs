//! The challenges pending right now: http-01 key authorizations by token and
//! tls-alpn-01 certificates by server name. Filled while an order is being
//! validated and emptied when it ends, so nothing is answered in between.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use rcgen::{CertificateParams, CustomExtension, KeyPair, SanType};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::Identifier;

/// The ALPN protocol of tls-alpn-01 validation handshakes (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// The challenges pending now.
#[derive(Debug, Default)]
pub struct Challenges {
    http: Mutex<HashMap<String, String>>,
    tls: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

impl Challenges {
    /// The key authorization for the http-01 `token`, while it is pending.
    pub fn http_answer(&self, token: &str) -> Option<String> {
        self.http
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(token)
            .cloned()
    }

    /// Answers `token` with `key_authorization` until [`Challenges::clear`].
    pub fn add_http(&self, token: &str, key_authorization: &str) {
        self.http
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(token.to_owned(), key_authorization.to_owned());
    }

    /// Serves a tls-alpn-01 certificate for `identifier` with the SHA-256
    /// `digest` of its key authorization, until [`Challenges::clear`].
    pub fn add_tls(&self, identifier: &Identifier, digest: &[u8]) -> Result<(), String> {
        let (name, san) = match identifier {
            Identifier::Dns(name) => (
                name.clone(),
                SanType::DnsName(
                    name.as_str()
                        .try_into()
                        .map_err(|e| format!("{name}: {e}"))?,
                ),
            ),
            Identifier::Ip(ip) => (reverse_name(*ip), SanType::IpAddress(*ip)),
        };
        let key = KeyPair::generate().map_err(|e| format!("cannot make a challenge key: {e}"))?;
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![san];
        params.custom_extensions = vec![CustomExtension::new_acme_identifier(digest)];
        let cert = params
            .self_signed(&key)
            .map_err(|e| format!("cannot make the tls-alpn-01 certificate: {e}"))?;
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let provider = dice_proto::crypto::provider();
        let signing = provider
            .key_provider
            .load_private_key(der)
            .map_err(|e| format!("cannot load the challenge key: {e}"))?;
        let certified = CertifiedKey::new(vec![CertificateDer::from(cert.der().to_vec())], signing);
        self.tls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name, Arc::new(certified));
        Ok(())
    }

    /// Whether any tls-alpn-01 challenge is pending.
    pub fn tls_pending(&self) -> bool {
        !self
            .tls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }

    /// Forgets every pending challenge.
    pub fn clear(&self) {
        self.http
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.tls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// The server config for `acme-tls/1` handshakes: no client certificate,
    /// the challenge certificate for the name asked for, ALPN `acme-tls/1` only.
    pub fn tls_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
        let provider: Arc<CryptoProvider> = dice_proto::crypto::provider();
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(AlpnResolver(self.clone())));
        config.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
        Ok(Arc::new(config))
    }
}

/// Answers `acme-tls/1` ClientHellos with the pending challenge certificate
/// for the server name asked for (an IP address's reverse name, RFC 8738);
/// anything else gets no certificate, so the handshake fails.
#[derive(Debug)]
struct AlpnResolver(Arc<Challenges>);

impl ResolvesServerCert for AlpnResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let acme = hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
        if !acme {
            return None;
        }
        let certs = self.0.tls.lock().unwrap_or_else(PoisonError::into_inner);
        match hello.server_name() {
            Some(name) => certs.get(&name.to_ascii_lowercase()).cloned(),
            // No SNI (some validators of IP identifiers): the one pending, if only one is.
            None if certs.len() == 1 => certs.values().next().cloned(),
            None => None,
        }
    }
}

/// The reverse-DNS name of `ip`, which tls-alpn-01 sends as SNI for an IP identifier.
fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}.in-addr.arpa")
        }
        IpAddr::V6(v6) => {
            let mut name = String::new();
            for byte in v6.octets().iter().rev() {
                name.push_str(&format!("{:x}.{:x}.", byte & 0xf, byte >> 4));
            }
            name.push_str("ip6.arpa");
            name
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reverse_names() {
        assert_eq!(
            reverse_name("127.0.0.1".parse().expect("literal")),
            "1.0.0.127.in-addr.arpa"
        );
        assert!(reverse_name("::1".parse().expect("literal")).starts_with("1.0.0.0."));
    }
}
