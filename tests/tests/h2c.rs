//! The h2c (plaintext HTTP/2) listener.

use dice_proto::DICE_SERVICE_NAME;
use dice_tests::client::ServingStatus;
use dice_tests::{Agent, AgentConfig, Client, ListenerConfig, Mode, fresh_pki};

#[tokio::test]
async fn h2c_listener_serves_a_plaintext_client() {
    let (_dir, pki) = fresh_pki();
    let agent = Agent::spawn(&AgentConfig::standard(&pki));

    let client = Client::h2c(agent.addr("h2c"))
        .await
        .expect("connect over h2c");
    for _ in 0..10 {
        let value = client.roll().await.expect("roll over h2c");
        assert!((1..=6).contains(&value), "rolled {value}");
    }
    for service in ["", DICE_SERVICE_NAME] {
        let status = client.health(service).await.expect("health over h2c");
        assert_eq!(status, ServingStatus::Serving, "health for {service:?}");
    }
    let services = client.list_services().await.expect("reflection over h2c");
    assert!(
        services.iter().any(|name| name == DICE_SERVICE_NAME),
        "{services:?}"
    );
}

#[tokio::test]
async fn h2c_only_agent_needs_no_tls_and_names_listeners_by_index() {
    // No [tls] at all: an agent with only h2c listeners must not need certificates.
    let config = AgentConfig::new("plain-node")
        .listener(ListenerConfig::unnamed(Mode::H2c))
        .listener(ListenerConfig::unnamed(Mode::H2c));
    let agent = Agent::spawn(&config);

    for index in ["0", "1"] {
        let client = Client::h2c(agent.addr(index))
            .await
            .expect("connect over h2c");
        let value = client.roll().await.expect("roll over h2c");
        assert!((1..=6).contains(&value), "rolled {value}");
    }
}
