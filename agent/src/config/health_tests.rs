//! `mode = "health"` listeners: the simple shape parses on any address, and
//! the keys that make no sense on a plaintext health port are errors that
//! name their line and key.

use super::*;

fn parse_str(source: &str) -> Result<Config, ConfigErrors> {
    parse(Path::new("/etc/dice/node.toml"), source)
}

const NODE: &str = "[node]\nname = \"a\"\n";

#[test]
fn a_health_listener_parses_on_a_public_address_without_allow_public() {
    let source = format!(
        "{NODE}[[listeners]]\nname = \"health\"\nmode = \"health\"\naddress = \"0.0.0.0:9090\"\n"
    );
    let config = parse_str(&source).expect("a public health listener");
    let listener = &config.listeners[0];
    assert_eq!(listener.mode, Mode::Health);
    assert_eq!(listener.mode.as_str(), "health");
    assert_eq!(listener.address, "0.0.0.0:9090".parse().expect("address"));
    assert!(!listener.trusted_proxy);
    assert!(listener.allow.allows_any());
}

#[test]
fn allow_public_and_rpc_rate_are_accepted_on_a_health_listener() {
    let source = format!(
        "{NODE}[[listeners]]\nmode = \"health\"\naddress = \"[::]:0\"\nallow_public = true\nlimits = {{ rpc_rate = \"20/s\" }}\n"
    );
    let config = parse_str(&source).expect("allow_public and rpc_rate");
    assert_eq!(config.listeners[0].mode, Mode::Health);
    assert!(config.listeners[0].rate_limits.rpc_rate.is_some());
}

#[test]
fn keys_a_health_listener_cannot_use_are_errors_with_line_and_key() {
    let cases: &[(&str, &str)] = &[
        (
            "tls = { cert = \"server.pem\" }\n",
            "/etc/dice/node.toml line 6: listeners[0].tls: does not apply to a health listener: a health listener serves only grpc.health.v1.Health, in plaintext, to any client (remove the tls table",
        ),
        (
            "tls = {}\n",
            "line 4: listeners[0].tls: does not apply to a health listener",
        ),
        (
            "allow = [\"dicectl\"]\n",
            "line 6: listeners[0].allow: does not apply to a health listener",
        ),
        (
            "trusted_proxy = true\n",
            "line 6: listeners[0].trusted_proxy: does not apply to a health listener",
        ),
        (
            "limits = { handshake_rate_per_ip = \"5/s\" }\n",
            "line 6: listeners[0].limits.handshake_rate_per_ip: applies to mtls listeners only: a health listener does no TLS handshakes",
        ),
    ];
    for (keys, expected) in cases {
        let source =
            format!("{NODE}[[listeners]]\nmode = \"health\"\naddress = \"127.0.0.1:0\"\n{keys}");
        let errors = parse_str(&source).expect_err(keys).to_string();
        assert!(
            errors.contains(expected),
            "expected {expected:?} in {errors:?}"
        );
    }
}

#[test]
fn an_unknown_mode_names_health_among_the_choices() {
    let source = format!("{NODE}[[listeners]]\nmode = \"probe\"\naddress = \"127.0.0.1:0\"\n");
    let errors = parse_str(&source).expect_err("unknown mode").to_string();
    assert!(
        errors.contains("unknown mode \"probe\" (use \"mtls\", \"h2c\" or \"health\")"),
        "{errors}"
    );
}

#[test]
fn a_health_listener_does_not_count_as_mtls_for_the_admin_api() {
    let source = format!(
        "{NODE}[[listeners]]\nmode = \"health\"\naddress = \"127.0.0.1:0\"\n[admin]\nallow = [\"dicectl\"]\n"
    );
    let errors = parse_str(&source)
        .expect_err("no mtls listener")
        .to_string();
    assert!(
        errors.contains("admin RPCs are served on mtls listeners only"),
        "{errors}"
    );
}

#[test]
fn a_public_h2c_listener_error_points_at_the_health_mode() {
    let source = format!("{NODE}[[listeners]]\nmode = \"h2c\"\naddress = \"0.0.0.0:9090\"\n");
    let errors = parse_str(&source).expect_err("public h2c").to_string();
    assert!(
        errors.contains("line 5: listeners[0].address: h2c listener on non-loopback address")
            && errors.contains("a mode = \"health\" listener may bind any address"),
        "{errors}"
    );
}
