//! The config's rate limit keys: parsed, merged per listener, and rejected
//! with the key named when malformed.

use std::path::Path;

use crate::config::{Config, ConfigErrors, parse};

fn parse_str(source: &str) -> Result<Config, ConfigErrors> {
    parse(Path::new("/etc/dice/node.toml"), source)
}

#[test]
fn rate_limits_merge_per_listener() {
    let config = parse_str(
        r#"
[node]
name = "n"
[limits]
rpc_rate = "50/s"
handshake_rate_per_ip = "20/s"
[[listeners]]
name = "a"
address = "127.0.0.1:0"
mode = "h2c"
[[listeners]]
name = "b"
address = "127.0.0.1:0"
mode = "h2c"
limits = { rpc_rate = "3000/m", rpc_burst = 5 }
"#,
    )
    .expect("valid");
    let a = config.listeners[0].rate_limits;
    assert_eq!(a.rpc_rate.map(|r| r.to_string()).as_deref(), Some("50/s"));
    assert_eq!(a.rpc_burst(), 50);
    let b = config.listeners[1].rate_limits;
    assert_eq!(b.rpc_rate.map(|r| r.to_string()).as_deref(), Some("3000/m"));
    assert_eq!(b.rpc_burst(), 5);
    assert!(b.handshake_rate_per_ip.is_some());
}

#[test]
fn bad_rates_name_the_key() {
    let cases = [
        (
            "[limits]\nrpc_rate = \"50\"",
            "limits.rpc_rate: not a rate: \"50\"",
        ),
        ("[limits]\nrpc_rate = \"0/s\"", "limits.rpc_rate"),
        ("[limits]\nrpc_rate = \"5/d\"", "unknown unit \"d\""),
        (
            "[limits]\nrpc_burst = 0",
            "limits.rpc_burst: must be a positive number",
        ),
        (
            "[limits]\nhandshake_rate_per_ip = \"fast\"",
            "limits.handshake_rate_per_ip: not a rate",
        ),
    ];
    for (limits, expected) in cases {
        let text = format!(
            "[node]\nname = \"n\"\n[[listeners]]\naddress = \"127.0.0.1:0\"\nmode = \"h2c\"\n{limits}\n"
        );
        let errors = parse_str(&text).expect_err(limits).to_string();
        assert!(errors.contains(expected), "{limits}: {errors}");
    }
    let text = "[node]\nname = \"n\"\n[[listeners]]\naddress = \"127.0.0.1:0\"\nmode = \"h2c\"\nlimits = { handshake_rate_per_ip = \"5/s\" }\n";
    let errors = parse_str(text).expect_err("h2c handshake rate").to_string();
    assert!(
        errors
            .contains("listeners[0].limits.handshake_rate_per_ip: applies to mtls listeners only"),
        "{errors}"
    );
    let text = "[node]\nname = \"n\"\n[[listeners]]\naddress = \"127.0.0.1:0\"\nmode = \"h2c\"\nlimits = { rpc_rate = \"x\" }\n";
    let errors = parse_str(text).expect_err("listener rate").to_string();
    assert!(
        errors.contains("listeners[0].limits.rpc_rate: not a rate"),
        "{errors}"
    );
}
