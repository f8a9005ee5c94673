//! Revocation: `tls.crl` lists CRLs (PEM or DER); a client certificate they
//! revoke is refused at the TLS handshake, and `dicectl roll` says `tls`. CRLs
//! reload with the rest of the certificate material: a replaced CRL applies to
//! new connections without a restart. An expired CRL still applies, with a
//! warning; a broken one is an error at start and is ignored on reload.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use dice_tests::abuse::{sample, scrape};
use dice_tests::ca::{CaSigner, Crl};
use dice_tests::client::{handshake, roll_once};
use dice_tests::process::check_config;
use dice_tests::rotation::{RELOAD_TIMEOUT, Replace, await_log, await_ok, await_warning, replace};
use dice_tests::{
    Agent, AgentConfig, Client, Ctl, HandshakeStage, Identity, LeafSpec, ListenerConfig, Pki,
    RunOutput, TlsClient, fresh_pki,
};
use rustls::AlertDescription;

/// The alert rustls sends for a revoked client certificate, as dicectl reports it.
const REVOKED_ALERT: &str = "CertificateRevoked";

/// `pki`'s server certificate on an mTLS listener named `mtls`, `crl` as
/// `tls.crl`, and metrics.
fn crl_config(pki: &Pki, crl: &Path) -> AgentConfig {
    AgentConfig::new("crl-node")
        .tls(pki.server_tls())
        .crl(crl)
        .listener(ListenerConfig::mtls("mtls"))
        .extra("[metrics]\naddress = \"127.0.0.1:0\"")
}

/// Whether a fresh handshake as `tls` is refused with the revoked alert;
/// `Err` describes what happened instead.
async fn refused_as_revoked(addr: SocketAddr, tls: &TlsClient) -> Result<(), String> {
    match handshake(addr, tls).await {
        Ok(_) => Err("the handshake succeeded".to_owned()),
        Err(error) if error.stage == HandshakeStage::Connect => {
            Err(format!("could not even connect: {error}"))
        }
        Err(error) if error.alert == Some(AlertDescription::CertificateRevoked) => Ok(()),
        Err(error) => Err(format!("refused, but not as revoked: {error}")),
    }
}

async fn assert_refused_as_revoked(agent: &Agent, who: &Identity, tls: &TlsClient) {
    if let Err(error) = refused_as_revoked(agent.addr("mtls"), tls).await {
        panic!(
            "{} should be refused as revoked: {error}\n{}",
            who.summary.subject,
            agent.dump()
        );
    }
    let rolled = roll_once(agent.addr("mtls"), tls).await;
    assert!(rolled.is_err(), "a revoked client rolled: {rolled:?}");
}

async fn assert_rolls(agent: &Agent, tls: &TlsClient) {
    let rolled = roll_once(agent.addr("mtls"), tls).await;
    assert!(
        rolled.as_ref().is_ok_and(|v| (1..=6).contains(v)),
        "{rolled:?}\n{}",
        agent.dump()
    );
}

fn dicectl_roll(node: SocketAddr, pki: &Pki, who: &Identity) -> RunOutput {
    Ctl::roll(node, pki.ca_cert(), &who.cert, &who.key)
}

fn check(config: &AgentConfig, dir: &Path) -> RunOutput {
    let path = dir.join("check.toml");
    config.write(&path);
    check_config(&path)
}

#[derive(Debug, Clone, Copy)]
enum Encoding {
    Pem,
    Der,
}

async fn revoked_client_is_refused_at_the_handshake(encoding: Encoding) {
    let (dir, pki) = fresh_pki();
    let revoked = pki.issue(&LeafSpec::client("revoked"));
    let crl = CaSigner::of(&pki).crl(&[&revoked]);
    let path = match encoding {
        Encoding::Pem => {
            let path = dir.path().join("ca.crl.pem");
            crl.write_pem(&path);
            path
        }
        Encoding::Der => {
            let path = dir.path().join("ca.crl");
            crl.write_der(&path);
            path
        }
    };
    let config = crl_config(&pki, &path);
    let checked = check(&config, dir.path());
    checked
        .assert_success()
        .assert_stdout_contains(&format!("crl {}", path.display()));
    assert!(!checked.stdout.contains("warning"), "{checked}");

    let agent = Agent::spawn(&config);
    let addr = agent.addr("mtls");
    assert_refused_as_revoked(&agent, &revoked, &pki.client_tls_as(&revoked)).await;
    assert_rolls(&agent, &pki.client_tls()).await;

    let output = dicectl_roll(addr, &pki, &revoked);
    output.assert_code(1);
    assert!(
        output
            .stderr
            .starts_with(&format!("dicectl: node {addr}: tls: ")),
        "dicectl should say the TLS handshake failed\n{output}"
    );
    assert!(output.stderr.contains(REVOKED_ALERT), "{output}");
    dicectl_roll(addr, &pki, pki.client()).assert_success();

    let metrics = scrape(agent.metrics_addr().expect("metrics address")).await;
    let revoked_count = sample(
        &metrics,
        "dice_tls_handshakes_total",
        &[("listener", "mtls"), ("outcome", "revoked")],
    );
    assert!(
        revoked_count.is_some_and(|n| n >= 3.0),
        "three revoked handshakes should be counted: {revoked_count:?}\n{metrics}"
    );
    // The agent logs why it refused the handshake.
    await_log(&agent, "a revoked handshake's failure", |line| {
        line.contains("TLS handshake failed") && line.contains("Revoked")
    })
    .await;
}

#[tokio::test]
async fn revoked_client_is_refused_at_the_handshake_with_a_pem_crl() {
    revoked_client_is_refused_at_the_handshake(Encoding::Pem).await;
}

#[tokio::test]
async fn revoked_client_is_refused_at_the_handshake_with_a_der_crl() {
    revoked_client_is_refused_at_the_handshake(Encoding::Der).await;
}

/// The CRL file of a test, and how to replace it under the running agent.
struct LiveCrl {
    path: PathBuf,
}

impl LiveCrl {
    fn write(&self, crl: &Crl) {
        replace(&self.path, crl.pem.as_bytes(), Replace::Rename);
    }
}

#[tokio::test]
async fn a_replaced_crl_revokes_on_new_connections_without_a_restart() {
    let (dir, pki) = fresh_pki();
    let ca = CaSigner::of(&pki);
    let victim = pki.issue(&LeafSpec::client("victim"));
    let live = LiveCrl {
        path: dir.path().join("live.crl"),
    };
    live.write(&ca.crl(&[]));
    let agent = Agent::spawn(&crl_config(&pki, &live.path));
    let addr = agent.addr("mtls");
    let victim_tls = pki.client_tls_as(&victim);

    assert_rolls(&agent, &victim_tls).await;
    let established = Client::mtls(addr, &victim_tls)
        .await
        .expect("the victim connects before it is revoked");
    established.roll().await.expect("roll before revocation");

    live.write(&ca.crl(&[&victim]));
    await_ok(
        RELOAD_TIMEOUT,
        "a fresh handshake of the victim refused as revoked",
        async || refused_as_revoked(addr, &victim_tls).await,
    )
    .await;
    await_log(&agent, "the CRL reload", |line| {
        line.contains("certificate reloaded")
    })
    .await;
    assert_rolls(&agent, &pki.client_tls()).await;
    // Open connections are checked again after the reload (SECURITY.md):
    // the victim's is told to go away, and its next RPC finds no way back in.
    await_ok(
        RELOAD_TIMEOUT,
        "the victim's open connection cut off",
        async || match established.roll().await {
            Ok(_) => Err("the victim's open connection still rolls".to_owned()),
            Err(_) => Ok(()),
        },
    )
    .await;

    // And back: a CRL without the victim lets it in again.
    live.write(&ca.crl(&[]));
    await_ok(
        RELOAD_TIMEOUT,
        "the victim accepted again",
        async || match roll_once(addr, &victim_tls).await {
            Ok(_) => Ok(()),
            Err(error) => Err(error),
        },
    )
    .await;
}

#[tokio::test]
async fn an_expired_crl_is_a_warning_and_still_applies() {
    let (dir, pki) = fresh_pki();
    let revoked = pki.issue(&LeafSpec::client("revoked"));
    let path = dir.path().join("stale.crl");
    CaSigner::of(&pki).expired_crl(&[&revoked]).write_pem(&path);
    let config = crl_config(&pki, &path);

    let checked = check(&config, dir.path());
    checked.assert_success();
    assert!(
        checked
            .stdout
            .lines()
            .any(|line| line.contains("warning:") && line.contains("CRL expired at")),
        "--check should warn about the expired CRL\n{checked}"
    );

    let agent = Agent::spawn(&config);
    await_warning(&agent, "CRL expired at", &path, "tls.crl[0]").await;
    assert_refused_as_revoked(&agent, &revoked, &pki.client_tls_as(&revoked)).await;
    assert_rolls(&agent, &pki.client_tls()).await;
}

#[test]
fn a_broken_crl_fails_check_naming_the_file() {
    let (dir, pki) = fresh_pki();
    let path = dir.path().join("broken.crl");
    let cases: [(&[u8], &str); 3] = [
        (b"this is not a CRL", "not a valid CRL"),
        (
            b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
            "not a valid CRL",
        ),
        (
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            "no CRL found",
        ),
    ];
    for (bytes, expected) in cases {
        std::fs::write(&path, bytes).expect("write the CRL");
        let output = check(&crl_config(&pki, &path), dir.path());
        output
            .assert_code(2)
            .assert_stderr_contains("tls.crl[0]")
            .assert_stderr_contains(&path.display().to_string())
            .assert_stderr_contains(expected);
    }
}

#[tokio::test]
async fn a_broken_crl_on_reload_keeps_the_previous_one() {
    let (dir, pki) = fresh_pki();
    let revoked = pki.issue(&LeafSpec::client("revoked"));
    let live = LiveCrl {
        path: dir.path().join("live.crl"),
    };
    live.write(&CaSigner::of(&pki).crl(&[&revoked]));
    let agent = Agent::spawn(&crl_config(&pki, &live.path));

    replace(&live.path, b"garbage", Replace::Rename);
    let line = await_log(&agent, "the rejected CRL reload", |line| {
        line.contains("certificate reload rejected") && line.contains("tls.crl[0]")
    })
    .await;
    assert!(line.contains("not a valid CRL"), "{line}");
    assert_refused_as_revoked(&agent, &revoked, &pki.client_tls_as(&revoked)).await;
    assert_rolls(&agent, &pki.client_tls()).await;
}

#[tokio::test]
async fn a_crl_not_signed_by_the_client_ca_is_refused() {
    // Names the right CA, but an impostor signed it: believing it would let
    // anyone who can write the file revoke (or, listing nobody, vouch for)
    // every client. The agent must not serve with it.
    let (dir, pki) = fresh_pki();
    let path = dir.path().join("forged.crl");
    CaSigner::impostor(&pki).crl(&[]).write_pem(&path);
    let output = check(&crl_config(&pki, &path), dir.path());
    output
        .assert_code(2)
        .assert_stderr_contains("tls.crl[0]")
        .assert_stderr_contains("not signed by");

    // On reload, the forged CRL is rejected and the good one keeps serving.
    let live = LiveCrl {
        path: dir.path().join("live.crl"),
    };
    live.write(&CaSigner::of(&pki).crl(&[]));
    let agent = Agent::spawn(&crl_config(&pki, &live.path));
    live.write(&CaSigner::impostor(&pki).crl(&[]));
    await_log(&agent, "the rejected forged CRL", |line| {
        line.contains("certificate reload rejected") && line.contains("not signed by")
    })
    .await;
    assert_rolls(&agent, &pki.client_tls()).await;
}

#[test]
fn a_crl_of_a_ca_not_in_client_ca_is_a_warning() {
    let (dir, pki) = fresh_pki();
    let path = dir.path().join("stranger.crl");
    CaSigner::stranger(&pki, "stranger CA")
        .crl(&[])
        .write_der(&path);
    let output = check(&crl_config(&pki, &path), dir.path());
    output.assert_success();
    assert!(
        output.stdout.lines().any(|line| line.contains("warning:")
            && line.contains("CN=stranger CA")
            && line.contains("not in client_ca")),
        "--check should say the CRL can revoke nothing here\n{output}"
    );
}
