//! `dice-agent --check`: loads the config and every certificate file and
//! summarizes what the agent would serve.

use std::fmt::Write;

use dice_proto::cert::rfc3339;

use crate::config::{Config, Mode};
use crate::tls::TlsError;

/// Renders the summary of a config whose certificate material all loaded, or every error.
pub fn check(config: &Config) -> Result<String, Vec<TlsError>> {
    let profiles = crate::load_profiles(config)?;
    let now = crate::unix_now();
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(out, "config {}: ok", config.file.display());
    let _ = writeln!(out, "node {}", config.node_name);
    for listener in &config.listeners {
        let _ = writeln!(
            out,
            "listener {} {} {}",
            listener.name,
            listener.mode.as_str(),
            listener.address
        );
        let Mode::Mtls(files) = &listener.mode else {
            if listener.mode == Mode::Health {
                let _ = writeln!(
                    out,
                    "  serves grpc.health.v1.Health only, in plaintext; NOT_SERVING while draining or while a certificate is unusable"
                );
            }
            if listener.trusted_proxy {
                let _ = writeln!(
                    out,
                    "  trusted_proxy: logs the proxy's x-client-subject header as the client"
                );
            }
            continue;
        };
        if listener.allow.allows_any() {
            let _ = writeln!(out, "  allow any verified client (no allow list)");
        } else {
            let _ = writeln!(out, "  allow {}", listener.allow.patterns().join(", "));
        }
        let Some(profile) = profiles.get(files) else {
            continue;
        };
        let material = profile.material();
        let leaf = &material.leaf;
        let _ = writeln!(out, "  cert {}", files.cert.path.display());
        let _ = writeln!(out, "    subject {}", leaf.subject);
        let _ = writeln!(out, "    sans {}", leaf.sans.join(", "));
        let _ = writeln!(out, "    serial {}", leaf.serial);
        let _ = writeln!(
            out,
            "    not_after {} ({} days left)",
            rfc3339(leaf.not_after),
            leaf.days_left(now)
        );
        let _ = writeln!(out, "  client_ca {}", files.client_ca.path.display());
        for ca in &material.client_cas {
            let _ = writeln!(out, "    subject {}", ca.summary.subject);
        }
        for crl in &files.crl {
            let _ = writeln!(out, "  crl {}", crl.path.display());
        }
        for warning in &material.warnings {
            let _ = writeln!(out, "  warning: {warning}");
        }
    }
    if let Some(admin) = &config.admin {
        let _ = writeln!(
            out,
            "admin allow {} (the admin API, on mtls listeners)",
            admin.allow.patterns().join(", ")
        );
    }
    let _ = writeln!(
        out,
        "a running agent applies this config on SIGHUP or when the file is saved (keys that cannot change live are logged as needing a restart)"
    );
    Ok(out)
}
