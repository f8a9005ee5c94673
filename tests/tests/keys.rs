//! Every key form operators have: PKCS#1 (RSA), SEC1 (EC) and PKCS#8 (any).
//! Each server key is loaded by the agent and must serve a roll; the served
//! certificate must be the one issued for that key.
//!
//! Key files readable by group or others are a warning naming the file (an
//! error with `tls.strict_permissions`), and no key material ever reaches a
//! log line, `--check` output or `Debug` output.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use dice_tests::client::{handshake, roll_once};
use dice_tests::process::check_config;
use dice_tests::rotation::{LiveTls, Replace, await_log, await_warning, read, replace};
use dice_tests::secrets::KeyTraces;
use dice_tests::{
    Agent, AgentConfig, KeyFormat, KeyKind, LeafSpec, ListenerConfig, RunOutput, fresh_pki,
    run_agent,
};

async fn serves_with_server_key(kind: KeyKind, format: KeyFormat) {
    let (_dir, pki) = fresh_pki();
    let server = pki.issue(&LeafSpec::server("keyed-server").key(kind).format(format));
    let key_text = fs::read_to_string(&server.key).expect("read the key file");
    assert!(
        key_text.starts_with(format.pem_label()),
        "the harness wrote a {kind:?} key that is not {format:?}:\n{key_text}"
    );

    let config = AgentConfig::new("keys-node")
        .tls(pki.tls_files_for(&server))
        .listener(ListenerConfig::mtls("mtls"));
    let agent = Agent::spawn(&config);
    let addr = agent.addr("mtls");

    let shook = handshake(addr, &pki.client_tls())
        .await
        .unwrap_or_else(|error| panic!("handshake with a {kind:?} {format:?} server key: {error}"));
    assert_eq!(shook.server_cert.serial, server.serial());
    let value = roll_once(addr, &pki.client_tls())
        .await
        .unwrap_or_else(|error| panic!("roll with a {kind:?} {format:?} server key: {error}"));
    assert!((1..=6).contains(&value));
}

#[tokio::test]
async fn rsa_2048_pkcs1_key_serves() {
    serves_with_server_key(KeyKind::Rsa2048, KeyFormat::Pkcs1).await;
}

#[tokio::test]
async fn rsa_2048_pkcs8_key_serves() {
    serves_with_server_key(KeyKind::Rsa2048, KeyFormat::Pkcs8).await;
}

#[tokio::test]
async fn p256_sec1_key_serves() {
    serves_with_server_key(KeyKind::EcdsaP256, KeyFormat::Sec1).await;
}

#[tokio::test]
async fn p256_pkcs8_key_serves() {
    serves_with_server_key(KeyKind::EcdsaP256, KeyFormat::Pkcs8).await;
}

#[tokio::test]
async fn p384_pkcs8_key_serves() {
    serves_with_server_key(KeyKind::EcdsaP384, KeyFormat::Pkcs8).await;
}

#[tokio::test]
async fn ed25519_pkcs8_key_serves() {
    serves_with_server_key(KeyKind::Ed25519, KeyFormat::Pkcs8).await;
}

#[tokio::test]
async fn rsa_client_certificate_is_accepted() {
    let (_dir, pki) = fresh_pki();
    let client = pki.issue(
        &LeafSpec::client("rsa-client")
            .key(KeyKind::Rsa2048)
            .format(KeyFormat::Pkcs1),
    );
    let agent = Agent::spawn(&AgentConfig::standard(&pki));

    let value = roll_once(agent.addr("mtls"), &pki.client_tls_as(&client))
        .await
        .expect("roll with an RSA client certificate");
    assert!((1..=6).contains(&value));
}

#[tokio::test]
async fn per_listener_tls_override_serves_its_own_certificate() {
    let (_dir, pki) = fresh_pki();
    let other = pki.issue(&LeafSpec::server("override-server").key(KeyKind::EcdsaP384));
    let config = AgentConfig::new("override-node")
        .tls(pki.server_tls())
        .listener(ListenerConfig::mtls("default"))
        .listener(ListenerConfig::mtls("override").tls(pki.tls_files_for(&other)));
    let agent = Agent::spawn(&config);

    let default = handshake(agent.addr("default"), &pki.client_tls())
        .await
        .expect("handshake on the default listener");
    assert_eq!(default.server_cert.serial, pki.server().serial());
    let overridden = handshake(agent.addr("override"), &pki.client_tls())
        .await
        .expect("handshake on the override listener");
    assert_eq!(overridden.server_cert.serial, other.serial());
}

// === Key file permissions, and key material never in logs or Debug output ===

/// Sets `path`'s permission bits.
fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|error| panic!("chmod {mode:o} {}: {error}", path.display()));
}

fn check(config: &AgentConfig, dir: &Path) -> RunOutput {
    let path = dir.join("check.toml");
    config.write(&path);
    check_config(&path)
}

#[tokio::test]
async fn a_key_readable_by_others_is_a_warning_at_start_naming_the_file() {
    let (dir, pki) = fresh_pki();
    let key = &pki.server().key;
    chmod(key, 0o644);
    let config = AgentConfig::standard(&pki);

    let checked = check(&config, dir.path());
    checked.assert_success();
    assert!(
        checked.stdout.lines().any(|line| line.contains("warning:")
            && line.contains(&key.display().to_string())
            && line.contains("readable by group or others (mode 644)")),
        "--check should warn about the key's mode\n{checked}"
    );

    let agent = Agent::spawn(&config);
    await_warning(&agent, "readable by group or others", key, "tls.key").await;
    roll_once(agent.addr("mtls"), &pki.client_tls())
        .await
        .expect("a warning does not stop the agent serving");
}

#[test]
fn strict_permissions_makes_a_readable_key_an_error() {
    let (dir, pki) = fresh_pki();
    let key = pki.server().key.display().to_string();
    let config = AgentConfig::standard(&pki).strict_permissions();
    check(&config, dir.path()).assert_success();

    for mode in [0o640, 0o604, 0o644] {
        chmod(&pki.server().key, mode);
        let output = check(&config, dir.path());
        output
            .assert_code(2)
            .assert_stderr_contains(&key)
            .assert_stderr_contains("tls.key")
            .assert_stderr_contains(&format!("readable by group or others (mode {mode:03o})"))
            .assert_stderr_contains("chmod 600");
    }
    // Not only --check: the agent itself refuses to start.
    let path = dir.path().join("node.toml");
    config.write(&path);
    run_agent([Path::new("--config"), &path])
        .assert_code(2)
        .assert_stderr_contains(&key);
}

#[tokio::test]
async fn strict_permissions_rejects_a_chmod_on_reload() {
    let (_dir, pki) = fresh_pki();
    let agent = Agent::spawn(&AgentConfig::standard(&pki).strict_permissions());
    chmod(&pki.server().key, 0o640);
    let line = await_log(&agent, "the rejected reload", |line| {
        line.contains("certificate reload rejected") && line.contains("readable by group")
    })
    .await;
    assert!(line.contains("tls.key"), "{line}");
    roll_once(agent.addr("mtls"), &pki.client_tls())
        .await
        .expect("the previous material keeps serving");
}

#[tokio::test]
async fn no_key_material_reaches_the_logs_or_check_output() {
    let (dir, pki) = fresh_pki();
    let live = LiveTls::install(&dir.path().join("live"), pki.server(), &[pki.ca_cert()]);
    let next = pki.issue(&LeafSpec::server("next"));
    let mismatched = pki.issue(&LeafSpec::server("mismatched"));
    let mut traces = vec![
        KeyTraces::of(&pki.server().key, &pki.server().cert),
        KeyTraces::of(&next.key, &next.cert),
        KeyTraces::of(&mismatched.key, &mismatched.cert),
        KeyTraces::of(&pki.client().key, &pki.client().cert),
        KeyTraces::of(pki.ca_key(), pki.ca_cert()),
    ];
    let config = AgentConfig::new("secret-node")
        .tls(live.tls_files())
        .listener(ListenerConfig::mtls("mtls"))
        .log_level("debug");
    let agent = Agent::spawn(&config);
    roll_once(agent.addr("mtls"), &pki.client_tls())
        .await
        .expect("roll");

    // A reload, then broken keys the agent reads, rejects and reports on.
    live.rotate(&next, Replace::Rename);
    await_log(&agent, "the reload", |line| {
        line.contains("certificate reloaded")
    })
    .await;
    let next_pem = read(&next.key);
    let text = String::from_utf8_lossy(&next_pem).into_owned();
    let broken: Vec<(&str, Vec<u8>)> = vec![
        ("a key that does not match", read(&mismatched.key)),
        ("a key cut in half", next_pem[..next_pem.len() / 2].to_vec()),
        (
            "a key without its END line",
            text.lines()
                .filter(|line| !line.starts_with("-----END"))
                .collect::<Vec<_>>()
                .join("\n")
                .into_bytes(),
        ),
        (
            "a key with a bad base64 character",
            text.replacen('A', "!", 1).into_bytes(),
        ),
        (
            "a key under a certificate label",
            text.replace("PRIVATE KEY", "CERTIFICATE").into_bytes(),
        ),
    ];
    for (what, bytes) in &broken {
        replace(&live.key, bytes, Replace::Rename);
        await_log(&agent, what, |line| {
            line.contains("certificate reload rejected")
                && line.contains(&live.key.display().to_string())
        })
        .await;
        let checked = check(&config, dir.path());
        checked.assert_code(2);
        for trace in &traces {
            trace.assert_absent(&checked.combined(), &format!("--check output for {what}"));
        }
        // Restore, so the next broken key is a change again.
        live.write_key(&next, Replace::Rename);
        await_log(&agent, "the files agreeing again", |line| {
            line.contains("agree with the served material again")
        })
        .await;
    }
    let checked = check(&config, dir.path());
    checked.assert_success();
    traces.push(KeyTraces::of(&live.key, &live.cert));
    for trace in &traces {
        trace.assert_absent(&checked.combined(), "--check output");
        trace.assert_absent(&agent.logs(), "the agent's log at debug level");
    }
    assert!(
        agent.logs().lines().count() > 20,
        "the log should hold the lines searched\n{}",
        agent.dump()
    );
}

#[test]
fn no_key_material_in_debug_output() {
    let (dir, pki) = fresh_pki();
    let path = dir.path().join("node.toml");
    fs::write(&path, AgentConfig::standard(&pki).to_toml()).expect("write the config");
    let config = dice_agent::config::load(&path).expect("a valid config");
    let profiles = dice_agent::load_profiles(&config).expect("loadable material");
    let trace = KeyTraces::of(&pki.server().key, &pki.server().cert);
    trace.assert_absent(&format!("{config:?} {config:#?}"), "the config's Debug");
    for (files, profile) in &profiles {
        let material = profile.material();
        let bytes = dice_agent::tls::TlsBytes::read(files).expect("read the files");
        let shown =
            format!("{profile:?} {profile:#?} {material:?} {material:#?} {bytes:?} {bytes:#?}");
        trace.assert_absent(&shown, "TlsProfile, TlsMaterial and TlsBytes Debug");
    }
}
