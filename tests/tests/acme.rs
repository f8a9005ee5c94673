//! `[acme]`: the agent obtains and renews its certificate from a real ACME
//! server (pebble, validating challenges for real), while serving.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use dice_tests::acme::{AcmeNode, Pebble, PebbleOptions};
use dice_tests::certs_cli::Rolling;
use dice_tests::{Agent, Client, TlsClient, fresh_pki, poll_until_async};

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
    let next = metrics
        .value("dice_acme_next_renewal_timestamp_seconds", &[])
        .unwrap_or_default();
    assert!(next > 0.0, "no next renewal time in the metrics");
}
