//! Certificate expiry warnings: a served certificate that expires within
//! `tls.expiry_warning` is logged at `warn`, so an operator renews it before
//! clients start refusing it.
//!
//! The warning is one of the material's warnings ([`super::TlsMaterial`]),
//! so it is logged when the agent starts and whenever new material is
//! reloaded, and `--check` prints it. [`run`] repeats it every
//! [`CHECK_INTERVAL`] for as long as the agent serves the certificate, and
//! logs an error once a certificate still being served has expired.

use std::sync::Arc;
use std::time::Duration;

use dice_proto::cert::{CertSummary, rfc3339};
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use super::TlsProfile;
use crate::config::TlsFiles;

/// The target of this module's events, as before it moved into `tls/`.
const TARGET: &str = "dice_agent::expiry";

/// How often served certificates are checked again after start: daily.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(24 * 60 * 60);

/// The warning for `leaf`, served from `files`, at `now` (Unix seconds): `None`
/// unless it expires within `files.expiry_warning` (or has expired).
pub fn warning(files: &TlsFiles, leaf: &CertSummary, now: i64) -> Option<String> {
    let threshold = files.expiry_warning?;
    let threshold_secs = i64::try_from(threshold.as_secs()).unwrap_or(i64::MAX);
    let left = leaf.not_after - now;
    if left > threshold_secs {
        return None;
    }
    let when = if left < 0 {
        format!("expired at {}", rfc3339(leaf.not_after))
    } else {
        format!(
            "expires in {}, at {}",
            days(leaf.days_left(now)),
            rfc3339(leaf.not_after)
        )
    };
    Some(format!(
        "{}: certificate {} (\"{}\") {when} (within tls.expiry_warning = {}: renew it, e.g. with `dicectl certs renew`; the agent loads the new files without a restart)",
        files.cert.locate(),
        leaf.serial,
        leaf.subject,
        threshold_text(threshold),
    ))
}

fn days(days: i64) -> String {
    match days {
        0 => "less than a day".to_owned(),
        1 => "1 day".to_owned(),
        n => format!("{n} days"),
    }
}

/// `14d` for whole days, else humantime's form (`36h`, `1h 30m`).
fn threshold_text(threshold: Duration) -> String {
    let secs = threshold.as_secs();
    if secs > 0 && secs.is_multiple_of(86_400) && threshold.subsec_nanos() == 0 {
        format!("{}d", secs / 86_400)
    } else {
        humantime::format_duration(threshold).to_string()
    }
}

/// Logs the warning of every profile whose certificate is within its threshold.
pub fn check(profiles: &[Arc<TlsProfile>], now: i64) {
    for profile in profiles {
        let material = profile.material();
        let Some(message) = warning(&profile.files, &material.leaf, now) else {
            continue;
        };
        if material.leaf.not_after < now {
            error!(target: TARGET, "{message}");
        } else {
            warn!(target: TARGET, "{message}");
        }
    }
}

/// Checks `profiles` every [`CHECK_INTERVAL`] until `stop`. The check at
/// start is not repeated here: loading the material already logged it.
pub async fn run(profiles: Vec<Arc<TlsProfile>>, stop: CancellationToken) {
    if profiles.iter().all(|p| p.files.expiry_warning.is_none()) {
        return;
    }
    let start = tokio::time::Instant::now() + CHECK_INTERVAL;
    let mut daily = tokio::time::interval_at(start, CHECK_INTERVAL);
    daily.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = daily.tick() => check(&profiles, crate::unix_now()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::config::FileRef;

    const DAY: i64 = 86_400;
    const NOW: i64 = 1_800_000_000;

    fn files(threshold: Option<Duration>) -> TlsFiles {
        let file = |key: &str, path: &str| FileRef {
            path: PathBuf::from(path),
            key: key.to_owned(),
            line: 3,
            origin: PathBuf::from("/etc/dice/node.toml"),
        };
        TlsFiles {
            cert: file("tls.cert", "/etc/dice/server.pem"),
            key: file("tls.key", "/etc/dice/server-key.pem"),
            client_ca: file("tls.client_ca", "/etc/dice/ca.pem"),
            crl: Vec::new(),
            strict_permissions: false,
            expiry_warning: threshold,
        }
    }

    fn leaf(not_after: i64) -> CertSummary {
        CertSummary {
            subject: "CN=node-1".to_owned(),
            common_name: Some("node-1".to_owned()),
            issuer: "CN=dice CA".to_owned(),
            sans: vec!["DNS:node-1".to_owned()],
            serial: "0a1b".to_owned(),
            not_before: NOW - 300 * DAY,
            not_after,
        }
    }

    #[test]
    fn warns_only_within_the_threshold() {
        let fortnight = files(Some(Duration::from_secs(14 * DAY as u64)));
        let cases = [
            (NOW + 30 * DAY, None),
            (NOW + 14 * DAY + 1, None),
            (NOW + 14 * DAY, Some("expires in 14 days")),
            (NOW + 5 * DAY + 7, Some("expires in 5 days")),
            (NOW + DAY + 1, Some("expires in 1 day,")),
            (NOW + 60, Some("expires in less than a day")),
            (NOW - 1, Some("expired at")),
        ];
        for (not_after, want) in cases {
            let got = warning(&fortnight, &leaf(not_after), NOW);
            match (want, got) {
                (None, None) => {}
                (Some(want), Some(got)) => {
                    assert!(got.contains(want), "{got}");
                    assert!(
                        got.starts_with(
                            "/etc/dice/node.toml line 3: tls.cert: /etc/dice/server.pem: certificate 0a1b (\"CN=node-1\")"
                        ),
                        "{got}"
                    );
                    assert!(got.contains("tls.expiry_warning = 14d"), "{got}");
                    assert!(got.contains("dicectl certs renew"), "{got}");
                }
                (want, got) => panic!("not_after {not_after}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn zero_threshold_turns_the_warning_off() {
        assert_eq!(warning(&files(None), &leaf(NOW + 60), NOW), None);
    }

    #[test]
    fn thresholds_read_as_written() {
        assert_eq!(threshold_text(Duration::from_secs(14 * 86_400)), "14d");
        assert_eq!(threshold_text(Duration::from_secs(36 * 3600)), "1day 12h");
    }
}
