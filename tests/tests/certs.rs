//! `dicectl certs` end to end: every subcommand through the real binary,
//! every key type issued, served by a real agent and rolled against with
//! dicectl, intermediate chains, renewal under a watching agent with a client
//! rolling throughout, and the agent's expiry warnings and days left.

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use dice_tests::certs_cli::{
    self, CaDir, IssueSpec, Leaf, Rolling, certs, ctl_roll, inspect_pair, os,
};
use dice_tests::client::{Client, handshake};
use dice_tests::rotation::{await_log, await_serial};
use dice_tests::rpc_log::await_rpc_after;
use dice_tests::{Agent, AgentConfig, LeafSpec, ListenerConfig, Pki, run_agent, tempdir};
use serde::Deserialize;

/// The permission bits of `path`.
fn mode(path: &Path) -> u32 {
    let metadata = fs::metadata(path).expect("file exists");
    metadata.permissions().mode() & 0o777
}

/// An agent serving `server` on an mTLS listener named `mtls`, verifying clients against `client_ca`.
fn serve(server: &Leaf, client_ca: &Path) -> Agent {
    certs_cli::serve("certs-node", server, client_ca)
}

// === issue and inspect ===

#[test]
fn issue_writes_the_names_usages_and_a_0600_key() {
    let dir = tempdir();
    let ca = CaDir::init(&dir.path().join("ca"));
    let out = dir.path().join("out");
    let spec = IssueSpec::server("node-1")
        .sans(&[
            "node-1.dice.example",
            "10.0.0.7",
            "spiffe://dice.example/node/1",
        ])
        .key_type("rsa2048")
        .days(90);
    let output = certs(spec.args(&ca, &out));
    output
        .assert_success()
        .assert_stdout_contains(&format!("wrote {}", out.join("node-1-key.pem").display()))
        .assert_stdout_contains(&format!("wrote {}", out.join("node-1.pem").display()))
        .assert_stdout_contains("key RSA 2048");
    assert!(!output.combined().contains("PRIVATE KEY"), "{output}");
    assert_eq!(mode(&out.join("node-1-key.pem")), 0o600);

    let leaf = Leaf::at(&out.join("node-1.pem"), &out.join("node-1-key.pem"));
    assert_eq!(leaf.summary.subject, "CN=node-1");
    assert_eq!(leaf.summary.issuer, "CN=dice fleet dev CA");
    assert_eq!(
        leaf.summary.sans,
        [
            "DNS:node-1.dice.example",
            "IP:10.0.0.7",
            "URI:spiffe://dice.example/node/1"
        ]
    );
    assert_eq!(
        leaf.summary.not_after - leaf.summary.not_before,
        90 * 86_400 + 300
    );
    assert_eq!(leaf.chain_len, 1);

    // Again: refused without --force (exit 2, nothing replaced), then replaced.
    certs(spec.args(&ca, &out))
        .assert_code(2)
        .assert_stderr_contains("node-1-key.pem: already exists (pass --force");
    assert_eq!(Leaf::at(&leaf.cert, &leaf.key).serial(), leaf.serial());
    let mut forced = spec.args(&ca, &out);
    forced.push("--force".into());
    certs(forced).assert_success();
    assert_ne!(Leaf::at(&leaf.cert, &leaf.key).serial(), leaf.serial());
}

#[test]
fn issue_usage_errors_exit_2_and_name_the_flag() {
    let dir = tempdir();
    let ca = CaDir::init(&dir.path().join("ca"));
    let out = dir.path().join("out");
    let base = [
        "issue",
        "--ca-dir",
        ca.dir.to_str().expect("utf-8"),
        "--out",
    ];
    let out_str = out.to_str().expect("utf-8");
    let cases: &[(&[&str], &str)] = &[
        (&[], "--server <NAME>"),
        (&["--server", "a", "--client", "b"], "cannot be used with"),
        (
            &["--client", "a", "--key-type", "dsa"],
            "invalid value 'dsa' for '--key-type",
        ),
        (
            &["--client", "a", "--days", "0"],
            "invalid value '0' for '--days",
        ),
        (
            &["--server", "a", "--san", "not a name"],
            "not an IP address, a DNS name or a URI",
        ),
        (&["--server", "web server"], "pass --san"),
        (&["--client", "../escape"], "not usable as a file name"),
    ];
    for (extra, message) in cases {
        let mut args: Vec<&str> = base.to_vec();
        args.push(out_str);
        args.extend_from_slice(extra);
        certs(args).assert_code(2).assert_stderr_contains(message);
    }
    let missing = dir.path().join("no-ca");
    certs(os(&[
        &"issue",
        &"--ca-dir",
        &missing,
        &"--client",
        &"x",
        &"--out",
        &out,
    ]))
    .assert_code(2)
    .assert_stderr_contains("no-ca/ca.pem: no such file")
    .assert_stderr_contains("pass --ca-dir");
    assert!(!out.exists(), "nothing was written");
}

/// `certs inspect --output json`, read with every key required and no unknown key allowed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InspectDoc {
    schema_version: u32,
    command: String,
    ok: bool,
    files: Vec<InspectFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InspectFile {
    file: String,
    ok: bool,
    certificates: Vec<InspectCert>,
    key: Option<InspectKey>,
    chain: Option<InspectChain>,
    problems: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InspectCert {
    subject: String,
    issuer: String,
    serial: String,
    sans: Vec<String>,
    not_before: String,
    not_after: String,
    days_left: i64,
    key_type: String,
    is_ca: bool,
    path_len: Option<u32>,
    self_signed: bool,
    key_usage: Vec<String>,
    extended_key_usage: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InspectKey {
    file: String,
    matches: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InspectChain {
    ca: String,
    verified: bool,
    usages: Vec<String>,
    error: Option<String>,
}

#[test]
fn inspect_reports_names_validity_key_type_key_match_and_chain() {
    let dir = tempdir();
    let ca = CaDir::init(&dir.path().join("ca"));
    let out = dir.path().join("out");
    let server = IssueSpec::server("node-1")
        .key_type("ecdsa-p384")
        .days(30)
        .issue(&ca, &out);
    let client = IssueSpec::client("ops")
        .key_type("ed25519")
        .issue(&ca, &out);

    let output = certs(os(&[
        &"inspect",
        &server.cert,
        &"--key",
        &server.key,
        &"--ca",
        &ca.cert(),
    ]));
    output
        .assert_success()
        .assert_stdout_contains(&format!("{}: ok", server.cert.display()))
        .assert_stdout_contains("subject      CN=node-1")
        .assert_stdout_contains("issuer       CN=dice fleet dev CA")
        .assert_stdout_contains(&format!("serial       {}", server.serial()))
        .assert_stdout_contains("SANs         DNS:localhost, IP:127.0.0.1")
        .assert_stdout_contains("key type     ECDSA P-384")
        .assert_stdout_contains("ext. usage   serverAuth")
        .assert_stdout_contains("matches certificate 1")
        .assert_stdout_contains("verifies against");
    assert!(!output.stdout.contains("PRIVATE KEY"), "{output}");
    // 30 days from issue: 29 whole days left once a second has passed.
    assert!(
        output.stdout.contains("(30 days left)") || output.stdout.contains("(29 days left)"),
        "{output}"
    );

    // JSON: both files, the second with its own key; `--output` before or after.
    let output = inspect_pair(&server, &client, &ca.cert(), &["--output", "json"]);
    output.assert_success();
    let doc: InspectDoc = serde_json::from_str(&output.stdout)
        .unwrap_or_else(|error| panic!("not the documented JSON: {error}\n{output}"));
    assert_eq!(
        (doc.schema_version, doc.command.as_str(), doc.ok),
        (1, "certs inspect", true)
    );
    assert_eq!(doc.files.len(), 2);
    let [first, second] = [&doc.files[0], &doc.files[1]];
    assert_eq!(first.file, server.cert.display().to_string());
    assert!(first.ok && first.problems.is_empty());
    let leaf = &first.certificates[0];
    assert_eq!(leaf.subject, "CN=node-1");
    assert_eq!(leaf.issuer, "CN=dice fleet dev CA");
    assert_eq!(leaf.serial, server.serial());
    assert_eq!(leaf.sans, ["DNS:localhost", "IP:127.0.0.1"]);
    assert!(leaf.not_before.ends_with('Z') && leaf.not_after.ends_with('Z'));
    assert!((29..=30).contains(&leaf.days_left), "{leaf:?}");
    assert_eq!(leaf.key_type, "ECDSA P-384");
    assert!(!leaf.is_ca && !leaf.self_signed && leaf.path_len.is_none());
    assert_eq!(leaf.key_usage, ["digitalSignature"]);
    assert_eq!(leaf.extended_key_usage, ["serverAuth"]);
    let key = first.key.as_ref().expect("a key check");
    assert_eq!(key.file, server.key.display().to_string());
    assert!(key.matches);
    let chain = first.chain.as_ref().expect("a chain check");
    assert_eq!(chain.ca, ca.cert().display().to_string());
    assert!(chain.verified && chain.error.is_none());
    assert_eq!(chain.usages, ["serverAuth"]);
    assert_eq!(second.certificates[0].key_type, "Ed25519");
    assert_eq!(
        second.chain.as_ref().map(|c| c.usages.clone()),
        Some(vec!["clientAuth".to_owned()])
    );

    // The CA itself: a self-signed root whose path length allows one intermediate.
    let output = certs(os(&[
        &"--output",
        &"json",
        &"inspect",
        &ca.cert(),
        &"--ca",
        &ca.cert(),
    ]));
    output.assert_success();
    let doc: InspectDoc = serde_json::from_str(&output.stdout).expect("JSON");
    let root = &doc.files[0].certificates[0];
    assert!(root.is_ca && root.self_signed);
    assert_eq!(root.path_len, Some(1));
    assert_eq!(
        root.key_usage,
        ["digitalSignature", "keyCertSign", "cRLSign"]
    );
}

#[test]
fn inspect_exits_1_for_expired_mismatched_or_unverifiable_and_2_for_unreadable() {
    let dir = tempdir();
    let ca = CaDir::init(&dir.path().join("ca"));
    let out = dir.path().join("out");
    let server = IssueSpec::server("node-1").issue(&ca, &out);
    let other = CaDir::init(&dir.path().join("other"));
    let pki = Pki::new(&dir.path().join("pki"));
    let expired = pki.issue(&LeafSpec::server("old").expired());

    let cases: Vec<(Vec<OsString>, &str)> = vec![
        (
            os(&[
                &"inspect",
                &server.cert,
                &"--key",
                &other.dir.join("server-key.pem"),
            ]),
            "DOES NOT MATCH certificate 1",
        ),
        (
            os(&[&"inspect", &server.cert, &"--ca", &other.cert()]),
            "DOES NOT VERIFY against",
        ),
        (os(&[&"inspect", &expired.cert]), "expired at"),
    ];
    for (args, needle) in cases {
        let output = certs(args);
        output
            .assert_code(1)
            .assert_stdout_contains("FAILED")
            .assert_stdout_contains(needle);
    }
    // JSON says the same, as data.
    let output = certs(os(&[&"inspect", &expired.cert, &"--output", &"json"]));
    output.assert_code(1);
    let doc: InspectDoc = serde_json::from_str(&output.stdout).expect("JSON");
    assert!(!doc.ok && !doc.files[0].ok);
    assert!(doc.files[0].certificates[0].days_left < 0);
    assert!(doc.files[0].problems[0].contains("expired at"), "{doc:?}");

    let garbage = dir.path().join("garbage.pem");
    fs::write(&garbage, "not a certificate").expect("write");
    let cases: Vec<(Vec<OsString>, &str)> = vec![
        (
            os(&[&"inspect", &dir.path().join("missing.pem")]),
            "missing.pem: no such file",
        ),
        (
            os(&[&"inspect", &garbage]),
            "garbage.pem: no certificate found",
        ),
        (
            os(&[&"inspect", &server.cert, &"--key", &server.cert]),
            "no private key found",
        ),
        (os(&[&"inspect"]), "<FILE>"),
    ];
    for (args, needle) in cases {
        let output = certs(args);
        output.assert_code(2).assert_stderr_contains(needle);
        assert!(output.stdout.is_empty(), "{output}");
    }
}

// === every key type, end to end ===

/// Issues a server and a client certificate of `key_type`, serves the server
/// with a real agent, rolls with dicectl as the client, then renews both and
/// rolls again with the renewed client against the renewed server.
async fn key_type_end_to_end(key_type: &str) {
    let dir = tempdir();
    let ca = CaDir::init(&dir.path().join("ca"));
    let out = dir.path().join("out");
    let server = IssueSpec::server("node")
        .key_type(key_type)
        .issue(&ca, &out);
    let client = IssueSpec::client("ops").key_type(key_type).issue(&ca, &out);
    let agent = serve(&server, &ca.cert());
    let addr = agent.addr("mtls");

    let shook = handshake(addr, &client.client(&ca.cert()))
        .await
        .unwrap_or_else(|error| panic!("{key_type}: handshake: {error}"));
    assert_eq!(shook.server_cert.serial, server.serial());
    ctl_roll(addr, &ca.cert(), &client);

    let inspect = inspect_pair(&server, &client, &ca.cert(), &[]);
    inspect.assert_success();
    let expected = match key_type {
        "ecdsa-p256" => "ECDSA P-256",
        "ecdsa-p384" => "ECDSA P-384",
        "ed25519" => "Ed25519",
        "rsa2048" => "RSA 2048",
        _ => "RSA 4096",
    };
    assert_eq!(
        inspect
            .stdout
            .matches(&format!("key type     {expected}"))
            .count(),
        2,
        "{inspect}"
    );

    let (renewed, _) = server.renew(&ca, &[]);
    assert_ne!(renewed.serial(), server.serial());
    await_serial(addr, &client.client(&ca.cert()), renewed.serial()).await;
    let (client, _) = client.renew(&ca, &[]);
    ctl_roll(addr, &ca.cert(), &client);
}

#[tokio::test]
async fn ecdsa_p256_issue_serve_roll_renew() {
    key_type_end_to_end("ecdsa-p256").await;
}

#[tokio::test]
async fn ecdsa_p384_issue_serve_roll_renew() {
    key_type_end_to_end("ecdsa-p384").await;
}

#[tokio::test]
async fn ed25519_issue_serve_roll_renew() {
    key_type_end_to_end("ed25519").await;
}

#[tokio::test]
async fn rsa2048_issue_serve_roll_renew() {
    key_type_end_to_end("rsa2048").await;
}

#[tokio::test]
async fn rsa4096_issue_serve_roll_renew() {
    key_type_end_to_end("rsa4096").await;
}

// === intermediate chains ===

#[tokio::test]
async fn intermediate_chain_is_served_whole_and_clients_verify_through_it() {
    let dir = tempdir();
    let root = CaDir::init(&dir.path().join("root"));
    let inter = root.intermediate(&dir.path().join("inter"), "ecdsa-p384");
    assert_eq!(Leaf::at(&inter.chain(), &inter.key()).chain_len, 2);
    assert_eq!(mode(&inter.key()), 0o600);

    let out = dir.path().join("out");
    let server = IssueSpec::server("node").issue(&inter, &out);
    let client = IssueSpec::client("ops")
        .key_type("rsa2048")
        .issue(&inter, &out);
    assert_eq!(
        (server.chain_len, client.chain_len),
        (2, 2),
        "leaf + intermediate"
    );
    assert_eq!(server.summary.issuer, "CN=dice fleet intermediate CA");

    // The agent trusts only the root; the client sends its intermediate.
    let agent = serve(&server, &root.cert());
    let addr = agent.addr("mtls");
    let shook = handshake(addr, &client.client(&root.cert()))
        .await
        .expect("a client trusting the root verifies the served chain");
    assert_eq!(shook.chain_len, 2, "the agent serves leaf + intermediate");
    assert_eq!(shook.server_cert.serial, server.serial());
    ctl_roll(addr, &root.cert(), &client);
    // A client issued by the root directly is accepted too.
    let direct = IssueSpec::client("direct").issue(&root, &out);
    ctl_roll(addr, &root.cert(), &direct);

    certs(os(&[
        &"inspect",
        &server.cert,
        &"--key",
        &server.key,
        &"--ca",
        &root.cert(),
    ]))
    .assert_success()
    .assert_stdout_contains("certificate 2 of 2: CA, path length 0")
    .assert_stdout_contains("verifies against");
    certs(os(&[&"inspect", &inter.cert(), &"--ca", &root.cert()]))
        .assert_success()
        .assert_stdout_contains("(CA)");
    // Path length 0: no CA below the intermediate.
    certs(os(&[
        &"intermediate",
        &"--ca-dir",
        &inter.dir,
        &"--out",
        &dir.path().join("deeper"),
    ]))
    .assert_code(2)
    .assert_stderr_contains("has path length 0");

    // Renewing from the intermediate keeps the chain whole.
    let (renewed, _) = server.renew(&inter, &[]);
    assert_eq!(renewed.chain_len, 2);
    let shook = await_serial(addr, &client.client(&root.cert()), renewed.serial()).await;
    assert_eq!(shook.chain_len, 2);
}

// === renew under a watching agent ===

#[tokio::test]
async fn renew_under_a_watching_agent_rotates_without_failing_an_rpc() {
    let dir = tempdir();
    let ca = CaDir::init(&dir.path().join("ca"));
    let live = dir.path().join("live");
    let server = IssueSpec::server("node").days(10).issue(&ca, &live);
    let client = IssueSpec::client("ops").issue(&ca, &dir.path().join("client"));
    let agent = serve(&server, &ca.cert());
    let addr = agent.addr("mtls");
    let tls = client.client(&ca.cert());
    let info = Client::mtls(addr, &tls).await.expect("an info client");
    let rolling = Rolling::start(addr, tls.clone()).await;

    let mut current = server.clone();
    for round in 1..=3 {
        let old_key = fs::read(&current.key).expect("read the key");
        let (renewed, output) = current.renew(&ca, &["--days", "20"]);
        output.assert_stdout_contains(&format!(
            "renewed serial {} -> {}",
            current.serial(),
            renewed.serial()
        ));
        assert!(!output.combined().contains("PRIVATE KEY"), "{output}");
        assert_eq!(renewed.summary.subject, server.summary.subject);
        assert_eq!(renewed.summary.sans, server.summary.sans);
        assert_ne!(
            fs::read(&renewed.key).expect("read the key"),
            old_key,
            "round {round}: a new key"
        );
        assert_eq!(mode(&renewed.key), 0o600);

        await_serial(addr, &tls, renewed.serial()).await;
        let line = await_log(&agent, "the reload of the renewed certificate", |line| {
            line.contains("certificate reloaded") && line.contains(renewed.serial())
        })
        .await;
        assert!(line.contains(current.serial()), "{line}");
        let served = info.info().await.expect("agent info");
        let cert = &served.certificates["mtls"];
        assert_eq!(cert.serial, renewed.serial());
        assert!((19..=20).contains(&cert.days_left), "{cert:?}");
        current = renewed;
    }

    let tally = rolling.finish().await;
    assert!(
        tally.failed.is_empty(),
        "RPCs failed during renewal: {tally:?}"
    );
    assert!(tally.fresh_ok > 0 && tally.kept_ok > 0, "{tally:?}");
    let leftovers: Vec<_> = fs::read_dir(&live)
        .expect("list")
        .filter_map(Result::ok)
        .map(|entry| entry.file_name())
        .collect();
    assert_eq!(
        leftovers.len(),
        2,
        "only the key and the certificate: {leftovers:?}"
    );
}

#[test]
fn renew_refuses_a_key_or_ca_that_does_not_belong() {
    let dir = tempdir();
    let ca = CaDir::init(&dir.path().join("ca"));
    let other = CaDir::init(&dir.path().join("other"));
    let out = dir.path().join("out");
    let server = IssueSpec::server("node").issue(&ca, &out);
    let before = fs::read(&server.cert).expect("read");
    let cases: Vec<(Vec<OsString>, &str)> = vec![
        (
            os(&[
                &"renew",
                &"--ca-dir",
                &other.dir,
                &"--cert",
                &server.cert,
                &"--key",
                &server.key,
            ]),
            "not by the CA in",
        ),
        (
            os(&[
                &"renew",
                &"--ca-dir",
                &ca.dir,
                &"--cert",
                &server.cert,
                &"--key",
                &ca.dir.join("client-key.pem"),
            ]),
            "does not match the certificate in",
        ),
        (
            os(&[
                &"renew",
                &"--ca-dir",
                &ca.dir,
                &"--cert",
                &ca.cert(),
                &"--key",
                &ca.key(),
            ]),
            "is a CA certificate",
        ),
    ];
    for (args, needle) in cases {
        certs(args).assert_code(2).assert_stderr_contains(needle);
    }
    assert_eq!(
        fs::read(&server.cert).expect("read"),
        before,
        "nothing was replaced"
    );
}

// === the agent's expiry warnings ===

/// The agent's config for `server`, with `[tls] expiry_warning = THRESHOLD` when given.
fn expiry_config(server: &Leaf, ca: &CaDir, threshold: Option<&str>) -> String {
    let toml = AgentConfig::new("expiry-node")
        .tls(server.tls_files(&ca.cert()))
        .listener(ListenerConfig::mtls("mtls"))
        .to_toml();
    match threshold {
        Some(threshold) => toml.replacen(
            "[tls]\n",
            &format!("[tls]\nexpiry_warning = \"{threshold}\"\n"),
            1,
        ),
        None => toml,
    }
}

#[tokio::test]
async fn agent_warns_about_a_certificate_near_expiry_and_reports_days_left() {
    let dir = tempdir();
    let ca = CaDir::init(&dir.path().join("ca"));
    let live = dir.path().join("live");
    let server = IssueSpec::server("node").days(5).issue(&ca, &live);
    let client = IssueSpec::client("ops").issue(&ca, &dir.path().join("client"));
    let tls = client.client(&ca.cert());

    // Default threshold (14 days): warned at start, with what to do.
    let toml = expiry_config(&server, &ca, None);
    let agent = Agent::spawn_toml(&toml, &[]);
    let addr = agent.addr("mtls");
    let line = await_log(&agent, "an expiry warning at start", |line| {
        line.contains("WARN") && line.contains(server.serial()) && line.contains("expires in")
    })
    .await;
    // 5 days from issue: 4 whole days left once a second has passed, else 5.
    assert!(
        line.contains("expires in 4 days") || line.contains("expires in 5 days"),
        "{line}"
    );
    for needle in [
        "tls.expiry_warning = 14d",
        "dicectl certs renew",
        &server.cert.display().to_string(),
    ] {
        assert!(line.contains(needle), "{needle:?} not in {line}");
    }
    let info = Client::mtls(addr, &tls).await.expect("info client");
    let days_left = |info: dice_proto::info::AgentInfo| info.certificates["mtls"].days_left;
    assert!((4..=5).contains(&days_left(info.info().await.expect("info"))));

    // --check shows it too.
    let checked = run_agent([
        OsString::from("--config"),
        agent.config_path().into(),
        "--check".into(),
    ]);
    checked
        .assert_success()
        .assert_stdout_contains("warning: ")
        .assert_stdout_contains("expires in ");

    // Renewed for 30 days: no warning for the new serial; then for 3 days: warned on reload.
    let (renewed, _) = server.renew(&ca, &["--days", "30"]);
    await_serial(addr, &tls, renewed.serial()).await;
    assert!((29..=30).contains(&days_left(info.info().await.expect("info"))));
    let (short, _) = renewed.renew(&ca, &["--days", "3"]);
    await_serial(addr, &tls, short.serial()).await;
    await_log(&agent, "an expiry warning on reload", |line| {
        line.contains("WARN")
            && line.contains(short.serial())
            && (line.contains("expires in 2 days") || line.contains("expires in 3 days"))
    })
    .await;
    assert!(
        !agent.logs().lines().any(|l| l.contains("WARN")
            && l.contains(renewed.serial())
            && l.contains("expires in")),
        "the 30-day certificate was warned about\n{}",
        agent.logs()
    );
    drop(agent);

    // A threshold below the days left: no warning; "0s" turns it off.
    for threshold in ["1d", "0s"] {
        let agent = Agent::spawn_toml(&expiry_config(&short, &ca, Some(threshold)), &[]);
        let info = Client::mtls(agent.addr("mtls"), &tls)
            .await
            .expect("info client");
        assert!((2..=3).contains(&days_left(info.info().await.expect("info"))));
        // The info call's line comes after any startup warning.
        let logged = await_rpc_after(&agent, 0, "/dice.agent.v1.AgentInfoService/GetInfo");
        assert!(
            !logged.iter().any(|line| line.contains("expires in")),
            "expiry_warning = {threshold}: warned anyway\n{}",
            agent.logs()
        );
    }
}
