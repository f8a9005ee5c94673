//! `[acme]`: the agent obtains and renews its certificate from a real ACME
//! server (pebble, validating challenges for real), while serving.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use dice_proto::info::AcmeStatus;
use dice_proto::info::admin_service_client::AdminServiceClient;
use dice_tests::acme::{AcmeNode, Pebble, PebbleOptions};
use dice_tests::certs_cli::Rolling;
use dice_tests::{Agent, Client, RunOutput, TlsClient, fresh_pki, poll_until_async, run_agent};

/// Pebble's certificates live this long, so a renewal (at 2/3 left) comes
/// about 10 s after each issuance.
const VALIDITY_SECS: u64 = 30;
/// Long enough for the first renewal (10 s, minus jitter) and its validation.
const RENEWAL_DEADLINE: Duration = Duration::from_secs(40);

/// The serial the agent serves on `mtls`, from its info API.
async fn served_serial(agent: &Agent, tls: &TlsClient) -> Result<String, String> {
    let client = Client::mtls(agent.addr("mtls"), tls).await?;
    let info = client.info().await.map_err(|status| status.to_string())?;
    info.certificates
        .get("mtls")
        .map(|cert| cert.serial.clone())
        .ok_or_else(|| "no certificate for mtls in the info API".to_owned())
}

/// Waits until the agent serves a serial other than `old`, and returns it.
async fn wait_renewal(agent: &Agent, tls: &TlsClient, old: &str) -> String {
    let renewed = poll_until_async(RENEWAL_DEADLINE, || async {
        served_serial(agent, tls)
            .await
            .is_ok_and(|serial| serial != old)
    })
    .await;
    assert!(
        renewed,
        "no renewal within {RENEWAL_DEADLINE:?}\n{}",
        agent.dump()
    );
    served_serial(agent, tls)
        .await
        .expect("serves the renewed certificate")
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread")]
async fn http01_first_issuance_then_renewals_under_rolls() {
    let (dir, pki) = fresh_pki();
    let pebble = Pebble::start(dir.path(), &pki, PebbleOptions::new(VALIDITY_SECS));
    let node = AcmeNode::http01(dir.path(), &pki, &pebble);
    let agent = Agent::spawn(&node.config());
    assert!(
        node.cert.is_file() && node.key.is_file(),
        "{}",
        agent.dump()
    );
    assert_eq!(mode(&node.key), 0o600);
    assert_eq!(mode(&node.account_key), 0o600);
    let tls = pebble
        .trusting_client(&dir.path().join("roots.pem"), &pki)
        .await;
    let first = served_serial(&agent, &tls)
        .await
        .expect("serves the ACME certificate");

    // Only pending challenges are answered: everything else is a 404.
    let http01 = std::net::SocketAddr::from(([127, 0, 0, 1], pebble.options.http_port));
    for path in ["/", "/.well-known/acme-challenge/unknown-token"] {
        let response = dice_tests::metrics::http_get(http01, path)
            .await
            .expect("the http-01 responder answers");
        assert_eq!(response.status, 404, "GET {path}");
    }

    let rolling = Rolling::start(agent.addr("mtls"), tls.clone()).await;
    let second = wait_renewal(&agent, &tls, &first).await;
    wait_renewal(&agent, &tls, &second).await;
    let tally = rolling.finish().await;
    assert!(tally.failed.is_empty(), "failed rolls: {:?}", tally.failed);
    assert!(tally.fresh_ok > 0 && tally.kept_ok > 0, "{tally:?}");

    let metrics = dice_tests::metrics::scrape(agent.metrics_addr().expect("metrics"))
        .await
        .expect("scrape");
    let ok = metrics
        .value("dice_acme_renewals_total", &[("outcome", "ok")])
        .unwrap_or_default();
    assert!(
        ok >= 3.0,
        "dice_acme_renewals_total{{outcome=\"ok\"}} = {ok}"
    );
    assert_eq!(
        metrics.value("dice_acme_renewals_total", &[("outcome", "failed")]),
        Some(0.0)
    );
    let next = metrics
        .value("dice_acme_next_renewal_timestamp_seconds", &[])
        .unwrap_or_default();
    assert!(next > 0.0, "no next renewal time in the metrics");
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_alpn01_first_issuance_then_renewal_on_the_serving_listener() {
    let (dir, pki) = fresh_pki();
    let pebble = Pebble::start(dir.path(), &pki, PebbleOptions::new(VALIDITY_SECS));
    let node = AcmeNode::tls_alpn01(dir.path(), &pki, &pebble);
    let agent = Agent::spawn(&node.config());
    assert_eq!(agent.addr("mtls").port(), pebble.options.tls_port);
    let tls = pebble
        .trusting_client(&dir.path().join("roots.pem"), &pki)
        .await;
    let first = served_serial(&agent, &tls)
        .await
        .expect("serves the ACME certificate");
    // The renewal is validated by handshakes on the listener that serves
    // the rolls: those must go on as before.
    let rolling = Rolling::start(agent.addr("mtls"), tls.clone()).await;
    wait_renewal(&agent, &tls, &first).await;
    let tally = rolling.finish().await;
    assert!(tally.failed.is_empty(), "failed rolls: {:?}", tally.failed);
    assert!(
        agent
            .logs()
            .contains("answered a tls-alpn-01 validation handshake"),
        "{}",
        agent.dump()
    );
}

/// The agent's ACME state from its info API.
async fn acme_status(agent: &Agent, tls: &TlsClient) -> Result<AcmeStatus, String> {
    let client = Client::mtls(agent.addr("mtls"), tls).await?;
    let info = client.info().await.map_err(|status| status.to_string())?;
    info.acme
        .ok_or_else(|| "no acme in the info API".to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn acme_server_down_serving_goes_on_with_backoff_then_renews_once_back() {
    let (dir, pki) = fresh_pki();
    // 60 s certificates renewed with 59/60 left: the first renewal is due
    // after a second, with the rest of the minute left to retry in.
    let mut pebble = Pebble::start(dir.path(), &pki, PebbleOptions::new(60));
    // Failures are warnings while more than 55 s are left, errors after.
    let node = AcmeNode::http01(dir.path(), &pki, &pebble)
        .key_value("renew_before", "\"59/60\"")
        .tls_key_value("expiry_warning", "\"55s\"");
    let agent = Agent::spawn(&node.config());
    let roots = dir.path().join("roots.pem");
    let tls = pebble.trusting_client(&roots, &pki).await;
    pebble.stop();
    // (It may have renewed once before pebble stopped.)
    let first = served_serial(&agent, &tls)
        .await
        .expect("serves the ACME certificate");

    let backing_off = poll_until_async(Duration::from_secs(40), || async {
        acme_status(&agent, &tls)
            .await
            .is_ok_and(|status| status.failures >= 4)
    })
    .await;
    let seen = acme_status(&agent, &tls).await.expect("info");
    assert!(
        backing_off,
        "no failed attempts shown in the info API\n{}",
        agent.dump()
    );
    assert!(
        !seen.last_error.is_empty() && !seen.last_error_time.is_empty(),
        "{seen:?}"
    );
    assert!(seen.last_error.contains("cannot connect"), "{seen:?}");
    assert!(!seen.next_attempt.is_empty(), "{seen:?}");
    assert_eq!(
        served_serial(&agent, &tls).await.as_deref(),
        Ok(first.as_str()),
        "still serving"
    );
    Client::mtls(agent.addr("mtls"), &tls)
        .await
        .expect("connects")
        .roll()
        .await
        .expect("rolls while the ACME server is down");
    let node = agent.addr("mtls").to_string();
    let dicectl_health = |output: &str| {
        dice_tests::Ctl::run(dice_tests::certs_cli::os(&[
            &"health",
            &"--node",
            &node,
            &"--ca",
            &roots,
            &"--cert",
            &pki.client().cert,
            &"--key",
            &pki.client().key,
            &"--output",
            &output,
        ]))
    };
    let health = dicectl_health("json");
    assert!(health.stdout.contains("\"acme\""), "{health}");
    assert!(health.stdout.contains("cannot connect"), "{health}");
    // The table says when the next attempt is, and why the last one failed.
    let table = dicectl_health("table");
    assert!(
        table.stdout.contains("\nacme:\n") && table.stdout.contains(": next attempt "),
        "{table}"
    );
    assert!(
        table.stdout.contains("failed ACME attempt(s)") && table.stdout.contains("cannot connect"),
        "{table}"
    );
    let logs = agent.logs();
    assert!(
        logs.contains("WARN dice_agent::acme: cannot renew the certificate from the ACME server; still serving the current one"),
        "{}",
        agent.dump()
    );
    assert!(
        logs.contains("ERROR dice_agent::acme: cannot renew the certificate from the ACME server, and it expires soon"),
        "{}",
        agent.dump()
    );

    // Back, with a new root (pebble makes one per start).
    pebble.run();
    let tls = pebble.trusting_client(&roots, &pki).await;
    wait_renewal(&agent, &tls, &first).await;
    let status = acme_status(&agent, &tls).await.expect("info");
    assert_eq!(status.failures, 0, "{status:?}");
    // The restarted pebble forgot the account: the same key registered again.
    assert!(
        agent.logs().contains("registered the account key again"),
        "{}",
        agent.dump()
    );
    assert!(
        status.last_error.is_empty() && !status.last_success.is_empty(),
        "{status:?}"
    );
}

/// Runs the agent on `node`'s config to completion: it must not get ready.
fn run_to_exit(dir: &std::path::Path, node: &AcmeNode) -> RunOutput {
    let config = dir.join("node.toml");
    node.config().write(&config);
    run_agent([std::path::Path::new("--config"), &config])
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_directory_and_untrusted_acme_server_exit_1_at_first_start() {
    let (dir, pki) = fresh_pki();
    let pebble = Pebble::start(dir.path(), &pki, PebbleOptions::new(VALIDITY_SECS));
    let wrong = AcmeNode::http01(dir.path(), &pki, &pebble).key_value(
        "directory",
        &format!("\"https://{}/no-such-directory\"", pebble.listen),
    );
    let output = run_to_exit(dir.path(), &wrong);
    output.assert_code(1);
    output.assert_stderr_contains("cannot obtain the first certificate");
    output.assert_stderr_contains(
        "HTTP 404 Not Found: not an ACME directory (check [acme] directory)",
    );
    assert!(!wrong.cert.exists());

    let other = pki.unrelated("other");
    let untrusted = AcmeNode::http01(dir.path(), &pki, &pebble).key_value(
        "ca",
        &format!("{:?}", other.ca_cert().display().to_string()),
    );
    let output = run_to_exit(dir.path(), &untrusted);
    output.assert_code(1);
    output.assert_stderr_contains("TLS handshake with 127.0.0.1");
    output.assert_stderr_contains("UnknownIssuer");
    assert!(
        !untrusted.account_key.exists(),
        "no account without a trusted server"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_account_key_is_reused_after_a_restart() {
    let (dir, pki) = fresh_pki();
    let pebble = Pebble::start(dir.path(), &pki, PebbleOptions::new(VALIDITY_SECS));
    let node = AcmeNode::http01(dir.path(), &pki, &pebble).key_value("renew_before", "\"1/10\"");
    let tls = pebble
        .trusting_client(&dir.path().join("roots.pem"), &pki)
        .await;
    let agent = Agent::spawn(&node.config());
    let first = acme_status(&agent, &tls).await.expect("info");
    assert!(first.account.starts_with("https://"), "{first:?}");
    let key = std::fs::read(&node.account_key).expect("the account key");
    drop(agent);
    // No certificate: the restarted agent must order one, with the same account.
    std::fs::remove_file(&node.cert).expect("remove the certificate");
    let agent = Agent::spawn(&node.config());
    let second = acme_status(&agent, &tls).await.expect("info");
    assert_eq!(
        second.account, first.account,
        "a new account was registered"
    );
    assert_eq!(
        std::fs::read(&node.account_key).expect("the account key"),
        key
    );
    assert!(
        !agent.logs().contains("registered an ACME account"),
        "{}",
        agent.dump()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn external_account_binding_against_pebbles_eab_mode() {
    let (dir, pki) = fresh_pki();
    let mut options = PebbleOptions::new(VALIDITY_SECS);
    let mac = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W";
    options.eab = Some(("kid-1".to_owned(), mac.to_owned()));
    let pebble = Pebble::start(dir.path(), &pki, options);
    let key_file = dir.path().join("eab.key");

    // Without a binding, or with the wrong MAC key, pebble refuses the account.
    let unbound = AcmeNode::http01(dir.path(), &pki, &pebble);
    let output = run_to_exit(dir.path(), &unbound);
    output.assert_code(1);
    output.assert_stderr_contains("externalAccountRequired");
    std::fs::write(
        &key_file,
        "b10lLJs8l1GPIzsLP0s6pMt8O0XVGnfTaCeROxQM0BIt2XrJMDHJZBM5NuQmQJQH\n",
    )
    .expect("write the MAC key");
    let bound = unbound.key_value("eab_kid", "\"kid-1\"").key_value(
        "eab_hmac_key_file",
        &format!("{:?}", key_file.display().to_string()),
    );
    let output = run_to_exit(dir.path(), &bound);
    output.assert_code(1);
    output.assert_stderr_contains("cannot register an ACME account");
    assert!(!bound.account_key.exists());

    std::fs::write(&key_file, format!("{mac}\n")).expect("write the MAC key");
    let agent = Agent::spawn(&bound.config());
    let tls = pebble
        .trusting_client(&dir.path().join("roots.pem"), &pki)
        .await;
    served_serial(&agent, &tls)
        .await
        .expect("serves the ACME certificate");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_api_refuses_to_install_over_acme() {
    let (dir, pki) = fresh_pki();
    let pebble = Pebble::start(dir.path(), &pki, PebbleOptions::new(VALIDITY_SECS));
    let node = AcmeNode::http01(dir.path(), &pki, &pebble).key_value("renew_before", "\"1/10\"");
    let agent = Agent::spawn(&node.config().admin([dice_tests::pki::CLIENT_CN]));
    let tls = pebble
        .trusting_client(&dir.path().join("roots.pem"), &pki)
        .await;
    let channel = tls.channel(agent.addr("mtls")).await.expect("connects");
    let mut admin = AdminServiceClient::new(channel);
    let prepare = admin
        .prepare_certificate(dice_proto::info::PrepareCertificateRequest::default())
        .await
        .expect_err("PrepareCertificate is refused");
    let install = admin
        .install_certificate(dice_proto::info::InstallCertificateRequest::default())
        .await
        .expect_err("InstallCertificate is refused");
    for status in [prepare, install] {
        assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
        assert!(status.message().contains("[acme]"), "{status:?}");
    }
}

#[test]
fn check_says_what_acme_would_do_with_no_certificate_yet() {
    let (dir, pki) = fresh_pki();
    let config = dice_tests::AgentConfig::new("acme-check")
        .tls(dice_tests::TlsFiles {
            cert: dir.path().join("node.pem"),
            key: dir.path().join("node-key.pem"),
            client_ca: pki.ca_cert().to_owned(),
        })
        .listener(dice_tests::ListenerConfig::mtls("public").address("127.0.0.1:8443"))
        .extra(
            r#"[acme]
directory = "https://ca.internal:9000/acme/acme/directory"
identifiers = ["node-1.dice.internal", "10.0.0.7"]
challenge = "tls-alpn-01"
tls_alpn_listener = "public"
account_key = "account.pem"
key_type = "ecdsa-p384"
"#,
        );
    let path = dir.path().join("node.toml");
    config.write(&path);
    let output = dice_tests::process::check_config(&path);
    output.assert_success();
    for needle in [
        "acme directory https://ca.internal:9000/acme/acme/directory",
        "identifiers node-1.dice.internal, 10.0.0.7",
        "challenge tls-alpn-01, answered by listener public (127.0.0.1:8443)",
        "ca the system roots",
        "(missing: an account is registered at the first start)",
        "writes a ecdsa-p384 key and its certificate",
        "missing now: obtained before the agent serves, or it exits 1 after",
        "renews with 1/3 of the lifetime left",
    ] {
        output.assert_stdout_contains(needle);
    }
}
