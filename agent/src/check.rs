//! `dice-agent --check`: loads the config and every certificate file and
//! summarizes what the agent would serve.

use std::fmt::Write;

use dice_proto::cert::rfc3339;

use crate::config::{AcmeConfig, Challenge, Config, Mode};
use crate::tls::TlsError;

/// Renders the summary of a config whose certificate material all loaded, or every error.
pub fn check(config: &Config) -> Result<String, Vec<TlsError>> {
    let profiles = match crate::load_profiles(config) {
        Ok(profiles) => profiles,
        Err(errors) => {
            // With [acme], tls.cert and tls.key may be missing: the agent obtains them first.
            let (acme_missing, other): (Vec<_>, Vec<_>) = errors
                .into_iter()
                .partition(|error| is_acme_missing(config, error));
            if !other.is_empty() || acme_missing.is_empty() {
                return Err(other);
            }
            Default::default()
        }
    };
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
    if let Some(acme) = &config.acme {
        let errors = crate::acme::check_files(acme);
        if !errors.is_empty() {
            return Err(errors);
        }
        describe_acme(&mut out, acme);
    }
    let _ = writeln!(
        out,
        "a running agent applies this config on SIGHUP or when the file is saved (keys that cannot change live are logged as needing a restart)"
    );
    Ok(out)
}

/// Whether `error` is `[acme]`'s certificate or key file not existing yet.
fn is_acme_missing(config: &Config, error: &TlsError) -> bool {
    config.acme.as_ref().is_some_and(|acme| {
        (error.file == acme.cert || error.file == acme.key) && !error.file.path.exists()
    })
}

/// What `[acme]` will do.
fn describe_acme(out: &mut String, acme: &AcmeConfig) {
    let _ = writeln!(out, "acme directory {}", acme.directory);
    let identifiers: Vec<String> = acme.identifiers.iter().map(ToString::to_string).collect();
    let _ = writeln!(out, "  identifiers {}", identifiers.join(", "));
    let _ = match &acme.challenge {
        Challenge::Http01 { address } => writeln!(
            out,
            "  challenge http-01, answered on http://{address}/.well-known/acme-challenge/"
        ),
        Challenge::TlsAlpn01 { listener, address } => writeln!(
            out,
            "  challenge tls-alpn-01, answered by listener {listener} ({address})"
        ),
    };
    let _ = writeln!(
        out,
        "  ca {}",
        acme.ca
            .as_ref()
            .map_or("the system roots".to_owned(), |ca| ca
                .path
                .display()
                .to_string())
    );
    let account = if acme.account_key.path.exists() {
        "exists"
    } else {
        "missing: an account is registered at the first start"
    };
    let _ = writeln!(
        out,
        "  account_key {} ({account})",
        acme.account_key.path.display()
    );
    if let Some(eab) = &acme.eab {
        let _ = writeln!(
            out,
            "  external account binding: kid {}, key in {}",
            eab.kid,
            eab.hmac_key_file.path.display()
        );
    }
    let files = if acme.cert.path.exists() && acme.key.path.exists() {
        "they exist: renewed when due".to_owned()
    } else {
        format!(
            "missing now: obtained before the agent serves, or it exits 1 after {:?}",
            crate::acme::FIRST_ISSUANCE_TIMEOUT
        )
    };
    let _ = writeln!(
        out,
        "  writes a {} key and its certificate to {} and {} ({files})",
        acme.key_type.name(),
        acme.key.path.display(),
        acme.cert.path.display()
    );
    let _ = writeln!(
        out,
        "  renews with {} of the lifetime left, up to a tenth of that earlier at random",
        acme.renew_before
    );
}
