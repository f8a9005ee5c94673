//! JSON logs: one object per line with stable field names, and the
//! `--log-format` flag overriding the config.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use dice_tests::client::handshake;
use dice_tests::pki::{CLIENT_CN, SERVER_CN};
use dice_tests::rotation::{LiveTls, Replace, await_ok, await_serial};
use dice_tests::{Agent, AgentConfig, Client, LeafSpec, Signal, fresh_pki};
use regex::Regex;
use serde_json::{Map, Value};

use super::{EXIT_TIMEOUT, ROLL_DIE, SETTLE_TIMEOUT, VERSION};

/// Parses every stderr line as one JSON object; panics naming the first that is not.
fn json_lines(agent: &Agent) -> Vec<Map<String, Value>> {
    let logs = agent.logs();
    assert!(!logs.contains('\x1b'), "ANSI escapes in JSON logs\n{logs}");
    logs.lines()
        .enumerate()
        .map(|(index, line)| match serde_json::from_str(line) {
            Ok(Value::Object(object)) => object,
            other => panic!(
                "stderr line {} is not a JSON object ({other:?}): {line:?}\n{}",
                index + 1,
                agent.dump()
            ),
        })
        .collect()
}

/// The lines whose `message` is `message`.
fn with_message<'a>(
    lines: &'a [Map<String, Value>],
    message: &'a str,
) -> impl Iterator<Item = &'a Map<String, Value>> + 'a {
    lines
        .iter()
        .filter(move |line| line.get("message").and_then(Value::as_str) == Some(message))
}

/// The only line whose `message` is `message`.
fn only<'a>(lines: &'a [Map<String, Value>], message: &'a str) -> &'a Map<String, Value> {
    match with_message(lines, message).collect::<Vec<_>>()[..] {
        [line] => line,
        ref found => panic!(
            "expected one {message:?} line, found {}: {found:?}",
            found.len()
        ),
    }
}

/// A path as the agent logs it.
fn path_text(path: &std::path::Path) -> String {
    path.display().to_string()
}

fn str_field<'a>(line: &'a Map<String, Value>, key: &str) -> &'a str {
    line.get(key)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string field {key:?} in {line:?}"))
}

// Multi-threaded: the client's connection must keep running (and close)
// while the test thread blocks waiting for the agent to exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line_with_stable_field_names() {
    let (dir, pki) = fresh_pki();
    let live = LiveTls::install(&dir.path().join("live"), pki.server(), &[pki.ca_cert()]);
    let config = AgentConfig::standard(&pki)
        .tls(live.tls_files())
        .log_format("json")
        .extra("[metrics]\naddress = \"127.0.0.1:0\"");
    let mut agent = Agent::spawn(&config);
    let addr = agent.mtls_addr();
    let client = Client::mtls(addr, &pki.client_tls())
        .await
        .expect("connect over mTLS");
    client.roll().await.expect("roll");
    let refused = handshake(addr, &pki.client_tls_without_cert()).await;
    assert!(refused.is_err(), "a client without a certificate got in");
    // A certificate reload, seen by a fresh handshake.
    let next = pki.issue(&LeafSpec::server("next"));
    live.rotate(&next, Replace::Rename);
    await_serial(addr, &pki.client_tls(), next.serial()).await;
    // The RPC line is written once the response is sent; the refusal once the alert is.
    await_ok(SETTLE_TIMEOUT, "the rpc and handshake lines", async || {
        let logs = agent.logs();
        if logs.contains("\"message\":\"rpc\"") && logs.contains("TLS handshake failed") {
            Ok(())
        } else {
            Err(format!("{} lines of log", logs.lines().count()))
        }
    })
    .await;
    drop(client);
    agent.signal(Signal::TERM);
    agent.assert_clean_exit(EXIT_TIMEOUT, "after SIGTERM");

    let lines = json_lines(&agent);
    let timestamp = Regex::new(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$").expect("regex");
    for line in &lines {
        assert!(
            timestamp.is_match(str_field(line, "timestamp")),
            "timestamp of {line:?}"
        );
        assert!(
            ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&str_field(line, "level")),
            "level of {line:?}"
        );
        assert!(!str_field(line, "target").is_empty(), "target of {line:?}");
        str_field(line, "message");
    }

    let starting = only(&lines, "dice-agent starting");
    assert_eq!(str_field(starting, "level"), "INFO");
    assert_eq!(str_field(starting, "target"), "dice_agent");
    assert_eq!(str_field(starting, "version"), VERSION);
    assert_eq!(str_field(starting, "node"), "test-node");
    assert_eq!(
        str_field(starting, "config"),
        agent.config_path().display().to_string()
    );

    let listening: BTreeMap<&str, (&str, &str)> = with_message(&lines, "listening")
        .map(|line| {
            (
                str_field(line, "listener"),
                (str_field(line, "mode"), str_field(line, "address")),
            )
        })
        .collect();
    let mtls = agent.addr("mtls").to_string();
    let h2c = agent.addr("h2c").to_string();
    let expected: BTreeMap<&str, (&str, &str)> = [
        ("mtls", ("mtls", mtls.as_str())),
        ("h2c", ("h2c", h2c.as_str())),
    ]
    .into();
    assert_eq!(listening, expected, "one `listening` line per listener");

    let certificate = only(&lines, "serving certificate");
    assert_eq!(str_field(certificate, "serial"), pki.server().serial());
    assert!(str_field(certificate, "subject").contains(SERVER_CN));
    assert!(timestamp.is_match(str_field(certificate, "not_after")));
    assert_eq!(str_field(certificate, "cert"), path_text(&live.cert));
    only(&lines, "ready");

    let metrics = only(&lines, "serving metrics at /metrics");
    let metrics_addr: SocketAddr = str_field(metrics, "address")
        .parse()
        .expect("the metrics address is an address");
    assert_eq!(Some(metrics_addr), agent.metrics_addr(), "{metrics:?}");

    let reloaded = with_message(&lines, "certificate reloaded")
        .last()
        .unwrap_or_else(|| panic!("no `certificate reloaded` line\n{}", agent.dump()));
    assert_eq!(str_field(reloaded, "cert"), path_text(&live.cert));
    assert_eq!(str_field(reloaded, "key"), path_text(&live.key));
    assert_eq!(str_field(reloaded, "client_ca"), path_text(&live.client_ca));
    assert_eq!(str_field(reloaded, "new_serial"), next.serial());
    assert_eq!(str_field(reloaded, "old_serial"), pki.server().serial());
    assert!(
        timestamp.is_match(str_field(reloaded, "not_after")),
        "{reloaded:?}"
    );

    // The per-RPC line: event fields flattened into the object; dotted field
    // names (`client.subject`) stay single keys, not nested objects.
    let rpc = with_message(&lines, "rpc")
        .find(|line| line.get("method").and_then(Value::as_str) == Some(ROLL_DIE))
        .unwrap_or_else(|| panic!("no rpc line for {ROLL_DIE}\n{}", agent.dump()));
    assert_eq!(str_field(rpc, "target"), "dice_agent::rpc");
    assert_eq!(str_field(rpc, "level"), "INFO");
    assert_eq!(rpc.get("code"), Some(&Value::from(0)), "{rpc:?}");
    assert_eq!(str_field(rpc, "status"), "Ok");
    assert!(rpc.get("duration_us").is_some_and(Value::is_u64), "{rpc:?}");
    let peer: SocketAddr = str_field(rpc, "peer").parse().expect("peer is an address");
    assert!(peer.ip().is_loopback());
    // The client dialled `http://ADDR` (its TLS connector speaks TLS).
    assert_eq!(str_field(rpc, "authority"), addr.to_string(), "{rpc:?}");
    assert!(
        str_field(rpc, "user_agent").starts_with("tonic/"),
        "{rpc:?}"
    );
    assert_eq!(str_field(rpc, "listener"), "mtls");
    assert_eq!(
        str_field(rpc, "client.subject"),
        pki.client().summary.subject
    );
    assert!(str_field(rpc, "client.subject").contains(CLIENT_CN));
    assert_eq!(
        str_field(rpc, "client.sans"),
        pki.client().summary.sans.join(",")
    );
    assert!(rpc.get("client").is_none(), "dotted names are not nested");
    assert!(
        rpc.get("client.via_proxy").is_none(),
        "unset fields are left out"
    );

    // A refused handshake, inside the connection's span: `span` is the
    // innermost span's fields plus its `name`, `spans` the whole stack.
    let failed = with_message(&lines, "TLS handshake failed")
        .next()
        .unwrap_or_else(|| panic!("no `TLS handshake failed` line\n{}", agent.dump()));
    assert!(!str_field(failed, "error").is_empty());
    let span = failed
        .get("span")
        .and_then(Value::as_object)
        .unwrap_or_else(|| panic!("no span object in {failed:?}"));
    assert_eq!(str_field(span, "name"), "conn");
    assert_eq!(str_field(span, "listener"), "mtls");
    str_field(span, "peer")
        .parse::<SocketAddr>()
        .expect("span peer is an address");
    assert!(
        failed.get("spans").is_some_and(Value::is_array),
        "{failed:?}"
    );

    let stopping = only(
        &lines,
        "stopping: refusing new connections, draining in-flight RPCs",
    );
    assert_eq!(str_field(stopping, "signal"), "SIGTERM");
    assert!(stopping.contains_key("grace_period"));
    only(&lines, "stopped");
}

#[test]
fn the_log_format_flag_overrides_the_config() {
    let (_dir, pki) = fresh_pki();
    let config = AgentConfig::standard(&pki)
        .log_format("text")
        .arg("--log-format")
        .arg("json");
    let mut agent = Agent::spawn(&config);
    agent.signal(Signal::TERM);
    agent.assert_clean_exit(EXIT_TIMEOUT, "after SIGTERM");
    let lines = json_lines(&agent);
    only(&lines, "ready");
    only(&lines, "stopped");
}
