//! `dicectl roll`: rolls dice on every selected node, concurrently, and
//! reports a row per node (`NODE ADDRESS VALUE LATENCY ERROR`) and a summary.
//!
//! One ad-hoc `--node HOST:PORT` without `--output` keeps the first slice's
//! scripting form: just the value on stdout, or one line on stderr naming the
//! node and the step that failed.

use std::sync::Arc;
use std::time::Duration;

use dice_proto::api::RollDieRequest;
use rustls::ClientConfig;
use tokio::time::{Instant, timeout_at};

use crate::args::{GlobalArgs, OutputFormat};
use crate::cli::RollArgs;
use crate::client::{self, NodeError, NodeTarget};
use crate::fanout::{Probed, fan_out_plan_each};
use crate::output::jsonl;
use crate::plan::{self, Plan, Request};
use crate::progress::Progress;
use crate::report::{Failure, RollReport, RollRow};
use crate::select::Node;
use crate::{Outcome, output, runtime};

/// Runs `dicectl roll`.
///
/// Bad flags, an unusable fleet file or unusable TLS files are errors (nothing
/// ran); a node that fails is a row, and makes the outcome [`Outcome::NodeFailed`].
pub fn run(global: &GlobalArgs, args: &RollArgs) -> anyhow::Result<Outcome> {
    let plan = plan::plan(Request {
        allow_partial_discovery: args.discovery.allow_partial_discovery,
        ..Request::new(global.fleet.as_deref(), &args.select, &args.conn)
    })?;
    output::plan_details(&plan, global.verbose);
    let mut progress = Progress::stderr(plan.nodes.len());
    let runtime = runtime(plan.nodes.len())?;
    if global.output == Some(OutputFormat::Jsonl) {
        let all_ok = runtime.block_on(roll_stream(
            &plan,
            args.count,
            &mut progress,
            global.verbose,
        ))?;
        return Ok(Outcome::from_all_ok(all_ok));
    }
    let report = runtime.block_on(roll_all(&plan, args.count, &mut progress));
    match global.output {
        None if plan.is_single_ad_hoc() => output::roll_terse(&report, global.verbose)?,
        format => output::roll(
            &report,
            format.unwrap_or(OutputFormat::Table),
            global.verbose,
        )?,
    }
    Ok(Outcome::from_all_ok(report.ok() == report.rows.len()))
}

/// What rolling one node returned: the values, and the error that stopped it.
type Rolled = (Vec<i32>, Option<NodeError>);

/// Rolls `count` dice on every node of `plan`, `plan.concurrency` nodes at a time.
///
/// While the run goes on, each finished node leaves only its latency, its
/// failure (if any) and its values, copied into one buffer sized before the
/// run; names and addresses are copied into rows once every connection is
/// gone. Small allocations that outlive a node, made between the kilobytes
/// of TLS and HTTP/2 buffers each connection allocates and frees, would pin
/// those pages: 3.6 KB of peak memory per node at 10,000 nodes.
pub async fn roll_all(plan: &Plan, count: u32, progress: &mut Progress) -> RollReport {
    let width = count as usize;
    let mut values = vec![0; plan.nodes.len() * width];
    let mut done: Vec<(usize, Duration, Option<Failure>)> = plan
        .nodes
        .iter()
        .map(|_| (0, Duration::ZERO, None))
        .collect();
    let run =
        fan_out_plan_each(
            plan,
            progress,
            move |node, tls, deadline| async move {
                roll_node(&node.target, tls, deadline, count).await
            },
            |index, probed: Probed<Rolled>| {
                let (rolled, error) = probed.result;
                values[index * width..][..rolled.len()].copy_from_slice(&rolled);
                done[index] = (rolled.len(), probed.latency, error.map(Failure::from));
            },
        )
        .await;
    let rows = (plan.nodes.iter().zip(done).enumerate())
        .map(|(index, (node, (rolled, latency, failure)))| RollRow {
            name: node.name.clone(),
            address: node.target.label().to_owned(),
            values: values[index * width..][..rolled].to_vec(),
            latency,
            failure,
        })
        .collect();
    RollReport { run, count, rows }
}

/// As [`roll_all`], writing a JSON line per node as soon as it finishes and
/// then the summary line, keeping no row. Whether every node was OK.
pub async fn roll_stream(
    plan: &Plan,
    count: u32,
    progress: &mut Progress,
    verbose: bool,
) -> anyhow::Result<bool> {
    crate::stream::stream(
        plan,
        progress,
        verbose,
        move |node, tls, deadline| async move {
            roll_node(&node.target, tls, deadline, count).await
        },
        row,
        |lines, run, tally| jsonl::roll_summary(lines, run, count, tally),
    )
    .await
}

/// One node's row, and the node.
fn row(probed: Probed<Rolled>) -> (Node, RollRow) {
    let (values, error) = probed.result;
    let row = RollRow {
        name: probed.node.name.clone(),
        address: probed.node.target.label().to_owned(),
        values,
        latency: probed.latency,
        failure: error.map(Failure::from),
    };
    (probed.node, row)
}

/// Connects to `node` and rolls `count` times on that one connection, all
/// before `deadline`. Returns the values rolled, and the error that stopped it.
pub async fn roll_node(
    node: &NodeTarget,
    tls: Arc<ClientConfig>,
    deadline: Instant,
    count: u32,
) -> (Vec<i32>, Option<NodeError>) {
    let mut client = match client::connect(node, tls, deadline).await {
        Ok(client) => client,
        Err(error) => return (Vec::new(), Some(error)),
    };
    let mut values = Vec::with_capacity(count as usize);
    for _ in 0..count {
        match timeout_at(deadline, client.roll_die(RollDieRequest {})).await {
            Err(_) => return (values, Some(NodeError::timeout("no reply to RollDie"))),
            Ok(Err(status)) => return (values, Some(NodeError::from_status(status))),
            Ok(Ok(reply)) => values.push(reply.into_inner().value),
        }
    }
    (values, None)
}

/// Connects to `node` and rolls once, all within `timeout`.
///
/// # Panics
///
/// Never: [`roll_node`] returns `count` values when it returns no error.
pub async fn roll(
    node: &NodeTarget,
    tls: Arc<ClientConfig>,
    timeout: Duration,
) -> Result<i32, NodeError> {
    let (values, error) = roll_node(node, tls, Instant::now() + timeout, 1).await;
    if let Some(error) = error {
        return Err(error);
    }
    Ok(values[0])
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::net::TcpListener;

    use super::*;
    use crate::client::NodeErrorKind;
    use crate::testing::{Dice, Node, Pki};

    const TIMEOUT: Duration = Duration::from_secs(5);

    fn target(node: &Node) -> NodeTarget {
        target_at(node.addr)
    }

    fn target_at(addr: std::net::SocketAddr) -> NodeTarget {
        NodeTarget::parse(&addr.to_string(), None).expect("target")
    }

    async fn roll_err(target: &NodeTarget, pki: &Pki, timeout: Duration) -> NodeError {
        roll(target, pki.client_config(), timeout)
            .await
            .expect_err("the roll must fail")
    }

    /// Asserts that `error` is of `kind` and reads `prefix...`.
    fn assert_starts(error: &NodeError, kind: NodeErrorKind, prefix: &str) {
        assert_eq!(error.kind(), kind, "{error}");
        assert!(error.to_string().starts_with(prefix), "{error}");
    }

    #[tokio::test]
    async fn rolls_over_mutual_tls() {
        let pki = Pki::new();
        let node = Node::spawn(pki.server_config(&pki), Dice::Always(4)).await;
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
        let node = Node::spawn(theirs.server_config(&ours), Dice::Always(4)).await;
        let error = roll_err(&target(&node), &ours, TIMEOUT).await;
        assert_eq!(error.kind(), NodeErrorKind::Tls, "{error}");
        let text = error.to_string();
        assert!(text.contains("not signed by a CA in --ca"), "{text}");
        assert!(
            text.ends_with("(pass --ca the CA that signed the agent's certificate)"),
            "{text}"
        );
    }

    /// The node has a certificate our CA signed but trusts only the other
    /// CA's clients. With TLS 1.3 the client's handshake is done before the
    /// node refuses its certificate, so the refusal arrives as an error on the
    /// RPC; with TLS 1.2 the node refuses it inside the handshake.
    #[tokio::test]
    async fn client_certificate_refused_is_a_tls_error() {
        let (ours, theirs) = (Pki::new(), Pki::new());
        for config in [
            ours.server_config(&theirs),
            ours.server_config_tls12(&theirs),
        ] {
            let node = Node::spawn(config, Dice::Always(4)).await;
            let error = roll_err(&target(&node), &ours, TIMEOUT).await;
            assert_starts(
                &error,
                NodeErrorKind::Tls,
                "tls: the node refused our client certificate: received fatal alert: ",
            );
            assert!(
                error.to_string().contains("(pass --cert and --key"),
                "{error}"
            );
        }
    }

    #[tokio::test]
    async fn wrong_server_name_is_a_tls_error() {
        let pki = Pki::new();
        let node = Node::spawn(pki.server_config(&pki), Dice::Always(4)).await;
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
        let reply = Dice::Fails(tonic::Code::Unavailable, "draining");
        let node = Node::spawn(pki.server_config(&pki), reply).await;
        let error = roll_err(&target(&node), &pki, TIMEOUT).await;
        assert_starts(&error, NodeErrorKind::Rpc, "rpc: Unavailable: draining (");
    }

    #[tokio::test]
    async fn refused_connection_is_a_connect_error() {
        let pki = Pki::new();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let error = roll_err(&target_at(addr), &pki, TIMEOUT).await;
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
        let target = target_at(listener.local_addr().expect("addr"));
        let error = roll_err(&target, &pki, Duration::from_millis(200)).await;
        assert_starts(
            &error,
            NodeErrorKind::Timeout,
            "timeout: no TLS handshake before the deadline",
        );
        drop(listener);
    }

    #[tokio::test]
    async fn plaintext_listener_is_a_tls_error() {
        use tokio::io::AsyncWriteExt;
        let pki = Pki::new();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let target = target_at(listener.local_addr().expect("addr"));
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
