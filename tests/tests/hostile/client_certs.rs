//! Client certificates that must be refused at the handshake: expired, not
//! yet valid, serverAuth only, revoked, and signed by an impostor CA.

use dice_tests::abuse::Watch;
use dice_tests::ca::{CaSigner, ClientSpec};
use dice_tests::client::{handshake, roll_once};
use dice_tests::{Agent, HandshakeStage, Identity, LeafSpec, Pki, TlsClient, fresh_pki};
use rustls::AlertDescription;

use super::{for_a_while, handshakes, hostile, mtls};

/// Makes handshakes and rolls as `bad` for a while, each of which must be
/// refused with one of the TLS alerts in `alerts`, while a good client rolls;
/// the handshakes metric must count them all as `outcome`.
async fn refuse_repeatedly(
    agent: &Agent,
    pki: &Pki,
    bad: &TlsClient,
    alerts: &[AlertDescription],
    outcome: &str,
    what: &str,
) {
    let watch = Watch::start(agent.pid(), mtls(agent, pki), Some(10)).await;
    let mut attempts = 0;
    for_a_while(async |_| {
        attempts += 1;
        let refused = handshake(agent.addr("mtls"), bad).await;
        match refused {
            Ok(_) => panic!("{what}: the handshake succeeded\n{}", agent.dump()),
            Err(error) => {
                assert_ne!(error.stage, HandshakeStage::Connect, "{what}: {error}");
                assert!(
                    error.alert.is_some_and(|alert| alerts.contains(&alert)),
                    "{what}: refused with {error} (alert {:?}), expected one of {alerts:?}",
                    error.alert
                );
            }
        }
        let rolled = roll_once(agent.addr("mtls"), bad).await;
        assert!(rolled.is_err(), "{what}: rolled {rolled:?}");
    })
    .await;
    eprintln!("{what}: {attempts} handshakes and rolls refused");
    watch.finish(what).await;
    let counted = handshakes(agent, outcome).await;
    assert!(
        counted >= f64::from(2 * attempts),
        "{what}: {counted} handshakes counted as {outcome}"
    );
}

async fn refuse_leaf(spec: LeafSpec, alerts: &[AlertDescription], outcome: &str, what: &str) {
    let (_dir, pki) = fresh_pki();
    let bad = pki.issue(&spec);
    let agent = Agent::spawn(&hostile(&pki));
    refuse_repeatedly(
        &agent,
        &pki,
        &pki.client_tls_as(&bad),
        alerts,
        outcome,
        what,
    )
    .await;
}

#[tokio::test]
async fn expired_client_certificate() {
    let spec = LeafSpec::client("expired").expired();
    refuse_leaf(
        spec,
        &[AlertDescription::CertificateExpired],
        "expired",
        "expired client certificate",
    )
    .await;
}

#[tokio::test]
async fn not_yet_valid_client_certificate() {
    let spec = LeafSpec::client("early").not_yet_valid();
    let what = "not-yet-valid client certificate";
    // rustls sends the same alert as for an expired certificate; the
    // handshakes metric has no outcome of its own for it.
    refuse_leaf(spec, &[AlertDescription::CertificateExpired], "error", what).await;
}

#[tokio::test]
async fn server_auth_only_client_certificate() {
    // `LeafSpec::server` certificates carry serverAuth and no clientAuth.
    let spec = LeafSpec::server("server-as-client");
    let what = "serverAuth-only client certificate";
    refuse_leaf(
        spec,
        &[AlertDescription::UnsupportedCertificate],
        "error",
        what,
    )
    .await;
}

#[tokio::test]
async fn revoked_client_certificate() {
    let (dir, pki) = fresh_pki();
    let revoked = pki.issue(&LeafSpec::client("revoked"));
    let crl = dir.path().join("ca.crl");
    CaSigner::of(&pki).crl(&[&revoked]).write_der(&crl);
    let agent = Agent::spawn(&hostile(&pki).crl(&crl));
    let what = "revoked client certificate";
    let bad = pki.client_tls_as(&revoked);
    let alerts = [AlertDescription::CertificateRevoked];
    refuse_repeatedly(&agent, &pki, &bad, &alerts, "revoked", what).await;
}

#[tokio::test]
async fn client_certificate_signed_by_an_impostor_with_the_ca_name() {
    let (_dir, pki) = fresh_pki();
    let forged: Identity = CaSigner::impostor(&pki).issue(&ClientSpec::new("forged"));
    assert_eq!(
        forged.summary.issuer,
        pki.client().summary.issuer,
        "the forgery names the real CA"
    );
    let agent = Agent::spawn(&hostile(&pki));
    let what = "client certificate signed by the right CA name but the wrong key";
    let bad = pki.client_tls_as(&forged);
    let alerts = [
        AlertDescription::DecryptError,
        AlertDescription::UnknownCA,
        AlertDescription::BadCertificate,
    ];
    refuse_repeatedly(&agent, &pki, &bad, &alerts, "unknown_ca", what).await;
}
