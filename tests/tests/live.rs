//! Live reconfiguration and revocation that reaches open connections: a
//! saved config file (or SIGHUP) is re-read and applied without a restart; an
//! invalid one changes nothing and says so; after any reload, an open mTLS
//! connection whose client is now revoked, untrusted or not allowed gets a
//! GOAWAY and its next RPC fails within a second, while other clients on the
//! same node see no error.

use std::time::Instant;

use dice_tests::abuse::{sample, scrape};
use dice_tests::ca::CaSigner;
use dice_tests::certs_cli::{Rolling, Tally};
use dice_tests::client::{roll_once, status_chain};
use dice_tests::live::{
    assert_cut_off_in_time, await_config_reload, await_cut_off, rewrite, rewrite_text,
};
use dice_tests::rotation::{LiveTls, Replace, await_log, await_serial, replace};
use dice_tests::rpc_log::await_rpc_after;
use dice_tests::{
    Agent, AgentConfig, Client, LeafSpec, ListenerConfig, Pki, Signal, TlsClient, fresh_pki,
};

/// `[metrics]` on an ephemeral port.
const METRICS: &str = "[metrics]\naddress = \"127.0.0.1:0\"";

/// The SAN of `pki.client()`, as an allow list names it.
const CLIENT_SAN: &str = "client.client.test";
/// The SAN of the client each test cuts off.
const VICTIM_SAN: &str = "victim.client.test";

fn assert_no_errors(tally: &Tally, who: &str, agent: &Agent) {
    assert!(
        tally.failed.is_empty() && tally.kept_ok > 0,
        "{who} should roll through the reload without an error: {tally:?}\n{}",
        agent.dump()
    );
}

/// Waits for the warning that cut off `san`'s connection for `reason`.
async fn await_cut_off_warning(agent: &Agent, san: &str, reason: &str) -> String {
    await_log(agent, "the warning naming the cut-off client", |line| {
        line.contains("WARN")
            && line.contains("client no longer admitted")
            && line.contains(san)
            && line.contains(reason)
    })
    .await
}

/// Asserts that `dice_connections_closed_total` counted a connection cut off
/// for `reason` (the client may have had more than one open).
async fn assert_closed_counted(agent: &Agent, reason: &str) {
    let metrics = scrape(agent.metrics_addr().expect("metrics address")).await;
    let closed = sample(
        &metrics,
        "dice_connections_closed_total",
        &[("listener", "mtls"), ("reason", reason)],
    );
    assert!(
        closed.is_some_and(|n| n >= 1.0),
        "{reason}: {closed:?}\n{metrics}"
    );
}

/// Starts an agent with `config`, connects as `victim` (which must roll),
/// and starts a client rolling as `bystander`: the cast of every cut-off test.
async fn victim_and_bystander(
    config: &AgentConfig,
    victim: &TlsClient,
    bystander: TlsClient,
) -> (Agent, Client, Rolling) {
    let agent = Agent::spawn(config);
    let addr = agent.addr("mtls");
    let open = Client::mtls(addr, victim)
        .await
        .expect("the victim connects");
    open.roll()
        .await
        .expect("the victim rolls while it is admitted");
    let bystander = Rolling::start(addr, bystander).await;
    (agent, open, bystander)
}

/// A node serving `pki`'s server certificate on one mTLS listener that
/// allows `allow`, with metrics on.
fn allowing(pki: &Pki, allow: &[&str]) -> AgentConfig {
    AgentConfig::new("live-node")
        .tls(pki.server_tls())
        .listener(ListenerConfig::mtls("mtls").allow(allow.iter().copied()))
        .extra(METRICS)
}

// === revocation reaches open connections ===

#[tokio::test]
async fn a_client_revoked_by_a_new_crl_is_cut_off_while_another_rolls_on() {
    let (dir, pki) = fresh_pki();
    let ca = CaSigner::of(&pki);
    let victim = pki.issue(&LeafSpec::client("victim"));
    let crl = dir.path().join("live.crl");
    replace(&crl, ca.crl(&[]).pem.as_bytes(), Replace::Rename);
    let config = AgentConfig::new("live-node")
        .tls(pki.server_tls())
        .crl(&crl)
        .listener(ListenerConfig::mtls("mtls"))
        .extra(METRICS);
    let (agent, open, bystander) =
        victim_and_bystander(&config, &pki.client_tls_as(&victim), pki.client_tls()).await;

    let written = Instant::now();
    replace(&crl, ca.crl(&[&victim]).pem.as_bytes(), Replace::Rename);
    assert_cut_off_in_time(&open, written, "the revoked client's connection", &agent).await;
    await_cut_off_warning(&agent, VICTIM_SAN, "reason=\"revoked\"").await;
    assert_closed_counted(&agent, "revoked").await;
    assert_no_errors(&bystander.finish().await, "the other client", &agent);
}

/// `tls.crl` itself changed by a config reload: a CRL list added to a node
/// that had none revokes an open connection, as a new CRL file does.
#[tokio::test]
async fn a_crl_list_added_by_a_config_reload_cuts_off_the_client_it_revokes() {
    let (dir, pki) = fresh_pki();
    let victim = pki.issue(&LeafSpec::client("victim"));
    let crl = dir.path().join("added.crl");
    CaSigner::of(&pki).crl(&[&victim]).write_pem(&crl);
    let config = AgentConfig::new("live-node")
        .tls(pki.server_tls())
        .listener(ListenerConfig::mtls("mtls"))
        .extra(METRICS);
    let (agent, open, bystander) =
        victim_and_bystander(&config, &pki.client_tls_as(&victim), pki.client_tls()).await;

    let written = Instant::now();
    rewrite(&agent, &config.clone().crl(&crl));
    assert_cut_off_in_time(
        &open,
        written,
        "the client the new CRL list revokes",
        &agent,
    )
    .await;
    await_cut_off_warning(&agent, VICTIM_SAN, "reason=\"revoked\"").await;
    assert_no_errors(&bystander.finish().await, "the other client", &agent);
}

#[tokio::test]
async fn a_client_whose_ca_is_dropped_is_cut_off_while_another_rolls_on() {
    let (dir, pki) = fresh_pki();
    let other = pki.unrelated("other");
    let live = LiveTls::install(
        &dir.path().join("live"),
        pki.server(),
        &[pki.ca_cert(), other.ca_cert()],
    );
    let config = AgentConfig::new("live-node")
        .tls(live.tls_files())
        .listener(ListenerConfig::mtls("mtls"))
        .extra(METRICS);
    let victim = pki.client_tls_as(other.client());
    let (agent, open, bystander) = victim_and_bystander(&config, &victim, pki.client_tls()).await;

    let written = Instant::now();
    live.write_client_ca(&[pki.ca_cert()], Replace::Rename);
    assert_cut_off_in_time(&open, written, "the dropped CA's client", &agent).await;
    await_cut_off_warning(&agent, "client.client.test", "untrusted CA").await;
    assert_closed_counted(&agent, "untrusted_ca").await;
    assert_no_errors(&bystander.finish().await, "the kept CA's client", &agent);
}

#[tokio::test]
async fn a_client_removed_from_allow_is_cut_off_while_another_rolls_on() {
    let (_dir, pki) = fresh_pki();
    let victim = pki.issue(&LeafSpec::client("victim"));
    let config = |allow: &[&str]| allowing(&pki, allow);
    let (agent, open, bystander) = victim_and_bystander(
        &config(&[CLIENT_SAN, VICTIM_SAN]),
        &pki.client_tls_as(&victim),
        pki.client_tls(),
    )
    .await;

    let written = Instant::now();
    rewrite(&agent, &config(&[CLIENT_SAN]));
    assert_cut_off_in_time(&open, written, "the removed client", &agent).await;
    // Its next connection is served no RPC.
    let next = open
        .roll()
        .await
        .expect_err("a removed client is served no RPC");
    assert!(status_chain(&next).contains("allow list"), "{next:?}");
    await_cut_off_warning(&agent, VICTIM_SAN, "not allowed").await;
    await_log(&agent, "the config reload summary", |line| {
        line.contains("config reloaded") && line.contains("listeners[0].allow")
    })
    .await;
    assert_closed_counted(&agent, "not_allowed").await;
    assert_no_errors(&bystander.finish().await, "the allowed client", &agent);
}

#[tokio::test]
async fn with_recheck_off_an_open_connection_keeps_its_client_checks() {
    let (_dir, pki) = fresh_pki();
    let victim = pki.issue(&LeafSpec::client("victim"));
    let config = |allow: &[&str]| allowing(&pki, allow);
    // `recheck_connections` goes into the [tls] table the config opens.
    let toml = |allow: &[&str]| {
        config(allow)
            .to_toml()
            .replacen("[tls]\n", "[tls]\nrecheck_connections = false\n", 1)
    };
    let agent = Agent::spawn_toml(&toml(&[CLIENT_SAN, VICTIM_SAN]), &[]);
    let info = Client::mtls(agent.addr("mtls"), &pki.client_tls())
        .await
        .expect("connect");
    let open = Client::mtls(agent.addr("mtls"), &pki.client_tls_as(&victim))
        .await
        .expect("the victim connects");
    open.roll().await.expect("the victim rolls while allowed");
    rewrite_text(&agent, &toml(&[CLIENT_SAN]));
    await_config_reload(&info, "the config reload", |last| last.ok).await;
    await_log(&agent, "the re-check skipped", |line| {
        line.contains("tls.recheck_connections is off")
    })
    .await;
    open.roll()
        .await
        .expect("with recheck_connections off, the open connection keeps rolling");
}

// === config reload ===

#[tokio::test]
async fn admin_limits_and_node_name_change_live_while_a_connection_rolls() {
    let (_dir, pki) = fresh_pki();
    let config = AgentConfig::standard(&pki).extra(METRICS);
    let agent = Agent::spawn(&config);
    let addr = agent.addr("mtls");
    let info = Client::mtls(addr, &pki.client_tls())
        .await
        .expect("connect");
    let before = info.info().await.expect("info");
    assert!(!before.admin_enabled);
    assert_eq!(before.last_config_reload, None);
    let rolling = Rolling::start(addr, pki.client_tls()).await;

    let changed = config
        .clone()
        .node("renamed-node")
        .admin([CLIENT_SAN])
        .limit("max_connections", "500")
        .log_level("info")
        .log_format("json");
    rewrite(&agent, &changed);
    await_config_reload(&info, "the config reload", |last| last.ok).await;
    let after = info.info().await.expect("info");
    assert_eq!(after.node, "renamed-node");
    assert!(after.admin_enabled, "[admin] should be on now");
    let summary = await_log(&agent, "the config reload summary", |line| {
        line.contains("config reloaded")
    })
    .await;
    for key in ["node.name", "admin", "limits.max_connections", "log.level"] {
        assert!(summary.contains(key), "{key} missing from: {summary}");
    }
    await_log(&agent, "log.format named as needing a restart", |line| {
        line.contains("needs a restart") && line.contains("key=log.format")
    })
    .await;
    // At info, a fresh handshake logs no DEBUG line any more.
    let seen = agent.logs().lines().count();
    roll_once(addr, &pki.client_tls()).await.expect("roll");
    let debug: Vec<String> = await_rpc_after(&agent, seen, "/api.DiceService/RollDie")
        .into_iter()
        .filter(|line| line.contains(" DEBUG "))
        .collect();
    assert!(
        debug.is_empty(),
        "DEBUG lines after log.level = info: {debug:?}"
    );
    assert_no_errors(&rolling.finish().await, "the rolling client", &agent);
    let metrics = scrape(agent.metrics_addr().expect("metrics address")).await;
    assert_eq!(
        sample(&metrics, "dice_config_reloads_total", &[("outcome", "ok")]),
        Some(1.0),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_broken_config_changes_nothing_and_says_so() {
    let (_dir, pki) = fresh_pki();
    let config = AgentConfig::standard(&pki).extra(METRICS);
    let agent = Agent::spawn(&config);
    let addr = agent.addr("mtls");
    let info = Client::mtls(addr, &pki.client_tls())
        .await
        .expect("connect");
    let rolling = Rolling::start(addr, pki.client_tls()).await;

    let broken = format!(
        "{}\n[[listeners]]\naddress = \"127.0.0.1:0\"\nmode = \"carrier-pigeon\"\n",
        config.node("broken-node").to_toml()
    );
    rewrite_text(&agent, &broken);
    let last = await_config_reload(&info, "the rejected config reload", |last| !last.ok).await;
    assert!(last.error.contains("listeners[2].mode"), "{last:?}");
    await_log(&agent, "the error line, as --check prints it", |line| {
        line.contains("ERROR") && line.contains("line ") && line.contains("listeners[2].mode")
    })
    .await;
    await_log(&agent, "the rejection", |line| {
        line.contains("config reload rejected; still running on the previous config")
    })
    .await;
    assert_eq!(info.info().await.expect("info").node, "test-node");
    let metrics = scrape(agent.metrics_addr().expect("metrics address")).await;
    assert_eq!(
        sample(
            &metrics,
            "dice_config_reloads_total",
            &[("outcome", "rejected")]
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_no_errors(&rolling.finish().await, "the rolling client", &agent);
}

#[tokio::test]
async fn sighup_rereads_the_config_file() {
    let (_dir, pki) = fresh_pki();
    let agent = Agent::spawn(&AgentConfig::standard(&pki));
    let info = Client::mtls(agent.addr("mtls"), &pki.client_tls())
        .await
        .expect("connect");
    agent.signal(Signal::HUP);
    await_config_reload(&info, "the config reload on SIGHUP", |last| last.ok).await;
    await_log(&agent, "the unchanged config", |line| {
        line.contains("config reloaded; nothing to change live")
    })
    .await;
}

// === listeners ===

/// The address a `listening` line logged for `listener` on an address that
/// starts with `host`.
async fn await_listening(agent: &Agent, listener: &str, host: &str) -> std::net::SocketAddr {
    let needle = format!("listener={listener} ");
    let address = format!("address={host}");
    let line = await_log(agent, "the new listener's listening line", |line| {
        line.contains("listening") && line.contains(&needle) && line.contains(&address)
    })
    .await;
    let address = line
        .split_whitespace()
        .find_map(|field| field.strip_prefix("address="))
        .unwrap_or_else(|| panic!("no address in: {line}"));
    address
        .parse()
        .unwrap_or_else(|error| panic!("address {address}: {error}"))
}

#[tokio::test]
async fn a_listener_added_serves_and_one_removed_drains() {
    let (_dir, pki) = fresh_pki();
    let config = AgentConfig::standard(&pki);
    let agent = Agent::spawn(&config);
    let h2c = agent.addr("h2c");
    let open = Client::h2c(h2c).await.expect("connect to h2c");
    open.roll().await.expect("roll on h2c");
    let rolling = Rolling::start(agent.addr("mtls"), pki.client_tls()).await;

    let added = config.clone().listener(ListenerConfig::h2c("extra"));
    rewrite(&agent, &added);
    let extra = await_listening(&agent, "extra", "127.0.0.1:").await;
    let client = Client::h2c(extra)
        .await
        .expect("connect to the added listener");
    client.roll().await.expect("the added listener serves");

    // Without `h2c`: it stops accepting, and its open connection drains.
    let mut removed = added.clone();
    removed
        .listeners
        .retain(|l| l.name.as_deref() != Some("h2c"));
    let written = Instant::now();
    rewrite(&agent, &removed);
    assert_cut_off_in_time(&open, written, "the removed listener's connection", &agent).await;
    await_log(&agent, "the removal", |line| {
        line.contains("listener removed") && line.contains("listener=h2c")
    })
    .await;
    let refused = Client::h2c(h2c).await;
    assert!(refused.is_err(), "the removed listener still accepts");
    client
        .roll()
        .await
        .expect("the added listener still serves");
    assert_no_errors(&rolling.finish().await, "the mTLS client", &agent);
}

#[tokio::test]
async fn new_certificate_paths_are_served_without_dropping_a_connection() {
    let (dir, pki) = fresh_pki();
    let config = AgentConfig::standard(&pki);
    let agent = Agent::spawn(&config);
    let addr = agent.addr("mtls");
    let rolling = Rolling::start(addr, pki.client_tls()).await;
    let next = pki.issue(&LeafSpec::server("next"));
    // In a folder the agent did not watch before.
    let live = LiveTls::install(&dir.path().join("next"), &next, &[pki.ca_cert()]);

    rewrite(&agent, &config.clone().tls(live.tls_files()));
    await_serial(addr, &pki.client_tls(), next.serial()).await;
    await_log(&agent, "the config reload summary", |line| {
        line.contains("config reloaded") && line.contains("listeners[0].tls")
    })
    .await;
    // The certificate reloader follows the new files.
    let third = pki.issue(&LeafSpec::server("third"));
    live.rotate(&third, Replace::Rename);
    await_serial(addr, &pki.client_tls(), third.serial()).await;
    assert_no_errors(&rolling.finish().await, "the rolling client", &agent);
}

#[tokio::test]
async fn a_new_metrics_address_is_bound_and_the_old_one_closed() {
    let (_dir, pki) = fresh_pki();
    let config = AgentConfig::standard(&pki);
    let agent = Agent::spawn(&config.clone().extra(METRICS));
    let old = agent.metrics_addr().expect("metrics address");
    let rolling = Rolling::start(agent.addr("mtls"), pki.client_tls()).await;

    rewrite(
        &agent,
        &config.extra("[metrics]\naddress = \"127.0.0.2:0\""),
    );
    let line = await_log(&agent, "metrics on the new address", |line| {
        line.contains("serving metrics at /metrics") && line.contains("address=127.0.0.2:")
    })
    .await;
    let address: std::net::SocketAddr = line
        .split_whitespace()
        .find_map(|field| field.strip_prefix("address="))
        .and_then(|address| address.parse().ok())
        .unwrap_or_else(|| panic!("no address in: {line}"));
    let metrics = scrape(address).await;
    assert!(metrics.contains("dice_config_reloads_total"), "{metrics}");
    assert!(
        dice_tests::poll_until(dice_tests::rotation::RELOAD_TIMEOUT, || {
            std::net::TcpStream::connect(old).is_err()
        }),
        "the old metrics address still accepts"
    );
    assert_no_errors(&rolling.finish().await, "the rolling client", &agent);
}

#[tokio::test]
async fn a_listener_whose_address_changed_is_rebound_and_drains_the_old_one() {
    let (_dir, pki) = fresh_pki();
    let config = AgentConfig::standard(&pki);
    let agent = Agent::spawn(&config);
    let old = agent.addr("h2c");
    let open = Client::h2c(old).await.expect("connect to h2c");
    open.roll().await.expect("roll on h2c");

    let mut moved = config.clone();
    for listener in &mut moved.listeners {
        if listener.name.as_deref() == Some("h2c") {
            *listener = ListenerConfig::h2c("h2c").address("127.0.0.2:0");
        }
    }
    rewrite(&agent, &moved);
    let new = await_listening(&agent, "h2c", "127.0.0.2:").await;
    assert_ne!(new, old);
    let client = Client::h2c(new).await.expect("connect to the new address");
    client.roll().await.expect("the moved listener serves");
    let (_, error) = await_cut_off(&open, Instant::now()).await;
    assert!(
        Client::h2c(old).await.is_err(),
        "the old address still accepts ({error})"
    );
}

/// Rolls on `client` until an RPC is refused for its rate, within 200 rolls;
/// returns the refusal's message, or `None` if every roll succeeded.
async fn first_rate_refusal(client: &Client) -> Option<String> {
    for _ in 0..200 {
        if let Err(status) = client.roll().await {
            assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
            return Some(status.message().to_owned());
        }
    }
    None
}

#[tokio::test]
async fn a_rate_limit_set_and_lifted_by_a_reload_applies_to_an_open_connection() {
    let (_dir, pki) = fresh_pki();
    let config = AgentConfig::standard(&pki);
    let agent = Agent::spawn(&config);
    let addr = agent.addr("mtls");
    let client = Client::mtls(addr, &pki.client_tls())
        .await
        .expect("connect");
    assert_eq!(first_rate_refusal(&client).await, None, "no limit yet");

    let limited = config
        .clone()
        .limit("rpc_rate", "\"2/s\"")
        .limit("rpc_burst", "2");
    rewrite(&agent, &limited);
    await_config_reload(&client, "the limit set", |last| last.ok).await;
    let refusal = first_rate_refusal(&client)
        .await
        .expect("over 2/s, an RPC is refused on the connection already open");
    assert!(refusal.contains("limits.rpc_rate"), "{refusal}");

    rewrite(&agent, &config);
    // The info API is rate limited too: wait for the second reload's log line.
    let lifted = dice_tests::poll_until(dice_tests::rotation::RELOAD_TIMEOUT, || {
        agent.logs().matches("config reloaded").count() >= 2
    });
    assert!(lifted, "no second config reload\n{}", agent.dump());
    assert_eq!(
        first_rate_refusal(&client).await,
        None,
        "the limit is lifted"
    );
}
