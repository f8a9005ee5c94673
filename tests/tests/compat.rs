//! Every PKI an operator already has: certificates and keys made with the
//! openssl CLI, and in cfssl's formats (RSA 2048 PKCS#1 and ECDSA P-256 SEC1
//! keys, a CA with the cRLSign usage, not-before backdated 5 minutes), are
//! served by the agent, rolled against with dicectl, inspected, issued from
//! and renewed by dicectl. The other way round, OpenSSL accepts what dicectl
//! issues: `openssl verify` for every key type and through an intermediate,
//! and `openssl s_client` connecting to an agent with dicectl's certificates.
//! All material is made in the test itself.

use std::fs;
use std::path::Path;

use dice_tests::certs_cli::{
    self, CaDir, IssueSpec, KEY_TYPES, Leaf, certs, ctl_roll, inspect_pair, os,
};
use dice_tests::client::handshake;
use dice_tests::foreign_pki::ForeignKey::{EcP256Sec1, Rsa2048Pkcs1};
use dice_tests::foreign_pki::{
    CFSSL_BACKDATE, ForeignKey, ForeignPki, Usage, openssl_verify, s_client,
};
use dice_tests::rotation::{await_log, await_serial};
use dice_tests::{Agent, tempdir};

/// An agent serving `server` on an mTLS listener named `mtls`, verifying clients against `client_ca`.
fn serve(server: &Leaf, client_ca: &Path) -> Agent {
    certs_cli::serve("compat-node", server, client_ca)
}

fn assert_key_form(leaf: &Leaf, key: ForeignKey) {
    let text = fs::read_to_string(&leaf.key).expect("read the key");
    assert!(
        text.starts_with(key.pem_label()),
        "{} is not {key:?}:\n{}",
        leaf.key.display(),
        text.lines().next().unwrap_or_default()
    );
}

/// Checks that the CA key of `pki` has the form `keys[0]`, then issues a
/// server leaf with a `keys[1]` key and a client leaf with a `keys[2]` key and
/// checks their key files too.
fn checked_leaves(pki: &ForeignPki, [ca, server, client]: [ForeignKey; 3]) -> (Leaf, Leaf) {
    let text = fs::read_to_string(pki.dir().join("ca-key.pem")).expect("read the CA key");
    assert!(text.starts_with(ca.pem_label()), "the CA key is not {ca:?}");
    let server_leaf = pki.leaf("server", Usage::Server, server);
    let client_leaf = pki.leaf("client", Usage::Client, client);
    assert_key_form(&server_leaf, server);
    assert_key_form(&client_leaf, client);
    (server_leaf, client_leaf)
}

/// Serves `server`, rolls as `client`, inspects both with their keys, then
/// has dicectl issue a client from the foreign CA and renew the foreign
/// server certificate under the running agent.
async fn foreign_pki_works_everywhere(
    pki: &ForeignPki,
    server: &Leaf,
    client: &Leaf,
    types: [&str; 2],
) {
    let ca_cert = pki.ca_cert();
    let agent = serve(server, &ca_cert);
    let addr = agent.addr("mtls");
    let shook = handshake(addr, &client.client(&ca_cert))
        .await
        .unwrap_or_else(|error| panic!("handshake with the foreign certificates: {error}"));
    assert_eq!(shook.server_cert.serial, server.serial());
    ctl_roll(addr, &ca_cert, client);

    let inspect = inspect_pair(server, client, &ca_cert, &[]);
    inspect.assert_success();
    for key_type in types {
        inspect.assert_stdout_contains(&format!("key type     {key_type}"));
    }
    assert_eq!(
        inspect.stdout.matches("verifies against").count(),
        2,
        "{inspect}"
    );

    // dicectl issues from the foreign CA directory (its key in PKCS#1 or SEC1 form).
    let foreign_ca = CaDir {
        dir: pki.dir().to_owned(),
    };
    let out = pki.dir().join("dicectl");
    let issued = IssueSpec::client("ctl-issued").issue(&foreign_ca, &out);
    assert_eq!(issued.summary.issuer, server.summary.issuer);
    ctl_roll(addr, &ca_cert, &issued);

    // dicectl renews the foreign server certificate in place, under the agent.
    let (renewed, output) = server.renew(&foreign_ca, &[]);
    output.assert_stdout_contains(&format!("key {}", types[0]));
    assert_eq!(renewed.summary.subject, server.summary.subject);
    assert_eq!(renewed.summary.sans, server.summary.sans);
    await_serial(addr, &client.client(&ca_cert), renewed.serial()).await;
    ctl_roll(addr, &ca_cert, client);
}

#[tokio::test]
async fn openssl_made_pki_works_in_the_agent_and_dicectl() {
    let dir = tempdir();
    let pki = ForeignPki::openssl(&dir.path().join("openssl"));
    // An RSA CA, an EC server key, an RSA client key.
    let (server, client) = checked_leaves(&pki, [Rsa2048Pkcs1, EcP256Sec1, Rsa2048Pkcs1]);
    foreign_pki_works_everywhere(&pki, &server, &client, ["ECDSA P-256", "RSA 2048"]).await;
}

#[tokio::test]
async fn cfssl_format_pki_works_in_the_agent_and_dicectl() {
    let dir = tempdir();
    let pki = ForeignPki::cfssl(&dir.path().join("cfssl"));
    // cfssl's default: an EC CA; here an RSA server key and an EC client key.
    let (server, client) = checked_leaves(&pki, [EcP256Sec1, Rsa2048Pkcs1, EcP256Sec1]);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let backdate = CFSSL_BACKDATE.whole_seconds();
    for leaf in [&server, &client] {
        let age = now - leaf.summary.not_before;
        assert!(
            (backdate..backdate + 60).contains(&age),
            "not-before is {age}s ago, not backdated 5 minutes"
        );
    }
    certs(os(&[&"inspect", &pki.ca_cert()]))
        .assert_success()
        .assert_stdout_contains("root CA")
        .assert_stdout_contains("key usage    keyCertSign, cRLSign");
    foreign_pki_works_everywhere(&pki, &server, &client, ["RSA 2048", "ECDSA P-256"]).await;
}

#[test]
fn openssl_verify_accepts_every_key_type_dicectl_issues() {
    let dir = tempdir();
    let root = CaDir::init(&dir.path().join("root"));
    // The dev PKI of `certs init` itself.
    openssl_verify(
        &root.cert(),
        None,
        &root.dir.join("server.pem"),
        "sslserver",
    )
    .assert_success()
    .assert_stdout_contains(": OK");
    openssl_verify(
        &root.cert(),
        None,
        &root.dir.join("client.pem"),
        "sslclient",
    )
    .assert_success()
    .assert_stdout_contains(": OK");
    for key_type in KEY_TYPES {
        let out = dir.path().join(key_type);
        let server = IssueSpec::server("server")
            .key_type(key_type)
            .issue(&root, &out);
        let client = IssueSpec::client("client")
            .key_type(key_type)
            .issue(&root, &out);
        for (leaf, purpose) in [(&server, "sslserver"), (&client, "sslclient")] {
            let output = openssl_verify(&root.cert(), None, &leaf.cert, purpose);
            assert!(
                output.status.success() && output.stdout.contains(": OK"),
                "openssl refused a {key_type} {purpose} certificate\n{output}"
            );
        }
        // A server certificate is no client certificate.
        let output = openssl_verify(&root.cert(), None, &server.cert, "sslclient");
        assert!(!output.status.success(), "{output}");
    }
}

#[test]
fn openssl_verify_follows_an_intermediate_dicectl_made() {
    let dir = tempdir();
    let root = CaDir::init(&dir.path().join("root"));
    for key_type in ["ecdsa-p384", "rsa2048", "ed25519"] {
        let inter = root.intermediate(&dir.path().join(format!("inter-{key_type}")), key_type);
        openssl_verify(&root.cert(), None, &inter.cert(), "any")
            .assert_success()
            .assert_stdout_contains(": OK");
        let out = dir.path().join(format!("leaves-{key_type}"));
        let server = IssueSpec::server("server").issue(&inter, &out);
        openssl_verify(&root.cert(), Some(&inter.cert()), &server.cert, "sslserver")
            .assert_success()
            .assert_stdout_contains(": OK");
        // Without the intermediate there is no path to the root.
        let output = openssl_verify(&root.cert(), None, &server.cert, "sslserver");
        assert!(!output.status.success(), "{output}");
    }
}

/// `openssl s_client` makes a full mTLS handshake with ALPN h2 against an
/// agent serving dicectl's certificates: it verifies the agent's chain and
/// name (`Verify return code: 0`), and the agent verifies its certificate
/// (`TLS handshake done` with the client's subject).
#[tokio::test]
async fn openssl_s_client_connects_to_an_agent_serving_dicectl_certificates() {
    let dir = tempdir();
    let root = CaDir::init(&dir.path().join("root"));
    let inter = root.intermediate(&dir.path().join("inter"), "ecdsa-p256");
    let cases = [
        ("root-issued RSA", &root, "rsa2048", None),
        (
            "intermediate-issued",
            &inter,
            "ecdsa-p384",
            Some(inter.cert()),
        ),
    ];
    for (what, ca, key_type, chain) in cases {
        let out = dir.path().join(key_type);
        let server = IssueSpec::server("server")
            .key_type(key_type)
            .issue(ca, &out);
        let client_name = format!("s-client-{key_type}");
        let client = IssueSpec::client(&client_name)
            .key_type(key_type)
            .issue(ca, &out);
        let agent = serve(&server, &root.cert());
        let addr = agent.addr("mtls");

        let output = s_client(
            addr,
            &root.cert(),
            &client.cert,
            &client.key,
            chain.as_deref(),
        );
        assert!(
            output.status.success()
                && output.stdout.contains("Verify return code: 0 (ok)")
                && output.stdout.contains("ALPN protocol: h2"),
            "{what}: openssl s_client did not verify the agent\n{output}"
        );
        await_log(
            &agent,
            "the agent accepting openssl's client certificate",
            |line| {
                line.contains("TLS handshake done") && line.contains(&format!("CN={client_name}"))
            },
        )
        .await;

        // The negative control: a client certificate from another CA is refused by the agent.
        let other = CaDir::init(&dir.path().join(format!("other-{key_type}")));
        s_client(
            addr,
            &root.cert(),
            &other.dir.join("client.pem"),
            &other.dir.join("client-key.pem"),
            None,
        );
        await_log(
            &agent,
            "the agent refusing a client from another CA",
            |line| line.contains("TLS handshake failed"),
        )
        .await;
    }
}
