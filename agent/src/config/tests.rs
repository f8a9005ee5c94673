use super::*;

const VALID: &str = r#"
[node]
name = "node-1"

[tls]
cert = "server.pem"
key = "server-key.pem"
client_ca = "ca.pem"

[[listeners]]
name = "public"
address = "127.0.0.1:8443"
mode = "mtls"

[[listeners]]
address = "127.0.0.1:0"
mode = "h2c"

[[listeners]]
address = "127.0.0.1:9443"
mode = "mtls"
tls = { cert = "/etc/other.pem" }
"#;

fn parse_str(source: &str) -> Result<Config, ConfigErrors> {
    parse(Path::new("/etc/dice/node.toml"), source)
}

#[test]
fn valid_config_resolves_paths_and_defaults() {
    let config = parse_str(VALID).expect("valid config");
    assert_eq!(config.node_name, "node-1");
    assert_eq!(config.listeners.len(), 3);
    assert_eq!(config.listeners[0].name, "public");
    assert_eq!(config.listeners[1].name, "1");
    assert_eq!(config.listeners[1].mode, Mode::H2c);
    let Mode::Mtls(tls) = &config.listeners[0].mode else {
        panic!("listener 0 is mtls");
    };
    assert_eq!(tls.cert.path, Path::new("/etc/dice/server.pem"));
    assert_eq!((tls.cert.key.as_str(), tls.cert.line), ("tls.cert", 6));
    let Mode::Mtls(tls) = &config.listeners[2].mode else {
        panic!("listener 2 is mtls");
    };
    assert_eq!(tls.cert.path, Path::new("/etc/other.pem"));
    assert_eq!(tls.cert.key, "listeners[2].tls.cert");
    assert_eq!(tls.key.path, Path::new("/etc/dice/server-key.pem"));
    assert_eq!(config.limits.handshake_timeout, DEFAULT_HANDSHAKE_TIMEOUT);
    assert_eq!(config.grace_period, DEFAULT_GRACE_PERIOD);
    assert_eq!(config.log.format, LogFormat::Text);
}

#[test]
fn invalid_configs_name_line_and_key() {
    let cases: &[(&str, &str)] = &[
        (
            "[node]\nname = \"a\"\nbogus = 1\n",
            "/etc/dice/node.toml line 3: node.bogus: unknown field `bogus`",
        ),
        (
            "[node]\nname = \"a\"\n[[listeners]]\naddress = \"nowhere\"\nmode = \"h2c\"\n",
            "line 4: listeners[0].address: not an IP:PORT address",
        ),
        (
            "[node]\nname = \"a\"\n[[listeners]]\naddress = \"0.0.0.0:1\"\nmode = \"h2c\"\n",
            "line 4: listeners[0].address: h2c listener on non-loopback address",
        ),
        (
            "[node]\nname = \"a\"\n[[listeners]]\naddress = \"127.0.0.1:1\"\nmode = \"mtls\"\n",
            "line 5: listeners[0]: mtls listener has no tls.cert",
        ),
        (
            "[node]\nname = \"a\"\n[[listeners]]\naddress = \"127.0.0.1:1\"\nmode = \"h2c\"\n[shutdown]\ngrace_period = \"soon\"\n",
            "line 7: shutdown.grace_period: not a duration",
        ),
        (
            "[node]\nname = \"a\"\n[[listeners]]\naddress = \"127.0.0.1:1\"\nmode = \"h2c\"\n[log]\nformat = \"xml\"\n",
            "line 7: log.format: unknown log format \"xml\"",
        ),
        (
            "[node]\nname = \"a\"\n",
            "listeners: no listener configured",
        ),
        ("[node\n", "line 1"),
    ];
    for (source, expected) in cases {
        let errors = parse_str(source).expect_err(source).to_string();
        assert!(
            errors.contains(expected),
            "expected {expected:?} in {errors:?}"
        );
    }
}

#[test]
fn h2c_may_be_public_when_allowed() {
    let source = "[node]\nname = \"a\"\n[[listeners]]\naddress = \"0.0.0.0:0\"\nmode = \"h2c\"\nallow_public = true\n";
    assert!(parse_str(source).is_ok());
}

#[test]
fn every_error_is_reported_at_once() {
    let source = "[node]\nname = \"\"\n[[listeners]]\naddress = \"x\"\nmode = \"tcp\"\n";
    let errors = parse_str(source).expect_err("three errors");
    assert_eq!(errors.0.len(), 3, "{errors}");
}

fn expiry_warning_of(config: &Config) -> Option<Duration> {
    let Mode::Mtls(files) = &config.listeners[0].mode else {
        panic!("listener 0 is mtls");
    };
    files.expiry_warning
}

#[test]
fn expiry_warning_defaults_to_14_days_and_applies_to_every_listener() {
    let config = parse_str(VALID).expect("valid config");
    assert_eq!(expiry_warning_of(&config), Some(DEFAULT_EXPIRY_WARNING));
    assert_eq!(DEFAULT_EXPIRY_WARNING, Duration::from_secs(14 * 86_400));

    let set = VALID.replace("[tls]\n", "[tls]\nexpiry_warning = \"30d\"\n");
    let config = parse_str(&set).expect("valid config");
    for listener in &config.listeners {
        if let Mode::Mtls(files) = &listener.mode {
            assert_eq!(files.expiry_warning, Some(Duration::from_secs(30 * 86_400)));
        }
    }

    let off = VALID.replace("[tls]\n", "[tls]\nexpiry_warning = \"0s\"\n");
    assert_eq!(expiry_warning_of(&parse_str(&off).expect("valid")), None);
}

#[test]
fn expiry_warning_errors_name_the_key_and_line() {
    let bad = VALID.replace("[tls]\n", "[tls]\nexpiry_warning = \"soon\"\n");
    let errors = parse_str(&bad).expect_err("not a duration").to_string();
    assert!(
        errors.contains("line 6: tls.expiry_warning: not a duration: \"soon\""),
        "{errors}"
    );
    assert_eq!(errors.matches("expiry_warning").count(), 1, "{errors}");

    let per_listener = VALID.replace(
        "tls = { cert = \"/etc/other.pem\" }",
        "tls = { cert = \"/etc/other.pem\", expiry_warning = \"1d\" }",
    );
    let errors = parse_str(&per_listener)
        .expect_err("a listener cannot set it")
        .to_string();
    assert!(
        errors.contains("listeners[2].tls.expiry_warning: applies to the whole agent"),
        "{errors}"
    );
}

#[test]
fn admin_table_names_who_may_call_the_admin_api() {
    let config = parse_str(VALID).expect("valid config");
    assert_eq!(config.admin, None);
    let with = format!("{VALID}\n[admin]\nallow = [\"dicectl\", \"ops-*\"]\n");
    let admin = parse_str(&with)
        .expect("valid config")
        .admin
        .expect("admin");
    assert_eq!(admin.allow.patterns(), ["dicectl", "ops-*"]);
}

#[test]
fn admin_table_errors_name_the_key_and_line() {
    let cases: &[(&str, &str)] = &[
        ("[admin]\n", "line 24: admin.allow: missing"),
        ("[admin]\nallow = []\n", "line 25: admin.allow: is empty"),
        (
            "[admin]\nallow = [\"dicectl\", \" \"]\n",
            "line 25: admin.allow: empty pattern \" \"",
        ),
        ("[admin]\nallow = 1\n", "admin.allow"),
        (
            "[admin]\nallow = [\"a\"]\nother = 1\n",
            "unknown field `other`",
        ),
    ];
    for (table, expected) in cases {
        let source = format!("{VALID}\n{table}");
        let errors = parse_str(&source).expect_err(table).to_string();
        assert!(
            errors.contains(expected),
            "expected {expected:?} in {errors:?}"
        );
    }
    let h2c_only = "[node]\nname = \"a\"\n[[listeners]]\naddress = \"127.0.0.1:1\"\nmode = \"h2c\"\n[admin]\nallow = [\"dicectl\"]\n";
    let errors = parse_str(h2c_only)
        .expect_err("no mtls listener")
        .to_string();
    assert!(
        errors.contains("admin: admin RPCs are served on mtls listeners only"),
        "{errors}"
    );
}
