//! [`NodeError`]: why one node could not be used, classified by the step that failed.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::net::SocketAddr;

use rustls::CertificateError;

/// The step at which talking to a node failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NodeErrorKind {
    /// The TCP connection: refused, unreachable, unresolvable, or no answer by the deadline.
    Connect,
    /// The TLS handshake, or the server refusing the client certificate after it.
    Tls,
    /// The deadline passed after the TCP connection was made.
    Timeout,
    /// The server answered the RPC with an error status.
    Rpc,
}

impl NodeErrorKind {
    /// The kind as shown to users and in JSON: `connect`, `tls`, `timeout` or `rpc`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Tls => "tls",
            Self::Timeout => "timeout",
            Self::Rpc => "rpc",
        }
    }
}

impl fmt::Display for NodeErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Why one node could not be used. Displays as `KIND: REASON (WHAT TO DO)`,
/// e.g. `tls: the node refused our client certificate: received fatal alert: UnknownCA (...)`.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The TCP connection failed.
    #[error("connect: {reason} ({hint})")]
    Connect {
        /// What happened.
        reason: String,
        /// What to do about it.
        hint: &'static str,
        /// The socket error, if there was one.
        #[source]
        source: Option<io::Error>,
    },
    /// The TLS handshake failed, or the server refused the client certificate.
    #[error("tls: {reason} ({hint})")]
    Tls {
        /// What happened.
        reason: String,
        /// What to do about it.
        hint: &'static str,
        /// The error the failure was found in.
        #[source]
        source: Option<BoxError>,
    },
    /// The deadline passed after the TCP connection was made.
    #[error("timeout: {reason} ({hint})")]
    Timeout {
        /// Which step was still waiting.
        reason: String,
        /// What to do about it.
        hint: &'static str,
    },
    /// The RPC failed with a gRPC status.
    #[error("rpc: {code:?}: {message} ({hint})")]
    Rpc {
        /// The gRPC status code.
        code: tonic::Code,
        /// The status message (on one line).
        message: String,
        /// What to do about it.
        hint: &'static str,
        /// The full status.
        #[source]
        source: Option<BoxError>,
    },
}

impl NodeError {
    /// The step that failed.
    pub fn kind(&self) -> NodeErrorKind {
        match self {
            Self::Connect { .. } => NodeErrorKind::Connect,
            Self::Tls { .. } => NodeErrorKind::Tls,
            Self::Timeout { .. } => NodeErrorKind::Timeout,
            Self::Rpc { .. } => NodeErrorKind::Rpc,
        }
    }

    /// What happened, without the kind or the hint: for a short table cell.
    pub fn reason(&self) -> String {
        match self {
            Self::Connect { reason, .. }
            | Self::Tls { reason, .. }
            | Self::Timeout { reason, .. } => reason.clone(),
            Self::Rpc { code, message, .. } => format!("{code:?}: {message}"),
        }
    }

    /// What to do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            Self::Connect { hint, .. }
            | Self::Tls { hint, .. }
            | Self::Timeout { hint, .. }
            | Self::Rpc { hint, .. } => hint,
        }
    }

    /// The deadline passed while `step` was still waiting, e.g. `no reply to RollDie`.
    pub fn timeout(step: &str) -> Self {
        Self::Timeout {
            reason: format!("{step} before the deadline"),
            hint: "raise --timeout, or check that the node is healthy and not overloaded",
        }
    }

    /// Classifies a failed RPC: a TLS alert anywhere in the chain makes it a
    /// TLS failure (TLS 1.3 reports a refused client certificate only on the
    /// first read), anything else is an RPC failure with the status code.
    pub fn from_status(status: tonic::Status) -> Self {
        if let Some(failure) = find_tls_failure(&status) {
            return failure.into_error(Some(Box::new(status)));
        }
        let code = status.code();
        // A status with a source was made here from a transport error, not sent
        // by the node: its message alone ("transport error") says too little.
        let (message, hint) = match status.source() {
            Some(source) => (
                chain_text_after(status.message().to_owned(), Some(source)),
                "the connection to the node broke: check the agent's log, it may have refused this client",
            ),
            None => (status.message().to_owned(), rpc_hint(code)),
        };
        let message = match one_line(&message) {
            message if message.is_empty() => "no message".to_owned(),
            message => message,
        };
        Self::Rpc {
            code,
            message,
            hint,
            source: Some(Box::new(status)),
        }
    }

    pub(super) fn connect(reason: String, hint: &'static str, source: Option<io::Error>) -> Self {
        Self::Connect {
            reason,
            hint,
            source,
        }
    }

    /// Classifies an I/O error from the TCP connect. `addr` is named when the
    /// node was given by host name, so the message says which address failed.
    pub(super) fn from_connect_io(addr: Option<SocketAddr>, error: io::Error) -> Self {
        use io::ErrorKind::*;
        let (what, hint) = match error.kind() {
            ConnectionRefused => (
                Some("connection refused"),
                "check that dice-agent is running and listening on that address",
            ),
            TimedOut => (
                Some("timed out"),
                "check the address, and that nothing drops traffic to the node",
            ),
            HostUnreachable | NetworkUnreachable => (
                Some("unreachable"),
                "check the address, and the network route to the node",
            ),
            _ => (None, "check the address in --node"),
        };
        let what = what.map_or_else(|| error.to_string(), str::to_owned);
        let reason = match addr {
            Some(addr) => format!("{addr}: {what}"),
            None => what,
        };
        Self::connect(reason, hint, Some(error))
    }

    /// Classifies an I/O error from the TLS handshake.
    pub(super) fn from_handshake_io(error: io::Error) -> Self {
        if let Some(failure) = find_tls_failure(&error) {
            return failure.into_error(Some(Box::new(error)));
        }
        let reason = match error.kind() {
            io::ErrorKind::UnexpectedEof => {
                "the node closed the connection during the handshake".to_owned()
            }
            io::ErrorKind::ConnectionReset => {
                "the node reset the connection during the handshake".to_owned()
            }
            _ => format!("handshake failed: {error}"),
        };
        Self::Tls {
            reason,
            hint: "check that the address is a dice-agent mTLS listener, and the agent's log",
            source: Some(Box::new(error)),
        }
    }

    /// Classifies a failure to start HTTP/2 over the finished TLS stream.
    pub(super) fn from_transport(error: tonic::transport::Error) -> Self {
        if let Some(failure) = find_tls_failure(&error) {
            return failure.into_error(Some(Box::new(error)));
        }
        let message = one_line(&chain_text(&error));
        Self::Rpc {
            code: tonic::Code::Unavailable,
            message: format!("http/2 connection failed: {message}"),
            hint: "check that the address is a dice-agent gRPC listener",
            source: Some(Box::new(error)),
        }
    }
}

fn rpc_hint(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Unavailable => "the node is not serving: check its health and log, then retry",
        Unimplemented => "the address does not serve api.DiceService: check --node",
        Unauthenticated | PermissionDenied => {
            "the node refused this client: check the client certificate and the agent's log"
        }
        DeadlineExceeded => "raise --timeout, or check the node's load",
        ResourceExhausted => "the node is overloaded: retry later",
        Cancelled => "the call was cancelled: retry",
        _ => "see the agent's log",
    }
}

// === TLS classification ===

/// A TLS failure found in an error chain, before it becomes a [`NodeError`].
#[derive(Debug, Clone, PartialEq, Eq)]
struct TlsFailure {
    reason: String,
    hint: &'static str,
}

impl TlsFailure {
    fn into_error(self, source: Option<BoxError>) -> NodeError {
        NodeError::Tls {
            reason: self.reason,
            hint: self.hint,
            source,
        }
    }
}

/// Whether an error chain holds a TLS failure, such as a fatal alert from the node.
pub(super) fn is_tls_error(error: &(dyn StdError + 'static)) -> bool {
    find_tls_failure(error).is_some()
}

/// Walks an error chain for a rustls error, typed or (where a layer such as h2
/// hides its source) in the text. Returns `None` if the chain has no TLS failure.
fn find_tls_failure(error: &(dyn StdError + 'static)) -> Option<TlsFailure> {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return Some(classify_rustls(tls));
        }
        if let Some(tls) = error
            .downcast_ref::<io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(classify_rustls(tls));
        }
        if let Some(failure) = classify_text(&error.to_string()) {
            return Some(failure);
        }
        next = error.source();
    }
    None
}

/// Classifies a typed rustls error.
fn classify_rustls(error: &rustls::Error) -> TlsFailure {
    match error {
        rustls::Error::AlertReceived(alert) => {
            classify_alert(&format!("{alert:?}"), &error.to_string())
        }
        rustls::Error::InvalidCertificate(cert) => classify_server_cert(cert, &error.to_string()),
        rustls::Error::InvalidMessage(_)
        | rustls::Error::InappropriateMessage { .. }
        | rustls::Error::InappropriateHandshakeMessage { .. } => TlsFailure {
            reason: format!("not a TLS server: {error}"),
            hint: "check that the address is a dice-agent mTLS listener, not a plaintext one",
        },
        _ => TlsFailure {
            reason: error.to_string(),
            hint: "check that the address is a dice-agent mTLS listener, and the agent's log",
        },
    }
}

/// Classifies the client's verdict on the node's certificate.
fn classify_server_cert(error: &CertificateError, text: &str) -> TlsFailure {
    use CertificateError::*;
    let (what, hint) = match error {
        // BadSignature: --ca holds a CA of the same name, but not the one that signed it.
        UnknownIssuer | BadSignature => (
            "the node's certificate is not signed by a CA in --ca",
            "pass --ca the CA that signed the agent's certificate",
        ),
        NotValidForName | NotValidForNameContext { .. } => (
            "the node's certificate does not hold the server name",
            "pass --server-name with a name in the agent's certificate, or reissue it with that SAN",
        ),
        Expired | ExpiredContext { .. } => (
            "the node's certificate has expired",
            "renew the agent's certificate",
        ),
        NotValidYet | NotValidYetContext { .. } => (
            "the node's certificate is not valid yet",
            "check the clocks of this host and the node",
        ),
        InvalidPurpose | InvalidPurposeContext { .. } => (
            "the node's certificate is not for servers",
            "reissue the agent's certificate with extended key usage serverAuth",
        ),
        _ => (
            "the node's certificate was rejected",
            "check the agent's certificate against --ca",
        ),
    };
    TlsFailure {
        reason: format!("{what}: {text}"),
        hint,
    }
}

/// Classifies a fatal alert from the node by its name (`UnknownCA`, ...);
/// `text` is the error as rustls put it.
fn classify_alert(alert: &str, text: &str) -> TlsFailure {
    let (what, hint) = match alert {
        "BadCertificate"
        | "UnknownCA"
        | "CertificateRequired"
        | "CertificateUnknown"
        | "UnsupportedCertificate"
        | "CertificateRevoked"
        | "AccessDenied"
        | "DecryptError" => (
            "the node refused our client certificate",
            "pass --cert and --key a client certificate signed by a CA the agent trusts",
        ),
        "CertificateExpired" => (
            "the node refused our client certificate as expired or not yet valid",
            "renew the client certificate, or check the clocks",
        ),
        "NoApplicationProtocol" => (
            "the node does not offer HTTP/2",
            "check that the address is a dice-agent gRPC listener",
        ),
        "HandshakeFailure" | "ProtocolVersion" | "InsufficientSecurity" => (
            "no TLS version or cipher suite in common with the node",
            "check the agent's TLS settings",
        ),
        _ => ("the node ended the handshake", "check the agent's log"),
    };
    TlsFailure {
        reason: format!("{what}: {text}"),
        hint,
    }
}

/// Finds a rustls error in error text, for layers that print it but hide the
/// typed source (h2 keeps its I/O error to itself).
fn classify_text(text: &str) -> Option<TlsFailure> {
    const ALERT: &str = "received fatal alert: ";
    if let Some(start) = text.find(ALERT) {
        let rest = &text[start + ALERT.len()..];
        let name_len = rest
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(rest.len());
        let name = &rest[..name_len];
        return Some(classify_alert(name, &format!("{ALERT}{name}")));
    }
    const INVALID: &str = "invalid peer certificate: ";
    if let Some(start) = text.find(INVALID) {
        return Some(TlsFailure {
            reason: format!("the node's certificate was rejected: {}", &text[start..]),
            hint: "check the agent's certificate against --ca and the server name",
        });
    }
    None
}

/// Every message in an error chain, joined with ": ", skipping any a message
/// before it already contains.
fn chain_text(error: &(dyn StdError + 'static)) -> String {
    chain_text_after(error.to_string(), error.source())
}

fn chain_text_after(first: String, mut next: Option<&(dyn StdError + 'static)>) -> String {
    let mut parts = vec![first];
    while let Some(error) = next {
        let text = error.to_string();
        if !text.is_empty() && !parts.iter().any(|part| part.contains(&text)) {
            parts.push(text);
        }
        next = error.source();
    }
    parts.join(": ")
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alerts_in_text_are_tls_failures() {
        let cases = [
            (
                "received fatal alert: CertificateRequired",
                "refused our client certificate",
            ),
            (
                "connection error: received fatal alert: UnknownCA",
                "refused our client certificate",
            ),
            (
                "received fatal alert: BadCertificate",
                "refused our client certificate",
            ),
            ("received fatal alert: CertificateExpired", "as expired"),
            (
                "received fatal alert: NoApplicationProtocol",
                "does not offer HTTP/2",
            ),
            ("received fatal alert: HandshakeFailure", "no TLS version"),
            (
                "invalid peer certificate: UnknownIssuer",
                "certificate was rejected",
            ),
        ];
        for (text, reason) in cases {
            let failure = classify_text(text).expect(text);
            assert!(failure.reason.contains(reason), "{text}: {failure:?}");
        }
        assert_eq!(classify_text("h2 protocol error: connection reset"), None);
    }

    #[test]
    fn typed_rustls_errors_are_classified() {
        let cases = [
            (
                rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
                "not signed by a CA in --ca",
            ),
            (
                rustls::Error::InvalidCertificate(CertificateError::NotValidForName),
                "does not hold the server name",
            ),
            (
                rustls::Error::InvalidCertificate(CertificateError::Expired),
                "has expired",
            ),
            (
                rustls::Error::AlertReceived(rustls::AlertDescription::UnknownCA),
                "refused our client certificate: received fatal alert: UnknownCA",
            ),
            (
                rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType),
                "not a TLS server",
            ),
        ];
        for (error, reason) in cases {
            // As tokio-rustls reports it: an io::Error wrapping the rustls error.
            let io = io::Error::new(io::ErrorKind::InvalidData, error);
            let node = NodeError::from_handshake_io(io);
            assert_eq!(node.kind(), NodeErrorKind::Tls);
            assert!(node.to_string().contains(reason), "{node}");
        }
    }

    #[test]
    fn statuses_are_rpc_errors_unless_tls_is_in_the_chain() {
        let plain = NodeError::from_status(tonic::Status::unavailable("draining\nnow"));
        assert_eq!(plain.kind(), NodeErrorKind::Rpc);
        assert_eq!(
            plain.to_string(),
            "rpc: Unavailable: draining now (the node is not serving: check its health and log, then retry)"
        );

        let empty = NodeError::from_status(tonic::Status::internal(""));
        assert!(
            empty.to_string().starts_with("rpc: Internal: no message ("),
            "{empty}"
        );

        let alert = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired),
        );
        let status = tonic::Status::from_error(Box::new(alert));
        let tls = NodeError::from_status(status);
        assert_eq!(tls.kind(), NodeErrorKind::Tls);
        assert!(
            tls.to_string()
                .starts_with("tls: the node refused our client certificate"),
            "{tls}"
        );

        let reset = io::Error::new(io::ErrorKind::ConnectionReset, "connection reset by peer");
        let broken = NodeError::from_status(tonic::Status::from_error(Box::new(reset)));
        assert_eq!(broken.kind(), NodeErrorKind::Rpc);
        assert!(
            broken
                .to_string()
                .starts_with("rpc: Unknown: connection reset by peer ("),
            "{broken}"
        );
        assert!(
            broken
                .to_string()
                .contains("(the connection to the node broke"),
            "{broken}"
        );

        let alert = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(rustls::AlertDescription::UnknownCA),
        );
        let tls = NodeError::from_status(tonic::Status::from_error(Box::new(alert)));
        assert_eq!(tls.kind(), NodeErrorKind::Tls);
        assert!(
            tls.to_string()
                .starts_with("tls: the node refused our client certificate"),
            "{tls}"
        );
    }

    #[test]
    fn kinds_have_stable_names() {
        let names: Vec<_> = [
            NodeErrorKind::Connect,
            NodeErrorKind::Tls,
            NodeErrorKind::Timeout,
            NodeErrorKind::Rpc,
        ]
        .iter()
        .map(|kind| kind.to_string())
        .collect();
        assert_eq!(names, ["connect", "tls", "timeout", "rpc"]);
        assert_eq!(
            NodeError::timeout("no reply to RollDie").to_string(),
            "timeout: no reply to RollDie before the deadline (raise --timeout, or check that the node is healthy and not overloaded)"
        );
    }
}
