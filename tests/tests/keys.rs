//! Every key form operators have: PKCS#1 (RSA), SEC1 (EC) and PKCS#8 (any).
//! Each server key is loaded by the agent and must serve a roll; the served
//! certificate must be the one issued for that key.

use std::fs;

use dice_tests::client::{handshake, roll_once};
use dice_tests::{Agent, AgentConfig, KeyFormat, KeyKind, LeafSpec, ListenerConfig, Pki, tempdir};

async fn serves_with_server_key(kind: KeyKind, format: KeyFormat) {
    let dir = tempdir();
    let pki = Pki::new(dir.path());
    let server = pki.issue(&LeafSpec::server("keyed-server").key(kind).format(format));
    let key_text = fs::read_to_string(&server.key).expect("read the key file");
    assert!(
        key_text.starts_with(format.pem_label()),
        "the harness wrote a {kind:?} key that is not {format:?}:\n{key_text}"
    );

    let config = AgentConfig::new("keys-node")
        .tls(pki.tls_files_for(&server))
        .listener(ListenerConfig::mtls("mtls"));
    let agent = Agent::spawn(&config);
    let addr = agent.addr("mtls");

    let shook = handshake(addr, &pki.client_tls())
        .await
        .unwrap_or_else(|error| panic!("handshake with a {kind:?} {format:?} server key: {error}"));
    assert_eq!(shook.server_cert.serial, server.serial());
    let value = roll_once(addr, &pki.client_tls())
        .await
        .unwrap_or_else(|error| panic!("roll with a {kind:?} {format:?} server key: {error}"));
    assert!((1..=6).contains(&value));
}

#[tokio::test]
async fn rsa_2048_pkcs1_key_serves() {
    serves_with_server_key(KeyKind::Rsa2048, KeyFormat::Pkcs1).await;
}

#[tokio::test]
async fn rsa_2048_pkcs8_key_serves() {
    serves_with_server_key(KeyKind::Rsa2048, KeyFormat::Pkcs8).await;
}

#[tokio::test]
async fn p256_sec1_key_serves() {
    serves_with_server_key(KeyKind::EcdsaP256, KeyFormat::Sec1).await;
}

#[tokio::test]
async fn p256_pkcs8_key_serves() {
    serves_with_server_key(KeyKind::EcdsaP256, KeyFormat::Pkcs8).await;
}

#[tokio::test]
async fn p384_pkcs8_key_serves() {
    serves_with_server_key(KeyKind::EcdsaP384, KeyFormat::Pkcs8).await;
}

#[tokio::test]
async fn ed25519_pkcs8_key_serves() {
    serves_with_server_key(KeyKind::Ed25519, KeyFormat::Pkcs8).await;
}

#[tokio::test]
async fn rsa_client_certificate_is_accepted() {
    let dir = tempdir();
    let pki = Pki::new(dir.path());
    let client = pki.issue(
        &LeafSpec::client("rsa-client")
            .key(KeyKind::Rsa2048)
            .format(KeyFormat::Pkcs1),
    );
    let agent = Agent::spawn(&AgentConfig::standard(&pki));

    let value = roll_once(agent.addr("mtls"), &pki.client_tls_as(&client))
        .await
        .expect("roll with an RSA client certificate");
    assert!((1..=6).contains(&value));
}

#[tokio::test]
async fn per_listener_tls_override_serves_its_own_certificate() {
    let dir = tempdir();
    let pki = Pki::new(dir.path());
    let other = pki.issue(&LeafSpec::server("override-server").key(KeyKind::EcdsaP384));
    let config = AgentConfig::new("override-node")
        .tls(pki.server_tls())
        .listener(ListenerConfig::mtls("default"))
        .listener(ListenerConfig::mtls("override").tls(pki.tls_files_for(&other)));
    let agent = Agent::spawn(&config);

    let default = handshake(agent.addr("default"), &pki.client_tls())
        .await
        .expect("handshake on the default listener");
    assert_eq!(default.server_cert.serial, pki.server().serial());
    let overridden = handshake(agent.addr("override"), &pki.client_tls())
        .await
        .expect("handshake on the override listener");
    assert_eq!(overridden.server_cert.serial, other.serial());
}
