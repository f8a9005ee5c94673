//! The identity a verified client certificate carries, read once per
//! certificate.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use dice_proto::cert::CertSummary;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// How many client certificates' identities [`ClientIdentity::from_tls`]
/// keeps (a few hundred KiB at most); when full it starts over.
const MAX_CACHED_IDENTITIES: usize = 256;

/// Identities by the leaf certificate's DER bytes. Only certificates that
/// passed verification get here, so a peer cannot fill it with junk faster
/// than it can get certificates from the CA.
static IDENTITIES: LazyLock<Mutex<IdentityCache>> = LazyLock::new(Mutex::default);

/// Client identities by their leaf certificate's DER bytes.
type IdentityCache = HashMap<Box<[u8]>, Arc<ClientIdentity>>;

/// The identity a verified client certificate carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// Subject distinguished name.
    pub subject: String,
    /// The subject's common name.
    pub common_name: Option<String>,
    /// Subject alternative names, as `DNS:...`, `URI:...`, `IP:...`.
    pub sans: Vec<String>,
}

impl ClientIdentity {
    /// Reads the identity from the peer's leaf certificate, if it parses.
    /// A certificate seen recently is not parsed again: clients reconnect
    /// with the same one, and a full handshake is the agent's dearest work.
    pub fn from_tls(stream: &TlsStream<TcpStream>) -> Option<Arc<Self>> {
        let leaf = stream.get_ref().1.peer_certificates()?.first()?;
        let mut cache = IDENTITIES.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(known) = cache.get(leaf.as_ref()) {
            return Some(known.clone());
        }
        let summary = CertSummary::parse(leaf).ok()?;
        let identity = Arc::new(Self {
            subject: summary.subject,
            common_name: summary.common_name,
            sans: summary.sans,
        });
        if cache.len() >= MAX_CACHED_IDENTITIES {
            cache.clear();
        }
        cache.insert(leaf.as_ref().into(), identity.clone());
        Some(identity)
    }

    /// The names an allow list may match: DNS and URI SANs (without their
    /// `DNS:`/`URI:` prefix) and the common name.
    pub fn identities(&self) -> impl Iterator<Item = &str> {
        let sans = self.sans.iter().filter_map(|san| {
            san.strip_prefix("DNS:")
                .or_else(|| san.strip_prefix("URI:"))
        });
        sans.chain(self.common_name.as_deref())
    }
}
