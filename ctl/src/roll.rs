//! `dicectl roll`: rolls one die on one node and prints the value.

use std::sync::Arc;
use std::time::Duration;

use dice_proto::api::RollDieRequest;
use rustls::ClientConfig;
use tokio::time::{Instant, timeout_at};

use crate::cli::RollArgs;
use crate::client::{self, NodeError, NodeTarget};
use crate::{Outcome, output, runtime, tls};

/// Runs `dicectl roll`: prints the value on stdout, or one line naming the node
/// and the failed step on stderr.
///
/// Bad flags or unusable TLS files are errors (nothing ran); a node that fails
/// is [`Outcome::NodeFailed`].
pub fn run(args: &RollArgs) -> anyhow::Result<Outcome> {
    let target = NodeTarget::parse(&args.target.node, args.target.server_name.as_deref())?;
    let config = tls::client_config(&args.tls.ca, &args.tls.cert, &args.tls.key)?;
    let result = runtime()?.block_on(roll(&target, config, args.target.timeout));
    match result {
        Ok(value) => {
            output::stdout(&format!("{value}\n"))?;
            Ok(Outcome::Success)
        }
        Err(error) => {
            output::node_failure(&target, &error);
            Ok(Outcome::NodeFailed)
        }
    }
}

/// Connects to `node` and rolls once, all within `timeout`.
pub async fn roll(
    node: &NodeTarget,
    tls: Arc<ClientConfig>,
    timeout: Duration,
) -> Result<i32, NodeError> {
    let deadline = Instant::now() + timeout;
    let mut client = client::connect(node, tls, deadline).await?;
    let reply = timeout_at(deadline, client.roll_die(RollDieRequest {}))
        .await
        .map_err(|_| NodeError::timeout("no reply to RollDie"))?
        .map_err(NodeError::from_status)?;
    Ok(reply.into_inner().value)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::net::TcpListener;

    use super::*;
    use crate::client::NodeErrorKind;
    use crate::testing::{Node, Pki, Reply};

    const TIMEOUT: Duration = Duration::from_secs(5);

    fn target(node: &Node) -> NodeTarget {
        NodeTarget::parse(&node.addr.to_string(), None).expect("target")
    }

    async fn roll_err(target: &NodeTarget, pki: &Pki, timeout: Duration) -> NodeError {
        roll(target, pki.client_config(), timeout)
            .await
            .expect_err("the roll must fail")
    }

    #[tokio::test]
    async fn rolls_over_mutual_tls() {
        let pki = Pki::new();
        let node = Node::spawn(pki.server_config(&pki), Reply::Value(4)).await;
        let value = roll(&target(&node), pki.client_config(), TIMEOUT)
            .await
            .expect("roll");
        assert_eq!(value, 4);

        // The default SANs cover `localhost` too.
        let by_name =
            NodeTarget::parse(&format!("localhost:{}", node.addr.port()), None).expect("target");
        assert_eq!(
            roll(&by_name, pki.client_config(), TIMEOUT)
                .await
                .expect("roll"),
            4
        );
    }

    #[tokio::test]
    async fn node_from_another_ca_is_a_tls_error() {
        let (ours, theirs) = (Pki::new(), Pki::new());
        let node = Node::spawn(theirs.server_config(&ours), Reply::Value(4)).await;
        let error = roll_err(&target(&node), &ours, TIMEOUT).await;
        assert_eq!(error.kind(), NodeErrorKind::Tls, "{error}");
        let text = error.to_string();
        assert!(text.contains("not signed by a CA in --ca"), "{text}");
        assert!(
            text.ends_with("(pass --ca the CA that signed the agent's certificate)"),
            "{text}"
        );
    }

    /// The TLS 1.3 case: the client's handshake is done before the node refuses
    /// its certificate, so the refusal arrives as an error on the RPC.
    #[tokio::test]
    async fn client_certificate_refused_is_a_tls_error() {
        let (ours, theirs) = (Pki::new(), Pki::new());
        // The node has a certificate our CA signed but trusts only the other CA's clients.
        let node = Node::spawn(ours.server_config(&theirs), Reply::Value(4)).await;
        let error = roll_err(&target(&node), &ours, TIMEOUT).await;
        assert_eq!(error.kind(), NodeErrorKind::Tls, "{error}");
        let text = error.to_string();
        assert!(
            text.starts_with(
                "tls: the node refused our client certificate: received fatal alert: "
            ),
            "{text}"
        );
        assert!(text.contains("(pass --cert and --key"), "{text}");
    }

    /// With TLS 1.2 the node refuses the client certificate inside the handshake.
    #[tokio::test]
    async fn client_certificate_refused_over_tls12_is_a_tls_error() {
        let (ours, theirs) = (Pki::new(), Pki::new());
        let node = Node::spawn(ours.server_config_tls12(&theirs), Reply::Value(4)).await;
        let error = roll_err(&target(&node), &ours, TIMEOUT).await;
        assert_eq!(error.kind(), NodeErrorKind::Tls, "{error}");
        let text = error.to_string();
        assert!(
            text.starts_with(
                "tls: the node refused our client certificate: received fatal alert: "
            ),
            "{text}"
        );
    }

    #[tokio::test]
    async fn wrong_server_name_is_a_tls_error() {
        let pki = Pki::new();
        let node = Node::spawn(pki.server_config(&pki), Reply::Value(4)).await;
        let target =
            NodeTarget::parse(&node.addr.to_string(), Some("node-9.example")).expect("target");
        let error = roll_err(&target, &pki, TIMEOUT).await;
        assert_eq!(error.kind(), NodeErrorKind::Tls, "{error}");
        assert!(
            error.to_string().contains("does not hold the server name"),
            "{error}"
        );
        assert!(error.to_string().contains("node-9.example"), "{error}");
    }

    #[tokio::test]
    async fn status_is_an_rpc_error() {
        let pki = Pki::new();
        let reply = Reply::Error(tonic::Code::Unavailable, "draining");
        let node = Node::spawn(pki.server_config(&pki), reply).await;
        let error = roll_err(&target(&node), &pki, TIMEOUT).await;
        assert_eq!(error.kind(), NodeErrorKind::Rpc, "{error}");
        assert!(
            error
                .to_string()
                .starts_with("rpc: Unavailable: draining ("),
            "{error}"
        );
    }

    #[tokio::test]
    async fn refused_connection_is_a_connect_error() {
        let pki = Pki::new();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let target = NodeTarget::parse(&addr.to_string(), None).expect("target");
        let error = roll_err(&target, &pki, TIMEOUT).await;
        assert_eq!(error.kind(), NodeErrorKind::Connect, "{error}");
        assert_eq!(
            error.to_string(),
            "connect: connection refused (check that dice-agent is running and listening on that address)"
        );
    }

    #[tokio::test]
    async fn silent_node_is_a_timeout() {
        let pki = Pki::new();
        // Accepts TCP (the kernel does, from the backlog) but never speaks TLS.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let target = NodeTarget::parse(&listener.local_addr().expect("addr").to_string(), None)
            .expect("target");
        let error = roll_err(&target, &pki, Duration::from_millis(200)).await;
        assert_eq!(error.kind(), NodeErrorKind::Timeout, "{error}");
        assert!(
            error
                .to_string()
                .starts_with("timeout: no TLS handshake before the deadline"),
            "{error}"
        );
        drop(listener);
    }

    #[tokio::test]
    async fn plaintext_listener_is_a_tls_error() {
        use tokio::io::AsyncWriteExt;
        let pki = Pki::new();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let target = NodeTarget::parse(&listener.local_addr().expect("addr").to_string(), None)
            .expect("target");
        let server = tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.expect("accept");
            let _ = tcp.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
            let _ = tcp.shutdown().await;
        });
        let error = roll_err(&target, &pki, TIMEOUT).await;
        assert_eq!(error.kind(), NodeErrorKind::Tls, "{error}");
        assert!(error.to_string().contains("not a TLS server"), "{error}");
        server.await.expect("server");
    }
}
