//! `mode = "health"`: a plaintext listener serving `grpc.health.v1.Health`
//! alone, for load balancers and Kubernetes probes that cannot present a
//! client certificate. It answers SERVING, refuses every other service, keeps
//! answering NOT_SERVING through the drain, reports NOT_SERVING while the
//! served certificate has lapsed, and needs no `allow_public`.

use std::time::Duration;

use dice_proto::DICE_SERVICE_NAME;
use dice_proto::info::RollbackRequest;
use dice_proto::info::admin_service_client::AdminServiceClient;
use dice_tests::client::{ServingStatus, roll_once, status_chain};
use dice_tests::live::rewrite;
use dice_tests::metrics::scrape;
use dice_tests::pki::LeafSpec;
use dice_tests::process::check_config;
use dice_tests::rotation::{LiveTls, Replace, await_log, await_ok, await_serial};
use dice_tests::{Agent, AgentConfig, Client, ListenerConfig, Signal, fresh_pki, tempdir, within};
use tonic::{Code, Status, Streaming};
use tonic_health::pb::HealthCheckResponse;

/// A deadline for one RPC or one expected change.
const DEADLINE: Duration = Duration::from_secs(10);

/// The refusal every non-health RPC on a health listener gets.
const REFUSED: &str = "this is a health-only listener";

/// An agent with an mTLS listener `mtls` and a health listener `health`.
fn config(pki: &dice_tests::Pki) -> AgentConfig {
    AgentConfig::new("health-node")
        .tls(pki.server_tls())
        .listener(ListenerConfig::mtls("mtls"))
        .listener(ListenerConfig::health("health"))
}

/// Checks `service` on `client` until it reports `want`, within [`DEADLINE`].
async fn await_status(client: &Client, service: &str, want: ServingStatus) {
    await_ok(
        DEADLINE,
        format_args!("health {service:?} reporting {want:?}"),
        async || match client.health(service).await {
            Ok(status) if status == want => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
}

/// Asserts that `result` failed as a health listener refuses: UNIMPLEMENTED,
/// saying why.
fn assert_refused<T: std::fmt::Debug>(what: &str, result: Result<T, Status>) {
    let status = result.expect_err(what);
    assert_eq!(status.code(), Code::Unimplemented, "{what}: {status:?}");
    assert!(
        status.message().contains(REFUSED),
        "{what}: {}",
        status_chain(&status)
    );
}

/// The address the `listening` line logged for `listener` in `mode`.
async fn await_listening(agent: &Agent, listener: &str, mode: &str) -> std::net::SocketAddr {
    let name = format!("listener={listener} ");
    let line = await_log(agent, "the listening line", |line| {
        line.contains("listening") && line.contains(&name) && line.contains(mode)
    })
    .await;
    line.split_whitespace()
        .find_map(|field| field.strip_prefix("address="))
        .and_then(|address| address.parse().ok())
        .unwrap_or_else(|| panic!("no address in: {line}"))
}

/// Reads `watch` until it reports `want`; fails if it ends first.
async fn until(watch: &mut Streaming<HealthCheckResponse>, want: ServingStatus) {
    loop {
        match watch.message().await {
            Ok(Some(report)) if report.status() == want => return,
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the health watch ended before reporting {want:?}"),
            Err(status) => panic!("the health watch failed: {}", status_chain(&status)),
        }
    }
}

#[tokio::test]
async fn serves_health_over_plaintext_and_refuses_every_other_service() {
    let (_dir, pki) = fresh_pki();
    let agent = Agent::spawn(
        &config(&pki)
            .log_level("info")
            .extra("[metrics]\naddress = \"127.0.0.1:0\""),
    );
    let health = Client::h2c(agent.health_addr())
        .await
        .expect("connect to the health listener over h2c, without a certificate");

    for service in ["", DICE_SERVICE_NAME] {
        assert_eq!(
            health.health(service).await.expect("check"),
            ServingStatus::Serving,
            "health {service:?}"
        );
    }
    let unknown = health.health("no.such.Service").await.expect_err("unknown");
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");

    assert_refused("RollDie", health.roll().await);
    assert_refused("reflection v1", health.list_services().await);
    assert_refused("reflection v1alpha", health.list_services_v1alpha().await);
    assert_refused("the info API", health.info().await);
    let mut admin = AdminServiceClient::new(health.channel());
    assert_refused(
        "the admin API",
        admin.rollback(RollbackRequest::default()).await,
    );

    // The mTLS listener serves as before, and its RPCs are logged at info;
    // the probes are not (they are logged at debug).
    roll_once(agent.mtls_addr(), &pki.client_tls())
        .await
        .expect("roll over mTLS");
    await_log(&agent, "the mTLS roll's rpc line", |line| {
        line.contains("/api.DiceService/RollDie")
    })
    .await;
    let logs = agent.logs();
    assert!(
        !logs.contains("/grpc.health.v1.Health/Check"),
        "probes logged at info:\n{logs}"
    );
    // They are counted all the same; the refusals as `other`, as any
    // path no service serves.
    let metrics = agent.metrics_addr().expect("the metrics address");
    let check_ok = [("method", "/grpc.health.v1.Health/Check"), ("code", "Ok")];
    let refused = [("method", "other"), ("code", "Unimplemented")];
    await_ok(DEADLINE, "the probes counted", async || {
        let exposition = scrape(metrics).await?;
        let counts = (
            exposition.value("dice_rpcs_total", &check_ok),
            exposition.value("dice_rpcs_total", &refused),
        );
        match counts {
            (Some(2.0), Some(5.0)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_not_serving_through_the_drain_then_closes_at_exit() {
    let (_dir, pki) = fresh_pki();
    // A long grace period: an mTLS watch held open keeps the agent draining.
    let mut agent = Agent::spawn(&config(&pki).grace_period("30s"));
    let holder = Client::mtls(agent.mtls_addr(), &pki.client_tls())
        .await
        .expect("connect over mTLS");
    let mut held = holder.watch_health("").await.expect("hold a watch");
    let health_addr = agent.health_addr();
    let probe = Client::h2c(health_addr).await.expect("connect the probe");
    let mut watch = probe.watch_health("").await.expect("watch over h2c");
    within(
        DEADLINE,
        "the first report",
        until(&mut watch, ServingStatus::Serving),
    )
    .await;

    agent.signal(Signal::TERM);
    within(
        DEADLINE,
        "NOT_SERVING after SIGTERM",
        until(&mut watch, ServingStatus::NotServing),
    )
    .await;
    within(
        DEADLINE,
        "the held watch",
        until(&mut held, ServingStatus::NotServing),
    )
    .await;
    // Still draining (the held watch is in flight): once the mTLS listener
    // has stopped accepting, the health listener still takes new
    // connections and answers them, for every service.
    let tls = pki.client_tls();
    let mtls_addr = agent.mtls_addr();
    await_ok(
        DEADLINE,
        "the mTLS listener refusing new connections",
        async || match roll_once(mtls_addr, &tls).await {
            Ok(value) => Err(format!("rolled {value}")),
            Err(_) => Ok(()),
        },
    )
    .await;
    assert!(agent.try_wait().is_none(), "{}", agent.dump());
    let fresh = Client::h2c(health_addr)
        .await
        .expect("a new connection to the health listener while draining");
    for service in ["", DICE_SERVICE_NAME] {
        assert_eq!(
            fresh.health(service).await.expect("check while draining"),
            ServingStatus::NotServing,
            "health {service:?} while draining"
        );
    }
    assert_eq!(
        fresh
            .health("liveness")
            .await
            .expect("liveness while draining"),
        ServingStatus::Serving,
        "liveness while draining: the process still answers"
    );
    assert_refused("RollDie while draining", fresh.roll().await);

    // The last RPC in flight ends: the drain is over, the process exits, and
    // the health listener closes with it.
    drop(held);
    drop(holder);
    tokio::task::block_in_place(|| agent.assert_clean_exit(DEADLINE, "after SIGTERM"));
    let closed = tokio::net::TcpStream::connect(health_addr).await;
    assert!(closed.is_err(), "the health port accepts after exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_not_serving_while_the_served_certificate_has_expired() {
    let (dir, pki) = fresh_pki();
    let live = LiveTls::install(&dir.path().join("live"), pki.server(), &[pki.ca_cert()]);
    let agent = Agent::spawn(&config(&pki).tls(live.tls_files()));
    let health = Client::h2c(agent.health_addr()).await.expect("connect");
    await_status(&health, "", ServingStatus::Serving).await;

    // A certificate valid for a few seconds more: the reload takes it, then
    // it lapses while served.
    let short = pki.issue(&LeafSpec::server("short-lived").expires_in(time::Duration::seconds(5)));
    live.rotate(&short, Replace::Rename);
    await_serial(agent.mtls_addr(), &pki.client_tls(), short.serial()).await;
    for service in ["", DICE_SERVICE_NAME] {
        await_status(&health, service, ServingStatus::NotServing).await;
    }
    await_log(&agent, "the no usable certificate error", |line| {
        line.contains("no usable certificate") && line.contains("listener mtls")
    })
    .await;
    // Liveness stays SERVING: restarting would not bring a valid certificate.
    assert_eq!(
        health.health("liveness").await.expect("liveness"),
        ServingStatus::Serving,
        "liveness with a lapsed certificate"
    );

    // A renewed certificate puts the node back in service.
    live.rotate(pki.server(), Replace::Rename);
    for service in ["", DICE_SERVICE_NAME] {
        await_status(&health, service, ServingStatus::Serving).await;
    }
}

#[test]
fn check_accepts_a_public_health_listener_and_rejects_tls_keys_on_one() {
    let (_dir, pki) = fresh_pki();
    let dir = tempdir();
    let public = dir.path().join("public.toml");
    config(&pki)
        .listener(ListenerConfig::health("probes").address("0.0.0.0:0"))
        .write(&public);
    check_config(&public)
        .assert_success()
        .assert_stdout_contains("listener probes health 0.0.0.0:0")
        .assert_stdout_contains("serves grpc.health.v1.Health only");

    let with_tls = dir.path().join("tls.toml");
    config(&pki)
        .listener(ListenerConfig::health("probes").tls(pki.server_tls()))
        .write(&with_tls);
    let toml = std::fs::read_to_string(&with_tls).expect("read the config");
    let line = 1 + toml
        .lines()
        .position(|l| l.starts_with("tls = {"))
        .expect("the listener's tls line");
    check_config(&with_tls)
        .assert_code(2)
        .assert_stderr_contains(&format!(
            "{} line {line}: listeners[2].tls: does not apply to a health listener",
            with_tls.display()
        ));
}

#[tokio::test]
async fn a_config_reload_turns_a_listener_into_a_health_listener_and_removes_it() {
    let (_dir, pki) = fresh_pki();
    let with_h2c = AgentConfig::new("health-node")
        .tls(pki.server_tls())
        .listener(ListenerConfig::mtls("mtls"))
        .listener(ListenerConfig::h2c("probe"));
    let agent = Agent::spawn(&with_h2c);
    let h2c = Client::h2c(agent.addr("probe"))
        .await
        .expect("connect to h2c");
    h2c.roll().await.expect("h2c serves the dice API");

    // Same name, mode health: the listener is bound again and serves health alone.
    rewrite(
        &agent,
        &AgentConfig::new("health-node")
            .tls(pki.server_tls())
            .listener(ListenerConfig::mtls("mtls"))
            .listener(ListenerConfig::health("probe")),
    );
    let address = await_listening(&agent, "probe", "health").await;
    let probe = Client::h2c(address)
        .await
        .expect("connect to the health listener");
    assert_eq!(
        probe.health("").await.expect("check"),
        ServingStatus::Serving
    );
    assert_refused("RollDie on the reloaded listener", probe.roll().await);
    // Probes are logged at debug (this agent logs at debug).
    await_log(&agent, "the probe's rpc line at debug", |line| {
        line.contains("DEBUG")
            && line.contains("/grpc.health.v1.Health/Check")
            && line.contains("listener=probe")
    })
    .await;

    // Removed: it stops accepting, as any listener does.
    rewrite(
        &agent,
        &AgentConfig::new("health-node")
            .tls(pki.server_tls())
            .listener(ListenerConfig::mtls("mtls")),
    );
    // (The rebind above logged a removal of `probe` too: wait for the port.)
    await_ok(
        DEADLINE,
        "the removed health listener refusing connections",
        async || match Client::h2c(address).await {
            Ok(_) => Err("still accepts".to_owned()),
            Err(_) => Ok(()),
        },
    )
    .await;
    await_ok(DEADLINE, "a second removal of probe logged", async || {
        let removals = (agent.logs().lines())
            .filter(|line| line.contains("listener removed") && line.contains("listener=probe"))
            .count();
        if removals == 2 {
            Ok(())
        } else {
            Err(format!("{removals} removals"))
        }
    })
    .await;
}

#[tokio::test]
async fn the_listener_limits_protect_a_health_listener() {
    let (_dir, pki) = fresh_pki();
    let toml = AgentConfig::new("health-node")
        .tls(pki.server_tls())
        .listener(ListenerConfig::mtls("mtls"))
        .limit("max_connections", "3")
        .to_toml()
        + "\n[[listeners]]\nname = \"health\"\nmode = \"health\"\naddress = \"127.0.0.1:0\"\nlimits = { rpc_rate = \"1/m\", rpc_burst = 2 }\n";
    let agent = Agent::spawn_toml(&toml, &[]);
    let addr = agent.health_addr();

    // limits.max_connections: two silent connections fill the listener's
    // slots with the probe's; the next is refused, and the mTLS listener,
    // with slots of its own, still serves.
    let probe = Client::h2c(addr).await.expect("connect");
    assert_eq!(
        probe.health("").await.expect("check"),
        ServingStatus::Serving
    );
    let mut silent = Vec::new();
    for _ in 0..2 {
        silent.push(
            tokio::net::TcpStream::connect(addr)
                .await
                .expect("a silent connection"),
        );
    }
    let refused = match Client::h2c(addr).await {
        Ok(client) => client
            .health("")
            .await
            .map_err(|status| status_chain(&status)),
        Err(error) => Err(error),
    };
    let error = refused.expect_err("a fourth connection was served");
    assert!(!error.contains("rate limit"), "{error}");
    await_log(&agent, "the refusal", |line| {
        line.contains("too many open connections") && line.contains("listener=health")
    })
    .await;
    roll_once(agent.mtls_addr(), &pki.client_tls())
        .await
        .expect("the mTLS listener still serves");
    drop(silent);

    // limits.rpc_rate: per peer IP on a health listener (burst 2).
    assert_eq!(
        probe.health("").await.expect("check"),
        ServingStatus::Serving
    );
    let limited = probe.health("").await.expect_err("over rpc_rate");
    assert_eq!(limited.code(), Code::ResourceExhausted, "{limited:?}");
}
