//! The mTLS listener: rolls, refusals, health, reflection, agent info, and
//! resistance to idle connections.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dice_proto::DICE_SERVICE_NAME;
use dice_tests::client::{ServingStatus, handshake, roll_once, status_chain};
use dice_tests::heavy::{many_connections, silent_connections};
use dice_tests::{Agent, AgentConfig, Client, HandshakeStage, Pki, TlsClient, fresh_pki, within};
use rustls::AlertDescription;

/// A deadline for one roll: far below the agent's 10 s handshake timeout.
const ROLL_DEADLINE: Duration = Duration::from_secs(2);

/// Spawns an agent with `config` and connects an mTLS client of `pki` to it.
async fn agent_and_client(pki: &Pki, config: &AgentConfig) -> (Agent, Client) {
    let agent = Agent::spawn(config);
    let client = Client::mtls(agent.addr("mtls"), &pki.client_tls())
        .await
        .expect("connect over mTLS");
    (agent, client)
}

/// Asserts that `bad` (described by `what`) is refused at the TLS handshake
/// with the `alert` that says why, and cannot roll, and that a good client of
/// `pki` still rolls afterwards.
async fn assert_refused(
    addr: SocketAddr,
    pki: &Pki,
    bad: &TlsClient,
    what: &str,
    alert: AlertDescription,
) {
    let refused = handshake(addr, bad)
        .await
        .expect_err(&format!("{what} must be refused"));
    assert_ne!(refused.stage, HandshakeStage::Connect, "{refused}");
    eprintln!("refused: {refused}");
    assert_eq!(
        refused.alert,
        Some(alert),
        "{what} should be refused with the {alert:?} alert: {refused}"
    );

    let result = roll_once(addr, bad).await;
    assert!(result.is_err(), "a roll as {what} succeeded: {result:?}");

    // The agent is still fine for a good client.
    roll_once(addr, &pki.client_tls())
        .await
        .expect("good client rolls");
}

#[tokio::test]
async fn roll_over_mtls_succeeds() {
    let (_dir, pki) = fresh_pki();
    let (_agent, client) = agent_and_client(&pki, &AgentConfig::standard(&pki)).await;
    for _ in 0..20 {
        let value = client.roll().await.expect("roll over mTLS");
        assert!((1..=6).contains(&value), "rolled {value}");
    }
}

#[tokio::test]
async fn server_presents_the_configured_certificate_over_h2() {
    let (_dir, pki) = fresh_pki();
    let agent = Agent::spawn(&AgentConfig::standard(&pki));

    let shook = handshake(agent.addr("mtls"), &pki.client_tls())
        .await
        .expect("handshake with a good client certificate");
    assert_eq!(shook.server_cert.serial, pki.server().serial());
    assert_eq!(
        shook.alpn.as_deref(),
        Some("h2"),
        "the agent should negotiate ALPN h2"
    );
}

#[tokio::test]
async fn client_without_certificate_is_refused() {
    let (_dir, pki) = fresh_pki();
    let agent = Agent::spawn(&AgentConfig::standard(&pki));
    let addr = agent.addr("mtls");

    assert_refused(
        addr,
        &pki,
        &pki.client_tls_without_cert(),
        "a client without a certificate",
        AlertDescription::CertificateRequired,
    )
    .await;
}

#[tokio::test]
async fn client_certificate_from_another_ca_is_refused() {
    let (_dir, pki) = fresh_pki();
    let other = pki.unrelated("other");
    let agent = Agent::spawn(&AgentConfig::standard(&pki));
    let addr = agent.addr("mtls");

    // Trusts the right server CA, but presents a certificate from another CA.
    let stranger = pki.client_tls_as(other.client());
    assert_refused(
        addr,
        &pki,
        &stranger,
        "a client certificate from another CA",
        AlertDescription::UnknownCA,
    )
    .await;
}

#[tokio::test]
async fn plaintext_client_on_the_mtls_port_fails() {
    let (_dir, pki) = fresh_pki();
    let agent = Agent::spawn(&AgentConfig::standard(&pki));

    let result = within(
        Duration::from_secs(15),
        "a plaintext roll on the mTLS port",
        async {
            let client = Client::h2c(agent.addr("mtls")).await?;
            client.roll().await.map_err(|status| status_chain(&status))
        },
    )
    .await;
    assert!(
        result.is_err(),
        "plaintext HTTP/2 was served on the mTLS port: {result:?}"
    );
}

#[tokio::test]
async fn health_is_serving_for_the_server_and_the_dice_service() {
    let (_dir, pki) = fresh_pki();
    let (_agent, client) = agent_and_client(&pki, &AgentConfig::standard(&pki)).await;
    for service in ["", DICE_SERVICE_NAME] {
        let status = client.health(service).await.expect("health check");
        assert_eq!(status, ServingStatus::Serving, "health for {service:?}");
    }
    let unknown = client.health("no.such.Service").await;
    assert!(
        unknown
            .as_ref()
            .is_err_and(|status| status.code() == tonic::Code::NotFound),
        "health for an unknown service should be NOT_FOUND, got {unknown:?}"
    );
}

#[tokio::test]
async fn reflection_lists_the_dice_service() {
    let (_dir, pki) = fresh_pki();
    let (_agent, client) = agent_and_client(&pki, &AgentConfig::standard(&pki)).await;
    let v1 = client.list_services().await.expect("reflection v1");
    assert!(
        v1.iter().any(|name| name == DICE_SERVICE_NAME),
        "reflection v1 lists {v1:?}"
    );
    let v1alpha = client
        .list_services_v1alpha()
        .await
        .expect("reflection v1alpha");
    assert!(
        v1alpha.iter().any(|name| name == DICE_SERVICE_NAME),
        "reflection v1alpha lists {v1alpha:?}"
    );
}

#[tokio::test]
async fn agent_info_names_the_node_and_its_certificate() {
    let (_dir, pki) = fresh_pki();
    let (_agent, client) =
        agent_and_client(&pki, &AgentConfig::standard(&pki).node("info-node-7")).await;
    let info = client.info().await.expect("GetInfo");
    assert_eq!(info.node, "info-node-7");
    assert!(
        !info.version.is_empty(),
        "GetInfo reports no version: {info:?}"
    );
    assert!(
        info.certificates
            .values()
            .any(|cert| cert.serial == pki.server().serial()),
        "GetInfo does not report the served certificate {}: {info:?}",
        pki.server().serial()
    );
}

#[tokio::test]
async fn idle_connections_do_not_delay_a_good_client() {
    // A crowd of connections and a 2 s deadline: one such test at a time.
    let _heavy = many_connections().await;
    let (_dir, pki) = fresh_pki();
    let agent = Agent::spawn(&AgentConfig::standard(&pki));
    let addr = agent.addr("mtls");

    // 100 connections that never send a byte: each one holds a handshake open
    // until the agent's 10 s handshake timeout.
    let idle = silent_connections(addr, 100).await;

    let start = Instant::now();
    let value = within(ROLL_DEADLINE, "a roll beside 100 idle connections", async {
        roll_once(addr, &pki.client_tls()).await
    })
    .await
    .expect("roll beside idle connections");
    assert!((1..=6).contains(&value));
    assert!(start.elapsed() < ROLL_DEADLINE);

    // The idle connections are still open from our side; the agent just
    // didn't let them block anyone.
    drop(idle);
}
