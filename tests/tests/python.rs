//! The Python client (`clients/python`, grpcio with stubs generated from
//! `proto/api.proto`) against a real agent over mTLS: rolls, and failures
//! that surface as Python exceptions carrying the gRPC status.
//!
//! Needs the test venv (`./scripts/setup-test-env.sh`); missing, it fails.

use std::process::Command;

use dice_tests::pki::CLIENT_CN;
use dice_tests::process::{RUN_TIMEOUT, run_with_timeout};
use dice_tests::python::PyRoll;
use dice_tests::rpc_log::{assert_no_rolls_before, await_rolls};
use dice_tests::service::free_port;
use dice_tests::{Agent, AgentConfig, Ctl, LeafSpec, fresh_pki, tempdir, tools};

#[test]
fn python_client_rolls_over_mtls() {
    let (_dir, pki) = fresh_pki();
    let agent = Agent::spawn(&AgentConfig::standard(&pki));

    let values = PyRoll::new(agent.mtls_addr(), pki.ca_cert())
        .identity(pki.client())
        .count(10)
        .rolls();
    assert_eq!(values.len(), 10);

    // The agent saw grpcio, and the client certificate's subject.
    let [lines] = await_rolls([&agent], 10);
    assert_eq!(lines.len(), 10, "{}", agent.dump());
    for line in &lines {
        assert!(line.line.contains("user_agent=grpc-python/"), "{line:?}");
        let subject = line.field("client.subject").unwrap_or_default();
        assert!(subject.contains(&format!("CN={CLIENT_CN}")), "{line:?}");
    }
}

#[test]
fn python_client_errors_carry_the_grpc_status() {
    let (dir, pki) = fresh_pki();
    let stranger = pki.unrelated("other");
    let agent = Agent::spawn(&AgentConfig::standard(&pki));
    let addr = agent.mtls_addr();

    // Nothing listens on a port that was just free.
    let down = PyRoll::new(format!("127.0.0.1:{}", free_port()), pki.ca_cert())
        .identity(pki.client())
        .fails_with("UNAVAILABLE");
    down.assert_stderr_contains("kind: unavailable");

    // The agent refuses a certificate from another CA, and one that is missing.
    PyRoll::new(addr, pki.ca_cert())
        .identity(stranger.client())
        .fails_with("UNAVAILABLE")
        .assert_stderr_contains("kind: tls");
    PyRoll::new(addr, pki.ca_cert())
        .fails_with("UNAVAILABLE")
        .assert_stderr_contains("kind: tls");

    // The client refuses a node whose certificate its CA did not sign.
    PyRoll::new(addr, stranger.ca_cert())
        .identity(pki.client())
        .fails_with("UNAVAILABLE")
        .assert_stderr_contains("kind: tls");

    let marker = pki.issue(&LeafSpec::client("log-marker"));
    assert_no_rolls_before(&agent, &marker.summary.subject, || {
        Ctl::roll(agent.mtls_addr(), pki.ca_cert(), &marker.cert, &marker.key).assert_rolled();
    });

    // An unreadable certificate file is a usage error, named, before any RPC.
    let missing = dir.path().join("missing-ca.pem");
    let output = PyRoll::new(addr, &missing).identity(pki.client()).run();
    output.assert_code(2);
    output.assert_stderr_contains("missing-ca.pem");
}

#[test]
fn generated_stubs_keep_the_wire_contract() {
    // Imported from outside the source tree, as an installed package.
    let scratch = tempdir();
    let mut command = Command::new(tools::python());
    command.current_dir(scratch.path()).args([
        "-c",
        "import grpc, dice_client\n\
         from dice_client._proto import api_pb2, api_pb2_grpc\n\
         service = api_pb2.DESCRIPTOR.services_by_name['DiceService']\n\
         method = service.methods_by_name['RollDie']\n\
         print(f'/{service.full_name}/{method.name}')\n\
         print(method.input_type.full_name, method.output_type.full_name)\n\
         print(api_pb2.RollDieResponse.DESCRIPTOR.fields_by_name['value'].number)\n\
         print(issubclass(dice_client.DiceError, Exception), dice_client.DiceError.__mro__[1].__name__)\n",
    ]);
    let output = run_with_timeout(command, RUN_TIMEOUT);
    output.assert_success();
    let lines: Vec<&str> = output.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "/api.DiceService/RollDie",
            "api.RollDieRequest api.RollDieResponse",
            "1",
            "True Exception",
        ],
        "{output}"
    );
}

#[test]
fn a_forged_identity_header_is_ignored_on_mtls() {
    let (_dir, pki) = fresh_pki();
    let agent = Agent::spawn(&AgentConfig::standard(&pki));

    PyRoll::new(agent.mtls_addr(), pki.ca_cert())
        .identity(pki.client())
        .metadata("x-client-subject", "CN=forged-admin")
        .rolls();
    let [lines] = await_rolls([&agent], 1);
    assert_eq!(lines.len(), 1, "{}", agent.dump());
    let subject = lines[0].field("client.subject").unwrap_or_default();
    assert!(
        subject.contains(&format!("CN={CLIENT_CN}")) && !subject.contains("forged"),
        "{lines:?}"
    );
    assert_eq!(lines[0].field("client.via_proxy"), None, "{lines:?}");
}
