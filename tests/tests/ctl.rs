//! `dicectl` against a real agent: `certs init` output works end to end, and
//! `roll` names the failing stage (`connect`, `tls`) with exit 1.

use std::net::SocketAddr;

use dice_tests::fleet::closed_port;
use dice_tests::{
    Agent, AgentConfig, Ctl, ListenerConfig, RunOutput, TlsFiles, fresh_pki, tempdir,
};

/// Asserts `dicectl roll` failed with exit 1 and exactly one stderr line
/// `dicectl: node ADDR: STAGE: ...`.
fn assert_failed_at(output: &RunOutput, node: SocketAddr, stage: &str) {
    output.assert_code(1);
    let lines: Vec<&str> = output
        .stderr
        .lines()
        .filter(|line| !line.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 1, "expected one line on stderr\n{output}");
    let prefix = format!("dicectl: node {node}: {stage}: ");
    assert!(
        lines[0].starts_with(&prefix),
        "expected stderr to start with {prefix:?}\n{output}"
    );
}

#[test]
fn certs_init_output_works_end_to_end() {
    let dir = tempdir();
    let certs = dir.path().join("certs");
    let certs_str = certs.to_str().expect("UTF-8 temp path");
    Ctl::run([
        "certs",
        "init",
        "--out",
        certs_str,
        "--server-san",
        "localhost",
        "--server-san",
        "127.0.0.1",
    ])
    .assert_success();
    for file in [
        "ca.pem",
        "ca-key.pem",
        "server.pem",
        "server-key.pem",
        "client.pem",
        "client-key.pem",
    ] {
        assert!(
            certs.join(file).is_file(),
            "dicectl certs init did not write {file}"
        );
    }

    let tls = TlsFiles {
        cert: certs.join("server.pem"),
        key: certs.join("server-key.pem"),
        client_ca: certs.join("ca.pem"),
    };
    let agent = Agent::spawn(
        &AgentConfig::new("init-node")
            .tls(tls)
            .listener(ListenerConfig::mtls("mtls")),
    );
    let node = agent.addr("mtls");
    let output = Ctl::roll(
        node,
        &certs.join("ca.pem"),
        &certs.join("client.pem"),
        &certs.join("client-key.pem"),
    );
    output.assert_rolled();

    // Running init again without --force must not overwrite the PKI.
    let before = std::fs::read(certs.join("ca.pem")).expect("read ca.pem");
    let again = Ctl::run(["certs", "init", "--out", certs_str]);
    assert_ne!(
        again.code(),
        Some(0),
        "certs init over an existing PKI without --force should fail\n{again}"
    );
    assert_eq!(
        std::fs::read(certs.join("ca.pem")).expect("read ca.pem"),
        before
    );
}

#[test]
fn roll_with_the_harness_pki_succeeds() {
    let (_dir, pki) = fresh_pki();
    let agent = Agent::spawn(&AgentConfig::standard(&pki));
    let output = Ctl::roll(
        agent.addr("mtls"),
        pki.ca_cert(),
        &pki.client().cert,
        &pki.client().key,
    );
    output.assert_rolled();
}

#[test]
fn roll_with_a_client_certificate_from_another_ca_fails_at_tls() {
    let (_dir, pki) = fresh_pki();
    let other = pki.unrelated("other");
    let agent = Agent::spawn(&AgentConfig::standard(&pki));
    let node = agent.addr("mtls");

    let output = Ctl::roll(
        node,
        pki.ca_cert(),
        &other.client().cert,
        &other.client().key,
    );
    assert_failed_at(&output, node, "tls");
}

#[test]
fn roll_that_does_not_trust_the_server_fails_at_tls() {
    let (_dir, pki) = fresh_pki();
    let other = pki.unrelated("other");
    let agent = Agent::spawn(&AgentConfig::standard(&pki));
    let node = agent.addr("mtls");

    let output = Ctl::roll(node, other.ca_cert(), &pki.client().cert, &pki.client().key);
    assert_failed_at(&output, node, "tls");
}

#[test]
fn roll_against_a_closed_port_fails_at_connect() {
    let (_dir, pki) = fresh_pki();
    // Bind then close: nothing listens there afterwards.
    let node = closed_port();
    let output = Ctl::roll(node, pki.ca_cert(), &pki.client().cert, &pki.client().key);
    assert_failed_at(&output, node, "connect");
}
