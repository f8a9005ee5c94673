//! Per-listener allow lists: a client certificate from the right CA is served
//! only if one of its identities (DNS or URI SAN, or subject CN) matches a
//! pattern; every RPC of any other client fails with PERMISSION_DENIED, and the
//! agent logs that client's identity. `--check` says which listeners serve any
//! verified client and which only their list.

use std::net::SocketAddr;
use std::time::Duration;

use dice_tests::abuse::{sample, scrape};
use dice_tests::ca::{CaSigner, ClientSpec};
use dice_tests::pki::CLIENT_CN;
use dice_tests::process::check_config;
use dice_tests::rpc_log::rpc_lines;
use dice_tests::{
    Agent, AgentConfig, Client, Ctl, Identity, LeafSpec, ListenerConfig, Pki, TlsClient, fresh_pki,
    poll_until,
};
use tonic::Code;

/// How long the agent may take to write a log line the test waits for.
const LOG_DEADLINE: Duration = Duration::from_secs(5);

/// `pki`'s server certificate, one mTLS listener named `mtls` with `allow`, and metrics.
fn allow_config(pki: &Pki, allow: &[&str]) -> AgentConfig {
    AgentConfig::new("authz-node")
        .tls(pki.server_tls())
        .listener(ListenerConfig::mtls("mtls").allow(allow.iter().copied()))
        .extra("[metrics]\naddress = \"127.0.0.1:0\"")
}

async fn roll_as(addr: SocketAddr, tls: &TlsClient) -> Result<i32, tonic::Status> {
    let client = Client::mtls(addr, tls)
        .await
        .unwrap_or_else(|error| panic!("the TLS handshake should succeed: {error}"));
    client.roll().await
}

async fn assert_served(agent: &Agent, pki: &Pki, who: &Identity) {
    let rolled = roll_as(agent.addr("mtls"), &pki.client_tls_as(who)).await;
    assert!(
        rolled.as_ref().is_ok_and(|v| (1..=6).contains(v)),
        "{} should be served: {rolled:?}\n{}",
        who.summary.subject,
        agent.dump()
    );
}

/// Asserts that `who` completes the handshake but every RPC (roll, health,
/// reflection, info) is denied, and that the log names it.
async fn assert_denied(agent: &Agent, pki: &Pki, who: &Identity) {
    // This connection's lines come after these (an earlier call waited for its own).
    let seen = agent.logs().lines().count();
    let client = Client::mtls(agent.addr("mtls"), &pki.client_tls_as(who))
        .await
        .unwrap_or_else(|error| panic!("a denied client still finishes the handshake: {error}"));
    let codes = [
        client.roll().await.err().map(|s| s.code()),
        client.health("").await.err().map(|s| s.code()),
        client.list_services().await.err().map(|s| s.code()),
        client.info().await.err().map(|s| s.code()),
    ];
    assert_eq!(
        codes,
        [Some(Code::PermissionDenied); 4],
        "every RPC of {} should be PERMISSION_DENIED\n{}",
        who.summary.subject,
        agent.dump()
    );
    let subject = &who.summary.subject;
    let logged = poll_until(LOG_DEADLINE, || {
        agent.logs().lines().any(|line| {
            line.contains("client not in the listener's allow list") && line.contains(subject)
        })
    });
    assert!(
        logged,
        "the log should name the denied client {subject}\n{}",
        agent.dump()
    );
    let rpc_logged = poll_until(LOG_DEADLINE, || {
        rpc_lines(&agent.logs()).iter().any(|line| {
            line.field("code").as_deref() == Some("7")
                && line.field("client.subject").as_deref() == Some(subject)
        })
    });
    assert!(
        rpc_logged,
        "the RPC log should show code 7 for {subject}\n{}",
        agent.dump()
    );
    // Four RPCs on one connection, one warning: the warning is per connection.
    // Every RPC line is written by now, and a warning per RPC would sit among them.
    let since = || {
        agent
            .logs()
            .lines()
            .skip(seen)
            .collect::<Vec<_>>()
            .join("\n")
    };
    let rpcs_logged = poll_until(LOG_DEADLINE, || {
        denied_rpcs(&since(), subject) >= codes.len()
    });
    assert!(
        rpcs_logged,
        "four denied RPC lines for {subject}\n{}",
        agent.dump()
    );
    let warnings = since()
        .lines()
        .filter(|line| {
            line.contains("client not in the listener's allow list") && line.contains(subject)
        })
        .count();
    assert_eq!(
        warnings,
        1,
        "one allow-list warning per connection of {subject}, not one per RPC\n{}",
        agent.dump()
    );
}

/// How many RPC lines show `subject` denied (code 7).
fn denied_rpcs(logs: &str, subject: &str) -> usize {
    rpc_lines(logs)
        .iter()
        .filter(|line| {
            line.field("code").as_deref() == Some("7")
                && line.field("client.subject").as_deref() == Some(subject)
        })
        .count()
}

#[tokio::test]
async fn exact_common_name_is_served_and_any_other_client_is_denied() {
    let (_dir, pki) = fresh_pki();
    let intruder = pki.issue(&LeafSpec::client("intruder"));
    // A name that only starts like the allowed one: exact means exact.
    let lookalike = pki.issue(&LeafSpec::client("lookalike").common_name("dice-test-client-2"));
    let agent = Agent::spawn(&allow_config(&pki, &[CLIENT_CN]));

    assert_served(&agent, &pki, pki.client()).await;
    assert_denied(&agent, &pki, &intruder).await;
    assert_denied(&agent, &pki, &lookalike).await;

    let metrics = scrape(agent.metrics_addr().expect("metrics address")).await;
    let handshakes = |outcome| {
        sample(
            &metrics,
            "dice_tls_handshakes_total",
            &[("listener", "mtls"), ("outcome", outcome)],
        )
        .unwrap_or(0.0)
    };
    assert!(handshakes("denied") >= 2.0, "{metrics}");
    assert!(handshakes("ok") >= 1.0, "{metrics}");
}

#[tokio::test]
async fn dns_san_glob_matches_names_below_the_domain_only() {
    let (_dir, pki) = fresh_pki();
    let ca = CaSigner::of(&pki);
    // Common names that match nothing, so only the DNS SAN can let a client in.
    let web = ca.issue(&ClientSpec::new("web").dns("web-1.fleet.test"));
    let deep = ca.issue(&ClientSpec::new("deep").dns("a.b.fleet.test"));
    let other = ca.issue(&ClientSpec::new("other").dns("web-1.other.test"));
    let apex = ca.issue(&ClientSpec::new("apex").dns("fleet.test"));
    let suffix = ca.issue(&ClientSpec::new("suffix").dns("web-1.fleet.test.evil"));
    let agent = Agent::spawn(&allow_config(&pki, &["*.fleet.test"]));

    assert_served(&agent, &pki, &web).await;
    assert_served(&agent, &pki, &deep).await;
    for denied in [&other, &apex, &suffix, pki.client()] {
        assert_denied(&agent, &pki, denied).await;
    }
}

#[tokio::test]
async fn spiffe_uri_san_is_an_identity() {
    let (_dir, pki) = fresh_pki();
    let ca = CaSigner::of(&pki);
    let prod = ca.issue(
        &ClientSpec::new("prod-roller")
            .common_name("roller")
            .uri("spiffe://dice.test/ns/prod/sa/roller"),
    );
    let dev = ca.issue(
        &ClientSpec::new("dev-roller")
            .common_name("roller")
            .uri("spiffe://dice.test/ns/dev/sa/roller"),
    );
    let other_domain = ca.issue(
        &ClientSpec::new("evil-roller")
            .common_name("roller")
            .uri("spiffe://evil.test/ns/prod/sa/roller"),
    );
    let agent = Agent::spawn(&allow_config(&pki, &["spiffe://dice.test/ns/prod/sa/*"]));

    assert_served(&agent, &pki, &prod).await;
    assert_denied(&agent, &pki, &dev).await;
    assert_denied(&agent, &pki, &other_domain).await;
    // The denied client's URI SAN is in its log line.
    let logs = agent.logs();
    assert!(
        logs.lines().any(|line| line.contains("allow list")
            && line.contains("URI:spiffe://dice.test/ns/dev/sa/roller")),
        "the denial should log the client's SANs\n{logs}"
    );
}

#[tokio::test]
async fn allow_lists_are_per_listener() {
    let (_dir, pki) = fresh_pki();
    let intruder = pki.issue(&LeafSpec::client("intruder"));
    let config = AgentConfig::new("authz-node")
        .tls(pki.server_tls())
        .listener(ListenerConfig::mtls("open"))
        .listener(ListenerConfig::mtls("strict").allow([CLIENT_CN]));
    let agent = Agent::spawn(&config);

    let tls = pki.client_tls_as(&intruder);
    let open = roll_as(agent.addr("open"), &tls).await;
    assert!(
        open.is_ok(),
        "an empty allow list serves any verified client: {open:?}"
    );
    let strict = roll_as(agent.addr("strict"), &tls).await;
    assert_eq!(
        strict.map_err(|s| s.code()),
        Err(Code::PermissionDenied),
        "the strict listener must deny the intruder"
    );
    let strict = roll_as(agent.addr("strict"), &pki.client_tls()).await;
    assert!(strict.is_ok(), "{strict:?}");
}

#[test]
fn dicectl_roll_as_a_denied_client_names_the_refusal() {
    let (_dir, pki) = fresh_pki();
    let intruder = pki.issue(&LeafSpec::client("intruder"));
    let agent = Agent::spawn(&allow_config(&pki, &[CLIENT_CN]));
    let node = agent.addr("mtls").to_string();

    let roll = |who: &Identity| Ctl::roll(&node, pki.ca_cert(), &who.cert, &who.key);
    roll(pki.client()).assert_success();
    let denied = roll(&intruder);
    denied.assert_code(1);
    assert!(
        denied.stderr.contains("PERMISSION_DENIED") || denied.stderr.contains("PermissionDenied"),
        "dicectl should name the refusal\n{denied}"
    );
    assert!(
        denied.stderr.contains("allow list"),
        "dicectl should pass on the agent's reason\n{denied}"
    );
}

/// The `--check` lines of listener `name`, up to the next listener.
fn listener_block<'a>(check: &'a str, name: &str) -> Vec<&'a str> {
    let header = format!("listener {name} ");
    check
        .lines()
        .skip_while(|line| !line.starts_with(&header))
        .enumerate()
        .take_while(|(i, line)| *i == 0 || !line.starts_with("listener "))
        .map(|(_, line)| line)
        .collect()
}

#[test]
fn check_says_who_each_listener_serves() {
    let (dir, pki) = fresh_pki();
    let config = AgentConfig::new("authz-node")
        .tls(pki.server_tls())
        .listener(ListenerConfig::mtls("open"))
        .listener(ListenerConfig::mtls("strict").allow([CLIENT_CN, "spiffe://dice.test/*"]))
        .listener(ListenerConfig::h2c("local"));
    let path = dir.path().join("node.toml");
    config.write(&path);

    let output = check_config(&path);
    output.assert_success();
    let open = listener_block(&output.stdout, "open");
    assert!(
        open.iter().any(|line| line.contains("any verified client")),
        "an empty allow list should be stated: {open:#?}\n{output}"
    );
    let strict = listener_block(&output.stdout, "strict");
    assert!(
        strict
            .iter()
            .any(|line| line.trim() == "allow dice-test-client, spiffe://dice.test/*"),
        "the allow list should be listed: {strict:#?}\n{output}"
    );
    assert!(
        !strict
            .iter()
            .any(|line| line.contains("any verified client")),
        "{strict:#?}"
    );
}

#[test]
fn allow_on_an_h2c_listener_or_an_empty_pattern_is_a_config_error() {
    let (dir, pki) = fresh_pki();
    let cases = [
        (
            ListenerConfig::h2c("local").allow(["dicectl"]),
            "listeners[0].allow: applies to mtls listeners only",
        ),
        (
            ListenerConfig::mtls("strict").allow(["dicectl", " "]),
            "listeners[0].allow: empty pattern",
        ),
    ];
    for (listener, expected) in cases {
        let config = AgentConfig::new("authz-node")
            .tls(pki.server_tls())
            .listener(listener);
        let path = dir.path().join("node.toml");
        config.write(&path);
        let output = check_config(&path);
        output.assert_code(2).assert_stderr_contains(expected);
        assert!(
            output.stderr.contains("node.toml line "),
            "the error should name the file and line\n{output}"
        );
    }
}
