//! One accept loop per listener. Plaintext connections go straight to the
//! server; TLS handshakes each run in their own task under a timeout, with a
//! cap on handshakes in flight, so a silent peer never delays anyone else.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use super::conn::{Activity, Conn, ConnInfo};
use super::handshake_rate::HandshakeGate;
use crate::config::{Limits, ListenerConfig, Mode};
use crate::metrics::HandshakeLabels;
use crate::rpc::{AllowList, ListenerLimiter};
use crate::services::AgentState;
use crate::tls::ClientIdentity;
use crate::tls::TlsProfile;

/// The target of this module's events, as before it moved into `net/`.
const TARGET: &str = "dice_agent::listener";

/// The longest pause after a failed `accept` (such as running out of file descriptors).
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// The most connections a health listener (`mode = "health"`) keeps open,
/// or `limits.max_connections` if lower: its clients are a few load
/// balancers and a kubelet, and a flood of plaintext connections to a port
/// open to the network must not take the file descriptors the API needs.
pub const HEALTH_MAX_CONNECTIONS: usize = 256;

/// A listener bound to its address, with the certificate material it serves.
pub struct BoundListener {
    /// The listener's config.
    pub config: ListenerConfig,
    /// The bound socket.
    pub socket: TcpListener,
    /// The material an mTLS listener serves; `None` for h2c.
    pub tls: Option<Arc<TlsProfile>>,
}

impl BoundListener {
    /// The address actually bound (differs from the config when it asked for port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }
}

/// A semaphore whose size follows a limit that a config reload can change.
struct Permits {
    semaphore: Arc<Semaphore>,
    size: usize,
}

impl Permits {
    fn new(size: usize) -> Self {
        Self {
            semaphore: Arc::new(Semaphore::new(size)),
            size,
        }
    }

    /// Grows or shrinks to `size`. Shrinking takes back free permits only:
    /// connections already open keep theirs, and the rest is taken back as
    /// they close (on a later resize).
    fn resize(&mut self, size: usize) {
        if size > self.size {
            self.semaphore.add_permits(size - self.size);
            self.size = size;
        } else if size < self.size {
            self.size -= self.semaphore.forget_permits(self.size - size);
        }
    }
}

/// Accepts connections until `shutdown`, handing each finished one to `conns`.
/// The listener's `allow` list, limits and certificate material are read from
/// `state` for each new connection, so a config reload applies from the next
/// one on. On mTLS listeners, `rate` limits new connections per source IP.
pub async fn accept_loop(
    bound: BoundListener,
    state: Arc<AgentState>,
    rate: Arc<ListenerLimiter>,
    conns: mpsc::Sender<Conn>,
    shutdown: CancellationToken,
) {
    let name: Arc<str> = Arc::from(bound.config.name.as_str());
    let live = state.live.clone();
    let start = live.current().limits;
    let health = bound.config.mode == Mode::Health;
    let max_connections = |limits: &Limits| {
        if health {
            limits.max_connections.min(HEALTH_MAX_CONNECTIONS)
        } else {
            limits.max_connections
        }
    };
    let mut handshakes = Permits::new(start.max_handshakes);
    let mut slots = Permits::new(max_connections(&start));
    let mut gate = HandshakeGate::new(rate);
    let mut tasks = JoinSet::new();
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = bound.socket.accept() => accepted,
        };
        while tasks.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                backoff = Duration::from_millis(5);
                accepted
            }
            Err(error) => {
                warn!(target: TARGET, listener = %name, %error, "accept failed; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                continue;
            }
        };
        if bound.tls.is_some() && !gate.admit(peer) {
            continue;
        }
        let config = live.current();
        let limits = config.limits;
        handshakes.resize(limits.max_handshakes);
        slots.resize(max_connections(&limits));
        let Ok(slot) = slots.semaphore.clone().try_acquire_owned() else {
            warn!(target: TARGET, listener = %name, %peer, limit = max_connections(&limits), "too many open connections; refusing connection");
            continue;
        };
        // Disabling Nagle matters for small gRPC messages; failure only costs latency.
        let _ = stream.set_nodelay(true);
        let info = ConnInfo {
            listener: name.clone(),
            peer,
            peer_text: peer.to_string().into(),
            client: None,
            client_chain: None,
            trusted_proxy: bound.config.trusted_proxy,
            denied: false,
            activity: Activity::default(),
        };
        let profile = bound.tls.as_ref().map(|first| {
            let profiles = state.profiles.load();
            let current = profiles.iter().find(|(listener, _)| **listener == *name);
            current.map_or_else(|| first.clone(), |(_, profile)| profile.clone())
        });
        let Some(profile) = profile else {
            debug!(target: TARGET, listener = %name, %peer, "accepted h2c connection");
            if conns
                .send(Conn::plain(stream, info, limits.idle_timeout, slot))
                .await
                .is_err()
            {
                break;
            }
            continue;
        };
        let Ok(permit) = handshakes.semaphore.clone().try_acquire_owned() else {
            warn!(target: TARGET, listener = %name, %peer, limit = limits.max_handshakes, "too many TLS handshakes in flight; refusing connection");
            continue;
        };
        let acceptor = TlsAcceptor::from(profile.server_config());
        let acme = crate::acme::tls_alpn_challenges(&name);
        let span = info_span!(target: TARGET, "conn", listener = %name, %peer);
        let conns = conns.clone();
        let allow = config
            .listeners
            .iter()
            .find(|listener| *listener.name == *name)
            .map_or_else(
                || bound.config.allow.clone(),
                |listener| listener.allow.clone(),
            );
        tasks.spawn(
            async move {
                let conn = handshake(acceptor, acme, stream, info, limits, &allow, slot).await;
                drop(permit);
                if let Some(conn) = conn {
                    let _ = conns.send(conn).await;
                }
            }
            .instrument(span),
        );
    }
    tasks.abort_all();
}

async fn handshake(
    acceptor: TlsAcceptor,
    acme: Option<Arc<crate::acme::Challenges>>,
    stream: TcpStream,
    mut info: ConnInfo,
    limits: Limits,
    allow: &AllowList,
    slot: OwnedSemaphorePermit,
) -> Option<Conn> {
    let listener = info.listener.clone();
    // The tls-alpn-01 listener answers ACME validation handshakes too.
    let accept = async {
        match acme {
            Some(challenges) => {
                crate::acme::accept_tls(stream, acceptor.config().clone(), &challenges).await
            }
            None => acceptor.accept(stream).await.map(Some),
        }
    };
    let (conn, outcome) = match tokio::time::timeout(limits.handshake_timeout, accept).await {
        Ok(Ok(None)) => return None,
        Ok(Ok(Some(tls))) => {
            info.client = ClientIdentity::from_tls(&tls);
            info.client_chain = tls.get_ref().1.peer_certificates().map(Arc::from);
            match &info.client {
                Some(client) if allow.allows(client) => {
                    debug!(target: TARGET, { client.subject = %client.subject }, "TLS handshake done");
                }
                Some(client) => {
                    warn!(target: TARGET, { client.subject = %client.subject, client.sans = %client.sans.join(",") }, "client not in the listener's allow list; its RPCs get PERMISSION_DENIED");
                    info.denied = true;
                }
                None => info.denied = !allow.allows_any(),
            }
            let outcome = if info.denied { "denied" } else { "ok" };
            (
                Some(Conn::tls(tls, info, limits.idle_timeout, slot)),
                outcome,
            )
        }
        Ok(Err(error)) => {
            info!(target: TARGET, %error, "TLS handshake failed");
            (None, handshake_outcome(&error))
        }
        Err(_) => {
            info!(target: TARGET, timeout = ?limits.handshake_timeout, "TLS handshake timed out");
            (None, "timeout")
        }
    };
    crate::metrics::metrics()
        .handshakes
        .get_or_create(&HandshakeLabels {
            listener: listener.to_string(),
            outcome,
        })
        .inc();
    conn
}

/// Names a failed handshake for the handshakes metric.
fn handshake_outcome(error: &std::io::Error) -> &'static str {
    use rustls::{CertificateError, Error};
    match error.get_ref().and_then(|e| e.downcast_ref::<Error>()) {
        Some(Error::NoCertificatesPresented) => "no_cert",
        Some(Error::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature,
        )) => "unknown_ca",
        Some(Error::InvalidCertificate(CertificateError::Revoked)) => "revoked",
        Some(Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        )) => "expired",
        _ => "error",
    }
}
