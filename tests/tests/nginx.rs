//! The real nginx, running the repository's `config/nginx.conf`, in front of
//! real agents' h2c listeners: mTLS terminated by nginx, load balancing over
//! kept-alive upstream connections, failover, and the client identity header.
//!
//! Needs nginx (`apt-get install nginx`) and the test venv
//! (`./scripts/setup-test-env.sh`); missing either fails the test.

use std::time::Duration;

use dice_proto::api::RollDieRequest;
use dice_proto::api::dice_service_client::DiceServiceClient;
use dice_tests::nginx::Nginx;
use dice_tests::pki::CLIENT_CN;
use dice_tests::python::PyRoll;
use dice_tests::rpc_log::{RpcLine, await_rolls, h2c_connections};
use dice_tests::{Agent, AgentConfig, Client, Ctl, ListenerConfig, Pki, Signal, fresh_pki};

/// How long a stopped agent may take to drain and exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(15);

/// The identity header nginx sets, and what a client might try to forge.
const SUBJECT_HEADER: &str = "x-client-subject";
const FORGED_SUBJECT: &str = "CN=forged-admin";

fn two_agents(pki: &Pki) -> (Agent, Agent) {
    let first = Agent::spawn(&AgentConfig::standard(pki).node("node-a"));
    let second = Agent::spawn(&AgentConfig::standard(pki).node("node-b"));
    (first, second)
}

#[test]
fn python_client_and_dicectl_roll_through_nginx() {
    let (_dir, pki) = fresh_pki();
    let (a, b) = two_agents(&pki);
    let nginx = Nginx::spawn(&pki, [a.h2c_addr(), b.h2c_addr()]);

    let values = PyRoll::new(nginx.addr(), pki.ca_cert())
        .identity(pki.client())
        .count(6)
        .rolls();
    assert_eq!(values.len(), 6);

    let client = pki.client();
    let roll = Ctl::roll(nginx.addr(), pki.ca_cert(), &client.cert, &client.key);
    roll.assert_success();
    let value: i32 = roll
        .stdout
        .trim()
        .parse()
        .expect("dicectl prints the value");
    assert!((1..=6).contains(&value), "{roll}");

    // nginx logged every RPC with the agent's OK status from the trailers.
    let access = nginx.await_access(" grpc_status=0 ", 7);
    let ok = access
        .lines()
        .filter(|line| line.contains(" grpc_status=0 "))
        .count();
    assert_eq!(ok, 7, "7 RPCs with grpc-status 0\n{}", nginx.dump());
    let [rolls_a, rolls_b] = await_rolls([&a, &b], 7);
    assert_eq!(rolls_a.len() + rolls_b.len(), 7);
}

#[test]
fn nginx_refuses_a_missing_or_untrusted_client_certificate() {
    let (_dir, pki) = fresh_pki();
    let stranger = pki.unrelated("other");
    let (a, b) = two_agents(&pki);
    let nginx = Nginx::spawn(&pki, [a.h2c_addr(), b.h2c_addr()]);

    let none = PyRoll::new(nginx.addr(), pki.ca_cert()).fails_with("UNAUTHENTICATED");
    none.assert_stderr_contains("client certificate required");
    none.assert_stderr_contains("kind: tls");

    let foreign = PyRoll::new(nginx.addr(), pki.ca_cert())
        .identity(stranger.client())
        .fails_with("UNAUTHENTICATED");
    foreign.assert_stderr_contains("client certificate not trusted");

    // nginx logged both refusals with its verification result.
    nginx.await_access("verify=NONE", 1);
    nginx.await_access("verify=FAILED:", 1);

    // A good client still gets through, and its roll is the only one that
    // reached an agent.
    PyRoll::new(nginx.addr(), pki.ca_cert())
        .identity(pki.client())
        .rolls();
    let [rolls_a, rolls_b] = await_rolls([&a, &b], 1);
    assert_eq!(rolls_a.len() + rolls_b.len(), 1, "{}", nginx.dump());
}

#[test]
fn nginx_balances_over_both_agents_on_kept_alive_connections() {
    let (_dir, pki) = fresh_pki();
    let (a, b) = two_agents(&pki);
    let nginx = Nginx::spawn(&pki, [a.h2c_addr(), b.h2c_addr()]);

    const ROLLS: usize = 20;
    PyRoll::new(nginx.addr(), pki.ca_cert())
        .identity(pki.client())
        .count(ROLLS as u32)
        .rolls();

    let [rolls_a, rolls_b] = await_rolls([&a, &b], ROLLS).map(|lines| lines.len());
    let context = || format!("{}\n{}\n{}", a.dump(), b.dump(), nginx.dump());
    assert_eq!(rolls_a + rolls_b, ROLLS, "{}", context());
    assert!(
        rolls_a >= ROLLS / 4 && rolls_b >= ROLLS / 4,
        "round robin should spread {ROLLS} rolls over both agents, got {rolls_a} and {rolls_b}\n{}",
        context()
    );
    // upstream keepalive: the RPCs reuse a connection per agent and nginx
    // worker, rather than opening one each.
    for (name, agent, served) in [("a", &a, rolls_a), ("b", &b, rolls_b)] {
        let connections = h2c_connections(&agent.logs());
        assert!(
            (1..=2).contains(&connections) && connections < served,
            "agent {name} served {served} RPCs on {connections} connections: \
             nginx should keep upstream connections alive\n{}",
            context()
        );
    }
}

#[test]
fn rolls_keep_working_through_nginx_when_one_agent_stops() {
    let (_dir, pki) = fresh_pki();
    let (mut a, b) = two_agents(&pki);
    let nginx = Nginx::spawn(&pki, [a.h2c_addr(), b.h2c_addr()]);
    let roll = |count| {
        PyRoll::new(nginx.addr(), pki.ca_cert())
            .identity(pki.client())
            .count(count)
            .rolls()
    };

    // Both agents serve, and nginx holds a kept-alive connection to each.
    roll(4);
    let [rolls_a, rolls_b] = await_rolls([&a, &b], 4);
    assert!(!rolls_a.is_empty() && !rolls_b.is_empty());

    a.signal(Signal::TERM);
    a.assert_clean_exit(EXIT_TIMEOUT, "after SIGTERM (agent a)");

    let served_by_b = rolls_b.len();
    roll(10);
    roll(10);
    let [rolls_b] = await_rolls([&b], served_by_b + 20);
    assert_eq!(
        rolls_b.len(),
        served_by_b + 20,
        "the remaining agent serves every roll\n{}\n{}",
        b.dump(),
        nginx.dump()
    );

    // With no agent left, nginx answers with a gRPC status, not a bare 502.
    drop(b);
    PyRoll::new(nginx.addr(), pki.ca_cert())
        .identity(pki.client())
        .fails_with("UNAVAILABLE")
        .assert_stderr_contains("no dice agent reachable");
}

#[tokio::test]
async fn only_a_trusted_listener_logs_the_identity_nginx_passes() {
    let (_dir, pki) = fresh_pki();
    let config = AgentConfig::new("proxied")
        .tls(pki.server_tls())
        .listener(ListenerConfig::mtls("mtls"))
        .listener(ListenerConfig::h2c("trusted").trusted_proxy())
        .listener(ListenerConfig::h2c("plain"));
    let agent = Agent::spawn(&config);
    // One nginx in front of both h2c listeners: round robin sends it to each.
    let nginx = Nginx::spawn(&pki, [agent.addr("trusted"), agent.addr("plain")]);

    // The client also tries to forge the header; nginx replaces it.
    PyRoll::new(nginx.addr(), pki.ca_cert())
        .identity(pki.client())
        .metadata(SUBJECT_HEADER, FORGED_SUBJECT)
        .count(6)
        .rolls();

    let [lines] = await_rolls([&agent], 6);
    let on = |listener: &str| -> Vec<RpcLine> {
        (lines.iter())
            .filter(|line| line.listener().as_deref() == Some(listener))
            .cloned()
            .collect()
    };
    let (trusted, plain) = (on("trusted"), on("plain"));
    assert!(
        !trusted.is_empty() && !plain.is_empty() && trusted.len() + plain.len() == 6,
        "nginx should send rolls to both listeners\n{}\n{}",
        agent.dump(),
        nginx.dump()
    );
    for line in &trusted {
        let subject = line.field("client.subject").unwrap_or_default();
        assert!(
            subject.contains(&format!("CN={CLIENT_CN}")),
            "a trusted listener logs the subject nginx verified: {line:?}"
        );
        assert_eq!(line.field("client.via_proxy").as_deref(), Some("true"));
        assert!(!line.line.contains("forged"), "{line:?}");
    }
    for line in &plain {
        assert_eq!(line.field("client.subject"), None, "{line:?}");
        assert_eq!(line.field("client.via_proxy"), None, "{line:?}");
    }

    // Straight to the untrusted h2c listener, a forged header is ignored too.
    let client = Client::h2c(agent.addr("plain"))
        .await
        .expect("connect over h2c");
    let mut request = tonic::Request::new(RollDieRequest {});
    request.metadata_mut().insert(
        SUBJECT_HEADER,
        FORGED_SUBJECT.parse().expect("an ASCII header value"),
    );
    DiceServiceClient::new(client.channel())
        .roll_die(request)
        .await
        .expect("roll over h2c");
    let [direct] = await_rolls([&agent], 7);
    assert_eq!(direct.len(), 7);
    assert!(
        direct.iter().all(|line| !line.line.contains("forged")),
        "{}",
        agent.dump()
    );
}
